//! The faulty-DMA test (issue 7, Realm mode): a driver that hands its device the address of a
//! *private* buffer gets host memory back, never the private bytes.
//!
//! build/system-faultydma.toml (supervisor, DMA server, `faultydma`) is built with a kernel
//! built for tests (only such a kernel lets `faultydma` learn the address of its private page,
//! `MEM_ALLOC_PHYSICAL_FOR_TESTS`) and booted twice, each with a fresh zero-filled disk:
//!
//! - `faultydma-realm`: a Realm under realm-sim. The task must say the device did not get the
//!   private bytes ([`faultydma::REALM_PASS`]). Then, from the host side
//!   ([`realm_problems`]): the secret (recomputed from the seed the task printed) must not be
//!   in the disk's sector nor anywhere on the disk nor anywhere in host memory, and it must be
//!   in the private part of the guest RAM file exactly where the task's address maps
//!   (`private start + address − 0x4000_0000`) — so the test fails if the task's buffer was
//!   not private, if the address was not the buffer's, or if the device could read private
//!   memory.
//! - `faultydma-plain`: the plain guest at EL1, the control. Nothing protects memory there, so
//!   the device reads the private buffer: the task says so ([`faultydma::PLAIN_LEAK`]) and the
//!   sector on the disk must hold the secret ([`plain_problems`]). This shows that the disk
//!   check detects a leak and that the task really hands the device its buffer's address.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use faultydma::{PLAIN_LEAK, REALM_PASS, ReportLine, SECTOR_BYTES, secret};

use crate::boot_tests::GRACE;
use crate::console::{self, Expectations, ExpectedExit, Step};
use crate::qemu::{self, Mode, Setup};
use crate::realm::{self, Layout, RAM_BASE};
use crate::system::SystemPaths;
use crate::workspace::{self, Workspace};

/// The test system's manifest, relative to the workspace root.
pub const MANIFEST_PATH: &str = "build/system-faultydma.toml";

/// Tasks in the test system.
const TASKS: usize = 3;

/// The part of the secret the whole-disk and whole-memory scans look for: its random bytes
/// after the 8-byte tag (64 bytes, so a partial copy is found too).
fn needle(seed: u64) -> Vec<u8> {
    secret(seed)[8..72].to_vec()
}

/// The task's console line for `message`.
fn task_line(message: &str) -> String {
    format!("faultydma: {message}")
}

/// Lines no run of this test prints.
fn forbidden(realm: bool) -> Vec<&'static str> {
    let mut lines = vec!["KERNEL FAULT", "KERNEL PANIC", "faultydma: ERROR"];
    if realm {
        lines.extend(["realm-sim: error", "realm-sim: refused"]);
    }
    lines
}

/// What the console must show: the boot, the three tasks, the task's report and its verdict,
/// then exit status 0 (the task powers off).
fn expectations(realm: bool) -> Expectations {
    let mut steps = Vec::new();
    if realm {
        steps.extend([
            Step::line("realm-sim: Realm RAM"),
            Step::line("realm: Arm CCA Realm, RSI 1.0"),
        ]);
    } else {
        steps.push(Step::line("entered at EL1"));
    }
    steps.extend([
        Step::line("moat: boot self-check passed"),
        Step::line(format!("tasks: {TASKS} started")),
        Step::line(task_line(faultydma::REPORT_PREFIX)),
        Step::line(task_line(if realm { REALM_PASS } else { PLAIN_LEAK })),
    ]);
    let mut forbidden = forbidden(realm);
    // The other mode's verdict is wrong here.
    forbidden.push(if realm { PLAIN_LEAK } else { REALM_PASS });
    let mut checks: Vec<console::LogCheck> = Vec::new();
    if realm {
        checks.push(realm::initial_measurement_matches);
    }
    Expectations {
        steps,
        forbidden,
        checks,
        exit: ExpectedExit::Success,
    }
}

/// Occurrences of `needle` in `bytes`.
fn count(bytes: &[u8], needle: &[u8]) -> u64 {
    realm::find_all(bytes, needle, 0).map_or(0, |(count, _)| count)
}

/// The sector `report` names, if the disk holds it.
fn sector_of<'a>(disk: &'a [u8], report: &ReportLine) -> Option<&'a [u8]> {
    let start = usize::try_from(report.sector)
        .ok()?
        .checked_mul(SECTOR_BYTES)?;
    disk.get(start..start.checked_add(SECTOR_BYTES)?)
}

/// The host-side checks of the Realm run: `disk` is the disk image, `in_host` how often
/// [`needle`] occurs in the host part of the guest RAM file ([`count_in_host`]),
/// `private_at_address` the [`SECTOR_BYTES`] of the private part where the task's address maps
/// (`None`: the address is outside the Realm's RAM).
pub fn realm_problems(
    report: &ReportLine,
    disk: &[u8],
    in_host: u64,
    private_at_address: Option<&[u8]>,
) -> Vec<String> {
    let secret = secret(report.seed);
    let needle = needle(report.seed);
    let mut problems = Vec::new();
    match sector_of(disk, report) {
        None => problems.push(format!("the disk has no sector {}", report.sector)),
        Some(sector) if sector == secret.as_slice() => problems.push(format!(
            "sector {} on the disk holds the private buffer's secret: the device read private \
             memory",
            report.sector
        )),
        Some(_) => {}
    }
    let on_disk = count(disk, &needle);
    if on_disk > 0 {
        problems.push(format!(
            "the secret is on the disk {on_disk} times: private bytes left the Realm"
        ));
    }
    if in_host > 0 {
        problems.push(format!(
            "the secret is in host memory {in_host} times: private bytes reached memory the \
             host reads"
        ));
    }
    match private_at_address {
        None => problems.push(format!(
            "the task's address {:#x} is outside the Realm's RAM",
            report.address
        )),
        Some(bytes) if bytes != secret.as_slice() => problems.push(format!(
            "private memory at the task's address {:#x} does not hold the secret, so the test \
             proves nothing (the buffer was not private, or the address was not the buffer's)",
            report.address
        )),
        Some(_) => {}
    }
    problems
}

/// The host-side check of the plain control run: the device read the private buffer, so its
/// sector on the disk holds the secret.
pub fn plain_problems(report: &ReportLine, disk: &[u8]) -> Vec<String> {
    match sector_of(disk, report) {
        None => vec![format!("the disk has no sector {}", report.sector)],
        Some(sector) if sector != secret(report.seed).as_slice() => vec![format!(
            "sector {} on the disk does not hold the secret although the plain guest's device \
             reads all memory: the task did not hand the device its buffer's address, and the \
             Realm run's disk check proves nothing",
            report.sector
        )],
        Some(_) => vec![],
    }
}

/// Reads `len` bytes at `offset` of `file`.
fn read_at(file: &mut File, offset: u64, len: usize) -> Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0u8; len];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Occurrences of the secret's [`needle`] in the host part of the guest RAM file `file`
/// (streamed: the part is 512 MiB).
pub fn count_in_host(file: &mut File, layout: &Layout, seed: u64) -> Result<u64> {
    file.seek(SeekFrom::Start(layout.host.start))?;
    let (count, _) = realm::find_all(
        file.by_ref().take(layout.host.end - layout.host.start),
        &needle(seed),
        0,
    )?;
    Ok(count)
}

/// The Realm run's checks on the files it left: the disk image and the guest RAM file.
fn check_realm_files(
    log: &str,
    report: &ReportLine,
    disk: &Path,
    ram: &Path,
) -> Result<Vec<String>> {
    let Some(layout) = realm::layout_from_log(log) else {
        return Ok(vec!["no realm-sim layout line on the console".into()]);
    };
    let disk_bytes = fs::read(disk).with_context(|| format!("reading {}", disk.display()))?;
    let mut file = File::open(ram).with_context(|| format!("opening {}", ram.display()))?;
    let length = file.metadata()?.len();
    anyhow::ensure!(
        length >= layout.private.end,
        "{} is {length} bytes, smaller than host + private memory ({} bytes)",
        ram.display(),
        layout.private.end
    );
    let in_host = count_in_host(&mut file, &layout, report.seed)
        .with_context(|| format!("scanning host memory in {}", ram.display()))?;
    let host_len = layout.host.end - layout.host.start;
    let offset = report
        .address
        .checked_sub(RAM_BASE)
        .filter(|offset| offset.saturating_add(SECTOR_BYTES as u64) <= host_len);
    let private_bytes = match offset {
        Some(offset) => Some(
            read_at(&mut file, layout.private.start + offset, SECTOR_BYTES)
                .with_context(|| format!("reading private memory from {}", ram.display()))?,
        ),
        None => None,
    };
    Ok(realm_problems(
        report,
        &disk_bytes,
        in_host,
        private_bytes.as_deref(),
    ))
}

/// Runs one boot; returns its problems (empty: passed).
fn run_one(
    name: &str,
    image: &Path,
    realm_sim: Option<&Path>,
    log_dir: &Path,
    timeout: Duration,
) -> Result<Vec<String>> {
    fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let disk = log_dir.join(format!("{name}.disk"));
    workspace::remove_if_present(&disk)?;
    workspace::ensure_disk(&disk)?;
    let ram = log_dir.join(format!("{name}.ram"));
    let mode = match realm_sim {
        Some(realm_sim) => {
            workspace::remove_if_present(&ram)?;
            Mode::Realm(qemu::Realm {
                realm_sim: realm_sim.to_path_buf(),
                ram_file: ram.clone(),
                stress_host: false,
            })
        }
        None => Mode::Plain { el2: false },
    };
    let realm = realm_sim.is_some();
    let setup = Setup::Full {
        disk: disk.clone(),
        mode,
        gdb: false,
        kernel_args: vec![],
    };
    let command = qemu::command(image, &setup);
    let command_text = qemu::command_text(&command);
    let expected = expectations(realm);
    let captured = qemu::run_until(
        command,
        timeout,
        &|log| console::forbidden_seen(log, &expected),
        GRACE,
    )?;
    let mut problems = console::judge(&captured.log, captured.ending, &expected);
    let mut notes = Vec::new();
    match ReportLine::parse(&captured.log) {
        None => problems.push("no `faultydma: seed ...` report line".into()),
        Some(report) => {
            notes.push(format!(
                "seed {:#018x}, sector {}, private buffer at {:#x}",
                report.seed, report.sector, report.address
            ));
            if realm {
                match check_realm_files(&captured.log, &report, &disk, &ram) {
                    Ok(found) => problems.extend(found),
                    Err(error) => problems.push(format!("{error:#}")),
                }
            } else {
                match fs::read(&disk) {
                    Ok(bytes) => problems.extend(plain_problems(&report, &bytes)),
                    Err(error) => problems.push(format!("reading {}: {error}", disk.display())),
                }
            }
        }
    }
    if problems.is_empty() {
        workspace::remove_if_present(&disk)?;
        if realm {
            workspace::remove_if_present(&ram)?;
        }
    } else {
        notes.push(format!("disk kept in {}", disk.display()));
        if realm {
            notes.push(format!("guest RAM kept in {}", ram.display()));
        }
    }
    let log_path = log_dir.join(format!("{name}.log"));
    let mut saved = format!("$ {command_text}\n{}", captured.log);
    if !saved.ends_with('\n') {
        saved.push('\n');
    }
    saved.push_str(&format!(
        "[{}]\n",
        captured.ending.describe(timeout.as_secs())
    ));
    for note in &notes {
        saved.push_str(&format!("[{note}]\n"));
    }
    fs::write(&log_path, &saved).with_context(|| format!("writing {}", log_path.display()))?;
    let seconds = captured.elapsed.as_secs_f64();
    if problems.is_empty() {
        println!("boot test {name}: PASS ({seconds:.1} s)");
        for note in &notes {
            println!("  {note}");
        }
    } else {
        println!("boot test {name}: FAIL ({seconds:.1} s)");
        for note in &notes {
            println!("  {note}");
        }
        for problem in &problems {
            println!("  - {problem}");
        }
        println!(
            "----- console log of boot test {name} ({}) -----\n{saved}----- end of console log of boot test {name} -----",
            log_path.display()
        );
    }
    Ok(problems)
}

/// Builds the test system with a kernel built for tests; returns its Image
/// (`<target>/moat/system-faultydma-test-hooks.Image`).
pub fn build(workspace: &Workspace) -> Result<PathBuf> {
    let paths = SystemPaths::other_system(workspace, &workspace.root.join(MANIFEST_PATH));
    workspace::build_test_hooks_system(workspace, &paths)
}

/// Runs both boots of `image` (from [`build`]); `realm_sim` `None` (it did not build) leaves
/// the Realm run out as failed. Returns (what, passed) for the summary.
pub fn run_tests(
    image: &Path,
    realm_sim: Option<&Path>,
    log_dir: &Path,
    timeout: Duration,
) -> Vec<(String, bool)> {
    let mut results = Vec::new();
    let runs: [(&str, bool); 2] = [("faultydma-realm", true), ("faultydma-plain", false)];
    for (name, realm) in runs {
        let sim = if realm {
            match realm_sim {
                Some(path) => Some(path),
                None => {
                    println!("boot test {name}: FAIL (realm-sim did not build)");
                    results.push((format!("boot test {name}"), false));
                    continue;
                }
            }
        } else {
            None
        };
        let passed = match run_one(name, image, sim, log_dir, timeout) {
            Ok(problems) => problems.is_empty(),
            Err(error) => {
                println!("boot test {name}: FAIL: {error:#}");
                false
            }
        };
        results.push((format!("boot test {name}"), passed));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 0x5eed_0123_4567_89ab;

    fn report() -> ReportLine {
        ReportLine {
            seed: SEED,
            sector: 4,
            address: RAM_BASE + 0x10_0000,
        }
    }

    #[test]
    fn a_realm_run_passes_only_when_the_secret_stayed_private() {
        let secret = secret(SEED);
        let disk = vec![0u8; 16 * SECTOR_BYTES];
        let host = 0;
        // The device wrote host bytes (zeros), the secret is in private memory: pass.
        assert!(realm_problems(&report(), &disk, host, Some(&secret)).is_empty());

        // The secret in the sector (the device read private memory): fails, and the
        // whole-disk scan sees it too.
        let mut leaked = disk.clone();
        leaked[4 * SECTOR_BYTES..5 * SECTOR_BYTES].copy_from_slice(&secret);
        assert_eq!(
            realm_problems(&report(), &leaked, host, Some(&secret)).len(),
            2
        );
        // Part of the secret elsewhere on the disk: fails.
        let mut partial = disk.clone();
        partial[100..164].copy_from_slice(&secret[8..72]);
        assert_eq!(
            realm_problems(&report(), &partial, host, Some(&secret)).len(),
            1
        );
        // The secret in host memory (e.g. the buffer was shared memory): fails.
        let problems = realm_problems(&report(), &disk, 1, Some(&secret));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("host memory"));
        // Not in private memory at the address (wrong address, or not private): fails, so the
        // test can fail.
        let problems = realm_problems(&report(), &disk, host, Some(&[0u8; SECTOR_BYTES]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("proves nothing"));
        assert_eq!(realm_problems(&report(), &disk, host, None).len(), 1);
        // A disk too small for the sector is a problem, not a panic.
        assert_eq!(
            realm_problems(&report(), &disk[..SECTOR_BYTES], host, Some(&secret)).len(),
            1
        );
    }

    #[test]
    fn the_host_scan_reads_only_host_memory() {
        let dir = std::env::temp_dir().join(format!("xtask-faulty-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ram");
        let layout = Layout::for_ram(1 << 20);
        let secret = secret(SEED);
        let mut bytes = vec![0u8; 2 << 20];
        // In private memory only: not counted.
        bytes[(1 << 20) + 8192..(1 << 20) + 8192 + SECTOR_BYTES].copy_from_slice(&secret);
        fs::write(&path, &bytes).unwrap();
        let mut file = File::open(&path).unwrap();
        assert_eq!(count_in_host(&mut file, &layout, SEED).unwrap(), 0);
        // Straddling the end of host memory: not wholly in it, not counted; wholly in it: counted.
        bytes[(1 << 20) - 30..(1 << 20) + 34].copy_from_slice(&secret[8..72]);
        bytes[4096..4096 + SECTOR_BYTES].copy_from_slice(&secret);
        fs::write(&path, &bytes).unwrap();
        let mut file = File::open(&path).unwrap();
        assert_eq!(count_in_host(&mut file, &layout, SEED).unwrap(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_plain_control_needs_the_secret_on_the_disk() {
        let mut disk = vec![0u8; 16 * SECTOR_BYTES];
        assert_eq!(plain_problems(&report(), &disk).len(), 1);
        disk[4 * SECTOR_BYTES..5 * SECTOR_BYTES].copy_from_slice(&secret(SEED));
        assert!(plain_problems(&report(), &disk).is_empty());
        // Another seed's secret is not this one.
        let other = ReportLine {
            seed: SEED ^ 1,
            ..report()
        };
        assert_eq!(plain_problems(&other, &disk).len(), 1);
        assert_eq!(plain_problems(&report(), &disk[..SECTOR_BYTES]).len(), 1);
    }

    #[test]
    fn the_test_help_lists_both_boots() {
        for name in ["faultydma-realm", "faultydma-plain", MANIFEST_PATH] {
            assert!(crate::args::TEST_HELP.contains(name), "{name}");
        }
    }

    #[test]
    fn each_mode_expects_its_own_verdict() {
        let realm = expectations(true);
        let plain = expectations(false);
        let plain_leak = task_line(PLAIN_LEAK);
        assert!(realm.forbidden.contains(&PLAIN_LEAK));
        assert!(plain.forbidden.contains(&REALM_PASS));
        assert!(!realm.forbidden.contains(&REALM_PASS));
        assert!(realm.forbidden.contains(&"realm-sim: error"));
        let log = format!(
            "realm-sim: Realm RAM 512 MiB at IPA 0x40000000, private at PA 0x60000000\n\
             realm: Arm CCA Realm, RSI 1.0\nmoat: boot self-check passed\ntasks: 3 started\n\
             faultydma: seed 0x1 sector 2048 private address 0x40100000\n{plain_leak}\n"
        );
        assert!(console::forbidden_seen(&log, &realm));
        assert!(!console::steps_matched(&log, &realm));
    }
}
