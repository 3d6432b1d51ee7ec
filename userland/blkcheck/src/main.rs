//! `blkcheck`: writes the deterministic pattern (`blkcheck::fill`) over the whole disk through
//! the block driver, in mixed sizes with up to [`SLOTS`](task) requests in flight, flushes,
//! reads everything back and verifies it, and prints one summary line:
//! `blkcheck: PASS … write X MB/s, read+verify Y MB/s …` (or `FAIL`). Exits 0 on success.
//!
//! Needs an endpoint capability `call:blk`. Completions are collected by polling (`Reap` without
//! waiting, then a yield), so the task stays runnable until it is done and the demo task does
//! not take a moment when every task waits on the disk for the end of the workload.
//!
//! Run under the manifest name `blkcheck-persist` (build/system-blk-persist.toml) it checks
//! persistence across boots instead: it reads sector 0, and if the disk claims a pattern
//! (`blkcheck::seed_of`) it verifies the whole disk against that seed *before writing anything*
//! (`blkcheck: earlier pattern verified, seed 0x…` or errors; `blkcheck: no earlier pattern` on
//! a fresh disk); then it writes the pattern of a fresh seed from the task's entropy, reads it
//! back and prints the `PASS` line with `seed 0x…`. `cargo xtask test` boots it twice over one
//! disk image and checks that the second boot verified the seed the first one wrote.
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    extern crate alloc;

    use alloc::vec;
    use alloc::vec::Vec;

    use blkcheck::{Chunk, MAX_REQUEST, SEED, Summary, first_mismatch_seeded, plan, seed_of};
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
        /// The pattern's seed.
        seed: u64,
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
                if let Some(at) = first_mismatch_seeded(self.seed, chunk.sector, data) {
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
                present &= first_mismatch_seeded(self.seed, sector, data).is_none();
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
                        blkcheck::fill_seeded(self.seed, chunk.sector, &mut pattern[..chunk.len]);
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
        let persist = moat_userlib::task::name() == "blkcheck-persist";
        match check(persist) {
            Ok((summary, seed)) if summary.failures == 0 => {
                if persist {
                    log::info!("{summary}, seed {seed:#018x}");
                } else {
                    log::info!("{summary}");
                }
                0
            }
            Ok((summary, _)) => {
                log::error!("{summary}");
                EXIT_FAILED
            }
            Err(error) => {
                log::error!("FAIL: {error}");
                EXIT_FAILED
            }
        }
    }

    /// A seed for this boot from the task's entropy, different from `earlier`.
    fn fresh_seed(earlier: Option<u64>) -> u64 {
        let entropy = moat_userlib::task::info().map_or([0; 32], |info| info.entropy);
        let mut seed = 0u64;
        for chunk in entropy.chunks_exact(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            seed ^= u64::from_le_bytes(word);
        }
        // The counter too, in case the entropy is weak (it is host-controlled in a Realm
        // without RNDR; a seed only has to differ from the last boot's, not be secret).
        seed ^= Kernel.time().rotate_left(17);
        if Some(seed) == earlier || seed == 0 {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        }
        seed
    }

    /// Persistence: if the disk claims a pattern, verifies the whole of it before anything is
    /// written. Returns the earlier seed (`None` on a disk without one); failures are counted
    /// in the run's summary.
    fn verify_earlier(run: &mut Run, sectors: u64) -> Result<Option<u64>, ClientError> {
        run.client.read(0, 0, 512)?;
        let mut first = [0u8; 512];
        run.region.get(0, &mut first);
        let Some(seed) = seed_of(0, &first).filter(|&seed| {
            // Sector 0 must hold the whole pattern it claims.
            first_mismatch_seeded(seed, 0, &first).is_none()
        }) else {
            log::info!("no earlier pattern on the disk");
            return Ok(None);
        };
        run.seed = seed;
        let start = Kernel.time();
        run.pass(Pass::Read, sectors)?;
        let took = Kernel.time() - start;
        if run.summary.failures == 0 {
            log::info!(
                "earlier pattern verified, seed {seed:#018x}: {} KiB in {} ms, before writing",
                sectors / 2,
                took / 1_000_000
            );
        } else {
            log::error!(
                "earlier pattern seed {seed:#018x}: {} failures",
                run.summary.failures
            );
        }
        Ok(Some(seed))
    }

    fn check(persist: bool) -> Result<(Summary, u64), ClientError> {
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
            seed: SEED,
            client,
            region: Region(mapping),
            in_flight: [None; SLOTS],
            free: (0..SLOTS).rev().collect(),
            buffer: vec![0u8; MAX_REQUEST],
            summary: Summary::default(),
        };

        if persist {
            let earlier = verify_earlier(&mut run, info.capacity_sectors)?;
            run.seed = fresh_seed(earlier);
            // The earlier pass's figures are not this run's; its failures are.
            let failures = run.summary.failures;
            run.summary = Summary {
                failures,
                ..Summary::default()
            };
        } else {
            // Does the disk already hold the pattern (an earlier run wrote it)?
            let earlier = run.earlier_pattern(info.capacity_sectors)?;
            log::info!(
                "pattern from an earlier run: {}",
                if earlier { "present" } else { "absent" }
            );
        }

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
        Ok((run.summary, run.seed))
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("blkcheck is a Moat task: build it with --target aarch64-unknown-none");
}
