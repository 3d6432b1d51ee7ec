//! The task table: fixed slots with generations, so ids of dead instances are detectable.
//!
//! A [`TaskId`] is a slot index plus the slot's generation. Killing a task bumps its slot's
//! generation at once, so every id of the dead instance — held by peers, stamped in queued
//! messages, captured in Reply capabilities — stops matching, and looking it up gives
//! [`Error::Dead`]; a restarted instance gets the new generation and a fresh id. The table holds
//! the kernel's per-task record `T` (address space, registers, capability table, …).

use moat_abi::{Error, TaskId};

#[derive(Debug)]
struct Slot<T> {
    generation: u16,
    task: Option<T>,
}

/// Up to `N` tasks, indexed by slot.
#[derive(Debug)]
pub struct TaskTable<T, const N: usize> {
    slots: [Slot<T>; N],
    live: usize,
}

impl<T, const N: usize> Default for TaskTable<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> TaskTable<T, N> {
    /// An empty table; every slot starts at generation 0.
    pub const fn new() -> Self {
        const { assert!(N <= TaskId::MAX_INDEX as usize + 1, "indices fit a TaskId") };
        TaskTable {
            slots: [const {
                Slot {
                    generation: 0,
                    task: None,
                }
            }; N],
            live: 0,
        }
    }

    /// Number of slots.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Number of live tasks.
    pub const fn len(&self) -> usize {
        self.live
    }

    /// Whether no task is live.
    pub const fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn id(&self, index: usize) -> TaskId {
        // Cannot truncate: N <= MAX_INDEX + 1 (asserted in `new`).
        TaskId::new(index as u16, self.slots[index].generation)
    }

    /// Creates a task in slot `index` (manifest tasks have fixed slots) and returns its id.
    /// Errors: [`Error::InvalidArgument`] for an index out of range, [`Error::SlotInUse`] if a
    /// task lives there.
    pub fn create_at(&mut self, index: usize, task: T) -> Result<TaskId, Error> {
        let slot = self.slots.get_mut(index).ok_or(Error::InvalidArgument)?;
        if slot.task.is_some() {
            return Err(Error::SlotInUse);
        }
        slot.task = Some(task);
        self.live += 1;
        Ok(self.id(index))
    }

    /// Creates a task in the lowest free slot, or returns [`Error::OutOfMemory`] when every slot
    /// is taken.
    pub fn create(&mut self, task: T) -> Result<TaskId, Error> {
        let index = self
            .slots
            .iter()
            .position(|slot| slot.task.is_none())
            .ok_or(Error::OutOfMemory)?;
        self.create_at(index, task)
    }

    fn check(&self, id: TaskId) -> Result<usize, Error> {
        let index = usize::from(id.index());
        let slot = self.slots.get(index).ok_or(Error::InvalidArgument)?;
        if slot.generation != id.generation() || slot.task.is_none() {
            return Err(Error::Dead);
        }
        Ok(index)
    }

    /// The live task `id` names. Errors: [`Error::InvalidArgument`] for an index out of range
    /// (including [`TaskId::KERNEL`]), [`Error::Dead`] if that instance died or was replaced.
    pub fn get(&self, id: TaskId) -> Result<&T, Error> {
        let index = self.check(id)?;
        self.slots[index].task.as_ref().ok_or(Error::Dead)
    }

    /// Mutable access to the live task `id` names; errors as for [`TaskTable::get`].
    pub fn get_mut(&mut self, id: TaskId) -> Result<&mut T, Error> {
        let index = self.check(id)?;
        self.slots[index].task.as_mut().ok_or(Error::Dead)
    }

    /// Whether `id` names a live task.
    pub fn is_alive(&self, id: TaskId) -> bool {
        self.check(id).is_ok()
    }

    /// The id of the live task in slot `index`, if any (the supervisor addresses tasks by index).
    pub fn current_id(&self, index: usize) -> Option<TaskId> {
        let slot = self.slots.get(index)?;
        slot.task.as_ref().map(|_| self.id(index))
    }

    /// The live task in slot `index` and its id, if any.
    pub fn get_by_index(&self, index: usize) -> Option<(TaskId, &T)> {
        let slot = self.slots.get(index)?;
        slot.task.as_ref().map(|task| (self.id(index), task))
    }

    /// The generation the next instance in slot `index` will get (or the live one has), if the
    /// index is in range.
    pub fn generation(&self, index: usize) -> Option<u16> {
        self.slots.get(index).map(|slot| slot.generation)
    }

    /// Ends the instance `id` names: its record is returned for the kernel to tear down, and the
    /// slot's generation is bumped so `id` is stale from now on. Errors as for
    /// [`TaskTable::get`]; killing an already dead instance is [`Error::Dead`].
    pub fn kill(&mut self, id: TaskId) -> Result<T, Error> {
        let index = self.check(id)?;
        let slot = &mut self.slots[index];
        let task = slot.task.take().ok_or(Error::Dead)?;
        slot.generation = slot.generation.wrapping_add(1);
        self.live -= 1;
        Ok(task)
    }

    /// Replaces whatever runs in slot `index` with `task`: the old instance, if any, is killed
    /// (and returned) and the new one gets a new generation. Error: [`Error::InvalidArgument`] for
    /// an index out of range.
    pub fn restart(&mut self, index: usize, task: T) -> Result<(TaskId, Option<T>), Error> {
        let old = match self.current_id(index) {
            Some(id) => Some(self.kill(id)?),
            None => None,
        };
        let id = self.create_at(index, task)?;
        Ok((id, old))
    }

    /// The live tasks and their ids, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (TaskId, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| slot.task.as_ref().map(|task| (self.id(index), task)))
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn create_lookup_kill() {
        let mut table = TaskTable::<&str, 4>::new();
        let supervisor = table.create_at(0, "supervisor").expect("free");
        let dma = table.create("dma").expect("free");
        assert_eq!(supervisor, TaskId::new(0, 0));
        assert_eq!(dma, TaskId::new(1, 0));
        assert_eq!(table.get(dma), Ok(&"dma"));
        assert_eq!(table.create_at(0, "again"), Err(Error::SlotInUse));
        assert_eq!(table.create_at(4, "far"), Err(Error::InvalidArgument));
        assert_eq!(table.kill(dma), Ok("dma"));
        assert_eq!(table.get(dma), Err(Error::Dead));
        assert_eq!(table.kill(dma), Err(Error::Dead));
        assert_eq!(table.get(TaskId::KERNEL), Err(Error::InvalidArgument));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn restart_makes_old_ids_dead() {
        let mut table = TaskTable::<u32, 2>::new();
        let first = table.create_at(1, 10).expect("free");
        let (second, old) = table.restart(1, 11).expect("in range");
        assert_eq!(old, Some(10));
        assert_eq!(second.index(), first.index());
        assert_ne!(second.generation(), first.generation());
        assert_eq!(table.get(first), Err(Error::Dead));
        assert_eq!(table.get(second), Ok(&11));
        assert_eq!(table.current_id(1), Some(second));
        assert_eq!(table.get_by_index(1), Some((second, &11)));
        *table.get_mut(second).expect("alive") = 12;
        assert_eq!(table.get(second), Ok(&12));
        // A restart of an empty slot just creates.
        let (fresh, none) = table.restart(0, 1).expect("in range");
        assert_eq!(none, None);
        assert_eq!(fresh, TaskId::new(0, 0));
        assert_eq!(table.restart(2, 0), Err(Error::InvalidArgument));
    }

    #[test]
    fn full_table() {
        let mut table = TaskTable::<u8, 2>::new();
        table.create(0).expect("free");
        table.create(1).expect("free");
        assert_eq!(table.create(2), Err(Error::OutOfMemory));
        assert_eq!(table.iter().map(|(_, t)| *t).collect::<Vec<_>>(), [0, 1]);
    }

    proptest! {
        /// No id handed out ever names a later instance: after any sequence of kills and
        /// restarts, exactly the most recent id of each slot is alive (until 65,536 restarts of
        /// one slot wrap its generation, which this test stays far below).
        #[test]
        fn stale_ids_stay_dead(operations in proptest::collection::vec((0usize..3, any::<bool>()), 0..100)) {
            let mut table = TaskTable::<usize, 3>::new();
            let mut issued: Vec<TaskId> = Vec::new();
            for (index, restart) in operations {
                if restart {
                    let (id, _) = table.restart(index, index).expect("in range");
                    issued.push(id);
                } else if let Some(id) = table.current_id(index) {
                    prop_assert!(table.kill(id).is_ok());
                }
                for id in &issued {
                    let newest = issued.iter().rev().find(|other| other.index() == id.index());
                    let should_live = newest == Some(id)
                        && table.current_id(usize::from(id.index())) == Some(*id);
                    prop_assert_eq!(table.is_alive(*id), should_live);
                    if !should_live {
                        prop_assert_eq!(table.get(*id), Err(Error::Dead));
                    }
                }
                prop_assert_eq!(table.len(), table.iter().count());
            }
        }
    }
}
