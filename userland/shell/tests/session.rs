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

mod with_the_dma_server {
    //! `dmastat` and `trace` against the real DMA server (its serve loop over the fake kernel).

    use std::sync::{Arc, Mutex};

    use moat_abi::Syscall;
    use moat_dma_api::protocol::Role;
    use moat_dma_api::{
        ClientConfig, ClientIdentity, DmaClient, DmaConfig, FakeWindow, ToDevice, badge,
    };
    use moat_dma_server::serve::{Endpoints, Serve};

    use super::*;

    const TABLE: &[u8] = b"supervisor supervisor\ndma dma\nblk virtio-blk\nshell shell\n";
    const BLK: ClientIdentity = ClientIdentity(3);
    const QUOTA: u64 = 64 * 1024;

    fn wait_for_reads(kernel: &FakeKernel, at_least: usize) {
        for _ in 0..1000 {
            if kernel.count(Syscall::ConsoleRead) >= at_least {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        panic!("the shell never read the console {at_least} times");
    }

    #[test]
    fn dmastat_prints_the_servers_tables_and_trace_follows_new_events() {
        let kernel = FakeKernel::new();
        let _supervisor = kernel.add_task("supervisor");
        let dma = kernel.add_task("dma");
        let blk = kernel.add_task("blk");
        let shell = kernel.add_task("shell");
        let (endpoint, serve_dma) = kernel.create_endpoint(&dma, "serve:dma");
        let share = kernel.grant_share(&dma, "share");
        let blk_to_dma =
            kernel.grant_endpoint(&blk, endpoint, "call:dma", badge::encode(BLK, Role::Client));
        let shell_to_dma = kernel.grant_endpoint(
            &shell,
            endpoint,
            "call:dma",
            badge::encode(ClientIdentity(4), Role::Observer),
        );
        let config = DmaConfig {
            budget_bytes: QUOTA,
            clients: heapless::Vec::from_slice(&[ClientConfig {
                identity: BLK,
                quota_bytes: QUOTA,
                name: heapless::String::try_from("blk").expect("short"),
            }])
            .expect("room"),
        };
        let zero = |task: &FakeTask, address: usize, len: usize| {
            task.write(address, &vec![0; len])
                .map_err(|_| moat_dma_server::error::DmaError::Backing)
        };
        let serve = Arc::new(Mutex::new(Serve::new(
            dma.clone(),
            share,
            zero,
            config,
            Endpoints {
                clients: serve_dma,
                admin: None,
            },
        )));
        kernel.set_pump(endpoint, move || {
            serve
                .lock()
                .expect("not poisoned")
                .serve_pending()
                .expect("receives");
        });
        // A driver registers and maps once before the session (an event dmastat lists).
        let mut client = DmaClient::new(blk.clone(), blk_to_dma);
        client
            .register_with(None, |_, _, info| {
                let size = usize::try_from(info.size).expect("fits");
                Ok(FakeWindow::with_device_base(size, 0, info.device_base).into_window())
            })
            .expect("registers");
        let early = client.map::<ToDevice>(100, 0, 0).expect("maps");
        client.unmap(early).expect("unmaps");

        let services = Services {
            console_input: kernel.grant_console_input(&shell, "console-input"),
            task_control: Some(kernel.grant_task_control(&shell, "task-control")),
            dma: Some(shell_to_dma),
            blk: None,
            net: None,
            rng: None,
        };
        let shell_task = shell.clone();
        let runner = thread::spawn(move || {
            let mut out = String::new();
            let _ = run_task(|| {
                let mut shell = Shell::new(shell_task, services, TaskTable::parse(TABLE), None);
                shell.serve(&mut out)
            });
            out
        });
        kernel.type_input(b"dmastat --reset-hiwater\rtrace 60\r");
        // The first read takes both lines; `trace` then polls the console for a key.
        wait_for_reads(&kernel, 3);
        let grant = client.map::<ToDevice>(1500, 0, 0).expect("maps");
        client.unmap(grant).expect("unmaps");
        let polled = kernel.count(Syscall::ConsoleRead);
        wait_for_reads(&kernel, polled + 2);
        kernel.type_input(b"xpoweroff\r");
        let printed = runner.join().expect("shell thread");

        assert!(
            printed.contains("dmastat: high-water mark reset"),
            "{printed}"
        );
        assert!(printed.contains("DMA pool: "), "{printed}");
        assert!(printed.contains("client   instance"), "{printed}");
        // The early map and unmap are in dmastat's event list, not in the trace.
        let (dmastat, trace) = printed
            .split_once("trace: following DMA events for 60 s; press any key to stop")
            .expect("trace started");
        assert!(dmastat.contains("map             3 to_dev"), "{dmastat}");
        assert!(dmastat.contains("unmap           3"), "{dmastat}");
        let trace_rows: Vec<&str> = trace
            .lines()
            .filter(|line| line.contains(" 3 to_dev"))
            .collect();
        assert_eq!(trace_rows.len(), 2, "{trace}");
        assert!(trace_rows[0].contains("map") && trace_rows[0].contains("1.5 KiB"));
        assert!(trace_rows[1].contains("unmap"));
        assert!(
            trace.contains("trace: 2 events (stopped by a key)"),
            "{trace}"
        );
        assert!(
            trace.contains("poweroff: powering the system off"),
            "{trace}"
        );
        assert_eq!(kernel.system_off_status(), Some(0));
    }
}
