//! Fakes for host tests and the fuzz target (feature `test-utils`).
//!
//! - [`FakeDma`]: a DMA server's window over heap memory. It hands out real
//!   `moat_dma_api` grants (so the driver's `Bounce` copies run for real), records each live
//!   grant's direction, and refills returned memory with stale bytes. The device sees only the
//!   window: data the driver forgot to copy in reaches the disk as stale bytes, and data it
//!   forgot to copy out never reaches the client region — either fails a test.
//! - [`FakeDisk`]: a virtio-blk device: a `moat_virtio` fake register model plus the device
//!   side of queue 0, serving reads, writes and flushes over a `Vec<u8>` disk. It checks the
//!   direction rules on every chain (a device-readable buffer must be a to-device grant, a
//!   device-writable one a from-device grant, and nothing outside a live grant) and can
//!   misbehave on request (wrong statuses, forged used entries).
//! - [`VecRegion`] / [`FakeRegions`]: client data regions over heap memory.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use std::format;

use moat_abi::{CapSlot, Rights};
use moat_blk_api::BlkError;
use moat_dma_api::{
    Coherent, Direction, DirectionMarker, FakeDevice, FakeWindow, Grant, Window, fake,
};
use moat_virtio::fake::{Chain, FakeMmioDevice, FakeQueueDevice};
use moat_virtio::features::{ACCESS_PLATFORM, VERSION_1};

use crate::dma::{DmaFailure, DmaPort};
use crate::region::{ClientRegion, fits};
use crate::service::RegionMapper;
use crate::spec::{self, config, status};

/// Allocation granule of the fake window.
const FAKE_SLOT: usize = 512;

/// What the window holds where nothing was copied.
pub const STALE: u8 = 0x5a;

/// Which way a live fake grant goes, or coherent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantKind {
    /// Streaming, device reads it.
    ToDevice,
    /// Streaming, device writes it.
    FromDevice,
    /// Streaming, both ways.
    Bidirectional,
    /// Coherent (rings).
    Coherent,
}

struct DmaState {
    window: Window,
    used: Vec<bool>,
    next_id: u64,
    /// Live grants by window offset: (length, kind).
    grants: BTreeMap<usize, (usize, GrantKind)>,
    max_mapping: usize,
    /// Maps left before every map fails as exhausted (`None`: unlimited).
    maps_left: Option<usize>,
    maps: u64,
    unmaps: u64,
    reset_completes: u32,
}

/// A fake DMA server window. Clones share it.
#[derive(Clone)]
pub struct FakeDma {
    state: Rc<RefCell<DmaState>>,
    device: FakeDevice,
}

impl core::fmt::Debug for FakeDma {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("FakeDma")
            .field("grants", &state.grants.len())
            .field("maps", &state.maps)
            .finish()
    }
}

impl FakeDma {
    /// A window of `len` bytes (filled with [`STALE`]) whose grants are at most `max_mapping`
    /// bytes.
    pub fn new(len: usize, max_mapping: usize) -> FakeDma {
        let window = FakeWindow::new(len, STALE).into_window();
        let device = FakeWindow::device(&window);
        let slots = window.len().div_ceil(FAKE_SLOT);
        FakeDma {
            state: Rc::new(RefCell::new(DmaState {
                window,
                used: vec![false; slots],
                next_id: 1,
                grants: BTreeMap::new(),
                max_mapping,
                maps_left: None,
                maps: 0,
                unmaps: 0,
                reset_completes: 0,
            })),
            device,
        }
    }

    /// Device address of the window's first byte.
    pub fn device_base(&self) -> u64 {
        self.state.borrow().window.device_base()
    }

    /// The device's view of the window.
    pub fn device(&self) -> FakeDevice {
        self.device
    }

    /// Forgets every grant and refills the window with [`STALE`], with a new maximum mapping
    /// size: a fresh server over the same memory (fake windows are leaked, so a fuzz target
    /// reuses one).
    pub fn reset(&self, max_mapping: usize) {
        let mut state = self.state.borrow_mut();
        state.used.fill(false);
        state.max_mapping = max_mapping;
        state.maps_left = None;
        let base = state.window.device_base();
        // Only granted memory can have changed (the device reaches nothing else).
        let grants = core::mem::take(&mut state.grants);
        drop(state);
        for (offset, (len, _)) in grants {
            self.device.write(base + offset as u64, &vec![STALE; len]);
        }
    }

    /// After `maps` more maps, every map fails as exhausted (`None`: never).
    pub fn set_maps_left(&self, maps: Option<usize>) {
        self.state.borrow_mut().maps_left = maps;
    }

    /// Live grants (streaming and coherent).
    pub fn live_grants(&self) -> usize {
        self.state.borrow().grants.len()
    }

    /// Maps so far.
    pub fn maps(&self) -> u64 {
        self.state.borrow().maps
    }

    /// `ResetComplete`s so far.
    pub fn reset_completes(&self) -> u32 {
        self.state.borrow().reset_completes
    }

    /// The live grant containing device range `address..address + len`, if any.
    pub fn grant_at(&self, address: u64, len: usize) -> Option<GrantKind> {
        let state = self.state.borrow();
        let offset = usize::try_from(address.checked_sub(state.window.device_base())?).ok()?;
        let (&start, &(grant_len, kind)) = state.grants.range(..=offset).next_back()?;
        fits(offset - start, len, grant_len).then_some(kind)
    }

    fn allocate(
        &self,
        len: usize,
        align: usize,
        kind: GrantKind,
    ) -> Result<(u64, usize), DmaFailure> {
        let mut state = self.state.borrow_mut();
        if len == 0 || len > state.max_mapping {
            return Err(DmaFailure::Failed);
        }
        if let Some(left) = state.maps_left.as_mut() {
            if *left == 0 {
                return Err(DmaFailure::Exhausted);
            }
            *left -= 1;
        }
        let count = len.div_ceil(FAKE_SLOT);
        let step = align.max(FAKE_SLOT) / FAKE_SLOT;
        let slots = state.used.len();
        let mut first = 0;
        while first + count <= slots {
            if state.used[first..first + count].iter().all(|used| !used) {
                state.used[first..first + count].fill(true);
                let id = state.next_id;
                state.next_id += 1;
                state.maps += 1;
                let offset = first * FAKE_SLOT;
                state.grants.insert(offset, (len, kind));
                return Ok((id, offset));
            }
            first += step;
        }
        Err(DmaFailure::Exhausted)
    }

    fn release(&self, device_address: u64, len: usize) {
        let mut state = self.state.borrow_mut();
        let Some(offset) = device_address
            .checked_sub(state.window.device_base())
            .and_then(|offset| usize::try_from(offset).ok())
        else {
            return;
        };
        if state.grants.remove(&offset).is_none() {
            return;
        }
        state.unmaps += 1;
        let first = offset / FAKE_SLOT;
        let count = len.div_ceil(FAKE_SLOT);
        if let Some(slots) = state.used.get_mut(first..first + count) {
            slots.fill(false);
        }
        drop(state);
        // Whatever the device or an earlier transfer left is what the next user would see.
        self.device.write(device_address, &vec![STALE; len]);
    }
}

impl DmaPort for FakeDma {
    fn max_mapping_size(&self) -> usize {
        self.state.borrow().max_mapping
    }

    fn reset_complete(&self) -> Result<(), DmaFailure> {
        self.state.borrow_mut().reset_completes += 1;
        Ok(())
    }

    fn alloc_coherent(&self, size: usize, align: usize) -> Result<Coherent, DmaFailure> {
        let (id, offset) = self.allocate(size, align, GrantKind::Coherent)?;
        let state = self.state.borrow();
        fake::coherent(&state.window, id, offset, size).ok_or(DmaFailure::Failed)
    }

    fn map<D: DirectionMarker>(&self, len: usize) -> Result<Grant<D>, DmaFailure> {
        let kind = match D::DIRECTION {
            Direction::ToDevice => GrantKind::ToDevice,
            Direction::FromDevice => GrantKind::FromDevice,
            Direction::Bidirectional => GrantKind::Bidirectional,
        };
        let (id, offset) = self.allocate(len, 0, kind)?;
        let state = self.state.borrow();
        fake::grant::<D>(&state.window, id, offset, len).ok_or(DmaFailure::Failed)
    }

    fn unmap<D: DirectionMarker>(&self, grant: Grant<D>) {
        self.release(grant.device_address(), grant.len());
    }
}

/// How the fake disk answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// Status byte to report instead of the right one.
    pub status: Option<u8>,
    /// Used length to report instead of the right one.
    pub written: Option<u32>,
    /// Leave the status byte unwritten.
    pub skip_status: bool,
    /// Write only this many data bytes of a read.
    pub short_read: Option<usize>,
}

/// A fake virtio-blk device over a `Vec<u8>` disk.
pub struct FakeDisk {
    /// The register model (keep a clone; the driver owns another).
    pub mmio: FakeMmioDevice,
    /// The disk's bytes.
    pub data: Vec<u8>,
    /// Misbehaviour applied to every request while set.
    pub misbehave: Misbehaviour,
    /// Direction-rule violations seen (a test expects none).
    pub violations: Vec<String>,
    /// Flushes served.
    pub flushes: u64,
    /// Requests served.
    pub served: u64,
    dma: FakeDma,
    queue: Option<FakeQueueDevice<FakeDevice>>,
}

impl core::fmt::Debug for FakeDisk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FakeDisk")
            .field("sectors", &(self.data.len() / 512))
            .field("served", &self.served)
            .finish()
    }
}

impl FakeDisk {
    /// A disk of `sectors` sectors offering `features` (plus `VERSION_1` and
    /// `ACCESS_PLATFORM`), queue maximum `queue_max`, whose DMA goes to `dma`'s window.
    pub fn new(sectors: u64, features: u64, queue_max: u32, dma: &FakeDma) -> FakeDisk {
        let mmio = FakeMmioDevice::new(
            spec::DEVICE_ID,
            features | VERSION_1 | ACCESS_PLATFORM,
            1,
            queue_max,
        );
        mmio.set_config(config::CAPACITY, &sectors.to_le_bytes());
        FakeDisk {
            mmio,
            data: vec![0; (sectors as usize).saturating_mul(512)],
            misbehave: Misbehaviour::default(),
            violations: Vec::new(),
            flushes: 0,
            served: 0,
            dma: dma.clone(),
            queue: None,
        }
    }

    /// The queue's device side, once the driver has set the queue up.
    pub fn queue(&mut self) -> Option<&mut FakeQueueDevice<FakeDevice>> {
        if self.queue.is_none() {
            let registers = self.mmio.queue(0)?;
            if !registers.ready {
                return None;
            }
            self.queue = Some(FakeQueueDevice::from_registers(
                self.dma.device(),
                &registers,
            ));
        }
        self.queue.as_mut()
    }

    /// Forgets the queue (after a reset the driver sets up a new one).
    pub fn detach(&mut self) {
        self.queue = None;
    }

    /// Takes the next available chain without serving it (for tests that answer by hand).
    pub fn pop(&mut self) -> Option<Chain> {
        self.queue()?.pop()
    }

    /// Serves every available chain, completes each, and raises the interrupt if any was
    /// served. Returns how many.
    pub fn process(&mut self) -> usize {
        let mut served = 0;
        while let Some(chain) = self.pop() {
            let (head, written) = self.serve(&chain);
            if let Some(queue) = self.queue() {
                queue.complete(head, written);
            }
            served += 1;
        }
        if served > 0 {
            self.mmio.raise_interrupt(1);
        }
        served
    }

    fn check_directions(&mut self, chain: &Chain) {
        for segment in &chain.segments {
            let kind = self.dma.grant_at(segment.address, segment.len as usize);
            let ok = match kind {
                Some(GrantKind::ToDevice) => !segment.writable,
                Some(GrantKind::FromDevice) => segment.writable,
                Some(GrantKind::Bidirectional) => true,
                Some(GrantKind::Coherent) | None => false,
            };
            if !ok {
                self.violations.push(format!(
                    "segment {:#x}+{} writable={} in grant {kind:?}",
                    segment.address, segment.len, segment.writable
                ));
            }
        }
    }

    /// Serves one chain; returns its head and the used length to report.
    pub fn serve(&mut self, chain: &Chain) -> (u16, u32) {
        self.check_directions(chain);
        self.served += 1;
        let bus = self.dma.device();
        let readable = chain.read(&bus).unwrap_or_default();
        let writable: Vec<_> = chain
            .segments
            .iter()
            .filter(|s| s.writable)
            .copied()
            .collect();
        let Some((status_segment, data_segments)) = writable.split_last() else {
            return (chain.head, 0);
        };
        let mut status_byte = status::IOERR;
        let mut written = 1u32;
        if readable.len() >= spec::HEADER_SIZE {
            let kind = u32::from_le_bytes([readable[0], readable[1], readable[2], readable[3]]);
            let mut sector = [0u8; 8];
            sector.copy_from_slice(&readable[8..16]);
            let start = u64::from_le_bytes(sector).saturating_mul(512);
            match kind {
                spec::request::IN => {
                    let len: usize = data_segments.iter().map(|s| s.len as usize).sum();
                    if let Some(bytes) = usize::try_from(start)
                        .ok()
                        .and_then(|start| self.data.get(start..start.checked_add(len)?))
                    {
                        let take = self.misbehave.short_read.unwrap_or(len).min(len);
                        let mut rest = &bytes[..take];
                        for segment in data_segments {
                            let n = rest.len().min(segment.len as usize);
                            bus.write(segment.address, &rest[..n]);
                            rest = &rest[n..];
                        }
                        status_byte = status::OK;
                        written = len as u32 + 1;
                    }
                }
                spec::request::OUT => {
                    let payload = &readable[spec::HEADER_SIZE..];
                    if let Some(target) = usize::try_from(start).ok().and_then(|start| {
                        self.data.get_mut(start..start.checked_add(payload.len())?)
                    }) {
                        target.copy_from_slice(payload);
                        status_byte = status::OK;
                    }
                }
                spec::request::FLUSH => {
                    self.flushes += 1;
                    status_byte = status::OK;
                }
                _ => status_byte = status::UNSUPP,
            }
        }
        if let Some(forced) = self.misbehave.status {
            status_byte = forced;
        }
        if !self.misbehave.skip_status {
            bus.write(status_segment.address, &[status_byte]);
        }
        (chain.head, self.misbehave.written.unwrap_or(written))
    }
}

/// A client region over heap memory; clones share it.
#[derive(Clone, Debug)]
pub struct VecRegion {
    bytes: Rc<RefCell<Vec<u8>>>,
}

impl VecRegion {
    /// `len` zero bytes.
    pub fn new(len: usize) -> VecRegion {
        VecRegion {
            bytes: Rc::new(RefCell::new(vec![0; len])),
        }
    }

    /// A copy of `offset..offset + len`.
    pub fn get(&self, offset: usize, len: usize) -> Vec<u8> {
        self.bytes.borrow()[offset..offset + len].to_vec()
    }

    /// Sets bytes at `offset`.
    pub fn set(&self, offset: usize, data: &[u8]) {
        self.bytes.borrow_mut()[offset..offset + data.len()].copy_from_slice(data);
    }
}

impl ClientRegion for VecRegion {
    fn len(&self) -> usize {
        self.bytes.borrow().len()
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> bool {
        let bytes = self.bytes.borrow();
        match offset
            .checked_add(out.len())
            .and_then(|end| bytes.get(offset..end))
        {
            Some(source) => {
                out.copy_from_slice(source);
                true
            }
            None => false,
        }
    }

    fn write(&self, offset: usize, data: &[u8]) -> bool {
        let mut bytes = self.bytes.borrow_mut();
        match offset
            .checked_add(data.len())
            .and_then(|end| bytes.get_mut(offset..end))
        {
            Some(target) => {
                target.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

/// Regions by capability slot, as a test hands them out.
#[derive(Clone, Debug, Default)]
pub struct FakeRegions {
    regions: Rc<RefCell<BTreeMap<u32, VecRegion>>>,
    unmapped: Rc<RefCell<u32>>,
}

impl FakeRegions {
    /// Makes `region` the memory behind capability `slot`.
    pub fn insert(&self, slot: CapSlot, region: VecRegion) {
        self.regions.borrow_mut().insert(slot.0, region);
    }

    /// Regions unmapped so far.
    pub fn unmapped(&self) -> u32 {
        *self.unmapped.borrow()
    }
}

impl RegionMapper for FakeRegions {
    type Region = VecRegion;

    fn map(&mut self, memory: CapSlot, _rights: Rights) -> Result<VecRegion, BlkError> {
        self.regions
            .borrow()
            .get(&memory.0)
            .cloned()
            .ok_or(BlkError::BadRegion)
    }

    fn unmap(&mut self, _region: VecRegion) {
        *self.unmapped.borrow_mut() += 1;
    }
}
