//! The serve loop and the syscall backing against the fake kernel (`moat-testkit`): windows made
//! of shared memory and handed out as `READ | WRITE` capabilities, roles by badge, the admin
//! endpoint, and requests that cannot hurt the server.

use std::sync::{Arc, Mutex};
use std::vec;
use std::vec::Vec;

use moat_abi::{CapSlot, Message, PAGE_SIZE, Rights, Timeout};
use moat_dma_api::protocol::{Reply, Request, Response, Role, decode_reply};
use moat_dma_api::{
    ClientConfig, ClientError, DmaClient, DmaConfig, FakeWindow, FromDevice, ToDevice, badge,
};
use moat_testkit::{FakeKernel, FakeTask};
use moat_userlib::Syscalls;

use crate::error::DmaError;
use crate::grant::ClientIdentity;
use crate::serve::{Endpoints, Serve};

const BLK: ClientIdentity = ClientIdentity(3);
const QUOTA: u64 = 64 * 1024;

struct System {
    kernel: FakeKernel,
    dma: FakeTask,
    blk: FakeTask,
    observer: FakeTask,
    supervisor: FakeTask,
    to_dma: CapSlot,
    observer_to_dma: CapSlot,
    supervisor_to_admin: CapSlot,
    supervisor_to_dma: CapSlot,
    serve: Arc<Mutex<Serve<FakeTask>>>,
}

fn zero_through_fake(task: &FakeTask, address: usize, len: usize) -> Result<(), DmaError> {
    task.write(address, &vec![0; len])
        .map_err(|_| DmaError::Backing)
}

fn system() -> System {
    let kernel = FakeKernel::new();
    let supervisor = kernel.add_task("supervisor");
    let dma = kernel.add_task("dma");
    let blk = kernel.add_task("blk");
    let observer = kernel.add_task("dmastat");
    let (endpoint, serve_dma) = kernel.create_endpoint(&dma, "serve:dma");
    let (admin, serve_admin) = kernel.create_endpoint(&dma, "serve:dma-admin");
    let share = kernel.grant_share(&dma, "share");
    let to_dma =
        kernel.grant_endpoint(&blk, endpoint, "call:dma", badge::encode(BLK, Role::Client));
    let observer_to_dma = kernel.grant_endpoint(
        &observer,
        endpoint,
        "call:dma",
        badge::encode(ClientIdentity(4), Role::Observer),
    );
    let supervisor_badge = badge::encode(ClientIdentity(1), Role::Supervisor);
    let supervisor_to_admin =
        kernel.grant_endpoint(&supervisor, admin, "call:dma-admin", supervisor_badge);
    let supervisor_to_dma =
        kernel.grant_endpoint(&supervisor, endpoint, "call:dma", supervisor_badge);
    let config = DmaConfig {
        budget_bytes: QUOTA,
        clients: heapless::Vec::from_slice(&[ClientConfig {
            identity: BLK,
            quota_bytes: QUOTA,
            name: heapless::String::try_from("blk").expect("short"),
        }])
        .expect("room"),
    };
    let serve = Arc::new(Mutex::new(Serve::new(
        dma.clone(),
        share,
        zero_through_fake,
        config,
        Endpoints {
            clients: serve_dma,
            admin: Some(serve_admin),
        },
    )));
    for endpoint in [endpoint, admin] {
        let serve = serve.clone();
        kernel.set_pump(endpoint, move || {
            serve
                .lock()
                .expect("not poisoned")
                .serve_pending()
                .expect("receives");
        });
    }
    System {
        kernel,
        dma,
        blk,
        observer,
        supervisor,
        to_dma,
        observer_to_dma,
        supervisor_to_admin,
        supervisor_to_dma,
        serve,
    }
}

/// Sends `request` as a call from `task` through `endpoint` and decodes the reply.
fn raw_call(task: &FakeTask, endpoint: CapSlot, request: Request) -> Reply {
    let mut message = Message::empty(0);
    request.encode(&mut message).expect("fits");
    task.call(endpoint, &mut message, Timeout::from_milliseconds(100))
        .expect("answered");
    decode_reply(&message)
}

/// Registers `blk` through the typed client, checking the window capability on the way.
fn register(system: &System) -> DmaClient<FakeTask> {
    let mut client = DmaClient::new(system.blk.clone(), system.to_dma);
    let info = client
        .register_with(None, |task, memory, info| {
            let cap = task.cap_info(memory).expect("a capability");
            assert_eq!(cap.rights, Rights::READ | Rights::WRITE, "no TRANSFER");
            let described = task.mem_info(memory).expect("memory");
            assert!(described.shared, "the window is shared");
            assert_eq!(described.pages as u64 * PAGE_SIZE as u64, info.size);
            // (The real kernel also reports the device address of shared memory here; the
            // fake reports it only with PHYSICAL.)
            // The client can map it, and what it sees is zero.
            let mapping = moat_userlib::memory::map(
                task,
                memory,
                Rights::READ | Rights::WRITE,
                0,
                described.pages,
            )
            .expect("maps");
            let mut bytes = vec![0xaa; mapping.len()];
            task.read(mapping.address, &mut bytes).expect("reads");
            assert!(bytes.iter().all(|byte| *byte == 0), "zeroed");
            let size = usize::try_from(info.size).expect("fits");
            Ok(FakeWindow::with_device_base(size, 0, info.device_base).into_window())
        })
        .expect("registers");
    assert_eq!(info.size, QUOTA);
    assert!(!info.reset_pending);
    client
}

#[test]
fn a_client_registers_maps_and_unmaps_through_the_real_backing() {
    let system = system();
    // Host garbage in the shareable pages before the server shares them is irrelevant: the
    // kernel and the server zero them; checked in `register`.
    let client = register(&system);
    {
        let serve = system.serve.lock().expect("not poisoned");
        let server = serve.dispatcher().server();
        let region = server.window_region(BLK).expect("a window");
        let backing = server.backing();
        let memory = backing
            .capability(&region)
            .expect("the server's capability");
        let info = system.dma.mem_info(memory).expect("memory");
        assert!(info.shared);
        let mapping = backing
            .server_mapping(&region)
            .expect("mapped in the server");
        assert_eq!(mapping.len() as u64, QUOTA);
        let rights = system.dma.cap_info(memory).expect("cap").rights;
        assert!(
            rights.contains(Rights::TRANSFER),
            "the server keeps TRANSFER"
        );
    }

    let grant = client.map::<ToDevice>(1500, 0, 0).expect("maps");
    let id = grant.id();
    assert_eq!(grant.len(), 1500);
    client.unmap(grant).expect("unmaps");
    assert_eq!(
        raw_call(&system.blk, system.to_dma, Request::Unmap { id }),
        Err(DmaError::UnknownGrant),
        "a stale id"
    );
    assert_eq!(
        client.map::<FromDevice>(QUOTA as usize + 2048, 0, 0).err(),
        Some(ClientError::Dma(DmaError::QuotaExceeded))
    );
    let coherent = client.alloc_coherent(4096, 4096).expect("coherent");
    assert_eq!(coherent.device_address() % 4096, 0);

    let stats = client.stats().expect("stats");
    assert_eq!(stats.clients, 1);
    assert_eq!(stats.maps, 1);
    assert_eq!(stats.unmaps, 1);
    assert_eq!(stats.bytes_to_device, 1500);
    assert_eq!(stats.shared_bytes, QUOTA);
    assert_eq!(stats.failures, 2);
    // Registering again from the same instance returns the same window (and a fresh
    // capability each time).
    let caps_before = count_caps(&system.blk);
    let again = raw_call(
        &system.blk,
        system.to_dma,
        Request::Register { quota_hint: None },
    );
    assert!(matches!(again, Ok(Response::Window(window)) if window.size == QUOTA));
    assert_eq!(count_caps(&system.blk), caps_before + 1);
}

fn count_caps(task: &FakeTask) -> usize {
    (0..moat_testkit::CAP_TABLE_SIZE as u32)
        .filter(|slot| task.cap_info(CapSlot(*slot)).is_ok())
        .count()
}

#[test]
fn roles_come_from_the_badge_and_the_endpoint() {
    let system = system();
    let _client = register(&system);
    // The observer has no quota: no window, but it sees every client.
    assert_eq!(
        raw_call(
            &system.observer,
            system.observer_to_dma,
            Request::Register { quota_hint: None }
        ),
        Err(DmaError::NotRegistered)
    );
    let observer = DmaClient::new(system.observer.clone(), system.observer_to_dma);
    let mut seen = Vec::new();
    observer
        .for_each_client(10, |stats| seen.push(stats.identity))
        .expect("pages");
    assert_eq!(seen, vec![BLK]);
    assert_eq!(
        observer.revoke(BLK),
        Err(ClientError::Dma(DmaError::Denied))
    );
    // A supervisor badge counts only on the admin endpoint.
    assert_eq!(
        raw_call(
            &system.supervisor,
            system.supervisor_to_dma,
            Request::Revoke { client: BLK }
        ),
        Err(DmaError::Denied)
    );
    let admin = DmaClient::new(system.supervisor.clone(), system.supervisor_to_admin);
    assert_eq!(
        admin.revoke(ClientIdentity(9)),
        Err(ClientError::Dma(DmaError::NotRegistered))
    );
    assert_eq!(admin.revoke(BLK), Ok(0));
    // The revoked instance is stale now.
    assert_eq!(
        raw_call(
            &system.blk,
            system.to_dma,
            Request::Map {
                len: 64,
                direction: moat_dma_api::Direction::ToDevice,
                align: 0,
                boundary: 0
            }
        ),
        Err(DmaError::StaleInstance)
    );
}

#[test]
fn revoked_grants_wait_in_quarantine_for_the_restarted_instance() {
    let system = system();
    let client = register(&system);
    let grant = client.map::<FromDevice>(4096, 0, 0).expect("maps");
    let admin = DmaClient::new(system.supervisor.clone(), system.supervisor_to_admin);
    assert_eq!(admin.revoke(BLK), Ok(2), "two 2 KiB slots quarantined");
    drop(grant);
    // The restarted instance (a new generation) gets the same window back, reset pending.
    let control = system
        .kernel
        .grant_task_control(&system.supervisor, "task-control");
    system
        .supervisor
        .task_kill(control, system.blk.id())
        .expect("kills");
    system
        .supervisor
        .task_restart(control, system.blk.index())
        .expect("restarts");
    let reply = raw_call(
        &system.blk,
        system.to_dma,
        Request::Register { quota_hint: None },
    );
    assert!(
        matches!(reply, Ok(Response::Window(window)) if window.reset_pending),
        "{reply:?}"
    );
    assert_eq!(
        raw_call(&system.blk, system.to_dma, Request::ResetComplete),
        Ok(Response::Slots(2))
    );
}

#[test]
fn hostile_messages_get_errors_and_the_server_keeps_serving() {
    let system = system();
    // Garbage payload, wrong label, an attached capability: each gets an error reply, and the
    // capability is not kept by the server.
    let caps_before = count_caps(&system.dma);
    let memory = system.blk.mem_alloc(1, 0).expect("memory");
    for message in [
        Message::new(moat_dma_api::LABEL_REQUEST, &[0xff; 40]).expect("fits"),
        Message::new(7, &[]).expect("fits"),
        Message::new(moat_dma_api::LABEL_REQUEST, &[0xff; 3])
            .expect("fits")
            .with_capability(memory, Rights::READ),
    ] {
        let mut message = message;
        system
            .blk
            .call(system.to_dma, &mut message, Timeout::from_milliseconds(100))
            .expect("answered");
        assert_eq!(decode_reply(&message), Err(DmaError::Malformed));
    }
    assert_eq!(count_caps(&system.dma), caps_before);
    // A send (no reply capability) is counted and dropped.
    let mut stats_request = Message::empty(0);
    Request::Stats.encode(&mut stats_request).expect("fits");
    system
        .blk
        .send(system.to_dma, &stats_request)
        .expect("queued");
    system
        .serve
        .lock()
        .expect("not poisoned")
        .serve_pending()
        .expect("serves");
    let _client = register(&system);
    let stats = DmaClient::new(system.blk.clone(), system.to_dma)
        .stats()
        .expect("still serving");
    assert_eq!(stats.failures, 4);
    assert_eq!(stats.clients, 1);
}

#[test]
fn identities_without_a_quota_register_nobody() {
    assert_eq!(DmaConfig::decode(&[]), Ok(DmaConfig::default()));
    let system = system();
    assert_eq!(
        raw_call(
            &system.observer,
            system.observer_to_dma,
            Request::Register {
                quota_hint: Some(4096)
            }
        ),
        Err(DmaError::NotRegistered)
    );
}
