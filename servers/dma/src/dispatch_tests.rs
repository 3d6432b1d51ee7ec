//! Dispatch tests: the typed client from `moat-dma-api` against the real model through an
//! in-process fake kernel, roles, quotas, malformed requests and random payloads.

use core::cell::{Cell, RefCell};
use std::vec;
use std::vec::Vec;

use moat_abi::{CapSlot, Error, Message, Syscall, TaskId, Timeout};
use moat_dma_api::protocol::{LABEL_REQUEST, decode_payload, decode_reply, encode_reply};
use moat_dma_api::{
    Bidirectional, Bounce, ClientError, DmaClient, FakeWindow, FromDevice, Request, Response, Role,
    ToDevice, WINDOW_RIGHTS, badge,
};
use moat_userlib::Syscalls;
use proptest::prelude::*;

use crate::dispatch::Dispatcher;
use crate::error::DmaError;
use crate::fake::FakeBacking;
use crate::grant::ClientIdentity;
use crate::server::{DmaServer, ServerConfig};

const QUOTA: u64 = 64 * 1024;
const DRIVER: ClientIdentity = ClientIdentity(1);
const OTHER: ClientIdentity = ClientIdentity(2);
const MONITOR: ClientIdentity = ClientIdentity(9);
const SUPERVISOR: ClientIdentity = ClientIdentity(10);

type Shared = RefCell<Dispatcher<FakeBacking>>;

fn dispatcher() -> Shared {
    let server = DmaServer::new(ServerConfig::default(), FakeBacking::new(256));
    RefCell::new(Dispatcher::new(
        server,
        [(DRIVER, QUOTA), (OTHER, QUOTA), (ClientIdentity(0), QUOTA)],
    ))
}

/// A fake kernel for one task: `call` goes straight into the dispatcher, stamped with the
/// task's badge and id as the real kernel would.
struct Loopback<'a> {
    dispatcher: &'a Shared,
    badge: u64,
    sender: Cell<TaskId>,
    supervisor_endpoint: bool,
}

impl<'a> Loopback<'a> {
    fn new(dispatcher: &'a Shared, identity: ClientIdentity, role: Role) -> Loopback<'a> {
        Loopback {
            dispatcher,
            badge: badge::encode(identity, role),
            sender: Cell::new(TaskId::new(identity.0 as u16 + 1, 0)),
            supervisor_endpoint: role == Role::Supervisor,
        }
    }
}

// Implementing the trait means declaring its unsafe raw entry point; this one touches nothing.
#[allow(unsafe_code)]
impl Syscalls for Loopback<'_> {
    unsafe fn syscall(&self, _number: Syscall, _args: [u64; 6]) -> [u64; 4] {
        [u64::from(Error::NoSuchSyscall.to_raw()), 0, 0, 0]
    }

    fn call(
        &self,
        _endpoint: CapSlot,
        message: &mut Message,
        _timeout: Timeout,
    ) -> Result<(), Error> {
        message.stamp(self.badge, self.sender.get());
        let mut reply = Message::empty(0);
        let window = self.dispatcher.borrow_mut().handle_message(
            message,
            self.supervisor_endpoint,
            &mut reply,
        );
        if let Some(region) = window {
            reply = reply.with_capability(CapSlot(100 + region.handle), WINDOW_RIGHTS);
        }
        *message = reply;
        Ok(())
    }

    fn cap_drop(&self, _slot: CapSlot) -> Result<(), Error> {
        Ok(())
    }
}

fn register(client: &mut DmaClient<Loopback<'_>>, hint: Option<u64>) -> Result<(), ClientError> {
    client
        .register_with(hint, |_, memory, info| {
            assert!(
                memory.0 >= 100,
                "the window capability travels with the reply"
            );
            Ok(
                FakeWindow::with_device_base(info.size as usize, 0xAA, info.device_base)
                    .into_window(),
            )
        })
        .map(drop)
}

#[test]
fn a_driver_maps_bounces_and_unmaps_through_the_real_server() {
    let shared = dispatcher();
    let mut driver = DmaClient::new(Loopback::new(&shared, DRIVER, Role::Client), CapSlot(1));
    register(&mut driver, None).expect("registers");
    let (window, info) = driver.window().expect("registered");
    assert_eq!(info.size, QUOTA);
    let device = FakeWindow::device(window);

    let grant = driver.map::<ToDevice>(3000, 4096, 0).expect("mapped");
    assert!(grant.device_address().is_multiple_of(4096));
    let data: Vec<u8> = (0..3000).map(|i| i as u8).collect();
    let in_flight = Bounce::to_device(grant, &data).expect("fits");
    assert_eq!(device.read(in_flight.device_address(), 3000), Some(data));
    driver.unmap(in_flight.complete()).expect("unmapped");

    let grant = driver.map::<FromDevice>(512, 0, 0).expect("mapped");
    let in_flight = Bounce::from_device(grant, 512).expect("fits");
    assert!(device.write(in_flight.device_address(), &[5; 100]));
    let mut out = vec![0xEE; 512];
    let grant = in_flight.complete(&mut out).expect("fits");
    assert_eq!(&out[..100], &[5; 100]);
    assert!(out[100..].iter().all(|&b| b == 0));
    let id = grant.id();
    driver.unmap(grant).expect("unmapped");
    // The id is stale now.
    let stale = shared.borrow_mut().handle(
        &{
            let mut m = Message::empty(0);
            Request::Unmap { id }.encode(&mut m).unwrap();
            m.stamp(
                badge::encode(DRIVER, Role::Client),
                driver.syscalls().sender.get(),
            );
            m
        },
        false,
    );
    assert_eq!(stale.reply, Err(DmaError::UnknownGrant));

    let ring = driver.alloc_coherent(1024, 4096).expect("allocated");
    assert!(ring.write_u16(0, 7));
    assert_eq!(device.read(ring.device_address(), 2), Some(vec![7, 0]));
    driver.free_coherent(ring).expect("freed");

    let stats = driver.stats().expect("stats");
    assert_eq!((stats.maps, stats.unmaps, stats.coherent_allocs), (2, 3, 1));
    assert_eq!(stats.bytes_to_device, 3000);
    assert_eq!(stats.bytes_from_device, 512);
    assert_eq!(stats.used_slots, 0);
    assert_eq!(stats.failures, 1);
    let failures = driver.failures().expect("failures");
    assert_eq!(failures.get(DmaError::UnknownGrant), 1);
    let own = driver.client_stats(None).expect("own").expect("present");
    assert_eq!(own.identity, DRIVER);
    assert_eq!(own.window_bytes, QUOTA);
    let page = driver.events(0).expect("events");
    assert_eq!(page.events.len(), 4);
    assert_eq!(page.events[0].client, DRIVER);
    assert!(shared.borrow().server().backing().violations.is_empty());
}

#[test]
fn roles_are_enforced() {
    let shared = dispatcher();
    let mut driver = DmaClient::new(Loopback::new(&shared, DRIVER, Role::Client), CapSlot(1));
    let mut other = DmaClient::new(Loopback::new(&shared, OTHER, Role::Client), CapSlot(1));
    register(&mut driver, Some(8192)).expect("registers");
    register(&mut other, None).expect("registers");
    let denied = ClientError::Dma(DmaError::Denied);
    assert_eq!(driver.revoke(OTHER), Err(denied));
    assert_eq!(driver.reset_high_water(), Err(denied));

    // A client sees only itself; an observer sees everyone.
    let mut seen = Vec::new();
    driver
        .for_each_client(10, |s| seen.push(s.identity))
        .unwrap();
    assert_eq!(seen, vec![DRIVER]);
    let _grant = other.map::<Bidirectional>(100, 0, 0).expect("mapped");
    assert!(
        driver.events(0).unwrap().events.is_empty(),
        "not another client's events"
    );
    let monitor = DmaClient::new(Loopback::new(&shared, MONITOR, Role::Observer), CapSlot(1));
    let mut seen = Vec::new();
    monitor
        .for_each_client(10, |s| seen.push((s.identity, s.window_bytes)))
        .unwrap();
    assert_eq!(seen, vec![(DRIVER, 8192), (OTHER, QUOTA)]);
    assert_eq!(monitor.events(0).unwrap().events.len(), 1);
    monitor.reset_high_water().expect("observer may");
    assert_eq!(monitor.revoke(OTHER), Err(denied));

    // A supervisor badge counts only on the supervisor's endpoint.
    let mut fake_supervisor = Loopback::new(&shared, SUPERVISOR, Role::Supervisor);
    fake_supervisor.supervisor_endpoint = false;
    let fake_supervisor = DmaClient::new(fake_supervisor, CapSlot(1));
    assert_eq!(fake_supervisor.revoke(OTHER), Err(denied));
    let supervisor = DmaClient::new(
        Loopback::new(&shared, SUPERVISOR, Role::Supervisor),
        CapSlot(1),
    );
    assert_eq!(supervisor.revoke(OTHER), Ok(1));

    // The revoked instance is stale; its restarted instance gets the same window back, and
    // the quarantined slot only after declaring its device reset.
    assert_eq!(
        other.map::<ToDevice>(10, 0, 0).map(drop),
        Err(ClientError::Dma(DmaError::StaleInstance))
    );
    let restarted = other.syscalls().sender.get().next_generation();
    other.syscalls().sender.set(restarted);
    register(&mut other, None).expect("re-registers");
    assert!(other.window().unwrap().1.reset_pending);
    assert_eq!(other.reset_complete(), Ok(1));
    assert_eq!(other.stats().unwrap().quarantined_slots, 0);
    assert!(shared.borrow().server().check_consistency());
}

#[test]
fn quotas_come_from_the_manifest() {
    let shared = dispatcher();
    let mut stranger = DmaClient::new(
        Loopback::new(&shared, ClientIdentity(77), Role::Client),
        CapSlot(1),
    );
    assert_eq!(
        register(&mut stranger, None),
        Err(ClientError::Dma(DmaError::NotRegistered))
    );
    // Identity 0 (an unbadged capability) never gets a window, whatever the quota table says.
    let mut unbadged = DmaClient::new(
        Loopback::new(&shared, ClientIdentity(0), Role::Client),
        CapSlot(1),
    );
    assert_eq!(
        register(&mut unbadged, None),
        Err(ClientError::Dma(DmaError::NotRegistered))
    );
    // A hint above the quota is capped to it.
    let mut driver = DmaClient::new(Loopback::new(&shared, DRIVER, Role::Client), CapSlot(1));
    register(&mut driver, Some(u64::MAX)).expect("registers");
    assert_eq!(driver.window().unwrap().1.size, QUOTA);
    // Asking for more than the window holds is the client's own error.
    assert_eq!(
        driver.map::<ToDevice>(QUOTA as usize + 1, 0, 0).map(drop),
        Err(ClientError::Dma(DmaError::QuotaExceeded))
    );
    let stats = driver.failures().unwrap();
    assert_eq!(stats.get(DmaError::NotRegistered), 2);
}

#[test]
fn malformed_requests_get_error_replies() {
    let shared = dispatcher();
    let mut dispatcher = shared.borrow_mut();
    let cases: [(u32, &[u8], u64); 5] = [
        (LABEL_REQUEST, &[0xff], 1),
        (LABEL_REQUEST, &[], 1),
        (0x1234, &[5], 1),
        (LABEL_REQUEST, &[5, 0], 1),
        (LABEL_REQUEST, &[5], 3 << 32),
    ];
    for (label, payload, badge) in cases {
        let mut message = Message::new(label, payload).unwrap();
        message.stamp(badge, TaskId::new(3, 1));
        let mut reply = Message::empty(0);
        assert_eq!(dispatcher.handle_message(&message, false, &mut reply), None);
        let expected = if badge >> 32 == 3 {
            DmaError::Denied
        } else {
            DmaError::Malformed
        };
        assert_eq!(decode_reply(&reply), Err(expected));
    }
    assert_eq!(dispatcher.server().failures().get(DmaError::Malformed), 4);
    // A well-formed Stats request (variant 5) still works afterwards.
    let mut message = Message::new(LABEL_REQUEST, &[5]).unwrap();
    message.stamp(1, TaskId::new(3, 1));
    assert!(matches!(
        dispatcher.handle(&message, false).reply,
        Ok(Response::Stats(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary payloads and badges: no panic, and every reply encodes and decodes.
    #[test]
    fn arbitrary_requests_always_get_a_reply(
        payloads in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..=moat_abi::MAX_PAYLOAD), any::<u64>(), any::<bool>(), 0u8..4),
            1..20,
        )
    ) {
        let shared = dispatcher();
        let mut dispatcher = shared.borrow_mut();
        for (payload, raw_badge, supervisor, badge_kind) in payloads {
            let badge = match badge_kind {
                0 => badge::encode(DRIVER, Role::Client),
                1 => badge::encode(OTHER, Role::Observer),
                2 => badge::encode(SUPERVISOR, Role::Supervisor),
                _ => raw_badge,
            };
            let mut message = Message::new(LABEL_REQUEST, &payload).unwrap();
            message.stamp(badge, TaskId::new(4, (raw_badge & 3) as u16));
            let mut reply = Message::empty(0);
            let window = dispatcher.handle_message(&message, supervisor, &mut reply);
            prop_assert_eq!(reply.label(), moat_dma_api::LABEL_REPLY);
            let decoded: moat_dma_api::Reply = decode_payload(reply.payload())
                .expect("the reply is a well-formed Reply");
            let mut again = Message::empty(0);
            prop_assert!(encode_reply(&decoded, &mut again).is_ok());
            prop_assert_eq!(window.is_some(), matches!(decoded, Ok(Response::Window(_))));
        }
        prop_assert!(dispatcher.server().check_consistency());
    }
}
