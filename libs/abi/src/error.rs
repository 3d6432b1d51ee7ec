//! Errors returned by syscalls, with fixed numeric values.

use core::fmt;

/// A raw value that names no variant of the enum it was converted to.
///
/// Returned by every `TryFrom<u32>` in this crate; it carries the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnknownValue(pub u64);

impl fmt::Display for UnknownValue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "unknown ABI value {:#x}", self.0)
    }
}

/// Whether an error is a condition the caller is expected to handle or a fault in the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// A run-time condition a correct program meets and should handle: a full queue, a peer that
    /// died, a timeout, an exhausted quota. Retrying later (or after recovery) may succeed.
    Recoverable,
    /// The call itself was wrong: an unknown syscall, a capability the task does not hold or of
    /// the wrong kind, a bad pointer, length or alignment. Retrying the same call fails the same
    /// way; it is a bug in the caller. Today the kernel returns these as codes like any other
    /// error; a supervisor policy may treat them as task faults.
    Fault,
}

/// A syscall error. `0` in `x0` means success; every other value is one of these.
///
/// Values `0x01..=0x3f` are [`ErrorClass::Recoverable`]; values `0x40..=0x7f` are
/// [`ErrorClass::Fault`]. The numbers are part of the ABI and never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Error {
    // --- Recoverable conditions -----------------------------------------------------------
    /// The endpoint's queue is full, or this sender already has its maximum number of messages
    /// outstanding on it. `send` never blocks; try again later.
    QueueFull = 0x01,
    /// A non-blocking operation found nothing to do (no message, no notification bit).
    WouldBlock = 0x02,
    /// A blocking operation reached its timeout.
    TimedOut = 0x03,
    /// The peer task is dead, or has been restarted since the capability or id was obtained.
    /// Also returned to a caller whose server died before replying, and to a server replying to
    /// a caller that is gone or has stopped waiting.
    Dead = 0x04,
    /// The task's memory quota does not cover the request.
    QuotaExceeded = 0x05,
    /// The kernel has no free frames (or no contiguous run) to satisfy the request.
    OutOfMemory = 0x06,
    /// The object is in use in a way that forbids the operation now (e.g. an IRQ not yet
    /// acknowledged, a task that is already being restarted).
    Busy = 0x07,
    /// The task's capability table has no free slot for a new capability.
    CapabilityTableFull = 0x08,
    /// `Share` was refused because a task other than the caller maps one of the frames.
    MappedElsewhere = 0x09,

    // --- Faults: the call itself was wrong -----------------------------------------------
    /// `x8` held no known syscall number.
    NoSuchSyscall = 0x40,
    /// The capability slot is out of range or empty.
    InvalidCapability = 0x41,
    /// The capability is of the wrong kind for this operation (or the kind does not allow it,
    /// e.g. transferring a Share capability or deriving from a one-shot Reply capability).
    WrongKind = 0x42,
    /// The capability lacks a right the operation needs, or a derived capability asked for a
    /// right its source does not have.
    MissingRight = 0x43,
    /// A pointer does not refer to memory the task has mapped with the needed permission.
    BadAddress = 0x44,
    /// A length is zero where it must not be, too large, or runs past the end of an object.
    BadLength = 0x45,
    /// An address or size is not aligned as the operation requires (usually to [`PAGE_SIZE`]).
    ///
    /// [`PAGE_SIZE`]: crate::PAGE_SIZE
    BadAlignment = 0x46,
    /// An argument is out of range or malformed (unknown flag bits, a reserved argument that is
    /// not 0, a task index that does not exist).
    InvalidArgument = 0x47,
    /// The virtual range (or part of it) is already mapped.
    AlreadyMapped = 0x48,
    /// The virtual range, or the memory named by the capability, is not mapped.
    NotMapped = 0x49,
    /// A specific slot was requested and it already holds a capability.
    SlotInUse = 0x4a,
}

impl Error {
    /// Every error, in numeric order (for tests and tables).
    pub const ALL: [Error; 20] = [
        Error::QueueFull,
        Error::WouldBlock,
        Error::TimedOut,
        Error::Dead,
        Error::QuotaExceeded,
        Error::OutOfMemory,
        Error::Busy,
        Error::CapabilityTableFull,
        Error::MappedElsewhere,
        Error::NoSuchSyscall,
        Error::InvalidCapability,
        Error::WrongKind,
        Error::MissingRight,
        Error::BadAddress,
        Error::BadLength,
        Error::BadAlignment,
        Error::InvalidArgument,
        Error::AlreadyMapped,
        Error::NotMapped,
        Error::SlotInUse,
    ];

    /// The value placed in `x0`.
    pub const fn to_raw(self) -> u32 {
        self as u32
    }

    /// Whether the caller is expected to handle this error or it reveals a bug in the call.
    pub const fn class(self) -> ErrorClass {
        if (self as u32) < 0x40 {
            ErrorClass::Recoverable
        } else {
            ErrorClass::Fault
        }
    }

    /// Shorthand for `self.class() == ErrorClass::Fault`.
    pub const fn is_fault(self) -> bool {
        matches!(self.class(), ErrorClass::Fault)
    }

    /// A short lower-case description, for logs.
    pub const fn description(self) -> &'static str {
        match self {
            Error::QueueFull => "queue full",
            Error::WouldBlock => "would block",
            Error::TimedOut => "timed out",
            Error::Dead => "peer dead or restarted",
            Error::QuotaExceeded => "quota exceeded",
            Error::OutOfMemory => "out of memory",
            Error::Busy => "busy",
            Error::CapabilityTableFull => "capability table full",
            Error::MappedElsewhere => "mapped by another task",
            Error::NoSuchSyscall => "no such syscall",
            Error::InvalidCapability => "invalid capability",
            Error::WrongKind => "wrong capability kind",
            Error::MissingRight => "missing right",
            Error::BadAddress => "bad address",
            Error::BadLength => "bad length",
            Error::BadAlignment => "bad alignment",
            Error::InvalidArgument => "invalid argument",
            Error::AlreadyMapped => "already mapped",
            Error::NotMapped => "not mapped",
            Error::SlotInUse => "slot in use",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.description())
    }
}

impl From<Error> for u32 {
    fn from(error: Error) -> u32 {
        error.to_raw()
    }
}

impl TryFrom<u32> for Error {
    type Error = UnknownValue;

    fn try_from(raw: u32) -> Result<Self, UnknownValue> {
        Ok(match raw {
            0x01 => Error::QueueFull,
            0x02 => Error::WouldBlock,
            0x03 => Error::TimedOut,
            0x04 => Error::Dead,
            0x05 => Error::QuotaExceeded,
            0x06 => Error::OutOfMemory,
            0x07 => Error::Busy,
            0x08 => Error::CapabilityTableFull,
            0x09 => Error::MappedElsewhere,
            0x40 => Error::NoSuchSyscall,
            0x41 => Error::InvalidCapability,
            0x42 => Error::WrongKind,
            0x43 => Error::MissingRight,
            0x44 => Error::BadAddress,
            0x45 => Error::BadLength,
            0x46 => Error::BadAlignment,
            0x47 => Error::InvalidArgument,
            0x48 => Error::AlreadyMapped,
            0x49 => Error::NotMapped,
            0x4a => Error::SlotInUse,
            other => return Err(UnknownValue(u64::from(other))),
        })
    }
}

/// Encodes a syscall outcome as the value of `x0`: 0 for success, the error number otherwise.
pub const fn status_to_raw(status: Result<(), Error>) -> u64 {
    match status {
        Ok(()) => 0,
        Err(error) => error as u64,
    }
}

/// Decodes the value of `x0` after a syscall.
///
/// `Ok(Ok(()))` is success, `Ok(Err(e))` a known error, and `Err(_)` a value this version of the
/// ABI does not know (a newer kernel, or a corrupted register): callers should treat it as a
/// failure.
pub fn status_from_raw(raw: u64) -> Result<Result<(), Error>, UnknownValue> {
    if raw == 0 {
        return Ok(Ok(()));
    }
    let narrow = u32::try_from(raw).map_err(|_| UnknownValue(raw))?;
    Error::try_from(narrow)
        .map(Err)
        .map_err(|_| UnknownValue(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_round_trips() {
        for error in Error::ALL {
            assert_eq!(Error::try_from(error.to_raw()), Ok(error));
            assert_eq!(status_from_raw(status_to_raw(Err(error))), Ok(Err(error)));
        }
    }

    #[test]
    fn all_is_complete_sorted_and_non_zero() {
        let mut previous = 0;
        for error in Error::ALL {
            assert!(error.to_raw() > previous, "{error:?} out of order or zero");
            previous = error.to_raw();
        }
        // Every value that converts is listed in ALL.
        let known = (0..=0x1ff)
            .filter(|raw| Error::try_from(*raw).is_ok())
            .count();
        assert_eq!(known, Error::ALL.len());
    }

    #[test]
    fn unknown_values_are_rejected() {
        assert_eq!(Error::try_from(0), Err(UnknownValue(0)));
        assert_eq!(Error::try_from(0x3f), Err(UnknownValue(0x3f)));
        assert_eq!(Error::try_from(u32::MAX), Err(UnknownValue(0xffff_ffff)));
        assert_eq!(status_from_raw(0), Ok(Ok(())));
        assert_eq!(status_from_raw(1 << 32 | 1), Err(UnknownValue(1 << 32 | 1)));
    }

    #[test]
    fn classes_follow_the_numbering() {
        assert_eq!(Error::QueueFull.class(), ErrorClass::Recoverable);
        assert_eq!(Error::Dead.class(), ErrorClass::Recoverable);
        assert_eq!(Error::MappedElsewhere.class(), ErrorClass::Recoverable);
        assert!(Error::BadAddress.is_fault());
        assert!(Error::NoSuchSyscall.is_fault());
        for error in Error::ALL {
            assert_eq!(error.is_fault(), error.to_raw() >= 0x40);
            assert!(error.to_raw() < 0x80);
            assert!(!error.description().is_empty());
        }
    }
}
