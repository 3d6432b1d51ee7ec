//! `demo`: the workload `cargo xtask run` shows. It asks the entropy driver (`call:rng`, when
//! the system has one) for 1 KiB and prints a sanity check of it (`rng: PASS ...`), waits until
//! every other task has either reached its serve loop (blocked) or ended, prints a table of
//! the tasks, and powers the system off with status 0 — or 1 if a task faulted.
//!
//! Later workloads (block check, network demo, dmastat) join the same system and this task
//! waits for them the same way.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use moat_abi::{CapabilityKind, Error, Syscall, TaskState, Timeout};
    use moat_rng_api::RngClient;
    use moat_userlib::{Kernel, Syscalls, caps};

    moat_userlib::entry!(main);

    /// Bytes asked of the entropy driver.
    const ENTROPY_BYTES: usize = 1024;

    /// Fills 1 KiB from the entropy driver and checks it looks random: the share of one bits
    /// within 45–55 % (9 standard deviations for 8192 fair bits) and at least 200 distinct byte
    /// values (about 251 expected). Constant or stuck output fails; this is a smoke test, not a
    /// statistical test suite.
    fn check_entropy() {
        let Ok(endpoint) = caps::expect("call:rng", CapabilityKind::Endpoint) else {
            return;
        };
        let client =
            RngClient::new(Kernel, endpoint).with_timeout(Timeout::from_milliseconds(10_000));
        let mut bytes = [0u8; ENTROPY_BYTES];
        if let Err(error) = client.fill(&mut bytes) {
            log::error!("rng: FAIL {error}");
            return;
        }
        let ones: u32 = bytes.iter().map(|byte| byte.count_ones()).sum();
        let permille = ones * 1000 / (ENTROPY_BYTES as u32 * 8);
        let mut seen = [false; 256];
        bytes
            .iter()
            .for_each(|&byte| seen[usize::from(byte)] = true);
        let distinct = seen.iter().filter(|&&seen| seen).count();
        let verdict = if (450..=550).contains(&permille) && distinct >= 200 {
            "PASS"
        } else {
            "FAIL"
        };
        log::info!(
            "rng: {verdict} {ENTROPY_BYTES} bytes from virtio-rng: {}.{}% one bits, {distinct} \
             distinct byte values, first 8 {:02x?}",
            permille / 10,
            permille % 10,
            &bytes[..8]
        );
    }

    /// How long the demo waits for the other tasks to settle.
    const SETTLE_TIMEOUT_NS: u64 = 30_000_000_000;

    fn main() -> Result<u64, Error> {
        let kernel = Kernel;
        let tasks = caps::expect("task-control", CapabilityKind::TaskControl)
            .map_err(|_| Error::InvalidCapability)?;
        let me = kernel.task_self()?.index();
        check_entropy();
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
