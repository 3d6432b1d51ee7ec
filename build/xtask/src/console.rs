//! Judging a captured console log: expected lines in order, forbidden lines, and the exit.
//!
//! A boot test expects a sequence of [`Step`]s. A step is one or more line patterns that may
//! appear in any order among themselves (the device list does not promise an order); each
//! pattern is a set of substrings that must all appear on one line. Each step is searched
//! from the line where the previous step matched (the same line may satisfy two consecutive
//! steps, e.g. `KERNEL FAULT: data abort`), so the order of the steps is checked.

/// Substrings that must all appear on one console line.
pub type LinePattern = &'static [&'static str];

/// Line patterns that must all match, in any order among themselves, after the previous step:
/// `Step(&[&["virtio-mmio", "block"], &["virtio-mmio", "network"]])`.
#[derive(Debug, Clone, Copy)]
pub struct Step(pub &'static [LinePattern]);

/// How the guest is expected to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedExit {
    /// QEMU exits with status 0.
    Success,
    /// QEMU exits by itself with a non-zero status.
    Failure,
}

/// How the guest actually ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited with this status.
    Exited(i32),
    /// QEMU ended without a status (killed by a signal).
    Signalled,
    /// The timeout passed and xtask killed QEMU.
    TimedOut,
}

/// What one test expects of its console and exit.
#[derive(Debug, Clone, Copy)]
pub struct Expectations {
    /// Lines expected, in order.
    pub steps: &'static [Step],
    /// Substrings that must appear on no line.
    pub forbidden: &'static [&'static str],
    /// How QEMU must end.
    pub exit: ExpectedExit,
}

fn line_matches(line: &str, pattern: LinePattern) -> bool {
    pattern.iter().all(|needle| line.contains(needle))
}

fn describe(pattern: LinePattern) -> String {
    let quoted: Vec<String> = pattern.iter().map(|needle| format!("{needle:?}")).collect();
    format!("a line containing {}", quoted.join(" and "))
}

/// Checks `log` and `ending` against `expected`; returns one message per problem, empty when
/// the test passed.
pub fn judge(log: &str, ending: Ending, expected: &Expectations) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut problems = Vec::new();

    let mut cursor = 0;
    for step in expected.steps {
        let mut furthest = cursor;
        for pattern in step.0 {
            match lines[cursor..]
                .iter()
                .position(|line| line_matches(line, pattern))
            {
                Some(offset) => furthest = furthest.max(cursor + offset),
                None if lines.iter().any(|line| line_matches(line, pattern)) => {
                    problems.push(format!("{} appeared, but out of order", describe(pattern)));
                }
                None => problems.push(format!("missing {}", describe(pattern))),
            }
        }
        cursor = furthest;
    }

    for needle in expected.forbidden {
        if let Some(line) = lines.iter().find(|line| line.contains(needle)) {
            problems.push(format!("forbidden {needle:?} appeared: {line:?}"));
        }
    }

    match (ending, expected.exit) {
        (Ending::Exited(0), ExpectedExit::Success) => {}
        (Ending::Exited(status), ExpectedExit::Failure) if status != 0 => {}
        (Ending::Exited(status), ExpectedExit::Success) => {
            problems.push(format!("exit status {status}, expected 0"));
        }
        (Ending::Exited(_), ExpectedExit::Failure) => {
            problems.push("exit status 0, expected a failure status".into());
        }
        (Ending::Signalled, _) => problems.push("QEMU was killed by a signal".into()),
        (Ending::TimedOut, _) => problems.push("timed out; QEMU was killed".into()),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: Expectations = Expectations {
        steps: &[
            Step(&[&["Moat "]]),
            Step(&[&["entered at EL1"]]),
            Step(&[&["memory map:"]]),
            Step(&[&["devices:"]]),
            Step(&[&["virtio-mmio", "block"], &["virtio-mmio", "network"]]),
            Step(&[&["moat: boot self-check passed"]]),
        ],
        forbidden: &["KERNEL FAULT"],
        exit: ExpectedExit::Success,
    };

    const GOOD_LOG: &str = "\
Moat 0.1.0 — entered at EL1
memory map:
  0x40000000..0x60000000 RAM
devices:
  virtio-mmio@0xa003c00 network
  virtio-mmio@0xa003e00 block
moat: boot self-check passed
";

    #[test]
    fn a_good_boot_passes() {
        assert_eq!(
            judge(GOOD_LOG, Ending::Exited(0), &BOOT),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_same_line_may_satisfy_consecutive_steps() {
        // The banner and the exception level are on one line in GOOD_LOG already; and the two
        // device patterns in one step may be found in either order (network first above).
        let log = GOOD_LOG
            .replace("network", "net")
            .replace("block", "network");
        let problems = judge(&log, Ending::Exited(0), &BOOT);
        assert_eq!(
            problems,
            vec![r#"missing a line containing "virtio-mmio" and "block""#]
        );
    }

    #[test]
    fn a_missing_line_fails() {
        let log = GOOD_LOG.replace("memory map:", "memory:");
        assert_eq!(
            judge(&log, Ending::Exited(0), &BOOT),
            vec![r#"missing a line containing "memory map:""#]
        );
    }

    #[test]
    fn all_substrings_must_be_on_the_same_line() {
        let log = GOOD_LOG.replace(
            "virtio-mmio@0xa003e00 block",
            "virtio-mmio@0xa003e00\nblock",
        );
        assert_eq!(judge(&log, Ending::Exited(0), &BOOT).len(), 1);
    }

    #[test]
    fn a_line_out_of_order_fails() {
        let log = "moat: boot self-check passed\n".to_string()
            + GOOD_LOG
                .replace("moat: boot self-check passed\n", "")
                .as_str();
        assert_eq!(
            judge(&log, Ending::Exited(0), &BOOT),
            vec![r#"a line containing "moat: boot self-check passed" appeared, but out of order"#]
        );
    }

    #[test]
    fn a_forbidden_line_fails() {
        let log = GOOD_LOG.to_string() + "KERNEL FAULT: data abort\n";
        let problems = judge(&log, Ending::Exited(0), &BOOT);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with(r#"forbidden "KERNEL FAULT""#),
            "{problems:?}"
        );
    }

    #[test]
    fn exit_status_is_checked() {
        let failure = Expectations {
            exit: ExpectedExit::Failure,
            ..BOOT
        };
        assert_eq!(
            judge(GOOD_LOG, Ending::Exited(1), &BOOT),
            vec!["exit status 1, expected 0"]
        );
        assert_eq!(
            judge(GOOD_LOG, Ending::Exited(3), &failure),
            Vec::<String>::new()
        );
        assert_eq!(
            judge(GOOD_LOG, Ending::Exited(0), &failure),
            vec!["exit status 0, expected a failure status"]
        );
        // A timeout or a signal is never an acceptable failure.
        assert_eq!(judge(GOOD_LOG, Ending::TimedOut, &failure).len(), 1);
        assert_eq!(judge(GOOD_LOG, Ending::Signalled, &failure).len(), 1);
        assert_eq!(judge(GOOD_LOG, Ending::TimedOut, &BOOT).len(), 1);
    }

    #[test]
    fn an_empty_log_reports_every_expected_line() {
        assert_eq!(judge("", Ending::Exited(0), &BOOT).len(), 7);
    }
}
