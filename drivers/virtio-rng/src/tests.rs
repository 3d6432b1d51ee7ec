//! Host tests against the fake entropy device: bring-up order, bytes through the bounce
//! buffer, and a hostile device (lengths beyond the buffer, unknown ids, a jumping index,
//! silence) that must never cause an out-of-bounds copy, a panic or a hang.

use core::cell::RefCell;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use moat_rng_api::{EntropySource, MAX_FILL, Request, Response, RngError, RngServer};
use moat_virtio::TransportError;
use moat_virtio::fake::FakeMmioDevice;
use moat_virtio::features::{ACCESS_PLATFORM, VERSION_1};
use moat_virtio::mmio::{register, status};
use proptest::prelude::*;

use crate::device::{MAX_WAITS, RngDevice, StartError};
use crate::fake::{FakeDma, FakeEntropy, FakeIrq, Misbehaviour};

type Device = RngDevice<FakeMmioDevice, FakeIrq>;

/// A started device, the fake behind it, its interrupt and the DMA window.
struct Setup {
    device: Device,
    fake: Rc<RefCell<FakeEntropy>>,
    irq: FakeIrq,
    dma: FakeDma,
}

/// Starts a driver on a fresh fake device with queue maximum `queue_max`; the fake device is
/// returned either way.
fn try_start(
    dma: &FakeDma,
    queue_max: u32,
) -> (
    Result<Device, StartError>,
    Rc<RefCell<FakeEntropy>>,
    FakeIrq,
) {
    let fake = Rc::new(RefCell::new(FakeEntropy::new(dma, queue_max)));
    let irq = FakeIrq::new(&fake);
    let mmio = fake.borrow().mmio.clone();
    (RngDevice::start(mmio, dma, irq.clone(), || {}), fake, irq)
}

fn start() -> Setup {
    let dma = FakeDma::new();
    let (started, fake, irq) = try_start(&dma, 256);
    Setup {
        device: started.expect("the device starts"),
        fake,
        irq,
        dma,
    }
}

fn misbehave(setup: &Setup, misbehaviour: Misbehaviour) {
    setup.fake.borrow_mut().misbehave = misbehaviour;
}

#[test]
fn bring_up_resets_first_then_negotiates_and_goes_live() {
    let setup = start();
    let mmio = setup.fake.borrow().mmio.clone();
    let statuses: Vec<u32> = mmio
        .writes()
        .into_iter()
        .filter(|(offset, _)| *offset == register::STATUS)
        .map(|(_, value)| value)
        .collect();
    // The very first status write is the reset.
    assert_eq!(statuses.first(), Some(&0));
    assert_eq!(setup.dma.reset_completes(), 1);
    assert_eq!(mmio.driver_features(), VERSION_1 | ACCESS_PLATFORM);
    assert!(mmio.status() & status::DRIVER_OK != 0);
    let queue = mmio.queue(0).expect("queue 0");
    assert!(queue.ready);
    assert_eq!(queue.num, 4);
}

#[test]
fn a_slow_reset_is_waited_for_and_a_stuck_one_is_an_error() {
    let dma = FakeDma::new();
    let fake = FakeEntropy::new(&dma, 8);
    fake.mmio.set_reset_reads(50);
    let mut waits = 0;
    let irq = FakeIrq::new(&Rc::new(RefCell::new(FakeEntropy::new(&dma, 8))));
    let started = RngDevice::start(fake.mmio.clone(), &dma, irq.clone(), || waits += 1);
    assert!(started.is_ok());
    assert!(waits >= 50, "{waits}");

    fake.mmio.set_reset_reads(u32::MAX);
    let stuck = RngDevice::start(fake.mmio.clone(), &dma, irq, || {});
    assert!(matches!(
        stuck.err(),
        Some(StartError::Transport(TransportError::ResetTimeout { .. }))
    ));
}

#[test]
fn another_device_type_or_no_memory_is_refused() {
    let dma = FakeDma::new();
    let blk = FakeMmioDevice::new(2, VERSION_1, 1, 8);
    let irq = FakeIrq::new(&Rc::new(RefCell::new(FakeEntropy::new(&dma, 8))));
    let started = RngDevice::start(blk, &dma, irq, || {});
    assert_eq!(started.err(), Some(StartError::NotEntropy(2)));

    let dma = FakeDma::new();
    // Ring memory yes, bounce buffer no.
    dma.set_maps_left(Some(1));
    let (started, fake, _) = try_start(&dma, 8);
    assert_eq!(started.err(), Some(StartError::Dma(RngError::NoMemory)));
    assert!(fake.borrow().mmio.status() & status::FAILED != 0);

    let (started, _, _) = try_start(&FakeDma::new(), 0);
    assert_eq!(
        started.err(),
        Some(StartError::Transport(TransportError::QueueUnavailable(0)))
    );
    let (started, _, _) = try_start(&FakeDma::new(), 1);
    assert!(started.is_ok(), "a one-entry queue is enough");
}

#[test]
fn fills_with_exactly_the_devices_bytes() {
    let mut setup = start();
    let mut out = vec![0u8; 100];
    assert_eq!(setup.device.fill(&mut out), Ok(100));
    assert_eq!(out, setup.fake.borrow().produced);
    // Larger than the bounce buffer: one buffer's worth.
    let mut big = vec![0u8; 1000];
    assert_eq!(setup.device.fill(&mut big), Ok(MAX_FILL));
    assert_eq!(big[..MAX_FILL], setup.fake.borrow().produced[100..]);
    assert!(big[MAX_FILL..].iter().all(|&byte| byte == 0));
    assert!(setup.fake.borrow().violations.is_empty());
    assert_eq!(setup.device.stats().bytes, 100 + MAX_FILL as u64);
    // Waited for the interrupt, acknowledged it and unmasked once per request.
    assert_eq!(setup.irq.waits(), 2);
    assert_eq!(setup.irq.unmasks(), 2);
    assert_eq!(setup.fake.borrow().mmio.interrupt_status(), 0);
}

#[test]
fn the_server_answers_fills_through_the_device() {
    let setup = start();
    let fake = setup.fake.clone();
    let mut server = RngServer::new(setup.device);
    let Response::Bytes(bytes) = server.respond(Request::Fill {
        len: MAX_FILL as u16,
    }) else {
        panic!("bytes");
    };
    assert_eq!(bytes[..], fake.borrow().produced[..]);
}

#[test]
fn a_short_write_returns_only_what_the_device_wrote() {
    let mut setup = start();
    misbehave(
        &setup,
        Misbehaviour {
            short: Some(3),
            ..Misbehaviour::default()
        },
    );
    let mut out = vec![0xeeu8; 10];
    assert_eq!(setup.device.fill(&mut out), Ok(3));
    assert_eq!(out[..3], setup.fake.borrow().produced[..]);
    // Nothing beyond what the device wrote was copied (no stale window bytes, no zeros).
    assert!(out[3..].iter().all(|&byte| byte == 0xee));
    // The server completes the request by asking again.
    let fake = setup.fake.clone();
    let mut server = RngServer::new(setup.device);
    let Response::Bytes(bytes) = server.respond(Request::Fill { len: 10 }) else {
        panic!("bytes");
    };
    assert_eq!(bytes[..], fake.borrow().produced[3..13]);
    // 3 + 3 + 3 short, then the last byte.
    assert_eq!(server.info().short_reads, 3);
}

#[test]
fn a_length_beyond_the_buffer_fails_the_device_without_copying() {
    let mut setup = start();
    misbehave(
        &setup,
        Misbehaviour {
            written: Some(4096),
            ..Misbehaviour::default()
        },
    );
    let mut out = vec![0u8; 16];
    assert_eq!(setup.device.fill(&mut out), Err(RngError::DeviceFailed));
    assert!(out.iter().all(|&byte| byte == 0), "nothing copied");
    assert!(setup.device.failed());
    assert_eq!(setup.device.stats().hostile_entries, 1);
    // Reset (status 0 written after DRIVER_OK), and everything later is refused.
    let writes = setup.fake.borrow().mmio.writes();
    assert_eq!(writes.last(), Some(&(register::STATUS, 0)));
    misbehave(&setup, Misbehaviour::default());
    assert_eq!(setup.device.fill(&mut out), Err(RngError::DeviceFailed));
}

#[test]
fn used_entries_for_unknown_ids_are_counted_and_ignored() {
    let mut setup = start();
    for forged in [3, 9999] {
        misbehave(
            &setup,
            Misbehaviour {
                forged_id: Some(forged),
                ..Misbehaviour::default()
            },
        );
        let mut out = vec![0u8; 32];
        assert_eq!(setup.device.fill(&mut out), Ok(32));
        let produced = setup.fake.borrow().produced.clone();
        assert_eq!(out[..], produced[produced.len() - 32..]);
    }
    assert_eq!(setup.device.stats().hostile_entries, 2);
    assert!(!setup.device.failed());
}

#[test]
fn a_jumping_used_index_fails_the_device() {
    let mut setup = start();
    misbehave(
        &setup,
        Misbehaviour {
            jump: true,
            ..Misbehaviour::default()
        },
    );
    let mut out = vec![0u8; 8];
    assert_eq!(setup.device.fill(&mut out), Err(RngError::DeviceFailed));
    assert!(setup.device.failed());
}

#[test]
fn a_silent_device_times_out_instead_of_hanging() {
    let mut setup = start();
    misbehave(
        &setup,
        Misbehaviour {
            silent: true,
            ..Misbehaviour::default()
        },
    );
    let mut out = vec![0u8; 8];
    assert_eq!(setup.device.fill(&mut out), Err(RngError::TimedOut));
    assert!(setup.irq.waits() <= MAX_WAITS);
    assert!(setup.device.failed());
}

#[test]
fn an_empty_fill_does_not_reach_the_device() {
    let mut setup = start();
    assert_eq!(setup.device.fill(&mut []), Ok(0));
    assert!(setup.fake.borrow().produced.is_empty());
    assert_eq!(setup.irq.waits(), 0);
}

proptest! {
    /// Whatever the device reports as the used length (and however much it writes), the driver
    /// copies at most what it posted and what the device said, and never panics.
    #[test]
    fn any_used_length_is_safe(written in any::<u32>(), short in 0usize..300, len in 1usize..300) {
        let mut setup = start();
        misbehave(&setup, Misbehaviour {
            written: Some(written),
            short: Some(short),
            ..Misbehaviour::default()
        });
        let mut out = vec![0xeeu8; len];
        let posted = len.min(MAX_FILL);
        match setup.device.fill(&mut out) {
            Ok(n) => {
                prop_assert!(n <= posted && n as u64 <= u64::from(written));
                prop_assert_eq!(n, written as usize);
                prop_assert!(out[n..].iter().all(|&byte| byte == 0xee));
            }
            Err(error) => {
                prop_assert_eq!(error, RngError::DeviceFailed);
                prop_assert!(written as usize > posted);
                prop_assert!(out.iter().all(|&byte| byte == 0xee));
            }
        }
    }
}
