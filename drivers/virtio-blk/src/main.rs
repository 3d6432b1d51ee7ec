//! The `virtio-blk` task: looks up its capabilities, maps its virtio-mmio slot, registers with
//! the DMA server, brings the device up (reset first) and serves the block protocol
//! (`moat_virtio_blk::Service`).
//!
//! Capabilities (from the manifest): `serve:blk`, `call:dma`, `mmio:virtio:block:0`,
//! `irq:virtio:block:0` (any notification bit: the interrupt is the task's only notification).
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use moat_abi::{CapabilityKind, Error, Rights};
    use moat_dma_api::DmaClient;
    use moat_userlib::{Kernel, Syscalls, caps, memory};
    use moat_virtio::MmioRegion;
    use moat_virtio_blk::{BlkDevice, KernelRegions, Limits, Service, spec};

    // Two 64 KiB staging buffers, per-request tables, grant pools: 512 KiB.
    moat_userlib::entry!(main, heap_pages = 128);

    /// Largest client data region mapped.
    const MAX_REGION: usize = 64 << 20;

    fn capability(name: &str, kind: CapabilityKind) -> Result<moat_abi::CapSlot, Error> {
        caps::expect(name, kind).map_err(|error| {
            log::error!("capability {name}: {error}");
            Error::InvalidCapability
        })
    }

    fn main() -> Result<(), Error> {
        let endpoint = capability("serve:blk", CapabilityKind::Endpoint)?;
        let dma_endpoint = capability("call:dma", CapabilityKind::Endpoint)?;
        let mmio = capability("mmio:virtio:block:0", CapabilityKind::Mmio)?;
        let irq = capability("irq:virtio:block:0", CapabilityKind::Irq)?;

        let mapping = memory::map_mmio(&Kernel, mmio, Rights::READ | Rights::WRITE, 4096)?;
        // SAFETY: the kernel mapped the page holding the slot's register block (device memory,
        // read-write) at `mapping`, which this task never unmaps; only MmioRegion's volatile
        // accesses touch it.
        let page =
            unsafe { MmioRegion::new(mapping.as_ptr(), mapping.len()) }.ok_or(Error::BadLength)?;
        // The capability maps a whole page; the slot is somewhere in it.
        let offset = spec::find_slot(&page, mapping.len(), spec::DEVICE_ID).ok_or_else(|| {
            log::error!("no virtio-blk slot in the mapped page");
            Error::InvalidArgument
        })?;
        // SAFETY: as for `page`: `offset` + the register block lies inside the same mapping
        // (find_slot checked it), and the page-wide region is not used again.
        let registers = unsafe {
            MmioRegion::new(
                mapping.as_ptr().wrapping_add(offset),
                mapping.len() - offset,
            )
        }
        .ok_or(Error::BadLength)?;

        let mut dma = DmaClient::new(Kernel, dma_endpoint);
        let window = dma.register(None).map_err(|error| {
            log::error!("DMA registration: {error}");
            Error::Dead
        })?;
        let device = BlkDevice::start(registers, dma, Limits::default(), || Kernel.yield_now())
            .map_err(|error| {
                log::error!("device: {error}");
                Error::InvalidArgument
            })?;
        log::info!(
            "virtio-blk: {} sectors ({} MiB){}{}, {} KiB parts, {} in flight, window {} KiB",
            device.capacity(),
            device.capacity() / 2048,
            if device.read_only() {
                ", read-only"
            } else {
                ""
            },
            if device.has_flush() { ", flush" } else { "" },
            device.part_bytes() / 1024,
            device.max_in_flight(),
            window.size / 1024,
        );
        let mut service = Service::new(Kernel, device, KernelRegions::new(Kernel, MAX_REGION));
        Err(service.run(endpoint, irq, u64::MAX))
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("virtio-blk is a Moat task: build it with --target aarch64-unknown-none");
}
