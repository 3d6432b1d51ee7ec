//! Arbitrary bytes play a hostile entropy device and host: the queue size, every request's used
//! length, short writes, forged used ids, jumping indices, silence, and arbitrary bytes written
//! anywhere in the shared window (rings included) while the driver waits.
//!
//! Invariants: no panic; a fill returns at most what was asked and what fits the bounce buffer;
//! once the device has failed, every later fill fails.
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use moat_dma_api::FakeDevice;
use moat_rng_api::{EntropySource, MAX_FILL};
use moat_virtio::fake::DeviceBus;
use moat_virtio_rng::fake::{FakeDma, FakeEntropy, Misbehaviour, WINDOW};
use moat_virtio_rng::{Interrupt, RngDevice};

/// Reads the input front to back; runs dry as zeros.
struct Bytes(Rc<RefCell<Vec<u8>>>);

impl Bytes {
    fn u8(&self) -> u8 {
        let mut bytes = self.0.borrow_mut();
        if bytes.is_empty() { 0 } else { bytes.remove(0) }
    }
    fn u16(&self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }
}

/// Each wait: the host scribbles on the window, then the device runs (or stays silent).
struct HostileIrq {
    device: Rc<RefCell<FakeEntropy>>,
    bus: FakeDevice,
    base: u64,
    input: Bytes,
}

impl Interrupt for HostileIrq {
    fn wait(&mut self) -> bool {
        for _ in 0..self.input.u8() % 4 {
            let offset = u64::from(self.input.u16()) % WINDOW as u64;
            let value = self.input.u32().to_le_bytes();
            let _ = DeviceBus::write(&self.bus, self.base + offset, &value);
        }
        let mut device = self.device.borrow_mut();
        device.process();
        self.input.u8() % 8 != 0 && device.mmio.interrupt_status() != 0
    }

    fn unmask(&mut self) {}
}

thread_local! {
    /// One window for every run (fake windows are leaked memory).
    static DMA: FakeDma = FakeDma::new();
}

fuzz_target!(|data: &[u8]| DMA.with(|dma| run(dma, data)));

fn run(dma: &FakeDma, data: &[u8]) {
    dma.recycle();
    let input = Rc::new(RefCell::new(data.to_vec()));
    let bytes = Bytes(input.clone());
    let queue_max = u32::from(bytes.u8());
    let fake = Rc::new(RefCell::new(FakeEntropy::new(dma, queue_max)));
    let bus = dma.device();
    let base = dma.device_base();
    let irq = HostileIrq {
        device: fake.clone(),
        bus,
        base,
        input: Bytes(input.clone()),
    };
    let mmio = fake.borrow().mmio.clone();
    let Ok(mut device) = RngDevice::start(mmio, dma, irq, || {}) else {
        return;
    };
    let mut failed = false;
    for _ in 0..32 {
        if bytes.is_empty() {
            break;
        }
        let choice = bytes.u8();
        fake.borrow_mut().misbehave = Misbehaviour {
            written: (choice & 1 != 0).then(|| bytes.u32()),
            short: (choice & 2 != 0).then(|| usize::from(bytes.u16())),
            silent: choice & 4 != 0 && choice & 8 != 0,
            forged_id: (choice & 16 != 0).then(|| bytes.u32()),
            jump: choice & 32 != 0 && choice & 64 != 0,
        };
        let len = usize::from(bytes.u16() % 400);
        let mut out = vec![0u8; len];
        match device.fill(&mut out) {
            Ok(n) => {
                assert!(!failed, "a failed device delivered bytes");
                assert!(n <= len.min(MAX_FILL), "{n} bytes for {len}");
            }
            Err(_) => failed |= device.failed(),
        }
    }
}
