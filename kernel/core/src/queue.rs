//! Bounded endpoint message queues with a per-sender limit, so one client cannot starve others.
//!
//! An endpoint's queue holds at most `N` messages in FIFO order. Each message is charged to a
//! [`SenderKey`] — the badge the kernel stamped, or the sending task for an unbadged capability —
//! and one key may have at most `per_sender_limit` messages waiting. `push` never blocks: a full
//! queue, or a sender at its limit, is [`Error::QueueFull`] for that sender alone.
//!
//! The guarantee this gives: as long as `per_sender_limit × senders ≤ N`, every sender can always
//! queue at least `per_sender_limit` messages, whatever the others do. The kernel sizes queues
//! from the manifest so this holds for the clients an endpoint is expected to serve.
//!
//! When a task dies its queued messages are purged ([`MessageQueue::purge_sender`]), so a
//! restarted server never sees requests addressed to, or from, a previous instance.
//!
//! The item type `T` is whatever the kernel queues: a [`moat_abi::Message`] plus, for a call, the
//! caller to reply to and any capability being transferred.

use heapless::Deque;
use moat_abi::{Error, TaskId};

/// Whom a queued message is charged to for the per-sender limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SenderKey {
    /// The badge of the endpoint capability (each client of a server gets its own badge).
    Badge(u64),
    /// The sending task's slot, for messages sent through an unbadged capability.
    Task(u16),
}

impl SenderKey {
    /// The key for a message stamped with `badge` from `sender`: the badge if it is non-zero,
    /// else the sending task (so unbadged senders do not share one allowance).
    pub const fn for_message(badge: u64, sender: TaskId) -> SenderKey {
        if badge != 0 {
            SenderKey::Badge(badge)
        } else {
            SenderKey::Task(sender.index())
        }
    }
}

/// One queued message and what the queue knows about its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued<T> {
    /// Whom the message is charged to.
    pub key: SenderKey,
    /// The task (instance) that sent it.
    pub sender: TaskId,
    /// The message itself.
    pub item: T,
}

/// A bounded FIFO of up to `N` messages with a per-sender limit.
#[derive(Debug)]
pub struct MessageQueue<T, const N: usize> {
    entries: Deque<Queued<T>, N>,
    per_sender_limit: usize,
}

impl<T, const N: usize> MessageQueue<T, N> {
    /// An empty queue in which one sender may have at most `per_sender_limit` messages waiting
    /// (clamped to `1..=N`).
    pub const fn new(per_sender_limit: usize) -> Self {
        let per_sender_limit = if per_sender_limit == 0 {
            1
        } else if per_sender_limit > N {
            N
        } else {
            per_sender_limit
        };
        MessageQueue {
            entries: Deque::new(),
            per_sender_limit,
        }
    }

    /// How many messages the queue holds at most.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The most messages one sender may have waiting.
    pub const fn per_sender_limit(&self) -> usize {
        self.per_sender_limit
    }

    /// Number of waiting messages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of messages waiting that are charged to `key`.
    pub fn outstanding(&self, key: SenderKey) -> usize {
        self.entries.iter().filter(|entry| entry.key == key).count()
    }

    /// Whether a message charged to `key` would be accepted now; [`Error::QueueFull`] if not.
    pub fn check_room(&self, key: SenderKey) -> Result<(), Error> {
        if self.entries.is_full() || self.outstanding(key) >= self.per_sender_limit {
            Err(Error::QueueFull)
        } else {
            Ok(())
        }
    }

    /// Queues `item` at the back, or returns [`Error::QueueFull`] (dropping `item`) when the
    /// queue is full or `key` already has its limit of messages waiting. Never blocks.
    pub fn push(&mut self, key: SenderKey, sender: TaskId, item: T) -> Result<(), Error> {
        self.check_room(key)?;
        self.entries
            .push_back(Queued { key, sender, item })
            .map_err(|_| Error::QueueFull)
    }

    /// Takes the oldest message.
    pub fn pop(&mut self) -> Option<Queued<T>> {
        self.entries.pop_front()
    }

    /// The oldest message, left in place.
    pub fn peek(&self) -> Option<&Queued<T>> {
        self.entries.front()
    }

    /// Removes every message for which `remove` returns true, keeping the others in order, and
    /// returns how many went.
    pub fn remove_where(&mut self, mut remove: impl FnMut(&Queued<T>) -> bool) -> usize {
        let mut removed = 0;
        for _ in 0..self.entries.len() {
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            if remove(&entry) {
                removed += 1;
            } else if self.entries.push_back(entry).is_err() {
                // Unreachable: we popped one entry before pushing it back.
                break;
            }
        }
        removed
    }

    /// Purges every message sent by the task instance `sender` (it died or was restarted) and
    /// returns how many went.
    pub fn purge_sender(&mut self, sender: TaskId) -> usize {
        self.remove_where(|entry| entry.sender == sender)
    }

    /// Drops every message (the serving task died: its clients' requests go with it).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The waiting messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Queued<T>> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    fn task(index: u16) -> TaskId {
        TaskId::new(index, 0)
    }

    #[test]
    fn fifo_and_bounds() {
        let mut queue = MessageQueue::<u32, 4>::new(4);
        for value in 0..4 {
            queue
                .push(SenderKey::Badge(1), task(1), value)
                .expect("room");
        }
        assert_eq!(
            queue.push(SenderKey::Badge(2), task(2), 9),
            Err(Error::QueueFull)
        );
        let order: Vec<u32> = core::iter::from_fn(|| queue.pop().map(|e| e.item)).collect();
        assert_eq!(order, [0, 1, 2, 3]);
        assert!(queue.is_empty());
    }

    #[test]
    fn per_sender_limit_protects_others() {
        let mut queue = MessageQueue::<u32, 8>::new(2);
        let flooder = SenderKey::Badge(1);
        queue.push(flooder, task(1), 0).expect("room");
        queue.push(flooder, task(1), 1).expect("room");
        assert_eq!(queue.push(flooder, task(1), 2), Err(Error::QueueFull));
        assert_eq!(queue.outstanding(flooder), 2);
        queue
            .push(SenderKey::Badge(2), task(2), 10)
            .expect("another client still gets in");
        assert_eq!(queue.pop().map(|e| e.item), Some(0));
        queue
            .push(flooder, task(1), 3)
            .expect("room again after a pop");
    }

    #[test]
    fn limit_is_clamped() {
        assert_eq!(MessageQueue::<u8, 4>::new(0).per_sender_limit(), 1);
        assert_eq!(MessageQueue::<u8, 4>::new(99).per_sender_limit(), 4);
    }

    #[test]
    fn unbadged_senders_are_told_apart() {
        assert_eq!(
            SenderKey::for_message(0, TaskId::new(3, 1)),
            SenderKey::Task(3)
        );
        assert_eq!(
            SenderKey::for_message(5, TaskId::new(3, 1)),
            SenderKey::Badge(5)
        );
    }

    #[test]
    fn purge_removes_only_the_dead_instance() {
        let mut queue = MessageQueue::<u32, 8>::new(8);
        let old = TaskId::new(1, 0);
        let new = old.next_generation();
        queue.push(SenderKey::Task(1), old, 1).expect("room");
        queue.push(SenderKey::Task(2), task(2), 2).expect("room");
        queue.push(SenderKey::Task(1), new, 3).expect("room");
        queue.push(SenderKey::Task(1), old, 4).expect("room");
        assert_eq!(queue.purge_sender(old), 2);
        let left: Vec<u32> = queue.iter().map(|e| e.item).collect();
        assert_eq!(left, [2, 3]);
        queue.clear();
        assert!(queue.is_empty());
    }

    #[derive(Clone, Debug)]
    enum Operation {
        Push(u16),
        Pop,
        Purge(u16),
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            4 => (0u16..5).prop_map(Operation::Push),
            2 => Just(Operation::Pop),
            1 => (0u16..5).prop_map(Operation::Purge),
        ]
    }

    proptest! {
        /// Against a plain model: the queue never exceeds its bounds, accepts a message exactly
        /// when there is room overall and for that sender (so a sender under its limit is never
        /// refused because of another sender's backlog beyond theirs), and delivers in FIFO order.
        #[test]
        fn matches_model(
            limit in 1usize..5,
            operations in proptest::collection::vec(operation(), 0..200),
        ) {
            const CAPACITY: usize = 6;
            let mut queue = MessageQueue::<u32, CAPACITY>::new(limit);
            let mut model: VecDeque<(u16, u32)> = VecDeque::new();
            let mut next = 0u32;
            for operation in operations {
                match operation {
                    Operation::Push(sender) => {
                        let key = SenderKey::Task(sender);
                        let mine = model.iter().filter(|(s, _)| *s == sender).count();
                        let room = model.len() < CAPACITY && mine < limit;
                        let result = queue.push(key, task(sender), next);
                        prop_assert_eq!(result.is_ok(), room);
                        if room {
                            model.push_back((sender, next));
                        } else {
                            prop_assert_eq!(result, Err(Error::QueueFull));
                        }
                        next += 1;
                    }
                    Operation::Pop => {
                        let got = queue.pop().map(|e| (e.sender.index(), e.item));
                        prop_assert_eq!(got, model.pop_front());
                    }
                    Operation::Purge(sender) => {
                        let before = model.len();
                        model.retain(|(s, _)| *s != sender);
                        prop_assert_eq!(queue.purge_sender(task(sender)), before - model.len());
                    }
                }
                prop_assert!(queue.len() <= CAPACITY);
                prop_assert_eq!(queue.len(), model.len());
                for sender in 0..5 {
                    prop_assert!(queue.outstanding(SenderKey::Task(sender)) <= limit);
                }
                let contents: Vec<(u16, u32)> =
                    queue.iter().map(|e| (e.sender.index(), e.item)).collect();
                let expected: Vec<(u16, u32)> = model.iter().copied().collect();
                prop_assert_eq!(contents, expected);
            }
        }

        /// Fairness: however hard one sender floods, another sender gets its full allowance in
        /// as long as the queue is sized for both.
        #[test]
        fn flooding_cannot_starve(limit in 1usize..4, flood in 0usize..50) {
            let mut queue = MessageQueue::<u32, 8>::new(limit);
            for value in 0..flood {
                let _ = queue.push(SenderKey::Badge(1), task(1), value as u32);
            }
            for value in 0..limit {
                prop_assert_eq!(queue.push(SenderKey::Badge(2), task(2), value as u32), Ok(()));
            }
        }
    }
}
