//! The shell against the testkit fake kernel: a scripted session typed on the fake console.

use std::thread;
use std::time::Duration;

use moat_abi::TaskState;
use moat_testkit::{FakeKernel, FakeTask, Outcome, run_task};
use moat_userlib::Syscalls;
use shell::session::{PROMPT, Services, Shell};
use shell::tasks::TaskTable;

const TABLE: &[u8] = b"supervisor supervisor\nblk virtio-blk\nshell shell\n";

struct System {
    kernel: FakeKernel,
    supervisor: FakeTask,
    blk: FakeTask,
    shell: FakeTask,
    services: Services,
}

fn system() -> System {
    let kernel = FakeKernel::new();
    let supervisor = kernel.add_task("supervisor");
    let blk = kernel.add_task("blk");
    let shell = kernel.add_task("shell");
    let console_input = kernel.grant_console_input(&shell, "console-input");
    let task_control = Some(kernel.grant_task_control(&shell, "task-control"));
    let services = Services {
        console_input,
        task_control,
        dma: None,
        blk: None,
        net: None,
        rng: None,
    };
    System {
        kernel,
        supervisor,
        blk,
        shell,
        services,
    }
}

/// Runs the shell on its own thread over `input` until it powers off (or the fake stops it);
/// returns what it printed.
fn session(system: &System, input: &[u8]) -> String {
    let shell_task = system.shell.clone();
    let services = system.services;
    let runner = thread::spawn(move || {
        let mut out = String::new();
        let outcome = run_task(|| {
            let mut shell = Shell::new(shell_task, services, TaskTable::parse(TABLE), None);
            // `serve` returns only when console input fails; poweroff unwinds instead.
            let error = shell.serve(&mut out);
            format!("{out}serve ended: {error:?}")
        });
        (outcome, out)
    });
    system.kernel.type_input(input);
    let (outcome, out) = runner.join().expect("shell thread");
    match outcome {
        Outcome::Returned(text) => text,
        _ => out,
    }
}

#[test]
fn ps_then_poweroff() {
    let system = system();
    let _ = &system.supervisor;
    let printed = session(&system, b"ps\rpoweroff\r");
    assert!(printed.starts_with(&format!("{PROMPT}ps\n")), "{printed}");
    for row in [
        "  0  supervisor       supervisor         running  0.0          0",
        "  1  blk              virtio-blk         running  1.0          0",
        "  2  shell            shell              running  2.0          0   (this shell)",
    ] {
        assert!(printed.contains(row), "missing `{row}` in:\n{printed}");
    }
    assert!(
        printed.contains("poweroff: powering the system off"),
        "{printed}"
    );
    assert_eq!(system.kernel.system_off_status(), Some(0));
}

#[test]
fn kill_by_binary_name_reports_the_restart() {
    let system = system();
    // The supervisor's part: restart the task once it is dead.
    let control = system
        .kernel
        .grant_task_control(&system.supervisor, "task-control");
    let supervisor = system.supervisor.clone();
    let blk = system.blk.clone();
    let restarter = thread::spawn(move || {
        for _ in 0..500 {
            if blk.state() == TaskState::Killed {
                return supervisor.task_restart(control, blk.index());
            }
            thread::sleep(Duration::from_millis(5));
        }
        Err(moat_abi::Error::TimedOut)
    });
    let printed = session(&system, b"kill virtio-blk\rps\rpoweroff\r");
    let restarted = restarter.join().expect("restarter").expect("restarted");
    assert_eq!(restarted.generation(), 1);
    assert!(
        printed.contains("kill: blk (instance 1.0) killed"),
        "{printed}"
    );
    assert!(
        printed.contains("kill: the supervisor restarted blk as instance 1.1 (running)"),
        "{printed}"
    );
    assert!(
        printed.contains("  1  blk              virtio-blk         running  1.1          1"),
        "{printed}"
    );
}

#[test]
fn refusals_and_missing_services_are_messages() {
    let system = system();
    let printed = session(
        &system,
        b"kill supervisor\rkill shell\rkill nobody\rrng\rdmastat\rnet\rblk info\rfrobnicate\rpoweroff\r",
    );
    for line in [
        "kill: `supervisor` is the supervisor; nothing would restart tasks without it",
        "kill: `shell` is this shell; use `poweroff` to stop",
        "kill: no task `nobody`; tasks: supervisor blk shell",
        "rng: no entropy device (no `call:rng` endpoint in this system)",
        "dmastat: no DMA server endpoint (`call:dma`) in this system",
        "net: no network driver endpoint (`call:net`) in this system",
        "blk: no block driver endpoint (`call:blk`) in this system",
        "unknown command `frobnicate`; commands: help ps dmastat trace blk net rng kill poweroff",
    ] {
        assert!(printed.contains(line), "missing `{line}` in:\n{printed}");
    }
    assert!(system.blk.state().is_alive(), "nothing was killed");
}

#[test]
fn editing_keys_shape_the_line_and_the_echo() {
    let system = system();
    // "pz", backspace, "s": runs `ps`; the terminal saw the erase sequence.
    let printed = session(&system, b"pz\x7fs\r\npoweroff\r\n");
    assert!(
        printed.starts_with(&format!("{PROMPT}pz\x08 \x08s\n  #  task")),
        "{printed:?}"
    );
    // CR LF counted once: two prompts (before `ps` and before `poweroff`), no empty command.
    assert_eq!(printed.matches(PROMPT).count(), 2, "{printed:?}");
}

#[test]
fn without_task_control_ps_and_poweroff_say_why() {
    let mut system = system();
    system.services.task_control = None;
    // The shell then waits for input that never comes: end it soon.
    system.kernel.set_stall_limit(Duration::from_millis(300));
    let printed = session(&system, b"ps\rpoweroff\r");
    assert!(
        printed.contains("ps: no task-control capability"),
        "{printed}"
    );
    assert!(
        printed.contains("poweroff: no task-control capability"),
        "{printed}"
    );
    // Nothing powered off: the session ended when the fake's input ran dry.
    assert_eq!(system.kernel.system_off_status(), None);
}
