//! The split virtqueue against well-behaved and hostile fake devices.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::vec;
use std::vec::Vec;

use moat_dma_api::{Bounce, FakeWindow, FromDevice, ToDevice, fake};

use crate::fake::{DeviceBus, FakeMemory, FakeMmioDevice, FakeQueueDevice, FakeRegion};
use crate::features::{EVENT_IDX, VERSION_1};
use crate::memory::{DeviceBuffer, Segment, SharedRegion};
use crate::queue::{AddError, Completion, SetupError, SplitQueue, Token, UsedError};
use crate::transport::Transport;

const BASE: u64 = 0x4_0000_0000;
const MEMORY: usize = 1 << 20;
const DATA: u64 = BASE + 0x4_0000;

struct Rig {
    queue: SplitQueue<FakeRegion>,
    device: FakeQueueDevice<FakeMemory>,
    memory: FakeMemory,
}

fn rig(size: u16, event_idx: bool) -> Rig {
    let memory = FakeMemory::new(MEMORY, BASE);
    let bytes = SplitQueue::<FakeRegion>::region_size(size).expect("valid size");
    let region = memory.region(0, bytes).expect("fits");
    let queue = SplitQueue::new(0, size, region, event_idx).expect("queue");
    let device = FakeQueueDevice::new(memory.clone(), size, queue.addresses());
    Rig {
        queue,
        device,
        memory,
    }
}

/// A request: a 16-byte header the device reads, then `writable` bytes it writes.
fn request(n: u64, writable: u32) -> [Segment; 2] {
    let at = DATA + n * 0x1000;
    [
        Segment::readable(at, 16),
        Segment::writable(at + 16, writable),
    ]
}

fn drain(queue: &mut SplitQueue<FakeRegion>) -> Vec<Result<Completion, UsedError>> {
    let mut out = Vec::new();
    for _ in 0..usize::from(queue.size()) * 2 {
        match queue.pop_used() {
            Some(result) => out.push(result),
            None => return out,
        }
    }
    panic!("pop_used did not run dry");
}

#[test]
fn layout_sizes_and_size_checks() {
    // 16 N + (6 + 2 N) rounded to 4, + 6 + 8 N.
    assert_eq!(SplitQueue::<FakeRegion>::region_size(1), Some(16 + 8 + 14));
    assert_eq!(
        SplitQueue::<FakeRegion>::region_size(256),
        Some(4096 + 520 + 2054)
    );
    assert_eq!(SplitQueue::<FakeRegion>::region_size(0), None);
    assert_eq!(SplitQueue::<FakeRegion>::region_size(48), None);
    assert!(SplitQueue::<FakeRegion>::region_size(32768).is_some());

    assert_eq!(SplitQueue::<FakeRegion>::fit_size(256, 64), 64);
    assert_eq!(SplitQueue::<FakeRegion>::fit_size(100, 128), 64);
    assert_eq!(
        SplitQueue::<FakeRegion>::fit_size(u16::MAX, u16::MAX),
        32768
    );
    assert_eq!(SplitQueue::<FakeRegion>::fit_size(1, 8), 1);
    assert_eq!(SplitQueue::<FakeRegion>::fit_size(0, 8), 0);

    let memory = FakeMemory::new(MEMORY, BASE);
    let small = memory.region(0, 100).expect("fits");
    assert!(matches!(
        SplitQueue::new(0, 16, small, false),
        Err(SetupError::RegionTooSmall { .. })
    ));
    let misaligned = memory.region(8, 4096).expect("fits");
    assert_eq!(
        SplitQueue::new(0, 16, misaligned, false).err(),
        Some(SetupError::Misaligned(BASE + 8))
    );
    let region = memory.region(0, 4096).expect("fits");
    assert_eq!(
        SplitQueue::new(0, 12, region, false).err(),
        Some(SetupError::BadSize(12))
    );
}

#[test]
fn one_request_round_trip() {
    let Rig {
        mut queue,
        mut device,
        memory,
    } = rig(16, false);
    memory.write(DATA, &[0x5a; 16]);
    let token = queue.add(&request(0, 512)).expect("added");
    assert_eq!(queue.in_flight(), 1);
    assert_eq!(queue.free_descriptors(), 14);
    assert!(queue.should_notify());

    let chain = device.pop().expect("available");
    assert_eq!(chain.head as usize, token.slot());
    assert_eq!(chain.segments, request(0, 512));
    assert_eq!(chain.read(&memory), Some(vec![0x5a; 16]));
    assert_eq!(chain.write(&memory, &[1; 100]), Some(100));
    device.complete(chain.head, 100);

    assert_eq!(
        queue.pop_used(),
        Some(Ok(Completion {
            token,
            written: 100
        }))
    );
    assert_eq!(queue.pop_used(), None);
    assert_eq!(queue.in_flight(), 0);
    assert_eq!(queue.free_descriptors(), 16);
    let mut out = [0; 100];
    assert!(memory.read(DATA + 16, &mut out));
    assert_eq!(out, [1; 100]);
}

#[test]
fn many_requests_in_flight_complete_in_any_order() {
    let Rig {
        mut queue,
        mut device,
        ..
    } = rig(64, false);
    let tokens: Vec<Token> = (0..32)
        .map(|n| queue.add(&request(n, 64)).expect("room"))
        .collect();
    assert_eq!(queue.free_descriptors(), 0);
    assert_eq!(
        queue.add(&request(99, 64)),
        Err(AddError::Full { needed: 2, free: 0 })
    );
    let mut chains: Vec<_> = core::iter::from_fn(|| device.pop()).collect();
    assert_eq!(chains.len(), 32);
    // Complete in an interleaved order: odd positions backwards, then even ones.
    chains.sort_by_key(|chain| (chain.head % 4 == 0, u16::MAX - chain.head));
    for chain in &chains {
        device.complete(chain.head, 10);
    }
    let done: Vec<Token> = drain(&mut queue)
        .into_iter()
        .map(|result| result.expect("good device").token)
        .collect();
    assert_eq!(done.len(), 32);
    let unique: HashSet<_> = done.iter().collect();
    assert_eq!(unique.len(), 32);
    assert_eq!(unique, tokens.iter().collect());
    assert_eq!(queue.free_descriptors(), 64);
}

#[test]
fn indices_wrap_past_65536() {
    let Rig {
        mut queue,
        mut device,
        ..
    } = rig(4, false);
    let mut serials = HashSet::new();
    for round in 0..70_000u64 {
        let token = queue.add(&[Segment::writable(DATA, 8)]).expect("room");
        let chain = device.pop().expect("available");
        device.complete(chain.head, (round % 8) as u32);
        let completion = queue.pop_used().expect("one").expect("good");
        assert_eq!(completion.token, token);
        assert_eq!(u64::from(completion.written), round % 8);
        assert!(serials.insert(token.serial()));
        assert_eq!(queue.pop_used(), None);
    }
    assert_eq!(queue.free_descriptors(), 4);
}

#[test]
fn queue_full_then_room_again() {
    let Rig {
        mut queue,
        mut device,
        ..
    } = rig(8, false);
    let long = [Segment::readable(DATA, 1); 5];
    queue.add(&long).expect("fits");
    assert_eq!(queue.add(&long), Err(AddError::Full { needed: 5, free: 3 }));
    queue.add(&long[..3]).expect("fits exactly");
    assert_eq!(
        queue.add(&long[..1]),
        Err(AddError::Full { needed: 1, free: 0 })
    );
    let first = device.pop().expect("first");
    assert_eq!(first.segments.len(), 5);
    device.complete(first.head, 0);
    assert!(queue.pop_used().expect("one").is_ok());
    queue.add(&long).expect("room again");
}

#[test]
fn malformed_requests_are_refused_without_publishing() {
    let Rig {
        mut queue, device, ..
    } = rig(8, false);
    assert_eq!(queue.add(&[]), Err(AddError::NoSegments));
    assert_eq!(
        queue.add(&[Segment::readable(DATA, 0)]),
        Err(AddError::EmptySegment)
    );
    assert_eq!(
        queue.add(&[Segment::writable(DATA, 4), Segment::readable(DATA, 4)]),
        Err(AddError::ReadableAfterWritable)
    );
    assert_eq!(device.avail_idx(), Some(0));
    assert_eq!(queue.free_descriptors(), 8);
    assert!(!queue.should_notify());
}

#[test]
fn ids_out_of_range_are_errors_and_the_queue_keeps_working() {
    let Rig {
        mut queue,
        mut device,
        ..
    } = rig(8, false);
    let token = queue.add(&request(0, 64)).expect("added");
    device.push_used(8, 0);
    device.push_used(u32::MAX, 0);
    device.push_used(0x1_0000, 0);
    let chain = device.pop().expect("available");
    device.complete(chain.head, 64);
    assert_eq!(
        drain(&mut queue),
        [
            Err(UsedError::IdOutOfRange { id: 8 }),
            Err(UsedError::IdOutOfRange { id: u32::MAX }),
            Err(UsedError::IdOutOfRange { id: 0x1_0000 }),
            Ok(Completion { token, written: 64 }),
        ]
    );
    assert_eq!(queue.free_descriptors(), 8);
}

#[test]
fn ids_that_are_not_outstanding_heads_are_errors() {
    let Rig {
        mut queue,
        mut device,
        ..
    } = rig(8, false);
    let three = [
        Segment::readable(DATA, 16),
        Segment::readable(DATA + 16, 16),
        Segment::writable(DATA + 32, 16),
    ];
    let token = queue.add(&three).expect("added");
    let chain = device.pop().expect("available");
    // Never used, and the middle of the chain.
    device.push_used(7, 0);
    device.push_used(u32::from(chain.head) + 1, 0);
    assert_eq!(
        drain(&mut queue),
        [
            Err(UsedError::NotOutstanding { id: 7 }),
            Err(UsedError::NotOutstanding { id: chain.head + 1 }),
        ]
    );
    assert_eq!(queue.in_flight(), 1);
    device.complete(chain.head, 16);
    assert_eq!(
        queue.pop_used(),
        Some(Ok(Completion { token, written: 16 }))
    );
}

#[test]
fn repeated_completions_complete_once() {
    let Rig {
        mut queue,
        mut device,
        ..
    } = rig(8, false);
    let token = queue.add(&request(0, 64)).expect("added");
    let chain = device.pop().expect("available");
    device.complete(chain.head, 1);
    device.complete(chain.head, 1);
    device.complete(chain.head, 1);
    assert_eq!(
        drain(&mut queue),
        [
            Ok(Completion { token, written: 1 }),
            Err(UsedError::NotOutstanding { id: chain.head }),
            Err(UsedError::NotOutstanding { id: chain.head }),
        ]
    );
    // The head is reused by the next request, which gets a new token; a replay of the old
    // completion after that is indistinguishable from the device finishing the new request,
    // but it is the new token that is reported, once.
    let next = queue.add(&request(1, 64)).expect("added");
    assert_ne!(next, token);
    device.complete(chain.head, 2);
    device.complete(chain.head, 2);
    let results = drain(&mut queue);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(queue.in_flight(), 0);
}

#[test]
fn lengths_beyond_the_writable_capacity_fail_the_request() {
    let Rig {
        mut queue,
        mut device,
        ..
    } = rig(8, false);
    let token = queue.add(&request(0, 512)).expect("added");
    let read_only = queue.add(&[Segment::readable(DATA, 4096)]).expect("added");
    let chain = device.pop().expect("first");
    device.complete(chain.head, 513);
    let chain = device.pop().expect("second");
    device.complete(chain.head, 1);
    assert_eq!(
        drain(&mut queue),
        [
            Err(UsedError::LengthTooLarge {
                token,
                written: 513,
                capacity: 512
            }),
            Err(UsedError::LengthTooLarge {
                token: read_only,
                written: 1,
                capacity: 0
            }),
        ]
    );
    assert_eq!(
        UsedError::LengthTooLarge {
            token,
            written: 0,
            capacity: 0
        }
        .token(),
        Some(token)
    );
    // Both requests are over and their descriptors free.
    assert_eq!(queue.in_flight(), 0);
    assert_eq!(queue.free_descriptors(), 8);
    // Exactly the capacity is fine.
    let token = queue.add(&request(0, 512)).expect("added");
    let chain = device.pop().expect("third");
    device.complete(chain.head, 512);
    assert_eq!(
        queue.pop_used(),
        Some(Ok(Completion {
            token,
            written: 512
        }))
    );
}

#[test]
fn a_used_index_that_jumps_is_an_error_until_it_is_sane() {
    let Rig {
        mut queue,
        mut device,
        ..
    } = rig(8, false);
    let token = queue.add(&request(0, 8)).expect("added");
    let chain = device.pop().expect("available");
    device.write_used_entry(0, u32::from(chain.head), 8);
    for idx in [9, 1000, u16::MAX] {
        device.set_used_idx(idx);
        for _ in 0..3 {
            assert_eq!(
                queue.pop_used(),
                Some(Err(UsedError::IndexJump {
                    used_idx: idx,
                    last_used: 0
                }))
            );
        }
    }
    assert_eq!(queue.in_flight(), 1);
    // Exactly the queue size ahead is allowed (entries then checked one by one).
    device.set_used_idx(8);
    let results = drain(&mut queue);
    assert_eq!(results[0], Ok(Completion { token, written: 8 }));
    assert_eq!(results.len(), 8);
    assert!(results[1..].iter().all(|r| r.is_err()));
    // Moving the index backwards is a jump too.
    device.set_used_idx(7);
    assert!(matches!(
        queue.pop_used(),
        Some(Err(UsedError::IndexJump { .. }))
    ));
}

#[test]
fn entries_published_without_an_index_are_not_seen() {
    let Rig {
        mut queue, device, ..
    } = rig(8, false);
    queue.add(&request(0, 8)).expect("added");
    device.write_used_entry(0, 0, 8);
    assert_eq!(queue.pop_used(), None);
}

#[test]
fn each_used_field_is_read_once_even_if_it_changes_between_reads() {
    let Rig {
        mut queue,
        mut device,
        memory,
    } = rig(8, false);
    let first = queue.add(&request(0, 64)).expect("added");
    let second = queue.add(&request(1, 64)).expect("added");
    let a = device.pop().expect("a");
    let b = device.pop().expect("b");
    device.complete(a.head, 10);
    let used = queue.addresses().device - BASE;
    let entry_id = used as usize + 4;
    let entry_len = entry_id + 4;
    // On every read the host rewrites the entry: the id to the other request and the length to
    // something huge, and counts the reads of each field.
    let id_reads = Arc::new(AtomicUsize::new(0));
    let len_reads = Arc::new(AtomicUsize::new(0));
    let (ids, lens) = (id_reads.clone(), len_reads.clone());
    let other = b.head;
    memory.set_read_hook(move |event, bytes| {
        if event.offset == entry_id {
            ids.fetch_add(1, Ordering::Relaxed);
        }
        if event.offset == entry_len {
            lens.fetch_add(1, Ordering::Relaxed);
            // Change the id after the driver has read it.
            bytes[entry_id..entry_id + 4].copy_from_slice(&u32::from(other).to_le_bytes());
        }
    });
    assert_eq!(
        queue.pop_used(),
        Some(Ok(Completion {
            token: first,
            written: 10
        }))
    );
    assert_eq!(id_reads.load(Ordering::Relaxed), 1);
    assert_eq!(len_reads.load(Ordering::Relaxed), 1);
    memory.clear_read_hook();
    // The other request was not completed by the rewritten entry.
    assert_eq!(queue.pop_used(), None);
    assert_eq!(queue.in_flight(), 1);
    device.complete(b.head, 3);
    assert_eq!(
        queue.pop_used(),
        Some(Ok(Completion {
            token: second,
            written: 3
        }))
    );
}

#[test]
fn a_used_index_that_changes_on_every_read_never_breaks_the_queue() {
    let Rig {
        mut queue,
        mut device,
        memory,
    } = rig(8, true);
    for n in 0..4 {
        queue.add(&request(n, 64)).expect("added");
    }
    let chains: Vec<_> = core::iter::from_fn(|| device.pop()).collect();
    for (position, chain) in chains.iter().enumerate() {
        device.write_used_entry(position as u16, u32::from(chain.head), 64);
    }
    let used_idx = (queue.addresses().device - BASE) as usize + 2;
    let flips = Arc::new(AtomicU32::new(0));
    let counter = flips.clone();
    memory.set_read_hook(move |event, bytes| {
        if event.offset == used_idx {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let value: u16 = match n % 4 {
                0 => 2,
                1 => 0x8000,
                2 => 0,
                _ => 4,
            };
            bytes[used_idx..used_idx + 2].copy_from_slice(&value.to_le_bytes());
        }
    });
    let mut completed = HashSet::new();
    for _ in 0..64 {
        if let Some(Ok(completion)) = queue.pop_used() {
            assert!(completed.insert(completion.token));
        }
    }
    memory.clear_read_hook();
    assert!(completed.len() <= 4);
    assert_eq!(queue.in_flight() + completed.len(), 4);
}

#[test]
fn a_device_rewriting_descriptors_cannot_corrupt_the_free_list() {
    let Rig {
        mut queue,
        mut device,
        memory,
    } = rig(8, false);
    for round in 0..100u64 {
        let token = queue
            .add(&[
                Segment::readable(DATA, 16),
                Segment::readable(DATA, 16),
                Segment::writable(DATA + 16, 16),
            ])
            .expect("room");
        // The host scribbles over the whole descriptor table and available ring.
        let junk = vec![(round as u8).wrapping_mul(37) | 0x81; 16 * 8 + 6 + 16];
        memory.write(BASE, &junk);
        device.complete(token.slot() as u16, 16);
        assert_eq!(
            queue.pop_used(),
            Some(Ok(Completion { token, written: 16 }))
        );
        assert_eq!(queue.free_descriptors(), 8);
    }
    // The free list is intact: all eight descriptors can be handed out at once.
    let single = [Segment::readable(DATA, 1)];
    let heads: HashSet<usize> = (0..8)
        .map(|_| queue.add(&single).expect("room").slot())
        .collect();
    assert_eq!(heads.len(), 8);
}

#[test]
fn notification_suppression_with_flags() {
    let Rig {
        mut queue, device, ..
    } = rig(8, false);
    queue.add(&request(0, 8)).expect("added");
    assert!(queue.should_notify());
    // Nothing new: no notification.
    assert!(!queue.should_notify());
    device.set_used_flags(1);
    queue.add(&request(1, 8)).expect("added");
    assert!(!queue.should_notify());
    device.set_used_flags(0xfffe);
    queue.add(&request(2, 8)).expect("added");
    assert!(queue.should_notify());
}

#[test]
fn notification_suppression_with_event_idx() {
    let Rig {
        mut queue,
        mut device,
        ..
    } = rig(16, true);
    device.set_avail_event(0);
    queue.add(&request(0, 8)).expect("added");
    assert!(queue.should_notify(), "avail 0 -> 1 crosses event 0");
    queue.add(&request(1, 8)).expect("added");
    queue.add(&request(2, 8)).expect("added");
    device.set_avail_event(5);
    assert!(!queue.should_notify(), "avail 1 -> 3 does not reach 5");
    for n in 3..6 {
        queue.add(&request(n, 8)).expect("added");
    }
    assert!(queue.should_notify(), "avail 3 -> 6 crosses 5");
    // used_event is re-armed to the last consumed index when the ring runs dry.
    let chain = device.pop().expect("available");
    device.complete(chain.head, 0);
    assert!(queue.pop_used().expect("one").is_ok());
    assert_eq!(queue.pop_used(), None);
    assert_eq!(device.used_event(), Some(1));
}

#[test]
fn event_idx_rechecks_the_used_index_after_rearming() {
    let Rig {
        mut queue,
        mut device,
        memory,
    } = rig(8, true);
    let token = queue.add(&request(0, 8)).expect("added");
    let chain = device.pop().expect("available");
    // The device completes the request just after the driver's first look at used.idx (so no
    // interrupt would come for it): the driver must see it on its second look.
    device.write_used_entry(0, u32::from(chain.head), 8);
    let used_idx = (queue.addresses().device - BASE) as usize + 2;
    let reads = Arc::new(AtomicU32::new(0));
    let counter = reads.clone();
    memory.set_read_hook(move |event, bytes| {
        if event.offset == used_idx && counter.fetch_add(1, Ordering::Relaxed) == 1 {
            bytes[used_idx..used_idx + 2].copy_from_slice(&1u16.to_le_bytes());
        }
    });
    assert_eq!(queue.pop_used(), Some(Ok(Completion { token, written: 8 })));
}

#[test]
fn outstanding_lists_requests_in_the_device_s_hands() {
    let Rig {
        mut queue,
        mut device,
        ..
    } = rig(8, false);
    let a = queue.add(&request(0, 8)).expect("a");
    let b = queue.add(&request(1, 8)).expect("b");
    let chain = device.pop().expect("a");
    device.complete(chain.head, 0);
    assert!(queue.pop_used().expect("one").is_ok());
    assert_eq!(queue.outstanding().collect::<Vec<_>>(), [b]);
    assert_ne!(a, b);
}

#[test]
fn a_whole_device_over_a_fake_dma_window_with_bounce_grants() {
    // The rings from a (fake) coherent allocation and the buffers from bounce grants, all in
    // one fake DMA window, driven through the transport with a device that answers on notify.
    let window = FakeWindow::new(64 * 1024, 0xAA).into_window();
    let bus = FakeWindow::device(&window);
    let size = 16;
    let ring_bytes = SplitQueue::<moat_dma_api::Coherent>::region_size(size).expect("size");
    let coherent = fake::coherent(&window, 1, 0, ring_bytes).expect("fits");
    let mut queue = SplitQueue::new(0, size, coherent, true).expect("queue");

    let mmio = FakeMmioDevice::new(2, VERSION_1 | EVENT_IDX, 1, 64);
    let mut transport = Transport::probe(mmio.clone()).expect("probe");
    let features = transport.initialize(EVENT_IDX, 10).expect("features");
    assert_ne!(features & EVENT_IDX, 0);
    transport.attach_queue(&queue).expect("attached");
    transport.driver_ok();

    // The device echoes the request's readable bytes, reversed, into its writable buffer.
    let registers = mmio.queue(0).expect("queue 0");
    let device = Arc::new(std::sync::Mutex::new(FakeQueueDevice::from_registers(
        bus, &registers,
    )));
    let device_for_hook = device.clone();
    let mmio_for_hook = mmio.clone();
    mmio.set_notify_hook(move |_| {
        let mut device = device_for_hook.lock().expect("device");
        while let Some(chain) = device.pop() {
            let mut data = chain.read(device.bus()).expect("in window");
            data.reverse();
            let written = chain.write(device.bus(), &data).expect("in window");
            device.complete(chain.head, written);
        }
        mmio_for_hook.raise_interrupt(1);
    });

    let request_bytes: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let out = fake::grant::<ToDevice>(&window, 2, 8192, 512).expect("fits");
    let back = fake::grant::<FromDevice>(&window, 3, 12288, 512).expect("fits");
    let out = Bounce::to_device(out, &request_bytes).expect("fits");
    let back = Bounce::from_device(back, 300).expect("fits");
    let token = queue
        .add(&[
            out.segment().expect("segment"),
            back.segment().expect("segment"),
        ])
        .expect("added");
    assert!(out.segment().is_some_and(|s| !s.writable));
    assert!(back.segment().is_some_and(|s| s.writable));
    if queue.should_notify() {
        transport.notify(queue.index());
    }
    assert!(transport.take_interrupt().used_buffer());
    let completion = queue.pop_used().expect("completed").expect("good");
    assert_eq!(completion.token, token);
    assert_eq!(completion.written, 300);
    let _ = out.complete();
    let mut reply = vec![0; completion.written as usize];
    let _ = back.complete(&mut reply).expect("fits");
    let mut expected = request_bytes.clone();
    expected.reverse();
    assert_eq!(reply, expected);
    assert_eq!(queue.pop_used(), None);

    // After a reset the rings can be given back.
    transport.reset(10).expect("reset");
    let region = queue.into_region();
    assert_eq!(region.len(), ring_bytes);
}

#[test]
fn shared_region_for_coherent_matches_the_window() {
    let window = FakeWindow::new(8192, 0).into_window();
    let bus = FakeWindow::device(&window);
    let coherent = fake::coherent(&window, 1, 4096, 64).expect("fits");
    assert!(SharedRegion::write_u32(&coherent, 4, 0xfeed_f00d));
    let mut bytes = [0; 4];
    assert!(DeviceBus::read(
        &bus,
        window.device_base() + 4100,
        &mut bytes
    ));
    assert_eq!(u32::from_le_bytes(bytes), 0xfeed_f00d);
    assert_eq!(SharedRegion::read_u16(&coherent, 64), None);
    assert_eq!(SharedRegion::read_u16(&coherent, 3), None);
}
