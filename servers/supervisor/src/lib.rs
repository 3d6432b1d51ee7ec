//! The supervisor's logic: what to do about each fault report, and its serve loop over the
//! [`Syscalls`] trait so it runs against the fake kernel in host tests.
//!
//! The kernel posts a [`FaultReport`] on the supervisor's endpoint whenever a task faults, is
//! killed or exits. The supervisor logs it and asks the kernel to restart the task; the kernel
//! enforces the manifest's restart policy (never, or at most N restarts) and refuses otherwise.
#![no_std]
#![forbid(unsafe_code)]

use moat_abi::{CapSlot, Error, FaultReason, FaultReport, Message, Timeout};
use moat_userlib::{Received, Syscalls};

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
    tasks: CapSlot,
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
    let outcome = match decide(&report) {
        Action::LeaveEnded => Ok(()),
        Action::Restart => match syscalls.task_restart(tasks, report.task_index) {
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
pub fn serve<S: Syscalls>(syscalls: &S, endpoint: CapSlot, tasks: CapSlot) -> Result<(), Error> {
    let mut message = Message::zeroed();
    loop {
        match syscalls.recv(endpoint, &mut message, Timeout::Forever, 0)? {
            Received::Message => {
                handle(syscalls, tasks, &message);
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
    fn reports_round_trip_through_messages() {
        let r = report(FaultReason::Undefined, 0);
        assert_eq!(FaultReport::from_message(&r.to_message()), Some(r));
        // A message from a task (not the kernel) is never taken for a report.
        let mut forged = r.to_message();
        forged.header.sender = TaskId::new(5, 0);
        assert_eq!(FaultReport::from_message(&forged), None);
    }
}
