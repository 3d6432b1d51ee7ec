//! `faultydma`: a **test-only, deliberately faulty** virtio-blk driver, and what the host needs
//! to check its run.
//!
//! A correct driver gives its device only bounce buffers the DMA server made shared. This one,
//! on purpose, writes a sector from a buffer in its *private* memory: it learns the buffer's
//! address (with `MEM_ALLOC_PHYSICAL_FOR_TESTS`, honoured only by a kernel built for tests)
//! and puts it in the data descriptor of a virtio-blk WRITE. Then it READs the sector back
//! through a proper bounce grant and compares it with what the private buffer held.
//!
//! - In a Realm (under realm-sim, DESIGN.md section 7) the device's DMA reaches only host
//!   memory: the disk gets whatever the host had at that address, never the private bytes.
//!   The task prints [`REALM_PASS`]. `cargo xtask test` (build/xtask/src/faulty_tests.rs)
//!   then checks from the host that the secret is not on the disk and that it *is* in the
//!   private part of the guest RAM file at exactly the address the task used (so the check
//!   can fail).
//! - In a plain guest nothing protects the buffer and the device reads the secret: the task
//!   prints [`PLAIN_LEAK`] as information (not a failure); xtask's plain control boot expects
//!   it and finds the secret on the disk, which shows the disk check detects a leak.
//!
//! The task cannot ask whether it runs in a Realm; it reports what the device did, and the
//! boot test knows which mode it booted.
//!
//! The secret is [`secret`] of a seed taken from the task's per-instance entropy
//! (`TaskInfo::entropy`), so it is in no binary, command line or DTB. The task prints the seed
//! ([`ReportLine`]) so the host can recompute the secret after the run.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// Bytes of one sector, the size of the secret and of each request's data.
pub const SECTOR_BYTES: usize = 512;

/// The sector the task writes and reads back (inside the 64 MiB disk xtask creates).
pub const SECTOR: u64 = 2048;

/// What the task logs (its console lines read `faultydma: <message>`, the task being named
/// `faultydma` in build/system-faultydma.toml) when the device did not get the private bytes.
pub const REALM_PASS: &str = "PASS device got host bytes, not the private buffer (Realm)";

/// What the task logs when the device read the private buffer (a plain guest: no protection).
pub const PLAIN_LEAK: &str =
    "plain guest: the device read the private buffer (no Realm protection)";

/// What the task's messages start with when something went wrong (it then powers off with
/// status 1).
pub const ERROR_PREFIX: &str = "ERROR";

/// What the report message ([`ReportLine`]) starts with.
pub const REPORT_PREFIX: &str = "seed ";

/// Folds the 32 bytes of task entropy into a 64-bit seed.
pub fn seed_from_entropy(entropy: &[u8; 32]) -> u64 {
    entropy.chunks_exact(8).fold(0u64, |seed, chunk| {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        seed.rotate_left(17) ^ u64::from_le_bytes(word)
    })
}

/// One step of SplitMix64.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The secret sector for `seed`: [`SECTOR_BYTES`] bytes of SplitMix64 output. Its first 8
/// bytes are a tag that makes it different from an all-zero (unwritten) sector even for a
/// degenerate seed.
pub fn secret(seed: u64) -> [u8; SECTOR_BYTES] {
    let mut bytes = [0u8; SECTOR_BYTES];
    bytes[..8].copy_from_slice(b"FAULTDMA");
    let mut state = seed;
    for chunk in bytes[8..].chunks_exact_mut(8) {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    bytes
}

/// What the task logs before it issues the faulty write:
/// `seed 0x<seed> sector <sector> private address 0x<address>`. `Display` writes the message,
/// [`ReportLine::parse`] finds it in a console log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportLine {
    /// The seed of [`secret`].
    pub seed: u64,
    /// The sector written.
    pub sector: u64,
    /// The device address of the private buffer handed to the device.
    pub address: u64,
}

impl core::fmt::Display for ReportLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{REPORT_PREFIX}{:#018x} sector {} private address {:#x}",
            self.seed, self.sector, self.address
        )
    }
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

impl ReportLine {
    /// The report on the first line of `log` that carries one (`faultydma: seed ...`).
    pub fn parse(log: &str) -> Option<ReportLine> {
        const KEY: &str = "faultydma: seed ";
        log.lines().find_map(|line| {
            let rest = &line[line.find(KEY)? + KEY.len()..];
            let mut words = rest.split_whitespace();
            let seed = hex(words.next()?)?;
            (words.next()? == "sector").then_some(())?;
            let sector = words.next()?.parse().ok()?;
            (words.next()? == "private" && words.next()? == "address").then_some(())?;
            let address = hex(words.next()?)?;
            Some(ReportLine {
                seed,
                sector,
                address,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn the_secret_depends_on_the_seed_and_is_never_blank() {
        let a = secret(1);
        let b = secret(2);
        assert_ne!(a, b);
        assert_eq!(secret(1), a);
        // Even seed 0 gives a sector that is neither zero nor periodic in 8 bytes.
        let zero = secret(0);
        assert!(zero.iter().any(|&byte| byte != 0));
        assert_ne!(zero[8..16], zero[16..24]);
        assert_eq!(&zero[..8], b"FAULTDMA");
    }

    #[test]
    fn the_seed_uses_all_of_the_entropy() {
        let mut entropy = [0u8; 32];
        let base = seed_from_entropy(&entropy);
        for index in [0, 7, 8, 31] {
            entropy[index] ^= 1;
            assert_ne!(seed_from_entropy(&entropy), base, "byte {index} ignored");
            entropy[index] ^= 1;
        }
    }

    #[test]
    fn the_report_line_round_trips() {
        let report = ReportLine {
            seed: 0x0123_4567_89ab_cdef,
            sector: SECTOR,
            address: 0x4123_4000,
        };
        let message = report.to_string();
        assert_eq!(
            message,
            "seed 0x0123456789abcdef sector 2048 private address 0x41234000"
        );
        assert!(message.starts_with(REPORT_PREFIX));
        let log = std::format!("moat: ready\nfaultydma: {message}\nfaultydma: done\n");
        assert_eq!(ReportLine::parse(&log), Some(report));
        assert_eq!(ReportLine::parse("faultydma: seed 12 sector 1\n"), None);
        assert_eq!(
            ReportLine::parse("faultydma: seed 0x12 sector x private address 0x1\n"),
            None
        );
    }
}
