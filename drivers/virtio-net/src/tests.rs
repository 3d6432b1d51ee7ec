//! Host tests: the driver against well-behaved and hostile fake devices, and the `net-api`
//! handler over a heap frame region.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::vec;
use std::vec::Vec;

use moat_abi::{CapSlot, Rights};
use moat_net_api::{
    FrameMemory, HeapRegion, MacAddress, NetError, REGION_RIGHTS, REGION_SIZE, Request, Response,
    TxFrame, rx_slot_offset, tx_slot_offset,
};
use moat_virtio::fake::FakeMmioDevice;
use proptest::prelude::*;

use crate::device::{QUEUE_SIZE, SendError};
use crate::fake::{DEVICE_MAC, FALLBACK_MAC, FakeDma, FakeNet, device, ethernet};
use crate::features;
use crate::frame::{NET_HEADER, NetHeader, RxDrop, check_received};
use crate::server::{NetServer, Platform};

fn net() -> FakeNet {
    FakeNet::new().expect("device comes up")
}

fn header(flags: u8, gso_type: u8, buffers: u16) -> Vec<u8> {
    let mut bytes = vec![0; NET_HEADER];
    bytes[0] = flags;
    bytes[1] = gso_type;
    bytes[10..12].copy_from_slice(&buffers.to_le_bytes());
    bytes
}

#[test]
fn brings_up_with_mac_mtu_and_status() {
    let net = net();
    let accepted = net.mmio.driver_features();
    assert_eq!(accepted & features::WANTED, features::WANTED);
    assert_ne!(accepted & moat_virtio::features::VERSION_1, 0);
    let link = net.driver.link();
    assert_eq!(link.mac, DEVICE_MAC);
    assert_eq!(link.mtu, 1500);
    assert!(link.link_up);
    // Every receive buffer is posted, each big enough for a whole frame and its header.
    assert_eq!(net.rx.pending(), QUEUE_SIZE);
    assert_eq!(net.mmio.status() & moat_virtio::mmio::status::DRIVER_OK, 4);
}

#[test]
fn falls_back_without_mac_and_clamps_mtu() {
    let mmio = device(features::MTU, 9000, 256);
    let net = FakeNet::with_device(mmio, FakeDma::new()).expect("up");
    assert_eq!(net.driver.link().mac, FALLBACK_MAC);
    assert_eq!(net.driver.link().mtu, 1500);
    assert!(
        net.driver.link().link_up,
        "no STATUS feature: link assumed up"
    );

    let mmio = device(features::WANTED, 20, 256);
    let net = FakeNet::with_device(mmio, FakeDma::new()).expect("up");
    assert_eq!(net.driver.link().mtu, 68);

    // A multicast "station" address from the device is not used.
    let mmio = device(features::WANTED, 1500, 256);
    mmio.set_config(0, &[0x01, 0, 0x5e, 0, 0, 1]);
    let net = FakeNet::with_device(mmio, FakeDma::new()).expect("up");
    assert_eq!(net.driver.link().mac, FALLBACK_MAC);
}

#[test]
fn refuses_other_device_types() {
    let mmio = FakeMmioDevice::new(2, moat_virtio::features::VERSION_1, 1, 64);
    assert!(matches!(
        FakeNet::with_device(mmio, FakeDma::new()),
        Err(crate::InitError::NotNet(2))
    ));
}

#[test]
fn link_status_follows_config_changes() {
    let mut net = net();
    net.mmio
        .set_config(crate::config::STATUS, &0u16.to_le_bytes());
    net.mmio
        .raise_interrupt(moat_virtio::mmio::interrupt::CONFIG_CHANGE);
    net.driver.handle_interrupt();
    assert!(!net.driver.link().link_up);
    assert_eq!(net.mmio.interrupt_status(), 0, "interrupt acknowledged");
}

#[test]
fn receives_frames_for_us_broadcast_and_multicast() {
    let mut net = net();
    let ours = ethernet(DEVICE_MAC, 60);
    let broadcast = ethernet(MacAddress::BROADCAST, 342);
    let multicast = ethernet(MacAddress([0x01, 0, 0x5e, 0, 0, 0xfb]), 100);
    let other = ethernet(MacAddress([0x02, 9, 9, 9, 9, 9]), 100);
    let full = ethernet(DEVICE_MAC, 1514);
    for frame in [&ours, &broadcast, &multicast, &other, &full] {
        assert!(net.deliver(frame));
    }
    net.driver.handle_interrupt();
    assert_eq!(net.take_all(), vec![ours, broadcast, multicast, full]);
    let counters = net.driver.counters();
    assert_eq!(counters.rx_frames, 4);
    assert_eq!(counters.rx_bytes, 60 + 342 + 100 + 1514);
    assert_eq!(counters.rx_drops.not_for_us, 1);
    // Buffers went straight back to the device.
    assert_eq!(net.rx.pending(), QUEUE_SIZE);
}

#[test]
fn keeps_receiving_past_one_ring() {
    let mut net = net();
    for round in 0..5u8 {
        for _ in 0..QUEUE_SIZE {
            let mut frame = ethernet(DEVICE_MAC, 64);
            frame[20] = round;
            assert!(net.deliver(&frame));
        }
        net.driver.handle_interrupt();
        let frames = net.take_all();
        assert_eq!(frames.len(), usize::from(QUEUE_SIZE));
        assert!(frames.iter().all(|frame| frame[20] == round));
    }
}

#[test]
fn drops_truncated_frames() {
    let mut net = net();
    // Shorter than the net header, and header plus a partial Ethernet header.
    assert!(net.deliver_raw(&[0; 5], None));
    assert!(net.deliver_raw(&[0; NET_HEADER + 13], None));
    // A completion claiming 0 bytes.
    assert!(net.deliver_raw(&[0; 100], Some(0)));
    net.driver.handle_interrupt();
    assert!(net.take_all().is_empty());
    assert_eq!(net.driver.counters().rx_drops.truncated, 3);
    assert_eq!(net.rx.pending(), QUEUE_SIZE);
}

#[test]
fn drops_lengths_beyond_the_buffer() {
    let mut net = net();
    let frame = ethernet(DEVICE_MAC, 60);
    let mut bytes = vec![0; NET_HEADER];
    bytes.extend_from_slice(&frame);
    assert!(net.deliver_raw(&bytes, Some(4096)));
    assert!(net.deliver_raw(&bytes, Some(u32::MAX)));
    net.driver.handle_interrupt();
    assert!(net.take_all().is_empty());
    assert_eq!(net.driver.counters().rx_drops.too_long, 2);
    // The buffers were taken back and posted again.
    assert_eq!(net.rx.pending(), QUEUE_SIZE);
    // And the driver still works.
    assert!(net.deliver(&frame));
    net.driver.handle_interrupt();
    assert_eq!(net.take_all(), vec![frame]);
}

#[test]
fn drops_frames_longer_than_the_mtu() {
    let mmio = device(features::WANTED, 576, 256);
    let mut net = FakeNet::with_device(mmio, FakeDma::new()).expect("up");
    // The buffer is sized for the MTU: a longer frame does not fit the buffer at all.
    assert!(net.deliver(&ethernet(DEVICE_MAC, 14 + 576)));
    net.driver.handle_interrupt();
    assert_eq!(net.take_all().len(), 1);
    assert!(net.deliver_raw(&[0; 100], Some((NET_HEADER + 14 + 577) as u32)));
    net.driver.handle_interrupt();
    assert!(net.take_all().is_empty());
    assert_eq!(net.driver.counters().rx_drops.too_long, 1);
}

#[test]
fn drops_headers_claiming_offloads() {
    let mut net = net();
    let frame = ethernet(DEVICE_MAC, 80);
    for (flags, gso, buffers, good) in [
        (0, 0, 1, true),
        (0, 0, 0, true),
        (2, 0, 1, true),
        (1, 0, 1, false),
        (0, 1, 1, false),
        (0, 4, 1, false),
        (0, 0, 2, false),
        (0x80, 0, 1, false),
    ] {
        let mut bytes = header(flags, gso, buffers);
        bytes.extend_from_slice(&frame);
        assert!(net.deliver_raw(&bytes, None));
        net.driver.handle_interrupt();
        assert_eq!(
            net.take_all().len(),
            usize::from(good),
            "{flags} {gso} {buffers}"
        );
    }
    assert_eq!(net.driver.counters().rx_drops.bad_header, 5);
}

#[test]
fn ignores_used_ids_not_outstanding_and_repeated_completions() {
    let mut net = net();
    let frame = ethernet(DEVICE_MAC, 60);
    assert!(net.deliver(&frame));
    let head = 0u32; // the first posted chain
    net.rx.push_used(9999, 74); // out of range
    net.rx.push_used(u32::from(QUEUE_SIZE) + 1, 74);
    net.rx.push_used(5000, 74);
    net.driver.handle_interrupt();
    assert_eq!(net.take_all(), vec![frame.clone()]);
    assert_eq!(net.driver.counters().bad_used_entries, 3);
    // Completing head 0 again: the driver re-posted a fresh, zeroed buffer on that descriptor,
    // so the replay completes the new buffer, whose zeros (destination 00:00:00:00:00:00) are
    // dropped; the old frame is never delivered twice.
    net.rx.push_used(head, 74);
    net.driver.handle_interrupt();
    assert!(net.take_all().is_empty());
    assert_eq!(net.driver.counters().rx_drops.not_for_us, 1);
    assert!(!net.driver.faulted());
    assert!(net.deliver(&frame));
    net.driver.handle_interrupt();
    assert_eq!(net.take_all(), vec![frame]);
}

#[test]
fn index_jump_stops_the_device() {
    let mut net = net();
    let used = net.rx.used_idx();
    net.rx.set_used_idx(used.wrapping_add(QUEUE_SIZE + 5));
    net.driver.handle_interrupt();
    assert!(net.driver.faulted());
    assert_eq!(net.driver.counters().ring_faults, 1);
    assert!(
        net.mmio.resets() >= 2,
        "reset at start-up and after the fault"
    );
    assert_eq!(
        net.driver.send(&ethernet(DEVICE_MAC, 60)),
        Err(SendError::Faulted)
    );
    assert!(!net.driver.link().link_up);
}

#[test]
fn used_ring_rewritten_between_reads() {
    let mut net = net();
    assert!(net.deliver(&ethernet(DEVICE_MAC, 60)));
    // The used ring of queue 0: every read of an entry's length sees a different, growing
    // value; every read of used.idx a different one.
    let used = net.mmio.queue(0).expect("queue").device;
    let base = crate::fake::RING_BASE;
    let reads = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&reads);
    net.driver.dma().rings().set_read_hook(move |event, bytes| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let offset = (used - base) as usize;
        if event.offset == offset + 4 + 4 {
            bytes[event.offset..event.offset + 4].copy_from_slice(&(n * 1000).to_le_bytes());
        }
    });
    net.driver.handle_interrupt();
    net.driver.handle_interrupt();
    assert!(reads.load(Ordering::SeqCst) > 0);
    // Whatever length was read once is the length used: checked against the buffer, then the
    // frame checked. No panic, nothing wrongly accepted.
    let counters = net.driver.counters();
    let frames = net.take_all();
    assert_eq!(
        frames.len() as u64
            + counters.rx_drops.too_long
            + counters.rx_drops.truncated
            + counters.rx_drops.not_for_us,
        1
    );
    net.driver.dma().rings().clear_read_hook();
}

#[test]
fn used_index_flapping_never_panics() {
    let mut net = net();
    for _ in 0..4 {
        assert!(net.deliver(&ethernet(DEVICE_MAC, 60)));
    }
    let used = net.mmio.queue(0).expect("queue").device;
    let offset = (used - crate::fake::RING_BASE) as usize + 2;
    let flip = Arc::new(AtomicU32::new(0));
    let state = Arc::clone(&flip);
    net.driver.dma().rings().set_read_hook(move |event, bytes| {
        if event.offset == offset {
            let n = state.fetch_add(1, Ordering::SeqCst) as u16;
            bytes[offset..offset + 2].copy_from_slice(&(n.wrapping_mul(7919)).to_le_bytes());
        }
    });
    for _ in 0..10 {
        net.driver.handle_interrupt();
    }
    // Either a jump was seen (fault) or entries were consumed: the driver is consistent.
    let _ = net.take_all();
    net.driver.dma().rings().clear_read_hook();
}

#[test]
fn transmits_with_a_zero_header() {
    let mut net = net();
    let frames = [
        ethernet(MacAddress([0x52, 0x55, 10, 0, 2, 2]), 60),
        ethernet(MacAddress::BROADCAST, 1514),
        ethernet(MacAddress::BROADCAST, 14),
    ];
    for frame in &frames {
        net.driver.send(frame).expect("sent");
    }
    net.driver.flush();
    assert_eq!(net.mmio.notifications().last(), Some(&1));
    assert_eq!(net.transmitted(), frames.to_vec());
    let counters = net.driver.counters();
    assert_eq!(counters.tx_frames, 3);
    assert_eq!(counters.tx_bytes, 60 + 1514 + 14);
}

#[test]
fn refuses_bad_transmit_lengths() {
    let mut net = net();
    assert_eq!(net.driver.send(&[0; 13]), Err(SendError::BadLength));
    assert_eq!(net.driver.send(&[0; 1515]), Err(SendError::BadLength));
    assert_eq!(net.driver.send(&[]), Err(SendError::BadLength));
    assert_eq!(net.driver.counters().tx_drops.bad_length, 3);
    assert!(net.transmitted().is_empty());
}

#[test]
fn transmit_ring_full_then_reused() {
    let mut net = net();
    let frame = ethernet(MacAddress::BROADCAST, 100);
    for _ in 0..QUEUE_SIZE {
        net.driver.send(&frame).expect("room");
    }
    assert_eq!(net.driver.send(&frame), Err(SendError::NoBuffer));
    assert_eq!(net.driver.counters().tx_drops.no_buffer, 1);
    net.driver.flush();
    assert_eq!(net.transmitted().len(), usize::from(QUEUE_SIZE));
    // Completions free the buffers; no new grants are needed.
    for _ in 0..3 * QUEUE_SIZE {
        net.driver.send(&frame).expect("reused");
        net.driver.flush();
        assert_eq!(net.transmitted().len(), 1);
    }
}

#[test]
fn transmit_without_grants_is_counted() {
    let dma = FakeDma::new();
    let mut net = FakeNet::with_device(device(features::WANTED, 1500, 256), dma).expect("up");
    net.driver.dma().limit_grants(1);
    let frame = ethernet(MacAddress::BROADCAST, 100);
    net.driver.send(&frame).expect("one grant");
    assert_eq!(net.driver.send(&frame), Err(SendError::NoBuffer));
    assert_eq!(net.driver.counters().tx_drops.no_buffer, 1);
}

#[test]
fn hostile_transmit_completions() {
    let mut net = net();
    let frame = ethernet(MacAddress::BROADCAST, 100);
    net.driver.send(&frame).expect("sent");
    let chain = net.tx.pop().expect("available");
    net.tx.complete(chain.head, 50); // a length on a read-only buffer
    net.tx.complete(chain.head, 0); // and again
    net.tx.push_used(1234, 0);
    net.driver.handle_interrupt();
    assert_eq!(net.driver.counters().bad_used_entries, 3);
    // The buffer came back once and is reused.
    for _ in 0..QUEUE_SIZE {
        net.driver.send(&frame).expect("room");
    }
}

#[test]
fn frame_checks_on_private_copies() {
    let mut good = vec![0; NET_HEADER];
    good.extend_from_slice(&ethernet(DEVICE_MAC, 60));
    assert_eq!(check_received(&good, DEVICE_MAC, 1514), Ok(()));
    assert_eq!(
        check_received(&good[..NET_HEADER + 13], DEVICE_MAC, 1514),
        Err(RxDrop::Truncated)
    );
    assert_eq!(check_received(&good, DEVICE_MAC, 59), Err(RxDrop::TooLong));
    assert_eq!(
        check_received(&good, MacAddress([2, 0, 0, 0, 0, 9]), 1514),
        Err(RxDrop::NotForUs)
    );
    assert_eq!(NetHeader::decode(&[0; 11]), None);
    let decoded = NetHeader::decode(&header(2, 0, 1)).expect("12 bytes");
    assert!(decoded.acceptable());
    assert_eq!(decoded.buffers, 1);
}

proptest! {
    /// Any sequence of device completions (contents, claimed lengths, ids) leaves the driver
    /// consistent: every delivered frame passed the checks, nothing panics.
    #[test]
    fn hostile_receive_sequences(
        steps in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..1600), proptest::option::of(any::<u32>()), any::<bool>(), any::<u16>()),
            1..40,
        )
    ) {
        let mut net = net();
        for (bytes, claimed, bogus, id) in steps {
            if bogus {
                net.rx.push_used(u32::from(id), claimed.unwrap_or(0));
            } else {
                net.deliver_raw(&bytes, claimed);
            }
            net.driver.handle_interrupt();
            for frame in net.take_all() {
                prop_assert!((14..=1514).contains(&frame.len()));
                let destination = MacAddress(frame[..6].try_into().expect("6 bytes"));
                prop_assert!(destination == DEVICE_MAC || destination.is_multicast());
            }
            if net.driver.faulted() {
                break;
            }
        }
    }
}

/// The handler's surroundings in tests: a heap region for any capability slot.
#[derive(Debug, Default)]
struct TestPlatform {
    regions: Vec<(CapSlot, HeapRegion)>,
    dropped: Vec<CapSlot>,
    irq_acks: u32,
}

impl Platform for TestPlatform {
    type Region = HeapRegion;

    fn map_region(&mut self, memory: CapSlot, _rights: Rights) -> Option<HeapRegion> {
        self.regions
            .iter()
            .find(|(slot, _)| *slot == memory)
            .map(|(_, region)| region.clone())
    }

    fn drop_capability(&mut self, slot: CapSlot) {
        self.dropped.push(slot);
    }

    fn acknowledge_irq(&mut self) {
        self.irq_acks += 1;
    }
}

struct Rig {
    server: NetServer<FakeMmioDevice, FakeDma, TestPlatform>,
    region: HeapRegion,
    rx: moat_virtio::fake::FakeQueueDevice<crate::fake::FakeBus>,
    tx: moat_virtio::fake::FakeQueueDevice<crate::fake::FakeBus>,
    bus: crate::fake::FakeBus,
}

const CLIENT: u64 = 7;

fn rig() -> Rig {
    let FakeNet {
        driver,
        rx,
        tx,
        bus,
        ..
    } = net();
    let region = HeapRegion::new(REGION_SIZE);
    let platform = TestPlatform {
        regions: vec![
            (CapSlot(10), region.clone()),
            (CapSlot(11), HeapRegion::new(REGION_SIZE - 1)),
        ],
        ..TestPlatform::default()
    };
    let mut server = NetServer::new(driver, platform, 1);
    let reply = server.handle_request(Request::Attach, CLIENT, Some((CapSlot(10), REGION_RIGHTS)));
    assert!(matches!(reply, Response::Link(link) if link.mac == DEVICE_MAC));
    Rig {
        server,
        region,
        rx,
        tx,
        bus,
    }
}

fn tx(frames: &[TxFrame]) -> Request {
    Request::Transmit(heapless::Vec::from_slice(frames).expect("fits"))
}

#[test]
fn server_transmits_from_slots() {
    let mut rig = rig();
    let a = ethernet(MacAddress::BROADCAST, 60);
    let b = ethernet(MacAddress::BROADCAST, 1514);
    assert!(rig.region.write(tx_slot_offset(3).expect("slot"), &a));
    assert!(rig.region.write(tx_slot_offset(0).expect("slot"), &b));
    let reply = rig.server.handle_request(
        tx(&[TxFrame { slot: 3, len: 60 }, TxFrame { slot: 0, len: 1514 }]),
        CLIENT,
        None,
    );
    assert_eq!(reply, Response::Sent { accepted: 2 });
    let mut sent = Vec::new();
    while let Some(chain) = rig.tx.pop() {
        sent.push(chain.read(&rig.bus).expect("readable")[NET_HEADER..].to_vec());
    }
    assert_eq!(sent, vec![a, b]);
}

#[test]
fn server_checks_slots_lengths_and_clients() {
    let mut rig = rig();
    let dup = tx(&[TxFrame { slot: 1, len: 60 }, TxFrame { slot: 1, len: 60 }]);
    assert_eq!(
        rig.server.handle_request(dup, CLIENT, None),
        Response::Error(NetError::BadSlot)
    );
    let far = tx(&[TxFrame { slot: 16, len: 60 }]);
    assert_eq!(
        rig.server.handle_request(far, CLIENT, None),
        Response::Error(NetError::BadSlot)
    );
    let long = tx(&[TxFrame { slot: 0, len: 2000 }, TxFrame { slot: 1, len: 60 }]);
    assert_eq!(
        rig.server.handle_request(long, CLIENT, None),
        Response::Sent { accepted: 0 }
    );
    let other = tx(&[TxFrame { slot: 0, len: 60 }]);
    assert_eq!(
        rig.server.handle_request(other, CLIENT + 1, None),
        Response::Error(NetError::Busy)
    );
    assert_eq!(
        rig.server
            .handle_request(Request::Receive, CLIENT + 1, None),
        Response::Error(NetError::Busy)
    );
    // Another client cannot take over; its capability is dropped.
    assert_eq!(
        rig.server.handle_request(
            Request::Attach,
            CLIENT + 1,
            Some((CapSlot(10), REGION_RIGHTS))
        ),
        Response::Error(NetError::Busy)
    );
    // A region too small, or without write rights, is refused.
    assert_eq!(
        rig.server
            .handle_request(Request::Attach, CLIENT, Some((CapSlot(11), REGION_RIGHTS))),
        Response::Error(NetError::BadRegion)
    );
    assert_eq!(
        rig.server
            .handle_request(Request::Attach, CLIENT, Some((CapSlot(10), Rights::READ))),
        Response::Error(NetError::BadRegion)
    );
    assert_eq!(
        rig.server.handle_request(Request::Attach, CLIENT, None),
        Response::Error(NetError::BadRegion)
    );
    // A capability on a request that takes none is dropped, not kept.
    let _ = rig
        .server
        .handle_request(Request::Link, CLIENT, Some((CapSlot(12), Rights::READ)));
    assert_eq!(
        rig.server.platform().dropped,
        vec![CapSlot(10), CapSlot(11), CapSlot(10), CapSlot(12)]
    );
}

#[test]
fn server_receives_into_slots() {
    let mut rig = rig();
    let frames: Vec<Vec<u8>> = (0..20).map(|i| ethernet(DEVICE_MAC, 60 + i * 10)).collect();
    for frame in &frames {
        let chain = rig.rx.pop().expect("posted");
        let mut bytes = vec![0; NET_HEADER];
        bytes.extend_from_slice(frame);
        let written = chain.write(&rig.bus, &bytes).expect("fits");
        rig.rx.complete(chain.head, written);
    }
    let Response::Received { lengths, more } =
        rig.server.handle_request(Request::Receive, CLIENT, None)
    else {
        panic!("not a receive answer");
    };
    assert_eq!(lengths.len(), 16);
    assert!(more);
    for (slot, len) in lengths.iter().enumerate() {
        let mut out = vec![0; usize::from(*len)];
        assert!(
            rig.region
                .read(rx_slot_offset(slot).expect("slot"), &mut out)
        );
        assert_eq!(out, frames[slot]);
    }
    let Response::Received { lengths, more } =
        rig.server.handle_request(Request::Receive, CLIENT, None)
    else {
        panic!("not a receive answer");
    };
    assert_eq!(lengths.len(), 4);
    assert!(!more);
    let Response::Counters(counters) = rig.server.handle_request(Request::Counters, CLIENT, None)
    else {
        panic!("not counters");
    };
    assert_eq!(counters.rx_frames, 20);
}

#[test]
fn server_acknowledges_interrupts() {
    use moat_ipc::Handler;
    let mut rig = rig();
    rig.server.notified(1);
    rig.server.notified(2);
    assert_eq!(rig.server.platform().irq_acks, 1);
}

#[test]
fn not_attached_is_refused() {
    let FakeNet { driver, .. } = net();
    let mut server = NetServer::new(driver, TestPlatform::default(), 1);
    assert_eq!(
        server.handle_request(Request::Receive, CLIENT, None),
        Response::Error(NetError::NotAttached)
    );
    assert!(matches!(
        server.handle_request(Request::Link, CLIENT, None),
        Response::Link(_)
    ));
}
