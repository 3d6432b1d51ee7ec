//! The `virtio-rng` task: looks up its capabilities, maps its virtio-mmio slot, registers with
//! the DMA server, brings the device up (reset first) and serves the entropy protocol
//! (`moat_rng_api::RngServer` over `moat_ipc::Server`).
//!
//! Capabilities (from the manifest): `serve:rng`, `call:dma`, `mmio:virtio:entropy:0`,
//! `irq:virtio:entropy:0` on notification bit 0 (`IRQ_BIT`).
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use moat_abi::{CapSlot, CapabilityKind, Error, Rights, Timeout};
    use moat_dma_api::DmaClient;
    use moat_ipc::Server;
    use moat_rng_api::{MAX_FILL, Rng, RngServer};
    use moat_userlib::{Kernel, Syscalls, caps, memory};
    use moat_virtio::MmioRegion;
    use moat_virtio_rng::device::find_slot;
    use moat_virtio_rng::{Interrupt, RngDevice};

    moat_userlib::entry!(main);

    /// Notification bit of the device interrupt (the manifest's `irq` entry).
    const IRQ_BIT: u32 = 0;

    /// How long one wait for the device's interrupt may take.
    const IRQ_TIMEOUT_MS: u64 = 1_000;

    /// The interrupt as this task sees it: a notification bit, unmasked with `IrqAck`.
    struct TaskIrq(CapSlot);

    impl Interrupt for TaskIrq {
        fn wait(&mut self) -> bool {
            let timeout = Timeout::from_milliseconds(IRQ_TIMEOUT_MS);
            Kernel
                .notify_wait(1 << IRQ_BIT, timeout)
                .is_ok_and(|bits| bits & (1 << IRQ_BIT) != 0)
        }

        fn unmask(&mut self) {
            let _ = Kernel.irq_ack(self.0);
        }
    }

    fn capability(name: &str, kind: CapabilityKind) -> Result<CapSlot, Error> {
        caps::expect(name, kind).map_err(|error| {
            log::error!("capability {name}: {error}");
            Error::InvalidCapability
        })
    }

    fn main() -> Result<(), Error> {
        let endpoint = capability("serve:rng", CapabilityKind::Endpoint)?;
        let dma_endpoint = capability("call:dma", CapabilityKind::Endpoint)?;
        let mmio = capability("mmio:virtio:entropy:0", CapabilityKind::Mmio)?;
        let irq = capability("irq:virtio:entropy:0", CapabilityKind::Irq)?;

        let mapping = memory::map_mmio(&Kernel, mmio, Rights::READ | Rights::WRITE, 4096)?;
        // SAFETY: the kernel mapped the page holding the slot's register block (device memory,
        // read-write) at `mapping`, which this task never unmaps; only MmioRegion's volatile
        // accesses touch it.
        let page =
            unsafe { MmioRegion::new(mapping.as_ptr(), mapping.len()) }.ok_or(Error::BadLength)?;
        let offset = find_slot(&page, mapping.len()).ok_or_else(|| {
            log::error!("no virtio-rng slot in the mapped page");
            Error::InvalidArgument
        })?;
        // SAFETY: as for `page`: the register block at `offset` lies inside the same mapping
        // (find_slot checked it), and the page-wide region is not used again.
        let registers = unsafe {
            MmioRegion::new(
                mapping.as_ptr().wrapping_add(offset),
                mapping.len() - offset,
            )
        }
        .ok_or(Error::BadLength)?;

        let mut dma = DmaClient::new(Kernel, dma_endpoint);
        dma.register(None).map_err(|error| {
            log::error!("DMA registration: {error}");
            Error::Dead
        })?;
        // The line may have been left masked by a previous instance.
        let _ = Kernel.irq_ack(irq);
        let device = RngDevice::start(registers, &dma, TaskIrq(irq), || Kernel.yield_now())
            .map_err(|error| {
                log::error!("device: {error}");
                Error::InvalidArgument
            })?;
        log::info!("virtio-rng: ready, up to {MAX_FILL} bytes per request");
        let mut server = Server::<Rng, _>::new(Kernel, endpoint);
        Err(server.run(&mut RngServer::new(device), |error| {
            log::warn!("recv: {error:?}");
            !matches!(error, Error::InvalidCapability | Error::WrongKind)
        }))
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("virtio-rng is a Moat task: build it with --target aarch64-unknown-none");
}
