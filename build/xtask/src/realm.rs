//! What xtask checks of a Realm boot beyond console lines in order: realm-sim's initial
//! measurement against the kernel's, the stress mode really in force, and the confidentiality
//! scan of the guest RAM file (DESIGN.md section 7).
//!
//! The RAM file is QEMU's whole RAM (`memory-backend-file`, share=on); file offset =
//! PA − 0x4000_0000. realm-sim splits it (build/realm-sim/README.md): **host memory** is
//! offsets `[0, N)`, **private memory** `[N, 2N)`, N the Realm's RAM size, which realm-sim
//! prints (`realm-sim: Realm RAM 512 MiB at IPA 0x40000000, private at PA 0x60000000, ...`).
//! The kernel test system's `ktest-canary` task fills a page of its private memory with
//! [`canary`]; the scan must find it in the private part (so the scan can fail) and never in
//! the host part.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result};

/// The base of QEMU's RAM on the virt board: file offset 0 of the RAM file.
pub const RAM_BASE: u64 = 0x4000_0000;

/// The stage-2 granule: in stress mode realm-sim makes this much progress per IPA_STATE_SET.
pub const GRANULE: u64 = 4096;

/// The 64 bytes `ktest-canary` repeats over a page of its private memory:
/// byte i = ((i × 73 + 31) mod 256) XOR 0xc3. Computed at run time by the task, so they appear
/// in no binary, command line or DTB.
pub fn canary() -> [u8; 64] {
    std::array::from_fn(|i| ((i as u8).wrapping_mul(73).wrapping_add(31)) ^ 0xc3)
}

/// Host and private memory as offsets of the RAM file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Host memory: `[0, N)`.
    pub host: Range<u64>,
    /// Private memory: `[N, 2N)`.
    pub private: Range<u64>,
}

impl Layout {
    /// The layout for a Realm of `ram` bytes.
    pub fn for_ram(ram: u64) -> Self {
        Self {
            host: 0..ram,
            private: ram..2 * ram,
        }
    }
}

/// The hex number right after `key` on `line`.
fn hex_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix("0x")?;
    let end = rest
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(rest.len());
    u64::from_str_radix(&rest[..end], 16).ok()
}

/// realm-sim's memory layout from its first console line
/// (`realm-sim: Realm RAM 512 MiB at IPA 0x40000000, private at PA 0x60000000, ...`).
pub fn layout_from_log(log: &str) -> Option<Layout> {
    let line = log
        .lines()
        .find(|line| line.contains("realm-sim: Realm RAM"))?;
    let ipa = hex_after(line, " at IPA")?;
    let private = hex_after(line, "private at PA")?;
    let ram = private.checked_sub(ipa)?;
    (ipa == RAM_BASE && ram > 0).then(|| Layout::for_ram(ram))
}

/// The hex digest right after `key` on the first line containing it.
fn digest_after<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    log.lines().find_map(|line| {
        let rest = &line[line.find(key)? + key.len()..];
        let digest = rest.split_whitespace().next()?;
        (!digest.is_empty() && digest.chars().all(|c| c.is_ascii_hexdigit())).then_some(digest)
    })
}

/// Checks that the kernel's `realm: initial measurement <hex>` equals realm-sim's
/// `realm-sim: RIM sha256:<hex>` (what the RMM measured is what the Realm reads back).
pub fn initial_measurement_matches(log: &str) -> Vec<String> {
    let sim = digest_after(log, "realm-sim: RIM sha256:");
    let kernel = digest_after(log, "realm: initial measurement ");
    match (sim, kernel) {
        (Some(sim), Some(kernel)) if sim.eq_ignore_ascii_case(kernel) => vec![],
        (Some(sim), Some(kernel)) => vec![format!(
            "the kernel's initial measurement {kernel} is not realm-sim's RIM {sim}"
        )],
        (None, _) => vec!["no `realm-sim: RIM sha256:<hex>` line".into()],
        (_, None) => vec!["no `realm: initial measurement <hex>` line".into()],
    }
}

/// Checks that realm-sim's stress mode was in force: the kernel's RIPAS RAM pass
/// (`realm: RIPAS RAM over all memory in K RSI calls`) took one call per granule of the
/// Realm's RAM.
pub fn stress_mode_in_force(log: &str) -> Vec<String> {
    let Some(layout) = layout_from_log(log) else {
        return vec!["no `realm-sim: Realm RAM ... private at PA ...` line".into()];
    };
    let calls = log.lines().find_map(|line| {
        let rest = &line[line.find("realm: RIPAS RAM over all memory in ")?
            + "realm: RIPAS RAM over all memory in ".len()..];
        rest.split_whitespace().next()?.parse::<u64>().ok()
    });
    let granules = layout.host.end / GRANULE;
    match calls {
        Some(calls) if calls == granules => vec![],
        Some(calls) => vec![format!(
            "the RIPAS RAM pass took {calls} RSI calls; stress mode makes it {granules} (one per granule)"
        )],
        None => vec!["no `realm: RIPAS RAM over all memory in K RSI calls` line".into()],
    }
}

/// Where `needle` occurs wholly inside what `reader` yields: the number of occurrences and
/// the offsets (relative to the reader's start) of the first `keep`.
pub fn find_all(mut reader: impl Read, needle: &[u8], keep: usize) -> io::Result<(u64, Vec<u64>)> {
    const CHUNK: usize = 8 << 20;
    assert!(!needle.is_empty() && needle.len() <= CHUNK);
    let mut buffer = vec![0u8; CHUNK + needle.len()];
    // Bytes at the front of `buffer` carried over from the previous read (too few to hold a
    // whole match on their own), and the offset of `buffer[0]` in the stream.
    let mut carried = 0usize;
    let mut base = 0u64;
    let mut count = 0u64;
    let mut offsets = Vec::new();
    loop {
        let read = reader.read(&mut buffer[carried..carried + CHUNK])?;
        if read == 0 {
            return Ok((count, offsets));
        }
        let filled = carried + read;
        let window = &buffer[..filled];
        let mut at = 0;
        while at + needle.len() <= filled {
            let Some(skip) = window[at..filled + 1 - needle.len()]
                .iter()
                .position(|&byte| byte == needle[0])
            else {
                break;
            };
            at += skip;
            if &window[at..at + needle.len()] == needle {
                count += 1;
                if offsets.len() < keep {
                    offsets.push(base + at as u64);
                }
            }
            at += 1;
        }
        let keep_from = filled.saturating_sub(needle.len() - 1);
        buffer.copy_within(keep_from..filled, 0);
        carried = filled - keep_from;
        base += keep_from as u64;
    }
}

/// What the scan found in each part of the RAM file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    /// Occurrences in host memory and the file offsets of the first few.
    pub host: (u64, Vec<u64>),
    /// Occurrences in private memory and the file offsets of the first few.
    pub private: (u64, Vec<u64>),
}

impl ScanResult {
    /// The problems: the canary must be in private memory and never in host memory.
    pub fn problems(&self, layout: &Layout) -> Vec<String> {
        let mut problems = Vec::new();
        if self.private.0 == 0 {
            problems.push(format!(
                "confidentiality scan: the canary is not in private memory (RAM file offsets \
                 {:#x}..{:#x}), so the scan proves nothing",
                layout.private.start, layout.private.end
            ));
        }
        if self.host.0 > 0 {
            let offsets: Vec<String> = self.host.1.iter().map(|o| format!("{o:#x}")).collect();
            problems.push(format!(
                "confidentiality scan: the canary is in host memory {} times (RAM file offsets {}): \
                 private data reached memory the host reads",
                self.host.0,
                offsets.join(", ")
            ));
        }
        problems
    }

    /// One line for the test report.
    pub fn summary(&self) -> String {
        format!(
            "canary {} times in private memory, {} times in host memory",
            self.private.0, self.host.0
        )
    }
}

/// Scans one region of `file` for `needle`; offsets are file offsets.
fn scan_region(file: &mut File, region: &Range<u64>, needle: &[u8]) -> Result<(u64, Vec<u64>)> {
    file.seek(SeekFrom::Start(region.start))?;
    let (count, offsets) = find_all(file.by_ref().take(region.end - region.start), needle, 8)?;
    Ok((
        count,
        offsets.into_iter().map(|o| o + region.start).collect(),
    ))
}

/// Scans the guest RAM file for the canary: host part and private part.
pub fn scan_ram_file(ram_file: &Path, layout: &Layout) -> Result<ScanResult> {
    let mut file =
        File::open(ram_file).with_context(|| format!("opening {}", ram_file.display()))?;
    let length = file.metadata()?.len();
    anyhow::ensure!(
        length >= layout.private.end,
        "{} is {length} bytes, smaller than host + private memory ({} bytes)",
        ram_file.display(),
        layout.private.end
    );
    let needle = canary();
    let host = scan_region(&mut file, &layout.host, &needle)
        .with_context(|| format!("reading {}", ram_file.display()))?;
    let private = scan_region(&mut file, &layout.private, &needle)
        .with_context(|| format!("reading {}", ram_file.display()))?;
    Ok(ScanResult { host, private })
}

/// The whole confidentiality check of one Realm run of the kernel test system: the canary must
/// not be in the Image (or finding it would prove nothing), must be in private memory and must
/// never be in host memory. Returns the problems and a summary line.
pub fn confidentiality_check(
    log: &str,
    ram_file: &Path,
    image: &Path,
) -> Result<(Vec<String>, String)> {
    let Some(layout) = layout_from_log(log) else {
        return Ok((
            vec!["confidentiality scan: no realm-sim layout line on the console".into()],
            String::new(),
        ));
    };
    let mut problems = Vec::new();
    let image_bytes =
        std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    if find_all(image_bytes.as_slice(), &canary(), 1)?.0 > 0 {
        problems.push(format!(
            "confidentiality scan: the canary is in {} itself, so finding it proves nothing",
            image.display()
        ));
    }
    let result = scan_ram_file(ram_file, &layout)?;
    problems.extend(result.problems(&layout));
    Ok((problems, result.summary()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
realm-sim: Realm RAM 512 MiB at IPA 0x40000000, private at PA 0x60000000, shared bit 0x4000000000
realm-sim: Image 0x11a000 bytes at IPA 0x40200000, DTB 0x100000 bytes at IPA 0x40000000
realm-sim: RIM sha256:225ca20939f67e2f2158a3bee8fd66141cd6656c56e9aae9c8a59577582a142f
Moat 0.1.0 - capability microkernel for Arm CCA Realms, entered at EL1
realm: Arm CCA Realm, RSI 1.0 (RMM implements up to 1.0)
realm: initial measurement 225ca20939f67e2f2158a3bee8fd66141cd6656c56e9aae9c8a59577582a142f
realm: RIPAS RAM over all memory in 1 RSI calls
";

    #[test]
    fn the_canary_is_the_tasks_formula() {
        let canary = canary();
        assert_eq!(canary[0], 31 ^ 0xc3);
        assert_eq!(canary[1], (73 + 31) ^ 0xc3);
        assert_eq!(canary[63], ((63u32 * 73 + 31) % 256) as u8 ^ 0xc3);
        // 73 is odd, so the 64 bytes are distinct: no shorter period can fake a match.
        let mut sorted = canary.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 64);
    }

    #[test]
    fn reads_the_layout_off_realm_sims_first_line() {
        assert_eq!(
            layout_from_log(LOG),
            Some(Layout {
                host: 0..0x2000_0000,
                private: 0x2000_0000..0x4000_0000
            })
        );
        let small = LOG
            .replace("512 MiB", "64 MiB")
            .replace("0x60000000", "0x44000000");
        assert_eq!(layout_from_log(&small), Some(Layout::for_ram(64 << 20)));
        assert_eq!(layout_from_log("Moat 0.1.0\n"), None);
        let odd = LOG.replace("at IPA 0x40000000,", "at IPA 0x80000000,");
        assert_eq!(layout_from_log(&odd), None);
    }

    #[test]
    fn the_initial_measurements_must_agree() {
        assert!(initial_measurement_matches(LOG).is_empty());
        let upper = LOG.replace("225ca209", "225CA209");
        assert!(initial_measurement_matches(&upper).is_empty());
        let differ = LOG.replacen("sha256:225c", "sha256:325c", 1);
        assert_eq!(initial_measurement_matches(&differ).len(), 1);
        let no_kernel = LOG.replace("realm: initial measurement", "realm: measurement");
        assert_eq!(initial_measurement_matches(&no_kernel).len(), 1);
        let no_sim = LOG.replace("RIM sha256:", "RIM ");
        assert_eq!(initial_measurement_matches(&no_sim).len(), 1);
    }

    #[test]
    fn stress_mode_takes_one_call_per_granule() {
        assert_eq!(stress_mode_in_force(LOG).len(), 1);
        let stressed = LOG.replace("in 1 RSI calls", "in 131072 RSI calls");
        assert!(stress_mode_in_force(&stressed).is_empty());
        assert_eq!(
            stress_mode_in_force("realm: RIPAS RAM over all memory in 131072 RSI calls\n").len(),
            1
        );
    }

    #[test]
    fn finds_every_occurrence_across_chunk_boundaries() {
        let needle = canary();
        let chunk = 8 << 20;
        let mut data = vec![0u8; 2 * chunk + 1000];
        // Straddling the first chunk boundary, at the very start, and at the very end.
        let places = [0, chunk - 30, chunk + 100, data.len() - 64];
        for &place in &places {
            data[place..place + 64].copy_from_slice(&needle);
        }
        let (count, offsets) = find_all(data.as_slice(), &needle, 10).unwrap();
        assert_eq!(count, 4);
        assert_eq!(offsets, places.map(|p| p as u64));
        // A near miss (last byte wrong) is not a match; `keep` limits the offsets only.
        data[chunk + 163] ^= 1;
        let (count, offsets) = find_all(data.as_slice(), &needle, 1).unwrap();
        assert_eq!((count, offsets), (3, vec![0]));
        assert_eq!(find_all(&[][..], &needle, 1).unwrap(), (0, vec![]));
    }

    #[test]
    fn the_scan_can_fail_both_ways() {
        let dir = std::env::temp_dir().join(format!("xtask-realm-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ram = dir.join("ram");
        let layout = Layout::for_ram(1 << 20);
        let mut bytes = vec![0u8; (2 << 20) + 4096];
        let page: Vec<u8> = canary().iter().copied().cycle().take(4096).collect();
        // Nowhere: fails (the scan must be able to fail).
        std::fs::write(&ram, &bytes).unwrap();
        let result = scan_ram_file(&ram, &layout).unwrap();
        assert_eq!(result.problems(&layout).len(), 1, "{result:?}");
        // Only in private memory: passes. Beyond 2N (realm-sim, the loaded Image) is not scanned.
        bytes[(1 << 20) + 8192..(1 << 20) + 12288].copy_from_slice(&page);
        bytes[2 << 20..].copy_from_slice(&page);
        std::fs::write(&ram, &bytes).unwrap();
        let result = scan_ram_file(&ram, &layout).unwrap();
        assert!(result.problems(&layout).is_empty(), "{result:?}");
        assert_eq!(result.private.0, 64);
        assert_eq!(result.private.1[0], (1 << 20) + 8192);
        // Also in host memory: fails and names the offset.
        bytes[4096..4160].copy_from_slice(&canary());
        std::fs::write(&ram, &bytes).unwrap();
        let result = scan_ram_file(&ram, &layout).unwrap();
        let problems = result.problems(&layout);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("0x1000"), "{problems:?}");
        // A file shorter than 2N is an error, not a pass.
        std::fs::write(&ram, &bytes[..1 << 20]).unwrap();
        assert!(scan_ram_file(&ram, &layout).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
