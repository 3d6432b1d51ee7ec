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
use crate::qemu::{self, Setup};

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
fn default_boot(name: &'static str, el2: bool, tasks: usize) -> BootTest {
    let mut steps = full_boot(if el2 { "EL2" } else { "EL1" });
    let (start, exit) = system_start(tasks);
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
            forbidden: KERNEL_FAILURES.to_vec(),
            checks: vec![],
            exit,
        },
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

/// Every boot test, in the order they start, for a default system of `default_tasks` tasks (0:
/// the kernel runs its self-check and powers off) and a kernel test system of `ktest_tasks`
/// (`None` when it did not build: its tests are left out, the build failure is reported on its
/// own).
pub fn boot_tests(default_tasks: usize, ktest_tasks: Option<usize>) -> Vec<BootTest> {
    let mut tests = Vec::new();
    // The slowest first, so the two workers finish at about the same time.
    if let Some(tasks) = ktest_tasks {
        tests.push(ktest_boot("ktest-el1", false, tasks));
        tests.push(ktest_boot("ktest-el2", true, tasks));
    }
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

fn setup_for(guest: Guest, disk: &Path) -> Setup {
    match guest {
        Guest::Plain { el2, kernel_args } => Setup::Full {
            disk: disk.to_path_buf(),
            el2,
            gdb: false,
            kernel_args: kernel_args
                .iter()
                .map(|argument| argument.to_string())
                .collect(),
        },
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
/// print (PASS, or FAIL with the problems and the whole console log).
fn run_one(
    test: &BootTest,
    image: &Path,
    disk: &Path,
    log_dir: &Path,
    timeout: Duration,
) -> Result<(Outcome, String)> {
    let command = qemu::command(image, &setup_for(test.guest, disk));
    let command_text = qemu::command_text(&command);
    let captured = qemu::run_until(
        command,
        timeout,
        &|log| should_stop(log, &test.expected),
        GRACE,
    )?;
    let problems = console::judge(&captured.log, captured.ending, &test.expected);
    let log_path = log_dir.join(format!("{}.log", test.name));
    let mut saved = format!("$ {command_text}\n{}", captured.log);
    if !saved.ends_with('\n') {
        saved.push('\n');
    }
    saved.push_str(&format!(
        "[{}]\n",
        captured.ending.describe(timeout.as_secs())
    ));
    fs::write(&log_path, &saved).with_context(|| format!("writing {}", log_path.display()))?;
    let seconds = captured.elapsed.as_secs_f64();
    let report = if problems.is_empty() {
        format!("boot test {}: PASS ({seconds:.1} s)\n", test.name)
    } else {
        let mut report = format!("boot test {}: FAIL ({seconds:.1} s)\n", test.name);
        for problem in &problems {
            report.push_str(&format!("  - {problem}\n"));
        }
        report.push_str(&format!(
            "----- console log of boot test {} ({}) -----\n{saved}----- end of console log of boot test {} -----\n",
            test.name,
            log_path.display(),
            test.name
        ));
        report
    };
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
                    let image = match test.system {
                        System::Default => Some(images.default.as_path()),
                        System::Ktest => images.ktest.as_deref(),
                    };
                    let outcome = match image {
                        Some(image) => {
                            println!("boot test {} ...", test.name);
                            run_one(test, image, &disk, log_dir, timeout)
                        }
                        None => Err(anyhow::anyhow!("{}: its system was not built", test.name)),
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
        assert_eq!(without.len(), all.len() - 2);
        assert!(without.iter().all(|test| test.system == System::Default));
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
        let log = log + "moat: ready (1 tasks, 4256 KiB of RAM in use)\n";
        assert!(should_stop(&log, &el1));
        assert!(console::judge(&log, Ending::Stopped, &el1).is_empty());
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
        assert!(matches!(setup_for(Guest::Bare, disk), Setup::Bare));
        let Setup::Full {
            kernel_args, el2, ..
        } = setup_for(
            Guest::Plain {
                el2: true,
                kernel_args: &["a=b"],
            },
            disk,
        )
        else {
            panic!("plain guest must be full");
        };
        assert!(el2);
        assert_eq!(kernel_args, ["a=b"]);
    }
}
