//! The DMA server's error codes: fixed numbers that travel in replies (0 is never an error).

use serde::{Deserialize, Serialize};

/// Why a DMA server request failed.
///
/// Every variant is an error for the one client that made the request; none of them stops the
/// server. The numeric values are part of the protocol and never change; 0 means success and is
/// never used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u32)]
pub enum DmaError {
    /// A malformed argument: zero length, an alignment or boundary that is not a power of two,
    /// a boundary smaller than the length, or a slot run that was never allocated.
    InvalidArgument = 1,
    /// The request is larger than the maximum mapping size the server reports.
    TooLarge = 2,
    /// The caller has no window: it never registered, or it was revoked and has not registered
    /// again.
    NotRegistered = 3,
    /// The request came from an older instance of a client that has since been replaced.
    StaleInstance = 4,
    /// The grant id is stale (already unmapped, or from a dead instance), belongs to another
    /// client, or was never issued. These cases share one code so a client learns nothing
    /// about other clients' grants.
    UnknownGrant = 5,
    /// The request would take the client past its quota (its window size).
    QuotaExceeded = 6,
    /// The client's window has enough free bytes but no free run that satisfies the request
    /// (fragmentation, alignment or boundary).
    PoolExhausted = 7,
    /// The server's own memory budget cannot hold another window.
    OutOfMemory = 8,
    /// The client still holds grants or quarantined slots, so its window cannot be retired.
    Busy = 9,
    /// The backing (the kernel's share and map calls) refused an operation.
    Backing = 10,
}

impl DmaError {
    /// Every error, in numeric order.
    pub const ALL: [DmaError; 10] = [
        DmaError::InvalidArgument,
        DmaError::TooLarge,
        DmaError::NotRegistered,
        DmaError::StaleInstance,
        DmaError::UnknownGrant,
        DmaError::QuotaExceeded,
        DmaError::PoolExhausted,
        DmaError::OutOfMemory,
        DmaError::Busy,
        DmaError::Backing,
    ];

    /// The error's fixed numeric code (never 0).
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// A short lower-case name, for tables such as dmastat's.
    pub const fn name(self) -> &'static str {
        match self {
            DmaError::InvalidArgument => "invalid_argument",
            DmaError::TooLarge => "too_large",
            DmaError::NotRegistered => "not_registered",
            DmaError::StaleInstance => "stale_instance",
            DmaError::UnknownGrant => "unknown_grant",
            DmaError::QuotaExceeded => "quota_exceeded",
            DmaError::PoolExhausted => "pool_exhausted",
            DmaError::OutOfMemory => "out_of_memory",
            DmaError::Busy => "busy",
            DmaError::Backing => "backing",
        }
    }
}

impl TryFrom<u32> for DmaError {
    type Error = u32;

    /// Decodes a numeric code; unknown codes (including 0) are returned unchanged as the error.
    fn try_from(code: u32) -> Result<Self, u32> {
        DmaError::ALL
            .iter()
            .copied()
            .find(|error| error.code() == code)
            .ok_or(code)
    }
}

impl core::fmt::Display for DmaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_zero_is_not_an_error() {
        for error in DmaError::ALL {
            assert_ne!(error.code(), 0);
            assert_eq!(DmaError::try_from(error.code()), Ok(error));
        }
        assert_eq!(DmaError::try_from(0), Err(0));
        assert_eq!(DmaError::try_from(11), Err(11));
        for (index, error) in DmaError::ALL.iter().enumerate() {
            assert_eq!(error.code() as usize, index + 1);
        }
    }
}
