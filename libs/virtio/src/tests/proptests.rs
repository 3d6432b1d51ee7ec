//! Property tests: random interleavings of requests, good completions and hostile used-ring
//! contents never panic, never complete a token twice, and never report more bytes written
//! than a request's device-writable capacity.

use std::collections::{HashMap, HashSet};
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use crate::fake::{Chain, DeviceBus, FakeMemory, FakeQueueDevice, FakeRegion};
use crate::memory::Segment;
use crate::queue::{SplitQueue, UsedError};

const BASE: u64 = 0x8000_0000;
const DATA: u64 = BASE + 0x2_0000;

#[derive(Clone, Debug)]
enum Op {
    /// Add a request of `count` segments; bit i of `writable` makes segment i writable (they
    /// are sorted readable-first, and a mask that breaks the order is also tried).
    Add {
        count: usize,
        writable: u8,
        len: u32,
    },
    /// The device takes the next available chain.
    DevicePop,
    /// The device completes one chain it took, with a length within its capacity.
    Complete { pick: usize, fraction: u8 },
    /// The device completes one chain it took, claiming more than its capacity.
    Overflow { pick: usize, extra: u32 },
    /// The device completes a chain again.
    Replay { pick: usize },
    /// An arbitrary used entry, published.
    Hostile { id: u32, len: u32 },
    /// An arbitrary used entry, not published.
    Unpublished { position: u16, id: u32, len: u32 },
    /// The used index jumps, the driver polls, the index is restored.
    Jump { idx: u16, polls: u8 },
    /// The host rewrites descriptor addresses and lengths.
    Scribble { byte: u8 },
    /// The driver drains up to `count` completions.
    Pop { count: u8 },
    /// The driver asks whether to notify.
    Notify,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..=4, any::<u8>(), 1u32..=4096)
            .prop_map(|(count, writable, len)| Op::Add { count, writable, len }),
        3 => Just(Op::DevicePop),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(pick, fraction)| Op::Complete { pick, fraction }),
        1 => (any::<usize>(), 1u32..=u32::MAX).prop_map(|(pick, extra)| Op::Overflow { pick, extra }),
        1 => any::<usize>().prop_map(|pick| Op::Replay { pick }),
        1 => (prop_oneof![0u32..40, any::<u32>()], any::<u32>())
            .prop_map(|(id, len)| Op::Hostile { id, len }),
        1 => (any::<u16>(), any::<u32>(), any::<u32>())
            .prop_map(|(position, id, len)| Op::Unpublished { position, id, len }),
        1 => (any::<u16>(), 0u8..4).prop_map(|(idx, polls)| Op::Jump { idx, polls }),
        1 => any::<u8>().prop_map(|byte| Op::Scribble { byte }),
        4 => (1u8..=16).prop_map(|count| Op::Pop { count }),
        1 => Just(Op::Notify),
    ]
}

struct Model {
    /// serial -> (writable capacity, chain length) for requests added and not yet over.
    open: HashMap<u64, (u64, usize)>,
    /// serials already reported (completed or failed).
    over: HashSet<u64>,
    /// Chains the device took and has not completed (well-behaved view).
    taken: Vec<Chain>,
    /// Chains the device completed (for replays).
    done: Vec<Chain>,
}

fn check_pop(
    queue: &mut SplitQueue<FakeRegion>,
    model: &mut Model,
    result: Result<crate::queue::Completion, UsedError>,
) -> Result<(), TestCaseError> {
    let token = match result {
        Ok(completion) => {
            let (capacity, _) = model
                .open
                .get(&completion.token.serial())
                .copied()
                .ok_or_else(|| TestCaseError::fail("completed a token that is not open"))?;
            prop_assert!(u64::from(completion.written) <= capacity);
            completion.token
        }
        Err(UsedError::LengthTooLarge {
            token,
            written,
            capacity,
        }) => {
            prop_assert!(u64::from(written) > capacity);
            token
        }
        Err(_) => return Ok(()),
    };
    prop_assert!(token.slot() < usize::from(queue.size()));
    prop_assert!(model.over.insert(token.serial()), "token reported twice");
    prop_assert!(model.open.remove(&token.serial()).is_some());
    Ok(())
}

fn run(size: u16, event_idx: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let memory = FakeMemory::new(0x4_0000, BASE);
    let bytes = SplitQueue::<FakeRegion>::region_size(size).expect("size");
    let region = memory.region(0, bytes).expect("fits");
    let mut queue = SplitQueue::new(0, size, region, event_idx).expect("queue");
    let mut device = FakeQueueDevice::new(memory.clone(), size, queue.addresses());
    let mut model = Model {
        open: HashMap::new(),
        over: HashSet::new(),
        taken: Vec::new(),
        done: Vec::new(),
    };

    for op in ops {
        match op {
            Op::Add {
                count,
                writable,
                len,
            } => {
                let mut segments: Vec<Segment> = (0..count)
                    .map(|i| Segment {
                        address: DATA + i as u64 * 0x1000,
                        len: len / (i as u32 + 1) + 1,
                        writable: writable & (1 << i) != 0,
                    })
                    .collect();
                let ordered = writable & 0x80 == 0;
                if ordered {
                    segments.sort_by_key(|s| s.writable);
                }
                let capacity: u64 = segments
                    .iter()
                    .filter(|s| s.writable)
                    .map(|s| u64::from(s.len))
                    .sum();
                let free = queue.free_descriptors();
                match queue.add(&segments) {
                    Ok(token) => {
                        prop_assert!(count <= free);
                        prop_assert!(
                            model
                                .open
                                .insert(token.serial(), (capacity, count))
                                .is_none()
                        );
                    }
                    Err(_) => prop_assert!(count > free || !ordered),
                }
            }
            Op::DevicePop => {
                if let Some(chain) = device.pop() {
                    model.taken.push(chain);
                }
            }
            Op::Complete { pick, fraction } => {
                if !model.taken.is_empty() {
                    let chain = model.taken.swap_remove(pick % model.taken.len());
                    let capacity = chain.writable_capacity();
                    let written = (capacity * u64::from(fraction) / 255) as u32;
                    device.complete(chain.head, written);
                    model.done.push(chain);
                }
            }
            Op::Overflow { pick, extra } => {
                if !model.taken.is_empty() {
                    let chain = model.taken.swap_remove(pick % model.taken.len());
                    let written = chain
                        .writable_capacity()
                        .saturating_add(u64::from(extra))
                        .min(u64::from(u32::MAX)) as u32;
                    device.complete(chain.head, written);
                    model.done.push(chain);
                }
            }
            Op::Replay { pick } => {
                if !model.done.is_empty() {
                    let chain = &model.done[pick % model.done.len()];
                    device.complete(chain.head, 0);
                }
            }
            Op::Hostile { id, len } => device.push_used(id, len),
            Op::Unpublished { position, id, len } => device.write_used_entry(position, id, len),
            Op::Jump { idx, polls } => {
                let saved = device.used_idx();
                device.set_used_idx(idx);
                let mut consumed = false;
                for _ in 0..polls {
                    if let Some(result) = queue.pop_used() {
                        consumed |= !matches!(result, Err(UsedError::IndexJump { .. }));
                        check_pop(&mut queue, &mut model, result)?;
                    }
                }
                // If the driver consumed entries up to the new index, the device stays there.
                if !consumed {
                    device.set_used_idx(saved);
                }
            }
            Op::Scribble { byte } => {
                for descriptor in 0..u64::from(size) {
                    let junk = [byte ^ descriptor as u8; 12];
                    memory.write(BASE + 16 * descriptor, &junk);
                }
            }
            Op::Pop { count } => {
                for _ in 0..count {
                    match queue.pop_used() {
                        Some(result) => check_pop(&mut queue, &mut model, result)?,
                        None => break,
                    }
                }
            }
            Op::Notify => {
                let _ = queue.should_notify();
            }
        }
        // Private accounting always adds up.
        prop_assert_eq!(queue.in_flight(), model.open.len());
        let held: usize = model.open.values().map(|&(_, len)| len).sum();
        prop_assert_eq!(queue.free_descriptors() + held, usize::from(size));
        prop_assert_eq!(queue.outstanding().count(), model.open.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_interleavings_keep_every_invariant(
        size in prop_oneof![Just(1u16), Just(2), Just(4), Just(8), Just(16)],
        event_idx in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run(size, event_idx, ops)?;
    }
}
