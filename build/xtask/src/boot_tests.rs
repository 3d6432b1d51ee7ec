//! The QEMU boot tests `cargo xtask test` runs, and the runner that runs them two at a time
//! and judges them.
//!
//! Two systems are booted: the default one (build/system.toml, what `cargo xtask run` boots)
//! and the kernel test system (build/system-ktest.toml), whose `ktest` task checks IPC,
//! capabilities, faults and restarts from user space and powers off with the number of
//! failures as the exit status. The list of tests depends on how many tasks each system has
//! ([`boot_tests`]); a system with tasks whose servers keep serving never powers off by itself,
//! so its tests wait for `moat: ready` and then stop QEMU.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::console::{self, Expectations, ExpectedExit, Step};
use crate::qemu::{self, Mode, Setup};
use crate::realm;

/// Boot tests run at the same time (the CI machine has two cores; each QEMU uses one).
pub const PARALLEL: usize = 2;

/// How long a test keeps running after what it waits for has appeared (a fault right after
/// `moat: ready` is still seen), or after a forbidden line (to capture the whole report).
pub const GRACE: Duration = Duration::from_millis(1500);

/// Which system image a test boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// build/system.toml, what `cargo xtask run` boots.
    Default,
    /// build/system-ktest.toml, the kernel tests.
    Ktest,
    /// build/system.toml with a kernel built for tests (cargo feature `test-hooks`: test hooks
    /// honoured in a Realm).
    DefaultTestHooks,
}

/// How a boot test sets up QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// The plain guest (`cargo xtask run --no-realm`), entered at EL2 if `el2`, with extra
    /// kernel arguments.
    Plain {
        el2: bool,
        kernel_args: &'static [&'static str],
    },
    /// Booted as a Linux kernel would be: only `-kernel`.
    Bare,
    /// A Realm under realm-sim (`cargo xtask run`), in its stress mode if `stress_host`, with
    /// extra kernel arguments; `scan`: the confidentiality scan of the guest RAM file after
    /// the run.
    Realm {
        stress_host: bool,
        kernel_args: &'static [&'static str],
        scan: bool,
    },
}

/// One boot test.
#[derive(Debug, Clone)]
pub struct BootTest {
    /// Short name, used in the summary and the log file name.
    pub name: &'static str,
    /// The image it boots.
    pub system: System,
    /// The QEMU setup.
    pub guest: Guest,
    /// What the console and exit must look like.
    pub expected: Expectations,
}

/// The built images.
#[derive(Debug, Clone)]
pub struct Images {
    /// The default system's Image.
    pub default: PathBuf,
    /// The kernel test system's Image, if it built.
    pub ktest: Option<PathBuf>,
    /// The default system with a `test-hooks` kernel, if it built.
    pub test_hooks: Option<PathBuf>,
    /// realm-sim's ELF, if it built.
    pub realm_sim: Option<PathBuf>,
}

impl Images {
    /// The Image `system` boots, if it built.
    pub fn image(&self, system: System) -> Option<&Path> {
        match system {
            System::Default => Some(self.default.as_path()),
            System::Ktest => self.ktest.as_deref(),
            System::DefaultTestHooks => self.test_hooks.as_deref(),
        }
    }

    /// Whether everything `test` needs was built.
    pub fn can_run(&self, test: &BootTest) -> bool {
        self.image(test.system).is_some()
            && (!matches!(test.guest, Guest::Realm { .. }) || self.realm_sim.is_some())
    }
}

/// Lines no healthy boot prints.
const KERNEL_FAILURES: [&str; 2] = ["KERNEL FAULT", "KERNEL PANIC"];

/// The banner and exception level, then what every successful boot of the full guest prints.
fn full_boot(el: &str) -> Vec<Step> {
    vec![
        Step::line("Moat "),
        Step::line(format!("entered at {el}")),
        Step::line("memory map:"),
        Step::line("devices:"),
        Step::new(&[&["virtio-mmio", "block"], &["virtio-mmio", "network"]]),
        Step::line("moat: boot self-check passed"),
    ]
}

/// What follows the self-check: the tasks start and reach their serve loops, or, without
/// tasks, the kernel says so (and powers off). Also how such a boot ends.
fn system_start(tasks: usize) -> (Vec<Step>, ExpectedExit) {
    if tasks == 0 {
        (vec![Step::line("no system archive")], ExpectedExit::Success)
    } else {
        (
            vec![
                Step::line(format!("tasks: {tasks} started")),
                Step::line("moat: ready"),
            ],
            ExpectedExit::SuccessOrStopped,
        )
    }
}

/// A boot of the default system, entered at EL1 or EL2.
/// The default system's blkcheck writes its pattern over the whole disk, reads it back and
/// says `blkcheck: PASS` before the system is ready (it stays runnable until it is done); after
/// the run `run_one` checks the disk image itself ([`disk_pattern_problems`]).
const BLKCHECK_PASS: &str = "blkcheck: PASS";

/// Lines of a failing blkcheck.
const BLKCHECK_FAILURES: [&str; 1] = ["blkcheck: ERROR"];

/// The demo's check of 1 KiB from the virtio-rng driver (before `moat: ready`; in any order
/// with blkcheck's pass), and its failure.
const RNG_PASS: &str = "rng: PASS";
const RNG_FAIL: &str = "rng: FAIL";

/// What the default system's workloads print before `moat: ready`.
fn workloads_passed() -> Step {
    Step::new(&[&[BLKCHECK_PASS], &[RNG_PASS]])
}

fn default_boot(name: &'static str, el2: bool, tasks: usize) -> BootTest {
    let mut steps = full_boot(if el2 { "EL2" } else { "EL1" });
    let (mut start, exit) = system_start(tasks);
    let mut forbidden = KERNEL_FAILURES.to_vec();
    if tasks > 0 {
        // Between `tasks: N started` and `moat: ready`.
        start.insert(1, workloads_passed());
        forbidden.extend(BLKCHECK_FAILURES);
        forbidden.push(RNG_FAIL);
    }
    steps.extend(start);
    BootTest {
        name,
        system: System::Default,
        guest: Guest::Plain {
            el2,
            kernel_args: &[],
        },
        expected: Expectations {
            steps,
            forbidden,
            checks: vec![],
            exit,
        },
    }
}

/// After a boot whose console says blkcheck passed: every sector of the disk image must hold
/// blkcheck's pattern, read here on the host (the data really reached the host's disk, not
/// only a cache in the guest).
pub fn disk_pattern_problems(log: &str, disk: &Path) -> Vec<String> {
    if !log.contains(BLKCHECK_PASS) {
        return Vec::new();
    }
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
    match blkcheck::first_mismatch(0, &image) {
        None => Vec::new(),
        Some(at) => vec![format!(
            "disk image {}: sector {} byte {} does not hold blkcheck's pattern",
            disk.display(),
            at / blkcheck::SECTOR,
            at % blkcheck::SECTOR
        )],
    }
}

/// A boot of the kernel test system: every check passes and it powers off with status 0.
fn ktest_boot(name: &'static str, el2: bool, tasks: usize) -> BootTest {
    let mut steps = full_boot(if el2 { "EL2" } else { "EL1" });
    steps.push(Step::line(format!("tasks: {tasks} started")));
    // `moat: ready` comes when every task waits in its serve loop, which may be before or
    // after the last check.
    steps.push(Step::new(&[&["moat: ready"], &["ktest: all ", " passed"]]));
    let mut forbidden = KERNEL_FAILURES.to_vec();
    forbidden.push("ktest: FAIL");
    BootTest {
        name,
        system: System::Ktest,
        guest: Guest::Plain {
            el2,
            kernel_args: &[],
        },
        expected: Expectations {
            steps,
            forbidden,
            checks: vec![ktest_summary],
            exit: ExpectedExit::Success,
        },
    }
}

/// Checks that `ktest: all N passed` counts exactly the distinct `ktest: PASS <name>` lines
/// (so no check was skipped silently) and that there was at least one.
pub fn ktest_summary(log: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut passed: Vec<&str> = log
        .lines()
        .filter_map(|line| line.split_once("ktest: PASS "))
        .map(|(_, name)| name.trim())
        .collect();
    let count = passed.len();
    passed.sort_unstable();
    passed.dedup();
    if passed.len() != count {
        problems.push(format!(
            "a ktest check passed twice ({count} PASS lines, {} distinct)",
            passed.len()
        ));
    }
    if count == 0 {
        problems.push("no `ktest: PASS` line".into());
    }
    let claimed = log.lines().find_map(|line| {
        let rest = &line[line.find("ktest: all ")? + "ktest: all ".len()..];
        rest.strip_suffix(" passed")?.trim().parse::<usize>().ok()
    });
    if let Some(claimed) = claimed
        && claimed != count
    {
        problems.push(format!(
            "`ktest: all {claimed} passed`, but {count} `ktest: PASS` lines"
        ));
    }
    problems
}

/// A fault hook on the kernel command line (on the default system; it fires before any task
/// starts): the fault report and a non-zero exit, never the end of the self-check.
fn fault_boot(name: &'static str, hook: &'static [&'static str], report: &[&[&str]]) -> BootTest {
    let mut steps = vec![Step::line("Moat "), Step::line("test hook: fault=")];
    steps.extend(report.iter().map(|pattern| Step::new(&[pattern])));
    BootTest {
        name,
        system: System::Default,
        guest: Guest::Plain {
            el2: false,
            kernel_args: hook,
        },
        expected: Expectations {
            steps,
            forbidden: vec!["moat: boot self-check passed"],
            checks: vec![],
            exit: ExpectedExit::Failure,
        },
    }
}

/// Lines no healthy Realm boot prints: realm-sim's own errors (it then powers off with status
/// 0, PSCI having no failure exit) and accesses it refused (an injected external abort).
const REALM_FAILURES: [&str; 2] = ["realm-sim: error", "realm-sim: refused"];

/// realm-sim's placement and measurement lines, then the banner (a Realm is entered at EL1)
/// and the kernel's Realm status up to its RIPAS RAM pass.
fn realm_start() -> Vec<Step> {
    vec![
        Step::line("realm-sim: Realm RAM"),
        Step::line("realm-sim: RIM sha256:"),
        Step::line("Moat "),
        Step::line("entered at EL1"),
        Step::line("realm: Arm CCA Realm, RSI 1.0"),
        Step::line(
            "realm: IPA width 39, shared bit 0x4000000000, hash Sha256, device addresses canonical",
        ),
        Step::line("realm: initial measurement "),
        Step::line("realm: command line measured into REM0"),
        Step::new(&[&["realm: RIPAS RAM over all memory in ", " RSI calls"]]),
    ]
}

/// The kernel test system as a Realm under realm-sim (in its stress mode if `stress_host`):
/// the Realm status lines, every ktest check passed, exit status 0, the kernel's initial
/// measurement equal to realm-sim's, and afterwards the confidentiality scan of the RAM file.
fn realm_ktest_boot(name: &'static str, stress_host: bool, tasks: usize) -> BootTest {
    let mut steps = realm_start();
    steps.extend([
        Step::line("memory map:"),
        Step::line("devices:"),
        Step::new(&[&["virtio-mmio", "block"], &["virtio-mmio", "network"]]),
        Step::line("moat: boot self-check passed"),
        Step::line("realm: manifest measured into REM0"),
        Step::line(format!("tasks: {tasks} started")),
        Step::new(&[&["moat: ready"], &["ktest: all ", " passed"]]),
    ]);
    let mut forbidden = KERNEL_FAILURES.to_vec();
    forbidden.extend(REALM_FAILURES);
    forbidden.push("ktest: FAIL");
    let mut checks: Vec<console::LogCheck> =
        vec![ktest_summary, realm::initial_measurement_matches];
    if stress_host {
        checks.push(realm::stress_mode_in_force);
    }
    BootTest {
        name,
        system: System::Ktest,
        guest: Guest::Realm {
            stress_host,
            kernel_args: &[],
            scan: true,
        },
        expected: Expectations {
            steps,
            forbidden,
            checks,
            exit: ExpectedExit::Success,
        },
    }
}

/// The default system (the demo: the DMA server, blkcheck over the whole disk, dmastat) as a
/// Realm under realm-sim. After the run `run_one` checks the disk image on the host: the blocks
/// the OS deliberately wrote through its shared bounce buffers must be on the disk.
fn realm_demo_boot(name: &'static str, tasks: usize) -> BootTest {
    let mut steps = realm_start();
    steps.extend([
        Step::line("memory map:"),
        Step::line("devices:"),
        Step::new(&[&["virtio-mmio", "block"], &["virtio-mmio", "network"]]),
        Step::line("moat: boot self-check passed"),
        Step::line("realm: manifest measured into REM0"),
        Step::line(format!("tasks: {tasks} started")),
        workloads_passed(),
        Step::line("moat: ready"),
    ]);
    let mut forbidden = KERNEL_FAILURES.to_vec();
    forbidden.extend(REALM_FAILURES);
    forbidden.extend(BLKCHECK_FAILURES);
    forbidden.push(RNG_FAIL);
    BootTest {
        name,
        system: System::Default,
        guest: Guest::Realm {
            stress_host: false,
            kernel_args: &[],
            scan: false,
        },
        expected: Expectations {
            steps,
            forbidden,
            checks: vec![realm::initial_measurement_matches],
            exit: ExpectedExit::SuccessOrStopped,
        },
    }
}

/// Fails if the kernel refused a test hook.
fn hook_not_refused(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("test hook:") && line.contains("refused"))
        .map(|line| format!("the test hook was refused: {line:?}"))
        .collect()
}

/// `fault=data-abort` in a Realm. The default kernel refuses the hook (a Realm's command line
/// comes from the host) and boots on as usual; a kernel built with `test-hooks` faults.
fn realm_hook_boot(name: &'static str, test_hooks: bool, tasks: usize) -> BootTest {
    let mut steps = realm_start();
    let mut checks: Vec<console::LogCheck> = vec![realm::initial_measurement_matches];
    let mut forbidden = REALM_FAILURES.to_vec();
    let exit = if test_hooks {
        steps.extend(
            [
                &["test hook: fault="][..],
                &["KERNEL FAULT"],
                &["data abort"],
                &["ELR"],
                &["x0 "],
            ]
            .map(|pattern| Step::new(&[pattern])),
        );
        forbidden.push("moat: boot self-check passed");
        checks.push(hook_not_refused);
        ExpectedExit::Failure
    } else {
        // The hook is handled before the self-check: once the tasks start (or, without
        // tasks, the kernel powers off) there is nothing more to learn here (el1 boots the
        // default system to `moat: ready`).
        steps.push(Step::new(&[&["test hook: fault=", "refused"]]));
        steps.push(Step::line("moat: boot self-check passed"));
        forbidden.extend(KERNEL_FAILURES);
        if tasks == 0 {
            steps.push(Step::line("no system archive"));
            ExpectedExit::Success
        } else {
            steps.push(Step::line("realm: manifest measured into REM0"));
            steps.push(Step::line(format!("tasks: {tasks} started")));
            ExpectedExit::SuccessOrStopped
        }
    };
    BootTest {
        name,
        system: if test_hooks {
            System::DefaultTestHooks
        } else {
            System::Default
        },
        guest: Guest::Realm {
            stress_host: false,
            kernel_args: &["fault=data-abort"],
            scan: false,
        },
        expected: Expectations {
            steps,
            forbidden,
            checks,
            exit,
        },
    }
}

/// Every boot test, in the order they start, for a default system of `default_tasks` tasks (0:
/// the kernel runs its self-check and powers off) and a kernel test system of `ktest_tasks`
/// (`None` when it did not build: its tests are left out, the build failure is reported on its
/// own).
pub fn boot_tests(default_tasks: usize, ktest_tasks: Option<usize>) -> Vec<BootTest> {
    let mut tests = Vec::new();
    // The slowest first, so the two workers finish at about the same time.
    if let Some(tasks) = ktest_tasks {
        tests.push(realm_ktest_boot("realm-ktest", false, tasks));
        tests.push(realm_ktest_boot("realm-ktest-stress", true, tasks));
        tests.push(ktest_boot("ktest-el1", false, tasks));
        tests.push(ktest_boot("ktest-el2", true, tasks));
    }
    if default_tasks > 0 {
        tests.push(realm_demo_boot("realm-demo", default_tasks));
    }
    tests.push(realm_hook_boot("realm-hook-refused", false, default_tasks));
    tests.push(realm_hook_boot(
        "realm-hook-test-build",
        true,
        default_tasks,
    ));
    tests.push(default_boot("el1", false, default_tasks));
    tests.push(default_boot("el2", true, default_tasks));
    tests.push(fault_boot(
        "fault-data-abort",
        &["fault=data-abort"],
        &[&["KERNEL FAULT"], &["data abort"], &["ELR"], &["x0 "]],
    ));
    tests.push(fault_boot(
        "fault-undef",
        &["fault=undef"],
        &[&["KERNEL FAULT"], &["unknown reason", "EC 0x00"], &["x0 "]],
    ));
    tests.push(fault_boot(
        "fault-panic",
        &["fault=panic"],
        &[&["KERNEL PANIC", "test hook: fault=panic"]],
    ));
    tests.push(fault_boot(
        "fault-stack-overflow",
        &["fault=stack-overflow"],
        &[&["KERNEL FAULT"], &["kernel stack overflow"], &["x0 "]],
    ));
    tests.push(fault_boot(
        "fault-write-text",
        &["fault=write-text"],
        &[
            &["KERNEL FAULT"],
            &["permission fault", "on write"],
            &["x0 "],
        ],
    ));
    // Without semihosting the kernel ends through PSCI SYSTEM_OFF (status 0).
    let (start, exit) = system_start(default_tasks);
    let mut steps = vec![
        Step::line("Moat "),
        Step::line("entered at EL1"),
        Step::line("moat: boot self-check passed"),
    ];
    steps.extend(start);
    tests.push(BootTest {
        name: "bare",
        system: System::Default,
        guest: Guest::Bare,
        expected: Expectations {
            steps,
            forbidden: KERNEL_FAILURES.to_vec(),
            checks: vec![],
            exit,
        },
    });
    tests
}

/// The result of one boot test.
#[derive(Debug)]
pub struct Outcome {
    /// The test's name.
    pub name: &'static str,
    /// Empty when it passed.
    pub problems: Vec<String>,
    /// How long QEMU ran.
    pub elapsed: Duration,
}

/// QEMU's setup for `guest` with `disk` as its virtio-blk disk; a Realm boots `realm_sim`
/// with guest RAM in `ram_file`.
fn setup_for(guest: Guest, disk: &Path, realm_sim: &Path, ram_file: &Path) -> Setup {
    let full = |mode: Mode, kernel_args: &[&str]| Setup::Full {
        disk: disk.to_path_buf(),
        mode,
        gdb: false,
        kernel_args: kernel_args
            .iter()
            .map(|argument| argument.to_string())
            .collect(),
    };
    match guest {
        Guest::Plain { el2, kernel_args } => full(Mode::Plain { el2 }, kernel_args),
        Guest::Realm {
            stress_host,
            kernel_args,
            ..
        } => full(
            Mode::Realm(qemu::Realm {
                realm_sim: realm_sim.to_path_buf(),
                ram_file: ram_file.to_path_buf(),
                stress_host,
            }),
            kernel_args,
        ),
        Guest::Bare => Setup::Bare,
    }
}

/// When to stop QEMU before it exits: the test has seen what it waits for (only a test whose
/// system keeps serving), or a forbidden line (it has failed).
pub fn should_stop(log: &str, expected: &Expectations) -> bool {
    console::forbidden_seen(log, expected)
        || (expected.exit == ExpectedExit::SuccessOrStopped
            && console::steps_matched(log, expected))
}

/// Runs one test with `disk` as its virtio-blk disk; returns its outcome and the report to
/// print (PASS, or FAIL with the problems and the whole console log). A Realm test's guest RAM
/// is `<log_dir>/<test>.ram`, made fresh; it is scanned if the test asks for it and removed
/// when the test passes (kept for a look when it fails).
fn run_one(
    test: &BootTest,
    image: &Path,
    realm_sim: &Path,
    disk: &Path,
    log_dir: &Path,
    timeout: Duration,
) -> Result<(Outcome, String)> {
    let ram_file = log_dir.join(format!("{}.ram", test.name));
    let realm = matches!(test.guest, Guest::Realm { .. });
    if realm {
        crate::workspace::remove_if_present(&ram_file)?;
    }
    let command = qemu::command(image, &setup_for(test.guest, disk, realm_sim, &ram_file));
    let command_text = qemu::command_text(&command);
    let captured = qemu::run_until(
        command,
        timeout,
        &|log| should_stop(log, &test.expected),
        GRACE,
    )?;
    let mut problems = console::judge(&captured.log, captured.ending, &test.expected);
    problems.extend(disk_pattern_problems(&captured.log, disk));
    let mut notes = Vec::new();
    if let Guest::Realm { scan: true, .. } = test.guest {
        match realm::confidentiality_check(&captured.log, &ram_file, image) {
            Ok((scan_problems, summary)) => {
                problems.extend(scan_problems);
                if !summary.is_empty() {
                    notes.push(format!(
                        "confidentiality scan of {}: {summary}",
                        ram_file.display()
                    ));
                }
            }
            Err(error) => problems.push(format!("confidentiality scan: {error:#}")),
        }
    }
    if realm {
        if problems.is_empty() {
            crate::workspace::remove_if_present(&ram_file)?;
        } else {
            notes.push(format!("guest RAM kept in {}", ram_file.display()));
        }
    }
    let log_path = log_dir.join(format!("{}.log", test.name));
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
    let mut report = if problems.is_empty() {
        format!("boot test {}: PASS ({seconds:.1} s)\n", test.name)
    } else {
        format!("boot test {}: FAIL ({seconds:.1} s)\n", test.name)
    };
    for note in &notes {
        report.push_str(&format!("  {note}\n"));
    }
    if !problems.is_empty() {
        for problem in &problems {
            report.push_str(&format!("  - {problem}\n"));
        }
        report.push_str(&format!(
            "----- console log of boot test {} ({}) -----\n{saved}----- end of console log of boot test {} -----\n",
            test.name,
            log_path.display(),
            test.name
        ));
    }
    Ok((
        Outcome {
            name: test.name,
            problems,
            elapsed: captured.elapsed,
        },
        report,
    ))
}

/// Runs `tests`, [`PARALLEL`] at a time, printing each one's report as it finishes and saving
/// every console log under `log_dir`. Outcomes come back in the order of `tests`.
pub fn run_all(
    tests: &[BootTest],
    images: &Images,
    log_dir: &Path,
    timeout: Duration,
) -> Result<Vec<Outcome>> {
    fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> =
        Mutex::new(tests.iter().map(|_| None).collect::<Vec<_>>());
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for worker in 0..PARALLEL.min(tests.len()) {
            let (next, results, errors) = (&next, &results, &errors);
            scope.spawn(move || {
                // QEMU locks its disk image: each worker has its own.
                let disk = log_dir.join(format!("disk-{worker}.img"));
                if let Err(error) = crate::workspace::ensure_disk(&disk) {
                    errors.lock().unwrap_or_else(|e| e.into_inner()).push(error);
                    return;
                }
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(test) = tests.get(index) else {
                        break;
                    };
                    let realm_sim = images.realm_sim.as_deref().unwrap_or(Path::new(""));
                    let outcome = match images.image(test.system) {
                        Some(image) if images.can_run(test) => {
                            println!("boot test {} ...", test.name);
                            run_one(test, image, realm_sim, &disk, log_dir, timeout)
                        }
                        _ => Err(anyhow::anyhow!(
                            "{}: what it boots was not built",
                            test.name
                        )),
                    };
                    match outcome {
                        Ok((outcome, report)) => {
                            print!("{report}");
                            results.lock().unwrap_or_else(|e| e.into_inner())[index] =
                                Some(outcome);
                        }
                        Err(error) => {
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(error);
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = errors
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .next()
    {
        return Err(error);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::Ending;

    const EL1_LOG: &str = "Moat 0.1.0 - entered at EL1\nmemory map:\ndevices:\n  virtio-mmio@0xa003c00 irq 78: network\n  virtio-mmio@0xa003e00 irq 79: block\nmoat: boot self-check passed\n";

    fn by_name(tests: &[BootTest], name: &str) -> BootTest {
        tests
            .iter()
            .find(|test| test.name == name)
            .unwrap_or_else(|| panic!("no test {name}"))
            .clone()
    }

    fn ktest_log(el: &str) -> String {
        EL1_LOG.replace("EL1", el)
            + "tasks: 6 started\nktest: PASS ipc-ping-pong\nktest: PASS call-to-dead-task\n\
               moat: ready (4 tasks, 4736 KiB of RAM in use)\nktest: PASS fuzz\n\
               ktest: 3 passed, 0 failed\nktest: all 3 passed\n\
               moat: system off requested by ktest (status 0)\n"
    }

    #[test]
    fn test_names_are_unique_and_the_ktest_system_is_optional() {
        let all = boot_tests(2, Some(6));
        let mut names: Vec<&str> = all.iter().map(|test| test.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        let without = boot_tests(2, None);
        assert_eq!(without.len(), all.len() - 4);
        assert!(without.iter().all(|test| test.system != System::Ktest));
    }

    #[test]
    fn a_fault_log_passes_the_fault_test_and_fails_the_boot_tests() {
        let tests = boot_tests(0, Some(6));
        let log = "Moat 0.1.0 - entered at EL1\ntest hook: fault=DataAbort\nKERNEL FAULT: synchronous exception\n  cause: data abort at the same exception level\n  ELR 0xffffffff80001234\nregister dump:\n  x0  0x0 x1 0x1\n";
        let fault = by_name(&tests, "fault-data-abort").expected;
        assert!(console::judge(log, Ending::Exited(1), &fault).is_empty());
        assert!(!console::judge(log, Ending::Exited(0), &fault).is_empty());
        assert!(
            !console::judge(log, Ending::Exited(1), &by_name(&tests, "el1").expected).is_empty()
        );
        // The bare test does not see the fault in its expected lines, but forbids it.
        assert!(
            !console::judge(log, Ending::Exited(0), &by_name(&tests, "bare").expected).is_empty()
        );
        // A hook that did not fire: the self-check passes, which is forbidden, so stop early.
        let unfired = EL1_LOG.to_string() + "tasks: 2 started\n";
        assert!(should_stop(&unfired, &fault));
        assert!(!console::judge(&unfired, Ending::Stopped, &fault).is_empty());
    }

    #[test]
    fn each_fault_hook_expects_its_own_report() {
        let tests = boot_tests(2, None);
        let panic_log = "Moat 0.1.0\ntest hook: fault=Panic\n\nKERNEL PANIC at kernel/src/main.rs:281: test hook: fault=panic\nmoat: halted after a kernel panic\n";
        assert!(
            console::judge(
                panic_log,
                Ending::Exited(1),
                &by_name(&tests, "fault-panic").expected
            )
            .is_empty()
        );
        let overflow = "Moat 0.1.0\ntest hook: fault=StackOverflow\nKERNEL FAULT: synchronous exception\n  translation fault, level 3, on write of 0x1\n  kernel stack overflow: the access hit a stack guard page\nregister dump:\n  x0  0x19\n";
        assert!(
            console::judge(
                overflow,
                Ending::Exited(1),
                &by_name(&tests, "fault-stack-overflow").expected
            )
            .is_empty()
        );
        // A data abort that is not a stack overflow does not pass the overflow test.
        let other = overflow.replace(
            "  kernel stack overflow: the access hit a stack guard page\n",
            "",
        );
        assert!(
            !console::judge(
                &other,
                Ending::Exited(1),
                &by_name(&tests, "fault-stack-overflow").expected
            )
            .is_empty()
        );
        let write_text = "Moat 0.1.0\ntest hook: fault=WriteText\nKERNEL FAULT: synchronous exception\n  permission fault, level 3, on write of 0xffffffff8000c7e0\n  x0  0x0\n";
        assert!(
            console::judge(
                write_text,
                Ending::Exited(1),
                &by_name(&tests, "fault-write-text").expected
            )
            .is_empty()
        );
        let undef = "Moat 0.1.0\ntest hook: fault=Undefined\nKERNEL FAULT: synchronous exception\n  cause: unknown reason (EC 0x00)\n  x0  0x0\n";
        assert!(
            console::judge(
                undef,
                Ending::Exited(1),
                &by_name(&tests, "fault-undef").expected
            )
            .is_empty()
        );
        for test in tests.iter().filter(|test| test.name.starts_with("fault-")) {
            let Guest::Plain { el2, kernel_args } = test.guest else {
                panic!("{} must be a plain guest", test.name);
            };
            assert!(!el2);
            assert_eq!(kernel_args.len(), 1);
            assert!(kernel_args[0].starts_with("fault="));
            assert_eq!(test.expected.exit, ExpectedExit::Failure);
        }
    }

    #[test]
    fn el2_test_needs_el2() {
        let tests = boot_tests(0, None);
        let el2 = by_name(&tests, "el2").expected;
        let el1_log = EL1_LOG.to_string() + "no system archive: nothing else to run\n";
        assert_eq!(console::judge(&el1_log, Ending::Exited(0), &el2).len(), 1);
        let el2_log = el1_log.replace("EL1", "EL2");
        assert!(console::judge(&el2_log, Ending::Exited(0), &el2).is_empty());
    }

    #[test]
    fn a_default_system_with_tasks_is_stopped_once_ready() {
        let tests = boot_tests(2, None);
        let el1 = by_name(&tests, "el1").expected;
        assert_eq!(el1.exit, ExpectedExit::SuccessOrStopped);
        let log = EL1_LOG.to_string() + "tasks: 2 started\nhello: hi\n";
        assert!(!should_stop(&log, &el1));
        // Ready without blkcheck's pass is not enough.
        let unchecked = log.clone() + "moat: ready (1 tasks, 4256 KiB of RAM in use)\n";
        assert!(!console::judge(&unchecked, Ending::Stopped, &el1).is_empty());
        let log = log
            + "blkcheck: PASS 65536 KiB in 1032 requests\n"
            + "rng: PASS 1024 bytes from virtio-rng: 50.1% one bits\n"
            + "moat: ready (1 tasks, 4256 KiB of RAM in use)\n";
        assert!(should_stop(&log, &el1));
        // Without the entropy check, or with a failed one, the test fails.
        let no_rng = log.replace("rng: PASS", "rng: ...");
        assert!(!console::judge(&no_rng, Ending::Stopped, &el1).is_empty());
        let bad_rng = log.clone() + "rng: FAIL device timed out\n";
        assert!(!console::judge(&bad_rng, Ending::Stopped, &el1).is_empty());
        assert!(console::judge(&log, Ending::Stopped, &el1).is_empty());
        // A failing blkcheck fails the test.
        let failed = log.clone() + "blkcheck: ERROR: FAIL 0 KiB\n";
        assert!(!console::judge(&failed, Ending::Stopped, &el1).is_empty());
        // The wrong number of tasks fails.
        let wrong = log.replace("tasks: 2", "tasks: 3");
        assert!(!console::judge(&wrong, Ending::Stopped, &el1).is_empty());
        // A fault after `moat: ready` (seen during the grace period) fails.
        let late = log + "KERNEL FAULT: x\n";
        assert!(!console::judge(&late, Ending::Stopped, &el1).is_empty());
        // An empty default system must power off by itself.
        let empty = by_name(&boot_tests(0, None), "el1").expected;
        assert_eq!(empty.exit, ExpectedExit::Success);
    }

    #[test]
    fn the_disk_image_must_hold_blkchecks_pattern_after_a_pass() {
        let dir = std::env::temp_dir().join(format!("moat-disk-check-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let disk = dir.join("disk.img");
        let mut image = vec![0u8; 64 * blkcheck::SECTOR];
        blkcheck::fill(0, &mut image);
        fs::write(&disk, &image).expect("write image");
        let passed = "blkcheck: PASS 32 KiB\n";
        assert!(disk_pattern_problems(passed, &disk).is_empty());
        // No blkcheck pass, no check.
        assert!(disk_pattern_problems("moat: ready\n", &dir.join("missing.img")).is_empty());
        image[40 * blkcheck::SECTOR + 9] ^= 0x10;
        fs::write(&disk, &image).expect("write image");
        let problems = disk_pattern_problems(passed, &disk);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("sector 40 byte 9"), "{problems:?}");
        assert_eq!(
            disk_pattern_problems(passed, &dir.join("missing.img")).len(),
            1
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_ktest_system_must_pass_every_check_and_power_off() {
        let tests = boot_tests(2, Some(6));
        for (name, el) in [("ktest-el1", "EL1"), ("ktest-el2", "EL2")] {
            let expected = by_name(&tests, name).expected;
            let log = ktest_log(el);
            assert!(
                console::judge(&log, Ending::Exited(0), &expected).is_empty(),
                "{name}"
            );
            assert!(
                !should_stop(&log, &expected),
                "the ktest system powers off by itself"
            );
            assert!(!console::judge(&log, Ending::Exited(1), &expected).is_empty());
            assert!(!console::judge(&log, Ending::Stopped, &expected).is_empty());
            let failed = log.replace("ktest: PASS fuzz", "ktest: FAIL fuzz: oops");
            assert!(!console::judge(&failed, Ending::Exited(1), &expected).is_empty());
            let wrong_el = log.replace(el, if el == "EL1" { "EL2" } else { "EL1" });
            assert!(!console::judge(&wrong_el, Ending::Exited(0), &expected).is_empty());
            let fewer_tasks = log.replace("tasks: 6", "tasks: 5");
            assert!(!console::judge(&fewer_tasks, Ending::Exited(0), &expected).is_empty());
            let panicked = log.clone() + "KERNEL PANIC at x\n";
            assert!(!console::judge(&panicked, Ending::Exited(0), &expected).is_empty());
        }
    }

    #[test]
    fn the_ktest_summary_must_count_the_pass_lines() {
        assert!(ktest_summary(&ktest_log("EL1")).is_empty());
        let missing = ktest_log("EL1").replace("ktest: PASS fuzz\n", "");
        assert_eq!(
            ktest_summary(&missing),
            vec!["`ktest: all 3 passed`, but 2 `ktest: PASS` lines"]
        );
        let twice = ktest_log("EL1").replace("ktest: PASS fuzz", "ktest: PASS ipc-ping-pong");
        assert_eq!(ktest_summary(&twice).len(), 1);
        assert_eq!(ktest_summary("ktest: all 0 passed\n").len(), 1);
    }

    #[test]
    fn plain_tests_use_the_disk_and_bare_uses_nothing() {
        let disk = Path::new("/d.img");
        let (sim, ram) = (Path::new("/sim"), Path::new("/r.ram"));
        assert!(matches!(
            setup_for(Guest::Bare, disk, sim, ram),
            Setup::Bare
        ));
        let Setup::Full {
            kernel_args, mode, ..
        } = setup_for(
            Guest::Plain {
                el2: true,
                kernel_args: &["a=b"],
            },
            disk,
            sim,
            ram,
        )
        else {
            panic!("plain guest must be full");
        };
        assert_eq!(mode, Mode::Plain { el2: true });
        assert_eq!(kernel_args, ["a=b"]);
    }

    #[test]
    fn realm_tests_boot_realm_sim_with_their_own_ram_file() {
        let Setup::Full {
            disk,
            kernel_args,
            mode,
            gdb,
        } = setup_for(
            Guest::Realm {
                stress_host: true,
                kernel_args: &["fault=data-abort"],
                scan: false,
            },
            Path::new("/d.img"),
            Path::new("/sim"),
            Path::new("/r.ram"),
        )
        else {
            panic!("a Realm is a full guest");
        };
        assert_eq!(disk, Path::new("/d.img"));
        assert!(!gdb);
        assert_eq!(kernel_args, ["fault=data-abort"]);
        assert_eq!(
            mode,
            Mode::Realm(qemu::Realm {
                realm_sim: "/sim".into(),
                ram_file: "/r.ram".into(),
                stress_host: true,
            })
        );
    }

    /// What the kernel test system prints as a Realm under realm-sim (trimmed).
    fn realm_ktest_log(calls: u64) -> String {
        let rim = "225ca20939f67e2f2158a3bee8fd66141cd6656c56e9aae9c8a59577582a142f";
        format!(
            "realm-sim: Realm RAM 512 MiB at IPA 0x40000000, private at PA 0x60000000, shared bit 0x4000000000\n\
             realm-sim: Image 0x11a000 bytes at IPA 0x40200000, DTB 0x100000 bytes at IPA 0x40000000\n\
             realm-sim: RIM sha256:{rim}\n\
             Moat 0.1.0 - capability microkernel for Arm CCA Realms, entered at EL1\n\
             realm: Arm CCA Realm, RSI 1.0 (RMM implements up to 1.0)\n\
             realm: IPA width 39, shared bit 0x4000000000, hash Sha256, device addresses canonical\n\
             realm: initial measurement {rim}\n\
             realm: command line measured into REM0 (sha256 7b51)\n\
             realm: RIPAS RAM over all memory in {calls} RSI calls\n\
             memory map:\ndevices:\n  virtio-mmio@0xa003c00 irq 78: network\n  virtio-mmio@0xa003e00 irq 79: block\n\
             moat: boot self-check passed\nrealm: manifest measured into REM0 (32 bytes)\n\
             tasks: 6 started\nktest: PASS ipc-ping-pong\nktest: PASS canary-in-private-memory\n\
             moat: ready (6 tasks, 5152 KiB of RAM in use)\nktest: PASS fuzz\n\
             ktest: 3 passed, 0 failed\nktest: all 3 passed\n\
             moat: system off requested by ktest (status 0)\n"
        )
    }

    #[test]
    fn the_realm_ktest_boots_need_the_realm_lines_and_matching_measurements() {
        let tests = boot_tests(2, Some(6));
        let realm = by_name(&tests, "realm-ktest");
        let stress = by_name(&tests, "realm-ktest-stress");
        assert_eq!(realm.system, System::Ktest);
        assert!(matches!(
            realm.guest,
            Guest::Realm {
                stress_host: false,
                scan: true,
                ..
            }
        ));
        assert!(matches!(
            stress.guest,
            Guest::Realm {
                stress_host: true,
                scan: true,
                ..
            }
        ));
        let log = realm_ktest_log(1);
        assert!(console::judge(&log, Ending::Exited(0), &realm.expected).is_empty());
        assert!(!should_stop(&log, &realm.expected));
        // Stress mode must really be on: one RSI call per granule.
        assert_eq!(
            console::judge(&log, Ending::Exited(0), &stress.expected).len(),
            1
        );
        let stressed = realm_ktest_log(131_072);
        assert!(console::judge(&stressed, Ending::Exited(0), &stress.expected).is_empty());
        // A plain boot of the same system is not a Realm boot.
        assert!(!console::judge(&ktest_log("EL1"), Ending::Exited(0), &realm.expected).is_empty());
        // Measurements that differ, a realm-sim error, a refused access, a missing Realm line.
        let differ = log.replacen("initial measurement 225c", "initial measurement 325c", 1);
        assert_eq!(
            console::judge(&differ, Ending::Exited(0), &realm.expected).len(),
            1
        );
        let error = log.clone() + "realm-sim: error: memory layout: RamTooSmall\n";
        assert!(should_stop(&error, &realm.expected));
        assert!(!console::judge(&error, Ending::Exited(0), &realm.expected).is_empty());
        let refused = log.replace(
            "tasks: 6 started\n",
            "tasks: 6 started\nrealm-sim: refused read at IPA 0x9000030 (VA 0x1, PC 0x2): external abort injected\n",
        );
        assert!(!console::judge(&refused, Ending::Exited(0), &realm.expected).is_empty());
        let no_manifest = log.replace("realm: manifest measured into REM0 (32 bytes)\n", "");
        assert!(!console::judge(&no_manifest, Ending::Exited(0), &realm.expected).is_empty());
        let alias = log.replace(
            "device addresses canonical",
            "device addresses at the alias",
        );
        assert!(!console::judge(&alias, Ending::Exited(0), &realm.expected).is_empty());
    }

    #[test]
    fn a_realm_refuses_test_hooks_unless_built_for_tests() {
        let tests = boot_tests(2, Some(6));
        let refused = by_name(&tests, "realm-hook-refused");
        let built = by_name(&tests, "realm-hook-test-build");
        assert_eq!(refused.system, System::Default);
        assert_eq!(built.system, System::DefaultTestHooks);
        for test in [&refused, &built] {
            let Guest::Realm { kernel_args, .. } = test.guest else {
                panic!("{} must be a Realm", test.name);
            };
            assert_eq!(kernel_args, ["fault=data-abort"]);
        }
        let head = realm_ktest_log(1);
        let head = &head[..head.find("memory map:").unwrap()];
        let refused_log = head.to_string()
            + "test hook: fault=DataAbort refused: in a Realm, test hooks need an image built for tests\n\
               moat: boot self-check passed\nrealm: manifest measured into REM0 (32 bytes)\n\
               tasks: 2 started\n";
        assert!(should_stop(&refused_log, &refused.expected));
        assert!(!should_stop(
            &refused_log.replace("tasks: 2 started\n", ""),
            &refused.expected
        ));
        assert!(console::judge(&refused_log, Ending::Stopped, &refused.expected).is_empty());
        assert!(console::judge(&refused_log, Ending::Exited(0), &refused.expected).is_empty());
        let fault_log = head.to_string()
            + "test hook: fault=DataAbort\nKERNEL FAULT: synchronous exception\n  cause: data abort at the same exception level\n  ELR 0xffffffff80001234\n  x0  0x0\n";
        assert!(console::judge(&fault_log, Ending::Exited(1), &built.expected).is_empty());
        // Each log fails the other test.
        assert!(!console::judge(&fault_log, Ending::Exited(1), &refused.expected).is_empty());
        assert!(!console::judge(&refused_log, Ending::Exited(1), &built.expected).is_empty());
        assert!(should_stop(&refused_log, &built.expected));
    }

    #[test]
    fn tests_whose_parts_did_not_build_cannot_run() {
        let tests = boot_tests(2, Some(6));
        let mut images = Images {
            default: "/Image".into(),
            ktest: Some("/k.Image".into()),
            test_hooks: None,
            realm_sim: None,
        };
        let runnable = |images: &Images| -> Vec<&str> {
            tests
                .iter()
                .filter(|test| images.can_run(test))
                .map(|test| test.name)
                .collect()
        };
        let names = runnable(&images);
        assert!(names.contains(&"ktest-el1") && names.contains(&"el1"));
        assert!(!names.iter().any(|name| name.starts_with("realm-")));
        images.realm_sim = Some("/sim".into());
        let names = runnable(&images);
        assert!(names.contains(&"realm-ktest") && names.contains(&"realm-hook-refused"));
        assert!(!names.contains(&"realm-hook-test-build"));
        images.test_hooks = Some("/t.Image".into());
        assert_eq!(runnable(&images).len(), tests.len());
        assert_eq!(
            images.image(System::DefaultTestHooks),
            Some(Path::new("/t.Image"))
        );
    }
}
