//! The logic of the block-driver test tasks, host-tested: the benchmark cases and their result
//! names, sequential request plans, throughput, and the checks the kill test makes on the DMA
//! server's figures.
//!
//! Two roles share the `blktest` binary, chosen by the manifest task name:
//! - `blkkill` (build/system-blk-kill.toml): a client with many requests in flight that kills
//!   the virtio-blk driver through TaskControl mid-workload, and checks that the requests lost
//!   with it come back as typed errors, that it can go on with the restarted instance (the data
//!   it wrote verifies), and that the DMA server reclaimed everything the dead instance held.
//! - `blkbench` (build/system-blk-bench.toml): sequential reads and writes over the whole disk
//!   at queue depth 1 and 32, each [`REPEATS`] times, timed with the virtual counter; the
//!   median rate is printed as a `moat-bench:` line.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use core::fmt;

use moat_dma_api::{ClientStats, StatsSummary};

/// Bytes per sector.
pub const SECTOR: u64 = 512;

/// One benchmark case: sequential over the whole disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// Writes (from the client region) rather than reads.
    pub write: bool,
    /// Bytes per request.
    pub size: usize,
    /// Requests in flight at once (1: one at a time, like a synchronous `dd`).
    pub depth: usize,
}

/// The cases `blkbench` runs, in order (writes first, so the reads read written data).
pub const CASES: [Case; 6] = [
    Case {
        write: true,
        size: 64 * 1024,
        depth: 1,
    },
    Case {
        write: true,
        size: 64 * 1024,
        depth: 32,
    },
    Case {
        write: false,
        size: 4096,
        depth: 1,
    },
    Case {
        write: false,
        size: 64 * 1024,
        depth: 1,
    },
    Case {
        write: false,
        size: 4096,
        depth: 32,
    },
    Case {
        write: false,
        size: 64 * 1024,
        depth: 32,
    },
];

/// Most requests in flight of any case.
pub const MAX_DEPTH: usize = 32;

/// Largest request of any case.
pub const MAX_SIZE: usize = 64 * 1024;

impl Case {
    /// The result name without unit: `blk_read_4k`, `blk_write_64k_qd32`.
    pub fn stem(&self) -> Stem {
        Stem(*self)
    }

    /// Requests that cover `sectors` sectors (the last one may be shorter).
    pub fn requests(&self, sectors: u64) -> u64 {
        let per = self.size as u64 / SECTOR;
        sectors.div_ceil(per.max(1))
    }
}

/// A case's result name without unit (see [`Case::stem`]).
#[derive(Clone, Copy, Debug)]
pub struct Stem(Case);

impl fmt::Display for Stem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let case = self.0;
        write!(
            f,
            "blk_{}_{}k",
            if case.write { "write" } else { "read" },
            case.size / 1024
        )?;
        if case.depth > 1 {
            write!(f, "_qd{}", case.depth)?;
        }
        Ok(())
    }
}

/// Passes of each case over the disk; the median rate is reported (TCG on a shared host is
/// noisy).
pub const REPEATS: usize = 3;

/// The median of `values` (the upper one of the middle two for an even count; 0 when empty).
pub fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Sequential requests of `size` bytes over sectors `[start, end)`: (sector, bytes), the last
/// one cut to fit.
pub fn sequential(start: u64, end: u64, size: usize) -> impl Iterator<Item = (u64, usize)> {
    let per = (size as u64 / SECTOR).max(1);
    let mut sector = start;
    core::iter::from_fn(move || {
        if sector >= end {
            return None;
        }
        let count = per.min(end - sector);
        let request = (sector, (count * SECTOR) as usize);
        sector += count;
        Some(request)
    })
}

/// Megabytes (10^6 bytes) per second with two decimals, as hundredths, for `bytes` in
/// `nanoseconds` (0 for no time).
pub fn hundredths_of_mb_per_second(bytes: u64, nanoseconds: u64) -> u64 {
    if nanoseconds == 0 {
        return 0;
    }
    (u128::from(bytes) * 100_000 / u128::from(nanoseconds)) as u64
}

/// A value in hundredths, printed with two decimals.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hundredths(pub u64);

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl fmt::Debug for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What the DMA server's figures for the block driver changed by during a measurement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaDelta {
    /// Streaming maps.
    pub maps: u64,
    /// Unmaps.
    pub unmaps: u64,
    /// Bytes mapped towards the device.
    pub to_device: u64,
    /// Bytes mapped from the device.
    pub from_device: u64,
    /// Failed DMA requests.
    pub failures: u64,
}

impl DmaDelta {
    /// `after` minus `before` (server-wide figures).
    pub fn between(before: &StatsSummary, after: &StatsSummary) -> DmaDelta {
        DmaDelta {
            maps: after.maps.saturating_sub(before.maps),
            unmaps: after.unmaps.saturating_sub(before.unmaps),
            to_device: after.bytes_to_device.saturating_sub(before.bytes_to_device),
            from_device: after
                .bytes_from_device
                .saturating_sub(before.bytes_from_device),
            failures: after.failures.saturating_sub(before.failures),
        }
    }
}

/// Why the DMA server's figures say the pool was not reclaimed after the driver's restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReclaimProblem {
    /// The driver's entry names no live instance, or still the killed one.
    NotReRegistered,
    /// Slots of the dead instance are still in quarantine.
    Quarantined(u64),
    /// The server still waits for the new instance to declare its device reset.
    ResetPending,
    /// Server-wide quarantine is not empty.
    PoolQuarantine(u64),
    /// The pool has slots in use that no live client's grants account for.
    Orphaned {
        /// Slots in use, server-wide.
        pool: u64,
        /// Slots the live clients' grants use, together.
        clients: u64,
    },
}

impl fmt::Display for ReclaimProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReclaimProblem::NotReRegistered => {
                f.write_str("the driver's DMA entry has no new instance")
            }
            ReclaimProblem::Quarantined(slots) => write!(f, "{slots} slots still in quarantine"),
            ReclaimProblem::ResetPending => f.write_str("the device reset is still pending"),
            ReclaimProblem::PoolQuarantine(slots) => {
                write!(f, "{slots} slots quarantined in the pool")
            }
            ReclaimProblem::Orphaned { pool, clients } => write!(
                f,
                "{pool} slots in use, but the live clients' grants use {clients}"
            ),
        }
    }
}

/// Checks the figures after the restart: `after` is the driver's entry once the new instance
/// has done its work, `killed` the killed instance (a raw task id), `pool` the server-wide
/// summary and `clients_used` the slots every client's live grants use together. Reclaimed
/// means: the new instance registered, nothing of the old one is left in quarantine (it was
/// released once the new instance reset the device), and every slot in use belongs to a live
/// grant.
pub fn reclaim_check(
    after: &ClientStats,
    killed: u32,
    pool: &StatsSummary,
    clients_used: u64,
) -> Result<(), ReclaimProblem> {
    match after.instance {
        Some(instance) if instance.0 != killed => {}
        _ => return Err(ReclaimProblem::NotReRegistered),
    }
    if after.quarantined_slots != 0 {
        return Err(ReclaimProblem::Quarantined(after.quarantined_slots));
    }
    if after.reset_pending {
        return Err(ReclaimProblem::ResetPending);
    }
    if pool.quarantined_slots != 0 {
        return Err(ReclaimProblem::PoolQuarantine(pool.quarantined_slots));
    }
    if pool.used_slots != clients_used {
        return Err(ReclaimProblem::Orphaned {
            pool: pool.used_slots,
            clients: clients_used,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::format;
    use std::vec::Vec;

    use moat_dma_api::{ClientIdentity, InstanceGeneration};

    use super::*;

    #[test]
    fn result_names_follow_the_issue() {
        let names: Vec<_> = CASES
            .iter()
            .map(|case| format!("{}_MBps", case.stem()))
            .collect();
        assert_eq!(
            names,
            [
                "blk_write_64k_MBps",
                "blk_write_64k_qd32_MBps",
                "blk_read_4k_MBps",
                "blk_read_64k_MBps",
                "blk_read_4k_qd32_MBps",
                "blk_read_64k_qd32_MBps",
            ]
        );
        assert!(
            CASES
                .iter()
                .all(|c| c.depth <= MAX_DEPTH && c.size <= MAX_SIZE)
        );
    }

    #[test]
    fn sequential_plans_cover_the_range_exactly() {
        let plan: Vec<_> = sequential(8, 8 + 300, 64 * 1024).collect();
        assert_eq!(plan, [(8, 64 * 1024), (136, 64 * 1024), (264, 44 * 512)]);
        assert_eq!(sequential(0, 131_072, 4096).count(), 16_384);
        assert_eq!(
            CASES[2].requests(131_072),
            16_384,
            "4 KiB reads of a 64 MiB disk"
        );
        assert_eq!(sequential(5, 5, 4096).count(), 0);
    }

    #[test]
    fn median_of_the_passes() {
        assert_eq!(median(&mut [300, 100, 200]), 200);
        assert_eq!(median(&mut [5]), 5);
        assert_eq!(median(&mut [1, 2]), 2);
        assert_eq!(median(&mut []), 0);
    }

    #[test]
    fn throughput_in_hundredths() {
        assert_eq!(hundredths_of_mb_per_second(64 << 20, 1_000_000_000), 6710);
        assert_eq!(format!("{}", Hundredths(6710)), "67.10");
        assert_eq!(format!("{}", Hundredths(5)), "0.05");
        assert_eq!(hundredths_of_mb_per_second(1, 0), 0);
    }

    fn entry(instance: Option<u32>, used: u64, quarantined: u64, pending: bool) -> ClientStats {
        ClientStats {
            identity: ClientIdentity(3),
            instance: instance.map(InstanceGeneration),
            window_bytes: 1 << 20,
            grants: used,
            granted_bytes: used * 2048,
            used_slots: used,
            quarantined_slots: quarantined,
            reset_pending: pending,
            bytes_to_device: 0,
            bytes_from_device: 0,
            failures: 0,
        }
    }

    #[test]
    fn reclaim_check_finds_each_problem() {
        let pool = |used: u64, quarantined: u64| StatsSummary {
            used_slots: used,
            quarantined_slots: quarantined,
            ..StatsSummary::default()
        };
        let good = entry(Some(9), 100, 0, false);
        assert_eq!(reclaim_check(&good, 7, &pool(100, 0), 100), Ok(()));
        assert_eq!(
            reclaim_check(&entry(Some(7), 100, 0, false), 7, &pool(100, 0), 100),
            Err(ReclaimProblem::NotReRegistered)
        );
        assert_eq!(
            reclaim_check(&entry(None, 0, 100, true), 7, &pool(100, 100), 0),
            Err(ReclaimProblem::NotReRegistered)
        );
        assert_eq!(
            reclaim_check(&entry(Some(9), 100, 4, false), 7, &pool(104, 4), 100),
            Err(ReclaimProblem::Quarantined(4))
        );
        assert_eq!(
            reclaim_check(&entry(Some(9), 100, 0, true), 7, &pool(100, 0), 100),
            Err(ReclaimProblem::ResetPending)
        );
        assert_eq!(
            reclaim_check(&good, 7, &pool(103, 3), 100),
            Err(ReclaimProblem::PoolQuarantine(3))
        );
        assert_eq!(
            reclaim_check(&good, 7, &pool(236, 0), 100),
            Err(ReclaimProblem::Orphaned {
                pool: 236,
                clients: 100
            })
        );
        assert!(format!("{}", ReclaimProblem::Quarantined(4)).contains("4 slots"));
    }
}
