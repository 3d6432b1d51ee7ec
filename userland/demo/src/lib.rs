//! The demo's power-off hold: a task that takes part in the demo (netdemo, which waits for a
//! visitor from the host) sends [`HOLD`] to the endpoint the `demo` task serves (`demo`), and
//! [`RELEASE`] once its part is done. `demo` powers the system off only when no other task is
//! runnable **and** no live task holds the power-off. A holder that dies (exits, faults, is
//! killed) no longer holds. The sender is the kernel-stamped badge (manifest index + 1), so a
//! task can only hold or release for itself.
//!
//! `cargo xtask run --serve` adds a task (`demo` package, name [`SERVE_TASK`]) that holds and
//! never releases: the system keeps serving until the user stops QEMU.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// Message label: the sender holds the power-off.
pub const HOLD: u32 = 0x646d_0001;
/// Message label: the sender's part is done; it no longer holds the power-off.
pub const RELEASE: u32 = 0x646d_0002;

/// The endpoint the `demo` task serves and holders call.
pub const ENDPOINT: &str = "demo";

/// The name of the task that holds the power-off forever (`cargo xtask run --serve`).
pub const SERVE_TASK: &str = "demo-serve";

/// Most holders at once.
pub const MAX_HOLDERS: usize = 16;

/// What a message did to the holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new holder (badge).
    Held(u64),
    /// A holder released (badge).
    Released(u64),
    /// Nothing changed (a second HOLD, or a RELEASE from a task that did not hold).
    Unchanged,
}

/// A message the hold protocol refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldError {
    /// Neither [`HOLD`] nor [`RELEASE`].
    UnknownLabel(u32),
    /// Badge 0 carries no identity.
    NoBadge,
    /// [`MAX_HOLDERS`] already hold.
    Full,
}

/// The badges that currently hold the power-off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holds {
    badges: [u64; MAX_HOLDERS],
    count: usize,
}

impl Holds {
    /// No holders.
    pub const fn new() -> Holds {
        Holds {
            badges: [0; MAX_HOLDERS],
            count: 0,
        }
    }

    /// Applies a message with `label` from `badge`.
    pub fn apply(&mut self, label: u32, badge: u64) -> Result<Change, HoldError> {
        if badge == 0 {
            return Err(HoldError::NoBadge);
        }
        let held = self.badges[..self.count].contains(&badge);
        match label {
            HOLD if held => Ok(Change::Unchanged),
            HOLD => {
                let slot = self.badges.get_mut(self.count).ok_or(HoldError::Full)?;
                *slot = badge;
                self.count += 1;
                Ok(Change::Held(badge))
            }
            RELEASE if held => {
                self.retain(|b| b != badge);
                Ok(Change::Released(badge))
            }
            RELEASE => Ok(Change::Unchanged),
            other => Err(HoldError::UnknownLabel(other)),
        }
    }

    /// Keeps only the holders for which `keep` is true (the others have died); returns how
    /// many were dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) -> usize {
        let before = self.count;
        let mut kept = 0;
        for i in 0..self.count {
            let badge = self.badges[i];
            if keep(badge) {
                self.badges[kept] = badge;
                kept += 1;
            }
        }
        self.count = kept;
        before - kept
    }

    /// The holders' badges.
    pub fn badges(&self) -> &[u64] {
        &self.badges[..self.count]
    }

    /// Whether nobody holds the power-off.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The manifest index of the task whose messages carry `badge` (badge = index + 1).
pub fn task_index(badge: u64) -> Option<u16> {
    badge
        .checked_sub(1)
        .and_then(|index| u16::try_from(index).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_and_release_per_badge() {
        let mut holds = Holds::new();
        assert!(holds.is_empty());
        assert_eq!(holds.apply(HOLD, 7), Ok(Change::Held(7)));
        assert_eq!(holds.apply(HOLD, 7), Ok(Change::Unchanged));
        assert_eq!(holds.apply(HOLD, 3), Ok(Change::Held(3)));
        assert_eq!(holds.badges(), [7, 3]);
        // Another task cannot release for 7.
        assert_eq!(holds.apply(RELEASE, 4), Ok(Change::Unchanged));
        assert_eq!(holds.apply(RELEASE, 7), Ok(Change::Released(7)));
        assert_eq!(holds.badges(), [3]);
        assert!(!holds.is_empty());
        assert_eq!(holds.apply(RELEASE, 3), Ok(Change::Released(3)));
        assert!(holds.is_empty());
    }

    #[test]
    fn bad_messages_are_errors() {
        let mut holds = Holds::new();
        assert_eq!(holds.apply(99, 1), Err(HoldError::UnknownLabel(99)));
        assert_eq!(holds.apply(HOLD, 0), Err(HoldError::NoBadge));
        for badge in 1..=MAX_HOLDERS as u64 {
            assert_eq!(holds.apply(HOLD, badge), Ok(Change::Held(badge)));
        }
        assert_eq!(holds.apply(HOLD, 100), Err(HoldError::Full));
        assert_eq!(holds.badges().len(), MAX_HOLDERS);
    }

    #[test]
    fn dead_holders_are_dropped() {
        let mut holds = Holds::new();
        for badge in [2, 5, 9] {
            holds.apply(HOLD, badge).unwrap();
        }
        assert_eq!(holds.retain(|badge| badge != 5), 1);
        assert_eq!(holds.badges(), [2, 9]);
        assert_eq!(holds.retain(|_| false), 2);
        assert!(holds.is_empty());
        assert_eq!(task_index(1), Some(0));
        assert_eq!(task_index(0), None);
        assert_eq!(task_index(1 << 40), None);
    }
}
