//! Finding the task's initial capabilities by the names the system manifest gives them.
//!
//! Tasks never hard-code slot numbers: the kernel lists every initial capability with its
//! manifest name in the [`TaskInfo`] page, and code asks for it by name:
//!
//! ```ignore
//! let dma = moat_userlib::caps::expect("dma", CapabilityKind::Endpoint)?;
//! ```

use core::fmt;

use moat_abi::{CapSlot, CapabilityKind, TaskInfo};

/// Why a capability lookup failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapError {
    /// No task description is installed (only before the runtime started, or in host tests).
    NoTaskInfo,
    /// The task has no capability of that name.
    Missing,
    /// The capability exists but is of another kind (`found` is `None` for an unknown kind).
    WrongKind {
        /// The kind asked for.
        expected: CapabilityKind,
        /// The kind listed.
        found: Option<CapabilityKind>,
    },
}

impl fmt::Display for CapError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapError::NoTaskInfo => formatter.write_str("no task information page"),
            CapError::Missing => formatter.write_str("no such capability in the manifest"),
            CapError::WrongKind { expected, found } => {
                write!(
                    formatter,
                    "expected a {expected:?} capability, found {found:?}"
                )
            }
        }
    }
}

/// The slot of the capability named `name` in `info`.
pub fn find_in(info: &TaskInfo, name: &str) -> Option<CapSlot> {
    info.find_capability(name).map(|entry| entry.slot())
}

/// The slot of the capability named `name` in `info`, checked to be of `kind`.
pub fn expect_in(info: &TaskInfo, name: &str, kind: CapabilityKind) -> Result<CapSlot, CapError> {
    let entry = info.find_capability(name).ok_or(CapError::Missing)?;
    match entry.kind() {
        Ok(found) if found == kind => Ok(entry.slot()),
        found => Err(CapError::WrongKind {
            expected: kind,
            found: found.ok(),
        }),
    }
}

/// The slot of this task's capability named `name`.
pub fn find(name: &str) -> Option<CapSlot> {
    find_in(crate::task::info()?, name)
}

/// The slot of this task's capability named `name`, checked to be of `kind`.
pub fn expect(name: &str, kind: CapabilityKind) -> Result<CapSlot, CapError> {
    expect_in(crate::task::info().ok_or(CapError::NoTaskInfo)?, name, kind)
}

#[cfg(test)]
mod tests {
    use moat_abi::TaskId;

    use super::*;

    #[test]
    fn lookups_by_name_and_kind() {
        let mut info = TaskInfo::new(TaskId::new(2, 0), "blk").expect("valid");
        info.push_capability("dma", CapSlot(4), CapabilityKind::Endpoint)
            .expect("room");
        info.push_capability("irq", CapSlot(5), CapabilityKind::Irq)
            .expect("room");
        assert_eq!(find_in(&info, "dma"), Some(CapSlot(4)));
        assert_eq!(find_in(&info, "net"), None);
        assert_eq!(expect_in(&info, "irq", CapabilityKind::Irq), Ok(CapSlot(5)));
        assert_eq!(
            expect_in(&info, "irq", CapabilityKind::Endpoint),
            Err(CapError::WrongKind {
                expected: CapabilityKind::Endpoint,
                found: Some(CapabilityKind::Irq)
            })
        );
        assert_eq!(
            expect_in(&info, "mmio", CapabilityKind::Mmio),
            Err(CapError::Missing)
        );
    }
}
