//! The run queue: fixed priority levels, round-robin within a level, O(1) pick.
//!
//! Priority 0 is the most urgent. Each level is a doubly linked list threaded through fixed
//! arrays indexed by task slot, so insert, remove and rotate are O(1) and need no allocation; a
//! bitmap of non-empty levels makes picking the most urgent ready task one `trailing_zeros`.
//!
//! How the kernel uses it: a runnable task is in the queue, including while it runs. The task to
//! run is [`RunQueue::pick`]. On a timer tick or `Yield` the kernel calls
//! [`RunQueue::rotate`] on the current task, moving it behind its peers of the same priority;
//! when a task blocks or dies it is [`RunQueue::remove`]d; when it wakes it is
//! [`RunQueue::insert`]ed at the back of its level, and [`RunQueue::preempts`] tells whether it
//! should take the CPU from the current task.

/// Why a run-queue operation was refused. These are kernel bugs, not task errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunQueueError {
    /// The task index is not below the queue's task capacity.
    TaskOutOfRange,
    /// The priority is not below the number of levels.
    PriorityOutOfRange,
    /// The task is already queued.
    AlreadyQueued,
    /// The task is not queued.
    NotQueued,
}

const NIL: u16 = u16::MAX;
const NOT_QUEUED: u8 = u8::MAX;

/// A run queue for up to `TASKS` tasks (by slot index) over `LEVELS` priorities (at most 64).
#[derive(Clone, Debug)]
pub struct RunQueue<const TASKS: usize, const LEVELS: usize> {
    next: [u16; TASKS],
    previous: [u16; TASKS],
    level: [u8; TASKS],
    head: [u16; LEVELS],
    tail: [u16; LEVELS],
    non_empty: u64,
    len: usize,
}

impl<const TASKS: usize, const LEVELS: usize> Default for RunQueue<TASKS, LEVELS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const TASKS: usize, const LEVELS: usize> RunQueue<TASKS, LEVELS> {
    /// An empty run queue.
    pub const fn new() -> Self {
        const {
            assert!(LEVELS >= 1 && LEVELS <= 64, "one bitmap word of levels");
            assert!(TASKS < NIL as usize, "task indices fit below NIL");
        };
        RunQueue {
            next: [NIL; TASKS],
            previous: [NIL; TASKS],
            level: [NOT_QUEUED; TASKS],
            head: [NIL; LEVELS],
            tail: [NIL; LEVELS],
            non_empty: 0,
            len: 0,
        }
    }

    /// Number of queued tasks.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no task is queued.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The priority `task` is queued at, if it is queued.
    pub fn priority_of(&self, task: usize) -> Option<u8> {
        self.level
            .get(task)
            .copied()
            .filter(|level| *level != NOT_QUEUED)
    }

    /// Whether `task` is queued.
    pub fn contains(&self, task: usize) -> bool {
        self.priority_of(task).is_some()
    }

    /// Appends `task` at the back of level `priority`.
    pub fn insert(&mut self, task: usize, priority: u8) -> Result<(), RunQueueError> {
        let slot = *self.level.get(task).ok_or(RunQueueError::TaskOutOfRange)?;
        let level = usize::from(priority);
        if level >= LEVELS {
            return Err(RunQueueError::PriorityOutOfRange);
        }
        if slot != NOT_QUEUED {
            return Err(RunQueueError::AlreadyQueued);
        }
        self.link_back(task, level);
        self.len += 1;
        Ok(())
    }

    /// Takes `task` out of the queue (it blocked, exited or died).
    pub fn remove(&mut self, task: usize) -> Result<(), RunQueueError> {
        let level = self.queued_level(task)?;
        self.unlink(task, level);
        self.len -= 1;
        Ok(())
    }

    /// Moves `task` to the back of its level (time slice used up, or `Yield`).
    pub fn rotate(&mut self, task: usize) -> Result<(), RunQueueError> {
        let level = self.queued_level(task)?;
        if self.tail[level] != task as u16 {
            self.unlink(task, level);
            self.link_back(task, level);
        }
        Ok(())
    }

    /// Moves `task` to another priority, at the back of that level.
    pub fn set_priority(&mut self, task: usize, priority: u8) -> Result<(), RunQueueError> {
        let level = self.queued_level(task)?;
        if usize::from(priority) >= LEVELS {
            return Err(RunQueueError::PriorityOutOfRange);
        }
        self.unlink(task, level);
        self.link_back(task, usize::from(priority));
        Ok(())
    }

    /// The most urgent priority with a queued task.
    pub const fn highest_priority(&self) -> Option<u8> {
        if self.non_empty == 0 {
            None
        } else {
            Some(self.non_empty.trailing_zeros() as u8)
        }
    }

    /// The task to run: the front of the most urgent non-empty level. O(1).
    pub fn pick(&self) -> Option<usize> {
        let level = usize::from(self.highest_priority()?);
        Some(usize::from(self.head[level]))
    }

    /// Whether a queued task is strictly more urgent than `priority` (so a task running at
    /// `priority` should be preempted).
    pub const fn preempts(&self, priority: u8) -> bool {
        match self.highest_priority() {
            Some(highest) => highest < priority,
            None => false,
        }
    }

    /// The tasks queued at `priority`, front first (empty for a priority out of range).
    pub fn level(&self, priority: u8) -> impl Iterator<Item = usize> + '_ {
        let mut cursor = self.head.get(usize::from(priority)).copied().unwrap_or(NIL);
        core::iter::from_fn(move || {
            if cursor == NIL {
                return None;
            }
            let task = usize::from(cursor);
            cursor = self.next[task];
            Some(task)
        })
    }

    fn queued_level(&self, task: usize) -> Result<usize, RunQueueError> {
        match self.level.get(task) {
            None => Err(RunQueueError::TaskOutOfRange),
            Some(&NOT_QUEUED) => Err(RunQueueError::NotQueued),
            Some(&level) => Ok(usize::from(level)),
        }
    }

    fn link_back(&mut self, task: usize, level: usize) {
        // Cannot truncate: TASKS < NIL and LEVELS <= 64 (asserted in `new`).
        let index = task as u16;
        let old_tail = self.tail[level];
        self.previous[task] = old_tail;
        self.next[task] = NIL;
        if old_tail == NIL {
            self.head[level] = index;
        } else {
            self.next[usize::from(old_tail)] = index;
        }
        self.tail[level] = index;
        self.level[task] = level as u8;
        self.non_empty |= 1 << level;
    }

    fn unlink(&mut self, task: usize, level: usize) {
        let previous = self.previous[task];
        let next = self.next[task];
        if previous == NIL {
            self.head[level] = next;
        } else {
            self.next[usize::from(previous)] = next;
        }
        if next == NIL {
            self.tail[level] = previous;
        } else {
            self.previous[usize::from(next)] = previous;
        }
        self.next[task] = NIL;
        self.previous[task] = NIL;
        self.level[task] = NOT_QUEUED;
        if self.head[level] == NIL {
            self.non_empty &= !(1 << level);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn picks_most_urgent_and_round_robins() {
        let mut queue = RunQueue::<8, 4>::new();
        assert_eq!(queue.pick(), None);
        queue.insert(1, 2).expect("ok");
        queue.insert(2, 2).expect("ok");
        queue.insert(3, 3).expect("ok");
        assert_eq!(queue.pick(), Some(1));
        queue.rotate(1).expect("queued");
        assert_eq!(queue.pick(), Some(2));
        queue.rotate(2).expect("queued");
        assert_eq!(queue.pick(), Some(1));
        queue.insert(4, 0).expect("ok");
        assert_eq!(queue.pick(), Some(4));
        assert!(queue.preempts(2));
        assert!(!queue.preempts(0));
        queue.remove(4).expect("queued");
        queue.remove(1).expect("queued");
        queue.remove(2).expect("queued");
        assert_eq!(queue.pick(), Some(3));
        assert_eq!(queue.highest_priority(), Some(3));
        queue.set_priority(3, 1).expect("queued");
        assert_eq!(queue.priority_of(3), Some(1));
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn refuses_bad_requests() {
        let mut queue = RunQueue::<4, 2>::new();
        assert_eq!(queue.insert(4, 0), Err(RunQueueError::TaskOutOfRange));
        assert_eq!(queue.insert(0, 2), Err(RunQueueError::PriorityOutOfRange));
        queue.insert(0, 1).expect("ok");
        assert_eq!(queue.insert(0, 0), Err(RunQueueError::AlreadyQueued));
        assert_eq!(queue.remove(1), Err(RunQueueError::NotQueued));
        assert_eq!(queue.rotate(9), Err(RunQueueError::TaskOutOfRange));
        assert_eq!(
            queue.set_priority(0, 5),
            Err(RunQueueError::PriorityOutOfRange)
        );
        assert_eq!(queue.priority_of(0), Some(1), "failed call changes nothing");
        assert_eq!(queue.level(7).count(), 0);
    }

    #[derive(Clone, Debug)]
    enum Operation {
        Insert(usize, u8),
        Remove(usize),
        Rotate(usize),
        SetPriority(usize, u8),
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            (0usize..10, 0u8..5).prop_map(|(task, priority)| Operation::Insert(task, priority)),
            (0usize..10).prop_map(Operation::Remove),
            (0usize..10).prop_map(Operation::Rotate),
            (0usize..10, 0u8..5)
                .prop_map(|(task, priority)| Operation::SetPriority(task, priority)),
        ]
    }

    proptest! {
        /// Against a model of one FIFO per level: every level holds the same tasks in the same
        /// order, and `pick` is the front of the most urgent non-empty level.
        #[test]
        fn matches_model(operations in proptest::collection::vec(operation(), 0..200)) {
            const LEVELS: usize = 4;
            let mut queue = RunQueue::<8, LEVELS>::new();
            let mut model: Vec<VecDeque<usize>> = (0..LEVELS).map(|_| VecDeque::new()).collect();
            let find = |model: &Vec<VecDeque<usize>>, task: usize| {
                model.iter().position(|level| level.contains(&task))
            };
            for operation in operations {
                match operation {
                    Operation::Insert(task, priority) => {
                        let expected = if task >= 8 {
                            Err(RunQueueError::TaskOutOfRange)
                        } else if usize::from(priority) >= LEVELS {
                            Err(RunQueueError::PriorityOutOfRange)
                        } else if find(&model, task).is_some() {
                            Err(RunQueueError::AlreadyQueued)
                        } else {
                            model[usize::from(priority)].push_back(task);
                            Ok(())
                        };
                        prop_assert_eq!(queue.insert(task, priority), expected);
                    }
                    Operation::Remove(task) => {
                        let result = queue.remove(task);
                        match find(&model, task) {
                            Some(level) => {
                                model[level].retain(|t| *t != task);
                                prop_assert_eq!(result, Ok(()));
                            }
                            None => prop_assert!(result.is_err()),
                        }
                    }
                    Operation::Rotate(task) => {
                        let result = queue.rotate(task);
                        match find(&model, task) {
                            Some(level) => {
                                model[level].retain(|t| *t != task);
                                model[level].push_back(task);
                                prop_assert_eq!(result, Ok(()));
                            }
                            None => prop_assert!(result.is_err()),
                        }
                    }
                    Operation::SetPriority(task, priority) => {
                        let result = queue.set_priority(task, priority);
                        match find(&model, task) {
                            Some(level) if usize::from(priority) < LEVELS => {
                                model[level].retain(|t| *t != task);
                                model[usize::from(priority)].push_back(task);
                                prop_assert_eq!(result, Ok(()));
                            }
                            _ => prop_assert!(result.is_err()),
                        }
                    }
                }
                for (level, expected) in model.iter().enumerate() {
                    let actual: Vec<usize> = queue.level(level as u8).collect();
                    let expected: Vec<usize> = expected.iter().copied().collect();
                    prop_assert_eq!(actual, expected);
                }
                let expected_pick = model.iter().find_map(|level| level.front().copied());
                prop_assert_eq!(queue.pick(), expected_pick);
                prop_assert_eq!(queue.len(), model.iter().map(VecDeque::len).sum::<usize>());
            }
        }

        /// Round-robin: rotating the picked task repeatedly visits every task of the top level
        /// once per round, in insertion order.
        #[test]
        fn round_robin_is_fair(count in 1usize..8) {
            let mut queue = RunQueue::<8, 2>::new();
            for task in 0..count {
                queue.insert(task, 1).expect("room");
            }
            for round in 0..3 {
                for expected in 0..count {
                    let picked = queue.pick();
                    prop_assert_eq!(picked, Some(expected), "round {}", round);
                    queue.rotate(expected).expect("queued");
                }
            }
        }
    }
}
