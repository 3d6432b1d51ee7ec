//! The block systems: persistence across boots, the driver killed mid-workload, and the block
//! benchmark.
//!
//! `cargo xtask test` runs [`run_tests`] (plain guest at EL1):
//! - **persistence** (build/system-blk-persist.toml): two boots over one fresh disk image.
//!   `blkcheck-persist` verifies whatever pattern an earlier boot left before it writes
//!   anything, then writes the pattern of a fresh per-boot seed and prints it. The first boot
//!   must find no earlier pattern; the second must verify exactly the seed the first one wrote
//!   and then write another; after each boot the image is read here and must hold that boot's
//!   pattern in every sector.
//! - **restart** (build/system-blk-kill.toml), as the plain guest and again as a Realm under
//!   realm-sim: `blkkill` kills the driver mid-workload and checks the recovery and the DMA
//!   reclaim itself; the test expects its report lines in order, the supervisor's restart, and
//!   exit status 0 (blkkill powers off with its failure count).
//!
//! `cargo xtask bench` runs [`bench`]: build/system-blk-bench.toml as the plain guest and as a
//! Realm under realm-sim, virtio-blk with `cache=unsafe`, a 64 MiB disk; `blkbench` prints
//! `moat-bench: NAME = VALUE` lines, which become results (`realm_` in front for the Realm).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::boot_tests::{GRACE, should_stop};
use crate::console::{self, Ending, Expectations, ExpectedExit, Step};
use crate::qemu::{self, Captured, Mode, Setup};
use crate::system::{self, SystemPaths};
use crate::workspace::{self, Workspace};

/// The persistence system's manifest, relative to the workspace root.
pub const PERSIST_MANIFEST_PATH: &str = "build/system-blk-persist.toml";
/// The restart test's manifest.
pub const KILL_MANIFEST_PATH: &str = "build/system-blk-kill.toml";
/// The block benchmark's manifest.
pub const BENCH_MANIFEST_PATH: &str = "build/system-blk-bench.toml";

/// Lines no healthy boot prints.
const KERNEL_FAILURES: [&str; 2] = ["KERNEL FAULT", "KERNEL PANIC"];

/// What blkcheck-persist prints.
const PERSIST: &str = "blkcheck-persist: ";

/// The expectations of one persistence boot: the first finds no earlier pattern, a later one
/// verifies `earlier` (the seed the boot before it wrote); then a pass with a seed.
pub fn persist_boot(tasks: usize, earlier: Option<u64>) -> Expectations {
    let found = match earlier {
        None => format!("{PERSIST}no earlier pattern"),
        Some(seed) => format!("{PERSIST}earlier pattern verified, seed {seed:#018x}"),
    };
    let mut forbidden = KERNEL_FAILURES.to_vec();
    forbidden.push("blkcheck-persist: ERROR");
    Expectations {
        steps: vec![
            Step::line(format!("tasks: {tasks} started")),
            Step::line(found),
            Step::new(&[&[PERSIST, "PASS", "seed 0x"]]),
            Step::line("moat: ready"),
        ],
        forbidden,
        checks: vec![],
        exit: ExpectedExit::SuccessOrStopped,
    }
}

/// The seed on blkcheck-persist's `PASS … seed 0x…` line.
pub fn written_seed(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .find(|line| line.contains(PERSIST) && line.contains("PASS"))?;
    let hex = line.rsplit_once("seed 0x")?.1;
    let digits: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&digits, 16).ok()
}

/// Every sector of `disk` must hold the pattern of `seed`.
pub fn image_problems(disk: &Path, seed: u64) -> Vec<String> {
    let image = match fs::read(disk) {
        Ok(image) => image,
        Err(error) => return vec![format!("reading disk image {}: {error}", disk.display())],
    };
    if image.is_empty() || image.len() % blkcheck::SECTOR != 0 {
        return vec![format!(
            "disk image {} is {} bytes, not whole sectors",
            disk.display(),
            image.len()
        )];
    }
    match blkcheck::first_mismatch_seeded(seed, 0, &image) {
        None => Vec::new(),
        Some(at) => vec![format!(
            "disk image {}: sector {} byte {} does not hold the pattern of seed {seed:#x}",
            disk.display(),
            at / blkcheck::SECTOR,
            at % blkcheck::SECTOR
        )],
    }
}

/// What the restart test must print: blkkill's report in order (each line is printed by the
/// task after it checked what it says), the supervisor's restart, blkkill's pass, exit 0.
pub fn kill_boot(tasks: usize) -> Expectations {
    let mut forbidden = KERNEL_FAILURES.to_vec();
    forbidden.push("blkkill: ERROR");
    Expectations {
        steps: vec![
            Step::line(format!("tasks: {tasks} started")),
            Step::line("blkkill: warm-up written and verified"),
            // The supervisor (more urgent) may act before blkkill prints its line; its lines
            // are printed after the DMA server's revoke and the kernel's restart.
            Step::new(&[
                &["blkkill: killed the driver", "requests in flight"],
                &["supervisor: task ", "ended: killed"],
                &["supervisor: task ", "DMA slot(s) quarantined"],
                &["supervisor: restarted task"],
            ]),
            Step::new(&[&[
                "blkkill: ",
                "requests lost (request lost)",
                "driver back as instance",
            ]]),
            Step::line("blkkill: after the restart: "),
            Step::new(&[&[
                "blkkill: DMA pool reclaimed",
                "quarantine 0",
                "all by live grants",
            ]]),
            Step::line("blkkill: PASS"),
            Step::line("moat: system off requested by blkkill (status 0)"),
        ],
        forbidden,
        checks: vec![],
        exit: ExpectedExit::Success,
    }
}

/// The QEMU setup of a plain guest at EL1 with `disk`.
fn plain(disk: &Path) -> Setup {
    Setup::Full {
        disk: disk.to_path_buf(),
        mode: Mode::Plain { el2: false },
        gdb: false,
        kernel_args: vec![],
    }
}

/// Boots `image` with `setup` until `expected` is met (or it exits, fails or times out);
/// saves the console log as `<log_dir>/<name>.log`.
fn boot(
    name: &str,
    image: &Path,
    setup: &Setup,
    expected: &Expectations,
    log_dir: &Path,
    timeout: Duration,
) -> Result<Captured> {
    let command = qemu::command(image, setup);
    let text = qemu::command_text(&command);
    println!("blk test {name} ...");
    let captured = qemu::run_until(command, timeout, &|log| should_stop(log, expected), GRACE)?;
    let path = log_dir.join(format!("{name}.log"));
    fs::write(
        &path,
        format!(
            "$ {text}\n{}\n[{}]\n",
            captured.log,
            captured.ending.describe(timeout.as_secs())
        ),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(captured)
}

/// Prints a test's verdict (and the console log when it failed); returns whether it passed.
fn report(name: &str, problems: &[String], logs: &[&Captured]) -> bool {
    if problems.is_empty() {
        println!("blk test {name}: PASS");
        return true;
    }
    println!("blk test {name}: FAIL");
    for problem in problems {
        println!("  - {problem}");
    }
    for captured in logs {
        println!(
            "----- console log -----\n{}\n----- end of console log -----",
            captured.log
        );
    }
    false
}

/// The two persistence boots over a fresh disk image.
fn persistence(image: &Path, tasks: usize, log_dir: &Path, timeout: Duration) -> Result<bool> {
    let disk = log_dir.join("blk-persist-disk.img");
    workspace::remove_if_present(&disk)?;
    workspace::ensure_disk(&disk)?;
    let setup = plain(&disk);
    let first_expected = persist_boot(tasks, None);
    let first = boot(
        "blk-persist-1",
        image,
        &setup,
        &first_expected,
        log_dir,
        timeout,
    )?;
    let mut problems = console::judge(&first.log, first.ending, &first_expected);
    let Some(seed) = written_seed(&first.log) else {
        problems.push("the first boot printed no seed".into());
        return Ok(report("persistence", &problems, &[&first]));
    };
    problems.extend(image_problems(&disk, seed));
    if !problems.is_empty() {
        return Ok(report("persistence", &problems, &[&first]));
    }
    let second_expected = persist_boot(tasks, Some(seed));
    let second = boot(
        "blk-persist-2",
        image,
        &setup,
        &second_expected,
        log_dir,
        timeout,
    )?;
    let mut problems = console::judge(&second.log, second.ending, &second_expected);
    match written_seed(&second.log) {
        Some(again) if again == seed => {
            problems.push(format!("the second boot wrote the same seed {seed:#x}"));
        }
        Some(again) => problems.extend(image_problems(&disk, again)),
        None => problems.push("the second boot printed no seed".into()),
    }
    if problems.is_empty() {
        println!("  the second boot verified seed {seed:#018x}, written by the first");
    }
    Ok(report("persistence", &problems, &[&first, &second]))
}

/// The restart test, as the plain guest or (with realm-sim's ELF) as a Realm under realm-sim.
fn restart(
    image: &Path,
    tasks: usize,
    realm_sim: Option<&Path>,
    log_dir: &Path,
    timeout: Duration,
) -> Result<bool> {
    let name = if realm_sim.is_some() {
        "blk-kill-realm"
    } else {
        "blk-kill"
    };
    let disk = log_dir.join(format!("{name}-disk.img"));
    workspace::ensure_disk(&disk)?;
    let ram_file = log_dir.join(format!("{name}.ram"));
    let setup = match realm_sim {
        None => plain(&disk),
        Some(realm_sim) => {
            workspace::remove_if_present(&ram_file)?;
            Setup::Full {
                disk: disk.clone(),
                mode: Mode::Realm(qemu::Realm {
                    realm_sim: realm_sim.to_path_buf(),
                    ram_file: ram_file.clone(),
                    stress_host: false,
                }),
                gdb: false,
                kernel_args: vec![],
            }
        }
    };
    let expected = kill_boot(tasks);
    let captured = boot(name, image, &setup, &expected, log_dir, timeout)?;
    workspace::remove_if_present(&ram_file)?;
    let problems = console::judge(&captured.log, captured.ending, &expected);
    if problems.is_empty() {
        for line in captured
            .log
            .lines()
            .filter(|line| line.contains("blkkill: "))
        {
            println!("  {line}");
        }
    }
    Ok(report(name, &problems, &[&captured]))
}

/// Builds the system at `manifest` (relative to the root): its Image and task count.
fn build(workspace: &Workspace, manifest: &str) -> Result<(PathBuf, usize)> {
    let paths = SystemPaths::other_system(workspace, &workspace.root.join(manifest));
    let image = workspace::build_system(workspace, &paths)
        .with_context(|| format!("building {manifest}"))?;
    let tasks = system::load_manifest(&paths)?.tasks.len();
    Ok((image, tasks))
}

/// `cargo xtask test`'s block tests: (what, passed) for the summary. Persistence and the
/// restart test as the plain guest, the restart test again as a Realm under realm-sim.
pub fn run_tests(workspace: &Workspace, log_dir: &Path, timeout: Duration) -> Vec<(String, bool)> {
    let mut results = Vec::new();
    let mut record = |what: String, outcome: Result<bool>| match outcome {
        Ok(passed) => results.push((what, passed)),
        Err(error) => {
            println!("xtask: {what}: {error:#}");
            results.push((what, false));
        }
    };
    if let Err(error) = fs::create_dir_all(log_dir) {
        record("block tests".into(), Err(error.into()));
        return results;
    }
    record(
        format!("block persistence across boots ({PERSIST_MANIFEST_PATH})"),
        build(workspace, PERSIST_MANIFEST_PATH)
            .and_then(|(image, tasks)| persistence(&image, tasks, log_dir, timeout)),
    );
    match build(workspace, KILL_MANIFEST_PATH) {
        Err(error) => record(
            format!("block driver killed mid-workload ({KILL_MANIFEST_PATH})"),
            Err(error),
        ),
        Ok((image, tasks)) => {
            record(
                format!("block driver killed mid-workload ({KILL_MANIFEST_PATH})"),
                restart(&image, tasks, None, log_dir, timeout),
            );
            record(
                format!("block driver killed mid-workload, Realm ({KILL_MANIFEST_PATH})"),
                workspace::build_realm_sim(workspace).and_then(|realm_sim| {
                    restart(&image, tasks, Some(&realm_sim), log_dir, timeout)
                }),
            );
        }
    }
    results
}

/// Timeout of one benchmark boot.
const BENCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether blkbench has failed (it then cannot power the system off): stop waiting.
fn bench_failed(log: &str) -> bool {
    ["blkbench: ERROR", "blkbench: PANIC", "task blkbench exited"]
        .iter()
        .any(|needle| log.contains(needle))
}

/// `arguments` (from [`qemu::arguments`]) with the disk opened `cache=unsafe` (the host's page
/// cache absorbs writes and flushes are not waited for: the figures are the guest's path, not
/// the host's disk).
pub fn with_unsafe_cache(mut arguments: Vec<String>) -> Vec<String> {
    for argument in &mut arguments {
        if argument.starts_with("if=none,id=disk0,") && !argument.contains("cache=") {
            argument.push_str(",cache=unsafe");
        }
    }
    arguments
}

/// The results on a benchmark console log: `moat-bench:` lines (the task's name may come
/// first), each name with `prefix` in front.
pub fn bench_results(log: &str, prefix: &str) -> Vec<(String, f64)> {
    let lines: String = log
        .lines()
        .filter_map(|line| line.find("moat-bench:").map(|at| &line[at..]))
        .map(|line| format!("{line}\n"))
        .collect();
    crate::bench::result_lines(&lines)
        .into_iter()
        .map(|(name, value)| (format!("{prefix}{name}"), value))
        .collect()
}

/// `cargo xtask bench`'s block figures: the plain guest's, then the Realm's (`realm_…`).
pub fn bench(workspace: &Workspace) -> Result<Vec<(String, f64)>> {
    qemu::ensure_installed()?;
    let (image, _) = build(workspace, BENCH_MANIFEST_PATH)?;
    let realm_sim = workspace::build_realm_sim(workspace)?;
    let output = workspace.output_dir();
    let disk = output.join("bench-blk-disk.img");
    workspace::ensure_disk(&disk)?;
    let ram_file = output.join("bench-blk-realm-ram.bin");
    let mut results = Vec::new();
    for (prefix, mode) in [
        ("", Mode::Plain { el2: false }),
        (
            "realm_",
            Mode::Realm(qemu::Realm {
                realm_sim: realm_sim.clone(),
                ram_file: ram_file.clone(),
                stress_host: false,
            }),
        ),
    ] {
        workspace::remove_if_present(&ram_file)?;
        let setup = Setup::Full {
            disk: disk.clone(),
            mode,
            gdb: false,
            kernel_args: vec![],
        };
        let mut command = std::process::Command::new(qemu::QEMU);
        command.args(with_unsafe_cache(qemu::arguments(&image, &setup)));
        println!("$ {}", qemu::command_text(&command));
        let captured = qemu::run_until(command, BENCH_TIMEOUT, &bench_failed, GRACE)?;
        workspace::remove_if_present(&ram_file)?;
        for line in captured
            .log
            .lines()
            .filter(|line| line.contains("blkbench: "))
        {
            println!(
                "{}{line}",
                if prefix.is_empty() {
                    "plain: "
                } else {
                    "realm: "
                }
            );
        }
        let values = bench_results(&captured.log, prefix);
        let failed = bench_failed(&captured.log)
            || captured.ending != Ending::Exited(0)
            || values.is_empty();
        anyhow::ensure!(
            !failed,
            "blkbench ({}) failed ({:?}); console:\n{}",
            if prefix.is_empty() { "plain" } else { "Realm" },
            captured.ending,
            captured.log
        );
        results.extend(values);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn persist_log(earlier: Option<u64>, seed: u64) -> String {
        let found = match earlier {
            None => "blkcheck-persist: no earlier pattern on the disk\n".to_string(),
            Some(s) => format!(
                "blkcheck-persist: earlier pattern verified, seed {s:#018x}: 65536 KiB in 700 ms, before writing\n"
            ),
        };
        format!(
            "tasks: 4 started\n{found}blkcheck-persist: PASS 65536 KiB in 1032 requests (512 B..256 KiB, up to 32 in flight): write 1.0 MB/s, read+verify 1.0 MB/s, flush 1 us, seed {seed:#018x}\n\
             moat: ready (4 tasks, 1 KiB of RAM in use)\n"
        )
    }

    #[test]
    fn persistence_boots_need_the_earlier_seed() {
        let first = persist_boot(4, None);
        let log = persist_log(None, 0x1234);
        assert!(console::judge(&log, Ending::Stopped, &first).is_empty());
        assert!(should_stop(&log, &first));
        assert_eq!(written_seed(&log), Some(0x1234));
        let second = persist_boot(4, Some(0x1234));
        let good = persist_log(Some(0x1234), 0x99);
        assert!(console::judge(&good, Ending::Stopped, &second).is_empty());
        // A second boot that verified another seed (stale data), or found nothing, fails.
        let stale = persist_log(Some(0x1235), 0x99);
        assert!(!console::judge(&stale, Ending::Stopped, &second).is_empty());
        assert!(!console::judge(&log, Ending::Stopped, &second).is_empty());
        let broken = good.replace(
            "moat: ready",
            "blkcheck-persist: ERROR: sector 5: byte 8 differs\nmoat: ready",
        );
        assert!(!console::judge(&broken, Ending::Stopped, &second).is_empty());
        assert_eq!(written_seed("blkcheck-persist: PASS no seed\n"), None);
    }

    #[test]
    fn the_image_must_hold_the_seeded_pattern() {
        let dir = std::env::temp_dir().join(format!("moat-blk-persist-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let disk = dir.join("disk.img");
        let mut image = vec![0u8; 16 * blkcheck::SECTOR];
        blkcheck::fill_seeded(77, 0, &mut image);
        fs::write(&disk, &image).expect("write");
        assert!(image_problems(&disk, 77).is_empty());
        assert_eq!(image_problems(&disk, 78).len(), 1);
        image[9 * blkcheck::SECTOR + 100] ^= 1;
        fs::write(&disk, &image).expect("write");
        let problems = image_problems(&disk, 77);
        assert!(problems[0].contains("sector 9 byte 100"), "{problems:?}");
        assert_eq!(image_problems(&dir.join("missing"), 77).len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_restart_test_needs_every_report_line_and_exit_zero() {
        let expected = kill_boot(4);
        let log = "tasks: 4 started\n\
                   blkkill: warm-up written and verified; driver holds 646 DMA slots (54 grants)\n\
                   supervisor: task 2 (2.0) ended: killed, detail 0x0\n\
                   blkkill: killed the driver (instance 2.0) with 32 requests in flight\n\
                   supervisor: task 2: 678 DMA slot(s) quarantined\n\
                   supervisor: restarted task 2 as 2.1\n\
                   blkkill: 32 requests lost (request lost), 1 submits refused after the session ended (driver restarted: session lost); driver back as instance 2.1 after 28 ms\n\
                   blkkill: after the restart: 64 MiB written before and after the kill verified\n\
                   blkkill: DMA pool reclaimed: quarantine 0, reset done, the new instance holds 236 slots in 12 grants (the first held 136 when idle), pool 236 of 3072 slots used, all by live grants\n\
                   blkkill: PASS\n\
                   moat: system off requested by blkkill (status 0)\n";
        assert!(console::judge(log, Ending::Exited(0), &expected).is_empty());
        assert!(!console::judge(log, Ending::Exited(1), &expected).is_empty());
        let no_restart = log.replace("supervisor: restarted task 2 as 2.1\n", "");
        assert!(!console::judge(&no_restart, Ending::Exited(0), &expected).is_empty());
        let no_quarantine = log.replace("supervisor: task 2: 678 DMA slot(s) quarantined\n", "");
        assert!(!console::judge(&no_quarantine, Ending::Exited(0), &expected).is_empty());
        let failed = log.replace(
            "blkkill: PASS",
            "blkkill: ERROR: 32 requests were in flight at the kill, 0 reported lost",
        );
        assert!(should_stop(&failed, &expected));
        assert!(!console::judge(&failed, Ending::Exited(1), &expected).is_empty());
        let hung = log.split("blkkill: 32 requests").next().unwrap_or("");
        assert!(!console::judge(hung, Ending::TimedOut, &expected).is_empty());
    }

    #[test]
    fn bench_lines_become_results_and_the_disk_is_unsafe_cached() {
        let log = "blkbench: moat-bench: blk_read_4k_MBps = 12.34\n\
                   blkbench: blk_read_4k: 12.34 MB/s\n\
                   blkbench: moat-bench: blk_read_4k_dma_maps = 0\n";
        assert_eq!(
            bench_results(log, "realm_"),
            [
                ("realm_blk_read_4k_MBps".to_string(), 12.34),
                ("realm_blk_read_4k_dma_maps".to_string(), 0.0)
            ]
        );
        let arguments = qemu::arguments(Path::new("I"), &plain(Path::new("/d.img")));
        let cached = with_unsafe_cache(arguments).join(" ");
        assert!(
            cached.contains("-drive if=none,id=disk0,file=/d.img,format=raw,cache=unsafe "),
            "{cached}"
        );
    }
}
