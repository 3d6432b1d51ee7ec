//! `demo`: the workload `cargo xtask run` shows. It waits until every other task has either
//! reached its serve loop (blocked) or ended, prints a table of the tasks, and powers the system
//! off with status 0 — or 1 if a task faulted.
//!
//! Later workloads (block check, network demo, dmastat) join the same system and this task
//! waits for them the same way.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use moat_abi::{CapabilityKind, Error, Syscall, TaskState, Timeout};
    use moat_userlib::{Kernel, Syscalls, caps};

    moat_userlib::entry!(main);

    /// How long the demo waits for the other tasks to settle.
    const SETTLE_TIMEOUT_NS: u64 = 30_000_000_000;

    fn main() -> Result<u64, Error> {
        let kernel = Kernel;
        let tasks = caps::expect("task-control", CapabilityKind::TaskControl)
            .map_err(|_| Error::InvalidCapability)?;
        let me = kernel.task_self()?.index();
        let deadline = kernel.time() + SETTLE_TIMEOUT_NS;
        loop {
            // Sleep a little first: a wait with a timeout (this is also where the kernel sees
            // the demo reach its loop, for `moat: ready`).
            let _ = kernel.notify_wait(1, Timeout::from_milliseconds(10));
            let busy = (0u16..)
                .map(|index| (index, kernel.task_status(tasks, index)))
                .take_while(|(_, status)| !matches!(status, Err(Error::InvalidArgument)))
                .filter(|(index, status)| {
                    *index != me && matches!(status, Ok(s) if s.state == TaskState::Runnable)
                })
                .count();
            if busy == 0 || kernel.time() > deadline {
                break;
            }
        }
        log::info!("task table:");
        let mut faulted = 0;
        for index in 0u16.. {
            let Ok(status) = kernel.task_status(tasks, index) else {
                break;
            };
            let state = match status.state {
                TaskState::Empty => "empty",
                TaskState::Runnable => "runnable",
                TaskState::Blocked => "waiting",
                TaskState::Faulted => "faulted",
                TaskState::Exited => "exited",
                TaskState::Killed => "killed",
            };
            if status.state == TaskState::Faulted {
                faulted += 1;
            }
            let me_mark = if index == me { " (this task)" } else { "" };
            log::info!(
                "  task {index}: {state}, instance {}.{}, detail {:#x}{me_mark}",
                status.id.index(),
                status.id.generation(),
                status.detail
            );
        }
        let status = u64::from(faulted > 0);
        log::info!("demo complete; powering off with status {status}");
        // SAFETY: SystemOff takes no pointer; it powers the machine off and does not return.
        unsafe { kernel.syscall(Syscall::SystemOff, [u64::from(tasks.0), status, 0, 0, 0, 0]) };
        Ok(status)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("demo is a Moat task: build it with --target aarch64-unknown-none");
}
