//! What VirtIO 1.2 section 5.2 says about block devices: feature bits, the configuration layout,
//! the request header and the status byte.

use moat_virtio::{Mmio, Transport, TransportError};

/// VirtIO device type of a block device.
pub const DEVICE_ID: u32 = 2;

/// Feature bits of virtio-blk (device-type range).
pub mod features {
    /// `size_max` is valid: the largest single segment.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// `seg_max` is valid: the most segments in one request.
    pub const SEG_MAX: u64 = 1 << 2;
    /// The device is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// The device has a write cache and accepts flush requests.
    pub const FLUSH: u64 = 1 << 9;

    /// Everything this driver asks for (the transport adds `VERSION_1` and `ACCESS_PLATFORM`).
    pub const WANTED: u64 = SIZE_MAX | SEG_MAX | RO | BLK_SIZE | FLUSH;
}

/// Configuration space offsets.
pub mod config {
    /// `capacity`: u64, in 512-byte sectors.
    pub const CAPACITY: usize = 0;
    /// `size_max`: u32.
    pub const SIZE_MAX: usize = 8;
    /// `seg_max`: u32.
    pub const SEG_MAX: usize = 12;
    /// `blk_size`: u32.
    pub const BLK_SIZE: usize = 20;
}

/// Request types.
pub mod request {
    /// Read (device → driver).
    pub const IN: u32 = 0;
    /// Write (driver → device).
    pub const OUT: u32 = 1;
    /// Flush the write cache.
    pub const FLUSH: u32 = 4;
}

/// Status byte values.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// I/O error.
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
    /// What the driver puts in the status buffer before the device runs: not a valid status,
    /// so a device that never writes it cannot make a request look successful.
    pub const UNWRITTEN: u8 = 0xff;
}

/// Bytes of the request header.
pub const HEADER_SIZE: usize = 16;

/// The request header: type, reserved, sector; little-endian.
pub fn header(kind: u32, sector: u64) -> [u8; HEADER_SIZE] {
    let mut bytes = [0u8; HEADER_SIZE];
    bytes[0..4].copy_from_slice(&kind.to_le_bytes());
    bytes[8..16].copy_from_slice(&sector.to_le_bytes());
    bytes
}

/// The device configuration this driver uses, read once at start under the configuration
/// generation counter. Every field is the device's claim: the driver bounds what it derives
/// from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// `size_max`, when negotiated.
    pub size_max: Option<u32>,
    /// `seg_max`, when negotiated.
    pub seg_max: Option<u32>,
    /// `blk_size`, when negotiated (512 otherwise).
    pub block_size: u32,
}

impl DeviceConfig {
    /// Reads the configuration fields valid under `negotiated`.
    pub fn read<T: Mmio>(
        transport: &Transport<T>,
        negotiated: u64,
    ) -> Result<DeviceConfig, TransportError> {
        transport.read_config(|space| {
            let capacity = space.read_u64(config::CAPACITY)?;
            let size_max = if negotiated & features::SIZE_MAX != 0 {
                Some(space.read_u32(config::SIZE_MAX)?)
            } else {
                None
            };
            let seg_max = if negotiated & features::SEG_MAX != 0 {
                Some(space.read_u32(config::SEG_MAX)?)
            } else {
                None
            };
            let block_size = if negotiated & features::BLK_SIZE != 0 {
                space.read_u32(config::BLK_SIZE)?
            } else {
                512
            };
            Ok(DeviceConfig {
                capacity,
                size_max,
                seg_max,
                block_size,
            })
        })
    }

    /// The block size to report: the device's if it is a power of two from 512 to 64 KiB,
    /// 512 otherwise (a nonsense value changes nothing the driver does).
    pub fn sane_block_size(&self) -> u32 {
        if self.block_size.is_power_of_two() && (512..=65536).contains(&self.block_size) {
            self.block_size
        } else {
            512
        }
    }
}

/// Bytes between virtio-mmio slots (QEMU `virt`).
pub const SLOT_STRIDE: usize = 0x200;

/// Finds the first modern virtio-mmio device of type `device_id` in a mapping of `len` bytes
/// (the page an Mmio capability maps may hold several 0x200-byte slots: on QEMU `virt` eight
/// per page, and the capability does not say which one is meant). Returns its offset. Only
/// the identification registers (magic, version, device id) of each slot are read, which
/// have no side effects.
pub fn find_slot<T: Mmio>(page: &T, len: usize, device_id: u32) -> Option<usize> {
    use moat_virtio::mmio::{MAGIC, REGION_SIZE, register};
    (0..len)
        .step_by(SLOT_STRIDE)
        .take_while(|offset| offset + REGION_SIZE <= len)
        .find(|&offset| {
            page.read32(offset + register::MAGIC_VALUE) == MAGIC
                && page.read32(offset + register::VERSION) == 2
                && page.read32(offset + register::DEVICE_ID) == device_id
        })
}
