//! Arbitrary bytes play a hostile device and host against a split virtqueue with requests
//! outstanding: used-ring entries and indices, memory rewritten between the driver's reads,
//! notification suppression fields, interrupt status, device features and configuration space.
//!
//! Invariants: no panic; no token reported twice; every completed length within the request's
//! device-writable capacity; the queue's private accounting always adds up.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use moat_virtio::fake::{DeviceBus, FakeMemory, FakeMmioDevice, FakeQueueDevice, FakeRegion};
use moat_virtio::features::{ACCESS_PLATFORM, EVENT_IDX, VERSION_1};
use moat_virtio::{Segment, SplitQueue, Transport, UsedError};

const BASE: u64 = 0x4000_0000;
const DATA: u64 = BASE + 0x1_0000;

/// Reads the input front to back; runs dry as zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);

    // Transport: device features, configuration space and its churn come from the input.
    let size = 1u16 << (input.u8() % 7); // 1 ..= 64
    let offered = u64::from(input.u32()) | u64::from(input.u32()) << 32;
    let mmio = FakeMmioDevice::new(2, offered, 1, u32::from(input.u16()));
    mmio.set_config(0, &input.take(64));
    mmio.set_config_churn(u32::from(input.u8() % 24));
    mmio.set_reset_reads(u32::from(input.u8() % 8));
    let mut transport = match Transport::probe(mmio.clone()) {
        Ok(transport) => transport,
        Err(_) => return,
    };
    let negotiated = transport.initialize(EVENT_IDX | 0xff_ffff, 8);
    if let Ok(features) = negotiated {
        assert_ne!(features & VERSION_1, 0);
        assert_eq!(features & !offered, 0);
        if offered & ACCESS_PLATFORM != 0 {
            assert_ne!(features & ACCESS_PLATFORM, 0);
        }
    }
    let config_offset = usize::from(input.u8());
    let _ = transport.config_u64(config_offset);
    let _ = transport.config_u32(config_offset);
    let _ = transport.read_config(|config| Ok((config.read_u64(0)?, config.read_u32(20)?)));
    let event_idx = matches!(negotiated, Ok(features) if features & EVENT_IDX != 0);

    // Queue over fake memory, attached through the transport when the device allows it.
    let memory = FakeMemory::new(0x2_0000, BASE);
    let Some(bytes) = SplitQueue::<FakeRegion>::region_size(size) else {
        return;
    };
    let Some(region) = memory.region(0, bytes) else {
        return;
    };
    let Ok(mut queue) = SplitQueue::new(0, size, region, event_idx) else {
        return;
    };
    let _ = transport.attach_queue(&queue);
    transport.driver_ok();
    let mut device = FakeQueueDevice::new(memory.clone(), size, queue.addresses());

    let mut open: HashMap<u64, (u64, usize)> = HashMap::new();
    let mut over: HashSet<u64> = HashSet::new();
    let mut taken = Vec::new();

    // Start with requests outstanding.
    for n in 0..u64::from(size).min(4) {
        let segments = [
            Segment::readable(DATA + n * 0x100, 16),
            Segment::writable(DATA + n * 0x100 + 16, 64),
        ];
        if let Ok(token) = queue.add(&segments) {
            open.insert(token.serial(), (64, 2));
        }
    }

    let mut steps = 0;
    while !input.is_empty() && steps < 512 {
        steps += 1;
        match input.u8() % 12 {
            0 => {
                let count = usize::from(input.u8() % 4) + 1;
                let mask = input.u8();
                let mut segments: Vec<Segment> = (0..count)
                    .map(|i| Segment {
                        address: DATA + (i as u64) * 0x1000,
                        len: u32::from(input.u16()),
                        writable: mask & (1 << i) != 0,
                    })
                    .collect();
                if mask & 0x80 == 0 {
                    segments.sort_by_key(|s| s.writable);
                }
                let capacity = segments
                    .iter()
                    .filter(|s| s.writable)
                    .map(|s| u64::from(s.len))
                    .sum();
                if let Ok(token) = queue.add(&segments) {
                    assert!(open.insert(token.serial(), (capacity, count)).is_none());
                }
            }
            1 => {
                if let Some(chain) = device.pop() {
                    taken.push(chain);
                }
            }
            2 => {
                if !taken.is_empty() {
                    let chain = taken.swap_remove(usize::from(input.u8()) % taken.len());
                    device.complete(chain.head, input.u32());
                }
            }
            3 => device.push_used(input.u32(), input.u32()),
            4 => {
                let position = input.u16();
                device.write_used_entry(position, input.u32(), input.u32());
            }
            5 => device.set_used_idx(input.u16()),
            6 => {
                // The host rewrites arbitrary ring bytes.
                let offset = usize::from(input.u16()) % bytes;
                let len = usize::from(input.u8() % 32);
                let junk = input.take(len);
                let _ = memory.write(BASE + offset as u64, &junk);
            }
            7 => {
                // From now on every driver read is preceded by a host write from the input.
                let len = usize::from(input.u8());
                let script = input.take(len);
                let cursor = Arc::new(Mutex::new(0usize));
                let ring_bytes = bytes;
                memory.set_read_hook(move |event, memory_bytes| {
                    let mut at = cursor.lock().unwrap_or_else(|p| p.into_inner());
                    if *at + 3 > script.len() {
                        return;
                    }
                    let target = if script[*at] & 1 == 0 {
                        event.offset
                    } else {
                        usize::from(script[*at] >> 1) * 2 % ring_bytes
                    };
                    let value = [script[*at + 1], script[*at + 2]];
                    *at += 3;
                    if target + 2 <= ring_bytes {
                        memory_bytes[target..target + 2].copy_from_slice(&value);
                    }
                });
            }
            8 => memory.clear_read_hook(),
            9 => {
                device.set_used_flags(input.u16());
                device.set_avail_event(input.u16());
                if queue.should_notify() {
                    transport.notify(queue.index());
                }
            }
            10 => {
                mmio.raise_interrupt(input.u32());
                let _ = transport.take_interrupt();
            }
            _ => {
                let budget = usize::from(input.u8() % 80);
                for _ in 0..budget {
                    let Some(result) = queue.pop_used() else {
                        break;
                    };
                    let token = match result {
                        Ok(completion) => {
                            let (capacity, _) = *open
                                .get(&completion.token.serial())
                                .expect("completed an open request");
                            assert!(u64::from(completion.written) <= capacity);
                            completion.token
                        }
                        Err(UsedError::LengthTooLarge {
                            token,
                            written,
                            capacity,
                        }) => {
                            assert!(u64::from(written) > capacity);
                            token
                        }
                        Err(_) => continue,
                    };
                    assert!(token.slot() < usize::from(size));
                    assert!(over.insert(token.serial()), "token reported twice");
                    assert!(open.remove(&token.serial()).is_some());
                }
            }
        }
        assert_eq!(queue.in_flight(), open.len());
        let held: usize = open.values().map(|&(_, len)| len).sum();
        assert_eq!(queue.free_descriptors() + held, usize::from(size));
    }
    memory.clear_read_hook();
});
