//! Naming what is attached to each virtio-mmio slot by reading its identification registers.

use core::ptr::read_volatile;

use moat_kernel_core::platform::{VirtioSlot, virtio_device_name};

use crate::mmu;

/// "virt" in little-endian: the MagicValue register of a virtio-mmio slot.
const VIRTIO_MAGIC: u32 = 0x7472_6976;

/// What a virtio-mmio slot's registers say.
#[derive(Clone, Copy, Debug)]
pub enum SlotProbe {
    /// A device is attached.
    Device {
        /// VirtIO device ID (2 = block, 1 = network, ...).
        device_id: u32,
        /// Transport version: 1 = legacy, 2 = modern.
        version: u32,
        /// Vendor ID.
        vendor: u32,
    },
    /// The slot exists but nothing is attached (DeviceID 0).
    Empty,
    /// The registers do not identify a virtio-mmio transport.
    BadMagic(u32),
    /// The registers could not be mapped.
    Unmapped,
}

/// Reads a slot's MagicValue, Version, DeviceID and VendorID.
pub fn probe(slot: &VirtioSlot) -> SlotProbe {
    let Ok(base) = mmu::map_device(slot.regs) else {
        return SlotProbe::Unmapped;
    };
    // SAFETY: the slot's register block was just mapped as Device memory; these four
    // read-only identification registers have no side effects when read.
    let read = |offset: usize| unsafe { read_volatile((base + offset) as *const u32) };
    let magic = read(0x000);
    if magic != VIRTIO_MAGIC {
        return SlotProbe::BadMagic(magic);
    }
    match read(0x008) {
        0 => SlotProbe::Empty,
        device_id => SlotProbe::Device {
            device_id,
            version: read(0x004),
            vendor: read(0x00c),
        },
    }
}

/// The device-type name for a probe result.
pub fn name(device_id: u32) -> &'static str {
    virtio_device_name(device_id)
}
