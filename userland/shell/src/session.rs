//! The shell itself: reads lines from the console, runs commands, prints what they return.
//!
//! Everything is generic over the syscall trait and writes to a `fmt::Write`, so the whole
//! session runs on the host against the testkit fake kernel (`tests` below). The one piece of
//! raw memory it touches, the block data region, is behind [`DataRegion`] (the binary maps it).

use alloc::boxed::Box;
use alloc::vec;
use core::fmt::{self, Write};

use moat_abi::{CapSlot, Error, TaskId, TaskState, Timeout};
use moat_blk_api::{BlkClient, BlkError, SECTOR_SIZE};
use moat_dma_api::DmaClient;
use moat_dma_api::stats::{EVENT_RING_LEN, EVENTS_PER_PAGE};
use moat_net_api::NetClient;
use moat_rng_api::RngClient;
use moat_userlib::Syscalls;

use crate::command::{BlkCommand, Command, HELP, parse};
use crate::line::{Edit, LineEditor};
use crate::tasks::TaskTable;

/// The prompt.
pub const PROMPT: &str = "moat> ";
/// How long a call to a server may take before the shell gives up on it.
const CALL_TIMEOUT: Timeout = Timeout::from_milliseconds(5_000);
/// How long `kill` watches for the supervisor's restart.
const RESTART_WATCH_NS: u64 = 5_000_000_000;
/// How often `kill` and `trace` look again.
const POLL: Timeout = Timeout::from_milliseconds(50);
/// Bytes per `blk bench` request.
const BENCH_REQUEST: usize = 64 * 1024;

/// The capabilities the shell works with, looked up by name at start.
#[derive(Clone, Copy, Debug)]
pub struct Services {
    /// `console-input`: where lines come from.
    pub console_input: CapSlot,
    /// `task-control`: ps, kill, poweroff.
    pub task_control: Option<CapSlot>,
    /// `call:dma` (with the observer role): dmastat, trace.
    pub dma: Option<CapSlot>,
    /// `call:blk`: blk.
    pub blk: Option<CapSlot>,
    /// `call:net`: net.
    pub net: Option<CapSlot>,
    /// `call:rng`: rng.
    pub rng: Option<CapSlot>,
}

/// The block data region: memory the shell shares with the block driver (the driver writes it
/// too, so it is only ever copied in and out).
pub trait DataRegion {
    /// Its Memory capability (a copy goes to the driver).
    fn capability(&self) -> CapSlot;
    /// Its size in bytes.
    fn len(&self) -> usize;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `data` in at `offset` (false if it does not fit).
    fn put(&self, offset: usize, data: &[u8]) -> bool;
    /// Copies out `out.len()` bytes at `offset` (false if it does not fit).
    fn get(&self, offset: usize, out: &mut [u8]) -> bool;
}

/// What to do after a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// The kernel refused to power off; keep going.
    Refused,
}

/// The shell's state.
pub struct Shell<S: Syscalls + Clone> {
    syscalls: S,
    services: Services,
    tasks: TaskTable,
    me: Option<u16>,
    editor: LineEditor,
    region: Option<Box<dyn DataRegion>>,
    region_attached: bool,
}

impl<S: Syscalls + Clone> fmt::Debug for Shell<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shell")
            .field("services", &self.services)
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Empty => "empty",
        TaskState::Runnable => "running",
        TaskState::Blocked => "waiting",
        TaskState::Faulted => "faulted",
        TaskState::Exited => "exited",
        TaskState::Killed => "killed",
    }
}

/// Writes bytes as lines of 16 hex bytes with their offset.
fn hex_dump(out: &mut dyn Write, bytes: &[u8]) -> fmt::Result {
    for (line, chunk) in bytes.chunks(16).enumerate() {
        write!(out, "{:04x} ", line * 16)?;
        for byte in chunk {
            write!(out, " {byte:02x}")?;
        }
        for _ in chunk.len()..16 {
            out.write_str("   ")?;
        }
        out.write_str("  ")?;
        for byte in chunk {
            out.write_char(if byte.is_ascii_graphic() || *byte == b' ' {
                char::from(*byte)
            } else {
                '.'
            })?;
        }
        out.write_str("\n")?;
    }
    Ok(())
}

impl<S: Syscalls + Clone> Shell<S> {
    /// A shell over `services`, naming tasks from `tasks`, with an optional block data region.
    pub fn new(
        syscalls: S,
        services: Services,
        tasks: TaskTable,
        region: Option<Box<dyn DataRegion>>,
    ) -> Self {
        let me = syscalls.task_self().ok().map(TaskId::index);
        Shell {
            syscalls,
            services,
            tasks,
            me,
            editor: LineEditor::new(),
            region,
            region_attached: false,
        }
    }

    /// Reads and runs lines until console input fails; returns that error.
    pub fn serve(&mut self, out: &mut dyn Write) -> Error {
        let _ = out.write_str(PROMPT);
        let mut buffer = [0u8; 64];
        loop {
            let count = match self.syscalls.console_read(
                self.services.console_input,
                &mut buffer,
                Timeout::Forever,
            ) {
                Ok(count) => count,
                Err(Error::TimedOut | Error::WouldBlock) => continue,
                Err(error) => return error,
            };
            for &byte in buffer.iter().take(count) {
                self.feed(byte, out);
            }
        }
    }

    /// Takes one byte of input: echoes it and runs a finished line.
    pub fn feed(&mut self, byte: u8, out: &mut dyn Write) {
        match self.editor.feed(byte) {
            Edit::Nothing => {}
            Edit::Echo(bytes) => {
                let _ = out.write_str(core::str::from_utf8(bytes).unwrap_or(""));
            }
            Edit::EchoByte(byte) => {
                let _ = out.write_char(char::from(byte));
            }
            Edit::Cancelled => {
                let _ = write!(out, "^C\n{PROMPT}");
            }
            Edit::Line(line) => {
                let _ = out.write_str("\n");
                self.run_line(&line, out);
                let _ = out.write_str(PROMPT);
            }
        }
    }

    /// Runs one command line.
    pub fn run_line(&mut self, line: &str, out: &mut dyn Write) -> Flow {
        let command = match parse(line) {
            Ok(command) => command,
            Err(error) => {
                let _ = writeln!(out, "{error}");
                return Flow::Continue;
            }
        };
        let result = match command {
            Command::Empty => Ok(()),
            Command::Help => self.help(out),
            Command::Ps => self.ps(out),
            Command::DmaStat { reset_high_water } => self.dmastat(out, reset_high_water),
            Command::Trace { seconds } => self.trace(out, seconds),
            Command::Blk(blk) => self.blk(out, blk),
            Command::Net => self.net(out),
            Command::Rng { bytes } => self.rng(out, bytes),
            Command::Kill { task } => self.kill(out, &task),
            Command::PowerOff => return self.power_off(out),
        };
        // Output errors cannot be reported anywhere else; command errors were printed.
        let _ = result;
        Flow::Continue
    }

    fn help(&self, out: &mut dyn Write) -> fmt::Result {
        writeln!(out, "commands:")?;
        for (usage, what) in HELP {
            writeln!(out, "  {usage:<26} {what}")?;
        }
        writeln!(
            out,
            "keys: backspace erases, Ctrl-U clears the line, Ctrl-C drops it; any key ends `trace`"
        )
    }

    fn need(out: &mut dyn Write, slot: Option<CapSlot>, what: &str) -> Option<CapSlot> {
        if slot.is_none() {
            let _ = writeln!(out, "{what}");
        }
        slot
    }

    fn name_of(&self, index: usize) -> (&str, &str) {
        self.tasks
            .get(index)
            .map_or(("?", "?"), |task| (task.name.as_str(), task.bin.as_str()))
    }

    fn ps(&self, out: &mut dyn Write) -> fmt::Result {
        let Some(control) = Self::need(
            out,
            self.services.task_control,
            "ps: no task-control capability (add `task-control = true` to the shell's manifest entry)",
        ) else {
            return Ok(());
        };
        writeln!(
            out,
            "  #  {:<16} {:<18} {:<8} {:<9} {:>4}  detail",
            "task", "binary", "state", "instance", "gen"
        )?;
        let limit = if self.tasks.is_empty() {
            usize::from(u16::MAX)
        } else {
            self.tasks.len()
        };
        for index in 0..limit {
            let Ok(index16) = u16::try_from(index) else {
                break;
            };
            let status = match self.syscalls.task_status(control, index16) {
                Ok(status) => status,
                Err(Error::InvalidArgument) if self.tasks.is_empty() => break,
                Err(error) => {
                    writeln!(out, "{index:>3}  task status refused: {error:?}")?;
                    continue;
                }
            };
            let (name, bin) = self.name_of(index);
            let instance = alloc::format!("{}.{}", status.id.index(), status.id.generation());
            let detail = match status.state {
                TaskState::Exited => alloc::format!("exit {}", status.detail),
                TaskState::Faulted => alloc::format!("ESR {:#x}", status.detail),
                _ => alloc::string::String::new(),
            };
            let me = if self.me == Some(index16) {
                " (this shell)"
            } else {
                ""
            };
            writeln!(
                out,
                "{index:>3}  {name:<16} {bin:<18} {:<8} {instance:<9} {:>4}  {detail}{me}",
                state_name(status.state),
                status.id.generation(),
            )?;
        }
        Ok(())
    }

    fn dma_client(&self, out: &mut dyn Write, what: &str) -> Option<DmaClient<S>> {
        let slot = Self::need(
            out,
            self.services.dma,
            &alloc::format!("{what}: no DMA server endpoint (`call:dma`) in this system"),
        )?;
        Some(DmaClient::new(self.syscalls.clone(), slot).with_timeout(CALL_TIMEOUT))
    }

    fn dmastat(&self, out: &mut dyn Write, reset_high_water: bool) -> fmt::Result {
        let Some(client) = self.dma_client(out, "dmastat") else {
            return Ok(());
        };
        if reset_high_water {
            match client.reset_high_water() {
                Ok(()) => writeln!(out, "dmastat: high-water mark reset")?,
                Err(error) => {
                    return writeln!(out, "dmastat: reset refused: {error}");
                }
            }
        }
        let stats = match client.stats() {
            Ok(stats) => stats,
            Err(error) => return writeln!(out, "dmastat: {error}"),
        };
        let failures = match client.failures() {
            Ok(failures) => failures,
            Err(error) => return writeln!(out, "dmastat: {error}"),
        };
        dmastat::write_summary(&mut &mut *out, &stats, &failures)?;
        out.write_str("\n")?;
        dmastat::write_clients_header(&mut &mut *out)?;
        let mut rows = alloc::vec::Vec::new();
        if let Err(error) = client.for_each_client(usize::from(u16::MAX), |stats| rows.push(*stats))
        {
            writeln!(out, "dmastat: {error}")?;
        }
        for row in &rows {
            dmastat::write_client_row(&mut &mut *out, row)?;
        }
        out.write_str("\n")?;
        dmastat::write_events_header(&mut &mut *out)?;
        let mut from = stats.events.saturating_sub(EVENT_RING_LEN as u64);
        for _ in 0..=EVENT_RING_LEN / EVENTS_PER_PAGE {
            let page = match client.events(from) {
                Ok(page) => page,
                Err(error) => return writeln!(out, "dmastat: {error}"),
            };
            for event in &page.events {
                dmastat::write_event_row(&mut &mut *out, event)?;
            }
            if page.events.is_empty() || page.next == from {
                break;
            }
            from = page.next;
        }
        Ok(())
    }

    /// Follows the DMA server's event ring: prints every new event until a key is pressed (the
    /// key is consumed) or `seconds` pass. Events that scroll out of the ring between two
    /// looks (more than its length in 50 ms) are reported as a count.
    fn trace(&self, out: &mut dyn Write, seconds: u32) -> fmt::Result {
        let Some(client) = self.dma_client(out, "trace") else {
            return Ok(());
        };
        let mut from = match client.stats() {
            Ok(stats) => stats.events,
            Err(error) => return writeln!(out, "trace: {error}"),
        };
        writeln!(
            out,
            "trace: following DMA events for {seconds} s; press any key to stop"
        )?;
        dmastat::write_events_header(&mut &mut *out)?;
        let end = self
            .syscalls
            .time()
            .saturating_add(u64::from(seconds) * 1_000_000_000);
        let mut shown = 0u64;
        let mut missed = 0u64;
        let stopped_by_key = loop {
            loop {
                let page = match client.events(from) {
                    Ok(page) => page,
                    Err(error) => {
                        writeln!(out, "trace: {error}")?;
                        return Ok(());
                    }
                };
                if let Some(first) = page.events.first()
                    && first.sequence > from
                {
                    missed += first.sequence - from;
                }
                for event in &page.events {
                    dmastat::write_event_row(&mut &mut *out, event)?;
                    shown += 1;
                }
                if page.events.is_empty() || page.next == from {
                    break;
                }
                from = page.next;
            }
            if self.syscalls.time() >= end {
                break false;
            }
            let mut key = [0u8; 1];
            match self
                .syscalls
                .console_read(self.services.console_input, &mut key, POLL)
            {
                Ok(_) => break true,
                Err(Error::TimedOut | Error::WouldBlock) => {}
                Err(error) => {
                    writeln!(out, "trace: console input failed: {error:?}")?;
                    break false;
                }
            }
        };
        writeln!(
            out,
            "trace: {shown} events{}{}",
            if missed > 0 {
                alloc::format!(", {missed} scrolled out of the ring unseen")
            } else {
                alloc::string::String::new()
            },
            if stopped_by_key {
                " (stopped by a key)"
            } else {
                ""
            }
        )
    }

    fn blk_client(&self, out: &mut dyn Write) -> Option<BlkClient<S>> {
        let slot = Self::need(
            out,
            self.services.blk,
            "blk: no block driver endpoint (`call:blk`) in this system",
        )?;
        Some(BlkClient::new(self.syscalls.clone(), slot).with_timeout(CALL_TIMEOUT))
    }

    /// Makes sure the driver has the data region (again, after a driver restart).
    fn attach_region(
        &mut self,
        client: &BlkClient<S>,
        force: bool,
    ) -> Result<(), alloc::string::String> {
        if self.region_attached && !force {
            return Ok(());
        }
        let Some(region) = &self.region else {
            return Err("no data region (the shell could not allocate one)".into());
        };
        client
            .setup_region(region.capability())
            .map_err(|error| alloc::format!("{error}"))?;
        self.region_attached = true;
        Ok(())
    }

    /// Runs `operation` with the region attached; a driver that lost it (it restarted) gets it
    /// again and the operation is retried once.
    fn with_region(
        &mut self,
        client: &BlkClient<S>,
        operation: impl Fn(&BlkClient<S>) -> Result<(), moat_blk_api::ClientError>,
    ) -> Result<(), alloc::string::String> {
        self.attach_region(client, false)?;
        match operation(client) {
            Err(moat_blk_api::ClientError::Blk(BlkError::NoRegion | BlkError::BadRegion)) => {
                self.attach_region(client, true)?;
                operation(client).map_err(|error| alloc::format!("{error}"))
            }
            other => other.map_err(|error| alloc::format!("{error}")),
        }
    }

    fn blk(&mut self, out: &mut dyn Write, command: BlkCommand) -> fmt::Result {
        let Some(client) = self.blk_client(out) else {
            return Ok(());
        };
        let sector_bytes = SECTOR_SIZE as usize;
        match command {
            BlkCommand::Info => match client.info() {
                Ok(info) => writeln!(
                    out,
                    "blk: {} sectors ({} MiB), block {} B, max transfer {} KiB, queue depth {}{}{}",
                    info.capacity_sectors,
                    info.capacity_sectors / 2048,
                    info.block_size,
                    info.max_transfer / 1024,
                    info.queue_depth,
                    if info.read_only { ", read-only" } else { "" },
                    if info.flush {
                        ", write cache (flush)"
                    } else {
                        ""
                    },
                ),
                Err(error) => writeln!(out, "blk: {error}"),
            },
            BlkCommand::Read { sector } => {
                if let Err(error) =
                    self.with_region(&client, |c| c.read(sector, 0, sector_bytes as u32))
                {
                    return writeln!(out, "blk read {sector}: {error}");
                }
                let mut data = vec![0u8; sector_bytes];
                if !self.region.as_ref().is_some_and(|r| r.get(0, &mut data)) {
                    return writeln!(out, "blk read {sector}: the region is too small");
                }
                writeln!(out, "sector {sector}:")?;
                hex_dump(out, &data)
            }
            BlkCommand::Write { sector, text } => {
                let data: alloc::vec::Vec<u8> = text.bytes().cycle().take(sector_bytes).collect();
                if !self.region.as_ref().is_some_and(|r| r.put(0, &data)) {
                    return writeln!(out, "blk write {sector}: no data region");
                }
                match self.with_region(&client, |c| c.write(sector, 0, sector_bytes as u32)) {
                    Ok(()) => writeln!(out, "blk: wrote sector {sector} with {:?} repeated", text),
                    Err(error) => writeln!(out, "blk write {sector}: {error}"),
                }
            }
            BlkCommand::Bench { mib } => {
                let region_len = self.region.as_ref().map_or(0, |r| r.len());
                let request = BENCH_REQUEST.min(region_len);
                if request < sector_bytes {
                    return writeln!(out, "blk bench: no data region");
                }
                let capacity = match client.info() {
                    Ok(info) => info.capacity_sectors,
                    Err(error) => return writeln!(out, "blk bench: {error}"),
                };
                let total = u64::from(mib) * 1024 * 1024;
                let sectors_per_request = (request / sector_bytes) as u64;
                let start = self.syscalls.time();
                let mut done = 0u64;
                let mut sector = 0u64;
                while done < total {
                    if sector + sectors_per_request > capacity {
                        sector = 0;
                    }
                    let at = sector;
                    if let Err(error) = self.with_region(&client, |c| c.read(at, 0, request as u32))
                    {
                        return writeln!(out, "blk bench: read at sector {at}: {error}");
                    }
                    done += request as u64;
                    sector += sectors_per_request;
                }
                let elapsed = self.syscalls.time().saturating_sub(start).max(1);
                let kib_per_s = done * 1_000_000_000 / 1024 / elapsed;
                writeln!(
                    out,
                    "blk bench: read {} KiB in {} requests of {} KiB in {} ms: {}.{:02} MiB/s",
                    done / 1024,
                    done / request as u64,
                    request / 1024,
                    elapsed / 1_000_000,
                    kib_per_s / 1024,
                    (kib_per_s % 1024) * 100 / 1024
                )
            }
        }
    }

    fn net(&self, out: &mut dyn Write) -> fmt::Result {
        let Some(slot) = Self::need(
            out,
            self.services.net,
            "net: no network driver endpoint (`call:net`) in this system",
        ) else {
            return Ok(());
        };
        let client = NetClient::new(self.syscalls.clone(), slot).with_timeout(CALL_TIMEOUT);
        match client.link() {
            Ok(link) => writeln!(
                out,
                "net: link {}, MAC {}, MTU {}",
                if link.link_up { "up" } else { "down" },
                link.mac,
                link.mtu
            )?,
            Err(error) => return writeln!(out, "net: {error}"),
        }
        match client.counters() {
            Ok(c) => {
                writeln!(
                    out,
                    "net: rx {} frames / {} B, tx {} frames / {} B",
                    c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes
                )?;
                writeln!(
                    out,
                    "net: rx drops: truncated {}, too long {}, bad header {}, not for us {}, overrun {}",
                    c.rx_drops.truncated,
                    c.rx_drops.too_long,
                    c.rx_drops.bad_header,
                    c.rx_drops.not_for_us,
                    c.rx_drops.overrun
                )?;
                writeln!(
                    out,
                    "net: tx drops: bad length {}, no buffer {}; bad used entries {}, ring faults {}, resets {}",
                    c.tx_drops.bad_length,
                    c.tx_drops.no_buffer,
                    c.bad_used_entries,
                    c.ring_faults,
                    c.resets
                )
            }
            Err(error) => writeln!(out, "net: counters: {error}"),
        }
    }

    fn rng(&self, out: &mut dyn Write, bytes: usize) -> fmt::Result {
        let Some(slot) = Self::need(
            out,
            self.services.rng,
            "rng: no entropy device (no `call:rng` endpoint in this system)",
        ) else {
            return Ok(());
        };
        let client = RngClient::new(self.syscalls.clone(), slot).with_timeout(CALL_TIMEOUT);
        let mut data = vec![0u8; bytes];
        match client.fill(&mut data) {
            Ok(()) => {
                writeln!(out, "rng: {bytes} bytes from the entropy device:")?;
                for chunk in data.chunks(32) {
                    for byte in chunk {
                        write!(out, "{byte:02x}")?;
                    }
                    out.write_str("\n")?;
                }
                Ok(())
            }
            Err(error) => writeln!(out, "rng: {error}"),
        }
    }

    fn kill(&self, out: &mut dyn Write, wanted: &str) -> fmt::Result {
        let Some(control) = Self::need(
            out,
            self.services.task_control,
            "kill: no task-control capability",
        ) else {
            return Ok(());
        };
        let Some(index) = self.tasks.find(wanted) else {
            write!(out, "kill: no task `{wanted}`; tasks:")?;
            for index in 0..self.tasks.len() {
                write!(out, " {}", self.name_of(index).0)?;
            }
            return writeln!(out);
        };
        let name = self.name_of(index).0;
        let Ok(index16) = u16::try_from(index) else {
            return writeln!(out, "kill: bad task index {index}");
        };
        if index == 0 {
            return writeln!(
                out,
                "kill: `{name}` is the supervisor; nothing would restart tasks without it"
            );
        }
        if self.me == Some(index16) {
            return writeln!(out, "kill: `{name}` is this shell; use `poweroff` to stop");
        }
        let before = match self.syscalls.task_status(control, index16) {
            Ok(status) => status,
            Err(error) => return writeln!(out, "kill: {name}: {error:?}"),
        };
        if !before.state.is_alive() {
            return writeln!(
                out,
                "kill: {name} is not running ({})",
                state_name(before.state)
            );
        }
        if let Err(error) = self.syscalls.task_kill(control, before.id) {
            return writeln!(out, "kill: {name}: {error:?}");
        }
        writeln!(
            out,
            "kill: {name} (instance {}.{}) killed",
            before.id.index(),
            before.id.generation()
        )?;
        // Watch the supervisor act: it revokes the task's DMA grants, then restarts it if the
        // manifest's policy allows.
        let deadline = self.syscalls.time().saturating_add(RESTART_WATCH_NS);
        let mut last = before;
        // Bounded by count as well as by the clock (one look per POLL).
        for _ in 0..=RESTART_WATCH_NS / 50_000_000 {
            if let Ok(status) = self.syscalls.task_status(control, index16) {
                last = status;
                if status.state.is_alive() && status.id != before.id {
                    writeln!(
                        out,
                        "kill: the supervisor restarted {name} as instance {}.{} ({})",
                        status.id.index(),
                        status.id.generation(),
                        state_name(status.state)
                    )?;
                    break;
                }
            }
            if self.syscalls.time() >= deadline {
                break;
            }
            let _ = self.syscalls.notify_wait(1 << 63, POLL);
        }
        if !(last.state.is_alive() && last.id != before.id) {
            writeln!(
                out,
                "kill: {name} was not restarted within 5 s (now {}; its restart policy may not \
                 allow it)",
                state_name(last.state)
            )?;
        }
        if let Some(slot) = self.services.dma {
            let client = DmaClient::new(self.syscalls.clone(), slot).with_timeout(CALL_TIMEOUT);
            if let Ok(stats) = client.stats() {
                writeln!(
                    out,
                    "kill: DMA server: {} grants live, {} slots in quarantine, {} of {} slots used",
                    stats.grants, stats.quarantined_slots, stats.used_slots, stats.total_slots
                )?;
            }
        }
        Ok(())
    }

    fn power_off(&self, out: &mut dyn Write) -> Flow {
        let Some(control) = Self::need(
            out,
            self.services.task_control,
            "poweroff: no task-control capability",
        ) else {
            return Flow::Refused;
        };
        let _ = writeln!(out, "poweroff: powering the system off");
        let error = self.syscalls.system_off(control, 0);
        let _ = writeln!(out, "poweroff: refused: {error:?}");
        Flow::Refused
    }
}
