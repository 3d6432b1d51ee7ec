//! `dmastat`'s formatting: the DMA server's figures as text tables (the binary fetches them and
//! prints them on the console). Everything writes to a [`core::fmt::Write`], so it needs no heap
//! and is tested on the host.
#![no_std]
#![deny(missing_docs)]

use core::fmt::{self, Write};

use moat_dma_api::{ClientStats, Event, FailureCounts, StatsSummary};

/// A few bytes of text on the stack, so table cells can be padded with `{:>9}`.
struct Cell {
    bytes: [u8; 32],
    len: usize,
}

impl Cell {
    fn new() -> Cell {
        Cell {
            bytes: [0; 32],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are appended (see write_str), so this never fails.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?")
    }
}

impl Write for Cell {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Pads the formatted `args` to the formatter's width and alignment.
fn pad(f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>) -> fmt::Result {
    let mut cell = Cell::new();
    cell.write_fmt(args)?;
    f.pad(cell.as_str())
}

/// A byte count in B, KiB, MiB, GiB or TiB (one decimal above bytes). Honours width and
/// alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return pad(f, format_args!("{} B", self.0));
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        pad(f, format_args!("{value:.1} {}", UNITS[unit]))
    }
}

/// A device address in hex, honouring width and alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hex(pub u64);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        pad(f, format_args!("{:#x}", self.0))
    }
}

/// The server-wide summary and the failures by reason.
pub fn write_summary(
    out: &mut impl Write,
    stats: &StatsSummary,
    failures: &FailureCounts,
) -> fmt::Result {
    writeln!(
        out,
        "DMA pool: {} shared of {} budget, {} slots of {}, max mapping {}, bookkeeping {}",
        Bytes(stats.shared_bytes),
        Bytes(stats.budget_bytes),
        stats.total_slots,
        Bytes(stats.slot_size.into()),
        Bytes(stats.max_mapping_size),
        Bytes(stats.metadata_bytes),
    )?;
    writeln!(
        out,
        "{:>10} {:>10} {:>11} {:>10} {:>8} {:>8}",
        "slots", "used", "high-water", "quarantine", "grants", "clients"
    )?;
    writeln!(
        out,
        "{:>10} {:>10} {:>11} {:>10} {:>8} {:>8}",
        stats.total_slots,
        stats.used_slots,
        stats.high_water_slots,
        stats.quarantined_slots,
        stats.grants,
        stats.clients
    )?;
    writeln!(
        out,
        "{:>10} {:>10} {:>11} {:>10} {:>8} {:>8}",
        "maps", "unmaps", "coherent", "to device", "from dev", "events"
    )?;
    writeln!(
        out,
        "{:>10} {:>10} {:>11} {:>10} {:>8} {:>8}",
        stats.maps,
        stats.unmaps,
        stats.coherent_allocs,
        Bytes(stats.bytes_to_device),
        Bytes(stats.bytes_from_device),
        stats.events
    )?;
    write!(out, "failures: {}", failures.total())?;
    let mut separator = " (";
    for (error, count) in failures.nonzero() {
        write!(out, "{separator}{} {count}", error.name())?;
        separator = ", ";
    }
    if separator == ", " {
        out.write_str(")")?;
    }
    out.write_str("\n")
}

/// The header of the per-client table.
pub fn write_clients_header(out: &mut impl Write) -> fmt::Result {
    writeln!(
        out,
        "{:>6} {:>10} {:>10} {:>6} {:>10} {:>5} {:>5} {:>5} {:>10} {:>10} {:>5}",
        "client",
        "instance",
        "window",
        "grants",
        "granted",
        "used",
        "quar",
        "reset",
        "to device",
        "from dev",
        "fail"
    )
}

/// One row of the per-client table.
pub fn write_client_row(out: &mut impl Write, client: &ClientStats) -> fmt::Result {
    let mut instance = Cell::new();
    match client.instance {
        Some(id) => write!(instance, "{:#x}", id.0)?,
        None => instance.write_str("dead")?,
    }
    writeln!(
        out,
        "{:>6} {:>10} {:>10} {:>6} {:>10} {:>5} {:>5} {:>5} {:>10} {:>10} {:>5}",
        client.identity.0,
        instance.as_str(),
        Bytes(client.window_bytes),
        client.grants,
        Bytes(client.granted_bytes),
        client.used_slots,
        client.quarantined_slots,
        if client.reset_pending { "wait" } else { "-" },
        Bytes(client.bytes_to_device),
        Bytes(client.bytes_from_device),
        client.failures
    )
}

/// The header of the recent-events table.
pub fn write_events_header(out: &mut impl Write) -> fmt::Result {
    writeln!(
        out,
        "{:>8} {:<10} {:>6} {:<8} {:>14} {:>10}",
        "seq", "event", "client", "dir", "device addr", "size"
    )
}

/// One row of the recent-events table.
pub fn write_event_row(out: &mut impl Write, event: &Event) -> fmt::Result {
    writeln!(
        out,
        "{:>8} {:<10} {:>6} {:<8} {:>14} {:>10}",
        event.sequence,
        event.kind.name(),
        event.client.0,
        event.direction.name(),
        Hex(event.device_address),
        Bytes(event.size)
    )
}

/// The whole report from figures already fetched.
pub fn write_report(
    out: &mut impl Write,
    stats: &StatsSummary,
    failures: &FailureCounts,
    clients: &[ClientStats],
    events: &[Event],
) -> fmt::Result {
    write_summary(out, stats, failures)?;
    out.write_str("\n")?;
    write_clients_header(out)?;
    for client in clients {
        write_client_row(out, client)?;
    }
    out.write_str("\n")?;
    write_events_header(out)?;
    for event in events {
        write_event_row(out, event)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::String;

    use moat_dma_api::{ClientIdentity, Direction, DmaError, EventKind, InstanceGeneration};

    use super::*;

    #[test]
    fn bytes_are_human_and_padded() {
        let mut text = String::new();
        write!(
            text,
            "[{:>8}][{}][{}][{}]",
            Bytes(512),
            Bytes(2048),
            Bytes(3 << 20),
            Bytes(u64::MAX)
        )
        .unwrap();
        assert_eq!(text, "[   512 B][2.0 KiB][3.0 MiB][16777216.0 TiB]");
        let mut text = String::new();
        write!(text, "[{:<8}]", Hex(0x4800_0000)).unwrap();
        assert_eq!(text, "[0x48000000]");
    }

    #[test]
    fn report_has_every_figure() {
        let stats = StatsSummary {
            slot_size: 2048,
            max_mapping_size: 256 << 10,
            total_slots: 512,
            used_slots: 12,
            high_water_slots: 40,
            quarantined_slots: 3,
            grants: 5,
            clients: 2,
            budget_bytes: 64 << 20,
            shared_bytes: 1 << 20,
            bytes_to_device: 12 << 10,
            bytes_from_device: 4 << 10,
            maps: 10,
            unmaps: 7,
            coherent_allocs: 1,
            failures: 3,
            metadata_bytes: 344,
            events: 18,
        };
        let mut failures = FailureCounts::default();
        failures.record(DmaError::QuotaExceeded);
        failures.record(DmaError::QuotaExceeded);
        failures.record(DmaError::UnknownGrant);
        let clients = [
            ClientStats {
                identity: ClientIdentity(1),
                instance: Some(InstanceGeneration(0x0001_0003)),
                window_bytes: 64 << 10,
                grants: 5,
                granted_bytes: 9000,
                used_slots: 6,
                quarantined_slots: 0,
                reset_pending: false,
                bytes_to_device: 12 << 10,
                bytes_from_device: 4 << 10,
                failures: 3,
            },
            ClientStats {
                identity: ClientIdentity(2),
                instance: None,
                window_bytes: 32 << 10,
                grants: 0,
                granted_bytes: 0,
                used_slots: 0,
                quarantined_slots: 3,
                reset_pending: true,
                bytes_to_device: 0,
                bytes_from_device: 0,
                failures: 0,
            },
        ];
        let events = [Event {
            sequence: 17,
            kind: EventKind::Quarantine,
            client: ClientIdentity(2),
            direction: Direction::FromDevice,
            device_address: 0x4801_0000,
            size: 6000,
        }];
        let mut text = String::new();
        write_report(&mut text, &stats, &failures, &clients, &events).unwrap();
        std::println!("{text}");
        let lines: std::vec::Vec<&str> = text.lines().collect();
        assert!(
            lines[0]
                .starts_with("DMA pool: 1.0 MiB shared of 64.0 MiB budget, 512 slots of 2.0 KiB")
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<std::vec::Vec<_>>(),
            ["512", "12", "40", "3", "5", "2"]
        );
        assert_eq!(
            lines[4].split_whitespace().collect::<std::vec::Vec<_>>(),
            ["10", "7", "1", "12.0", "KiB", "4.0", "KiB", "18"]
        );
        assert_eq!(lines[5], "failures: 3 (unknown_grant 1, quota_exceeded 2)");
        assert!(lines[7].contains("client") && lines[7].contains("quar"));
        assert_eq!(
            lines[8].split_whitespace().collect::<std::vec::Vec<_>>(),
            [
                "1", "0x10003", "64.0", "KiB", "5", "8.8", "KiB", "6", "0", "-", "12.0", "KiB",
                "4.0", "KiB", "3"
            ]
        );
        assert!(lines[9].contains("dead") && lines[9].contains("wait"));
        assert_eq!(
            lines[12].split_whitespace().collect::<std::vec::Vec<_>>(),
            [
                "17",
                "quarantine",
                "2",
                "from_dev",
                "0x48010000",
                "5.9",
                "KiB"
            ]
        );
        // Every row of a table has the header's width.
        assert_eq!(lines[7].len(), lines[8].len());
        assert_eq!(lines[11].len(), lines[12].len());
    }

    #[test]
    fn no_failures_prints_no_list() {
        let mut text = String::new();
        write_summary(
            &mut text,
            &StatsSummary::default(),
            &FailureCounts::default(),
        )
        .unwrap();
        assert!(text.ends_with("failures: 0\n"));
    }
}
