//! Host tests: the request path against a fake disk (well-behaved and hostile) over a fake DMA
//! window that checks the direction rules.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use moat_abi::{CapSlot, Error, Message, MessageFlags, Rights, Syscall, TaskId};
use moat_blk_api::{Blk, BlkError, Completion, Operation, REGION_RIGHTS, Request, Response};
use moat_ipc::{Protocol, REPLY_ERROR, REPLY_OK, RemoteError};
use moat_userlib::Syscalls;
use moat_virtio::fake::FakeMmioDevice;
use moat_virtio::features::{ACCESS_PLATFORM, VERSION_1};
use moat_virtio::mmio::register;

use crate::device::{BlkDevice, Limits, StartError};
use crate::fake::{FakeDisk, FakeDma, FakeRegions, Misbehaviour, VecRegion};
use crate::service::Service;
use crate::spec::{config, features, status};

/// Records replies and dropped capabilities.
#[derive(Clone, Default)]
struct Recorder {
    replies: Rc<RefCell<Vec<(u32, Message)>>>,
    dropped: Rc<RefCell<Vec<u32>>>,
}

#[allow(unsafe_code)]
impl Syscalls for Recorder {
    unsafe fn syscall(&self, _number: Syscall, _args: [u64; 6]) -> [u64; 4] {
        [u64::MAX, 0, 0, 0]
    }

    fn reply(&self, reply: CapSlot, message: &Message) -> Result<(), Error> {
        self.replies.borrow_mut().push((reply.0, message.clone()));
        Ok(())
    }

    fn cap_drop(&self, slot: CapSlot) -> Result<(), Error> {
        self.dropped.borrow_mut().push(slot.0);
        Ok(())
    }

    fn irq_ack(&self, _irq: CapSlot) -> Result<(), Error> {
        Ok(())
    }
}

impl Recorder {
    fn take(&self) -> Vec<(u32, Message)> {
        core::mem::take(&mut *self.replies.borrow_mut())
    }
}

const SECTORS: u64 = 4096; // 2 MiB
const REGION_SLOT: u32 = 40;
const BADGE: u64 = 7;

fn sender() -> TaskId {
    TaskId::new(3, 1)
}

type TestService = Service<Recorder, FakeMmioDevice, FakeDma, FakeRegions>;

struct Harness {
    service: TestService,
    disk: FakeDisk,
    dma: FakeDma,
    region: VecRegion,
    recorder: Recorder,
    next_reply: u32,
    /// Replies to earlier calls that arrived later (e.g. to a waiting `Reap`).
    stray: Vec<Response>,
}

fn start(
    features: u64,
    max_mapping: usize,
    limits: Limits,
) -> (BlkDevice<FakeMmioDevice, FakeDma>, FakeDisk, FakeDma) {
    let dma = FakeDma::new(8 << 20, max_mapping);
    let disk = FakeDisk::new(SECTORS, features, 256, &dma);
    let device =
        BlkDevice::start(disk.mmio.clone(), dma.clone(), limits, || {}).expect("device starts");
    (device, disk, dma)
}

impl Harness {
    fn new(features: u64) -> Harness {
        Harness::with(features, 64 * 1024, Limits::default())
    }

    fn with(features: u64, max_mapping: usize, limits: Limits) -> Harness {
        let (device, disk, dma) = start(features, max_mapping, limits);
        let recorder = Recorder::default();
        let regions = FakeRegions::default();
        let region = VecRegion::new(4 << 20);
        regions.insert(CapSlot(REGION_SLOT), region.clone());
        let service = Service::new(recorder.clone(), device, regions);
        let mut harness = Harness {
            service,
            disk,
            dma,
            region,
            recorder,
            next_reply: 100,
            stray: Vec::new(),
        };
        let setup = harness.call(&Request::SetupRegion, Some(REGION_RIGHTS));
        assert_eq!(setup, Some(Response::Region { len: 4 << 20 }));
        harness
    }

    fn message(&mut self, request: &Request, reply: bool, capability: Option<Rights>) -> Message {
        let mut message = moat_ipc::encode(Blk::ID, request).expect("fits");
        if let Some(rights) = capability {
            message = message.with_capability(CapSlot(REGION_SLOT), rights);
        }
        message.header.badge = BADGE;
        message.header.sender = sender();
        if reply {
            self.next_reply += 1;
            message.header.reply = CapSlot(self.next_reply);
            message.header.flags = message.header.flags.with(MessageFlags::EXPECTS_REPLY);
        }
        message
    }

    /// Handles a `call` and returns the reply if it came at once.
    fn call(&mut self, request: &Request, capability: Option<Rights>) -> Option<Response> {
        let message = self.message(request, true, capability);
        self.service.handle(&message);
        self.service.pump();
        let mut mine = None;
        for (slot, message) in self.recorder.take() {
            if message.label() != REPLY_OK {
                continue;
            }
            let response: Response = moat_ipc::decode(message.payload()).expect("decodes");
            if slot == self.next_reply {
                mine = Some(response);
            } else {
                self.stray.push(response);
            }
        }
        mine
    }

    fn send(&mut self, request: &Request) {
        let message = self.message(request, false, None);
        self.service.handle(&message);
        self.service.pump();
    }

    /// Runs the device and the interrupt until nothing moves; returns every reply.
    fn settle(&mut self) -> Vec<(u32, Response)> {
        let mut replies = Vec::new();
        for _ in 0..10_000 {
            let served = self.disk.process();
            self.service.interrupt();
            self.service.pump();
            for (slot, message) in self.recorder.take() {
                assert_eq!(message.label(), REPLY_OK);
                replies.push((slot, moat_ipc::decode(message.payload()).expect("decodes")));
            }
            if served == 0 && self.service.outstanding() == 0 {
                break;
            }
        }
        replies
    }

    /// A synchronous operation: call, settle, the completion.
    fn run(&mut self, operation: Operation) -> Result<(), BlkError> {
        let tag = self.next_reply;
        if let Some(Response::Done(done)) = self.call(&Request::Io { tag, operation }, None) {
            return done.result;
        }
        let slot = self.next_reply;
        let replies = self.settle();
        match replies.iter().find(|(s, _)| *s == slot) {
            Some((_, Response::Done(done))) => done.result,
            other => panic!("no completion: {other:?}"),
        }
    }

    fn reap_all(&mut self) -> Vec<Completion> {
        let mut completions = Vec::new();
        for (_, message) in self.recorder.take() {
            if let Some(response) = moat_ipc::decode(message.payload()) {
                self.stray.push(response);
            }
        }
        for response in core::mem::take(&mut self.stray) {
            if let Response::Completions(batch) = response {
                completions.extend(batch);
            }
        }
        loop {
            match self.call(&Request::Reap { wait: false }, None) {
                Some(Response::Completions(batch)) if !batch.is_empty() => {
                    completions.extend(batch)
                }
                _ => break,
            }
        }
        completions
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn write(sector: u64, offset: u64, len: u32) -> Operation {
    Operation::Write {
        sector,
        offset,
        len,
    }
}

fn read(sector: u64, offset: u64, len: u32) -> Operation {
    Operation::Read {
        sector,
        offset,
        len,
    }
}

#[test]
fn start_resets_first_and_negotiates() {
    let offered = features::WANTED | 1 << 4 | 1 << 10;
    let (device, disk, dma) = start(offered, 65536, Limits::default());
    let writes = disk.mmio.writes();
    let first_status = writes
        .iter()
        .find(|(offset, _)| *offset == register::STATUS);
    assert_eq!(
        first_status,
        Some(&(register::STATUS, 0)),
        "reset comes first"
    );
    assert_eq!(dma.reset_completes(), 1);
    let accepted = disk.mmio.driver_features();
    assert_eq!(accepted, features::WANTED | VERSION_1 | ACCESS_PLATFORM);
    assert_eq!(device.features(), accepted);
    assert!(device.read_only());
    assert!(device.has_flush());
    assert_eq!(device.capacity(), SECTORS);
    assert!(device.max_in_flight() >= 32);
}

#[test]
fn reset_waits_for_status_zero() {
    let dma = FakeDma::new(1 << 20, 65536);
    let disk = FakeDisk::new(SECTORS, 0, 256, &dma);
    disk.mmio.set_reset_reads(u32::MAX);
    let result = BlkDevice::start(disk.mmio.clone(), dma.clone(), Limits::default(), || {});
    assert!(matches!(result, Err(StartError::Transport(_))));
    assert_eq!(
        dma.reset_completes(),
        0,
        "no reset declared before status 0"
    );

    let dma = FakeDma::new(1 << 20, 65536);
    let disk = FakeDisk::new(SECTORS, 0, 256, &dma);
    disk.mmio.set_reset_reads(7);
    let mut waits = 0;
    BlkDevice::start(disk.mmio.clone(), dma.clone(), Limits::default(), || {
        waits += 1
    })
    .expect("starts after a slow reset");
    assert!(waits >= 7);
}

#[test]
fn a_queue_too_small_for_one_request_is_refused() {
    for queue_max in [1, 2] {
        let dma = FakeDma::new(1 << 20, 65536);
        let disk = FakeDisk::new(SECTORS, 0, queue_max, &dma);
        let result = BlkDevice::start(disk.mmio.clone(), dma, Limits::default(), || {});
        assert!(matches!(result, Err(StartError::Queue(_))));
    }
    let dma = FakeDma::new(1 << 20, 65536);
    let disk = FakeDisk::new(SECTORS, 0, 4, &dma);
    let device = BlkDevice::start(disk.mmio.clone(), dma, Limits::default(), || {})
        .expect("four descriptors are enough for one part");
    assert_eq!(device.max_in_flight(), 1);
}

#[test]
fn wrong_device_type_is_refused() {
    let dma = FakeDma::new(1 << 20, 65536);
    let mmio = FakeMmioDevice::new(1, VERSION_1, 1, 256);
    let result = BlkDevice::start(mmio, dma, Limits::default(), || {});
    assert_eq!(result.err(), Some(StartError::NotBlock(1)));
}

#[test]
fn write_then_read_round_trips_through_bounce_grants() {
    let mut h = Harness::new(features::FLUSH);
    let data = pattern(3, 12288);
    h.region.set(4096, &data);
    assert_eq!(h.run(write(100, 4096, 12288)), Ok(()));
    assert_eq!(&h.disk.data[100 * 512..100 * 512 + 12288], &data[..]);
    // Read into a different, page-unaligned place.
    assert_eq!(h.run(read(100, 512 * 3 + 65536, 12288)), Ok(()));
    assert_eq!(h.region.get(512 * 3 + 65536, 12288), data);
    assert!(h.disk.violations.is_empty(), "{:?}", h.disk.violations);
    assert_eq!(h.run(Operation::Flush), Ok(()));
    assert_eq!(h.disk.flushes, 1);
}

#[test]
fn stale_window_bytes_never_reach_disk_or_client() {
    let mut h = Harness::new(0);
    // Grants are refilled with stale bytes when returned; a missed copy would show them.
    for round in 0..4u8 {
        let data = pattern(round, 4096);
        h.region.set(0, &data);
        assert_eq!(h.run(write(8, 0, 4096)), Ok(()));
        assert_eq!(&h.disk.data[8 * 512..8 * 512 + 4096], &data[..]);
        h.region.set(8192, &[0u8; 4096]);
        assert_eq!(h.run(read(8, 8192, 4096)), Ok(()));
        assert_eq!(h.region.get(8192, 4096), data);
    }
    assert!(h.disk.violations.is_empty());
}

#[test]
fn many_requests_in_flight_and_reaped() {
    let mut h = Harness::new(0);
    let count = 48u32;
    for i in 0..count {
        h.region.set(i as usize * 4096, &pattern(i as u8, 4096));
        h.send(&Request::Io {
            tag: i,
            operation: write(u64::from(i) * 8, u64::from(i) * 4096, 4096),
        });
    }
    // Nothing completed yet, and at least 32 requests are at the device at once.
    let pending = h.disk.queue().map_or(0, |queue| queue.pending());
    assert!(pending >= 32, "only {pending} at the device");
    assert!(h.service.device().in_flight() >= 32);
    // A reap waits (no reply yet) …
    assert_eq!(h.call(&Request::Reap { wait: true }, None), None);
    let reaper = h.next_reply;
    let replies = h.settle();
    // … and is answered once completions exist.
    assert!(replies.iter().any(|(slot, _)| *slot == reaper));
    let mut done: Vec<Completion> = replies
        .into_iter()
        .flat_map(|(_, response)| match response {
            Response::Completions(batch) => batch.into_iter().collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        })
        .collect();
    done.extend(h.reap_all());
    assert_eq!(done.len(), count as usize);
    assert!(done.iter().all(|c| c.result.is_ok()));
    for i in 0..count as usize {
        assert_eq!(
            &h.disk.data[i * 4096..(i + 1) * 4096],
            &pattern(i as u8, 4096)[..]
        );
    }
    assert!(h.disk.violations.is_empty());
}

#[test]
fn large_requests_are_split_to_the_mapping_size() {
    let mut h = Harness::with(0, 16 * 1024, Limits::default());
    assert_eq!(h.service.device().part_bytes(), 16 * 1024);
    let data = pattern(9, 1 << 20);
    h.region.set(512, &data);
    let served = h.disk.served;
    assert_eq!(h.run(write(1, 512, 1 << 20)), Ok(()));
    assert_eq!(h.disk.served - served, 64);
    assert_eq!(&h.disk.data[512..512 + (1 << 20)], &data[..]);
    assert_eq!(h.run(read(1, 2 << 20, 1 << 20)), Ok(()));
    assert_eq!(h.region.get(2 << 20, 1 << 20), data);
    assert!(h.disk.violations.is_empty());
}

#[test]
fn size_max_bounds_parts() {
    let dma = FakeDma::new(8 << 20, 65536);
    let disk = FakeDisk::new(SECTORS, features::SIZE_MAX, 256, &dma);
    disk.mmio
        .set_config(config::SIZE_MAX, &8192u32.to_le_bytes());
    let device =
        BlkDevice::start(disk.mmio.clone(), dma, Limits::default(), || {}).expect("starts");
    assert_eq!(device.part_bytes(), 8192);
}

#[test]
fn grants_are_pooled_not_mapped_per_request() {
    let mut h = Harness::new(0);
    for i in 0..20u64 {
        assert_eq!(h.run(write(i, 0, 4096)), Ok(()));
        assert_eq!(h.run(read(i, 0, 4096)), Ok(()));
    }
    // Header, status, one write and one read grant, plus the rings.
    assert!(h.dma.maps() <= 6, "{} maps", h.dma.maps());
}

#[test]
fn requests_are_checked_before_the_device_sees_them() {
    let mut h = Harness::new(0);
    let served = h.disk.served;
    assert_eq!(h.run(read(SECTORS - 1, 0, 1024)), Err(BlkError::OutOfRange));
    assert_eq!(h.run(read(u64::MAX, 0, 512)), Err(BlkError::OutOfRange));
    assert_eq!(
        h.run(read(0, (4 << 20) - 512, 1024)),
        Err(BlkError::BadRegion)
    );
    assert_eq!(h.run(read(0, u64::MAX, 512)), Err(BlkError::BadRegion));
    assert_eq!(h.run(read(0, 0, 0)), Err(BlkError::BadLength));
    assert_eq!(h.run(read(0, 0, 100)), Err(BlkError::BadLength));
    assert_eq!(h.run(read(0, 0, 2 << 20)), Err(BlkError::BadLength));
    assert_eq!(h.disk.served, served);
}

#[test]
fn read_only_disk_refuses_writes() {
    let mut h = Harness::new(features::RO);
    assert_eq!(h.run(write(0, 0, 512)), Err(BlkError::ReadOnly));
    assert_eq!(h.run(read(0, 0, 512)), Ok(()));
}

#[test]
fn no_region_is_an_error() {
    let (device, _disk, _dma) = start(0, 65536, Limits::default());
    let recorder = Recorder::default();
    let mut service = Service::new(recorder.clone(), device, FakeRegions::default());
    let mut message = moat_ipc::encode(
        Blk::ID,
        &Request::Io {
            tag: 5,
            operation: read(0, 0, 512),
        },
    )
    .expect("fits");
    message.header.reply = CapSlot(9);
    message.header.flags = message.header.flags.with(MessageFlags::EXPECTS_REPLY);
    service.handle(&message);
    let replies = recorder.take();
    let response: Response = moat_ipc::decode(replies[0].1.payload()).expect("decodes");
    assert_eq!(
        response,
        Response::Done(Completion {
            tag: 5,
            result: Err(BlkError::NoRegion)
        })
    );
}

#[test]
fn region_without_rights_is_refused_and_dropped() {
    let mut h = Harness::new(0);
    let response = h.call(&Request::SetupRegion, Some(Rights::READ));
    assert_eq!(response, Some(Response::Refused(BlkError::BadRegion)));
    assert!(h.recorder.dropped.borrow().contains(&REGION_SLOT));
    let response = h.call(&Request::SetupRegion, None);
    assert_eq!(response, Some(Response::Refused(BlkError::BadRegion)));
}

#[test]
fn device_errors_are_typed() {
    let mut h = Harness::new(0);
    let cases = [
        (
            Misbehaviour {
                status: Some(status::IOERR),
                ..Misbehaviour::default()
            },
            BlkError::IoError,
        ),
        (
            Misbehaviour {
                status: Some(status::UNSUPP),
                ..Misbehaviour::default()
            },
            BlkError::Unsupported,
        ),
        (
            Misbehaviour {
                status: Some(0x77),
                ..Misbehaviour::default()
            },
            BlkError::IoError,
        ),
        (
            Misbehaviour {
                skip_status: true,
                ..Misbehaviour::default()
            },
            BlkError::IoError,
        ),
    ];
    for (misbehaviour, expected) in cases {
        h.disk.misbehave = misbehaviour;
        assert_eq!(h.run(write(0, 0, 512)), Err(expected), "{misbehaviour:?}");
        assert_eq!(h.run(read(0, 0, 512)), Err(expected), "{misbehaviour:?}");
    }
    // A read whose used length does not cover the data is an error, and the client's bytes
    // stay as they were.
    h.region.set(0, &[0xee; 4096]);
    h.disk.misbehave = Misbehaviour {
        written: Some(100),
        ..Misbehaviour::default()
    };
    assert_eq!(h.run(read(0, 0, 4096)), Err(BlkError::IoError));
    assert_eq!(h.region.get(0, 4096), vec![0xee; 4096]);
    // And the device works again afterwards.
    h.disk.misbehave = Misbehaviour::default();
    assert_eq!(h.run(read(0, 0, 4096)), Ok(()));
    assert_eq!(h.service.stats().failed, 9);
}

#[test]
fn hostile_used_entries_fail_only_their_request() {
    let mut h = Harness::new(0);
    for i in 0..3u32 {
        h.send(&Request::Io {
            tag: i,
            operation: read(u64::from(i), u64::from(i) * 512, 512),
        });
    }
    let chains: Vec<_> = core::iter::from_fn(|| h.disk.pop()).collect();
    assert_eq!(chains.len(), 3);
    // Forged entries: out of range, never used, then a real completion twice, then one with
    // a length larger than the chain.
    let (head0, written0) = h.disk.serve(&chains[0]);
    let queue = h.disk.queue().expect("queue");
    queue.push_used(9999, 1);
    queue.push_used(u32::from(chains[2].head) ^ 1, 1);
    queue.complete(head0, written0);
    queue.complete(head0, written0);
    queue.push_used(u32::from(chains[1].head), 1 << 20);
    h.disk.mmio.raise_interrupt(1);
    h.service.interrupt();
    let mut completions = h.reap_all();
    completions.sort_by_key(|c| c.tag);
    assert_eq!(completions.len(), 2);
    assert_eq!(
        completions[0],
        Completion {
            tag: 0,
            result: Ok(())
        }
    );
    assert_eq!(
        completions[1],
        Completion {
            tag: 1,
            result: Err(BlkError::IoError)
        }
    );
    assert!(h.service.device().stats().hostile_entries >= 3);
    // The third request is still outstanding and completes normally.
    let (head2, written2) = h.disk.serve(&chains[2]);
    h.disk.queue().expect("queue").complete(head2, written2);
    h.service.interrupt();
    assert_eq!(
        h.reap_all(),
        vec![Completion {
            tag: 2,
            result: Ok(())
        }]
    );
}

#[test]
fn a_used_index_jump_fails_the_device_safely() {
    let mut h = Harness::new(0);
    for i in 0..4u32 {
        h.send(&Request::Io {
            tag: i,
            operation: write(u64::from(i), 0, 512),
        });
    }
    let queue = h.disk.queue().expect("queue");
    let idx = queue.used_idx();
    queue.set_used_idx(idx.wrapping_add(1000));
    h.service.interrupt();
    let completions = h.reap_all();
    assert_eq!(completions.len(), 4);
    assert!(
        completions
            .iter()
            .all(|c| c.result == Err(BlkError::DeviceFailed))
    );
    assert!(h.service.device().failed());
    assert_eq!(h.disk.mmio.status(), 0, "the device was reset");
    assert_eq!(h.run(read(0, 0, 512)), Err(BlkError::DeviceFailed));
}

#[test]
fn dma_exhaustion_defers_then_fails_without_work_in_flight() {
    let mut h = Harness::new(0);
    // Warm the pools with one request of each kind.
    assert_eq!(h.run(write(0, 0, 4096)), Ok(()));
    // Only a few more grants: requests beyond the pool wait for completions.
    h.dma.set_maps_left(Some(0));
    for i in 0..8u32 {
        h.send(&Request::Io {
            tag: i,
            operation: write(u64::from(i) * 8, 0, 4096),
        });
    }
    assert_eq!(h.service.device().in_flight(), 1);
    h.settle();
    let completions = h.reap_all();
    assert_eq!(completions.len(), 8);
    assert!(completions.iter().all(|c| c.result.is_ok()));
    // A read needs a from-device grant the pool does not have, and none can come back.
    assert_eq!(h.run(read(0, 0, 4096)), Err(BlkError::NoMemory));
}

#[test]
fn flush_without_a_write_cache_completes_at_once() {
    let mut h = Harness::new(0);
    let served = h.disk.served;
    assert_eq!(h.run(Operation::Flush), Ok(()));
    assert_eq!(h.disk.served, served);
}

#[test]
fn malformed_and_foreign_messages_get_error_replies() {
    let mut h = Harness::new(0);
    let mut message = Message::new(Blk::ID, &[0xff, 0xff, 0xff]).expect("fits");
    message.header.reply = CapSlot(77);
    message.header.flags = message.header.flags.with(MessageFlags::EXPECTS_REPLY);
    h.service.handle(&message);
    message.header.label = 0x1234;
    h.service.handle(&message);
    let replies = h.recorder.take();
    assert_eq!(replies.len(), 2);
    for (expected, (slot, reply)) in [RemoteError::MalformedRequest, RemoteError::UnknownProtocol]
        .into_iter()
        .zip(replies)
    {
        assert_eq!(slot, 77);
        assert_eq!(reply.label(), REPLY_ERROR);
        assert_eq!(
            moat_ipc::decode::<RemoteError>(reply.payload()),
            Some(expected)
        );
    }
}

#[test]
fn info_describes_the_device() {
    let mut h = Harness::new(features::FLUSH | features::BLK_SIZE);
    h.disk
        .mmio
        .set_config(config::BLK_SIZE, &4096u32.to_le_bytes());
    let Some(Response::Info(info)) = h.call(&Request::Info, None) else {
        panic!("no info");
    };
    assert_eq!(info.capacity_sectors, SECTORS);
    assert!(info.flush);
    assert!(!info.read_only);
    assert!(info.queue_depth >= 32);
    assert!(info.max_transfer >= 256 * 1024);
}

#[test]
fn a_new_client_instance_starts_clean() {
    let mut h = Harness::new(0);
    h.send(&Request::Io {
        tag: 1,
        operation: write(0, 0, 512),
    });
    h.settle();
    // The old instance's completion is queued; a new instance of the same client does not
    // see it and must set its region up again.
    let mut message = moat_ipc::encode(Blk::ID, &Request::Reap { wait: true }).expect("fits");
    message.header.badge = BADGE;
    message.header.sender = TaskId::new(3, 2);
    message.header.reply = CapSlot(500);
    message.header.flags = message.header.flags.with(MessageFlags::EXPECTS_REPLY);
    h.service.handle(&message);
    // Nothing of this instance's can complete: the reap is answered at once, empty (a waiting
    // reap would never end — this is how a client notices that its driver restarted).
    let replies = h.recorder.take();
    assert_eq!(replies.len(), 1);
    let response: Response = moat_ipc::decode(replies[0].1.payload()).expect("decodes");
    assert_eq!(response, Response::Completions(heapless::Vec::new()));
    let mut message = moat_ipc::encode(
        Blk::ID,
        &Request::Io {
            tag: 2,
            operation: read(0, 0, 512),
        },
    )
    .expect("fits");
    message.header.badge = BADGE;
    message.header.sender = TaskId::new(3, 2);
    message.header.reply = CapSlot(501);
    message.header.flags = message.header.flags.with(MessageFlags::EXPECTS_REPLY);
    h.service.handle(&message);
    let replies = h.recorder.take();
    let response: Response = moat_ipc::decode(replies[0].1.payload()).expect("decodes");
    assert_eq!(
        response,
        Response::Done(Completion {
            tag: 2,
            result: Err(BlkError::NoRegion)
        })
    );
}

#[test]
fn the_fake_catches_a_buffer_outside_any_grant() {
    let dma = FakeDma::new(1 << 20, 65536);
    let mut disk = FakeDisk::new(SECTORS, 0, 256, &dma);
    let chain = moat_virtio::fake::Chain {
        head: 0,
        segments: vec![
            moat_virtio::Segment::readable(dma.device_base(), 16),
            moat_virtio::Segment::writable(dma.device_base() + 4096, 1),
        ],
    };
    disk.serve(&chain);
    assert_eq!(disk.violations.len(), 2);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any mix of sizes and alignments reads back what was written.
        #[test]
        fn mixed_sizes_round_trip(
            ops in proptest::collection::vec((0u64..3000, 1u32..=128, 0u64..16), 1..12),
        ) {
            let mut h = Harness::with(0, 32 * 1024, Limits::default());
            let mut model = vec![0u8; (SECTORS * 512) as usize];
            for (index, &(sector, sectors, misalign)) in ops.iter().enumerate() {
                let len = sectors * 512;
                let sector = sector.min(SECTORS - u64::from(sectors));
                let offset = misalign * 512;
                let data = pattern(index as u8, len as usize);
                h.region.set(offset as usize, &data);
                prop_assert_eq!(h.run(write(sector, offset, len)), Ok(()));
                let at = (sector * 512) as usize;
                model[at..at + len as usize].copy_from_slice(&data);
            }
            prop_assert!(h.disk.data == model);
            for &(sector, sectors, misalign) in &ops {
                let len = sectors * 512;
                let sector = sector.min(SECTORS - u64::from(sectors));
                let offset = (2 << 20) + misalign * 512 + 512;
                prop_assert_eq!(h.run(read(sector, offset, len)), Ok(()));
                let at = (sector * 512) as usize;
                prop_assert!(h.region.get(offset as usize, len as usize) == model[at..at + len as usize]);
            }
            prop_assert!(h.disk.violations.is_empty());
        }
    }
}

#[test]
fn the_slot_is_found_in_a_shared_page() {
    use crate::spec::{SLOT_STRIDE, find_slot};
    // A page as QEMU lays it out: a network device, then the block device, in 0x200 slots.
    struct Page(Vec<FakeMmioDevice>);
    impl moat_virtio::Mmio for Page {
        fn read32(&self, offset: usize) -> u32 {
            self.0[offset / SLOT_STRIDE].read32(offset % SLOT_STRIDE)
        }
        fn write32(&self, offset: usize, value: u32) {
            self.0[offset / SLOT_STRIDE].write32(offset % SLOT_STRIDE, value)
        }
        fn read16(&self, offset: usize) -> u16 {
            self.0[offset / SLOT_STRIDE].read16(offset % SLOT_STRIDE)
        }
        fn read8(&self, offset: usize) -> u8 {
            self.0[offset / SLOT_STRIDE].read8(offset % SLOT_STRIDE)
        }
    }
    let mut slots: Vec<FakeMmioDevice> = (0..8).map(|_| FakeMmioDevice::new(0, 0, 0, 0)).collect();
    slots[6] = FakeMmioDevice::new(1, VERSION_1, 2, 256);
    slots[7] = FakeMmioDevice::new(2, VERSION_1, 1, 256);
    let page = Page(slots);
    assert_eq!(find_slot(&page, 4096, 2), Some(7 * SLOT_STRIDE));
    assert_eq!(find_slot(&page, 4096, 1), Some(6 * SLOT_STRIDE));
    assert_eq!(find_slot(&page, 4096, 3), None);
    assert_eq!(find_slot(&page, 100, 2), None);
}

#[test]
fn a_client_that_never_reaps_cannot_grow_the_driver() {
    let mut h = Harness::new(0);
    for i in 0..1000u32 {
        h.send(&Request::Io {
            tag: i,
            operation: read(0, 0, 512),
        });
        h.settle();
    }
    let completions = h.reap_all();
    assert!(completions.len() <= crate::service::MAX_QUEUED);
    assert!(
        completions
            .iter()
            .filter(|c| c.result == Err(BlkError::Busy))
            .count()
            > 0
    );
    assert!(h.service.stats().dropped_completions > 0);
    // Once reaped, the client is served again.
    assert_eq!(h.run(read(0, 0, 512)), Ok(()));
}

#[test]
fn setup_region_starts_a_new_session() {
    let mut h = Harness::new(0);
    // Two writes sent; the first completes and is not reaped, the second is still at the
    // device when the client sets its region up again.
    h.region.set(0, &pattern(1, 1024));
    h.send(&Request::Io {
        tag: 1,
        operation: write(0, 0, 512),
    });
    h.settle();
    h.send(&Request::Io {
        tag: 2,
        operation: write(1, 512, 512),
    });
    assert_eq!(h.service.outstanding(), 1);
    let setup = h.call(&Request::SetupRegion, Some(REGION_RIGHTS));
    assert_eq!(setup, Some(Response::Region { len: 4 << 20 }));
    // A waiting reap (the old request is still in flight) is answered, empty, once that
    // request is done: nothing of the new session is in flight.
    assert_eq!(h.call(&Request::Reap { wait: true }, None), None);
    let reaper = h.next_reply;
    let replies = h.settle();
    assert_eq!(
        replies,
        [(reaper, Response::Completions(heapless::Vec::new()))]
    );
    // Neither completion of the old session reaches the new one …
    assert!(h.reap_all().is_empty());
    assert_eq!(h.service.stats().dropped_completions, 2);
    // … though the device did the work, and the new session works.
    assert_eq!(&h.disk.data[512..1024], &pattern(1, 1024)[512..]);
    h.send(&Request::Io {
        tag: 3,
        operation: read(0, 2048, 512),
    });
    h.settle();
    assert_eq!(
        h.reap_all(),
        [Completion {
            tag: 3,
            result: Ok(())
        }]
    );
    // A call-ed request is answered whatever the session (its caller waits for it).
    assert_eq!(h.run(read(0, 0, 512)), Ok(()));
}
