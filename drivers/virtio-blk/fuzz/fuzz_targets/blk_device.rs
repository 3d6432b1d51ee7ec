//! Arbitrary bytes play a hostile virtio-blk device (configuration space, features, queue size,
//! used-ring entries and indices, status bytes and used lengths) and hostile clients (any
//! request, any message) against the driver's device and service layers.
//!
//! Invariants: no panic; no reply capability is answered twice; the driver's count of requests
//! in flight never exceeds what it accepted.
#![no_main]

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use moat_abi::{CapSlot, Error, Message, MessageFlags, Syscall, TaskId};
use moat_blk_api::{Blk, Operation, REGION_RIGHTS, Request};
use moat_ipc::Protocol;
use moat_userlib::Syscalls;
use moat_virtio_blk::fake::{FakeDisk, FakeDma, FakeRegions, Misbehaviour, VecRegion};
use moat_virtio_blk::spec::config;
use moat_virtio_blk::{BlkDevice, Limits, Service};

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
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
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

#[derive(Clone, Default)]
struct Recorder {
    replies: Rc<RefCell<Vec<u32>>>,
}

impl Syscalls for Recorder {
    unsafe fn syscall(&self, _number: Syscall, _args: [u64; 6]) -> [u64; 4] {
        [u64::MAX, 0, 0, 0]
    }
    fn reply(&self, reply: CapSlot, _message: &Message) -> Result<(), Error> {
        self.replies.borrow_mut().push(reply.0);
        Ok(())
    }
    fn cap_drop(&self, _slot: CapSlot) -> Result<(), Error> {
        Ok(())
    }
}

const REGION: u32 = 9;

thread_local! {
    static DMA: FakeDma = FakeDma::new(1 << 20, 65536);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);

    let features = u64::from(input.u32());
    let sectors = match input.u8() % 4 {
        0 => u64::from(input.u16()),
        1 => input.u64(),
        2 => 0,
        _ => 2048,
    };
    let queue_max = u32::from(input.u16());
    let max_mapping = 512 * (usize::from(input.u16() % 512) + 1);
    // Fake windows are leaked memory: one for the whole run, reset per input.
    let dma = DMA.with(|dma| dma.clone());
    dma.reset(max_mapping);
    let mut disk = FakeDisk::new(sectors.min(1024), features, queue_max, &dma);
    // The configuration as the device claims it (capacity may exceed the fake's backing).
    disk.mmio
        .set_config(config::CAPACITY, &sectors.to_le_bytes());
    disk.mmio.set_config(8, &input.take(16));
    disk.mmio.set_config_churn(u32::from(input.u8() % 20));
    disk.mmio.set_reset_reads(u32::from(input.u8() % 6));
    let limits = Limits {
        queue_size: input.u16(),
        max_in_flight: usize::from(input.u8()),
        max_part: 512 * (usize::from(input.u8()) + 1),
    };
    let Ok(device) = BlkDevice::start(disk.mmio.clone(), dma.clone(), limits, || {}) else {
        return;
    };

    let recorder = Recorder::default();
    let regions = FakeRegions::default();
    regions.insert(CapSlot(REGION), VecRegion::new(256 << 10));
    let mut service = Service::new(recorder.clone(), device, regions);
    let mut next_reply = 1000u32;
    let message = |request: &Request, reply: bool, capability: bool, next: &mut u32| {
        let mut message = moat_ipc::encode(Blk::ID, request).expect("fits");
        if capability {
            message = message.with_capability(CapSlot(REGION), REGION_RIGHTS);
        }
        message.header.badge = 5;
        message.header.sender = TaskId::new(4, 0);
        if reply {
            *next += 1;
            message.header.reply = CapSlot(*next);
            message.header.flags = message.header.flags.with(MessageFlags::EXPECTS_REPLY);
        }
        message
    };
    let setup = message(&Request::SetupRegion, true, true, &mut next_reply);
    service.handle(&setup);

    let mut steps = 0;
    while !input.is_empty() && steps < 2000 {
        steps += 1;
        match input.u8() % 12 {
            0 | 1 => {
                let operation = match input.u8() % 3 {
                    0 => Operation::Read {
                        sector: u64::from(input.u16()),
                        offset: u64::from(input.u16()) * 4,
                        len: u32::from(input.u8()) * 512,
                    },
                    1 => Operation::Write {
                        sector: u64::from(input.u16()),
                        offset: u64::from(input.u16()) * 4,
                        len: u32::from(input.u8()) * 512,
                    },
                    _ => Operation::Flush,
                };
                let request = Request::Io {
                    tag: u32::from(input.u8()),
                    operation,
                };
                let call = input.u8() & 1 == 0;
                let message = message(&request, call, false, &mut next_reply);
                service.handle(&message);
                service.pump();
            }
            2 => {
                let operation = Operation::Read {
                    sector: input.u64(),
                    offset: input.u64(),
                    len: input.u32(),
                };
                let message = message(
                    &Request::Io { tag: 1, operation },
                    true,
                    false,
                    &mut next_reply,
                );
                service.handle(&message);
                service.pump();
            }
            3 => {
                disk.process();
            }
            4 => {
                if let Some(chain) = disk.pop() {
                    let (head, written) = disk.serve(&chain);
                    let id = if input.u8() & 1 == 0 {
                        u32::from(head)
                    } else {
                        input.u32()
                    };
                    let len = if input.u8() & 1 == 0 {
                        written
                    } else {
                        input.u32()
                    };
                    if let Some(queue) = disk.queue() {
                        queue.push_used(id, len);
                    }
                }
            }
            5 => {
                let (id, len) = (u32::from(input.u16() % 300), input.u32());
                if let Some(queue) = disk.queue() {
                    queue.push_used(id, len);
                }
            }
            6 => {
                let (position, id, len) = (input.u16(), input.u32(), input.u32());
                if let Some(queue) = disk.queue() {
                    queue.write_used_entry(position, id, len);
                }
            }
            7 => {
                let idx = input.u16();
                if let Some(queue) = disk.queue() {
                    queue.set_used_idx(idx);
                }
            }
            8 => {
                disk.mmio.raise_interrupt(u32::from(input.u8() & 3));
                service.interrupt();
                service.pump();
            }
            9 => {
                disk.misbehave = Misbehaviour {
                    status: (input.u8() & 1 == 1).then(|| input.u8()),
                    written: (input.u8() & 1 == 1).then(|| input.u32()),
                    skip_status: input.u8() & 1 == 1,
                    short_read: (input.u8() & 1 == 1).then(|| usize::from(input.u16())),
                };
            }
            10 => {
                let message = message(
                    &Request::Reap {
                        wait: input.u8() & 1 == 0,
                    },
                    true,
                    false,
                    &mut next_reply,
                );
                service.handle(&message);
            }
            _ => {
                // Raw garbage from a client.
                let count = usize::from(input.u8() % 64);
                let bytes = input.take(count);
                let mut raw = Message::new(if input.u8() & 1 == 0 { Blk::ID } else { 7 }, &bytes)
                    .unwrap_or_else(|_| Message::empty(0));
                raw.header.badge = u64::from(input.u8() % 20);
                raw.header.reply = CapSlot(next_reply + 100_000);
                next_reply += 1;
                raw.header.flags = raw.header.flags.with(MessageFlags::EXPECTS_REPLY);
                service.handle(&raw);
            }
        }
        assert!(service.device().in_flight() <= service.device().max_in_flight());
    }
    // Let a well-behaved device finish whatever is left.
    disk.misbehave = Misbehaviour::default();
    for _ in 0..64 {
        disk.process();
        disk.mmio.raise_interrupt(1);
        service.interrupt();
        service.pump();
    }

    let replies = recorder.replies.borrow();
    let mut seen = HashSet::new();
    for slot in replies.iter() {
        assert!(seen.insert(*slot), "reply capability {slot} answered twice");
    }
});
