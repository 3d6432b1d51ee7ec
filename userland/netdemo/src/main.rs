//! The netdemo task: brings up the network stack on the virtio-net driver (DHCP, falling back
//! to 10.0.2.15/24 via 10.0.2.2) and serves TCP echo on port 7 and a status page over HTTP on
//! port 80, a sink on port 9 and a source on port 19. Capabilities (manifest): `call:net`;
//! optionally `task-control` (test systems only: build/system-net.toml), which lets
//! `GET /kill?task=<index>` kill the task at that manifest index (the host tests kill the driver
//! mid-transfer with it).
//!
//! Optional capabilities: `call:dma` with the observer role (the DMA server's figures on the
//! status page, as dmastat prints them) and `call:demo` (the default system: netdemo holds the
//! demo's power-off until a host client has exercised echo and HTTP, or nobody came within
//! [`netdemo::DemoHold::VISIT_WINDOW_MS`]).
//!
//! If the driver dies (it is restarted by the supervisor), calls fail with `Dead`; the task
//! attaches its frame region again and carries on (open connections time out or recover).
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    extern crate alloc;

    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    use moat_abi::{CapSlot, CapabilityKind, ENTROPY_RNDR, Message, Rights, Timeout};
    use moat_dma_api::DmaClient;
    use moat_net::link::NetApiLink;
    use moat_net::stack::Addressing;
    use moat_net::{Entropy, Stack, StackConfig};
    use moat_net_api::{Counters, MappedRegion, NetClient, REGION_PAGES};
    use moat_userlib::{Kernel, Syscalls, caps, memory, task};
    use netdemo::{
        DemoHold, DmaFigures, ECHO_PORT, HTTP_PORT, KillRequest, Release, SINK_PORT, SOURCE_PORT,
        Services, status_page,
    };

    moat_userlib::entry!(main, heap_pages = 512);

    /// Milliseconds between counter refreshes for the status page (also refreshed for every
    /// page request).
    const COUNTERS_EVERY_MS: u64 = 1_000;
    /// Longest sleep between polls.
    const MAX_SLEEP_MS: u64 = 10;
    /// How long netdemo keeps polling (yielding) after the last progress before it sleeps.
    const SPIN_NS: u64 = 2_000_000;
    /// The notification bit netdemo sleeps on (a mask of 0 is refused by the kernel).
    const SLEEP_BIT: u64 = 1 << 63;

    /// The virtual counter (CNTVCT_EL0), readable at EL0 under Moat.
    fn counter() -> u64 {
        let value: u64;
        // SAFETY: reads a system register the kernel makes readable at EL0; no memory access.
        unsafe { core::arch::asm!("mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack)) };
        value
    }

    fn now_ms() -> u64 {
        Kernel.time() / 1_000_000
    }

    /// Kills the current instance of the task at manifest index `request.task` (never this
    /// task); the supervisor restarts it if its policy allows.
    fn kill(control: CapSlot, request: KillRequest) {
        let own = Kernel.task_self().map(|id| id.index()).ok();
        if own == Some(request.task) {
            log::warn!("kill: refusing to kill this task");
            return;
        }
        match Kernel
            .task_status(control, request.task)
            .and_then(|status| Kernel.task_kill(control, status.id))
        {
            Ok(()) => log::warn!("killed task {} on request", request.task),
            Err(error) => log::warn!("kill task {}: {error:?}", request.task),
        }
    }

    /// The DMA server's figures, or `None` if it cannot be asked.
    fn dma_figures(client: &DmaClient<Kernel>) -> Option<DmaFigures> {
        let stats = client.stats().ok()?;
        let failures = client.failures().ok()?;
        let mut clients = Vec::new();
        client
            .for_each_client(64, |stats| clients.push(*stats))
            .ok()?;
        Some(DmaFigures {
            stats,
            failures,
            clients,
        })
    }

    fn main() -> Result<(), &'static str> {
        // First of all, so the demo cannot power off before the network has been shown.
        let demo = caps::find("call:demo");
        if let Some(demo) = demo {
            match Kernel.send(demo, &Message::empty(::demo::HOLD)) {
                Ok(()) => log::info!("holding the demo's power-off until a host client visits"),
                Err(error) => log::warn!("demo hold: {error:?}"),
            }
        }
        let dma = caps::find("call:dma").map(|endpoint| {
            DmaClient::new(Kernel, endpoint).with_timeout(Timeout::from_milliseconds(500))
        });
        let endpoint =
            caps::expect("call:net", CapabilityKind::Endpoint).map_err(|_| "call:net")?;
        let client =
            NetClient::new(Kernel, endpoint).with_timeout(Timeout::from_milliseconds(2_000));
        let mapping = memory::allocate(&Kernel, REGION_PAGES, Rights::READ | Rights::WRITE)
            .map_err(|_| "frame region")?;
        // SAFETY: freshly mapped, never unmapped; reached only by raw copies (the driver writes it).
        let region =
            unsafe { MappedRegion::new(mapping.as_ptr(), mapping.len()) }.ok_or("region")?;
        let link_info = client.attach(mapping.capability).map_err(|_| "attach")?;
        log::info!("link {} mtu {}", link_info.mac, link_info.mtu);

        // Seed: the kernel's per-instance entropy (RNDR mixed in when the CPU has it; otherwise
        // the DTB rng-seed and timer jitter, host-controlled in a Realm), counter jitter across
        // yields and the MAC (see moat_net::entropy).
        let mut entropy = Entropy::new();
        if let Some(info) = task::info() {
            entropy.add(b"kernel", &info.entropy);
            log::info!(
                "entropy: kernel seed ({})",
                if info.entropy_source == ENTROPY_RNDR {
                    "RNDR"
                } else {
                    "host-controlled sources only"
                }
            );
        }
        // The virtio-rng driver's bytes when the system has one (`call:rng`), hashed with the
        // kernel's per-task entropy (moat_rng_api::seed).
        let rng = caps::find("call:rng").map(|slot| moat_rng_api::RngClient::new(Kernel, slot));
        let seed = moat_rng_api::seed(rng.as_ref());
        entropy.add(
            if seed.from_device {
                &b"rng"[..]
            } else {
                b"no-rng"
            },
            &seed.bytes,
        );
        log::info!(
            "entropy: {}",
            if seed.from_device {
                "virtio-rng mixed in"
            } else {
                "no entropy device"
            }
        );
        entropy.add(b"mac", &link_info.mac.0);
        entropy.add(b"time", &Kernel.time().to_le_bytes());
        let moving = entropy.add_jitter(64, counter, || Kernel.yield_now());
        if moving < 8 {
            log::warn!("entropy: the counter barely moves ({moving}/64 samples differ)");
        }

        let start = now_ms();
        let mut stack = Stack::new(
            NetApiLink::new(client, region),
            StackConfig {
                mac: link_info.mac.0,
                mtu: link_info.mtu,
                seed: entropy.next_u64(),
                addressing: Addressing::qemu_user(),
            },
            start,
        );
        let mut services = Services::new(&mut stack, 4, 2).with_bulk(&mut stack);
        let control = caps::find("task-control");
        services.allow_kill(control.is_some());
        log::info!(
            "echo on tcp port {ECHO_PORT}, http on tcp port {HTTP_PORT}, sink on {SINK_PORT}, \
             source on {SOURCE_PORT}{}",
            if control.is_some() {
                "; /kill enabled (task-control)"
            } else {
                ""
            }
        );

        let mut idle_since: Option<u64> = None;
        let mut counters: Option<Counters> = None;
        let mut figures: Option<DmaFigures> = None;
        let mut hold = demo.map(|_| DemoHold::new(now_ms()));
        let mut counters_at = 0;
        let mut link_errors = 0;
        let mut announced = None;
        loop {
            let now = now_ms();
            let mut busy = stack.poll(now);
            if stack.address() != announced {
                announced = stack.address();
                if let Some(address) = announced {
                    log::info!("address {address} ({})", stack.address_source());
                }
            }
            if counters.is_none()
                || now.saturating_sub(counters_at) >= COUNTERS_EVERY_MS
                || services.page_pending(&mut stack)
            {
                counters = stack.link_ref().client().counters().ok();
                figures = dma.as_ref().and_then(dma_figures);
                counters_at = now;
            }
            let address = stack
                .address()
                .map_or_else(|| String::from("none"), |address| format!("{address}"));
            // The kernel's clock counts from boot.
            let uptime = now;
            busy |= services.serve(&mut stack, |stats, out| {
                status_page(
                    out,
                    uptime,
                    &address,
                    counters.as_ref(),
                    figures.as_ref(),
                    stats,
                )
            });
            if let (Some(demo), Some(reason)) = (
                demo,
                hold.as_mut()
                    .and_then(|hold| hold.poll(now, stack.address().is_some(), &services.stats())),
            ) {
                match reason {
                    Release::Visited => log::info!(
                        "a host client exercised echo and HTTP; releasing the demo's power-off"
                    ),
                    Release::NoVisitor => log::info!(
                        "no host client within {} s; releasing the demo's power-off",
                        DemoHold::VISIT_WINDOW_MS / 1000
                    ),
                    Release::NoAddress => log::warn!(
                        "no address within {} s; releasing the demo's power-off",
                        DemoHold::ADDRESS_WINDOW_MS / 1000
                    ),
                }
                if let Err(error) = Kernel.send(demo, &Message::empty(::demo::RELEASE)) {
                    log::warn!("demo release: {error:?}");
                }
            }
            if let (Some(control), Some(request)) = (control, services.take_kill()) {
                // Let the 202 leave first.
                let _ = stack.poll(now_ms());
                kill(control, request);
            }
            if stack.link_errors() != link_errors {
                link_errors = stack.link_errors();
                // The driver may have been restarted: attach the region again.
                match stack.link_ref().client().attach(mapping.capability) {
                    Ok(_) => log::warn!("driver restarted: frame region attached again"),
                    Err(error) => log::warn!("driver unavailable: {error}"),
                }
            }
            if busy {
                idle_since = None;
            } else {
                let now_ns = Kernel.time();
                let idle_from = *idle_since.get_or_insert(now_ns);
                if now_ns.saturating_sub(idle_from) < SPIN_NS {
                    // A bulk transfer pauses only briefly (the next ACK or segment is on its
                    // way): stay responsive.
                    Kernel.yield_now();
                } else {
                    let delay = stack
                        .poll_delay_ms(now)
                        .unwrap_or(MAX_SLEEP_MS)
                        .clamp(1, MAX_SLEEP_MS);
                    // Nothing signals this bit: a plain sleep, which lets lower-priority tasks
                    // (the demo) run and counts as waiting for `moat: ready`.
                    let _ = Kernel.notify_wait(SLEEP_BIT, Timeout::from_milliseconds(delay));
                }
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("netdemo is a Moat task: build it for aarch64-unknown-none with `cargo xtask`");
}
