//! `dmastat`: asks the DMA server for its figures and prints them as tables (like SWIOTLB's
//! debugfs). Needs an endpoint capability named `call:dma` to the DMA server; with an observer badge
//! it sees every client and event, with a plain client badge only its own. It first waits until
//! the server has been quiet (no new event) for a second, staying runnable, so it prints after
//! the workloads and before lower-priority tasks (the demo) run.
//!
//! On the host this binary only prints a note: it is a task for `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use core::fmt::{self, Write};

    use moat_abi::CapabilityKind;
    use moat_dma_api::stats::{EVENT_RING_LEN, EVENTS_PER_PAGE};
    use moat_dma_api::{ClientError, DmaClient};
    use moat_userlib::{Kernel, Syscalls};

    moat_userlib::entry!(main);

    /// Exit code when the server cannot be reached or refuses.
    const EXIT_NO_SERVER: u64 = 2;

    /// The server counts as settled once it has recorded no event for this long...
    const QUIET_NS: u64 = 1_000_000_000;
    /// ...polled this often...
    const POLL_NS: u64 = 50_000_000;
    /// ...and dmastat prints after this long at the latest.
    const SETTLE_MAX_NS: u64 = 60_000_000_000;

    /// Writes straight to the console.
    struct Console;

    impl Write for Console {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            let mut bytes = text.as_bytes();
            while !bytes.is_empty() {
                let written = Kernel.console_write(bytes).map_err(|_| fmt::Error)?;
                if written == 0 {
                    return Err(fmt::Error);
                }
                bytes = bytes.get(written..).unwrap_or(&[]);
            }
            Ok(())
        }
    }

    fn main() -> u64 {
        let endpoint = match moat_userlib::caps::expect("call:dma", CapabilityKind::Endpoint) {
            Ok(slot) => slot,
            Err(error) => {
                log::error!("no DMA server endpoint: {error}");
                return EXIT_NO_SERVER;
            }
        };
        let client = DmaClient::new(Kernel, endpoint);
        if let Err(error) = settle(&client) {
            log::error!("{error}");
            return EXIT_NO_SERVER;
        }
        match print(&client) {
            Ok(()) => 0,
            Err(error) => {
                log::error!("{error}");
                EXIT_NO_SERVER
            }
        }
    }

    /// Waits until the workloads are done with DMA: no new server event for [`QUIET_NS`].
    ///
    /// dmastat stays runnable meanwhile (it yields, it never sleeps), so tasks of lower priority
    /// — `demo`, which powers the system off once no other task is runnable — cannot run before
    /// it has printed, while the workloads (of higher priority) run whenever they can.
    fn settle(client: &DmaClient<Kernel>) -> Result<(), ClientError> {
        let start = Kernel.time();
        let mut last: Option<u64> = None;
        let mut last_change = start;
        let mut last_poll = 0;
        loop {
            let now = Kernel.time();
            if now.saturating_sub(start) >= SETTLE_MAX_NS {
                return Ok(());
            }
            if now.saturating_sub(last_poll) >= POLL_NS {
                last_poll = now;
                let events = client.stats()?.events;
                if last != Some(events) {
                    last = Some(events);
                    last_change = now;
                } else if now.saturating_sub(last_change) >= QUIET_NS {
                    return Ok(());
                }
            }
            Kernel.yield_now();
        }
    }

    fn print(client: &DmaClient<Kernel>) -> Result<(), ClientError> {
        let mut out = Console;
        let stats = client.stats()?;
        let failures = client.failures()?;
        let _ = dmastat::write_summary(&mut out, &stats, &failures);
        let _ = out.write_str("\n");
        let _ = dmastat::write_clients_header(&mut out);
        client.for_each_client(usize::from(u16::MAX), |stats| {
            let _ = dmastat::write_client_row(&mut out, stats);
        })?;
        let _ = out.write_str("\n");
        let _ = dmastat::write_events_header(&mut out);
        // The ring keeps the last few events; start from the oldest still kept.
        let mut from = stats.events.saturating_sub(EVENT_RING_LEN as u64);
        for _ in 0..=EVENT_RING_LEN / EVENTS_PER_PAGE {
            let page = client.events(from)?;
            for event in &page.events {
                let _ = dmastat::write_event_row(&mut out, event);
            }
            if page.events.is_empty() || page.next == from {
                break;
            }
            from = page.next;
        }
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("dmastat is a Moat task: build it with --target aarch64-unknown-none");
}
