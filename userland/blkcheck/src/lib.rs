//! blkcheck's logic, host-tested: the deterministic disk pattern, the plan of mixed-size
//! requests that covers a disk, and the summary line.
//!
//! The pattern depends only on a 64-bit seed, the sector number and the byte's place in it, so
//! anyone — the task reading the disk back, or `cargo xtask` reading the disk image on the host
//! after a run — can compute what any sector must hold ([`expected_sector`]). The demo uses the
//! fixed [`SEED`]; the persistence check (`blkcheck-persist`) picks a fresh seed per boot, so a
//! later boot can only verify data an earlier boot really wrote. Every sector carries the seed
//! in its second word ([`seed_of`]), so the disk says which pattern it should hold.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use core::fmt;

/// Bytes per sector.
pub const SECTOR: usize = 512;

/// Largest request blkcheck makes.
pub const MAX_REQUEST: usize = 256 * 1024;

/// Mixes the disk pattern: change it and every image written before reads as corrupt.
pub const SEED: u64 = 0x6d6f_6174_626c_6b31; // "moatblk1"

/// Request sizes, cycled through: 512 B to 256 KiB, page multiples and not.
pub const SIZES: [usize; 12] = [
    4096, 512, 65536, 1536, 262_144, 8192, 3584, 131_072, 16384, 2560, 32768,
    253_952, // 248 KiB: not a power of two
];

/// Offsets from a page boundary at which the client buffer starts (so data is copied to and
/// from page-aligned and unaligned places in the region), cycled through.
pub const MISALIGNMENTS: [usize; 5] = [0, 512, 0, 1536, 3584];

fn mix(mut value: u64) -> u64 {
    // splitmix64's finaliser.
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// Fills `out` (a multiple of 512 bytes) with the [`SEED`] pattern of the sectors from
/// `sector` on (see [`fill_seeded`]).
pub fn fill(sector: u64, out: &mut [u8]) {
    fill_seeded(SEED, sector, out);
}

/// Fills `out` (a multiple of 512 bytes) with the pattern of `seed` for the sectors from
/// `sector` on. Each 8-byte word depends on the seed, the sector and the word's index; the
/// first word of a sector is the sector number itself (a misplaced sector is easy to recognise
/// in a hex dump) and the second is the seed.
pub fn fill_seeded(seed: u64, sector: u64, out: &mut [u8]) {
    for (index, chunk) in out.chunks_mut(SECTOR).enumerate() {
        let sector = sector.wrapping_add(index as u64);
        let mut words = chunk.chunks_exact_mut(8);
        let mut word = 0;
        for bytes in &mut words {
            let encoded: &mut [u8; 8] = match bytes.try_into() {
                Ok(encoded) => encoded,
                Err(_) => continue,
            };
            *encoded = word_value(seed, sector, word).to_le_bytes();
            word += 1;
        }
        let tail = words.into_remainder();
        let encoded = word_value(seed, sector, word).to_le_bytes();
        let len = tail.len();
        tail.copy_from_slice(&encoded[..len]);
    }
}

/// What sector `sector` must hold after a blkcheck run.
pub fn expected_sector(sector: u64) -> [u8; SECTOR] {
    let mut bytes = [0u8; SECTOR];
    fill(sector, &mut bytes);
    bytes
}

/// The pattern's 8-byte word `word` of sector `sector`.
fn word_value(seed: u64, sector: u64, word: usize) -> u64 {
    match word {
        0 => sector,
        1 => seed,
        _ => mix(seed ^ sector.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ word as u64),
    }
}

/// The seed of the pattern sector `sector` claims to hold (its second word), if its first word
/// is its own number. Only a claim: check the sector with [`first_mismatch_seeded`].
pub fn seed_of(sector: u64, data: &[u8]) -> Option<u64> {
    let word = |index: usize| -> Option<u64> {
        let bytes = data.get(index * 8..index * 8 + 8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    };
    (word(0)? == sector).then_some(word(1)?)
}

/// The first byte offset in `data` (read from sector `sector` on) that differs from the
/// [`SEED`] pattern, if any.
pub fn first_mismatch(sector: u64, data: &[u8]) -> Option<usize> {
    first_mismatch_seeded(SEED, sector, data)
}

/// The first byte offset in `data` (read from sector `sector` on) that differs from the
/// pattern of `seed`, if any. Compares word by word, without building the expected bytes.
pub fn first_mismatch_seeded(seed: u64, sector: u64, data: &[u8]) -> Option<usize> {
    for (index, chunk) in data.chunks(SECTOR).enumerate() {
        let sector = sector.wrapping_add(index as u64);
        for (word, bytes) in chunk.chunks(8).enumerate() {
            let value = word_value(seed, sector, word);
            let expected = value.to_le_bytes();
            let expected = &expected[..bytes.len()];
            let matches = match <[u8; 8]>::try_from(bytes) {
                Ok(word) => u64::from_le_bytes(word) == value,
                Err(_) => bytes == expected,
            };
            if !matches {
                let at = bytes.iter().zip(expected).position(|(a, b)| a != b);
                return Some(index * SECTOR + word * 8 + at.unwrap_or(0));
            }
        }
    }
    None
}

/// One request of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// First sector.
    pub sector: u64,
    /// Bytes (a multiple of 512, at most [`MAX_REQUEST`]).
    pub len: usize,
    /// Offset of the client buffer from a page boundary.
    pub misalignment: usize,
}

/// The requests that cover a disk of `sectors` sectors, in order, sizes from [`SIZES`]
/// (the last one cut to fit).
pub fn plan(sectors: u64) -> impl Iterator<Item = Chunk> {
    let mut sector = 0u64;
    let mut index = 0usize;
    core::iter::from_fn(move || {
        if sector >= sectors {
            return None;
        }
        let left = (sectors - sector).saturating_mul(SECTOR as u64);
        let len = (SIZES[index % SIZES.len()] as u64).min(left) as usize;
        let chunk = Chunk {
            sector,
            len,
            misalignment: MISALIGNMENTS[index % MISALIGNMENTS.len()],
        };
        sector += (len / SECTOR) as u64;
        index += 1;
        Some(chunk)
    })
}

/// Megabytes (10^6 bytes) per second, in tenths, for `bytes` in `nanoseconds`.
pub fn tenths_of_mb_per_second(bytes: u64, nanoseconds: u64) -> u64 {
    if nanoseconds == 0 {
        return 0;
    }
    (u128::from(bytes) * 10_000 / u128::from(nanoseconds)) as u64
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Bytes written (and read back).
    pub bytes: u64,
    /// Requests per pass.
    pub requests: u64,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
    /// Write pass duration.
    pub write_ns: u64,
    /// Read-and-verify pass duration.
    pub read_ns: u64,
    /// Flush duration.
    pub flush_ns: u64,
    /// Requests that failed or data that did not verify.
    pub failures: u64,
}

struct Rate(u64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} KiB in {} requests (512 B..256 KiB, up to {} in flight): write {} MB/s, read+verify {} MB/s, flush {} us",
            if self.failures == 0 { "PASS" } else { "FAIL" },
            self.bytes / 1024,
            self.requests,
            self.max_in_flight,
            Rate(tenths_of_mb_per_second(self.bytes, self.write_ns)),
            Rate(tenths_of_mb_per_second(self.bytes, self.read_ns)),
            self.flush_ns / 1000,
        )?;
        if self.failures > 0 {
            write!(f, ", {} failures", self.failures)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::collections::HashSet;
    use std::format;
    use std::vec;

    use super::*;

    #[test]
    fn plan_covers_the_disk_exactly_in_mixed_sizes() {
        for sectors in [1u64, 7, 131_072, 131_071, 999] {
            let mut next = 0;
            let mut sizes = HashSet::new();
            let mut unaligned = false;
            for chunk in plan(sectors) {
                assert_eq!(chunk.sector, next);
                assert!(chunk.len > 0 && chunk.len <= MAX_REQUEST);
                assert_eq!(chunk.len % SECTOR, 0);
                unaligned |= chunk.misalignment % 4096 != 0;
                sizes.insert(chunk.len);
                next += (chunk.len / SECTOR) as u64;
            }
            assert_eq!(next, sectors);
            if sectors == 131_072 {
                assert!(sizes.contains(&512) && sizes.contains(&MAX_REQUEST));
                assert!(sizes.iter().any(|len| len % 4096 != 0));
                assert!(unaligned);
            }
        }
    }

    #[test]
    fn pattern_is_deterministic_and_differs_per_sector() {
        let a = expected_sector(5);
        assert_eq!(a, expected_sector(5));
        assert_ne!(a, expected_sector(6));
        assert_eq!(&a[..8], &5u64.to_le_bytes());
        let mut run = vec![0u8; 4 * SECTOR];
        fill(4, &mut run);
        assert_eq!(&run[SECTOR..2 * SECTOR], &a[..]);
        assert_eq!(first_mismatch(4, &run), None);
        run[3 * SECTOR + 17] ^= 1;
        assert_eq!(first_mismatch(4, &run), Some(3 * SECTOR + 17));
    }

    #[test]
    fn seeds_make_different_patterns_and_sectors_name_theirs() {
        let mut a = vec![0u8; 2 * SECTOR];
        let mut b = vec![0u8; 2 * SECTOR];
        fill_seeded(1, 10, &mut a);
        fill_seeded(2, 10, &mut b);
        assert_ne!(a, b);
        assert_eq!(first_mismatch_seeded(1, 10, &a), None);
        assert_eq!(first_mismatch_seeded(2, 10, &a), Some(8));
        assert_eq!(seed_of(10, &a), Some(1));
        assert_eq!(seed_of(11, &a[SECTOR..]), Some(1));
        // A sector that is not where it claims to be, or too short to say.
        assert_eq!(seed_of(11, &a), None);
        assert_eq!(seed_of(10, &a[..12]), None);
        assert_eq!(seed_of(0, &[0u8; SECTOR]), Some(0));
        // The demo pattern is the SEED one.
        let mut demo = vec![0u8; SECTOR];
        fill(3, &mut demo);
        assert_eq!(seed_of(3, &demo), Some(SEED));
        assert_eq!(first_mismatch(3, &demo), None);
    }

    #[test]
    fn summary_line() {
        let summary = Summary {
            bytes: 64 << 20,
            requests: 700,
            max_in_flight: 32,
            write_ns: 1_000_000_000,
            read_ns: 500_000_000,
            flush_ns: 2_000,
            failures: 0,
        };
        assert_eq!(
            format!("{summary}"),
            "PASS 65536 KiB in 700 requests (512 B..256 KiB, up to 32 in flight): write 67.1 MB/s, read+verify 134.2 MB/s, flush 2 us"
        );
    }
}
