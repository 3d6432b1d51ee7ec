//! `ktest`: the kernel's end-to-end tests, run as Moat tasks under QEMU by `cargo xtask test`.
//!
//! One binary plays several roles, chosen by the task's manifest name (see
//! `build/system-ktest.toml`):
//! - `ktest` (the runner): runs each check, prints `ktest: PASS <name>` or
//!   `ktest: FAIL <name>: <why>`, then powers the system off with the number of failures as the
//!   exit status;
//! - `ktest-echo`: answers pings, and maps memory it is sent to prove both sides see the same
//!   bytes;
//! - `ktest-victim`: a server with restart policy "never", used to check `Dead`;
//! - `ktest-faulty`: faults on its first run; its restarted instance reports back;
//! - `ktest-fuzz`: thousands of syscalls with random numbers and arguments, then reports back;
//! - `ktest-irq`: drives the PL031 real-time clock's alarm and reports the interrupt it
//!   receives as a notification;
//! - `ktest-canary`: keeps a page of a recognisable pattern in its private memory, for the
//!   host-side confidentiality scan (`cargo xtask test` greps guest RAM for it in a Realm);
//! - `ktest-dma`: a client of the real DMA server (`dma`): registers, maps each direction,
//!   bounces data, unmaps and checks the server's figures; then ends with a grant outstanding,
//!   and its restarted instance checks that the supervisor's revoke put it in quarantine.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    extern crate alloc;

    use core::fmt::Write;

    use moat_abi::{
        CapSlot, CapabilityKind, Error, Message, MessageFlags, Rights, TaskId, TaskState, Timeout,
    };
    use moat_userlib::{Kernel, Received, Syscalls, caps, memory};

    moat_userlib::entry!(main);

    const PING: u32 = 1;
    const MEMORY: u32 = 2;
    const RESTARTED: u32 = 4;
    const FUZZ_DONE: u32 = 6;
    const IRQ_SEEN: u32 = 8;
    const CANARY_READY: u32 = 10;
    const EXIT_WITHOUT_REPLY: u32 = 9;
    const DMA_DONE: u32 = 12;
    const DMA_RESTARTED: u32 = 14;

    fn cap(name: &str, kind: CapabilityKind) -> Result<CapSlot, Error> {
        caps::expect(name, kind).map_err(|_| Error::InvalidCapability)
    }

    fn main() -> Result<u64, Error> {
        match moat_userlib::task::name() {
            "ktest" => runner(),
            "ktest-echo" | "ktest-victim" => server(),
            "ktest-faulty" => faulty(),
            "ktest-fuzz" => fuzz(),
            "ktest-irq" => irq_task(),
            "ktest-canary" => canary(),
            "ktest-dma" => dma_client(),
            other => {
                log::error!("no ktest role named {other}");
                Ok(1)
            }
        }
    }

    /// Makes the payload `value`, eight little-endian bytes (a fixed-size store, no copy call).
    fn set_payload_u64(message: &mut Message, value: u64) {
        if let Some(first) = message.payload.first_chunk_mut::<8>() {
            *first = value.to_le_bytes();
            message.header.length = 8;
        }
    }

    /// The first eight payload bytes as a little-endian number (missing bytes read as 0).
    fn payload_u64(message: &Message) -> u64 {
        let payload = message.payload();
        if let Some(first) = payload.first_chunk::<8>() {
            // The common case, without a variable-length copy.
            return u64::from_le_bytes(*first);
        }
        let mut word = [0u8; 8];
        word[..payload.len()].copy_from_slice(payload);
        u64::from_le_bytes(word)
    }

    fn message(label: u32, value: u64) -> Message {
        Message::new(label, &value.to_le_bytes()).unwrap_or_else(|_| Message::empty(label))
    }

    // ---- servers ----------------------------------------------------------------------------

    fn server() -> Result<u64, Error> {
        let kernel = Kernel;
        let name = moat_userlib::task::name();
        let endpoint = cap(
            if name == "ktest-echo" {
                "serve:echo"
            } else {
                "serve:victim"
            },
            CapabilityKind::Endpoint,
        )?;
        // One buffer for the request and its answer: ReplyRecv sends the answer from it and
        // receives the next request into it.
        let mut buffer = Message::zeroed();
        let mut reply = CapSlot::NONE;
        loop {
            let received = kernel.reply_recv(reply, endpoint, &mut buffer, Timeout::Forever, 0)?;
            reply = CapSlot::NONE;
            if received != Received::Message {
                continue;
            }
            let Some(caller) = buffer.reply_capability() else {
                continue;
            };
            match buffer.label() {
                PING => {
                    let answer = payload_u64(&buffer).wrapping_add(1);
                    set_payload_u64(&mut buffer, answer);
                    buffer.header.flags = MessageFlags::NONE;
                }
                MEMORY => {
                    let label = match check_shared_memory(&kernel, &buffer) {
                        Ok(()) => MEMORY,
                        Err(error) => error.to_raw(),
                    };
                    buffer = Message::empty(label);
                }
                EXIT_WITHOUT_REPLY => return Ok(0),
                _ => buffer = Message::empty(Error::InvalidArgument.to_raw()),
            }
            reply = caller;
        }
    }

    /// Maps the page the caller sent, reads its first word and writes it back plus one at offset 8.
    fn check_shared_memory(kernel: &Kernel, request: &Message) -> Result<(), Error> {
        let (slot, _) = request.capability().ok_or(Error::InvalidCapability)?;
        let mapping = memory::map(kernel, slot, Rights::READ | Rights::WRITE, 0, 1)?;
        let words = mapping.as_ptr().cast::<u64>();
        // SAFETY: the page was just mapped read-write at `words`; volatile accesses because the
        // sender reads the same memory.
        unsafe {
            let first = core::ptr::read_volatile(words);
            core::ptr::write_volatile(words.add(1), first.wrapping_add(1));
        }
        // SAFETY: nothing refers to the mapping any more.
        unsafe { kernel.mem_unmap(mapping.address, mapping.pages)? };
        kernel.cap_drop(slot)
    }

    fn faulty() -> Result<u64, Error> {
        let kernel = Kernel;
        let id = moat_userlib::task::id().ok_or(Error::InvalidArgument)?;
        if id.generation() == 0 {
            log::info!("first run: faulting on purpose");
            // SAFETY: not safe, on purpose: nothing is mapped at 0x8, so this load faults and the
            // kernel stops this task and reports it to the supervisor.
            let value =
                unsafe { core::ptr::read_volatile(core::ptr::without_provenance::<u64>(0x8)) };
            return Ok(value);
        }
        log::info!("restarted as generation {}", id.generation());
        let runner = cap("call:ktest", CapabilityKind::Endpoint)?;
        kernel.send(runner, &message(RESTARTED, u64::from(id.generation())))?;
        Ok(0)
    }

    // ---- an interrupt delivered to a task -------------------------------------------------------

    /// PL031 registers.
    const RTC_DR: usize = 0x00;
    const RTC_MR: usize = 0x04;
    const RTC_IMSC: usize = 0x10;
    const RTC_MIS: usize = 0x18;
    const RTC_ICR: usize = 0x1c;
    const IRQ_BIT: u64 = 1 << 3;

    fn irq_task() -> Result<u64, Error> {
        let kernel = Kernel;
        let mmio = cap("mmio:dt:arm,pl031:0", CapabilityKind::Mmio)?;
        let irq = cap("irq:dt:arm,pl031:0", CapabilityKind::Irq)?;
        let runner = cap("call:ktest", CapabilityKind::Endpoint)?;
        let regs = memory::map_mmio(&kernel, mmio, Rights::READ | Rights::WRITE, 4096)?;
        let base = regs.as_ptr();
        let read = |offset: usize| -> u32 {
            // SAFETY: `base` maps the PL031's 4 KiB register block as Device memory.
            unsafe { core::ptr::read_volatile(base.add(offset).cast::<u32>()) }
        };
        let write = |offset: usize, value: u32| {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(base.add(offset).cast::<u32>(), value) }
        };
        // Arm the alarm two seconds ahead (the RTC counts whole seconds).
        write(RTC_ICR, 1);
        write(RTC_MR, read(RTC_DR).wrapping_add(2));
        write(RTC_IMSC, 1);
        let bits = kernel.notify_wait(IRQ_BIT, Timeout::from_milliseconds(5000))?;
        let pending = read(RTC_MIS);
        write(RTC_ICR, 1);
        write(RTC_IMSC, 0);
        kernel.irq_ack(irq)?;
        log::info!("alarm interrupt arrived as notification bits {bits:#x} (MIS {pending:#x})");
        kernel.send(runner, &message(IRQ_SEEN, bits))?;
        Ok(0)
    }

    // ---- the confidentiality canary -----------------------------------------------------------

    /// The canary: 64 bytes computed at run time (so they appear in no binary, command line or
    /// DTB), repeated over a page. xtask computes the same bytes: byte i = (i * 73 + 31) ^ 0xc3.
    fn canary_byte(i: usize) -> u8 {
        ((i as u8).wrapping_mul(73).wrapping_add(31)) ^ 0xc3
    }

    fn canary() -> Result<u64, Error> {
        let kernel = Kernel;
        // The kernel test system's runner waits for it; in the default system's scan variant
        // (xtask, build/xtask/src/variants.rs) there is no runner.
        let runner = caps::find("call:ktest");
        let page = memory::allocate(&kernel, 1, Rights::READ | Rights::WRITE)?;
        for offset in 0..moat_abi::PAGE_SIZE {
            // SAFETY: the page is mapped read-write and private to this task.
            unsafe {
                core::ptr::write_volatile(page.as_ptr().add(offset), canary_byte(offset % 64))
            };
        }
        log::info!("canary written to private memory");
        if let Some(runner) = runner {
            kernel.send(runner, &message(CANARY_READY, 0))?;
        }
        // Keep the canary alive until the system powers off.
        loop {
            let _ = kernel.notify_wait(1, Timeout::Forever);
        }
    }

    // ---- the syscall fuzzer -------------------------------------------------------------------

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    /// A raw `svc #0` with any number and arguments: the point is to send what the typed
    /// wrappers never would.
    fn raw_syscall(number: u64, args: [u64; 6]) -> u64 {
        let status: u64;
        // SAFETY: the kernel must survive any syscall from a task; at worst it ends this task.
        // Every register the kernel may clobber is declared.
        unsafe {
            core::arch::asm!(
                "svc #0",
                inlateout("x0") args[0] => status,
                inlateout("x1") args[1] => _,
                inlateout("x2") args[2] => _,
                inlateout("x3") args[3] => _,
                inlateout("x4") args[4] => _,
                inlateout("x5") args[5] => _,
                lateout("x6") _,
                lateout("x7") _,
                in("x8") number,
                options(nostack),
            );
        }
        status
    }

    fn fuzz() -> Result<u64, Error> {
        const CALLS: u32 = 20_000;
        let kernel = Kernel;
        let runner = cap("call:ktest", CapabilityKind::Endpoint)?;
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ kernel.time());
        let mut errors = 0u32;
        let mut buffer = [0u64; 64];
        let pointers = [
            0,
            8,
            buffer.as_mut_ptr() as u64,
            moat_abi::TASK_INFO_VA as u64,
            0x20_0000,
            moat_abi::STACK_TOP as u64 - 64,
            0xffff_ff80_4000_0000,
            u64::MAX - 7,
        ];
        for _ in 0..CALLS {
            // Mostly real syscall numbers, sometimes anything at all.
            let number = if rng.next().is_multiple_of(8) {
                rng.next()
            } else {
                rng.next() % 30
            };
            // Exit would end the fuzzer early; ConsoleWrite would print whatever memory it names.
            // (SystemOff, TaskKill and friends need TaskControl, which the fuzzer lacks: they are
            // fuzzed and must fail.)
            if number == 1 || number == 2 {
                continue;
            }
            let mut args = [0u64; 6];
            for arg in args.iter_mut() {
                *arg = match rng.next() % 4 {
                    0 => rng.next() % 70,
                    1 => pointers[(rng.next() % pointers.len() as u64) as usize],
                    2 => rng.next(),
                    _ => rng.next() % 4096,
                };
            }
            // Keep waits short: a timeout argument of "forever" would park the fuzzer.
            match number {
                6 => args[2] = rng.next() % 1_000_000,
                7 => args[2] = rng.next() % 1_000_000,
                9 => args[1] = rng.next() % 1_000_000,
                27 => args[3] = rng.next() % 1_000_000,
                2 => args[1] %= 32,
                _ => {}
            }
            // Keep the one capability needed to report back.
            if number == 14 && args[0] == u64::from(runner.0) {
                continue;
            }
            if raw_syscall(number, args) != 0 {
                errors += 1;
            }
        }
        log::info!("{CALLS} random syscalls made, {errors} refused");
        kernel.send(runner, &message(FUZZ_DONE, u64::from(CALLS)))?;
        Ok(0)
    }

    // ---- a client of the real DMA server ---------------------------------------------------------

    /// The DMA quota of `ktest-dma` in build/system-ktest.toml.
    const DMA_WINDOW: u64 = 64 * 1024;
    /// Slots of the grant the first instance leaves behind when it ends (4 KiB, 2 KiB slots).
    const DMA_KEPT_SLOTS: u64 = 2;

    /// Runs the DMA checks of this instance and reports the outcome to the runner: an empty
    /// payload for success, else the reason. The first instance then exits with status 1 and a
    /// grant outstanding, so the supervisor revokes it and restarts it.
    fn dma_client() -> Result<u64, Error> {
        let kernel = Kernel;
        let runner = cap("call:ktest", CapabilityKind::Endpoint)?;
        let dma = cap("call:dma", CapabilityKind::Endpoint)?;
        let generation = moat_userlib::task::id().map_or(0, TaskId::generation);
        let mut client = moat_dma_api::DmaClient::new(Kernel, dma)
            .with_timeout(Timeout::from_milliseconds(5000));
        let (label, outcome) = if generation == 0 {
            (DMA_DONE, dma_first_run(&kernel, dma, &mut client))
        } else {
            (DMA_RESTARTED, dma_after_restart(&mut client))
        };
        let why = outcome.as_ref().err().map_or("", |why| why.as_str());
        let bytes = &why.as_bytes()[..why.len().min(moat_abi::MAX_PAYLOAD)];
        let report = Message::new(label, bytes).unwrap_or_else(|_| Message::empty(label));
        kernel.send(runner, &report)?;
        // The first instance ends with a grant outstanding (kept in `dma_first_run`'s result):
        // a non-zero status, so the supervisor revokes it and restarts it.
        Ok(u64::from(generation == 0 && outcome.is_ok()))
    }

    fn dma_first_run(
        kernel: &Kernel,
        dma: CapSlot,
        client: &mut moat_dma_api::DmaClient<Kernel>,
    ) -> Outcome {
        use moat_dma_api::{Bidirectional, Bounce, ClientError, DmaError, FromDevice, ToDevice};
        let e = |what: &str, error: ClientError| to_string(format_args!("{what}: {error}"));
        let window = client.register(None).map_err(|x| e("register", x))?;
        if window.size != DMA_WINDOW || window.reset_pending {
            return fail(format_args!("window {window:?}"));
        }
        let inside = |address: u64, len: usize| {
            address >= window.device_base
                && address + len as u64 <= window.device_base + window.size
        };
        let before = client.stats().map_err(|x| e("stats", x))?;

        let coherent = client
            .alloc_coherent(256, 64)
            .map_err(|x| e("alloc_coherent", x))?;
        if !coherent.write_u32(8, 0xfeed_f00d) || coherent.read_u32(8) != Some(0xfeed_f00d) {
            return fail(format_args!("coherent memory does not keep a word"));
        }

        // To the device: copied in; the device address lies in the window.
        let data: [u8; 1000] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        let grant = client
            .map::<ToDevice>(data.len(), 0, 0)
            .map_err(|x| e("map to-device", x))?;
        let stale_id = grant.id();
        let in_flight = Bounce::to_device(grant, &data)
            .map_err(|r| to_string(format_args!("{:?}", r.error)))?;
        if !inside(in_flight.device_address(), in_flight.len()) {
            return fail(format_args!("grant at {:#x}", in_flight.device_address()));
        }
        client
            .unmap(in_flight.complete())
            .map_err(|x| e("unmap to-device", x))?;

        // From the device: zeroed before the device runs, so a device that writes nothing
        // leaves zeros, never older bytes.
        let grant = client
            .map::<FromDevice>(512, 0, 0)
            .map_err(|x| e("map from-device", x))?;
        let in_flight = Bounce::from_device(grant, 512)
            .map_err(|r| to_string(format_args!("{:?}", r.error)))?;
        let mut out = [0xaau8; 512];
        let grant = in_flight
            .complete(&mut out)
            .map_err(|r| to_string(format_args!("{:?}", r.error)))?;
        if out.iter().any(|byte| *byte != 0) {
            return fail(format_args!("from-device buffer not initialised"));
        }
        client.unmap(grant).map_err(|x| e("unmap from-device", x))?;

        // Both ways: what went in comes back out (no device wrote in between).
        let grant = client
            .map::<Bidirectional>(300, 0, 0)
            .map_err(|x| e("map bidirectional", x))?;
        let in_flight = Bounce::bidirectional(grant, &data[..300])
            .map_err(|r| to_string(format_args!("{:?}", r.error)))?;
        let mut back = [0u8; 300];
        let grant = in_flight
            .complete(&mut back)
            .map_err(|r| to_string(format_args!("{:?}", r.error)))?;
        if back != data[..300] {
            return fail(format_args!("bidirectional bytes changed in the window"));
        }
        client
            .unmap(grant)
            .map_err(|x| e("unmap bidirectional", x))?;

        // A grant id is dead after its unmap.
        let mut request = Message::empty(0);
        moat_dma_api::Request::Unmap { id: stale_id }
            .encode(&mut request)
            .map_err(|x| to_string(format_args!("{x}")))?;
        kernel
            .call(dma, &mut request, Timeout::from_milliseconds(5000))
            .map_err(|x| to_string(format_args!("stale unmap: {x:?}")))?;
        match moat_dma_api::protocol::decode_reply(&request) {
            Err(DmaError::UnknownGrant) => {}
            other => return fail(format_args!("stale unmap answered {other:?}")),
        }
        // More than the window is the client's quota error.
        match client.map::<ToDevice>(DMA_WINDOW as usize + 2048, 0, 0) {
            Err(ClientError::Dma(DmaError::QuotaExceeded)) => {}
            other => return fail(format_args!("over-quota map gave {:?}", other.map(drop))),
        }
        // Observer-only requests are refused to a client.
        match client.reset_high_water() {
            Err(ClientError::Dma(DmaError::Denied)) => {}
            other => return fail(format_args!("reset_high_water gave {other:?}")),
        }

        let after = client.stats().map_err(|x| e("stats", x))?;
        let expect = [
            ("maps", after.maps - before.maps, 3),
            ("unmaps", after.unmaps - before.unmaps, 3),
            (
                "coherent",
                after.coherent_allocs - before.coherent_allocs,
                1,
            ),
            (
                "bytes to device",
                after.bytes_to_device - before.bytes_to_device,
                1000 + 300,
            ),
            (
                "bytes from device",
                after.bytes_from_device - before.bytes_from_device,
                512 + 300,
            ),
            ("grants", after.grants, 1),
        ];
        for (what, got, want) in expect {
            if got != want {
                return fail(format_args!("{what}: {got}, expected {want}"));
            }
        }
        let mine = client
            .client_stats(None)
            .map_err(|x| e("client stats", x))?
            .ok_or_else(|| to_string(format_args!("no figures for this client")))?;
        // Its own failures: the stale unmap, the over-quota map and the observer request.
        if mine.window_bytes != DMA_WINDOW
            || mine.grants != 1
            || mine.used_slots != 1
            || mine.failures != 3
        {
            return fail(format_args!("client figures {mine:?}"));
        }
        log::info!(
            "dma: window {} KiB at {:#x}, {} maps, {} B to and {} B from the device, {} failures",
            window.size / 1024,
            window.device_base,
            after.maps,
            after.bytes_to_device,
            after.bytes_from_device,
            after.failures
        );
        // Time map + unmap pairs through the real server (two IPC round trips each).
        const ROUNDS: u64 = 1000;
        let start = kernel.time();
        for _ in 0..ROUNDS {
            let grant = client
                .map::<ToDevice>(2048, 0, 0)
                .map_err(|x| e("timed map", x))?;
            client.unmap(grant).map_err(|x| e("timed unmap", x))?;
        }
        log::info!(
            "dma: {ROUNDS} map + unmap pairs through the server in {} us ({} ns a pair)",
            (kernel.time() - start) / 1000,
            (kernel.time() - start) / ROUNDS
        );
        // Leave a from-device grant outstanding: this instance ends as if its device were
        // still writing there.
        // (With the coherent allocation, 3 slots stay allocated.)
        let _kept = client
            .map::<FromDevice>(4096, 0, 0)
            .map_err(|x| e("map kept", x))?;
        Ok(())
    }

    fn dma_after_restart(client: &mut moat_dma_api::DmaClient<Kernel>) -> Outcome {
        let e = |what: &str, error: moat_dma_api::ClientError| {
            to_string(format_args!("{what}: {error}"))
        };
        // Before registering: the supervisor has revoked the old instance (it has none now)
        // and its grants sit in quarantine.
        let seen = client
            .client_stats(None)
            .map_err(|x| e("client stats", x))?
            .ok_or_else(|| to_string(format_args!("no figures for this client")))?;
        // The kept grant and the coherent allocation (1 slot) of the first instance.
        if seen.instance.is_some() || seen.quarantined_slots != DMA_KEPT_SLOTS + 1 {
            return fail(format_args!("before registering: {seen:?}"));
        }
        let window = client.register(None).map_err(|x| e("register", x))?;
        if !window.reset_pending || window.size != DMA_WINDOW {
            return fail(format_args!("window after restart {window:?}"));
        }
        let reclaimed = client
            .reset_complete()
            .map_err(|x| e("reset_complete", x))?;
        if reclaimed != DMA_KEPT_SLOTS + 1 {
            return fail(format_args!("{reclaimed} slots reclaimed"));
        }
        let grant = client
            .map::<moat_dma_api::ToDevice>(DMA_WINDOW as usize / 2, 0, 0)
            .map_err(|x| e("map after reclaim", x))?;
        client.unmap(grant).map_err(|x| e("unmap", x))?;
        Ok(())
    }

    fn dma_report(kernel: &Kernel, inbox: CapSlot, label: u32) -> Outcome {
        match wait_for(kernel, inbox, label, 30_000) {
            Ok(m) if m.payload().is_empty() => Ok(()),
            Ok(m) => fail(format_args!(
                "{}",
                core::str::from_utf8(m.payload()).unwrap_or("?")
            )),
            Err(error) => fail(format_args!("no report from ktest-dma: {error:?}")),
        }
    }

    // ---- the runner -----------------------------------------------------------------------------

    struct Report {
        passed: u32,
        failed: u32,
    }

    impl Report {
        fn check(&mut self, name: &str, result: Result<(), alloc::string::String>) {
            match result {
                Ok(()) => {
                    self.passed += 1;
                    log::info!("PASS {name}");
                }
                Err(why) => {
                    self.failed += 1;
                    log::error!("FAIL {name}: {why}");
                }
            }
        }
    }

    type Outcome = Result<(), alloc::string::String>;

    fn fail(args: core::fmt::Arguments<'_>) -> Outcome {
        let mut s = alloc::string::String::new();
        let _ = s.write_fmt(args);
        Err(s)
    }

    fn runner() -> Result<u64, Error> {
        let kernel = Kernel;
        let echo = cap("call:echo", CapabilityKind::Endpoint)?;
        let victim = cap("call:victim", CapabilityKind::Endpoint)?;
        let inbox = cap("serve:ktest", CapabilityKind::Endpoint)?;
        let tasks = cap("task-control", CapabilityKind::TaskControl)?;
        let mut report = Report {
            passed: 0,
            failed: 0,
        };

        report.check("ipc-ping-pong", ping_pong(&kernel, echo, 1000));
        report.check(
            "capability-transfer-shared-bytes",
            memory_transfer(&kernel, echo),
        );
        report.check(
            "missing-capability-errors",
            missing_capabilities(&kernel, echo, tasks),
        );
        report.check(
            "fault-reported-and-restarted",
            fault_restart(&kernel, inbox),
        );
        report.check(
            "kill-and-supervisor-restart",
            kill_restart(&kernel, echo, tasks),
        );
        report.check("call-to-dead-task", dead_peer(&kernel, victim, tasks));
        report.check(
            "console-read-refuses-bad-buffers",
            console_read_errors(tasks),
        );
        report.check(
            "syscall-fuzz-leaves-kernel-running",
            fuzz_done(&kernel, inbox, echo),
        );
        report.check(
            "interrupt-delivered-to-task",
            interrupt_seen(&kernel, inbox),
        );
        report.check(
            "canary-in-private-memory",
            wait_for(&kernel, inbox, CANARY_READY, 10_000)
                .map(drop)
                .map_err(|e| to_string(format_args!("{e:?}"))),
        );
        report.check(
            "dma-client-through-real-server",
            dma_report(&kernel, inbox, DMA_DONE),
        );
        report.check(
            "dma-revoke-quarantine-restart",
            dma_report(&kernel, inbox, DMA_RESTARTED),
        );
        measure_ipc(&kernel, echo, 10_000);

        log::info!("{} passed, {} failed", report.passed, report.failed);
        if report.failed == 0 {
            log::info!("all {} passed", report.passed);
        }
        // SAFETY: SystemOff takes no pointer; it powers the machine off and does not return.
        unsafe {
            kernel.syscall(
                moat_abi::Syscall::SystemOff,
                [u64::from(tasks.0), u64::from(report.failed), 0, 0, 0, 0],
            )
        };
        Ok(u64::from(report.failed))
    }

    fn ping(kernel: &Kernel, endpoint: CapSlot, value: u64) -> Result<(u64, TaskId), Error> {
        let mut m = message(PING, value);
        kernel.call(endpoint, &mut m, Timeout::from_milliseconds(2000))?;
        if m.label() != PING {
            return Err(Error::InvalidArgument);
        }
        Ok((payload_u64(&m), m.header.sender))
    }

    fn ping_pong(kernel: &Kernel, echo: CapSlot, rounds: u64) -> Outcome {
        for i in 0..rounds {
            match ping(kernel, echo, i) {
                Ok((answer, _)) if answer == i + 1 => {}
                Ok((answer, _)) => return fail(format_args!("round {i}: answer {answer}")),
                Err(error) => return fail(format_args!("round {i}: {error:?}")),
            }
        }
        log::info!("{rounds} call/reply round trips");
        Ok(())
    }

    fn memory_transfer(kernel: &Kernel, echo: CapSlot) -> Outcome {
        let mapping = memory::allocate(kernel, 1, Rights::READ | Rights::WRITE).map_err(|e| {
            let mut s = alloc::string::String::new();
            let _ = write!(s, "allocate: {e:?}");
            s
        })?;
        let words = mapping.as_ptr().cast::<u64>();
        const PATTERN: u64 = 0x1122_3344_5566_7788;
        // SAFETY: the page is mapped read-write at `words`; the peer writes it too, hence volatile.
        unsafe { core::ptr::write_volatile(words, PATTERN) };
        let mut m = Message::empty(MEMORY)
            .with_capability(mapping.capability, Rights::READ | Rights::WRITE);
        if let Err(error) = kernel.call(echo, &mut m, Timeout::from_milliseconds(2000)) {
            return fail(format_args!("call: {error:?}"));
        }
        if m.label() != MEMORY {
            return fail(format_args!("echo answered {:#x}", m.label()));
        }
        // SAFETY: as above.
        let seen = unsafe { core::ptr::read_volatile(words.add(1)) };
        if seen != PATTERN + 1 {
            return fail(format_args!(
                "expected {:#x} written by the peer, found {seen:#x}",
                PATTERN + 1
            ));
        }
        Ok(())
    }

    fn expect_error(what: &str, got: Result<(), Error>, want: Error) -> Outcome {
        match got {
            Err(error) if error == want => Ok(()),
            other => fail(format_args!("{what}: expected {want:?}, got {other:?}")),
        }
    }

    /// `ConsoleRead` with the runner's ConsoleInput capability (`console-input = true` in
    /// build/system-ktest.toml; the boot tests give QEMU no input): every bad argument is an
    /// error, never a kernel fault, and with nothing typed the read does not block past its
    /// timeout.
    fn console_read_errors(tasks: CapSlot) -> Outcome {
        let input = cap("console-input", CapabilityKind::ConsoleInput)
            .map_err(|e| to_string(format_args!("no console-input capability: {e:?}")))?;
        let mut buffer = [0u8; 16];
        let read = |slot: CapSlot, address: u64, length: u64, timeout: Timeout| {
            let status = raw_syscall(
                u64::from(moat_abi::Syscall::ConsoleRead.to_raw()),
                [u64::from(slot.0), address, length, timeout.to_raw(), 0, 0],
            );
            match moat_abi::status_from_raw(status) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(Error::InvalidArgument),
            }
        };
        let good = buffer.as_mut_ptr() as u64;
        expect_error(
            "nothing typed, non-blocking",
            read(input, good, 16, Timeout::NonBlocking),
            Error::WouldBlock,
        )?;
        expect_error(
            "nothing typed within 2 ms",
            read(input, good, 16, Timeout::from_milliseconds(2)),
            Error::TimedOut,
        )?;
        expect_error(
            "unmapped buffer",
            read(input, 0x8, 16, Timeout::NonBlocking),
            Error::BadAddress,
        )?;
        expect_error(
            "kernel address",
            read(input, 0xffff_ff80_4000_0000, 16, Timeout::NonBlocking),
            Error::BadAddress,
        )?;
        expect_error(
            "read-only page (the task information page)",
            read(
                input,
                moat_abi::TASK_INFO_VA as u64,
                16,
                Timeout::NonBlocking,
            ),
            Error::BadAddress,
        )?;
        expect_error(
            "buffer wrapping the address space",
            read(input, u64::MAX - 7, 16, Timeout::NonBlocking),
            Error::BadAddress,
        )?;
        expect_error(
            "zero length",
            read(input, good, 0, Timeout::NonBlocking),
            Error::BadLength,
        )?;
        expect_error(
            "longer than a page",
            read(input, good, 4097, Timeout::NonBlocking),
            Error::BadLength,
        )?;
        expect_error(
            "a TaskControl capability",
            read(tasks, good, 16, Timeout::NonBlocking),
            Error::WrongKind,
        )?;
        expect_error(
            "an empty slot",
            read(CapSlot(60), good, 16, Timeout::NonBlocking),
            Error::InvalidCapability,
        )?;
        Ok(())
    }

    fn missing_capabilities(kernel: &Kernel, echo: CapSlot, tasks: CapSlot) -> Outcome {
        let mut m = Message::empty(PING);
        expect_error(
            "send on an empty slot",
            kernel.send(CapSlot(60), &m),
            Error::InvalidCapability,
        )?;
        expect_error(
            "receive with a send-only capability",
            kernel.recv(echo, &mut m, Timeout::NonBlocking, 0).map(drop),
            Error::MissingRight,
        )?;
        expect_error(
            "interrupt ack on an endpoint",
            kernel.irq_ack(echo),
            Error::WrongKind,
        )?;
        expect_error(
            "MMIO map of an endpoint",
            kernel.mmio_map(echo, 0x2_0000_0000, Rights::READ).map(drop),
            Error::WrongKind,
        )?;
        let memory = kernel
            .mem_alloc(1, 0)
            .map_err(|_| alloc::string::String::from("mem_alloc"))?;
        // SAFETY: Share is refused before anything changes; the page is not in use.
        let shared = unsafe { kernel.share(tasks, memory) };
        expect_error(
            "share without the Share capability",
            shared.map(drop),
            Error::WrongKind,
        )?;
        let _ = kernel.cap_drop(memory);
        expect_error(
            "kill with an endpoint capability",
            kernel.task_kill(echo, TaskId::new(1, 0)),
            Error::WrongKind,
        )?;
        Ok(())
    }

    /// Reports from helper tasks that arrived while the runner waited for another one.
    static EARLIER: spin::Mutex<heapless::Vec<Message, 8>> = spin::Mutex::new(heapless::Vec::new());

    /// Waits for a report with `label` on the runner's endpoint, keeping any other report for a
    /// later wait (helper tasks finish in any order).
    fn wait_for(
        kernel: &Kernel,
        inbox: CapSlot,
        label: u32,
        timeout_ms: u64,
    ) -> Result<Message, Error> {
        {
            let mut earlier = EARLIER.lock();
            if let Some(position) = earlier.iter().position(|m| m.label() == label) {
                return Ok(earlier.swap_remove(position));
            }
        }
        let deadline = kernel.time() + timeout_ms * 1_000_000;
        let mut m = Message::zeroed();
        loop {
            let now = kernel.time();
            if now >= deadline {
                return Err(Error::TimedOut);
            }
            if kernel.recv(inbox, &mut m, Timeout::from_nanoseconds(deadline - now), 0)?
                != Received::Message
            {
                continue;
            }
            if m.label() == label {
                return Ok(m);
            }
            if EARLIER.lock().push(m.clone()).is_err() {
                log::warn!("dropped an unexpected report with label {:#x}", m.label());
            }
        }
    }

    fn fault_restart(kernel: &Kernel, inbox: CapSlot) -> Outcome {
        match wait_for(kernel, inbox, RESTARTED, 10_000) {
            Ok(m) if m.header.sender.generation() >= 1 => Ok(()),
            Ok(m) => fail(format_args!(
                "report from generation {}",
                m.header.sender.generation()
            )),
            Err(error) => fail(format_args!("no word from the restarted task: {error:?}")),
        }
    }

    fn kill_restart(kernel: &Kernel, echo: CapSlot, tasks: CapSlot) -> Outcome {
        let (_, old) = ping(kernel, echo, 7).map_err(|e| to_string(format_args!("ping: {e:?}")))?;
        if let Err(error) = kernel.task_kill(tasks, old) {
            return fail(format_args!("kill: {error:?}"));
        }
        expect_error(
            "kill of the old instance again",
            kernel.task_kill(tasks, old),
            Error::Dead,
        )?;
        // The supervisor restarts it; calls fail with Dead until the new instance serves.
        for _ in 0..10_000 {
            match ping(kernel, echo, 7) {
                Ok((8, new))
                    if new.generation() != old.generation() && new.index() == old.index() =>
                {
                    let status = kernel
                        .task_status(tasks, new.index())
                        .map_err(|e| to_string(format_args!("{e:?}")))?;
                    if status.id != new {
                        return fail(format_args!(
                            "status reports {:?}, expected {new:?}",
                            status.id
                        ));
                    }
                    return Ok(());
                }
                Ok(other) => return fail(format_args!("unexpected answer {other:?}")),
                Err(Error::Dead) => kernel.yield_now(),
                Err(error) => return fail(format_args!("ping after kill: {error:?}")),
            }
        }
        fail(format_args!("echo was never restarted"))
    }

    fn dead_peer(kernel: &Kernel, victim: CapSlot, tasks: CapSlot) -> Outcome {
        let (_, id) =
            ping(kernel, victim, 1).map_err(|e| to_string(format_args!("ping: {e:?}")))?;
        let mut m = Message::empty(EXIT_WITHOUT_REPLY);
        expect_error(
            "call answered by exiting",
            kernel.call(victim, &mut m, Timeout::from_milliseconds(2000)),
            Error::Dead,
        )?;
        expect_error(
            "call to a dead server",
            ping(kernel, victim, 1).map(drop),
            Error::Dead,
        )?;
        let status = kernel
            .task_status(tasks, id.index())
            .map_err(|e| to_string(format_args!("{e:?}")))?;
        if status.state != TaskState::Exited {
            return fail(format_args!("victim state {:?}", status.state));
        }
        Ok(())
    }

    fn fuzz_done(kernel: &Kernel, inbox: CapSlot, echo: CapSlot) -> Outcome {
        match wait_for(kernel, inbox, FUZZ_DONE, 120_000) {
            Ok(m) => log::info!("fuzzer finished {} calls", payload_u64(&m)),
            Err(error) => return fail(format_args!("fuzzer did not finish: {error:?}")),
        }
        match ping(kernel, echo, 41) {
            Ok((42, _)) => Ok(()),
            other => fail(format_args!("kernel unhealthy after fuzzing: {other:?}")),
        }
    }

    fn interrupt_seen(kernel: &Kernel, inbox: CapSlot) -> Outcome {
        match wait_for(kernel, inbox, IRQ_SEEN, 10_000) {
            Ok(m) if payload_u64(&m) == IRQ_BIT => Ok(()),
            Ok(m) => fail(format_args!("notification bits {:#x}", payload_u64(&m))),
            Err(error) => fail(format_args!("no interrupt report: {error:?}")),
        }
    }

    /// Prints the counter ticks for `rounds` call/reply round trips (xtask bench reads it).
    /// Like a client stub, it keeps one message buffer and rewrites only the label and payload
    /// for each request; every answer is checked.
    fn measure_ipc(kernel: &Kernel, echo: CapSlot, rounds: u64) {
        let mut m = Message::zeroed();
        let start = counter();
        for i in 0..rounds {
            m.header.label = PING;
            m.header.flags = MessageFlags::NONE;
            set_payload_u64(&mut m, i);
            let answered = kernel.call(echo, &mut m, Timeout::from_milliseconds(2000));
            if answered.is_err() || m.label() != PING || payload_u64(&m) != i.wrapping_add(1) {
                log::error!("ipc measurement failed at round {i}: {answered:?}");
                return;
            }
        }
        let ticks = counter() - start;
        log::info!("ipc {rounds} round trips in {ticks} counter ticks");
        let start = counter();
        for _ in 0..rounds {
            let _ = core::hint::black_box(kernel.task_self());
        }
        log::info!(
            "null syscall: {rounds} in {} counter ticks",
            counter() - start
        );
    }

    fn counter() -> u64 {
        let value: u64;
        // SAFETY: CNTVCT_EL0 is readable at EL0 (CNTKCTL_EL1.EL0VCTEN, set by the kernel).
        unsafe { core::arch::asm!("isb", "mrs {0}, cntvct_el0", out(reg) value, options(nostack)) };
        value
    }

    fn to_string(args: core::fmt::Arguments<'_>) -> alloc::string::String {
        let mut s = alloc::string::String::new();
        let _ = s.write_fmt(args);
        s
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("ktest is a Moat task: build it with --target aarch64-unknown-none");
}
