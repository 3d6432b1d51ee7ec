//! Property tests: the pool against a brute-force model, and random request sequences from
//! several clients against the server's invariants.

#![allow(clippy::needless_range_loop)]

use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use crate::fake::FakeBacking;
use crate::pool::{SLOTS_PER_BLOCK, SlotPool, SlotRun};
use crate::{
    ClientIdentity, ClientRef, Direction, DmaError, DmaServer, GrantInfo, InstanceGeneration,
    ServerConfig, Supervisor,
};

#[derive(Clone, Debug)]
enum PoolOp {
    Alloc { len: u64, align: u64, boundary: u64 },
    Free(usize),
}

fn power_or_zero(max_shift: u32) -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), (0..=max_shift).prop_map(|shift| 1u64 << shift)]
}

fn pool_op(slot: u64) -> impl Strategy<Value = PoolOp> {
    let max = SLOTS_PER_BLOCK as u64 * slot;
    prop_oneof![
        3 => (
            prop_oneof![1..=4 * slot, 1..=max],
            power_or_zero(20),
            power_or_zero(20)
        )
            .prop_map(|(len, align, boundary)| PoolOp::Alloc { len, align, boundary }),
        2 => any::<usize>().prop_map(PoolOp::Free),
    ]
}

/// Whether slots `first .. first + count` satisfy the request on absolute device addresses.
fn placement_ok(base: u64, slot: u64, first: usize, len: u64, align: u64, boundary: u64) -> bool {
    let address = base + first as u64 * slot;
    let aligned = align <= 1 || address.is_multiple_of(align);
    let within = boundary == 0 || address / boundary == (address + len - 1) / boundary;
    let block = first / SLOTS_PER_BLOCK;
    let count = len.div_ceil(slot) as usize;
    aligned && within && (first + count - 1) / SLOTS_PER_BLOCK == block
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The pool hands out exactly free, well-placed runs, and reports exhaustion only when no
    /// placement exists.
    #[test]
    fn pool_matches_brute_force(
        // Small pools, and pools of more than 64 blocks (two summary levels per class).
        slots in prop_oneof![1usize..700, 8_200usize..12_000],
        slot_shift in 9u32..=12,
        base_slots in 0u64..300,
        ops in prop::collection::vec(pool_op(2048), 1..120),
    ) {
        let slot = 1u64 << slot_shift;
        let base = 0x4000_0000 + base_slots * slot;
        let mut pool = SlotPool::new(slots * slot as usize, slot as usize, base).unwrap();
        let mut used = vec![false; slots];
        let mut live: Vec<SlotRun> = Vec::new();
        for op in ops {
            match op {
                PoolOp::Alloc { len, align, boundary } => {
                    // Lengths were drawn for 2 KiB slots; scale them to this slot size.
                    let len = (len * slot).div_ceil(2048).max(1);
                    match pool.alloc(len, align, boundary) {
                        Ok(run) => {
                            prop_assert_eq!(run.count as u64, len.div_ceil(slot));
                            prop_assert!(placement_ok(base, slot, run.first, len, align, boundary));
                            for s in run.first..run.end() {
                                prop_assert!(!used[s]);
                                used[s] = true;
                            }
                            live.push(run);
                        }
                        Err(DmaError::PoolExhausted) => {
                            let count = len.div_ceil(slot) as usize;
                            let possible = (0..slots.saturating_sub(count - 1)).any(|first| {
                                placement_ok(base, slot, first, len, align, boundary)
                                    && used[first..first + count].iter().all(|u| !u)
                            });
                            prop_assert!(!possible, "missed a fit for {} {} {}", len, align, boundary);
                        }
                        Err(DmaError::InvalidArgument) => {
                            prop_assert!(boundary != 0 && boundary < len);
                        }
                        Err(DmaError::TooLarge) => {
                            prop_assert!(len > SLOTS_PER_BLOCK as u64 * slot);
                        }
                        Err(other) => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                PoolOp::Free(pick) => {
                    if !live.is_empty() {
                        let run = live.swap_remove(pick % live.len());
                        prop_assert_eq!(pool.free(run), Ok(()));
                        prop_assert_eq!(pool.free(run), Err(DmaError::InvalidArgument));
                        for s in run.first..run.end() {
                            used[s] = false;
                        }
                    }
                }
            }
            prop_assert!(pool.check_consistency());
            prop_assert_eq!(pool.used_slots(), used.iter().filter(|u| **u).count());
        }
        for run in live {
            prop_assert_eq!(pool.free(run), Ok(()));
        }
        prop_assert_eq!(pool.free_slots(), slots);
        prop_assert!(pool.check_consistency());
    }
}

#[derive(Clone, Debug)]
enum ServerOp {
    Map {
        client: usize,
        len: u64,
        direction: u8,
        align: u64,
        boundary: u64,
    },
    Coherent {
        client: usize,
        size: u64,
        align: u64,
    },
    Unmap {
        client: usize,
        pick: usize,
    },
    UnmapForeign {
        client: usize,
        pick: usize,
    },
    Revoke {
        client: usize,
    },
    Restart {
        client: usize,
    },
    Reset {
        client: usize,
    },
}

const CLIENTS: usize = 3;

fn server_op() -> impl Strategy<Value = ServerOp> {
    let client = 0..CLIENTS;
    prop_oneof![
        6 => (client.clone(), 1u64..40_000, 0u8..3, power_or_zero(16), power_or_zero(18))
            .prop_map(|(client, len, direction, align, boundary)| ServerOp::Map {
                client, len, direction, align, boundary,
            }),
        1 => (client.clone(), 1u64..20_000, power_or_zero(14))
            .prop_map(|(client, size, align)| ServerOp::Coherent { client, size, align }),
        5 => (client.clone(), any::<usize>()).prop_map(|(client, pick)| ServerOp::Unmap { client, pick }),
        1 => (client.clone(), any::<usize>())
            .prop_map(|(client, pick)| ServerOp::UnmapForeign { client, pick }),
        1 => client.clone().prop_map(|client| ServerOp::Revoke { client }),
        1 => client.clone().prop_map(|client| ServerOp::Restart { client }),
        1 => client.prop_map(|client| ServerOp::Reset { client }),
    ]
}

struct Model {
    instance: [u32; CLIENTS],
    alive: [bool; CLIENTS],
    live: [Vec<GrantInfo>; CLIENTS],
}

impl Model {
    fn caller(&self, client: usize) -> ClientRef {
        ClientRef {
            identity: ClientIdentity(client as u32 + 1),
            instance: InstanceGeneration(self.instance[client]),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random request sequences from several clients never hand out overlapping slots, never
    /// break a page rule, and leak nothing: once everything is unmapped and reclaimed, every
    /// slot is free.
    #[test]
    fn server_never_overlaps_or_leaks(ops in prop::collection::vec(server_op(), 1..150)) {
        let supervisor = Supervisor::from_supervisor_endpoint();
        let mut server = DmaServer::new(
            ServerConfig { budget_bytes: 4 << 20, ..ServerConfig::default() },
            FakeBacking::new(2048),
        );
        let mut model = Model {
            instance: [1; CLIENTS],
            alive: [true; CLIENTS],
            live: Default::default(),
        };
        let quotas = [256 * 1024u64, 512 * 1024, 1 << 20];
        for client in 0..CLIENTS {
            server.register(model.caller(client), quotas[client]).unwrap();
        }
        for op in ops {
            match op {
                ServerOp::Map { client, len, direction, align, boundary } => {
                    let direction = Direction::try_from(direction).unwrap();
                    let result = server.map(model.caller(client), len, direction, align, boundary);
                    match result {
                        Ok(grant) => {
                            prop_assert!(model.alive[client]);
                            prop_assert!(align <= 1 || grant.device_address.is_multiple_of(align));
                            prop_assert!(boundary == 0
                                || grant.device_address / boundary
                                    == (grant.device_address + len - 1) / boundary);
                            model.live[client].push(grant);
                        }
                        Err(error) => prop_assert!(!model.alive[client]
                            || matches!(error, DmaError::PoolExhausted | DmaError::QuotaExceeded
                                | DmaError::InvalidArgument)),
                    }
                }
                ServerOp::Coherent { client, size, align } => {
                    if let Ok(grant) = server.alloc_coherent(model.caller(client), size, align) {
                        prop_assert!(align <= 1 || grant.device_address.is_multiple_of(align));
                        model.live[client].push(grant);
                    }
                }
                ServerOp::Unmap { client, pick } => {
                    if model.alive[client] && !model.live[client].is_empty() {
                        let grant = model.live[client].swap_remove(pick % model.live[client].len());
                        prop_assert_eq!(server.unmap(model.caller(client), grant.id), Ok(()));
                        prop_assert_eq!(
                            server.unmap(model.caller(client), grant.id),
                            Err(DmaError::UnknownGrant)
                        );
                    }
                }
                ServerOp::UnmapForeign { client, pick } => {
                    let other = (client + 1) % CLIENTS;
                    if model.alive[client] && !model.live[other].is_empty() {
                        let grant = model.live[other][pick % model.live[other].len()];
                        prop_assert_eq!(
                            server.unmap(model.caller(client), grant.id),
                            Err(DmaError::UnknownGrant)
                        );
                    }
                }
                ServerOp::Revoke { client } => {
                    server.revoke(&supervisor, ClientIdentity(client as u32 + 1)).unwrap();
                    model.alive[client] = false;
                    model.live[client].clear();
                }
                ServerOp::Restart { client } => {
                    model.instance[client] += 1;
                    model.alive[client] = true;
                    model.live[client].clear();
                    server.register(model.caller(client), quotas[client]).unwrap();
                }
                ServerOp::Reset { client } => {
                    let result = server.reset_complete(model.caller(client));
                    prop_assert_eq!(result.is_ok(), model.alive[client]);
                }
            }
            prop_assert!(server.check_consistency());
            // No two live grants anywhere share a device byte.
            let mut ranges: Vec<(u64, u64)> = model
                .live
                .iter()
                .flatten()
                .map(|g| (g.device_address, g.device_address + g.length))
                .collect();
            ranges.sort_unstable();
            prop_assert!(ranges.windows(2).all(|pair| pair[0].1 <= pair[1].0));
        }
        // Wind down: restart the dead, reclaim, unmap everything.
        for client in 0..CLIENTS {
            if !model.alive[client] {
                model.instance[client] += 1;
                server.register(model.caller(client), quotas[client]).unwrap();
            }
            server.reset_complete(model.caller(client)).unwrap();
            for grant in core::mem::take(&mut model.live[client]) {
                prop_assert_eq!(server.unmap(model.caller(client), grant.id), Ok(()));
            }
        }
        let stats = server.stats();
        prop_assert_eq!(stats.used_slots, 0);
        prop_assert_eq!(stats.quarantined_slots, 0);
        prop_assert_eq!(stats.grants, 0);
        prop_assert_eq!(stats.total_slots, (256 + 512 + 1024) * 1024 / 2048);
        prop_assert!(server.check_consistency());
        prop_assert!(server.backing().violations.is_empty());
        prop_assert!(server.backing().all_zeroed_since_change());
    }
}
