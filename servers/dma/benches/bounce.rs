//! The cost of bouncing: one to-device bounce (map + copy in with the production copy routine +
//! unmap, through the server model) against one plain `copy_from_slice` of the same size,
//! measured in the same run.
//!
//! Criterion ids: `bounce_copy/{bounce,memcpy}_{4KiB,64KiB}`. The ratio (memcpy time ÷ bounce
//! time = bounce throughput relative to memcpy; 1.0 means bouncing costs nothing beyond the
//! copy) is measured separately by interleaving the two loops and taking the median of the
//! per-round ratios, and printed as `bounce_copy_ratio_64k=<x>` and as a `moat-bench:` line
//! for xtask.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use moat_dma_api::{Bounce, FakeWindow, ToDevice, Window};
use moat_dma_server::{
    Backing, ClientIdentity, ClientRef, Direction, DmaError, DmaServer, InstanceGeneration,
    ServerConfig, SharedRegion,
};

const WINDOW: usize = 1 << 20;
const SIZES: [(usize, &str, &str); 2] = [
    (4096, "4KiB", "bounce_copy_ratio_4k"),
    (65536, "64KiB", "bounce_copy_ratio_64k"),
];

/// A backing that only hands out addresses.
struct NullBacking;

impl Backing for NullBacking {
    fn page_size(&self) -> usize {
        4096
    }
    fn share(&mut self, pages: usize) -> Result<SharedRegion, DmaError> {
        Ok(SharedRegion {
            handle: 0,
            device_base: 0x4000_0000,
            pages,
        })
    }
    fn zero(&mut self, _: &SharedRegion) -> Result<(), DmaError> {
        Ok(())
    }
    fn map_into_client(&mut self, _: &SharedRegion, _: ClientRef) -> Result<u64, DmaError> {
        Ok(0)
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

struct Setup {
    server: DmaServer<NullBacking>,
    window: Window,
}

fn setup() -> Setup {
    let mut server = DmaServer::new(
        ServerConfig {
            slot_size: 2048,
            budget_bytes: 1 << 30,
        },
        NullBacking,
    );
    let info = server.register(CLIENT, WINDOW as u64).expect("register");
    let window = FakeWindow::with_device_base(WINDOW, 0, info.device_base).into_window();
    Setup { server, window }
}

/// One to-device bounce: map, copy in, (the device would run here), complete, unmap.
#[inline(never)]
fn bounce_once(setup: &mut Setup, data: &[u8]) {
    let info = setup
        .server
        .map(CLIENT, data.len() as u64, Direction::ToDevice, 0, 0)
        .expect("map");
    let grant = moat_dma_api::fake::grant::<ToDevice>(
        &setup.window,
        info.id.raw(),
        info.window_offset as usize,
        data.len(),
    )
    .expect("in window");
    let in_flight = Bounce::to_device(grant, data).expect("fits");
    black_box(in_flight.device_address());
    let grant = in_flight.complete();
    setup.server.unmap(CLIENT, grant.id()).expect("unmap");
}

#[inline(never)]
fn memcpy_once(destination: &mut [u8], data: &[u8]) {
    destination.copy_from_slice(data);
    black_box(destination.as_ptr());
}

/// Median over rounds of (memcpy time ÷ bounce time), the two loops interleaved.
fn ratio(len: usize) -> (f64, f64, f64) {
    let mut setup = setup();
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    // Same kind of destination as the window: the start of a page-aligned 1 MiB buffer.
    let mut destination_buffer = vec![0u8; WINDOW];
    let destination = &mut destination_buffer[..len];
    let iterations = (64 << 20) / len; // 64 MiB per loop
    let mut ratios = Vec::new();
    let mut bounce_ns = Vec::new();
    let mut memcpy_ns = Vec::new();
    for round in 0..31 {
        let start = Instant::now();
        for _ in 0..iterations {
            memcpy_once(black_box(&mut *destination), black_box(&data));
        }
        let memcpy = start.elapsed().as_nanos() as f64 / iterations as f64;
        let start = Instant::now();
        for _ in 0..iterations {
            bounce_once(&mut setup, black_box(&data));
        }
        let bounce = start.elapsed().as_nanos() as f64 / iterations as f64;
        if round > 0 {
            // Round 0 warms caches and the allocator.
            ratios.push(memcpy / bounce);
            bounce_ns.push(bounce);
            memcpy_ns.push(memcpy);
        }
    }
    (
        median(&mut ratios),
        median(&mut bounce_ns),
        median(&mut memcpy_ns),
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("bounce_copy");
    for (len, label, _) in SIZES {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        let mut state = setup();
        group.bench_function(BenchmarkId::new("bounce", label), |b| {
            b.iter(|| bounce_once(&mut state, black_box(&data)))
        });
        let mut destination = vec![0u8; WINDOW];
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| memcpy_once(black_box(&mut destination[..len]), black_box(&data)))
        });
    }
    group.finish();
}

fn main() {
    for (len, label, name) in SIZES {
        let (ratio, bounce, memcpy) = ratio(len);
        println!(
            "bounce {label}: {bounce:.1} ns (map + copy in + unmap), memcpy {memcpy:.1} ns, \
             {:.2} GB/s vs {:.2} GB/s",
            len as f64 / bounce,
            len as f64 / memcpy
        );
        println!("{name}={ratio:.3}");
        println!("moat-bench: {name} = {ratio:.3}");
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
