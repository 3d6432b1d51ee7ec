//! virtio-mmio registers: the [`Mmio`] access trait, register offsets and status bits (VirtIO 1.2
//! section 4.2.2), and [`MmioRegion`], the volatile implementation over a mapped slot.
//!
//! [`MmioRegion`] holds the crate's only `unsafe` code: one volatile load or store per access,
//! each checked against the mapping's bounds and alignment first.

use core::ptr;

/// 32-bit register access to one virtio-mmio device (and narrower reads of its configuration
/// space). Offsets are bytes from the start of the register block. The device controls every
/// value read.
pub trait Mmio {
    /// Reads the 32-bit register at `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the 32-bit register at `offset`.
    fn write32(&self, offset: usize, value: u32);
    /// Reads 16 bits at `offset` (configuration space only).
    fn read16(&self, offset: usize) -> u16;
    /// Reads 8 bits at `offset` (configuration space only).
    fn read8(&self, offset: usize) -> u8;
}

impl<T: Mmio + ?Sized> Mmio for &T {
    fn read32(&self, offset: usize) -> u32 {
        (**self).read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        (**self).write32(offset, value)
    }
    fn read16(&self, offset: usize) -> u16 {
        (**self).read16(offset)
    }
    fn read8(&self, offset: usize) -> u8 {
        (**self).read8(offset)
    }
}

/// Register offsets of a version 2 (modern) virtio-mmio device.
pub mod register {
    /// `0x74726976` ("virt").
    pub const MAGIC_VALUE: usize = 0x000;
    /// 2 for modern devices, 1 for legacy ones.
    pub const VERSION: usize = 0x004;
    /// Device type; 0 is an empty slot.
    pub const DEVICE_ID: usize = 0x008;
    /// Vendor id.
    pub const VENDOR_ID: usize = 0x00c;
    /// Device features, the 32 bits chosen by [`DEVICE_FEATURES_SEL`].
    pub const DEVICE_FEATURES: usize = 0x010;
    /// Selects the half of the device features shown.
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    /// Driver (accepted) features, the 32 bits chosen by [`DRIVER_FEATURES_SEL`].
    pub const DRIVER_FEATURES: usize = 0x020;
    /// Selects the half of the driver features written.
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    /// Selects the queue the queue registers refer to.
    pub const QUEUE_SEL: usize = 0x030;
    /// Largest size of the selected queue; 0 if it does not exist.
    pub const QUEUE_NUM_MAX: usize = 0x034;
    /// Size of the selected queue.
    pub const QUEUE_NUM: usize = 0x038;
    /// 1 once the selected queue is set up.
    pub const QUEUE_READY: usize = 0x044;
    /// Write a queue index to notify the device.
    pub const QUEUE_NOTIFY: usize = 0x050;
    /// Pending interrupt causes ([`super::interrupt`]).
    pub const INTERRUPT_STATUS: usize = 0x060;
    /// Write the causes handled.
    pub const INTERRUPT_ACK: usize = 0x064;
    /// Device status ([`super::status`]); writing 0 resets the device.
    pub const STATUS: usize = 0x070;
    /// Descriptor area, low 32 bits.
    pub const QUEUE_DESC_LOW: usize = 0x080;
    /// Descriptor area, high 32 bits.
    pub const QUEUE_DESC_HIGH: usize = 0x084;
    /// Driver area (available ring), low 32 bits.
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    /// Driver area, high 32 bits.
    pub const QUEUE_DRIVER_HIGH: usize = 0x094;
    /// Device area (used ring), low 32 bits.
    pub const QUEUE_DEVICE_LOW: usize = 0x0a0;
    /// Device area, high 32 bits.
    pub const QUEUE_DEVICE_HIGH: usize = 0x0a4;
    /// Changes whenever the device changes its configuration space.
    pub const CONFIG_GENERATION: usize = 0x0fc;
    /// First byte of the device-specific configuration space.
    pub const CONFIG: usize = 0x100;
}

/// Size of the configuration space this crate lets drivers read: the rest of a 0x200-byte
/// virtio-mmio slot (QEMU `virt`).
pub const CONFIG_SIZE: usize = 0x100;

/// The bytes of register block a [`MmioRegion`] must cover: registers plus configuration space.
pub const REGION_SIZE: usize = register::CONFIG + CONFIG_SIZE;

/// The magic value, "virt" in little-endian.
pub const MAGIC: u32 = 0x7472_6976;

/// Device status bits (VirtIO 1.2 section 2.1).
pub mod status {
    /// The guest has noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest knows how to drive the device.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete (the device clears it if it refuses the features).
    pub const FEATURES_OK: u32 = 8;
    /// The device has hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver has given up on the device.
    pub const FAILED: u32 = 128;
}

/// Interrupt causes in `InterruptStatus` / `InterruptACK`.
pub mod interrupt {
    /// The device has used buffers of at least one queue.
    pub const USED_BUFFER: u32 = 1;
    /// The device configuration has changed.
    pub const CONFIG_CHANGE: u32 = 2;
}

/// A mapped virtio-mmio register block, accessed with one volatile load or store per register.
///
/// An offset outside the block or not aligned to the access width reads as all ones (like a bus
/// error) and writes nothing: only this crate's constants and checked configuration offsets
/// reach it, so that never happens in practice, and it cannot panic.
#[derive(Debug)]
pub struct MmioRegion {
    base: usize,
    len: usize,
}

impl MmioRegion {
    /// The register block mapped at `base` for `len` bytes (e.g. from
    /// `moat_userlib::memory::map_mmio`). `None` if `base` is null or not 4-byte aligned, `len`
    /// is smaller than [`REGION_SIZE`], or the range wraps.
    ///
    /// # Safety
    ///
    /// `base..base + len` must be mapped as device memory over a virtio-mmio register block,
    /// readable and writable, for as long as the region (or anything it is moved into) lives,
    /// and nothing else may form a Rust reference to it.
    pub unsafe fn new(base: *mut u8, len: usize) -> Option<MmioRegion> {
        let base = base as usize;
        if base == 0 || !base.is_multiple_of(4) || len < REGION_SIZE {
            return None;
        }
        base.checked_add(len)?;
        Some(MmioRegion { base, len })
    }

    /// The address of `offset` if an access of `width` bytes there is inside the block and
    /// aligned.
    fn address(&self, offset: usize, width: usize) -> Option<usize> {
        let end = offset.checked_add(width)?;
        (end <= self.len && offset.is_multiple_of(width)).then_some(self.base + offset)
    }
}

/// Orders earlier memory writes (ring updates) before the device write that follows, like
/// Linux's `writel` (`dmb oshst`).
#[inline(always)]
fn barrier_before_write() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a data memory barrier; it reads and writes no memory or registers the compiler
    // relies on (and, without `nomem`, is also a compiler barrier).
    unsafe {
        core::arch::asm!("dmb oshst", options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Orders a device read before the memory reads that follow, like Linux's `readl`
/// (`dmb oshld`).
#[inline(always)]
fn barrier_after_read() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as in `barrier_before_write`.
    unsafe {
        core::arch::asm!("dmb oshld", options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

impl Mmio for MmioRegion {
    fn read32(&self, offset: usize) -> u32 {
        let Some(address) = self.address(offset, 4) else {
            return u32::MAX;
        };
        // SAFETY: `address` is inside the mapped register block and 4-byte aligned (checked
        // above; `new`'s contract makes the block valid device memory). Any bit pattern is a
        // valid u32.
        let value = unsafe { ptr::read_volatile(address as *const u32) };
        barrier_after_read();
        u32::from_le(value)
    }

    fn write32(&self, offset: usize, value: u32) {
        let Some(address) = self.address(offset, 4) else {
            return;
        };
        barrier_before_write();
        // SAFETY: `address` is inside the mapped, writable register block and aligned (checked
        // above).
        unsafe { ptr::write_volatile(address as *mut u32, value.to_le()) };
    }

    fn read16(&self, offset: usize) -> u16 {
        let Some(address) = self.address(offset, 2) else {
            return u16::MAX;
        };
        // SAFETY: as in `read32`, for a 2-byte aligned access.
        let value = unsafe { ptr::read_volatile(address as *const u16) };
        barrier_after_read();
        u16::from_le(value)
    }

    fn read8(&self, offset: usize) -> u8 {
        let Some(address) = self.address(offset, 1) else {
            return u8::MAX;
        };
        // SAFETY: as in `read32`, for a 1-byte access.
        let value = unsafe { ptr::read_volatile(address as *const u8) };
        barrier_after_read();
        value
    }
}
