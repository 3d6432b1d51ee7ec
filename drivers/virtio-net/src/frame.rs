//! Checks on a received buffer, run on the driver's private copy before anyone parses it.
//!
//! The buffer is the 12-byte `virtio_net_hdr` (`VERSION_1` always has `num_buffers`) followed by
//! the Ethernet frame. The driver negotiates no offloads, so the header must say so: no
//! `NEEDS_CSUM` flag, `gso_type` `NONE`, `num_buffers` 0 or 1 (devices set 1; some leave 0
//! without merged buffers). `DATA_VALID` is tolerated and ignored: the stack checks checksums
//! itself.

use moat_net_api::{MAX_FRAME, MIN_FRAME, MacAddress};

/// Size of the net header with `VERSION_1`.
pub const NET_HEADER: usize = 12;
/// Header flag: the device left the checksum for the driver to fill (needs `CSUM` offload).
pub const FLAG_NEEDS_CSUM: u8 = 1;
/// Header flag: the device checked the checksum.
pub const FLAG_DATA_VALID: u8 = 2;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = 0;

/// Why a received buffer is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxDrop {
    /// Shorter than the net header plus an Ethernet header.
    Truncated,
    /// Longer than the largest frame the driver passes.
    TooLong,
    /// The net header claims an offload that was not negotiated.
    BadHeader,
    /// Not addressed to us, broadcast or multicast.
    NotForUs,
}

/// The net header fields, decoded from the private copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetHeader {
    /// `flags`.
    pub flags: u8,
    /// `gso_type`.
    pub gso_type: u8,
    /// `hdr_len`.
    pub header_len: u16,
    /// `gso_size`.
    pub gso_size: u16,
    /// `csum_start`.
    pub checksum_start: u16,
    /// `csum_offset`.
    pub checksum_offset: u16,
    /// `num_buffers`.
    pub buffers: u16,
}

impl NetHeader {
    /// The all-zero header the driver sends with every frame.
    pub const TX: [u8; NET_HEADER] = [0; NET_HEADER];

    /// Decodes the first [`NET_HEADER`] bytes; `None` if there are fewer.
    pub fn decode(bytes: &[u8]) -> Option<NetHeader> {
        let header: &[u8; NET_HEADER] = bytes.get(..NET_HEADER)?.try_into().ok()?;
        let word = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        Some(NetHeader {
            flags: header[0],
            gso_type: header[1],
            header_len: word(2),
            gso_size: word(4),
            checksum_start: word(6),
            checksum_offset: word(8),
            buffers: word(10),
        })
    }

    /// Whether the header is one the driver can accept given it negotiated no offloads.
    pub const fn acceptable(&self) -> bool {
        self.flags & !FLAG_DATA_VALID == 0 && self.gso_type == GSO_NONE && self.buffers <= 1
    }
}

/// Checks a received buffer (`bytes`: exactly what the device reported writing, already copied
/// out of shared memory) for a station with address `mac` that passes frames of at most
/// `max_frame` bytes (itself at most [`MAX_FRAME`]). On success the frame is
/// `bytes[NET_HEADER..]`.
pub fn check_received(bytes: &[u8], mac: MacAddress, max_frame: usize) -> Result<(), RxDrop> {
    let Some(frame) = bytes.get(NET_HEADER..) else {
        return Err(RxDrop::Truncated);
    };
    if frame.len() < MIN_FRAME {
        return Err(RxDrop::Truncated);
    }
    if frame.len() > max_frame.min(MAX_FRAME) {
        return Err(RxDrop::TooLong);
    }
    match NetHeader::decode(bytes) {
        Some(header) if header.acceptable() => {}
        _ => return Err(RxDrop::BadHeader),
    }
    let mut destination = [0; 6];
    destination.copy_from_slice(&frame[..6]);
    let destination = MacAddress(destination);
    if destination != mac && !destination.is_multicast() {
        return Err(RxDrop::NotForUs);
    }
    Ok(())
}
