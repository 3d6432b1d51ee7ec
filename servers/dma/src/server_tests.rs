//! Unit tests of the server model against the fake backing.

use std::vec::Vec;

use crate::fake::{FAKE_PAGE_SIZE, FakeBacking, PageState};
use crate::stats::EventKind;
use crate::{
    ClientIdentity, ClientRef, Direction, DmaError, DmaServer, GrantId, InstanceGeneration,
    ServerConfig, Supervisor,
};

const MIB: u64 = 1 << 20;
const SUPERVISOR: Supervisor = Supervisor::from_supervisor_endpoint();

fn client(identity: u32, instance: u32) -> ClientRef {
    ClientRef {
        identity: ClientIdentity(identity),
        instance: InstanceGeneration(instance),
    }
}

fn server(budget: u64) -> DmaServer<FakeBacking> {
    let pages = (budget as usize).div_ceil(FAKE_PAGE_SIZE) + 64;
    DmaServer::new(
        ServerConfig {
            budget_bytes: budget,
            ..ServerConfig::default()
        },
        FakeBacking::new(pages),
    )
}

fn assert_healthy(server: &DmaServer<FakeBacking>) {
    assert!(server.check_consistency());
    assert!(
        server.backing().violations.is_empty(),
        "{:?}",
        server.backing().violations
    );
    assert!(server.backing().all_zeroed_since_change());
}

#[test]
fn register_creates_a_zeroed_window_in_one_batch() {
    let mut server = server(8 * MIB);
    let a = client(1, 1);
    let window = server.register(a, MIB + 1).unwrap();
    assert_eq!(window.size, MIB + FAKE_PAGE_SIZE as u64);
    assert_eq!(window.max_mapping_size, 256 * 1024);
    assert!(!window.reset_pending);
    assert_eq!(server.backing().share_calls, 1);
    assert_eq!(server.backing().count(PageState::Shared), 257);
    // Registering again is idempotent.
    assert_eq!(server.register(a, MIB).unwrap(), window);
    // Mapping never shares more.
    for _ in 0..100 {
        let grant = server.map(a, 1500, Direction::ToDevice, 0, 0).unwrap();
        server.unmap(a, grant.id).unwrap();
    }
    assert_eq!(server.backing().share_calls, 1);
    assert_healthy(&server);
}

#[test]
fn map_and_unmap() {
    let mut server = server(8 * MIB);
    let a = client(1, 1);
    let window = server.register(a, MIB).unwrap();
    let grant = server.map(a, 5000, Direction::FromDevice, 0, 0).unwrap();
    assert_eq!(grant.length, 5000);
    assert_eq!(
        grant.device_address,
        window.device_base + grant.window_offset
    );
    assert_eq!(
        grant.client_address,
        window.client_base + grant.window_offset
    );
    let stats = server.stats();
    assert_eq!(stats.used_slots, 3);
    assert_eq!(stats.grants, 1);
    assert_eq!(stats.bytes_from_device, 5000);
    assert_eq!(stats.bytes_to_device, 0);
    let mine = server.client_stats(a.identity).unwrap();
    assert_eq!(
        (mine.grants, mine.granted_bytes, mine.used_slots),
        (1, 5000, 3)
    );
    server.unmap(a, grant.id).unwrap();
    assert_eq!(server.unmap(a, grant.id), Err(DmaError::UnknownGrant));
    let stats = server.stats();
    assert_eq!(
        (stats.used_slots, stats.high_water_slots, stats.grants),
        (0, 3, 0)
    );
    assert_eq!(server.failures().get(DmaError::UnknownGrant), 1);
    let events = server.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventKind::Map);
    assert_eq!(events[0].device_address, grant.device_address);
    assert_eq!(events[0].size, 5000);
    assert_eq!(events[1].kind, EventKind::Unmap);
    server.reset_high_water();
    assert_eq!(server.stats().high_water_slots, 0);
    assert_healthy(&server);
}

#[test]
fn bidirectional_counts_both_ways_and_coherent_counts_neither() {
    let mut server = server(8 * MIB);
    let a = client(1, 1);
    server.register(a, MIB).unwrap();
    server.map(a, 100, Direction::Bidirectional, 0, 0).unwrap();
    server.map(a, 10, Direction::ToDevice, 0, 0).unwrap();
    let ring = server.alloc_coherent(a, 6 * 1024, 4096).unwrap();
    assert_eq!(ring.device_address % 4096, 0);
    let stats = server.stats();
    assert_eq!((stats.bytes_to_device, stats.bytes_from_device), (110, 100));
    assert_eq!((stats.maps, stats.coherent_allocs), (2, 1));
    server.unmap(a, ring.id).unwrap();
    assert_healthy(&server);
}

#[test]
fn alignment_and_boundary_hold_on_device_addresses() {
    let mut server = server(8 * MIB);
    let a = client(1, 1);
    server.register(a, 2 * MIB).unwrap();
    // Fragment the window a little first.
    server.map(a, 2048, Direction::ToDevice, 0, 0).unwrap();
    for (len, align, boundary) in [
        (3000u64, 4096u64, 0u64),
        (10_000, 65_536, 0),
        (6000, 0, 8192),
        (60_000, 0, 65_536),
        (4096, 4096, 4096),
        (200_000, 262_144, 262_144),
    ] {
        let grant = server
            .map(a, len, Direction::ToDevice, align, boundary)
            .unwrap();
        if align != 0 {
            assert_eq!(grant.device_address % align, 0);
        }
        if let Some(first) = grant.device_address.checked_div(boundary) {
            let last = (grant.device_address + len - 1) / boundary;
            assert_eq!(first, last, "{len} {boundary}");
        }
    }
    assert_healthy(&server);
}

#[test]
fn malformed_requests_are_errors_for_that_client_only() {
    let mut server = server(8 * MIB);
    let a = client(1, 1);
    let b = client(2, 1);
    server.register(a, MIB).unwrap();
    server.register(b, MIB).unwrap();
    let cases = [
        (0u64, 0u64, 0u64, DmaError::InvalidArgument),
        (100, 3, 0, DmaError::InvalidArgument),
        (100, 0, 48, DmaError::InvalidArgument),
        (8192, 0, 4096, DmaError::InvalidArgument),
        (257 * 1024, 0, 0, DmaError::TooLarge),
        (u64::MAX, 0, 0, DmaError::TooLarge),
        (u64::MAX, u64::MAX, u64::MAX, DmaError::InvalidArgument),
    ];
    for (len, align, boundary, expected) in cases {
        assert_eq!(
            server.map(a, len, Direction::ToDevice, align, boundary),
            Err(expected)
        );
    }
    assert_eq!(
        server.alloc_coherent(a, 0, 0),
        Err(DmaError::InvalidArgument)
    );
    assert_eq!(
        server.unmap(a, GrantId::from_raw(u64::MAX)),
        Err(DmaError::UnknownGrant)
    );
    assert_eq!(server.client_stats(a.identity).unwrap().failures, 9);
    assert_eq!(server.client_stats(b.identity).unwrap().failures, 0);
    assert!(server.map(b, 4096, Direction::ToDevice, 0, 0).is_ok());
    assert_eq!(
        server.register(client(3, 1), 0),
        Err(DmaError::InvalidArgument)
    );
    assert_eq!(
        server.register(client(3, 1), u64::MAX),
        Err(DmaError::OutOfMemory)
    );
    assert_healthy(&server);
}

#[test]
fn unregistered_and_stale_callers_are_refused() {
    let mut server = server(8 * MIB);
    let a = client(1, 1);
    assert_eq!(
        server.map(a, 10, Direction::ToDevice, 0, 0),
        Err(DmaError::NotRegistered)
    );
    server.register(a, MIB).unwrap();
    let old = server.map(a, 10, Direction::ToDevice, 0, 0).unwrap();
    // A new instance registers: the old one is dead, its grant quarantined.
    let a2 = client(1, 2);
    server.register(a2, MIB).unwrap();
    assert_eq!(
        server.map(a, 10, Direction::ToDevice, 0, 0),
        Err(DmaError::StaleInstance)
    );
    assert_eq!(server.unmap(a2, old.id), Err(DmaError::UnknownGrant));
    assert_eq!(server.unmap(a, old.id), Err(DmaError::StaleInstance));
    assert_eq!(server.register(a, MIB), Err(DmaError::StaleInstance));
    assert_eq!(server.stats().quarantined_slots, 1);
    assert_healthy(&server);
}

#[test]
fn foreign_grant_ids_are_rejected() {
    let mut server = server(8 * MIB);
    let a = client(1, 1);
    let b = client(2, 1);
    server.register(a, MIB).unwrap();
    server.register(b, MIB).unwrap();
    let grant = server.map(a, 100, Direction::ToDevice, 0, 0).unwrap();
    assert_eq!(server.unmap(b, grant.id), Err(DmaError::UnknownGrant));
    // Still a's.
    server.unmap(a, grant.id).unwrap();
    assert_healthy(&server);
}

#[test]
fn quota_and_exhaustion_stay_with_their_client() {
    let mut server = server(8 * MIB);
    let a = client(1, 1);
    let b = client(2, 1);
    server.register(a, 64 * 1024).unwrap(); // 32 slots
    server.register(b, MIB).unwrap();
    let mut grants = Vec::new();
    for _ in 0..32 {
        grants.push(server.map(a, 2048, Direction::ToDevice, 0, 0).unwrap());
    }
    assert_eq!(
        server.map(a, 1, Direction::ToDevice, 0, 0),
        Err(DmaError::QuotaExceeded)
    );
    // Free every other slot: 16 free slots but no run of two.
    for grant in grants.iter().step_by(2) {
        server.unmap(a, grant.id).unwrap();
    }
    assert_eq!(
        server.map(a, 4096, Direction::ToDevice, 0, 0),
        Err(DmaError::PoolExhausted)
    );
    assert_eq!(
        server.map(a, 64 * 1024, Direction::ToDevice, 0, 0),
        Err(DmaError::QuotaExceeded)
    );
    // b is untouched.
    let big = server
        .map(b, 256 * 1024, Direction::FromDevice, 0, 0)
        .unwrap();
    server.unmap(b, big.id).unwrap();
    assert_eq!(server.failures().get(DmaError::QuotaExceeded), 2);
    assert_eq!(server.failures().get(DmaError::PoolExhausted), 1);
    assert_eq!(server.client_stats(b.identity).unwrap().failures, 0);
    // The server budget bounds new windows.
    assert_eq!(
        server.register(client(3, 1), 8 * MIB),
        Err(DmaError::OutOfMemory)
    );
    assert_healthy(&server);
}

#[test]
fn revoke_quarantines_until_the_same_client_resets() {
    let mut server = server(8 * MIB);
    let a = client(1, 1);
    let b = client(2, 1);
    server.register(a, 64 * 1024).unwrap(); // 32 slots
    server.register(b, 64 * 1024).unwrap();
    let held = server
        .map(a, 16 * 2048, Direction::FromDevice, 0, 0)
        .unwrap();
    let ring = server.alloc_coherent(a, 8 * 2048, 0).unwrap();
    assert_eq!(
        server.revoke(&SUPERVISOR, ClientIdentity(9)),
        Err(DmaError::NotRegistered)
    );
    assert_eq!(server.revoke(&SUPERVISOR, a.identity), Ok(24));
    assert_eq!(server.revoke(&SUPERVISOR, a.identity), Ok(0));
    let stats = server.stats();
    assert_eq!(
        (stats.quarantined_slots, stats.used_slots, stats.grants),
        (24, 24, 0)
    );
    // The dead instance can do nothing.
    assert_eq!(server.unmap(a, held.id), Err(DmaError::StaleInstance));
    assert_eq!(
        server.map(a, 10, Direction::ToDevice, 0, 0),
        Err(DmaError::StaleInstance)
    );
    assert_eq!(server.reset_complete(a), Err(DmaError::StaleInstance));
    // Another client cannot get at the quarantined slots (its window is its own), nor reclaim.
    assert_eq!(server.reset_complete(b), Ok(0));
    assert_eq!(
        server.map(b, 64 * 1024 + 1, Direction::ToDevice, 0, 0),
        Err(DmaError::QuotaExceeded)
    );
    // The restarted instance gets the same window, minus quarantine until its device is reset.
    let a2 = client(1, 2);
    let window = server.register(a2, 64 * 1024).unwrap();
    assert!(window.reset_pending);
    assert_eq!(server.backing().share_calls, 2);
    assert_eq!(server.unmap(a2, held.id), Err(DmaError::UnknownGrant));
    assert_eq!(server.unmap(a2, ring.id), Err(DmaError::UnknownGrant));
    assert_eq!(
        server.map(a2, 9 * 2048, Direction::ToDevice, 0, 0),
        Err(DmaError::QuotaExceeded)
    );
    let small = server.map(a2, 8 * 2048, Direction::ToDevice, 0, 0).unwrap();
    assert_eq!(server.reset_complete(a2), Ok(24));
    assert!(!server.register(a2, 0).unwrap().reset_pending);
    let stats = server.stats();
    assert_eq!((stats.quarantined_slots, stats.used_slots), (0, 8));
    let reclaimed = server
        .map(a2, 24 * 2048, Direction::ToDevice, 0, 0)
        .unwrap();
    server.unmap(a2, reclaimed.id).unwrap();
    server.unmap(a2, small.id).unwrap();
    let kinds: Vec<_> = server.events().iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::Quarantine));
    assert!(kinds.contains(&EventKind::Reclaim));
    assert_healthy(&server);
}

#[test]
fn retire_zeroes_pages_on_the_way_back_to_private() {
    let mut server = server(2 * MIB);
    let a = client(1, 1);
    let b = client(2, 1);
    server.register(a, MIB).unwrap();
    let grant = server.map(a, 100, Direction::ToDevice, 0, 0).unwrap();
    assert_eq!(server.retire(&SUPERVISOR, a.identity), Err(DmaError::Busy));
    server.revoke(&SUPERVISOR, a.identity).unwrap();
    assert_eq!(server.retire(&SUPERVISOR, a.identity), Err(DmaError::Busy));
    let a2 = client(1, 2);
    server.register(a2, MIB).unwrap();
    server.reset_complete(a2).unwrap();
    assert_eq!(server.unmap(a2, grant.id), Err(DmaError::UnknownGrant));
    server.retire(&SUPERVISOR, a.identity).unwrap();
    assert_eq!(server.backing().count(PageState::Shared), 0);
    assert_eq!(server.backing().count(PageState::Private), 0);
    assert_eq!(server.stats().shared_bytes, 0);
    assert_eq!(
        server.map(a2, 1, Direction::ToDevice, 0, 0),
        Err(DmaError::NotRegistered)
    );
    // The budget is free again and the pages serve another window, zeroed after sharing.
    server.register(b, 2 * MIB).unwrap();
    assert_eq!(server.backing().count(PageState::Shared), 512);
    assert_healthy(&server);
}

#[test]
fn backing_failure_is_an_error_and_leaves_no_state() {
    let a = client(1, 1);
    let mut backing = FakeBacking::new(16);
    backing.fail_next_share = true;
    let mut tiny = DmaServer::new(ServerConfig::default(), backing);
    assert_eq!(tiny.register(a, MIB), Err(DmaError::Backing));
    assert_eq!(tiny.register(a, MIB), Err(DmaError::OutOfMemory));
    assert!(tiny.register(a, 64 * 1024).is_ok());
    assert_healthy(&tiny);
    assert_eq!(tiny.stats().clients, 1);
}

#[test]
fn event_ring_reports_device_addresses() {
    let mut server = server(8 * MIB);
    let a = client(1, 1);
    server.register(a, MIB).unwrap();
    let mut last = None;
    for i in 0..100u64 {
        let grant = server.map(a, 100 + i, Direction::ToDevice, 0, 0).unwrap();
        last = Some(grant);
        server.unmap(a, grant.id).unwrap();
    }
    let events = server.events();
    assert_eq!(events.len(), crate::stats::EVENT_RING_LEN);
    let last_event = events[events.len() - 1];
    assert_eq!(last_event.kind, EventKind::Unmap);
    assert_eq!(last_event.device_address, last.unwrap().device_address);
    assert_eq!(last_event.size, 199);
}
