//! The supervisor's logic: what to do about each fault report, and its serve loop over the
//! [`Syscalls`] trait so it runs against the fake kernel in host tests.
//!
//! The kernel posts a [`FaultReport`] on the supervisor's endpoint whenever a task faults, is
//! killed or exits. The supervisor logs it, tells the DMA server (if the system has one) that
//! the task's DMA grants must go to quarantine (`Revoke` on the `dma-admin` endpoint, before any
//! restart, so a restarted instance never races its predecessor's device), and asks the kernel
//! to restart the task; the kernel enforces the manifest's restart policy (never, or at most N
//! restarts) and refuses otherwise.
#![no_std]
#![forbid(unsafe_code)]

use moat_abi::{CapSlot, Error, FaultReason, FaultReport, Message, Timeout};
use moat_dma_api::protocol::{Request, Response, decode_reply};
use moat_dma_api::{ClientIdentity, DmaError};
use moat_userlib::{Received, Syscalls};

/// How long the supervisor waits for the DMA server to answer a `Revoke` (it polls its admin
/// endpoint every 10 ms; a DMA server that is itself down answers `Dead` at once).
pub const REVOKE_TIMEOUT_MS: u64 = 500;

/// The capabilities the supervisor works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `task-control`: restart tasks.
    pub tasks: CapSlot,
    /// `call:dma-admin`: the DMA server's admin endpoint, if the system has a DMA server.
    pub dma_admin: Option<CapSlot>,
}

/// The DMA identity of the task at `task_index`: its manifest badge, task index + 1
/// (docs/manifest.md).
pub fn dma_identity(task_index: u16) -> ClientIdentity {
    ClientIdentity(u32::from(task_index) + 1)
}

/// Asks the DMA server to quarantine the grants of the task at `task_index`. Returns the slots
/// quarantined; [`DmaError::NotRegistered`] means the task was no DMA client, which is the
/// common case.
pub fn revoke_dma<S: Syscalls>(
    syscalls: &S,
    dma_admin: CapSlot,
    task_index: u16,
) -> Result<u64, RevokeError> {
    let mut message = Message::empty(0);
    Request::Revoke {
        client: dma_identity(task_index),
    }
    .encode(&mut message)
    .map_err(RevokeError::Dma)?;
    syscalls
        .call(
            dma_admin,
            &mut message,
            Timeout::from_milliseconds(REVOKE_TIMEOUT_MS),
        )
        .map_err(RevokeError::Ipc)?;
    match decode_reply(&message) {
        Ok(Response::Slots(slots)) => Ok(slots),
        Ok(_) => Err(RevokeError::Dma(DmaError::Malformed)),
        Err(error) => Err(RevokeError::Dma(error)),
    }
}

/// Why a revoke failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeError {
    /// The call failed (the DMA server is down: `Dead`, or did not answer: `TimedOut`).
    Ipc(Error),
    /// The DMA server refused.
    Dma(DmaError),
}

/// What to do about a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask the kernel to start a fresh instance.
    Restart,
    /// Leave the task ended (it exited cleanly).
    LeaveEnded,
}

/// Decides what a report calls for: a clean exit (status 0) stays ended, anything else is
/// restarted if the manifest allows it.
pub fn decide(report: &FaultReport) -> Action {
    match report.reason() {
        Ok(FaultReason::Exited) if report.detail == 0 => Action::LeaveEnded,
        _ => Action::Restart,
    }
}

/// Handles one message from the supervisor's endpoint. Returns what was done, for logging and
/// tests; messages that are not kernel fault reports are answered with an error if they expect
/// a reply, and otherwise ignored.
pub fn handle<S: Syscalls>(
    syscalls: &S,
    caps: Capabilities,
    message: &Message,
) -> Option<(FaultReport, Result<(), Error>)> {
    let Some(report) = FaultReport::from_message(message) else {
        if let Some(reply) = message.reply_capability() {
            let _ = syscalls.reply(reply, &Message::empty(Error::InvalidArgument.to_raw()));
        }
        return None;
    };
    let reason = report
        .reason()
        .map(FaultReason::description)
        .unwrap_or("unknown reason");
    log::info!(
        "task {} ({}.{}) ended: {reason}, detail {:#x}",
        report.task_index,
        report.task_id.index(),
        report.task_id.generation(),
        report.detail
    );
    // Whatever happens next, the ended instance's DMA grants go to quarantine first.
    if let Some(dma_admin) = caps.dma_admin {
        match revoke_dma(syscalls, dma_admin, report.task_index) {
            Ok(0) | Err(RevokeError::Dma(DmaError::NotRegistered)) => {}
            Ok(slots) => log::info!(
                "task {}: {slots} DMA slot(s) quarantined",
                report.task_index
            ),
            Err(error) => log::warn!("task {}: DMA revoke failed: {error:?}", report.task_index),
        }
    }
    let outcome = match decide(&report) {
        Action::LeaveEnded => Ok(()),
        Action::Restart => match syscalls.task_restart(caps.tasks, report.task_index) {
            Ok(id) => {
                log::info!(
                    "restarted task {} as {}.{}",
                    report.task_index,
                    id.index(),
                    id.generation()
                );
                Ok(())
            }
            Err(Error::QuotaExceeded) => {
                log::warn!(
                    "task {} used all its restarts; it stays down",
                    report.task_index
                );
                Err(Error::QuotaExceeded)
            }
            Err(Error::InvalidArgument) => {
                log::info!(
                    "task {} is not restarted (policy: never)",
                    report.task_index
                );
                Err(Error::InvalidArgument)
            }
            Err(error) => {
                log::error!("restarting task {} failed: {error:?}", report.task_index);
                Err(error)
            }
        },
    };
    Some((report, outcome))
}

/// The serve loop: waits for reports forever.
pub fn serve<S: Syscalls>(
    syscalls: &S,
    endpoint: CapSlot,
    caps: Capabilities,
) -> Result<(), Error> {
    let mut message = Message::zeroed();
    loop {
        match syscalls.recv(endpoint, &mut message, Timeout::Forever, 0)? {
            Received::Message => {
                handle(syscalls, caps, &message);
            }
            Received::Notification(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_abi::TaskId;

    fn report(reason: FaultReason, detail: u64) -> FaultReport {
        FaultReport {
            task_index: 3,
            reason: reason.to_raw(),
            task_id: TaskId::new(3, 1),
            esr: 0x9200_0046,
            far: 8,
            elr: 0x20_1000,
            detail,
        }
    }

    #[test]
    fn clean_exits_stay_ended_everything_else_restarts() {
        assert_eq!(decide(&report(FaultReason::Exited, 0)), Action::LeaveEnded);
        assert_eq!(decide(&report(FaultReason::Exited, 1)), Action::Restart);
        assert_eq!(decide(&report(FaultReason::DataAbort, 0)), Action::Restart);
        assert_eq!(decide(&report(FaultReason::Killed, 0)), Action::Restart);
    }

    #[test]
    fn an_ended_task_is_revoked_at_the_dma_server_before_it_restarts() {
        extern crate std;
        use std::sync::{Arc, Mutex};
        use std::vec::Vec;

        use moat_abi::Syscall;
        use moat_dma_api::protocol::{Role, badge, encode_reply};
        use moat_testkit::FakeKernel;

        let kernel = FakeKernel::new();
        let supervisor = kernel.add_task("supervisor");
        let dma = kernel.add_task("dma");
        let driver = kernel.add_task("blk");
        let (_, serve) = kernel.create_endpoint(&supervisor, "serve:supervisor");
        let tasks = kernel.grant_task_control(&supervisor, "task-control");
        let (admin, serve_admin) = kernel.create_endpoint(&dma, "serve:dma-admin");
        let dma_admin = kernel.grant_endpoint(
            &supervisor,
            admin,
            "call:dma-admin",
            badge::encode(ClientIdentity(1), Role::Supervisor),
        );
        // A stand-in DMA server: records each revoke and quarantines 2 slots of identity 3.
        let revoked: Arc<Mutex<Vec<ClientIdentity>>> = Arc::default();
        let seen = revoked.clone();
        let server = dma.clone();
        kernel.set_pump(admin, move || {
            let mut request = Message::zeroed();
            server
                .recv(serve_admin, &mut request, Timeout::NonBlocking, 0)
                .expect("queued");
            let Ok(Request::Revoke { client }) = Request::decode(&request) else {
                panic!("not a revoke");
            };
            seen.lock().expect("not poisoned").push(client);
            let reply = if client == ClientIdentity(3) {
                Ok(Response::Slots(2))
            } else {
                Err(DmaError::NotRegistered)
            };
            let mut answer = Message::zeroed();
            encode_reply(&reply, &mut answer).expect("fits");
            server
                .reply(request.reply_capability().expect("a call"), &answer)
                .expect("the supervisor waits");
        });
        let caps = Capabilities {
            tasks,
            dma_admin: Some(dma_admin),
        };
        // The driver (identity 3) is revoked, then restarted; the DMA server itself cannot be
        // reached while it is down (`Dead` at once), and is restarted all the same.
        for (task, revokes) in [(&driver, 1), (&dma, 1)] {
            kernel.fault(task, FaultReason::DataAbort, 0x9200_0046, 8);
            let mut message = Message::zeroed();
            supervisor
                .recv(serve, &mut message, Timeout::NonBlocking, 0)
                .expect("a report");
            let (report, outcome) = handle(&supervisor, caps, &message).expect("a report");
            assert_eq!(report.task_index, task.index());
            assert_eq!(
                outcome,
                Ok(()),
                "restarted (the fake has no restart policy)"
            );
            assert_eq!(
                *revoked.lock().expect("not poisoned"),
                [ClientIdentity(3)][..revokes]
            );
        }
        // The revoke (a call) comes before the restart attempt, every time.
        let order: Vec<Syscall> = kernel
            .records()
            .iter()
            .filter(|record| record.task == supervisor.id())
            .map(|record| record.syscall)
            .filter(|syscall| matches!(syscall, Syscall::Call | Syscall::TaskRestart))
            .collect();
        assert_eq!(
            order,
            [
                Syscall::Call,
                Syscall::TaskRestart,
                Syscall::Call,
                Syscall::TaskRestart
            ]
        );
        assert_eq!(dma_identity(0), ClientIdentity(1));
    }

    #[test]
    fn reports_round_trip_through_messages() {
        let r = report(FaultReason::Undefined, 0);
        assert_eq!(FaultReport::from_message(&r.to_message()), Some(r));
        // A message from a task (not the kernel) is never taken for a report.
        let mut forged = r.to_message();
        forged.header.sender = TaskId::new(5, 0);
        assert_eq!(FaultReport::from_message(&forged), None);
    }
}
