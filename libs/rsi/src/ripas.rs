//! The RMM's side of RIPAS: input checks and per-granule tracking, free of `std` and `alloc`.
//!
//! These are the pure parts of an RMM that both the host-test RMM model (`model`) and
//! realm-sim (at EL2) use: the checks RMM 1.0 makes on IPA_STATE_SET / IPA_STATE_GET /
//! REALM_CONFIG inputs, and a table holding one RIPAS per 4 KiB granule over a window of the
//! protected IPA space, stored in a byte slice the caller provides.
//!
//! Semantics (TF-RMM `runtime/rsi/memory.c`, `runtime/core/s2tt`-level `update_ripas`):
//! - inputs: target RIPAS EMPTY or RAM only; base and top granule aligned; base < top; the
//!   whole range inside the protected IPA space, else ERROR_INPUT;
//! - a change walks granules from `base` upwards and stops at the first granule it cannot
//!   change. A DESTROYED granule changes (to EMPTY or RAM) only with CHANGE_DESTROYED;
//! - a granule whose RIPAS already equals the target is passed over without change (its
//!   contents stay); a granule whose RIPAS really changes has its contents discarded.

use crate::abi::{ChangeDestroyed, GRANULE_SIZE, Ripas, Status};

/// Returns true if `address` is 4 KiB aligned.
pub const fn is_granule_aligned(address: u64) -> bool {
    address.is_multiple_of(GRANULE_SIZE)
}

/// An IPA_STATE_SET request that passed the RMM's input checks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StateSetRequest {
    /// First IPA of the range (granule aligned).
    pub base: u64,
    /// End of the range, exclusive (granule aligned, above `base`).
    pub top: u64,
    /// Target RIPAS: EMPTY or RAM.
    pub ripas: Ripas,
    /// Whether DESTROYED granules may change.
    pub change_destroyed: ChangeDestroyed,
}

/// Checks the raw IPA_STATE_SET arguments (X1..X4) as RMM 1.0 does.
///
/// `protected_top` is the end of the protected IPA space (the shared bit).
pub fn check_state_set(
    base: u64,
    top: u64,
    ripas: u64,
    flags: u64,
    protected_top: u64,
) -> Result<StateSetRequest, Status> {
    let ripas = match Ripas::try_from(ripas) {
        Ok(target @ (Ripas::Empty | Ripas::Ram)) => target,
        _ => return Err(Status::ErrorInput),
    };
    if !is_granule_aligned(base) || !is_granule_aligned(top) || top <= base || top > protected_top {
        return Err(Status::ErrorInput);
    }
    Ok(StateSetRequest {
        base,
        top,
        ripas,
        change_destroyed: ChangeDestroyed::from_flags(flags),
    })
}

/// Checks the raw IPA_STATE_GET arguments (X1 = base, X2 = top) as RMM 1.0 does.
pub fn check_state_get(base: u64, top: u64, protected_top: u64) -> Result<(), Status> {
    if !is_granule_aligned(base) || !is_granule_aligned(top) || top <= base || top > protected_top {
        return Err(Status::ErrorInput);
    }
    Ok(())
}

/// Checks the REALM_CONFIG address: a granule-aligned protected IPA.
///
/// The RMM additionally refuses (ERROR_INPUT) a granule whose RIPAS is not RAM.
pub fn check_config_address(ipa: u64, protected_top: u64) -> Result<(), Status> {
    if !is_granule_aligned(ipa) || ipa >= protected_top {
        return Err(Status::ErrorInput);
    }
    Ok(())
}

/// RIPAS of every granule in `[base, base + 4 KiB * storage.len())`.
///
/// Protected IPAs outside the window have no memory behind them: they read as EMPTY, a change
/// to EMPTY passes over them, and a change to RAM stops at them (there is nothing to map).
#[derive(Debug)]
pub struct RipasTable<S> {
    base: u64,
    states: S,
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> RipasTable<S> {
    /// Tracks one granule per byte of `states`, starting at `base`; every granule starts EMPTY.
    ///
    /// Returns `None` if `base` is unaligned or the window would pass the end of the address
    /// space.
    pub fn new(base: u64, mut states: S) -> Option<Self> {
        let count = u64::try_from(states.as_ref().len()).ok()?;
        if !is_granule_aligned(base) {
            return None;
        }
        count.checked_mul(GRANULE_SIZE)?.checked_add(base)?;
        states.as_mut().fill(Ripas::Empty as u8);
        Some(RipasTable { base, states })
    }

    /// First IPA of the window.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// End of the window, exclusive.
    pub fn top(&self) -> u64 {
        self.base + self.granule_count() * GRANULE_SIZE
    }

    /// Number of granules in the window.
    pub fn granule_count(&self) -> u64 {
        self.states.as_ref().len() as u64
    }

    fn index(&self, ipa: u64) -> Option<usize> {
        if ipa < self.base || ipa >= self.top() {
            return None;
        }
        usize::try_from((ipa - self.base) / GRANULE_SIZE).ok()
    }

    /// RIPAS of the granule holding `ipa`, or `None` outside the window.
    pub fn get(&self, ipa: u64) -> Option<Ripas> {
        let index = self.index(ipa)?;
        // Only `new` and `set` write the table, both with valid values; anything else would
        // be a bug, and DESTROYED is the state that trusts the granule least.
        Some(Ripas::try_from(u64::from(self.states.as_ref()[index])).unwrap_or(Ripas::Destroyed))
    }

    /// RIPAS of the granule holding `ipa`; EMPTY outside the window.
    pub fn ripas_or_empty(&self, ipa: u64) -> Ripas {
        self.get(ipa).unwrap_or(Ripas::Empty)
    }

    /// Sets the RIPAS of the granule holding `ipa`. Returns false outside the window.
    pub fn set(&mut self, ipa: u64, ripas: Ripas) -> bool {
        match self.index(ipa) {
            Some(index) => {
                self.states.as_mut()[index] = ripas as u8;
                true
            }
            None => false,
        }
    }

    /// Sets every granule of `[base, top)` inside the window, with no checks and no
    /// reporting: the initial state the host and RMM set up before the Realm runs.
    pub fn set_range(&mut self, base: u64, top: u64, ripas: Ripas) {
        let mut ipa = base & !(GRANULE_SIZE - 1);
        while ipa < top {
            self.set(ipa, ripas);
            match ipa.checked_add(GRANULE_SIZE) {
                Some(next) => ipa = next,
                None => break,
            }
        }
    }

    /// IPA_STATE_GET: the RIPAS at `base` and the end of the run of granules sharing it,
    /// capped at `top`. Inputs must have passed [`check_state_get`].
    pub fn run_end(&self, base: u64, top: u64) -> (u64, Ripas) {
        let ripas = self.ripas_or_empty(base);
        let mut ipa = base + GRANULE_SIZE;
        while ipa < top && self.ripas_or_empty(ipa) == ripas {
            ipa += GRANULE_SIZE;
        }
        (ipa, ripas)
    }

    /// Whether the granule at `ipa` may move to `request.ripas` under the request's flags.
    fn can_change(&self, ipa: u64, request: &StateSetRequest) -> bool {
        match self.get(ipa) {
            None => request.ripas == Ripas::Empty,
            Some(Ripas::Destroyed) => request.change_destroyed == ChangeDestroyed::ChangeDestroyed,
            Some(_) => true,
        }
    }

    /// Applies `request` from `request.base`, walking at most `max_granules` granules, and
    /// returns the new base: the first granule not walked (equal to `request.top` when done).
    ///
    /// `on_change(ipa, old, new)` runs for each granule whose RIPAS really changes: that is
    /// where the granule's contents are discarded (zeroed). Inputs must have passed
    /// [`check_state_set`].
    pub fn apply(
        &mut self,
        request: &StateSetRequest,
        max_granules: u64,
        mut on_change: impl FnMut(u64, Ripas, Ripas),
    ) -> u64 {
        let mut ipa = request.base;
        let mut walked = 0;
        while ipa < request.top && walked < max_granules {
            if !self.can_change(ipa, request) {
                break;
            }
            if let Some(old) = self.get(ipa)
                && old != request.ripas
            {
                self.set(ipa, request.ripas);
                on_change(ipa, old, request.ripas);
            }
            ipa += GRANULE_SIZE;
            walked += 1;
        }
        ipa
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: u64 = 1 << 38;
    const G: u64 = GRANULE_SIZE;

    #[test]
    fn state_set_input_rules() {
        let ok = check_state_set(0x1000, 0x3000, 1, 0, TOP).unwrap();
        assert_eq!(ok.ripas, Ripas::Ram);
        assert_eq!(ok.change_destroyed, ChangeDestroyed::NoChangeDestroyed);
        assert_eq!(
            check_state_set(0x1000, 0x3000, 0, 1, TOP)
                .unwrap()
                .change_destroyed,
            ChangeDestroyed::ChangeDestroyed
        );
        let input = Err(Status::ErrorInput);
        // Only EMPTY and RAM are targets; DESTROYED and (1.1's) DEV are not.
        assert_eq!(check_state_set(0x1000, 0x3000, 2, 0, TOP), input);
        assert_eq!(check_state_set(0x1000, 0x3000, 3, 0, TOP), input);
        // Alignment.
        assert_eq!(check_state_set(0x1001, 0x3000, 1, 0, TOP), input);
        assert_eq!(check_state_set(0x1000, 0x3008, 1, 0, TOP), input);
        // Empty or reversed ranges.
        assert_eq!(check_state_set(0x3000, 0x3000, 1, 0, TOP), input);
        assert_eq!(check_state_set(0x4000, 0x3000, 1, 0, TOP), input);
        // Protected space only.
        assert_eq!(check_state_set(TOP - G, TOP + G, 1, 0, TOP), input);
        assert!(check_state_set(TOP - G, TOP, 1, 0, TOP).is_ok());
    }

    #[test]
    fn state_get_and_config_input_rules() {
        assert!(check_state_get(0, G, TOP).is_ok());
        assert_eq!(check_state_get(0, 0, TOP), Err(Status::ErrorInput));
        assert_eq!(check_state_get(1, G, TOP), Err(Status::ErrorInput));
        assert_eq!(check_state_get(0, TOP + G, TOP), Err(Status::ErrorInput));
        assert!(check_config_address(0x4000_0000, TOP).is_ok());
        assert_eq!(
            check_config_address(0x4000_0008, TOP),
            Err(Status::ErrorInput)
        );
        assert_eq!(check_config_address(TOP, TOP), Err(Status::ErrorInput));
    }

    #[test]
    fn table_window() {
        let mut storage = [0xFFu8; 8];
        let mut table = RipasTable::new(0x4000_0000, &mut storage[..]).unwrap();
        assert_eq!(table.top(), 0x4000_8000);
        assert_eq!(table.get(0x4000_0000), Some(Ripas::Empty));
        assert_eq!(table.get(0x3FFF_F000), None);
        assert_eq!(table.get(0x4000_8000), None);
        assert!(table.set(0x4000_1234, Ripas::Ram));
        assert_eq!(table.get(0x4000_1000), Some(Ripas::Ram));
        assert!(!table.set(0x4000_8000, Ripas::Ram));
        assert!(RipasTable::new(0x4000_0001, [0u8; 1]).is_none());
        assert!(RipasTable::new(!(G - 1), [0u8; 2]).is_none());
    }

    #[test]
    fn run_end_reports_runs() {
        let mut table = RipasTable::new(0x10_0000, [0u8; 8]).unwrap();
        table.set_range(0x10_0000 + 2 * G, 0x10_0000 + 5 * G, Ripas::Ram);
        let base = 0x10_0000;
        assert_eq!(
            table.run_end(base, base + 8 * G),
            (base + 2 * G, Ripas::Empty)
        );
        assert_eq!(
            table.run_end(base + 2 * G, base + 8 * G),
            (base + 5 * G, Ripas::Ram)
        );
        // Capped at top.
        assert_eq!(
            table.run_end(base + 2 * G, base + 3 * G),
            (base + 3 * G, Ripas::Ram)
        );
        // Runs continue past the window as EMPTY.
        assert_eq!(
            table.run_end(base + 5 * G, base + 10 * G),
            (base + 10 * G, Ripas::Empty)
        );
    }

    #[test]
    fn apply_changes_and_reports_real_changes_only() {
        let base = 0x10_0000;
        let mut table = RipasTable::new(base, [0u8; 4]).unwrap();
        table.set(base + G, Ripas::Ram);
        let request = check_state_set(base, base + 4 * G, 1, 0, TOP).unwrap();
        let mut changed = [0u64; 4];
        let mut count = 0;
        let new_base = table.apply(&request, u64::MAX, |ipa, old, new| {
            assert_eq!((old, new), (Ripas::Empty, Ripas::Ram));
            changed[count] = ipa;
            count += 1;
        });
        assert_eq!(new_base, base + 4 * G);
        // base + G was already RAM: no change, contents kept.
        assert_eq!(&changed[..count], &[base, base + 2 * G, base + 3 * G]);
    }

    #[test]
    fn apply_partial_progress() {
        let base = 0x10_0000;
        let mut table = RipasTable::new(base, [0u8; 4]).unwrap();
        let request = check_state_set(base, base + 4 * G, 1, 0, TOP).unwrap();
        assert_eq!(table.apply(&request, 1, |_, _, _| {}), base + G);
        assert_eq!(table.get(base), Some(Ripas::Ram));
        assert_eq!(table.get(base + G), Some(Ripas::Empty));
        assert_eq!(table.apply(&request, 0, |_, _, _| {}), base);
    }

    #[test]
    fn destroyed_needs_change_destroyed() {
        let base = 0x10_0000;
        let mut table = RipasTable::new(base, [0u8; 4]).unwrap();
        table.set_range(base, base + 4 * G, Ripas::Ram);
        table.set(base + 2 * G, Ripas::Destroyed);
        for target in [0, 1] {
            let request = check_state_set(base, base + 4 * G, target, 0, TOP).unwrap();
            // Stops at the DESTROYED granule, which keeps its RIPAS.
            assert_eq!(table.apply(&request, u64::MAX, |_, _, _| {}), base + 2 * G);
            assert_eq!(table.get(base + 2 * G), Some(Ripas::Destroyed));
        }
        let request = check_state_set(base, base + 4 * G, 0, 1, TOP).unwrap();
        assert_eq!(table.apply(&request, u64::MAX, |_, _, _| {}), base + 4 * G);
        assert_eq!(table.get(base + 2 * G), Some(Ripas::Empty));
    }

    #[test]
    fn outside_window() {
        let base = 0x10_0000;
        let mut table = RipasTable::new(base, [0u8; 2]).unwrap();
        // EMPTY passes over unbacked protected IPAs.
        let to_empty = check_state_set(base, base + 4 * G, 0, 0, TOP).unwrap();
        assert_eq!(table.apply(&to_empty, u64::MAX, |_, _, _| {}), base + 4 * G);
        // RAM stops where the window ends.
        let to_ram = check_state_set(base, base + 4 * G, 1, 0, TOP).unwrap();
        assert_eq!(table.apply(&to_ram, u64::MAX, |_, _, _| {}), base + 2 * G);
    }
}
