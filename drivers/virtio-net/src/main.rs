//! The virtio-net driver task: finds its device, registers with the DMA server, brings the
//! device up and serves `net-api` on its endpoint, waking for the device interrupt too.
//!
//! Capabilities (manifest): `serve:net`, `call:dma`, `mmio:virtio:network:0`,
//! `irq:virtio:network:0` (notification bit [`IRQ_BIT`]). On a device fault the task resets the
//! device and exits with a failure, and the supervisor restarts it; the new instance's reset
//! lets the DMA server release the old grants from quarantine.
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use moat_abi::{CapSlot, CapabilityKind, Rights, Timeout};
    use moat_dma_api::DmaClient;
    use moat_ipc::Server;
    use moat_net_api::{MacAddress, MappedRegion, NetProtocol, REGION_PAGES};
    use moat_userlib::{Kernel, Syscalls, caps, memory};
    use moat_virtio::mmio::{MAGIC, REGION_SIZE, register};
    use moat_virtio::{Mmio, MmioRegion, Transport};
    use moat_virtio_net::NetDevice;
    use moat_virtio_net::server::{NetServer, Platform};

    moat_userlib::entry!(main, heap_pages = 256);

    /// Notification bit of the device interrupt (the manifest's `irq` entry).
    pub const IRQ_BIT: u32 = 0;
    /// Exit code after a device fault (the supervisor restarts the task).
    const EXIT_FAULT: u64 = 3;
    /// VirtIO device type of a network card.
    const NETWORK_DEVICE_ID: u32 = 1;
    /// Distance between virtio-mmio slots (QEMU `virt`: 0x200).
    const SLOT_STRIDE: usize = 0x200;
    /// The MMIO capability maps the whole page holding the slot.
    const PAGE: usize = 4096;

    /// The offset in the mapped page of the (modern) network device's register block.
    fn find_slot(page: &MmioRegion, len: usize) -> Option<usize> {
        (0..len)
            .step_by(SLOT_STRIDE)
            .take_while(|offset| offset + REGION_SIZE <= len)
            .find(|&offset| {
                page.read32(offset + register::MAGIC_VALUE) == MAGIC
                    && page.read32(offset + register::VERSION) == 2
                    && page.read32(offset + register::DEVICE_ID) == NETWORK_DEVICE_ID
            })
    }

    struct TaskPlatform {
        irq: CapSlot,
    }

    impl Platform for TaskPlatform {
        type Region = MappedRegion;

        fn map_region(&mut self, slot: CapSlot, rights: Rights) -> Option<MappedRegion> {
            let info = Kernel.mem_info(slot).ok()?;
            // Private memory only: a shared page would put the client's frames in the host's view.
            if info.pages < REGION_PAGES || info.shared {
                return None;
            }
            let mapping = memory::map(
                &Kernel,
                slot,
                rights.intersection(Rights::READ.union(Rights::WRITE)),
                0,
                REGION_PAGES,
            )
            .ok()?;
            // SAFETY: the mapping was just made, stays for the task's life (a replaced region's
            // mapping is never unmapped) and no reference into it is ever formed.
            unsafe { MappedRegion::new(mapping.as_ptr(), mapping.len()) }
        }

        fn drop_capability(&mut self, slot: CapSlot) {
            let _ = Kernel.cap_drop(slot);
        }

        fn acknowledge_irq(&mut self) {
            let _ = Kernel.irq_ack(self.irq);
        }
    }

    /// A locally administered MAC from the time since boot, for a device that offers none.
    fn fallback_mac() -> MacAddress {
        let t = Kernel.time().to_le_bytes();
        MacAddress([0x02, t[0], t[1], t[2], t[3], t[4]])
    }

    fn main() -> Result<(), &'static str> {
        let find = |name, kind| caps::expect(name, kind).map_err(|_| name);
        let serve = find("serve:net", CapabilityKind::Endpoint)?;
        let dma_endpoint = find("call:dma", CapabilityKind::Endpoint)?;
        let mmio = find("mmio:virtio:network:0", CapabilityKind::Mmio)?;
        let irq = find("irq:virtio:network:0", CapabilityKind::Irq)?;

        let mut dma = DmaClient::new(Kernel, dma_endpoint);
        dma.register(None).map_err(|_| "dma register")?;
        let registers = memory::map_mmio(&Kernel, mmio, Rights::READ | Rights::WRITE, PAGE)
            .map_err(|_| "mmio map")?;
        // SAFETY: the page holding the slot's register block was just mapped as device memory
        // for the task's life; only MmioRegion's volatile accesses touch it.
        let page =
            unsafe { MmioRegion::new(registers.as_ptr(), registers.len()) }.ok_or("mmio region")?;
        // The capability maps a whole page; the slot is somewhere in it.
        let offset = find_slot(&page, registers.len()).ok_or("no virtio-net slot in the page")?;
        // SAFETY: as for `page`: `offset` + the register block lies inside the same mapping
        // (find_slot checked it), and the page-wide region is not used again.
        let region = unsafe {
            MmioRegion::new(
                registers.as_ptr().wrapping_add(offset),
                registers.len() - offset,
            )
        }
        .ok_or("mmio region")?;
        let transport = Transport::probe(region).map_err(|_| "no virtio-mmio device")?;
        // NetDevice::new resets the device first: from here the old instance's grants (if any)
        // are safe to release.
        let device = match NetDevice::new(transport, dma, fallback_mac()) {
            Ok(device) => device,
            Err(error) => {
                log::error!("device: {error}");
                return Err("device init");
            }
        };
        // Tell the DMA server the device is reset, so grants a previous instance left in
        // quarantine come back. The first instance has none; an error here is not fatal.
        if let Err(error) = device.dma().reset_complete() {
            log::warn!("reset_complete: {error}");
        }
        let link = device.link();
        log::info!(
            "{} mtu {} link {}",
            link.mac,
            link.mtu,
            if link.link_up { "up" } else { "down" }
        );
        let mut server = NetServer::new(device, TaskPlatform { irq }, 1 << IRQ_BIT);
        let _ = Kernel.irq_ack(irq);
        let mut ipc = Server::<NetProtocol, _>::new(Kernel, serve).with_notifications(1 << IRQ_BIT);
        loop {
            let _ = ipc.serve_one(&mut server, Timeout::Forever);
            if server.device().faulted() {
                let counters = server.device().counters();
                log::error!(
                    "device fault ({} ring faults): resetting and exiting",
                    counters.ring_faults
                );
                let _ = server.device_mut().stop();
                Kernel.exit(EXIT_FAULT);
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("virtio-net is a Moat task: build it for aarch64-unknown-none with `cargo xtask`");
}
