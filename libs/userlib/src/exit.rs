//! Exit codes and the [`Termination`] trait that turns a task's `main` result into one.

use core::fmt::Debug;

/// The task finished its work.
pub const EXIT_SUCCESS: u64 = 0;
/// `main` returned an error.
pub const EXIT_FAILURE: u64 = 1;
/// The task panicked.
pub const EXIT_PANIC: u64 = 101;
/// The task information page was missing or malformed; the task never reached `main`.
pub const EXIT_BAD_TASK_INFO: u64 = 102;

/// A value `main` may return: `()`, an exit code, or a `Result` whose error is logged.
pub trait Termination {
    /// The exit code to report.
    fn report(self) -> u64;
}

impl Termination for () {
    fn report(self) -> u64 {
        EXIT_SUCCESS
    }
}

impl Termination for u64 {
    fn report(self) -> u64 {
        self
    }
}

impl Termination for u32 {
    fn report(self) -> u64 {
        u64::from(self)
    }
}

impl Termination for core::convert::Infallible {
    fn report(self) -> u64 {
        match self {}
    }
}

impl<T: Termination, E: Debug> Termination for Result<T, E> {
    fn report(self) -> u64 {
        match self {
            Ok(value) => value.report(),
            Err(error) => {
                log::error!("main failed: {error:?}");
                EXIT_FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_to_codes() {
        assert_eq!(().report(), EXIT_SUCCESS);
        assert_eq!(7u64.report(), 7);
        assert_eq!(Ok::<(), ()>(()).report(), EXIT_SUCCESS);
        assert_eq!(Ok::<u32, ()>(3).report(), 3);
        assert_eq!(Err::<(), _>("boom").report(), EXIT_FAILURE);
    }
}
