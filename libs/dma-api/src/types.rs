//! The protocol's vocabulary: error codes, directions, grant ids and client names.

use core::fmt;

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
    /// The caller has no window: it never registered, it was revoked and has not registered
    /// again, or the manifest gives its identity no DMA quota.
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
    /// The caller's badge does not allow the request (supervisor or observer only).
    Denied = 11,
    /// The request did not decode: unknown label, malformed payload or trailing bytes. Also
    /// returned by the client library for a reply it cannot decode.
    Malformed = 12,
}

impl DmaError {
    /// Every error, in numeric order.
    pub const ALL: [DmaError; 12] = [
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
        DmaError::Denied,
        DmaError::Malformed,
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
            DmaError::Denied => "denied",
            DmaError::Malformed => "malformed",
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

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The direction of a transfer, as in the Linux DMA API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Direction {
    /// The device reads the buffer: the client copies data in before starting the device.
    ToDevice = 0,
    /// The device writes the buffer: the client initialises it before starting the device
    /// and copies data out after completion.
    FromDevice = 1,
    /// Both: copied in before and out after.
    Bidirectional = 2,
}

impl Direction {
    /// A short lower-case name, for tables.
    pub const fn name(self) -> &'static str {
        match self {
            Direction::ToDevice => "to_dev",
            Direction::FromDevice => "from_dev",
            Direction::Bidirectional => "bidir",
        }
    }
}

impl TryFrom<u8> for Direction {
    type Error = DmaError;

    fn try_from(value: u8) -> Result<Self, DmaError> {
        match value {
            0 => Ok(Direction::ToDevice),
            1 => Ok(Direction::FromDevice),
            2 => Ok(Direction::Bidirectional),
            _ => Err(DmaError::InvalidArgument),
        }
    }
}

/// A generation-tagged grant id: the server's table index in the low 32 bits and the entry's
/// generation in the high 32 bits. The raw value 0 is never issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantId(u64);

impl GrantId {
    /// Builds an id from an index and a generation.
    pub const fn new(index: u32, generation: u32) -> Self {
        GrantId(((generation as u64) << 32) | index as u64)
    }

    /// Rebuilds an id from its wire form. Any value is accepted; the server rejects ids it did
    /// not issue to the caller.
    pub const fn from_raw(raw: u64) -> Self {
        GrantId(raw)
    }

    /// The wire form of the id.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The table index.
    pub const fn index(self) -> u32 {
        self.0 as u32
    }

    /// The generation.
    pub const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// A client's identity in the system manifest (the low 32 bits of its endpoint badge): stable
/// across the client's restarts. Identity 0 belongs to unbadged capabilities and never owns a
/// window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientIdentity(pub u32);

/// The instance of a client task (the kernel's raw `TaskId`, index and generation): a restarted
/// client has a different one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceGeneration(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_zero_is_not_an_error() {
        for (index, error) in DmaError::ALL.iter().enumerate() {
            assert_eq!(error.code() as usize, index + 1);
            assert_eq!(DmaError::try_from(error.code()), Ok(*error));
        }
        assert_eq!(DmaError::try_from(0), Err(0));
        assert_eq!(DmaError::try_from(13), Err(13));
    }

    #[test]
    fn directions_and_ids() {
        for raw in 0..=2u8 {
            assert_eq!(Direction::try_from(raw).map(|d| d as u8), Ok(raw));
        }
        assert_eq!(Direction::try_from(3), Err(DmaError::InvalidArgument));
        let id = GrantId::new(7, 9);
        assert_eq!((id.index(), id.generation()), (7, 9));
        assert_eq!(GrantId::from_raw(id.raw()), id);
    }
}
