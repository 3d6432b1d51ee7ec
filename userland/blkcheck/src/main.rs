//! `blkcheck`: writes the deterministic pattern (`blkcheck::fill`) over the whole disk through
//! the block driver, in mixed sizes with up to [`SLOTS`](task) requests in flight, flushes,
//! reads everything back and verifies it, and prints one summary line:
//! `blkcheck: PASS … write X MB/s, read+verify Y MB/s …` (or `FAIL`). Exits 0 on success.
//!
//! Needs an endpoint capability `call:blk`. Completions are collected by polling (`Reap` without
//! waiting, then a yield), so the task stays runnable until it is done and the demo task does
//! not take a moment when every task waits on the disk for the end of the workload.
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    extern crate alloc;

    use alloc::vec;
    use alloc::vec::Vec;

    use blkcheck::{Chunk, MAX_REQUEST, Summary, first_mismatch, plan};
    use moat_abi::{CapabilityKind, Error, PAGE_SIZE, Rights};
    use moat_blk_api::{BlkClient, ClientError, Completion, Operation};
    use moat_ipc::IpcError;
    use moat_userlib::memory::{self, Mapping};
    use moat_userlib::{Kernel, Syscalls, caps};

    // One 256 KiB pattern buffer and one for reading back: 640 KiB of heap.
    moat_userlib::entry!(main, heap_pages = 160);

    /// Requests in flight at once (each has its own part of the region).
    const SLOTS: usize = 32;
    /// Region bytes per slot: the largest request plus room to misalign it.
    const SLOT_BYTES: usize = MAX_REQUEST + PAGE_SIZE;

    const EXIT_FAILED: u64 = 1;

    /// The data region: written and read with raw copies only (the driver writes it too).
    struct Region(Mapping);

    impl Region {
        fn put(&self, offset: usize, data: &[u8]) {
            assert!(offset + data.len() <= self.0.len());
            // SAFETY: the range is inside the mapping (checked above), mapped read-write and
            // never unmapped; no reference into the region exists (raw copies only), and
            // `data` is private memory.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    self.0.as_ptr().add(offset),
                    data.len(),
                )
            };
        }

        fn get(&self, offset: usize, out: &mut [u8]) {
            assert!(offset + out.len() <= self.0.len());
            // SAFETY: as in `put`; every byte value is a valid u8.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    self.0.as_ptr().add(offset),
                    out.as_mut_ptr(),
                    out.len(),
                )
            };
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Pass {
        Write,
        Read,
    }

    struct Run {
        client: BlkClient<Kernel>,
        region: Region,
        in_flight: [Option<Chunk>; SLOTS],
        free: Vec<usize>,
        buffer: Vec<u8>,
        summary: Summary,
    }

    impl Run {
        fn offset(slot: usize, chunk: &Chunk) -> usize {
            slot * SLOT_BYTES + chunk.misalignment
        }

        fn complete(&mut self, pass: Pass, completion: Completion) {
            let slot = completion.tag as usize;
            let Some(chunk) = self.in_flight.get_mut(slot).and_then(Option::take) else {
                log::error!("completion for unknown tag {}", completion.tag);
                self.summary.failures += 1;
                return;
            };
            self.free.push(slot);
            if let Err(error) = completion.result {
                log::error!("sector {} (+{} B): {error}", chunk.sector, chunk.len);
                self.summary.failures += 1;
                return;
            }
            if pass == Pass::Read {
                let data = &mut self.buffer[..chunk.len];
                self.region.get(Self::offset(slot, &chunk), data);
                if let Some(at) = first_mismatch(chunk.sector, data) {
                    log::error!(
                        "sector {}: byte {} differs from the pattern",
                        chunk.sector + (at / 512) as u64,
                        at % 512
                    );
                    self.summary.failures += 1;
                }
            }
        }

        /// Collects completions (without waiting); yields if there were none.
        fn reap(&mut self, pass: Pass) -> Result<(), ClientError> {
            let mut done = Vec::new();
            let count = self
                .client
                .reap(false, |completion| done.push(completion))?;
            for completion in done {
                self.complete(pass, completion);
            }
            if count == 0 {
                Kernel.yield_now();
            }
            Ok(())
        }

        /// Reads the first and the last 256 KiB (one call each) and checks them against the
        /// pattern.
        fn earlier_pattern(&mut self, sectors: u64) -> Result<bool, ClientError> {
            let span = (MAX_REQUEST as u64 / 512).min(sectors);
            if span == 0 {
                return Ok(false);
            }
            let mut present = true;
            for sector in [0, sectors - span] {
                let len = (span * 512) as usize;
                self.client.read(sector, 0, len as u32)?;
                let data = &mut self.buffer[..len];
                self.region.get(0, data);
                present &= first_mismatch(sector, data).is_none();
            }
            Ok(present)
        }

        fn pass(&mut self, pass: Pass, sectors: u64) -> Result<(), ClientError> {
            let mut pattern = vec![0u8; MAX_REQUEST];
            for chunk in plan(sectors) {
                while self.free.is_empty() {
                    self.reap(pass)?;
                }
                let Some(slot) = self.free.pop() else {
                    continue;
                };
                let offset = Self::offset(slot, &chunk);
                let operation = match pass {
                    Pass::Write => {
                        blkcheck::fill(chunk.sector, &mut pattern[..chunk.len]);
                        self.region.put(offset, &pattern[..chunk.len]);
                        Operation::Write {
                            sector: chunk.sector,
                            offset: offset as u64,
                            len: chunk.len as u32,
                        }
                    }
                    Pass::Read => Operation::Read {
                        sector: chunk.sector,
                        offset: offset as u64,
                        len: chunk.len as u32,
                    },
                };
                self.in_flight[slot] = Some(chunk);
                loop {
                    match self.client.submit(slot as u32, operation) {
                        Ok(()) => break,
                        Err(ClientError::Ipc(IpcError::Kernel(Error::QueueFull))) => {
                            self.reap(pass)?
                        }
                        Err(error) => return Err(error),
                    }
                }
                if pass == Pass::Write {
                    self.summary.requests += 1;
                    self.summary.bytes += chunk.len as u64;
                }
                let busy = SLOTS - self.free.len();
                self.summary.max_in_flight = self.summary.max_in_flight.max(busy);
            }
            while self.free.len() < SLOTS {
                self.reap(pass)?;
            }
            Ok(())
        }
    }

    fn main() -> u64 {
        match check() {
            Ok(summary) if summary.failures == 0 => {
                log::info!("{summary}");
                0
            }
            Ok(summary) => {
                log::error!("{summary}");
                EXIT_FAILED
            }
            Err(error) => {
                log::error!("FAIL: {error}");
                EXIT_FAILED
            }
        }
    }

    fn check() -> Result<Summary, ClientError> {
        let endpoint = caps::expect("call:blk", CapabilityKind::Endpoint)
            .map_err(|_| ClientError::Ipc(IpcError::Kernel(Error::InvalidCapability)))?;
        let client = BlkClient::new(Kernel, endpoint);
        let info = client.info()?;
        log::info!(
            "disk: {} sectors ({} MiB), block {} B, max transfer {} KiB, depth {}{}",
            info.capacity_sectors,
            info.capacity_sectors / 2048,
            info.block_size,
            info.max_transfer / 1024,
            info.queue_depth,
            if info.read_only { ", read-only" } else { "" }
        );
        if info.read_only {
            return Err(ClientError::Blk(moat_blk_api::BlkError::ReadOnly));
        }
        let pages = SLOTS * SLOT_BYTES / PAGE_SIZE;
        let mapping = memory::allocate(&Kernel, pages, Rights::READ | Rights::WRITE)
            .map_err(|error| ClientError::Ipc(IpcError::Kernel(error)))?;
        client.setup_region(mapping.capability)?;
        let mut run = Run {
            client,
            region: Region(mapping),
            in_flight: [None; SLOTS],
            free: (0..SLOTS).rev().collect(),
            buffer: vec![0u8; MAX_REQUEST],
            summary: Summary::default(),
        };

        // Persistence: does the disk already hold the pattern (an earlier run wrote it)?
        let earlier = run.earlier_pattern(info.capacity_sectors)?;
        log::info!(
            "pattern from an earlier run: {}",
            if earlier { "present" } else { "absent" }
        );

        let start = Kernel.time();
        run.pass(Pass::Write, info.capacity_sectors)?;
        let written = Kernel.time();
        let flushed = run.client.flush();
        let flush_end = Kernel.time();
        if let Err(error) = flushed {
            log::error!("flush: {error}");
            run.summary.failures += 1;
        }
        run.pass(Pass::Read, info.capacity_sectors)?;
        let read = Kernel.time();
        run.summary.write_ns = written - start;
        run.summary.flush_ns = flush_end - written;
        run.summary.read_ns = read - flush_end;
        Ok(run.summary)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("blkcheck is a Moat task: build it with --target aarch64-unknown-none");
}
