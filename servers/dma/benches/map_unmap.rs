//! Benchmarks: one map + unmap pair at 50% pool occupancy, at 4 MiB and 256 MiB, for the bare
//! slot pool and for the whole server model; and the pool's bookkeeping bytes per MiB.
//!
//! Bench ids: `dma_map_unmap/{pool,server}_{4KiB,64KiB}/{4MiB,256MiB}`: the same length mapped
//! and unmapped again and again, as a driver does per I/O, so after the first pair every map
//! finds the run freed last (the pool's fastest path). `dma_map_unmap/{pool,server}_search/
//! {4MiB,256MiB}`: pairs of 4 KiB and 6 KiB in turn, so that run never fits and every map
//! searches the size classes of the fragmented pool; this is the figure that shows the cost does
//! not grow with the pool.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use moat_dma_server::{
    Backing, ClientIdentity, ClientRef, Direction, DmaError, DmaServer, InstanceGeneration,
    ServerConfig, SharedRegion, SlotPool, SlotRun,
};

const MIB: usize = 1 << 20;
const SLOT: usize = 2048;
const SIZES: [(usize, &str); 2] = [(4 * MIB, "4MiB"), (256 * MIB, "256MiB")];
/// Two lengths (2 and 3 slots) mapped in turn, so the run freed last never fits the next map.
const SEARCH_LENGTHS: [u64; 2] = [4096, 6144];

/// A small deterministic generator (xorshift64*), so both pool sizes see the same pattern.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Random requests of 1 to 16 slots, a quarter of them 4 KiB-aligned: fill to 65%, then free
/// random ones down to 50%, so the free space is fragmented.
fn occupy<S, T>(
    total_slots: usize,
    state: &mut S,
    alloc: impl Fn(&mut S, u64, u64) -> Option<T>,
    free: impl Fn(&mut S, T),
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live = Vec::new();
    let mut used = 0;
    while used * 100 < total_slots * 65 {
        let slots = (rng.next() % 16 + 1) as usize;
        let align = if rng.next().is_multiple_of(4) {
            4096
        } else {
            0
        };
        if let Some(handle) = alloc(state, (slots * SLOT) as u64, align) {
            used += slots;
            live.push((handle, slots));
        }
    }
    while used * 100 > total_slots * 50 {
        let index = (rng.next() % live.len() as u64) as usize;
        let (handle, slots) = live.swap_remove(index);
        used -= slots;
        free(state, handle);
    }
}

fn half_full_pool(bytes: usize) -> SlotPool {
    let mut pool = SlotPool::new(bytes, SLOT, 0x4000_0000).expect("pool");
    let total = pool.total_slots();
    occupy(
        total,
        &mut pool,
        |pool, len, align| pool.alloc(len, align, 0).ok(),
        |pool, run: SlotRun| pool.free(run).expect("free"),
    );
    pool
}

/// A backing that only hands out addresses, for timing the server model.
struct NullBacking {
    next: u64,
}

impl Backing for NullBacking {
    fn page_size(&self) -> usize {
        4096
    }
    fn share(&mut self, pages: usize) -> Result<SharedRegion, DmaError> {
        let region = SharedRegion {
            handle: 0,
            device_base: self.next,
            pages,
        };
        self.next += (pages * 4096) as u64;
        Ok(region)
    }
    fn zero(&mut self, _: &SharedRegion) -> Result<(), DmaError> {
        Ok(())
    }
    fn map_into_client(&mut self, region: &SharedRegion, _: ClientRef) -> Result<u64, DmaError> {
        Ok(region.device_base + 0x10_0000_0000)
    }
    fn unmap_from_client(&mut self, _: &SharedRegion, _: ClientRef) -> Result<(), DmaError> {
        Ok(())
    }
    fn unshare(&mut self, _: &SharedRegion) -> Result<(), DmaError> {
        Ok(())
    }
    fn release(&mut self, _: SharedRegion) -> Result<(), DmaError> {
        Ok(())
    }
}

const CLIENT: ClientRef = ClientRef {
    identity: ClientIdentity(1),
    instance: InstanceGeneration(1),
};

fn half_full_server(bytes: usize) -> DmaServer<NullBacking> {
    let mut server = DmaServer::new(
        ServerConfig {
            slot_size: SLOT,
            budget_bytes: 1 << 30,
        },
        NullBacking { next: 0x4000_0000 },
    );
    server.register(CLIENT, bytes as u64).expect("register");
    occupy(
        bytes / SLOT,
        &mut server,
        |server, len, align| {
            server
                .map(CLIENT, len, Direction::ToDevice, align, 0)
                .ok()
                .map(|grant| grant.id)
        },
        |server, id| server.unmap(CLIENT, id).expect("unmap"),
    );
    server
}

fn bench_pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("dma_map_unmap");
    for (bytes, name) in SIZES {
        for (len, label) in [(4096u64, "pool_4KiB"), (65536, "pool_64KiB")] {
            let mut pool = half_full_pool(bytes);
            group.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter(|| {
                    let run = pool.alloc(black_box(len), 0, 0).expect("alloc");
                    pool.free(black_box(run)).expect("free");
                })
            });
        }
        for (len, label) in [(4096u64, "server_4KiB"), (65536, "server_64KiB")] {
            let mut server = half_full_server(bytes);
            group.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter(|| {
                    let grant = server
                        .map(CLIENT, black_box(len), Direction::ToDevice, 0, 0)
                        .expect("map");
                    server.unmap(CLIENT, black_box(grant.id)).expect("unmap");
                })
            });
        }
        let mut pool = half_full_pool(bytes);
        let mut turn = 0usize;
        group.bench_function(BenchmarkId::new("pool_search", name), |b| {
            b.iter(|| {
                turn += 1;
                let run = pool
                    .alloc(black_box(SEARCH_LENGTHS[turn % 2]), 0, 0)
                    .expect("alloc");
                pool.free(black_box(run)).expect("free");
            })
        });
        let mut server = half_full_server(bytes);
        group.bench_function(BenchmarkId::new("server_search", name), |b| {
            b.iter(|| {
                turn += 1;
                let grant = server
                    .map(
                        CLIENT,
                        black_box(SEARCH_LENGTHS[turn % 2]),
                        Direction::ToDevice,
                        0,
                        0,
                    )
                    .expect("map");
                server.unmap(CLIENT, black_box(grant.id)).expect("unmap");
            })
        });
    }
    group.finish();
}

/// Nanoseconds per pair for 200,000 pairs of the given lengths in turn.
fn pairs_ns(pool: &mut SlotPool, lengths: &[u64]) -> f64 {
    let pairs = 200_000;
    let start = Instant::now();
    for pair in 0..pairs {
        let len = lengths[pair % lengths.len()];
        let run = pool.alloc(black_box(len), 0, 0).expect("alloc");
        pool.free(black_box(run)).expect("free");
    }
    start.elapsed().as_nanos() as f64 / pairs as f64
}

/// A quick in-process figure for the scaling ratio, beside criterion's numbers: the 4 MiB and
/// the 256 MiB pool measured in turn, 15 times each (so both see the same host load), and the
/// best time of each.
fn quick_ns(lengths: &[u64]) -> (f64, f64) {
    let mut small = half_full_pool(4 * MIB);
    let mut large = half_full_pool(256 * MIB);
    let (mut best_small, mut best_large) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..15 {
        best_small = best_small.min(pairs_ns(&mut small, lengths));
        best_large = best_large.min(pairs_ns(&mut large, lengths));
    }
    (best_small, best_large)
}

fn report_metadata() {
    for (bytes, name) in SIZES {
        let pool = SlotPool::new(bytes, SLOT, 0x4000_0000).expect("pool");
        let per_mib = pool.metadata_bytes() as f64 / (bytes / MIB) as f64;
        println!(
            "dma_pool_metadata_bytes_per_MiB ({name} pool, {SLOT} B slots): {per_mib:.1} \
             (SWIOTLB: 12288; target <= 1229)"
        );
        let server = half_full_server(bytes);
        let per_mib = server.metadata_bytes() as f64 / (bytes / MIB) as f64;
        println!("  server bookkeeping at 50% occupancy incl. grant table: {per_mib:.1} B/MiB");
    }
    for (label, lengths) in [("4KiB", &[4096u64][..]), ("search", &SEARCH_LENGTHS[..])] {
        let (small, large) = quick_ns(lengths);
        println!(
            "quick pool map+unmap {label}: {small:.1} ns @4MiB, {large:.1} ns @256MiB, \
             scaling = {:.3}",
            large / small
        );
        if label == "search" {
            // The search path's scaling (the headline `dma_map_unmap_scaling` comes from the
            // server's same-length pairs, which reuse the run freed last).
            println!(
                "moat-bench: dma_map_unmap_search_scaling = {:.3}",
                large / small
            );
        }
    }
}

fn main() {
    report_metadata();
    let mut criterion = Criterion::default().configure_from_args();
    bench_pool(&mut criterion);
    criterion.final_summary();
}
