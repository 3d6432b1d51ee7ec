//! How long a blocking syscall may wait.

use core::num::NonZeroU64;

/// The timeout argument of `Recv`, `Call` and `NotifyWait`, passed in one register.
///
/// Raw encoding: `0` = do not block, `u64::MAX` = wait forever, anything else = wait at most that
/// many nanoseconds (measured from the syscall; the kernel rounds up to its timer resolution).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// Return [`Error::WouldBlock`] at once if the operation cannot complete.
    ///
    /// [`Error::WouldBlock`]: crate::Error::WouldBlock
    NonBlocking,
    /// Block until the operation completes or the peer dies.
    Forever,
    /// Block at most this many nanoseconds, then return [`Error::TimedOut`].
    ///
    /// [`Error::TimedOut`]: crate::Error::TimedOut
    Nanoseconds(NonZeroU64),
}

impl Timeout {
    /// A timeout of `nanoseconds`; 0 means non-blocking and `u64::MAX` means forever.
    pub const fn from_nanoseconds(nanoseconds: u64) -> Timeout {
        Timeout::from_raw(nanoseconds)
    }

    /// A timeout of `microseconds`, saturating to [`Timeout::Forever`].
    pub const fn from_microseconds(microseconds: u64) -> Timeout {
        Timeout::from_raw(microseconds.saturating_mul(1_000))
    }

    /// A timeout of `milliseconds`, saturating to [`Timeout::Forever`].
    pub const fn from_milliseconds(milliseconds: u64) -> Timeout {
        Timeout::from_raw(milliseconds.saturating_mul(1_000_000))
    }

    /// The register value.
    pub const fn to_raw(self) -> u64 {
        match self {
            Timeout::NonBlocking => 0,
            Timeout::Forever => u64::MAX,
            Timeout::Nanoseconds(nanoseconds) => nanoseconds.get(),
        }
    }

    /// Decodes a register value; every value is valid.
    pub const fn from_raw(raw: u64) -> Timeout {
        match raw {
            u64::MAX => Timeout::Forever,
            other => match NonZeroU64::new(other) {
                Some(nanoseconds) => Timeout::Nanoseconds(nanoseconds),
                None => Timeout::NonBlocking,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        for raw in [0, 1, 999, 1_000_000, u64::MAX - 1, u64::MAX] {
            assert_eq!(Timeout::from_raw(raw).to_raw(), raw);
        }
        assert_eq!(Timeout::from_raw(0), Timeout::NonBlocking);
        assert_eq!(Timeout::from_raw(u64::MAX), Timeout::Forever);
        assert_eq!(Timeout::from_milliseconds(u64::MAX / 2), Timeout::Forever);
        assert_eq!(Timeout::from_microseconds(2).to_raw(), 2_000);
    }
}
