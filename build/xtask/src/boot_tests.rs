//! The QEMU boot tests `cargo xtask test` runs, and the loop that runs and judges them.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::console::{self, Ending, Expectations, ExpectedExit, Step};
use crate::qemu::{self, Setup};

/// How a boot test sets up QEMU.
#[derive(Debug, Clone, Copy)]
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
#[derive(Debug, Clone, Copy)]
pub struct BootTest {
    /// Short name, used in the summary and the log file name.
    pub name: &'static str,
    /// The QEMU setup.
    pub guest: Guest,
    /// What the console and exit must look like.
    pub expected: Expectations,
}

/// What every successful boot prints, after the line saying which EL it was entered at.
const BOOT_REPORT: [Step; 4] = [
    Step(&[&["memory map:"]]),
    Step(&[&["devices:"]]),
    Step(&[&["virtio-mmio", "block"], &["virtio-mmio", "network"]]),
    Step(&[&["moat: boot self-check passed"]]),
];

const EL1_BOOT: [Step; 6] = [
    Step(&[&["Moat "]]),
    Step(&[&["entered at EL1"]]),
    BOOT_REPORT[0],
    BOOT_REPORT[1],
    BOOT_REPORT[2],
    BOOT_REPORT[3],
];

const EL2_BOOT: [Step; 6] = [
    Step(&[&["Moat "]]),
    Step(&[&["entered at EL2"]]),
    BOOT_REPORT[0],
    BOOT_REPORT[1],
    BOOT_REPORT[2],
    BOOT_REPORT[3],
];

/// Every boot test, in the order they run.
pub const BOOT_TESTS: &[BootTest] = &[
    BootTest {
        name: "el1",
        guest: Guest::Plain {
            el2: false,
            kernel_args: &[],
        },
        expected: Expectations {
            steps: &EL1_BOOT,
            forbidden: &["KERNEL FAULT"],
            exit: ExpectedExit::Success,
        },
    },
    BootTest {
        name: "el2",
        guest: Guest::Plain {
            el2: true,
            kernel_args: &[],
        },
        expected: Expectations {
            steps: &EL2_BOOT,
            forbidden: &["KERNEL FAULT"],
            exit: ExpectedExit::Success,
        },
    },
    BootTest {
        name: "fault",
        guest: Guest::Plain {
            el2: false,
            kernel_args: &["fault=data-abort"],
        },
        expected: Expectations {
            steps: &[
                Step(&[&["Moat "]]),
                Step(&[&["KERNEL FAULT"]]),
                Step(&[&["data abort"]]),
                Step(&[&["x0 "], &["ELR"]]),
            ],
            forbidden: &["moat: boot self-check passed"],
            exit: ExpectedExit::Failure,
        },
    },
    BootTest {
        name: "bare",
        guest: Guest::Bare,
        expected: Expectations {
            steps: &[Step(&[&["Moat "]]), Step(&[&["entered at EL1"]])],
            forbidden: &["KERNEL FAULT"],
            exit: ExpectedExit::Success,
        },
    },
];

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

/// Runs every boot test against `image`, printing progress, each failing test's console log
/// and saving every log under `log_dir`.
pub fn run_all(
    image: &Path,
    disk: &Path,
    log_dir: &Path,
    timeout: Duration,
) -> Result<Vec<Outcome>> {
    fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let mut outcomes = Vec::new();
    for test in BOOT_TESTS {
        let command = qemu::command(image, &setup_for(test.guest, disk));
        let command_text = qemu::command_text(&command);
        println!("boot test {} ...", test.name);
        let captured = qemu::run_captured(command, timeout)?;
        let problems = console::judge(&captured.log, captured.ending, &test.expected);
        let log_path = log_dir.join(format!("{}.log", test.name));
        let ending = match captured.ending {
            Ending::Exited(status) => format!("exit status {status}"),
            Ending::Signalled => "killed by a signal".into(),
            Ending::TimedOut => format!("timed out after {} s", timeout.as_secs()),
        };
        let mut saved = format!("$ {command_text}\n{}", captured.log);
        if !saved.ends_with('\n') {
            saved.push('\n');
        }
        saved.push_str(&format!("[{ending}]\n"));
        fs::write(&log_path, &saved).with_context(|| format!("writing {}", log_path.display()))?;
        if problems.is_empty() {
            println!(
                "boot test {}: PASS ({:.1} s)",
                test.name,
                captured.elapsed.as_secs_f64()
            );
        } else {
            println!(
                "boot test {}: FAIL ({:.1} s)",
                test.name,
                captured.elapsed.as_secs_f64()
            );
            for problem in &problems {
                println!("  - {problem}");
            }
            println!(
                "----- console log of boot test {} ({}) -----",
                test.name,
                log_path.display()
            );
            print!("{saved}");
            println!("----- end of console log of boot test {} -----", test.name);
        }
        outcomes.push(Outcome {
            name: test.name,
            problems,
            elapsed: captured.elapsed,
        });
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_are_unique() {
        let mut names: Vec<&str> = BOOT_TESTS.iter().map(|test| test.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BOOT_TESTS.len());
    }

    #[test]
    fn a_fault_log_passes_the_fault_test_and_fails_the_boot_tests() {
        let log = "Moat 0.1.0 — entered at EL1\nKERNEL FAULT: data abort at FAR 0x0\n  x0  0x0 x1 0x1\n  ELR 0xffffffff80001234\n";
        let by_name = |name| BOOT_TESTS.iter().find(|test| test.name == name).unwrap();
        assert!(console::judge(log, Ending::Exited(1), &by_name("fault").expected).is_empty());
        assert!(!console::judge(log, Ending::Exited(1), &by_name("el1").expected).is_empty());
        assert!(!console::judge(log, Ending::Exited(0), &by_name("fault").expected).is_empty());
        // The bare test does not see the fault in its expected lines, but forbids it.
        assert!(!console::judge(log, Ending::Exited(0), &by_name("bare").expected).is_empty());
    }

    #[test]
    fn el2_test_needs_el2() {
        let el2 = BOOT_TESTS.iter().find(|test| test.name == "el2").unwrap();
        let el1_log = "Moat 0.1.0 — entered at EL1\nmemory map:\ndevices:\nvirtio-mmio block\nvirtio-mmio network\nmoat: boot self-check passed\n";
        assert_eq!(
            console::judge(el1_log, Ending::Exited(0), &el2.expected).len(),
            1
        );
        let el2_log = el1_log.replace("EL1", "EL2");
        assert!(console::judge(&el2_log, Ending::Exited(0), &el2.expected).is_empty());
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
