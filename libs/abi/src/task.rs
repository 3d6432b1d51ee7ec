//! Task ids: a table index plus a generation, so a stale id is detectable.

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Names one instance of a task: the index of its slot in the kernel's task table (low 16 bits)
/// and the generation of that slot (high 16 bits).
///
/// The kernel bumps a slot's generation whenever the task in it dies or is restarted, so an id
/// held by a peer stops matching and IPC through it fails with [`Error::Dead`] instead of
/// reaching the new instance. Generations wrap after 65,536 restarts of one slot.
///
/// [`Error::Dead`]: crate::Error::Dead
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(transparent)]
pub struct TaskId(pub u32);

impl TaskId {
    /// The sender of messages the kernel itself originates (e.g. fault reports).
    pub const KERNEL: TaskId = TaskId::new(u16::MAX, 0);
    /// The largest index a real task can have (the kernel's is `u16::MAX`).
    pub const MAX_INDEX: u16 = u16::MAX - 1;

    /// The id of the task in slot `index` at `generation`.
    pub const fn new(index: u16, generation: u16) -> TaskId {
        TaskId((generation as u32) << 16 | index as u32)
    }

    /// The slot index in the task table.
    pub const fn index(self) -> u16 {
        self.0 as u16
    }

    /// The generation of the slot this id was issued for.
    pub const fn generation(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The id the same slot gets after its current instance dies (the generation wraps).
    pub const fn next_generation(self) -> TaskId {
        TaskId::new(self.index(), self.generation().wrapping_add(1))
    }

    /// The raw value as passed in registers.
    pub const fn to_raw(self) -> u32 {
        self.0
    }

    /// An id from its raw register value. Every value is a well-formed id; whether it names a
    /// live task is for the kernel to decide.
    pub const fn from_raw(raw: u32) -> TaskId {
        TaskId(raw)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "TaskId({}.{})", self.index(), self.generation())
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == TaskId::KERNEL {
            formatter.write_str("kernel")
        } else {
            write!(formatter, "task {}.{}", self.index(), self.generation())
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn packs_index_low_and_generation_high() {
        let id = TaskId::new(0x1234, 0xabcd);
        assert_eq!(id.to_raw(), 0xabcd_1234);
        assert_eq!(id.index(), 0x1234);
        assert_eq!(id.generation(), 0xabcd);
        assert_eq!(TaskId::from_raw(id.to_raw()), id);
    }

    #[test]
    fn next_generation_keeps_index_and_wraps() {
        let id = TaskId::new(7, u16::MAX);
        let next = id.next_generation();
        assert_eq!(next.index(), 7);
        assert_eq!(next.generation(), 0);
        assert_ne!(next, id);
    }

    #[test]
    fn formats() {
        assert_eq!(format!("{:?}", TaskId::new(3, 2)), "TaskId(3.2)");
        assert_eq!(format!("{}", TaskId::KERNEL), "kernel");
        assert_eq!(format!("{}", TaskId::new(1, 0)), "task 1.0");
    }
}
