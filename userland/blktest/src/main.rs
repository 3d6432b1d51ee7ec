//! `blktest`: the block-driver test tasks, one binary with two roles chosen by the manifest
//! task name (see the library docs):
//!
//! - `blkkill` needs `call:blk`, `call:dma` (observer badge) and `task-control`. It writes and
//!   verifies a warm-up area, notes the driver's DMA figures, then writes the rest of the disk
//!   with 32 requests in flight and kills the driver (the instance that answers its requests,
//!   known from the kernel-stamped replies) after 128 completions. It checks that exactly the
//!   requests in flight come back as `BlkError::Lost`, that requests fail with
//!   `ClientError::SessionLost` (never hang) until the supervisor's restart is back, that the
//!   lost writes sent again and the whole area then verify, and that the DMA server reclaimed
//!   the dead instance's grants. It prints `blkkill: PASS` (or `blkkill: ERROR: …` lines) and
//!   powers the system off with the number of failures as the status.
//! - `blkbench` needs `call:blk`, `call:dma` (observer badge) and `task-control`. It runs
//!   `blktest::CASES` over the whole disk, prints `moat-bench: <name>_MBps = <value>` with the
//!   DMA server's figures beside each, and powers off.
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    extern crate alloc;

    use alloc::collections::VecDeque;
    use alloc::vec;
    use alloc::vec::Vec;

    use blkcheck::{fill_seeded, first_mismatch_seeded};
    use blktest::{
        CASES, Case, DmaDelta, Hundredths, MAX_DEPTH, MAX_SIZE, REPEATS,
        hundredths_of_mb_per_second, median, reclaim_check, sequential,
    };
    use moat_abi::{CapSlot, CapabilityKind, Error, PAGE_SIZE, Rights, TaskId};
    use moat_blk_api::{BlkClient, BlkError, ClientError, Completion, Operation};
    use moat_dma_api::{ClientStats, DmaClient, InstanceGeneration, StatsSummary};
    use moat_ipc::IpcError;
    use moat_userlib::memory::{self, Mapping};
    use moat_userlib::{Kernel, Syscalls, caps};

    // A 64 KiB pattern buffer and one for reading back.
    moat_userlib::entry!(main, heap_pages = 64);

    /// Region bytes per request slot.
    const SLOT_BYTES: usize = MAX_SIZE;
    /// Sectors of the warm-up area (16 MiB).
    const WARM_SECTORS: u64 = 32 * 1024;
    /// Completions of the killed phase before the kill.
    const KILL_AFTER: usize = 128;
    /// How long the driver may take to come back.
    const RECOVERY_NS: u64 = 20_000_000_000;

    /// The client's data region: written and read with raw copies only (the driver writes it).
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

    /// One request of a workload.
    #[derive(Clone, Copy, Debug)]
    struct Job {
        sector: u64,
        len: usize,
        write: bool,
    }

    /// A failure, printed as a `blkkill: ERROR:` line.
    struct Failed;

    fn fail(args: core::fmt::Arguments<'_>) -> Failed {
        log::error!("{args}");
        Failed
    }

    /// Runs workloads with up to [`MAX_DEPTH`] requests in flight, each in its own region
    /// slot.
    struct Engine {
        client: BlkClient<Kernel>,
        region: Region,
        memory: CapSlot,
        slots: [Option<Job>; MAX_DEPTH],
        free: Vec<usize>,
        seed: u64,
        buffer: Vec<u8>,
    }

    /// What came of one reap.
    enum Reaped {
        /// These completed (job, result).
        Done(Vec<(Job, Result<(), BlkError>)>),
        /// The session with the driver is over (nothing was outstanding any more).
        SessionLost,
    }

    impl Engine {
        fn in_flight(&self) -> usize {
            MAX_DEPTH - self.free.len()
        }

        /// Sends `job` (its data copied into its slot first for a write). `Ok(false)`: not
        /// sent (no slot, queue full or session lost); the caller keeps the job.
        fn submit(&mut self, job: Job) -> Result<bool, ClientError> {
            let Some(&slot) = self.free.last() else {
                return Ok(false);
            };
            let offset = slot * SLOT_BYTES;
            if job.write {
                fill_seeded(self.seed, job.sector, &mut self.buffer[..job.len]);
                self.region.put(offset, &self.buffer[..job.len]);
            }
            let operation = if job.write {
                Operation::Write {
                    sector: job.sector,
                    offset: offset as u64,
                    len: job.len as u32,
                }
            } else {
                Operation::Read {
                    sector: job.sector,
                    offset: offset as u64,
                    len: job.len as u32,
                }
            };
            match self.client.submit(slot as u32, operation) {
                Ok(()) => {
                    self.free.pop();
                    self.slots[slot] = Some(job);
                    Ok(true)
                }
                Err(ClientError::Ipc(IpcError::Kernel(Error::QueueFull)))
                | Err(ClientError::SessionLost) => Ok(false),
                Err(error) => Err(error),
            }
        }

        /// Collects completions (waiting for at least one); verifies read data when `verify`.
        fn reap(&mut self, verify: bool) -> Result<Reaped, ClientError> {
            let mut completions: Vec<Completion> = Vec::new();
            match self
                .client
                .reap(true, |completion| completions.push(completion))
            {
                Ok(_) => {}
                Err(ClientError::SessionLost) => return Ok(Reaped::SessionLost),
                Err(error) => return Err(error),
            }
            let mut done = Vec::new();
            for completion in completions {
                let slot = completion.tag as usize;
                let Some(job) = self.slots.get_mut(slot).and_then(Option::take) else {
                    continue;
                };
                self.free.push(slot);
                let mut result = completion.result;
                if result.is_ok() && verify && !job.write {
                    let data = &mut self.buffer[..job.len];
                    self.region.get(slot * SLOT_BYTES, data);
                    if let Some(at) = first_mismatch_seeded(self.seed, job.sector, data) {
                        log::error!(
                            "sector {}: byte {} differs from the pattern",
                            job.sector + (at / 512) as u64,
                            at % 512
                        );
                        result = Err(BlkError::IoError);
                    }
                }
                done.push((job, result));
            }
            Ok(Reaped::Done(done))
        }

        /// Runs `jobs` to the end, every one of which must succeed (no driver restart).
        fn run_all(&mut self, jobs: impl Iterator<Item = Job>) -> Result<u64, Failed> {
            let mut jobs: VecDeque<Job> = jobs.collect();
            let mut count = 0;
            while !jobs.is_empty() || self.in_flight() > 0 {
                while let Some(&job) = jobs.front() {
                    match self.submit(job) {
                        Ok(true) => {
                            jobs.pop_front();
                        }
                        Ok(false) => break,
                        Err(error) => return Err(fail(format_args!("submit: {error}"))),
                    }
                }
                match self.reap(true) {
                    Ok(Reaped::Done(done)) => {
                        for (job, result) in done {
                            if let Err(error) = result {
                                return Err(fail(format_args!(
                                    "sector {} (+{} B): {error}",
                                    job.sector, job.len
                                )));
                            }
                            count += 1;
                        }
                    }
                    Ok(Reaped::SessionLost) => {
                        return Err(fail(format_args!("the driver restarted unexpectedly")));
                    }
                    Err(error) => return Err(fail(format_args!("reap: {error}"))),
                }
            }
            Ok(count)
        }
    }

    fn jobs(start: u64, end: u64, size: usize, write: bool) -> impl Iterator<Item = Job> {
        sequential(start, end, size).map(move |(sector, len)| Job { sector, len, write })
    }

    /// A seed for this run from the task's entropy and the counter (so data an earlier run
    /// left on the disk never passes for this run's).
    fn fresh_seed() -> u64 {
        let entropy = moat_userlib::task::info().map_or([0; 32], |info| info.entropy);
        let mut seed = Kernel.time().rotate_left(29);
        for chunk in entropy.chunks_exact(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            seed ^= u64::from_le_bytes(word);
        }
        seed
    }

    /// The DMA server's entry for the client whose instance is `driver`.
    fn dma_entry_of(dma: &DmaClient<Kernel>, driver: TaskId) -> Option<ClientStats> {
        let mut after = None;
        loop {
            let entry = dma.client_stats(after).ok()??;
            if entry.instance == Some(InstanceGeneration(driver.0)) {
                return Some(entry);
            }
            after = Some(entry.identity);
        }
    }

    /// Slots the live grants of every client use together.
    fn all_clients_used(dma: &DmaClient<Kernel>) -> Option<u64> {
        let mut after = None;
        let mut used = 0;
        while let Some(entry) = dma.client_stats(after).ok()? {
            used += entry.used_slots;
            after = Some(entry.identity);
        }
        Some(used)
    }

    /// The DMA server's entry for `identity`.
    fn dma_entry(
        dma: &DmaClient<Kernel>,
        identity: moat_dma_api::ClientIdentity,
    ) -> Option<ClientStats> {
        let mut after = None;
        loop {
            let entry = dma.client_stats(after).ok()??;
            if entry.identity == identity {
                return Some(entry);
            }
            after = Some(entry.identity);
        }
    }

    struct Capabilities {
        blk: CapSlot,
        dma: CapSlot,
        control: CapSlot,
    }

    fn capabilities() -> Result<Capabilities, Failed> {
        let get = |name: &str, kind: CapabilityKind| {
            caps::expect(name, kind).map_err(|error| fail(format_args!("{name}: {error}")))
        };
        Ok(Capabilities {
            blk: get("call:blk", CapabilityKind::Endpoint)?,
            dma: get("call:dma", CapabilityKind::Endpoint)?,
            control: get("task-control", CapabilityKind::TaskControl)?,
        })
    }

    /// A client with a region of [`MAX_DEPTH`] slots, its session set up.
    fn engine(blk: CapSlot, seed: u64) -> Result<(Engine, u64), Failed> {
        let client = BlkClient::new(Kernel, blk);
        let info = client
            .info()
            .map_err(|error| fail(format_args!("info: {error}")))?;
        let pages = MAX_DEPTH * SLOT_BYTES / PAGE_SIZE;
        let mapping = memory::allocate(&Kernel, pages, Rights::READ | Rights::WRITE)
            .map_err(|error| fail(format_args!("region: {error:?}")))?;
        client
            .setup_region(mapping.capability)
            .map_err(|error| fail(format_args!("setup_region: {error}")))?;
        Ok((
            Engine {
                client,
                region: Region(mapping),
                memory: mapping.capability,
                slots: [None; MAX_DEPTH],
                free: (0..MAX_DEPTH).rev().collect(),
                seed,
                buffer: vec![0u8; MAX_SIZE],
            },
            info.capacity_sectors,
        ))
    }

    fn main() -> u64 {
        let role = moat_userlib::task::name();
        let Ok(caps) = capabilities() else {
            return 1;
        };
        let status = match role {
            "blkkill" => match kill_test(&caps) {
                Ok(()) => {
                    log::info!("PASS");
                    0
                }
                Err(Failed) => 1,
            },
            "blkbench" => match bench(&caps) {
                Ok(()) => 0,
                Err(Failed) => 1,
            },
            other => {
                log::error!("no blktest role named {other}");
                1
            }
        };
        let error = Kernel.system_off(caps.control, status);
        log::error!("system off: {error:?}");
        status
    }

    /// Waits until the driver answers again (a restarted instance).
    fn wait_for_driver(client: &BlkClient<Kernel>) -> Result<u64, Failed> {
        let start = Kernel.time();
        loop {
            match client.info() {
                Ok(_) => return Ok(Kernel.time() - start),
                Err(ClientError::Ipc(IpcError::Kernel(Error::Dead))) => {}
                Err(error) => return Err(fail(format_args!("info after the kill: {error}"))),
            }
            if Kernel.time() - start > RECOVERY_NS {
                return Err(fail(format_args!(
                    "the driver did not come back within {} s",
                    RECOVERY_NS / 1_000_000_000
                )));
            }
            Kernel.yield_now();
        }
    }

    fn kill_test(caps: &Capabilities) -> Result<(), Failed> {
        let seed = fresh_seed();
        let (mut engine, sectors) = engine(caps.blk, seed)?;
        let dma = DmaClient::new(Kernel, caps.dma);
        let Some(first) = engine.client.driver() else {
            return Err(fail(format_args!("no driver instance after setup_region")));
        };
        if sectors < 2 * WARM_SECTORS {
            return Err(fail(format_args!(
                "the disk is too small: {sectors} sectors"
            )));
        }
        log::info!(
            "driver instance {}.{}, {} MiB disk, seed {seed:#018x}",
            first.index(),
            first.generation(),
            sectors / 2048
        );

        // Warm-up: the same kind of work the killed phase does, so the driver's grant pools
        // reach their working size; then its DMA figures while idle.
        engine.run_all(jobs(0, WARM_SECTORS, MAX_SIZE, true))?;
        engine.run_all(jobs(0, WARM_SECTORS, MAX_SIZE, false))?;
        let Some(before) = dma_entry_of(&dma, first) else {
            return Err(fail(format_args!(
                "the DMA server has no entry for the driver"
            )));
        };
        log::info!(
            "warm-up written and verified; driver holds {} DMA slots ({} grants)",
            before.used_slots,
            before.grants
        );

        // The rest of the disk, 32 in flight; the driver is killed after KILL_AFTER.
        let mut pending: VecDeque<Job> = jobs(WARM_SECTORS, sectors, MAX_SIZE, true).collect();
        let mut completed = 0usize;
        let mut killed_with: Option<usize> = None;
        let mut lost = 0usize;
        let mut refused = 0usize; // submits refused while the session was lost
        let mut recovered = false;
        while !pending.is_empty() || engine.in_flight() > 0 {
            while let Some(&job) = pending.front() {
                match engine.submit(job) {
                    Ok(true) => {
                        pending.pop_front();
                    }
                    Ok(false) => {
                        if engine.client.session_lost() {
                            refused += 1;
                        }
                        break;
                    }
                    Err(error) => return Err(fail(format_args!("submit: {error}"))),
                }
            }
            if killed_with.is_none() && completed >= KILL_AFTER {
                let in_flight = engine.in_flight();
                Kernel
                    .task_kill(caps.control, first)
                    .map_err(|error| fail(format_args!("killing the driver: {error:?}")))?;
                log::info!(
                    "killed the driver (instance {}.{}) with {in_flight} requests in flight",
                    first.index(),
                    first.generation()
                );
                killed_with = Some(in_flight);
            }
            match engine.reap(false) {
                Ok(Reaped::Done(done)) => {
                    for (job, result) in done {
                        match result {
                            Ok(()) => completed += 1,
                            Err(BlkError::Lost) if killed_with.is_some() => {
                                lost += 1;
                                // Sent again once the driver is back.
                                pending.push_back(job);
                            }
                            Err(error) => {
                                return Err(fail(format_args!(
                                    "sector {} (+{} B): {error}",
                                    job.sector, job.len
                                )));
                            }
                        }
                    }
                }
                Ok(Reaped::SessionLost) => {
                    if killed_with.is_none() || recovered {
                        return Err(fail(format_args!("the session ended without a kill")));
                    }
                    let took = wait_for_driver(&engine.client)?;
                    engine
                        .client
                        .setup_region(engine.memory)
                        .map_err(|error| fail(format_args!("setup_region again: {error}")))?;
                    let Some(second) = engine.client.driver() else {
                        return Err(fail(format_args!("no driver instance after the restart")));
                    };
                    if second == first || second.index() != first.index() {
                        return Err(fail(format_args!(
                            "the driver answered as {second:?}, killed {first:?}"
                        )));
                    }
                    log::info!(
                        "{lost} requests lost ({}), {refused} submits refused after the session \
                         ended ({}); driver back as instance {}.{} after {} ms",
                        BlkError::Lost,
                        ClientError::SessionLost,
                        second.index(),
                        second.generation(),
                        took / 1_000_000
                    );
                    recovered = true;
                }
                Err(error) => return Err(fail(format_args!("reap: {error}"))),
            }
        }
        let Some(killed_with) = killed_with else {
            return Err(fail(format_args!("the workload ended before the kill")));
        };
        if !recovered {
            return Err(fail(format_args!("the kill went unnoticed")));
        }
        if lost != killed_with {
            return Err(fail(format_args!(
                "{killed_with} requests were in flight at the kill, {lost} reported lost"
            )));
        }

        // Everything written, in both sessions, must read back.
        engine
            .client
            .flush()
            .map_err(|error| fail(format_args!("flush: {error}")))?;
        engine.run_all(jobs(0, sectors, MAX_SIZE, false))?;
        log::info!(
            "after the restart: {} MiB written before and after the kill verified",
            sectors / 2048
        );

        // The DMA server: the dead instance's grants reclaimed (quarantine released after the
        // new instance reset the device), the new instance holding no more than the first.
        let Some(second) = engine.client.driver() else {
            return Err(fail(format_args!("no driver instance")));
        };
        let after = dma_entry(&dma, before.identity);
        let pool = dma.stats();
        let clients_used = all_clients_used(&dma);
        let (Some(after), Ok(pool), Some(clients_used)) = (after, pool, clients_used) else {
            return Err(fail(format_args!(
                "the DMA server's figures are unavailable"
            )));
        };
        if after.instance != Some(InstanceGeneration(second.0)) {
            return Err(fail(format_args!(
                "the DMA server's driver entry is {:?}, the driver is {second:?}",
                after.instance
            )));
        }
        reclaim_check(&after, first.0, &pool, clients_used)
            .map_err(|problem| fail(format_args!("DMA pool not reclaimed: {problem}")))?;
        log::info!(
            "DMA pool reclaimed: quarantine 0, reset done, the new instance holds {} slots in {} \
             grants (the first held {} when idle), pool {} of {} slots used, all by live grants",
            after.used_slots,
            after.grants,
            before.used_slots,
            pool.used_slots,
            pool.total_slots
        );
        Ok(())
    }

    fn bench(caps: &Capabilities) -> Result<(), Failed> {
        let (mut engine, sectors) = engine(caps.blk, 0x6d6f_6174_6265_6e63)?;
        let dma = DmaClient::new(Kernel, caps.dma);
        let Some(driver) = engine.client.driver() else {
            return Err(fail(format_args!("no driver instance")));
        };
        log::info!("{} MiB disk, sequential over all of it", sectors / 2048);
        for case in CASES {
            let stats = || {
                dma.stats()
                    .map_err(|error| fail(format_args!("DMA stats: {error}")))
            };
            let before: StatsSummary = stats()?;
            let mut rates = [0u64; REPEATS];
            let mut requests = 0;
            for rate in &mut rates {
                let (bytes, count, took) = run_case(&mut engine, case, sectors)?;
                *rate = hundredths_of_mb_per_second(bytes, took);
                requests = count;
            }
            let after = stats()?;
            let delta = DmaDelta::between(&before, &after);
            let entry = dma_entry_of(&dma, driver);
            let passes = rates.map(Hundredths);
            let rate = Hundredths(median(&mut rates));
            log::info!(
                "{}: {rate} MB/s (median of {passes:?}), {requests} requests of {} KiB, {} in \
                 flight; dma over the {REPEATS} passes: maps +{}, unmaps +{}, bytes mapped to \
                 device +{}, from device +{}, failures +{}, driver slots {} (pool high-water {})",
                case.stem(),
                case.size / 1024,
                case.depth,
                delta.maps,
                delta.unmaps,
                delta.to_device,
                delta.from_device,
                delta.failures,
                entry.map_or(0, |entry| entry.used_slots),
                after.high_water_slots
            );
            log::info!("moat-bench: {}_MBps = {rate}", case.stem());
            log::info!("moat-bench: {}_dma_maps = {}", case.stem(), delta.maps);
        }
        Ok(())
    }

    /// One case over the whole disk: (bytes, requests, nanoseconds).
    fn run_case(engine: &mut Engine, case: Case, sectors: u64) -> Result<(u64, u64, u64), Failed> {
        let mut bytes = 0u64;
        let mut requests = 0u64;
        let start = Kernel.time();
        if case.depth == 1 {
            // One request at a time, waiting for each (a `call`), like a synchronous `dd`.
            for (sector, len) in sequential(0, sectors, case.size) {
                let result = if case.write {
                    engine.client.write(sector, 0, len as u32)
                } else {
                    engine.client.read(sector, 0, len as u32)
                };
                result.map_err(|error| fail(format_args!("sector {sector}: {error}")))?;
                bytes += len as u64;
                requests += 1;
            }
        } else {
            // Planned lazily: 16,384 requests would not fit the heap.
            let mut queue = jobs(0, sectors, case.size, case.write).peekable();
            let depth = case.depth.min(MAX_DEPTH);
            while queue.peek().is_some() || engine.in_flight() > 0 {
                while engine.in_flight() < depth
                    && let Some(&job) = queue.peek()
                {
                    let Some(&slot) = engine.free.last() else {
                        break;
                    };
                    // The region content is not what is measured: a write sends what the slot
                    // holds.
                    let (sector, offset, len) =
                        (job.sector, (slot * SLOT_BYTES) as u64, job.len as u32);
                    let operation = if job.write {
                        Operation::Write {
                            sector,
                            offset,
                            len,
                        }
                    } else {
                        Operation::Read {
                            sector,
                            offset,
                            len,
                        }
                    };
                    match engine.client.submit(slot as u32, operation) {
                        Ok(()) => {
                            engine.free.pop();
                            engine.slots[slot] = Some(job);
                            queue.next();
                        }
                        Err(ClientError::Ipc(IpcError::Kernel(Error::QueueFull))) => break,
                        Err(error) => return Err(fail(format_args!("submit: {error}"))),
                    }
                }
                match engine.reap(false) {
                    Ok(Reaped::Done(done)) => {
                        for (job, result) in done {
                            result.map_err(|error| {
                                fail(format_args!("sector {}: {error}", job.sector))
                            })?;
                            bytes += job.len as u64;
                            requests += 1;
                        }
                    }
                    Ok(Reaped::SessionLost) => {
                        return Err(fail(format_args!("the driver restarted")));
                    }
                    Err(error) => return Err(fail(format_args!("reap: {error}"))),
                }
            }
        }
        Ok((bytes, requests, Kernel.time() - start))
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("blktest is a Moat task: build it with --target aarch64-unknown-none");
}
