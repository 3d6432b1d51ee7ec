//! Judging a captured console log: expected lines in order, forbidden lines, extra checks on
//! the whole log, and the exit.
//!
//! A boot test expects a sequence of [`Step`]s. A step is one or more line patterns that may
//! appear in any order among themselves (the device list does not promise an order); each
//! pattern is a set of substrings that must all appear on one line. Each step is searched
//! from the line where the previous step matched (the same line may satisfy two consecutive
//! steps, e.g. `KERNEL FAULT: data abort`), so the order of the steps is checked.
//!
//! A system that keeps serving never powers off by itself; its test expects
//! [`ExpectedExit::SuccessOrStopped`], and xtask stops QEMU once every step has matched
//! ([`steps_matched`]) and a short grace period has passed ([`Ending::Stopped`]).

/// Substrings that must all appear on one console line.
pub type LinePattern = Vec<String>;

/// Line patterns that must all match, in any order among themselves, after the previous step:
/// `Step::new(&[&["virtio-mmio", "block"], &["virtio-mmio", "network"]])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step(pub Vec<LinePattern>);

impl Step {
    /// A step from string literals.
    pub fn new(patterns: &[&[&str]]) -> Self {
        Self(
            patterns
                .iter()
                .map(|pattern| pattern.iter().map(|needle| needle.to_string()).collect())
                .collect(),
        )
    }

    /// A step of one line containing `needle`.
    pub fn line(needle: impl Into<String>) -> Self {
        Self(vec![vec![needle.into()]])
    }
}

/// How the guest is expected to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedExit {
    /// QEMU exits with status 0.
    Success,
    /// QEMU exits by itself with a non-zero status.
    Failure,
    /// QEMU exits with status 0, or is still running when every step has matched (xtask then
    /// stops it): for systems whose servers keep serving.
    SuccessOrStopped,
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
    /// xtask stopped QEMU on purpose: the log had shown what the test waits for.
    Stopped,
}

impl Ending {
    /// In words, for logs.
    pub fn describe(self, timeout_seconds: u64) -> String {
        match self {
            Ending::Exited(status) => format!("exit status {status}"),
            Ending::Signalled => "killed by a signal".into(),
            Ending::TimedOut => format!("timed out after {timeout_seconds} s"),
            Ending::Stopped => "stopped by xtask after the expected lines".into(),
        }
    }
}

/// A check on the whole log beyond lines in order (e.g. that counted results agree); returns
/// one message per problem.
pub type LogCheck = fn(&str) -> Vec<String>;

/// What one test expects of its console and exit.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// Lines expected, in order.
    pub steps: Vec<Step>,
    /// Substrings that must appear on no line.
    pub forbidden: Vec<&'static str>,
    /// Further checks on the whole log.
    pub checks: Vec<LogCheck>,
    /// How QEMU must end.
    pub exit: ExpectedExit,
}

fn line_matches(line: &str, pattern: &[String]) -> bool {
    pattern.iter().all(|needle| line.contains(needle.as_str()))
}

fn describe(pattern: &[String]) -> String {
    let quoted: Vec<String> = pattern.iter().map(|needle| format!("{needle:?}")).collect();
    format!("a line containing {}", quoted.join(" and "))
}

/// Matches `steps` against `lines` in order; returns one message per pattern not found.
fn match_steps(lines: &[&str], steps: &[Step]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut cursor = 0;
    for step in steps {
        let mut furthest = cursor;
        for pattern in &step.0 {
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
    problems
}

/// Whether every step of `expected` has matched `log` (complete lines only), so a test
/// expecting [`ExpectedExit::SuccessOrStopped`] may be stopped.
pub fn steps_matched(log: &str, expected: &Expectations) -> bool {
    // The last line may still be arriving.
    let complete = log.rfind('\n').map_or("", |end| &log[..end]);
    let lines: Vec<&str> = complete.lines().collect();
    match_steps(&lines, &expected.steps).is_empty()
}

/// Whether a forbidden line has appeared: the test has failed, there is no point waiting.
pub fn forbidden_seen(log: &str, expected: &Expectations) -> bool {
    expected.forbidden.iter().any(|needle| log.contains(needle))
}

/// Checks `log` and `ending` against `expected`; returns one message per problem, empty when
/// the test passed.
pub fn judge(log: &str, ending: Ending, expected: &Expectations) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut problems = match_steps(&lines, &expected.steps);

    for needle in &expected.forbidden {
        if let Some(line) = lines.iter().find(|line| line.contains(needle)) {
            problems.push(format!("forbidden {needle:?} appeared: {line:?}"));
        }
    }

    for check in &expected.checks {
        problems.extend(check(log));
    }

    match (ending, expected.exit) {
        (Ending::Exited(0), ExpectedExit::Success | ExpectedExit::SuccessOrStopped) => {}
        (Ending::Exited(status), ExpectedExit::Failure) if status != 0 => {}
        (Ending::Exited(status), ExpectedExit::Success | ExpectedExit::SuccessOrStopped) => {
            problems.push(format!("exit status {status}, expected 0"));
        }
        (Ending::Exited(_), ExpectedExit::Failure) => {
            problems.push("exit status 0, expected a failure status".into());
        }
        (Ending::Stopped, ExpectedExit::SuccessOrStopped) => {}
        (Ending::Stopped, _) => {
            problems.push(
                "xtask stopped QEMU after a forbidden line instead of waiting for its exit".into(),
            );
        }
        (Ending::Signalled, _) => problems.push("QEMU was killed by a signal".into()),
        (Ending::TimedOut, _) => problems.push("timed out; QEMU was killed".into()),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> Expectations {
        Expectations {
            steps: vec![
                Step::line("Moat "),
                Step::line("entered at EL1"),
                Step::line("memory map:"),
                Step::line("devices:"),
                Step::new(&[&["virtio-mmio", "block"], &["virtio-mmio", "network"]]),
                Step::line("moat: boot self-check passed"),
            ],
            forbidden: vec!["KERNEL FAULT"],
            checks: vec![],
            exit: ExpectedExit::Success,
        }
    }

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
            judge(GOOD_LOG, Ending::Exited(0), &boot()),
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
        let problems = judge(&log, Ending::Exited(0), &boot());
        assert_eq!(
            problems,
            vec![r#"missing a line containing "virtio-mmio" and "block""#]
        );
    }

    #[test]
    fn a_missing_line_fails() {
        let log = GOOD_LOG.replace("memory map:", "memory:");
        assert_eq!(
            judge(&log, Ending::Exited(0), &boot()),
            vec![r#"missing a line containing "memory map:""#]
        );
    }

    #[test]
    fn all_substrings_must_be_on_the_same_line() {
        let log = GOOD_LOG.replace(
            "virtio-mmio@0xa003e00 block",
            "virtio-mmio@0xa003e00\nblock",
        );
        assert_eq!(judge(&log, Ending::Exited(0), &boot()).len(), 1);
    }

    #[test]
    fn a_line_out_of_order_fails() {
        let log = "moat: boot self-check passed\n".to_string()
            + GOOD_LOG
                .replace("moat: boot self-check passed\n", "")
                .as_str();
        assert_eq!(
            judge(&log, Ending::Exited(0), &boot()),
            vec![r#"a line containing "moat: boot self-check passed" appeared, but out of order"#]
        );
    }

    #[test]
    fn a_forbidden_line_fails() {
        let log = GOOD_LOG.to_string() + "KERNEL FAULT: data abort\n";
        let problems = judge(&log, Ending::Exited(0), &boot());
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
            ..boot()
        };
        assert_eq!(
            judge(GOOD_LOG, Ending::Exited(1), &boot()),
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
        assert_eq!(judge(GOOD_LOG, Ending::TimedOut, &boot()).len(), 1);
        // Stopping QEMU is fine only for a system that keeps serving.
        assert_eq!(judge(GOOD_LOG, Ending::Stopped, &boot()).len(), 1);
        assert_eq!(judge(GOOD_LOG, Ending::Stopped, &failure).len(), 1);
        let serving = Expectations {
            exit: ExpectedExit::SuccessOrStopped,
            ..boot()
        };
        assert!(judge(GOOD_LOG, Ending::Stopped, &serving).is_empty());
        assert!(judge(GOOD_LOG, Ending::Exited(0), &serving).is_empty());
        assert_eq!(judge(GOOD_LOG, Ending::Exited(1), &serving).len(), 1);
    }

    #[test]
    fn stopping_waits_for_every_step_on_complete_lines() {
        let expected = boot();
        assert!(steps_matched(GOOD_LOG, &expected));
        // The last line has not ended yet: it may still grow, so wait.
        assert!(!steps_matched(GOOD_LOG.trim_end(), &expected));
        assert!(!steps_matched(
            &GOOD_LOG.replace("devices:", "dev"),
            &expected
        ));
        assert!(!forbidden_seen(GOOD_LOG, &expected));
        assert!(forbidden_seen("Moat\nKERNEL FAULT: x", &expected));
    }

    #[test]
    fn extra_checks_see_the_whole_log() {
        fn no_warnings(log: &str) -> Vec<String> {
            log.lines()
                .filter(|line| line.contains("warning"))
                .map(|line| format!("warned: {line}"))
                .collect()
        }
        let expected = Expectations {
            checks: vec![no_warnings],
            ..boot()
        };
        assert!(judge(GOOD_LOG, Ending::Exited(0), &expected).is_empty());
        let log = GOOD_LOG.to_string() + "warning: x\n";
        assert_eq!(
            judge(&log, Ending::Exited(0), &expected),
            vec!["warned: warning: x"]
        );
    }

    #[test]
    fn an_empty_log_reports_every_expected_line() {
        assert_eq!(judge("", Ending::Exited(0), &boot()).len(), 7);
    }
}
