//! Test support (feature `test-utils`): fake DMA memory and a fake virtio-net device.
//!
//! [`FakeDma`] hands out rings from a `moat-virtio` [`FakeMemory`] (so a test can hook every
//! driver read of a ring and change it in between, as the host may) and streaming grants from a
//! `moat-dma-api` fake window (so the real `Bounce` copies run). [`FakeBus`] is the device's view
//! of both, by device address. [`FakeNet`] puts a driver together with a fake device whose two
//! queues a test drives well or badly.

use core::cell::Cell;

use std::vec::Vec;

use moat_dma_api::{FakeDevice, FakeWindow, FromDevice, Grant, ToDevice, Window};
use moat_net_api::MacAddress;
use moat_virtio::fake::{DeviceBus, FakeMemory, FakeMmioDevice, FakeQueueDevice, FakeRegion};
use moat_virtio::{CoherentAllocator, Transport};

use crate::device::{InitError, NetDevice, RX_QUEUE, TX_QUEUE};
use crate::dma::DmaMemory;
use crate::frame::NET_HEADER;
use crate::{DEVICE_ID, config, features};

/// Device address of the fake ring memory.
pub const RING_BASE: u64 = 0x1_0000_0000;
/// Bytes of fake ring memory.
pub const RING_MEMORY: usize = 1 << 20;
/// Bytes of the fake bounce window.
pub const WINDOW: usize = 1 << 20;
/// The fake device's MAC address.
pub const DEVICE_MAC: MacAddress = MacAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
/// The MAC the driver falls back to when the device offers none.
pub const FALLBACK_MAC: MacAddress = MacAddress([0x02, 0, 0, 0, 0, 1]);

/// Fake DMA memory: rings from a hookable [`FakeMemory`], grants from a fake window.
#[derive(Debug)]
pub struct FakeDma {
    rings: FakeMemory,
    ring_next: Cell<usize>,
    window: Window,
    window_next: Cell<usize>,
    next_id: Cell<u64>,
    /// Grants still allowed (`None`: unlimited).
    grant_budget: Cell<Option<usize>>,
}

impl Default for FakeDma {
    fn default() -> Self {
        FakeDma::new()
    }
}

impl FakeDma {
    /// Fresh fake memory; the window starts full of `0xa5` (stale bytes a device or host left).
    pub fn new() -> FakeDma {
        FakeDma {
            rings: FakeMemory::new(RING_MEMORY, RING_BASE),
            ring_next: Cell::new(0),
            window: FakeWindow::new(WINDOW, 0xa5).into_window(),
            window_next: Cell::new(0),
            next_id: Cell::new(1),
            grant_budget: Cell::new(None),
        }
    }

    /// Makes all memory available again (for the next driver instance: a fuzz target reuses
    /// one window, which is leaked memory). Earlier grants and regions must no longer be used.
    pub fn recycle(&self) {
        self.rings.clear_read_hook();
        self.ring_next.set(0);
        self.window_next.set(0);
        self.grant_budget.set(None);
    }

    /// The ring memory (to install read hooks).
    pub fn rings(&self) -> &FakeMemory {
        &self.rings
    }

    /// The device's view of rings and window.
    pub fn bus(&self) -> FakeBus {
        FakeBus {
            rings: self.rings.clone(),
            window: FakeWindow::device(&self.window),
        }
    }

    /// Only `count` more streaming grants succeed.
    pub fn limit_grants(&self, count: usize) {
        self.grant_budget.set(Some(count));
    }

    fn grant<D: moat_dma_api::DirectionMarker>(&self, len: usize) -> Result<Grant<D>, ()> {
        if let Some(budget) = self.grant_budget.get() {
            if budget == 0 {
                return Err(());
            }
            self.grant_budget.set(Some(budget - 1));
        }
        let offset = self.window_next.get();
        let id = self.next_id.get();
        let grant = moat_dma_api::fake::grant(&self.window, id, offset, len).ok_or(())?;
        self.window_next.set((offset + len).next_multiple_of(64));
        self.next_id.set(id + 1);
        Ok(grant)
    }
}

impl CoherentAllocator for FakeDma {
    type Region = FakeRegion;
    type Error = ();

    fn alloc_coherent(&self, size: usize, align: usize) -> Result<FakeRegion, ()> {
        let offset = self.ring_next.get().next_multiple_of(align.max(1));
        let region = self.rings.region(offset, size).ok_or(())?;
        self.ring_next.set(offset + size);
        Ok(region)
    }

    fn free_coherent(&self, _region: FakeRegion) -> Result<(), ()> {
        Ok(())
    }
}

impl DmaMemory for FakeDma {
    fn map_to_device(&self, len: usize) -> Result<Grant<ToDevice>, ()> {
        self.grant(len)
    }

    fn map_from_device(&self, len: usize) -> Result<Grant<FromDevice>, ()> {
        self.grant(len)
    }
}

/// The device's view of [`FakeDma`]: rings and window by device address.
#[derive(Clone, Debug)]
pub struct FakeBus {
    rings: FakeMemory,
    window: FakeDevice,
}

impl DeviceBus for FakeBus {
    fn read(&self, address: u64, out: &mut [u8]) -> bool {
        self.rings.read(address, out) || DeviceBus::read(&self.window, address, out)
    }

    fn write(&self, address: u64, data: &[u8]) -> bool {
        self.rings.write(address, data) || DeviceBus::write(&self.window, address, data)
    }
}

/// A driver on a fake device, and the device's two queues.
#[derive(Debug)]
pub struct FakeNet {
    /// The driver.
    pub driver: NetDevice<FakeMmioDevice, FakeDma>,
    /// The device registers (a clone of the driver's).
    pub mmio: FakeMmioDevice,
    /// The device side of the receive queue.
    pub rx: FakeQueueDevice<FakeBus>,
    /// The device side of the transmit queue.
    pub tx: FakeQueueDevice<FakeBus>,
    /// The device's view of memory.
    pub bus: FakeBus,
}

/// A fake virtio-net device offering `offered` features (plus `VERSION_1` and
/// `ACCESS_PLATFORM`), with [`DEVICE_MAC`], link up and MTU `mtu`, queues of at most `queue_max`.
pub fn device(offered: u64, mtu: u16, queue_max: u32) -> FakeMmioDevice {
    let mmio = FakeMmioDevice::new(
        DEVICE_ID,
        offered | moat_virtio::features::VERSION_1 | moat_virtio::features::ACCESS_PLATFORM,
        2,
        queue_max,
    );
    mmio.set_config(config::MAC, &DEVICE_MAC.0);
    mmio.set_config(config::STATUS, &config::STATUS_LINK_UP.to_le_bytes());
    mmio.set_config(config::MTU, &mtu.to_le_bytes());
    mmio
}

impl FakeNet {
    /// A driver brought up on [`device`]`(features::WANTED, 1500, 256)`.
    pub fn new() -> Result<FakeNet, InitError<()>> {
        FakeNet::with_device(device(features::WANTED, 1500, 256), FakeDma::new())
    }

    /// A driver brought up on `mmio` with `dma`.
    pub fn with_device(mmio: FakeMmioDevice, dma: FakeDma) -> Result<FakeNet, InitError<()>> {
        let bus = dma.bus();
        let transport = Transport::probe(mmio.clone())?;
        let driver = NetDevice::new(transport, dma, FALLBACK_MAC)?;
        let registers = |index: u16| mmio.queue(usize::from(index)).unwrap_or_default();
        let rx = FakeQueueDevice::from_registers(bus.clone(), &registers(RX_QUEUE));
        let tx = FakeQueueDevice::from_registers(bus.clone(), &registers(TX_QUEUE));
        Ok(FakeNet {
            driver,
            mmio,
            rx,
            tx,
            bus,
        })
    }

    /// The device receives `frame` from the wire: writes a zero net header and the frame into
    /// the next posted buffer and completes it with the true length. Returns `false` if no
    /// buffer was posted.
    pub fn deliver(&mut self, frame: &[u8]) -> bool {
        let mut bytes = std::vec![0; NET_HEADER];
        bytes.extend_from_slice(frame);
        self.deliver_raw(&bytes, None)
    }

    /// The device writes `bytes` (net header included) into the next posted buffer and
    /// completes it claiming `claimed` bytes (default: what it wrote).
    pub fn deliver_raw(&mut self, bytes: &[u8], claimed: Option<u32>) -> bool {
        let Some(chain) = self.rx.pop() else {
            return false;
        };
        let Some(written) = chain.write(&self.bus, bytes) else {
            return false;
        };
        self.rx.complete(chain.head, claimed.unwrap_or(written));
        self.mmio
            .raise_interrupt(moat_virtio::mmio::interrupt::USED_BUFFER);
        true
    }

    /// The device takes every frame the driver made available for sending and completes each;
    /// returns the frames with their net headers stripped (headers must be all zero).
    pub fn transmitted(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(chain) = self.tx.pop() {
            let bytes = chain.read(&self.bus).unwrap_or_default();
            assert!(
                bytes.len() >= NET_HEADER,
                "transmit buffer without net header"
            );
            assert_eq!(bytes[..NET_HEADER], [0; NET_HEADER], "net header not zero");
            frames.push(bytes[NET_HEADER..].to_vec());
            self.tx.complete(chain.head, 0);
        }
        if !frames.is_empty() {
            self.mmio
                .raise_interrupt(moat_virtio::mmio::interrupt::USED_BUFFER);
        }
        frames
    }

    /// Frames the driver holds, drained.
    pub fn take_all(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while self
            .driver
            .take_frame(|frame| {
                frames.push(frame.to_vec());
                true
            })
            .is_some()
        {}
        frames
    }
}

/// An Ethernet frame of `len` bytes (at least 14) to `destination`, from `02:00:00:00:00:02`,
/// type IPv4, payload bytes counting up.
pub fn ethernet(destination: MacAddress, len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&destination.0);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend((0..len.saturating_sub(14)).map(|i| i as u8));
    frame.truncate(len.max(14));
    frame
}
