//! Device-visible memory as the virtqueue sees it: [`SharedRegion`] for the coherent ring
//! memory, [`Segment`] for streaming buffers, and the adapters to `moat-dma-api` (the only source
//! of device-visible memory in Moat).
//!
//! The queue never cares where memory comes from: in a task the rings are a
//! [`moat_dma_api::Coherent`] from [`DmaClient::alloc_coherent`] and the buffers are grants that
//! went through [`moat_dma_api::Bounce`] ([`DeviceBuffer`] turns the resulting
//! [`InFlight`] into a [`Segment`]); in host tests both come from the fakes in `crate::fake`.

use moat_dma_api::{ClientError, Coherent, DmaClient, FromDevice, InFlight, ToDevice};
use moat_userlib::Syscalls;

/// A coherent device-visible region: a client mapping, the device address of its first byte,
/// and a length. The device and the host may change any byte at any time, so:
///
/// - implementations access it only with volatile loads and stores (never a Rust reference);
/// - every value read is untrusted: the caller copies it once and validates the copy.
///
/// Accessors return `None` / `false` for an offset out of range or not naturally aligned.
pub trait SharedRegion {
    /// Device address of the first byte.
    fn device_address(&self) -> u64;
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Volatile little-endian `u16` read at `offset`.
    fn read_u16(&self, offset: usize) -> Option<u16>;
    /// Volatile little-endian `u32` read at `offset`.
    fn read_u32(&self, offset: usize) -> Option<u32>;
    /// Volatile little-endian `u16` write at `offset`.
    fn write_u16(&self, offset: usize, value: u16) -> bool;
    /// Volatile little-endian `u32` write at `offset`.
    fn write_u32(&self, offset: usize, value: u32) -> bool;
    /// Volatile little-endian `u64` write at `offset`.
    fn write_u64(&self, offset: usize, value: u64) -> bool;
    /// Zeroes the whole region.
    fn zero(&self);
}

impl SharedRegion for Coherent {
    fn device_address(&self) -> u64 {
        Coherent::device_address(self)
    }
    fn len(&self) -> usize {
        Coherent::len(self)
    }
    fn read_u16(&self, offset: usize) -> Option<u16> {
        Coherent::read_u16(self, offset)
    }
    fn read_u32(&self, offset: usize) -> Option<u32> {
        Coherent::read_u32(self, offset)
    }
    fn write_u16(&self, offset: usize, value: u16) -> bool {
        Coherent::write_u16(self, offset, value)
    }
    fn write_u32(&self, offset: usize, value: u32) -> bool {
        Coherent::write_u32(self, offset, value)
    }
    fn write_u64(&self, offset: usize, value: u64) -> bool {
        Coherent::write_u64(self, offset, value)
    }
    fn zero(&self) {
        Coherent::zero(self)
    }
}

/// Where coherent ring memory comes from.
pub trait CoherentAllocator {
    /// The regions it hands out.
    type Region: SharedRegion;
    /// Why an allocation or free failed.
    type Error;
    /// A region of `size` bytes whose device address is aligned to `align` (a power of two).
    fn alloc_coherent(&self, size: usize, align: usize) -> Result<Self::Region, Self::Error>;
    /// Gives a region back (the device must no longer use it: reset it first).
    fn free_coherent(&self, region: Self::Region) -> Result<(), Self::Error>;
}

/// Rings from the DMA server: `alloc_coherent` out of the client's shared window.
impl<S: Syscalls> CoherentAllocator for DmaClient<S> {
    type Region = Coherent;
    type Error = ClientError;

    fn alloc_coherent(&self, size: usize, align: usize) -> Result<Coherent, ClientError> {
        DmaClient::alloc_coherent(self, size, align as u64)
    }

    fn free_coherent(&self, region: Coherent) -> Result<(), ClientError> {
        DmaClient::free_coherent(self, region)
    }
}

/// One buffer of a request as the device sees it: a device address, a length, and whether the
/// device writes it (otherwise it reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Device address of the first byte.
    pub address: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes the buffer (`VIRTQ_DESC_F_WRITE`); otherwise it only reads it.
    pub writable: bool,
}

impl Segment {
    /// A buffer the device reads.
    pub const fn readable(address: u64, len: u32) -> Segment {
        Segment {
            address,
            len,
            writable: false,
        }
    }

    /// A buffer the device writes.
    pub const fn writable(address: u64, len: u32) -> Segment {
        Segment {
            address,
            len,
            writable: true,
        }
    }
}

/// A streaming buffer that is ready for the device: its [`Segment`].
///
/// Implemented for the `moat-dma-api` transfers that map onto VirtIO's two directions, so the
/// `Bounce` copy rules are applied before a buffer can reach a descriptor: a to-device
/// [`InFlight`] is device-readable, a from-device one device-writable. (VirtIO has no
/// read-and-write buffer, so bidirectional transfers have no segment.)
pub trait DeviceBuffer {
    /// The segment, or `None` if the transfer is empty or longer than a descriptor can describe
    /// (`u32::MAX` bytes).
    fn segment(&self) -> Option<Segment>;
}

fn transfer_length(len: usize) -> Option<u32> {
    u32::try_from(len).ok().filter(|&len| len > 0)
}

impl DeviceBuffer for InFlight<ToDevice> {
    fn segment(&self) -> Option<Segment> {
        Some(Segment::readable(
            self.device_address(),
            transfer_length(self.len())?,
        ))
    }
}

impl DeviceBuffer for InFlight<FromDevice> {
    fn segment(&self) -> Option<Segment> {
        Some(Segment::writable(
            self.device_address(),
            transfer_length(self.len())?,
        ))
    }
}
