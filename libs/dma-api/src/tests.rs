//! Host tests: each direction's copy rule against a fake device, and the client stub against a
//! scripted fake kernel.

use core::cell::RefCell;
use std::vec;
use std::vec::Vec;

use moat_abi::{CapSlot, Error, Message, Rights, Syscall, Timeout};
use moat_userlib::Syscalls;

use crate::protocol::{Reply, encode_reply};
use crate::*;

const STALE: u8 = 0xAA;
const WINDOW: usize = 64 * 1024;

fn window() -> (Window, FakeDevice) {
    let window = FakeWindow::new(WINDOW, STALE).into_window();
    let device = FakeWindow::device(&window);
    (window, device)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn to_device_copies_in_before_the_device_reads_and_zeroes_the_tail() {
    let (window, device) = window();
    let grant = fake::grant::<ToDevice>(&window, 1, 4096, 2048).expect("fits");
    let data = pattern(1500, 3);
    let in_flight = Bounce::to_device(grant, &data).expect("fits");
    assert_eq!(in_flight.len(), 1500);
    assert_eq!(in_flight.device_address(), window.device_base() + 4096);
    // What the device reads is the data, and nothing stale after it.
    let seen = device
        .read(in_flight.device_address(), 2048)
        .expect("in window");
    assert_eq!(&seen[..1500], &data[..]);
    assert!(seen[1500..].iter().all(|&b| b == 0));
    // Bytes outside the grant are untouched.
    assert_eq!(
        device.read(window.device_base() + 4095, 1),
        Some(vec![STALE])
    );
    assert_eq!(
        device.read(window.device_base() + 4096 + 2048, 1),
        Some(vec![STALE])
    );
    let grant = in_flight.complete();
    assert_eq!(grant.len(), 2048);
}

#[test]
fn to_device_that_fills_the_grant_exactly_touches_nothing_past_it() {
    let (window, device) = window();
    let grant = fake::grant::<ToDevice>(&window, 1, 8192, 4096).expect("fits");
    let data = pattern(4096, 9);
    let in_flight = Bounce::to_device(grant, &data).expect("fits");
    assert_eq!(in_flight.len(), 4096);
    assert_eq!(device.read(in_flight.device_address(), 4096), Some(data));
    // No tail to zero: the byte after the grant keeps what was there.
    assert_eq!(
        device.read(window.device_base() + 8192 + 4096, 1),
        Some(vec![STALE])
    );
    let grant = in_flight.complete();
    // The same grant bounced again with less data gets its new tail zeroed.
    let in_flight = Bounce::to_device(grant, &pattern(100, 1)).expect("fits");
    let seen = device
        .read(in_flight.device_address(), 4096)
        .expect("in window");
    assert_eq!(&seen[..100], &pattern(100, 1)[..]);
    assert!(seen[100..].iter().all(|&b| b == 0));
    let _ = in_flight.complete();
}

#[test]
fn to_device_refuses_data_longer_than_the_grant_and_returns_it() {
    let (window, device) = window();
    let grant = fake::grant::<ToDevice>(&window, 1, 0, 100).expect("fits");
    let refused = Bounce::to_device(grant, &[1; 101]).expect_err("too long");
    assert_eq!(
        refused.error,
        BounceError::TooLong {
            len: 101,
            capacity: 100
        }
    );
    assert_eq!(refused.value.len(), 100);
    // Nothing was written.
    assert_eq!(
        device.read(window.device_base(), 100),
        Some(vec![STALE; 100])
    );
    // The returned grant still works.
    let in_flight = Bounce::to_device(refused.value, &[7; 100]).expect("fits");
    assert_eq!(
        device.read(in_flight.device_address(), 100),
        Some(vec![7; 100])
    );
    let _ = in_flight.complete();
}

#[test]
fn from_device_zeroes_first_so_a_short_write_exposes_nothing_stale() {
    let (window, device) = window();
    let grant = fake::grant::<FromDevice>(&window, 2, 8192, 512).expect("fits");
    let in_flight = Bounce::from_device(grant, 512).expect("fits");
    // Before the device runs, the whole grant is zero (not what was there before).
    assert_eq!(
        device.read(in_flight.device_address(), 512),
        Some(vec![0; 512])
    );
    // A short device write: 100 of 512 bytes.
    let written = pattern(100, 9);
    assert!(device.write(in_flight.device_address(), &written));
    let mut out = vec![0x55; 512];
    let grant = in_flight.complete(&mut out).expect("fits");
    assert_eq!(&out[..100], &written[..]);
    assert!(
        out[100..].iter().all(|&b| b == 0),
        "no stale bytes after a short write"
    );
    assert_eq!(grant.id(), GrantId::from_raw(2));
}

#[test]
fn from_device_over_keeps_the_callers_bytes_where_the_device_did_not_write() {
    let (window, device) = window();
    let grant = fake::grant::<FromDevice>(&window, 3, 0, 4096).expect("fits");
    let original = pattern(4096, 77);
    let in_flight = Bounce::from_device_over(grant, &original).expect("fits");
    assert_eq!(
        device.read(in_flight.device_address(), 4096),
        Some(original.clone())
    );
    let written = pattern(1000, 1);
    assert!(device.write(in_flight.device_address() + 10, &written));
    let mut out = original.clone();
    let _grant = in_flight.complete(&mut out).expect("fits");
    assert_eq!(&out[..10], &original[..10]);
    assert_eq!(&out[10..1010], &written[..]);
    assert_eq!(&out[1010..], &original[1010..]);
}

#[test]
fn from_device_copies_out_only_after_completion_and_only_what_is_asked() {
    let (window, device) = window();
    let grant = fake::grant::<FromDevice>(&window, 4, 0, 2048).expect("fits");
    let in_flight = Bounce::from_device(grant, 1024).expect("fits");
    let written = pattern(2048, 5);
    // A hostile device writes past the transfer length (inside the grant): the caller copies
    // out only the length it validated.
    assert!(device.write(in_flight.device_address(), &written));
    let mut reported = vec![0; 600];
    let grant = in_flight.complete(&mut reported).expect("fits");
    assert_eq!(&reported[..], &written[..600]);

    // Longer than the transfer: refused, the transfer comes back intact.
    let in_flight = Bounce::from_device(grant, 16).expect("fits");
    let mut too_long = vec![0; 17];
    let refused = in_flight.complete(&mut too_long).expect_err("too long");
    assert_eq!(
        refused.error,
        BounceError::TooLong {
            len: 17,
            capacity: 16
        }
    );
    assert!(
        too_long.iter().all(|&b| b == 0),
        "nothing copied when refused"
    );
    let mut exact = vec![1; 16];
    let _grant = refused.value.complete(&mut exact).expect("fits");
    assert_eq!(exact, vec![0; 16]);
}

#[test]
fn from_device_refuses_a_transfer_longer_than_the_grant() {
    let (window, _device) = window();
    let grant = fake::grant::<FromDevice>(&window, 5, 0, 64).expect("fits");
    let refused = Bounce::from_device(grant, 65).expect_err("too long");
    let refused = Bounce::from_device_over(refused.value, &[0; 65]).expect_err("too long");
    assert_eq!(refused.value.len(), 64);
}

#[test]
fn bidirectional_copies_both_ways() {
    let (window, device) = window();
    let grant = fake::grant::<Bidirectional>(&window, 6, 12288, 256).expect("fits");
    let data = pattern(200, 11);
    let in_flight = Bounce::bidirectional(grant, &data).expect("fits");
    let seen = device
        .read(in_flight.device_address(), 256)
        .expect("in window");
    assert_eq!(&seen[..200], &data[..]);
    assert!(seen[200..].iter().all(|&b| b == 0));
    let answer = pattern(200, 99);
    assert!(device.write(in_flight.device_address(), &answer));
    let mut out = vec![0; 200];
    let grant = in_flight.complete(&mut out).expect("fits");
    assert_eq!(out, answer);
    // A grant is reusable for the next transfer.
    let in_flight = Bounce::bidirectional(grant, &[3; 256]).expect("fits");
    assert_eq!(
        device.read(in_flight.device_address(), 256),
        Some(vec![3; 256])
    );
    let mut out = vec![0; 256];
    let _ = in_flight.complete(&mut out).expect("fits");
    assert_eq!(out, vec![3; 256]);
}

#[test]
fn grants_outside_the_window_are_refused() {
    let (window, _device) = window();
    assert!(fake::grant::<ToDevice>(&window, 1, WINDOW - 10, 11).is_none());
    assert!(fake::grant::<ToDevice>(&window, 1, WINDOW, 1).is_none());
    assert!(fake::grant::<ToDevice>(&window, 1, 0, 0).is_none());
    assert!(fake::grant::<ToDevice>(&window, 1, usize::MAX, 2).is_none());
    assert!(fake::grant::<ToDevice>(&window, 1, WINDOW - 10, 10).is_some());
    // A reply whose device address does not match its offset.
    let reply = GrantReply {
        id: GrantId::from_raw(1),
        window_offset: 0,
        device_address: window.device_base() + 4096,
        length: 16,
    };
    assert!(bounce::span_for(&window, &reply).is_none());
}

#[test]
fn coherent_accesses_are_checked_and_volatile() {
    let (window, device) = window();
    let ring = fake::coherent(&window, 9, 4096, 64).expect("fits");
    ring.zero();
    assert_eq!(device.read(ring.device_address(), 64), Some(vec![0; 64]));
    assert!(ring.write_u16(2, 0xBEEF));
    assert!(ring.write_u32(4, 0x1234_5678));
    assert!(ring.write_u64(8, u64::MAX - 1));
    assert_eq!(
        device.read(ring.device_address(), 16),
        Some(vec![
            0, 0, 0xEF, 0xBE, 0x78, 0x56, 0x34, 0x12, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0xFF
        ])
    );
    // The device changes a field; the next read sees it.
    assert!(device.write(ring.device_address() + 2, &[0x01, 0x00]));
    assert_eq!(ring.read_u16(2), Some(1));
    assert_eq!(ring.read_u32(4), Some(0x1234_5678));
    assert_eq!(ring.read_u64(8), Some(u64::MAX - 1));
    // Misaligned or out of range.
    assert_eq!(ring.read_u16(1), None);
    assert_eq!(ring.read_u32(62), None);
    assert_eq!(ring.read_u64(64), None);
    assert!(!ring.write_u64(60, 0));
    assert!(!ring.write_u16(usize::MAX, 0));
    assert!(ring.copy_in(60, &[1, 2, 3, 4]));
    assert!(!ring.copy_in(61, &[1, 2, 3, 4]));
    let mut out = [0; 4];
    assert!(ring.copy_out(60, &mut out));
    assert_eq!(out, [1, 2, 3, 4]);
    assert!(!ring.copy_out(usize::MAX, &mut out));
}

// --- The client stub against a scripted kernel ----------------------------------------------

/// A fake kernel: `call` records the request and answers with the next scripted reply.
struct Scripted {
    replies: RefCell<Vec<Result<Message, Error>>>,
    requests: RefCell<Vec<Request>>,
    dropped: RefCell<Vec<CapSlot>>,
}

impl Scripted {
    fn new(replies: Vec<Result<Message, Error>>) -> Scripted {
        let mut replies = replies;
        replies.reverse();
        Scripted {
            replies: RefCell::new(replies),
            requests: RefCell::new(Vec::new()),
            dropped: RefCell::new(Vec::new()),
        }
    }
}

impl Syscalls for Scripted {
    unsafe fn syscall(&self, _number: Syscall, _args: [u64; 6]) -> [u64; 4] {
        [u64::from(Error::NoSuchSyscall.to_raw()), 0, 0, 0]
    }

    fn call(
        &self,
        _endpoint: CapSlot,
        message: &mut Message,
        _timeout: Timeout,
    ) -> Result<(), Error> {
        self.requests
            .borrow_mut()
            .push(Request::decode(message).expect("the client sends well-formed requests"));
        let reply = self.replies.borrow_mut().pop().expect("a scripted reply")?;
        *message = reply;
        Ok(())
    }

    fn cap_drop(&self, slot: CapSlot) -> Result<(), Error> {
        self.dropped.borrow_mut().push(slot);
        Ok(())
    }
}

fn reply(reply: Reply) -> Result<Message, Error> {
    let mut message = Message::empty(0);
    encode_reply(&reply, &mut message).expect("fits");
    Ok(message)
}

fn window_reply(device_base: u64) -> Result<Message, Error> {
    let message = reply(Ok(Response::Window(WindowReply {
        device_base,
        size: WINDOW as u64,
        slot_size: 2048,
        max_mapping_size: 256 * 1024,
        reset_pending: false,
    })))?;
    Ok(message.with_capability(CapSlot(12), WINDOW_RIGHTS))
}

fn fake_map(_: &Scripted, memory: CapSlot, info: &WindowReply) -> Result<Window, DmaError> {
    assert_eq!(memory, CapSlot(12));
    assert_eq!(info.size, WINDOW as u64);
    Ok(FakeWindow::new(WINDOW, STALE).into_window())
}

const BASE: u64 = 0x8800_0000; // FakeWindow's device base.

#[test]
fn client_registers_maps_bounces_and_unmaps() {
    let kernel = Scripted::new(vec![
        window_reply(BASE),
        reply(Ok(Response::Grant(GrantReply {
            id: GrantId::new(3, 1),
            window_offset: 2048,
            device_address: BASE + 2048,
            length: 1000,
        }))),
        reply(Ok(Response::Done)),
    ]);
    let mut client = DmaClient::new(kernel, CapSlot(5));
    assert_eq!(
        client.map::<ToDevice>(10, 0, 0).map(|_| ()),
        Err(ClientError::NotRegistered)
    );
    let info = client
        .register_with(Some(4096), fake_map)
        .expect("registers");
    assert_eq!(info.slot_size, 2048);
    let grant = client.map::<ToDevice>(1000, 0, 4096).expect("granted");
    assert_eq!(grant.device_address(), BASE + 2048);
    let (window, _) = client.window().expect("registered");
    assert_eq!(grant.client_address(), window.client_base() + 2048);
    let device = FakeWindow::device(window);
    let in_flight = Bounce::to_device(grant, &[9; 1000]).expect("fits");
    assert_eq!(device.read(BASE + 2048, 1000), Some(vec![9; 1000]));
    client.unmap(in_flight.complete()).expect("unmapped");
    assert_eq!(
        client.syscalls().requests.borrow().as_slice(),
        &[
            Request::Register {
                quota_hint: Some(4096)
            },
            Request::Map {
                len: 1000,
                direction: Direction::ToDevice,
                align: 0,
                boundary: 4096
            },
            Request::Unmap {
                id: GrantId::new(3, 1)
            },
        ]
    );
}

#[test]
fn client_refuses_bad_replies_without_panicking() {
    let no_capability = reply(Ok(Response::Window(WindowReply {
        device_base: BASE,
        size: WINDOW as u64,
        slot_size: 2048,
        max_mapping_size: 0,
        reset_pending: false,
    })));
    let wrong_rights = no_capability
        .clone()
        .map(|m| m.with_capability(CapSlot(13), Rights::READ | Rights::WRITE | Rights::TRANSFER));
    let kernel = Scripted::new(vec![
        no_capability,
        wrong_rights,
        reply(Err(DmaError::QuotaExceeded)),
        Err(Error::Dead),
        window_reply(BASE),
        // A grant outside the window.
        reply(Ok(Response::Grant(GrantReply {
            id: GrantId::new(1, 1),
            window_offset: WINDOW as u64,
            device_address: BASE + WINDOW as u64,
            length: 16,
        }))),
        // A grant of the wrong length.
        reply(Ok(Response::Grant(GrantReply {
            id: GrantId::new(1, 1),
            window_offset: 0,
            device_address: BASE,
            length: 15,
        }))),
        // The wrong kind of response.
        reply(Ok(Response::Done)),
        // Garbage.
        Ok(Message::new(LABEL_REPLY, &[0xff; 9]).expect("fits")),
        reply(Err(DmaError::Denied)),
    ]);
    let mut client = DmaClient::new(kernel, CapSlot(5));
    let malformed = ClientError::Dma(DmaError::Malformed);
    assert_eq!(client.register_with(None, fake_map), Err(malformed));
    assert_eq!(client.register_with(None, fake_map), Err(malformed));
    assert_eq!(
        client.syscalls().dropped.borrow().as_slice(),
        &[CapSlot(13)]
    );
    assert_eq!(
        client.register_with(None, fake_map),
        Err(ClientError::Dma(DmaError::QuotaExceeded))
    );
    assert_eq!(
        client.register_with(None, fake_map),
        Err(ClientError::Ipc(Error::Dead))
    );
    client.register_with(None, fake_map).expect("registers");
    assert_eq!(
        client.map::<FromDevice>(16, 0, 0).map(|_| ()),
        Err(malformed)
    );
    assert_eq!(
        client.map::<FromDevice>(16, 0, 0).map(|_| ()),
        Err(malformed)
    );
    assert_eq!(client.stats(), Err(malformed));
    assert_eq!(client.reset_complete(), Err(malformed));
    assert_eq!(
        client.revoke(ClientIdentity(2)),
        Err(ClientError::Dma(DmaError::Denied))
    );
}

#[test]
fn client_drops_the_capability_when_mapping_fails() {
    let kernel = Scripted::new(vec![window_reply(BASE)]);
    let mut client = DmaClient::new(kernel, CapSlot(5));
    assert_eq!(
        client.register_with(None, |_, _, _| Err(DmaError::Backing)),
        Err(ClientError::Dma(DmaError::Backing))
    );
    assert_eq!(
        client.syscalls().dropped.borrow().as_slice(),
        &[CapSlot(12)]
    );
    assert!(client.window().is_none());
}

#[test]
fn client_pages_through_clients_and_stops_on_a_looping_server() {
    let stats = |id: u32| ClientStats {
        identity: ClientIdentity(id),
        instance: None,
        window_bytes: 0,
        grants: 0,
        granted_bytes: 0,
        used_slots: 0,
        quarantined_slots: 0,
        reset_pending: false,
        bytes_to_device: 0,
        bytes_from_device: 0,
        failures: 0,
    };
    let kernel = Scripted::new(vec![
        reply(Ok(Response::Client(Some(stats(1))))),
        reply(Ok(Response::Client(Some(stats(4))))),
        reply(Ok(Response::Client(None))),
        reply(Ok(Response::Client(Some(stats(1))))),
        // Going backwards is malformed.
        reply(Ok(Response::Client(Some(stats(1))))),
    ]);
    let client = DmaClient::new(kernel, CapSlot(5));
    let mut seen = Vec::new();
    client
        .for_each_client(10, |stats| seen.push(stats.identity.0))
        .expect("pages");
    assert_eq!(seen, vec![1, 4]);
    assert_eq!(
        client.for_each_client(10, |_| {}),
        Err(ClientError::Dma(DmaError::Malformed))
    );
}
