//! The `faultydma` task: a **deliberately faulty** virtio-blk driver for one test
//! (build/system-faultydma.toml, `cargo xtask test`'s `faultydma-*` boots; see the crate docs
//! and docs/realm.md). Never put it in a real system.
//!
//! 1. Registers with the DMA server, resets and negotiates the block device, and sets up queue
//!    0 with its rings in `alloc_coherent` memory — as a correct driver does.
//! 2. Allocates one page of **private** memory with `MEM_ALLOC_PHYSICAL_FOR_TESTS` (only a
//!    kernel built for tests grants it) and learns its address with `MemInfo`; fills its first
//!    sector with the secret (from a seed folded out of `TaskInfo::entropy`) and logs the seed,
//!    the sector and the address.
//! 3. The faulty part: a WRITE of sector [`faultydma::SECTOR`] whose data descriptor is that
//!    private address (header and status are proper bounce grants).
//! 4. A READ of the same sector into a proper bounce grant, compared with the secret: different
//!    → [`faultydma::REALM_PASS`]; equal → [`faultydma::PLAIN_LEAK`] (information: a plain
//!    guest has no protection).
//! 5. Powers the system off (status 0; 1 after an error, logged as `ERROR ...`), keeping the
//!    private page allocated and unchanged, so the host finds the secret in private memory.
//!
//! Completions are polled (yield between polls), so the interrupt is never needed; the task
//! claims it anyway, as the device's driver would.
//!
//! Capabilities: `call:dma`, `mmio:virtio:block:0`, `irq:virtio:block:0`, `task-control`.
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use moat_abi::{CapSlot, CapabilityKind, Error, MEM_ALLOC_PHYSICAL_FOR_TESTS, Rights, Syscall};
    use moat_dma_api::{Bounce, Coherent, DmaClient, FromDevice, ToDevice};
    use moat_userlib::{Kernel, Syscalls, caps, memory, syscalls};
    use moat_virtio::memory::DeviceBuffer;
    use moat_virtio::{MmioRegion, Segment, SplitQueue, Transport};
    use moat_virtio_blk::spec::{self, request, status};

    use faultydma::{
        ERROR_PREFIX, PLAIN_LEAK, REALM_PASS, ReportLine, SECTOR, SECTOR_BYTES, secret,
        seed_from_entropy,
    };

    moat_userlib::entry!(main, heap_pages = 16);

    /// Status polls after a reset before giving up.
    const RESET_POLLS: u32 = 100_000;
    /// How long one request may take before the task gives up, in nanoseconds.
    const REQUEST_TIMEOUT_NS: u64 = 10_000_000_000;
    /// The queue size asked for (one request at a time needs three descriptors).
    const QUEUE_SIZE: u16 = 8;

    /// A failure: logged with [`ERROR_PREFIX`], then the system powers off with status 1.
    struct Failure(&'static str, Error);

    fn fail(what: &'static str) -> impl FnOnce(Error) -> Failure {
        move |error| Failure(what, error)
    }

    fn capability(name: &'static str, kind: CapabilityKind) -> Result<CapSlot, Failure> {
        caps::expect(name, kind).map_err(|_| Failure(name, Error::InvalidCapability))
    }

    /// The started device: transport and queue.
    struct Device {
        transport: Transport<MmioRegion>,
        queue: SplitQueue<Coherent>,
    }

    impl Device {
        /// Makes `segments` available, notifies, and polls until the device completes them.
        /// Returns the byte count the device says it wrote.
        fn run(&mut self, segments: &[Segment]) -> Result<u32, Failure> {
            let token = self
                .queue
                .add(segments)
                .map_err(|_| Failure("queue add", Error::InvalidArgument))?;
            if self.queue.should_notify() {
                self.transport.notify(self.queue.index());
            }
            let deadline = Kernel.time().saturating_add(REQUEST_TIMEOUT_NS);
            loop {
                // Acknowledge first, then drain (edge-triggered interrupts; docs/virtio.md).
                self.transport.take_interrupt();
                match self.queue.pop_used() {
                    Some(Ok(completion)) if completion.token == token => {
                        return Ok(completion.written);
                    }
                    Some(_) => return Err(Failure("used ring entry", Error::InvalidArgument)),
                    None if Kernel.time() > deadline => {
                        return Err(Failure("request timed out", Error::TimedOut));
                    }
                    None => Kernel.yield_now(),
                }
            }
        }
    }

    fn start_device(dma: &DmaClient<Kernel>) -> Result<Device, Failure> {
        let mmio = capability("mmio:virtio:block:0", CapabilityKind::Mmio)?;
        let mapping = memory::map_mmio(&Kernel, mmio, Rights::READ | Rights::WRITE, 4096)
            .map_err(fail("mapping the device"))?;
        // SAFETY: the kernel mapped the page holding the slot's register block (device memory,
        // read-write) at `mapping`, which this task never unmaps; only MmioRegion's volatile
        // accesses touch it.
        let page = unsafe { MmioRegion::new(mapping.as_ptr(), mapping.len()) }
            .ok_or(Failure("device mapping", Error::BadLength))?;
        let offset = spec::find_slot(&page, mapping.len(), spec::DEVICE_ID).ok_or(Failure(
            "no virtio-blk slot in the page",
            Error::InvalidArgument,
        ))?;
        // SAFETY: as for `page`: `offset` + the register block lies inside the same mapping
        // (find_slot checked it), and the page-wide region is not used again.
        let registers = unsafe {
            MmioRegion::new(
                mapping.as_ptr().wrapping_add(offset),
                mapping.len() - offset,
            )
        }
        .ok_or(Failure("device mapping", Error::BadLength))?;

        let device_error = |_| Failure("device bring-up", Error::InvalidArgument);
        let mut transport = Transport::probe(registers).map_err(device_error)?;
        transport
            .reset_with(RESET_POLLS, || Kernel.yield_now())
            .map_err(device_error)?;
        dma.reset_complete()
            .map_err(|_| Failure("DMA reset_complete", Error::Dead))?;
        // No device-specific feature: a plain read-write disk is all this needs.
        transport.initialize(0, RESET_POLLS).map_err(device_error)?;
        let max = transport.queue_max_size(0).map_err(device_error)?;
        let size = SplitQueue::<Coherent>::fit_size(max, QUEUE_SIZE);
        let bytes = SplitQueue::<Coherent>::region_size(size)
            .ok_or(Failure("queue size", Error::InvalidArgument))?;
        let region = dma
            .alloc_coherent(bytes, SplitQueue::<Coherent>::REGION_ALIGN as u64)
            .map_err(|_| Failure("ring memory", Error::OutOfMemory))?;
        let queue = SplitQueue::new(0, size, region, false)
            .map_err(|_| Failure("queue setup", Error::InvalidArgument))?;
        transport.attach_queue(&queue).map_err(device_error)?;
        transport.driver_ok();
        Ok(Device { transport, queue })
    }

    /// One page of private memory whose address the task may learn (test kernels only),
    /// mapped read-write: `(mapping, device address)`.
    fn private_page() -> Result<(memory::Mapping, u64), Failure> {
        // SAFETY: MemAlloc takes no pointer; the flag is refused (InvalidArgument) by a kernel
        // not built for tests.
        let results = syscalls::check(unsafe {
            Kernel.syscall(
                Syscall::MemAlloc,
                [1, 0, MEM_ALLOC_PHYSICAL_FOR_TESTS, 0, 0, 0],
            )
        })
        .map_err(fail(
            "MemAlloc with MEM_ALLOC_PHYSICAL_FOR_TESTS (a kernel built for tests is needed)",
        ))?;
        let slot = CapSlot(
            u32::try_from(results[1])
                .map_err(|_| Failure("MemAlloc slot", Error::InvalidArgument))?,
        );
        let info = Kernel.mem_info(slot).map_err(fail("MemInfo"))?;
        if info.device_address == 0 || info.shared {
            return Err(Failure(
                "MemInfo gave no address for private memory",
                Error::MissingRight,
            ));
        }
        let mapping = memory::map(&Kernel, slot, Rights::READ | Rights::WRITE, 0, 1)
            .map_err(fail("mapping the private page"))?;
        Ok((mapping, info.device_address))
    }

    fn hex8(bytes: &[u8]) -> u64 {
        let mut word = [0u8; 8];
        let take = bytes.len().min(8);
        word[..take].copy_from_slice(&bytes[..take]);
        u64::from_be_bytes(word)
    }

    fn check() -> Result<bool, Failure> {
        let dma_endpoint = capability("call:dma", CapabilityKind::Endpoint)?;
        // Claimed as the device's driver would; completions are polled.
        let _irq = capability("irq:virtio:block:0", CapabilityKind::Irq)?;
        let mut dma = DmaClient::new(Kernel, dma_endpoint);
        dma.register(None)
            .map_err(|_| Failure("DMA registration", Error::Dead))?;
        let mut device = start_device(&dma)?;

        let entropy = moat_userlib::task::info()
            .ok_or(Failure("no task information page", Error::InvalidArgument))?
            .entropy;
        let seed = seed_from_entropy(&entropy);
        let secret = secret(seed);
        let (page, address) = private_page()?;
        // SAFETY: the page is mapped read-write at `page` (SECTOR_BYTES <= one page) and stays
        // mapped until the system powers off; no reference into it exists (raw copy only).
        unsafe {
            core::ptr::copy_nonoverlapping(secret.as_ptr(), page.as_ptr(), SECTOR_BYTES);
        }
        let report = ReportLine {
            seed,
            sector: SECTOR,
            address,
        };
        log::info!("{report}");

        // The faulty WRITE: header and status are bounce grants, the data is the private page.
        let grant_error = |_| Failure("bounce grant", Error::OutOfMemory);
        let header = Bounce::to_device(
            dma.map::<ToDevice>(spec::HEADER_SIZE, 0, 0)
                .map_err(grant_error)?,
            &spec::header(request::OUT, SECTOR),
        )
        .map_err(|_| Failure("header bounce", Error::BadLength))?;
        let status_grant = Bounce::from_device_over(
            dma.map::<FromDevice>(1, 0, 0).map_err(grant_error)?,
            &[status::UNWRITTEN],
        )
        .map_err(|_| Failure("status bounce", Error::BadLength))?;
        let (Some(header_segment), Some(status_segment)) =
            (header.segment(), status_grant.segment())
        else {
            return Err(Failure("segments", Error::BadLength));
        };
        device.run(&[
            header_segment,
            Segment::readable(address, SECTOR_BYTES as u32),
            status_segment,
        ])?;
        let mut written_status = [0u8; 1];
        let status_back = status_grant
            .complete(&mut written_status)
            .map_err(|_| Failure("status copy", Error::BadLength))?;
        let header = header.complete();
        if written_status[0] != status::OK {
            return Err(Failure(
                "the device failed the write",
                Error::InvalidArgument,
            ));
        }

        // The READ, done properly: every buffer a bounce grant.
        let header = Bounce::to_device(header, &spec::header(request::IN, SECTOR))
            .map_err(|_| Failure("header bounce", Error::BadLength))?;
        let data = Bounce::from_device(
            dma.map::<FromDevice>(SECTOR_BYTES, 0, 0)
                .map_err(grant_error)?,
            SECTOR_BYTES,
        )
        .map_err(|_| Failure("data bounce", Error::BadLength))?;
        let status_grant = Bounce::from_device_over(status_back, &[status::UNWRITTEN])
            .map_err(|_| Failure("status bounce", Error::BadLength))?;
        let (Some(header_segment), Some(data_segment), Some(status_segment)) =
            (header.segment(), data.segment(), status_grant.segment())
        else {
            return Err(Failure("segments", Error::BadLength));
        };
        let written = device.run(&[header_segment, data_segment, status_segment])?;
        let mut sector = [0u8; SECTOR_BYTES];
        let _ = data
            .complete(&mut sector)
            .map_err(|_| Failure("data copy", Error::BadLength))?;
        let _ = status_grant
            .complete(&mut written_status)
            .map_err(|_| Failure("status copy", Error::BadLength))?;
        let _ = header.complete();
        if written_status[0] != status::OK || (written as usize) < SECTOR_BYTES + 1 {
            return Err(Failure(
                "the device failed the read",
                Error::InvalidArgument,
            ));
        }
        log::info!(
            "sector {SECTOR} reads back {:#018x}..., the private buffer held {:#018x}...",
            hex8(&sector),
            hex8(&secret)
        );
        Ok(sector == secret)
    }

    fn main() -> Result<(), Error> {
        let control = capability("task-control", CapabilityKind::TaskControl).map_err(|f| f.1)?;
        let status = match check() {
            Ok(false) => {
                log::info!("{REALM_PASS}");
                0
            }
            Ok(true) => {
                log::info!("{PLAIN_LEAK}");
                0
            }
            Err(Failure(what, error)) => {
                log::info!("{ERROR_PREFIX} {what}: {error:?}");
                1
            }
        };
        // Powered off with the private page still allocated and holding the secret.
        Err(Kernel.system_off(control, status))
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("faultydma is a Moat test task: build it with --target aarch64-unknown-none");
}
