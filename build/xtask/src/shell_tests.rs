//! The shell's QEMU test: a scripted session typed on QEMU's stdin (the console), once as a
//! Realm under realm-sim and once as the plain guest, on the shell system
//! (`build/system-shell.toml`).
//!
//! The script waits for the shell's prompt before typing each command, so input never races
//! the shell (the kernel's console ring holds 4 KiB anyway, and QEMU applies back-pressure on
//! its chardev when the UART FIFO is full). What the session must show is checked by pure
//! functions ([`check_session`]) with unit tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::qemu::{self, Mode, Setup};

/// The shell system's manifest, relative to the workspace root.
pub const SHELL_MANIFEST_PATH: &str = "build/system-shell.toml";

/// The shell's prompt.
pub const PROMPT: &str = "moat> ";

/// What the scripted session types, one command per prompt.
pub const SCRIPT: [&str; 6] = ["ps", "dmastat", "rng", "kill virtio-blk", "ps", "poweroff"];

/// The manifest name of the task the script kills by its binary name (`virtio-blk`).
const KILLED_NAME: &str = "blk";

/// One session: its name and how QEMU runs.
#[derive(Debug, Clone)]
pub struct SessionTest {
    /// `shell-realm` or `shell-el1`.
    pub name: &'static str,
    /// Realm under realm-sim, or the plain guest.
    pub realm: bool,
}

/// The sessions `cargo xtask test` runs.
pub fn session_tests() -> Vec<SessionTest> {
    vec![
        SessionTest {
            name: "shell-realm",
            realm: true,
        },
        SessionTest {
            name: "shell-el1",
            realm: false,
        },
    ]
}

/// The text printed by the command typed at prompt `index` (1-based): from that prompt to the
/// next one (or the end).
fn command_output(log: &str, index: usize) -> Option<&str> {
    let mut starts = log.match_indices(PROMPT).map(|(at, _)| at + PROMPT.len());
    let start = starts.nth(index - 1)?;
    let end = log[start..]
        .find(PROMPT)
        .map_or(log.len(), |offset| start + offset);
    Some(&log[start..end])
}

/// The `ps` row of task `name`: (state, instance, generation).
fn ps_row<'a>(output: &'a str, name: &str) -> Option<(&'a str, &'a str, u32)> {
    output.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [_, task, _, state, instance, generation, ..] if *task == name => {
                Some((*state, *instance, generation.parse().ok()?))
            }
            _ => None,
        }
    })
}

/// Checks a session's console log and how QEMU ended; returns the problems (none = pass).
pub fn check_session(log: &str, exit: Option<i32>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_string());
        }
    };
    need(
        log.contains("console: input on (interrupt"),
        "the kernel did not turn console input on with the UART's interrupt",
    );
    need(
        log.contains("shell: Moat shell on the console"),
        "no shell banner",
    );
    for forbidden in [
        "KERNEL FAULT",
        "KERNEL PANIC",
        "realm-sim: error",
        "panicked",
    ] {
        need(
            !log.contains(forbidden),
            &format!("`{forbidden}` on the console"),
        );
    }
    // 1: ps — every task of the manifest, the blk driver at generation 0.
    let first_ps = command_output(log, 1).unwrap_or("");
    // The echo may share its line with a kernel line printed meanwhile (`moat: ready`).
    need(
        first_ps
            .lines()
            .take(3)
            .any(|line| line.trim_end().ends_with("ps")),
        "the first command is not echoed as `ps`",
    );
    for task in ["supervisor", "dma", KILLED_NAME, "rng", "net", "shell"] {
        need(
            ps_row(first_ps, task).is_some(),
            &format!("the first `ps` does not list `{task}`"),
        );
    }
    let before = ps_row(first_ps, KILLED_NAME);
    need(
        matches!(before, Some((_, _, 0))),
        "the first `ps` does not show blk at generation 0",
    );
    // 2: dmastat — the summary and the client table.
    let dmastat = command_output(log, 2).unwrap_or("");
    need(
        dmastat.contains("DMA pool: ") && dmastat.contains("high-water"),
        "`dmastat` printed no pool summary",
    );
    need(
        dmastat.contains("client   instance"),
        "`dmastat` printed no client table",
    );
    // 3: rng — 32 bytes as 64 hex digits.
    let rng = command_output(log, 3).unwrap_or("");
    need(
        rng.contains("rng: 32 bytes from the entropy device:")
            && rng
                .lines()
                .any(|l| l.len() == 64 && l.chars().all(|c| c.is_ascii_hexdigit())),
        "`rng` printed no 32 random bytes",
    );
    // 4: kill virtio-blk — killed, then restarted by the supervisor.
    let kill = command_output(log, 4).unwrap_or("");
    need(
        kill.contains(&format!("kill: {KILLED_NAME} (instance ")) && kill.contains(") killed"),
        "`kill virtio-blk` did not report the kill",
    );
    need(
        kill.contains(&format!(
            "kill: the supervisor restarted {KILLED_NAME} as instance"
        )),
        "`kill virtio-blk` did not see the supervisor restart blk",
    );
    need(
        log.contains("supervisor: restarted task"),
        "the supervisor did not report the restart",
    );
    // 5: ps again — blk alive at generation 1.
    let second_ps = command_output(log, 5).unwrap_or("");
    let after = ps_row(second_ps, KILLED_NAME);
    need(
        matches!(after, Some(("waiting" | "running", _, 1))),
        "the second `ps` does not show blk alive at generation 1",
    );
    // 6: poweroff — status 0.
    need(
        log.contains("moat: system off requested by shell (status 0)"),
        "`poweroff` did not power off",
    );
    need(
        exit == Some(0),
        &format!("QEMU did not exit with status 0 ({exit:?})"),
    );
    problems
}

/// Runs one session: boots `image`, types [`SCRIPT`] at the prompts, returns the console log
/// and QEMU's exit status (`None` when it had to be killed at `timeout`).
pub fn run_session(
    test: &SessionTest,
    image: &Path,
    realm_sim: Option<&Path>,
    disk: &Path,
    log_dir: &Path,
    timeout: Duration,
) -> Result<(String, Option<i32>)> {
    let ram_file = log_dir.join(format!("{}.ram", test.name));
    let mode = match (test.realm, realm_sim) {
        (true, Some(realm_sim)) => {
            crate::workspace::remove_if_present(&ram_file)?;
            Mode::Realm(qemu::Realm {
                realm_sim: realm_sim.to_path_buf(),
                ram_file: ram_file.clone(),
                stress_host: false,
            })
        }
        (true, None) => anyhow::bail!("realm-sim is not built"),
        (false, _) => Mode::Plain { el2: false },
    };
    let setup = Setup::Full {
        disk: disk.to_path_buf(),
        mode,
        gdb: false,
        kernel_args: Vec::new(),
    };
    let mut command = qemu::command(image, &setup);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", qemu::QEMU))?;
    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    let readers = qemu::read_output(&mut child, move |chunk| sender.send(chunk.to_vec()).is_ok());
    let mut stdin = child.stdin.take();
    let deadline = Instant::now() + timeout;
    let mut output = Vec::new();
    let mut typed = 0;
    let mut timed_out = false;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(remaining) {
            Ok(chunk) => output.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
        // Type the next command once its prompt is there (and the system is ready).
        let text = String::from_utf8_lossy(&output);
        let prompts = text.matches(PROMPT).count();
        if typed < SCRIPT.len() && prompts > typed && text.contains("moat: ready") {
            if let Some(pipe) = stdin.as_mut() {
                // Carriage return: what a terminal's Enter key sends.
                let line = format!("{}\r", SCRIPT[typed]);
                pipe.write_all(line.as_bytes())
                    .and_then(|()| pipe.flush())
                    .context("typing on QEMU's stdin")?;
            }
            typed += 1;
        }
    }
    drop(stdin);
    let status = if timed_out {
        let _ = child.kill();
        let _ = child.wait();
        None
    } else {
        let waited = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().context("waiting for QEMU")? {
                break status.code();
            }
            if Instant::now() >= waited {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    };
    for reader in readers {
        let _ = reader.join();
    }
    output.extend(receiver.try_iter().flatten());
    let log = String::from_utf8_lossy(&output).into_owned();
    std::fs::write(log_dir.join(format!("{}.log", test.name)), &log)
        .with_context(|| format!("writing the {} log", test.name))?;
    if test.realm {
        crate::workspace::remove_if_present(&ram_file)?;
    }
    Ok((log, status))
}

/// Runs every session one after the other; returns (label, passed) for the summary and prints
/// a failing session's problems and log.
pub fn run_all(
    image: &Path,
    realm_sim: Option<&Path>,
    log_dir: &Path,
    timeout: Duration,
) -> Result<Vec<(String, bool)>> {
    std::fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let disk: PathBuf = log_dir.join("disk-shell.img");
    crate::workspace::ensure_disk(&disk)?;
    let mut results = Vec::new();
    for test in session_tests() {
        let started = Instant::now();
        let (log, status) = run_session(&test, image, realm_sim, &disk, log_dir, timeout)?;
        let problems = check_session(&log, status);
        let label = format!(
            "shell session {} ({:.1} s)",
            test.name,
            started.elapsed().as_secs_f64()
        );
        if problems.is_empty() {
            println!("PASS {label}");
        } else {
            println!("FAIL {label}:");
            for problem in &problems {
                println!("  - {problem}");
            }
            println!("---- console log ----\n{log}\n---- end of log ----");
        }
        results.push((label, problems.is_empty()));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
console: input on (interrupt 33)
shell: Moat shell on the console (6 tasks in this system); type `help`
moat> moat: ready (6 tasks, 9288 KiB of RAM in use)
ps
  #  task             binary             state    instance   gen  detail
  0  supervisor       supervisor         waiting  0.0          0
  1  dma              dma                waiting  1.0          0
  2  blk              virtio-blk         waiting  2.0          0
  3  rng              virtio-rng         waiting  3.0          0
  4  net              virtio-net         waiting  4.0          0
  5  shell            shell              running  5.0          0   (this shell)
moat> dmastat
DMA pool: 2.0 MiB shared of 2.0 MiB budget, 1032 slots of 2.0 KiB
     slots       used  high-water quarantine   grants  clients
client   instance     window grants    granted  used  quar reset  to device   from dev  fail
moat> rng
rng: 32 bytes from the entropy device:
3509bb9f9a5a3f78e99e4aabc074b5545d5676915966c1e3233c70331979fdd0
moat> kill virtio-blk
task blk killed
supervisor: restarted task 2 as 2.1
kill: blk (instance 2.0) killed
kill: the supervisor restarted blk as instance 2.1 (waiting)
moat> ps
  #  task             binary             state    instance   gen  detail
  0  supervisor       supervisor         waiting  0.0          0
  1  dma              dma                waiting  1.0          0
  2  blk              virtio-blk         waiting  2.1          1
  3  rng              virtio-rng         waiting  3.0          0
  4  net              virtio-net         waiting  4.0          0
  5  shell            shell              running  5.0          0   (this shell)
moat> poweroff
poweroff: powering the system off
moat: system off requested by shell (status 0)
";

    #[test]
    fn a_good_session_passes() {
        assert_eq!(check_session(GOOD, Some(0)), Vec::<String>::new());
    }

    #[test]
    fn outputs_are_cut_at_prompts() {
        assert_eq!(
            command_output(GOOD, 3),
            Some(
                "rng\nrng: 32 bytes from the entropy device:\n\
                 3509bb9f9a5a3f78e99e4aabc074b5545d5676915966c1e3233c70331979fdd0\n"
            )
        );
        assert_eq!(command_output(GOOD, 8), None);
        let ps = command_output(GOOD, 5).expect("second ps");
        assert_eq!(ps_row(ps, "blk"), Some(("waiting", "2.1", 1)));
        assert_eq!(ps_row(ps, "nobody"), None);
    }

    #[test]
    fn each_missing_piece_fails_the_session() {
        let cases = [
            (
                "2  blk              virtio-blk         waiting  2.1          1",
                "2  blk              virtio-blk         killed   2.1          1",
                "blk alive at generation 1",
            ),
            (
                "kill: the supervisor restarted blk",
                "kill: nobody restarted blk",
                "did not see the supervisor restart",
            ),
            (
                "3509bb9f9a5a3f78e99e4aabc074b5545d5676915966c1e3233c70331979fdd0",
                "rng: no entropy device",
                "no 32 random bytes",
            ),
            ("DMA pool: ", "DMA: ", "no pool summary"),
            ("(status 0)", "(status 1)", "did not power off"),
            (
                "console: input on (interrupt 33)",
                "console: input on (polled every timer tick)",
                "UART's interrupt",
            ),
            ("  3  rng  ", "  3  xyz  ", "does not list `rng`"),
        ];
        for (from, to, what) in cases {
            assert!(GOOD.contains(from), "{from}");
            let log = GOOD.replacen(from, to, 1);
            let problems = check_session(&log, Some(0));
            assert!(
                problems.iter().any(|p| p.contains(what)),
                "{what}: {problems:?}"
            );
        }
        let problems = check_session(GOOD, None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let problems = check_session(&format!("{GOOD}KERNEL PANIC"), Some(0));
        assert!(problems.iter().any(|p| p.contains("KERNEL PANIC")));
    }

    #[test]
    fn the_script_is_the_issues() {
        assert_eq!(
            SCRIPT,
            ["ps", "dmastat", "rng", "kill virtio-blk", "ps", "poweroff"]
        );
        let names: Vec<_> = session_tests().iter().map(|t| t.name).collect();
        assert_eq!(names, ["shell-realm", "shell-el1"]);
    }
}
