//! One virtio-blk device: bring-up, and the request path of *parts* (one virtio request each:
//! header, at most one data buffer, status) through bounce grants.
//!
//! # Bring-up
//!
//! [`BlkDevice::start`] probes the slot, **resets the device and waits for the status register
//! to read back 0** (only then has the device stopped using memory a previous instance gave
//! it), tells the DMA server so ([`DmaPort::reset_complete`]: its quarantined grants may be
//! reused), negotiates features (`VERSION_1` and `ACCESS_PLATFORM` always, `RO`, `BLK_SIZE`,
//! `SIZE_MAX`, `SEG_MAX`, `FLUSH` when offered), reads the configuration, and sets up queue 0
//! with its rings in one coherent allocation from the DMA server.
//!
//! # A part's buffers and copies
//!
//! | buffer | grant direction | before the device runs             | after completion            |
//! |--------|-----------------|------------------------------------|-----------------------------|
//! | header | to device       | 16 bytes copied in                 | —                           |
//! | data (write) | to device | client bytes copied in (from the staging copy) | —               |
//! | data (read)  | from device | zeroed                           | copied out to staging, then to the client region |
//! | status | from device     | set to 0xff (not a valid status)   | copied out, then checked    |
//!
//! Grants are kept in pools and reused (header and status grants, and data grants in a few size
//! classes), so the steady state costs no DMA-server call per I/O.
//!
//! # Completions
//!
//! Per request state lives in private memory, indexed by the queue's token slot. A completion is
//! acted on only after `moat-virtio` has checked the used entry (id outstanding, length within
//! the chain's writable capacity). The status byte is copied out once, then checked: `OK`,
//! `IOERR`, `UNSUPP`, anything else is an I/O error; a read whose reported length does not cover
//! its data and status is an I/O error too. A used ring that cannot be trusted any more (the
//! index jumps, the ring is unreadable) or a device that asks for a reset ends the device: it is
//! reset (stopping its DMA), every request in flight fails, and later ones are refused.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use moat_blk_api::BlkError;
use moat_dma_api::{Bounce, Coherent, FromDevice, Grant, InFlight, ToDevice};
use moat_virtio::memory::DeviceBuffer;
use moat_virtio::{
    AddError, Mmio, Segment, SetupError, SplitQueue, Token, Transport, TransportError, UsedError,
};

use crate::dma::{DmaFailure, DmaPort};
use crate::spec::{self, DeviceConfig, features, status};

/// Status polls after a reset before giving up.
pub const RESET_POLLS: u32 = 100_000;

/// Descriptors one part may use (header, data, status).
const DESCRIPTORS_PER_PART: usize = 3;

/// Smallest data grant size class.
const SMALLEST_CLASS: usize = 4096;

/// How the driver sizes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The queue size to ask for (the device's maximum may be smaller).
    pub queue_size: u16,
    /// Parts in flight at the device at once.
    pub max_in_flight: usize,
    /// Largest data buffer of one part (also bounded by the DMA server's maximum mapping
    /// size and the device's `size_max`).
    pub max_part: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue_size: 256,
            max_in_flight: 64,
            max_part: 64 * 1024,
        }
    }
}

/// Why the device could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// The transport refused (no device, legacy, reset timeout, features refused, …).
    Transport(TransportError),
    /// The slot holds another device type.
    NotBlock(u32),
    /// The DMA server refused ring memory or the reset declaration.
    Dma(DmaFailure),
    /// The ring memory was unusable.
    Queue(SetupError),
    /// The DMA server's mapping size is below one sector.
    MappingTooSmall(usize),
}

impl From<TransportError> for StartError {
    fn from(error: TransportError) -> Self {
        StartError::Transport(error)
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Transport(error) => write!(f, "transport: {error}"),
            StartError::NotBlock(id) => write!(f, "device type {id} is not a block device"),
            StartError::Dma(error) => write!(f, "dma: {error:?}"),
            StartError::Queue(error) => write!(f, "queue: {error:?}"),
            StartError::MappingTooSmall(size) => write!(f, "maximum mapping size {size} too small"),
        }
    }
}

/// What one part does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// Read `len` bytes (a multiple of 512) from the part's sector.
    Read {
        /// Bytes.
        len: usize,
    },
    /// Write the data handed to [`BlkDevice::submit`] at the part's sector.
    Write,
    /// Flush the write cache.
    Flush,
}

/// One virtio-blk request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// The caller's name for it, handed back on completion.
    pub cookie: u64,
    /// What to do.
    pub kind: PartKind,
    /// First sector.
    pub sector: u64,
}

/// Why [`BlkDevice::submit`] did not submit a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// No room now (queue, in-flight limit or bounce memory): try again after completions.
    Busy,
    /// The part fails: give this error to its request.
    Failed(BlkError),
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Parts submitted.
    pub submitted: u64,
    /// Parts completed (successfully or not).
    pub completed: u64,
    /// Parts the device failed (status not OK, short read).
    pub device_errors: u64,
    /// Used entries that named nothing outstanding, or lied about lengths.
    pub hostile_entries: u64,
    /// Bytes read from the device.
    pub bytes_read: u64,
    /// Bytes written to the device.
    pub bytes_written: u64,
    /// Grants mapped from the DMA server.
    pub grants_mapped: u64,
    /// Interrupts handled.
    pub interrupts: u64,
}

enum Data {
    None,
    Out(InFlight<ToDevice>),
    In(InFlight<FromDevice>),
}

struct Slot {
    token: Token,
    cookie: u64,
    header: InFlight<ToDevice>,
    data: Data,
    status: InFlight<FromDevice>,
}

/// Pools of free grants of one direction: per size class.
struct Pool<D: moat_dma_api::DirectionMarker> {
    classes: Vec<Vec<Grant<D>>>,
}

impl<D: moat_dma_api::DirectionMarker> Pool<D> {
    fn new(classes: usize) -> Self {
        Pool {
            classes: (0..classes).map(|_| Vec::new()).collect(),
        }
    }

    fn drain(&mut self, mut each: impl FnMut(Grant<D>)) {
        for class in &mut self.classes {
            for grant in class.drain(..) {
                each(grant);
            }
        }
    }

    fn cached(&self) -> usize {
        self.classes.iter().map(Vec::len).sum()
    }
}

/// A started virtio-blk device. See the [module docs](self).
pub struct BlkDevice<T: Mmio, D: DmaPort> {
    transport: Transport<T>,
    queue: SplitQueue<Coherent>,
    dma: D,
    features: u64,
    config: DeviceConfig,
    part_bytes: usize,
    class_sizes: Vec<usize>,
    max_in_flight: usize,
    slots: Vec<Option<Slot>>,
    headers: Vec<Grant<ToDevice>>,
    statuses: Vec<Grant<FromDevice>>,
    outs: Pool<ToDevice>,
    ins: Pool<FromDevice>,
    staging: Vec<u8>,
    failed: bool,
    stats: DeviceStats,
}

impl<T: Mmio, D: DmaPort> fmt::Debug for BlkDevice<T, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlkDevice")
            .field("features", &format_args!("{:#x}", self.features))
            .field("config", &self.config)
            .field("part_bytes", &self.part_bytes)
            .field("in_flight", &self.queue.in_flight())
            .field("failed", &self.failed)
            .finish()
    }
}

/// Data grant size classes: 4 KiB, ×4 each, the last one `part_bytes`.
fn class_sizes(part_bytes: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut size = SMALLEST_CLASS.min(part_bytes);
    while size < part_bytes {
        sizes.push(size);
        size = size.saturating_mul(4);
    }
    sizes.push(part_bytes);
    sizes
}

impl<T: Mmio, D: DmaPort> BlkDevice<T, D> {
    /// Brings the device in `mmio` up (see the [module docs](self)); `wait` runs between status
    /// polls during reset (e.g. a yield).
    pub fn start(
        mmio: T,
        dma: D,
        limits: Limits,
        mut wait: impl FnMut(),
    ) -> Result<Self, StartError> {
        let mut transport = Transport::probe(mmio)?;
        if transport.device_id() != spec::DEVICE_ID {
            return Err(StartError::NotBlock(transport.device_id()));
        }
        // First of all: stop whatever a previous instance left running, and wait until the
        // device says it has stopped; only then may the DMA server reuse that memory.
        transport.reset_with(RESET_POLLS, &mut wait)?;
        dma.reset_complete().map_err(StartError::Dma)?;

        let negotiated = transport.initialize(features::WANTED, RESET_POLLS)?;
        let config = DeviceConfig::read(&transport, negotiated)?;

        let max = transport.queue_max_size(0)?;
        let size = SplitQueue::<Coherent>::fit_size(max, limits.queue_size.max(1));
        if usize::from(size) < DESCRIPTORS_PER_PART {
            // A part needs three descriptors: a smaller queue could never take one.
            transport.fail();
            return Err(StartError::Queue(SetupError::BadSize(size)));
        }
        let bytes = SplitQueue::<Coherent>::region_size(size)
            .ok_or(StartError::Queue(SetupError::BadSize(size)))?;
        let region = dma
            .alloc_coherent(bytes, SplitQueue::<Coherent>::REGION_ALIGN)
            .map_err(StartError::Dma)?;
        let queue = SplitQueue::new(0, size, region, false).map_err(StartError::Queue)?;
        transport.attach_queue(&queue)?;

        let mut part_bytes = limits.max_part.min(dma.max_mapping_size());
        if let Some(size_max) = config.size_max
            && size_max >= 512
        {
            part_bytes = part_bytes.min(size_max as usize);
        }
        let part_bytes = part_bytes - part_bytes % 512;
        if part_bytes == 0 {
            transport.fail();
            return Err(StartError::MappingTooSmall(dma.max_mapping_size()));
        }
        transport.driver_ok();

        let max_in_flight = limits
            .max_in_flight
            .clamp(1, usize::from(size) / DESCRIPTORS_PER_PART);
        let class_sizes = class_sizes(part_bytes);
        let classes = class_sizes.len();
        Ok(BlkDevice {
            transport,
            slots: (0..size).map(|_| None).collect(),
            queue,
            dma,
            features: negotiated,
            config,
            part_bytes,
            class_sizes,
            max_in_flight,
            headers: Vec::new(),
            statuses: Vec::new(),
            outs: Pool::new(classes),
            ins: Pool::new(classes),
            staging: vec![0; part_bytes],
            failed: false,
            stats: DeviceStats::default(),
        })
    }

    /// The negotiated features.
    pub const fn features(&self) -> u64 {
        self.features
    }

    /// The configuration read at start.
    pub const fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Capacity in 512-byte sectors.
    pub const fn capacity(&self) -> u64 {
        self.config.capacity
    }

    /// Whether the device is read-only.
    pub const fn read_only(&self) -> bool {
        self.features & features::RO != 0
    }

    /// Whether the device accepts flushes (it has a write cache).
    pub const fn has_flush(&self) -> bool {
        self.features & features::FLUSH != 0
    }

    /// The largest data buffer of one part.
    pub const fn part_bytes(&self) -> usize {
        self.part_bytes
    }

    /// Parts the device may have in flight.
    pub const fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Parts in flight now.
    pub const fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }

    /// Whether the device has failed (everything is refused).
    pub const fn failed(&self) -> bool {
        self.failed
    }

    /// Counters.
    pub const fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// The transport (e.g. for a fake device's handle in tests).
    pub const fn transport(&self) -> &Transport<T> {
        &self.transport
    }

    /// The DMA port.
    pub const fn dma(&self) -> &D {
        &self.dma
    }

    /// Grants cached in the pools (not in flight).
    pub fn cached_grants(&self) -> usize {
        self.headers.len() + self.statuses.len() + self.outs.cached() + self.ins.cached()
    }

    fn class_of(&self, len: usize) -> usize {
        self.class_sizes
            .iter()
            .position(|&size| size >= len)
            .unwrap_or(self.class_sizes.len() - 1)
    }

    /// Maps a grant, trying once more after returning every cached data grant when the window
    /// is full.
    fn map<G: moat_dma_api::DirectionMarker>(
        &mut self,
        len: usize,
    ) -> Result<Grant<G>, DmaFailure> {
        match self.dma.map::<G>(len) {
            Ok(grant) => {
                self.stats.grants_mapped += 1;
                Ok(grant)
            }
            Err(DmaFailure::Exhausted) => {
                let dma = &self.dma;
                self.outs.drain(|grant| dma.unmap(grant));
                self.ins.drain(|grant| dma.unmap(grant));
                let grant = self.dma.map::<G>(len)?;
                self.stats.grants_mapped += 1;
                Ok(grant)
            }
            Err(error) => Err(error),
        }
    }

    fn take_header(&mut self) -> Result<Grant<ToDevice>, DmaFailure> {
        match self.headers.pop() {
            Some(grant) => Ok(grant),
            None => self.map(spec::HEADER_SIZE),
        }
    }

    fn take_status(&mut self) -> Result<Grant<FromDevice>, DmaFailure> {
        match self.statuses.pop() {
            Some(grant) => Ok(grant),
            None => self.map(1),
        }
    }

    fn take_out(&mut self, len: usize) -> Result<Grant<ToDevice>, DmaFailure> {
        let class = self.class_of(len);
        match self.outs.classes[class].pop() {
            Some(grant) => Ok(grant),
            None => self.map(self.class_sizes[class]),
        }
    }

    fn take_in(&mut self, len: usize) -> Result<Grant<FromDevice>, DmaFailure> {
        let class = self.class_of(len);
        match self.ins.classes[class].pop() {
            Some(grant) => Ok(grant),
            None => self.map(self.class_sizes[class]),
        }
    }

    fn put_out(&mut self, grant: Grant<ToDevice>) {
        let class = self.class_of(grant.len());
        if self.class_sizes[class] == grant.len() {
            self.outs.classes[class].push(grant);
        } else {
            self.dma.unmap(grant);
        }
    }

    fn put_in(&mut self, grant: Grant<FromDevice>) {
        let class = self.class_of(grant.len());
        if self.class_sizes[class] == grant.len() {
            self.ins.classes[class].push(grant);
        } else {
            self.dma.unmap(grant);
        }
    }

    fn busy_or(&self, failure: DmaFailure) -> SubmitError {
        match failure {
            // Grants come back as requests complete.
            DmaFailure::Exhausted if self.queue.in_flight() > 0 => SubmitError::Busy,
            _ => SubmitError::Failed(BlkError::NoMemory),
        }
    }

    /// Makes one part available to the device. `data` is the bytes to write for
    /// [`PartKind::Write`] (ignored otherwise). Call [`Self::kick`] after a batch.
    pub fn submit(&mut self, part: Part, data: &[u8]) -> Result<(), SubmitError> {
        if self.failed {
            return Err(SubmitError::Failed(BlkError::DeviceFailed));
        }
        let data_len = match part.kind {
            PartKind::Read { len } => len,
            PartKind::Write => data.len(),
            PartKind::Flush => 0,
        };
        if data_len > self.part_bytes
            || !data_len.is_multiple_of(512)
            || (data_len == 0 && part.kind != PartKind::Flush)
        {
            return Err(SubmitError::Failed(BlkError::BadLength));
        }
        let sectors = (data_len / 512) as u64;
        if part
            .sector
            .checked_add(sectors)
            .is_none_or(|end| end > self.config.capacity)
        {
            return Err(SubmitError::Failed(BlkError::OutOfRange));
        }
        if part.kind == PartKind::Write && self.read_only() {
            return Err(SubmitError::Failed(BlkError::ReadOnly));
        }
        let descriptors = if data_len == 0 { 2 } else { 3 };
        if self.queue.in_flight() >= self.max_in_flight
            || self.queue.free_descriptors() < descriptors
        {
            return Err(SubmitError::Busy);
        }

        // Take every grant first, so a failure leaves nothing half-done.
        let header = self.take_header().map_err(|e| self.busy_or(e))?;
        let status = match self.take_status() {
            Ok(grant) => grant,
            Err(error) => {
                self.headers.push(header);
                return Err(self.busy_or(error));
            }
        };
        let data_grant = match part.kind {
            PartKind::Read { len } => self.take_in(len).map(|grant| (None, Some(grant))),
            PartKind::Write => self.take_out(data_len).map(|grant| (Some(grant), None)),
            PartKind::Flush => Ok((None, None)),
        };
        let (out_grant, in_grant) = match data_grant {
            Ok(grants) => grants,
            Err(error) => {
                self.headers.push(header);
                self.statuses.push(status);
                return Err(self.busy_or(error));
            }
        };

        let kind = match part.kind {
            PartKind::Read { .. } => spec::request::IN,
            PartKind::Write => spec::request::OUT,
            PartKind::Flush => spec::request::FLUSH,
        };
        // Every grant was sized to fit, so Bounce cannot refuse; if it did, the part fails and
        // the grants go back to the DMA server.
        let (header, status, data) = match self.bounce(
            header,
            status,
            out_grant,
            in_grant,
            kind,
            part.sector,
            data,
            data_len,
        ) {
            Some(bounced) => bounced,
            None => return Err(SubmitError::Failed(BlkError::IoError)),
        };

        let mut segments = [Segment::readable(0, 1); 3];
        let mut count = 0;
        let mut push = |segment: Option<Segment>| {
            if let Some(segment) = segment {
                segments[count] = segment;
                count += 1;
            }
        };
        push(header.segment());
        match &data {
            Data::Out(in_flight) => push(in_flight.segment()),
            Data::In(in_flight) => push(in_flight.segment()),
            Data::None => {}
        }
        push(status.segment());

        match self.queue.add(&segments[..count]) {
            Ok(token) => {
                self.stats.submitted += 1;
                let slot = Slot {
                    token,
                    cookie: part.cookie,
                    header,
                    data,
                    status,
                };
                match self.slots.get_mut(token.slot()) {
                    Some(entry) => *entry = Some(slot),
                    // Slots are as many as the queue size and tokens index below it.
                    None => self.recycle(slot.header, slot.data, slot.status),
                }
                Ok(())
            }
            Err(error) => {
                self.recycle(header, data, status);
                Err(match error {
                    AddError::Full { .. } => SubmitError::Busy,
                    _ => SubmitError::Failed(BlkError::IoError),
                })
            }
        }
    }

    /// Starts the transfers of one part: the header copied in, the data copied in or zeroed,
    /// the status set to [`status::UNWRITTEN`]. `None` (every grant unmapped) if `Bounce`
    /// refused.
    #[allow(clippy::too_many_arguments)]
    fn bounce(
        &mut self,
        header: Grant<ToDevice>,
        status: Grant<FromDevice>,
        out_grant: Option<Grant<ToDevice>>,
        in_grant: Option<Grant<FromDevice>>,
        kind: u32,
        sector: u64,
        data: &[u8],
        data_len: usize,
    ) -> Option<(InFlight<ToDevice>, InFlight<FromDevice>, Data)> {
        let header = Bounce::to_device(header, &spec::header(kind, sector));
        let status = Bounce::from_device_over(status, &[status::UNWRITTEN]);
        let data = match (out_grant, in_grant) {
            (Some(grant), _) => Bounce::to_device(grant, data)
                .map(Data::Out)
                .map_err(|refused| self.dma.unmap(refused.value)),
            (_, Some(grant)) => Bounce::from_device(grant, data_len)
                .map(Data::In)
                .map_err(|refused| self.dma.unmap(refused.value)),
            _ => Ok(Data::None),
        };
        match (header, status, data) {
            (Ok(header), Ok(status), Ok(data)) => Some((header, status, data)),
            (header, status, data) => {
                match header {
                    Ok(in_flight) => self.dma.unmap(in_flight.complete()),
                    Err(refused) => self.dma.unmap(refused.value),
                }
                match status {
                    Ok(in_flight) => {
                        if let Ok(grant) = in_flight.complete(&mut []) {
                            self.dma.unmap(grant);
                        }
                    }
                    Err(refused) => self.dma.unmap(refused.value),
                }
                match data {
                    Ok(Data::Out(in_flight)) => self.dma.unmap(in_flight.complete()),
                    Ok(Data::In(in_flight)) => {
                        if let Ok(grant) = in_flight.complete(&mut []) {
                            self.dma.unmap(grant);
                        }
                    }
                    _ => {}
                }
                None
            }
        }
    }

    fn return_status(&mut self, status: InFlight<FromDevice>) {
        if let Ok(grant) = status.complete(&mut []) {
            self.statuses.push(grant);
        }
    }

    /// Gives a finished (or never submitted) part's grants back to the pools.
    fn recycle(&mut self, header: InFlight<ToDevice>, data: Data, status: InFlight<FromDevice>) {
        self.headers.push(header.complete());
        self.return_status(status);
        match data {
            Data::Out(in_flight) => {
                let grant = in_flight.complete();
                self.put_out(grant);
            }
            Data::In(in_flight) => {
                if let Ok(grant) = in_flight.complete(&mut []) {
                    self.put_in(grant);
                }
            }
            Data::None => {}
        }
    }

    /// Tells the device about the parts submitted since the last call, if it wants to know.
    pub fn kick(&mut self) {
        if self.queue.should_notify() {
            self.transport.notify(self.queue.index());
        }
    }

    /// Handles the device's interrupt: acknowledges it **first** (edge-triggered), then drains
    /// the used ring, calling `done` once per finished part with its cookie and result (for a
    /// read, the data, already copied out of the bounce buffer into private memory).
    pub fn interrupt(&mut self, mut done: impl FnMut(u64, Result<&[u8], BlkError>)) {
        self.stats.interrupts += 1;
        let _causes = self.transport.take_interrupt();
        if self.failed {
            return;
        }
        if self.transport.needs_reset() {
            self.fail(&mut done);
            return;
        }
        // At most one queue's worth per interrupt (a device that keeps publishing cannot keep
        // the driver here); anything left raises the next interrupt.
        for _ in 0..self.queue.size() {
            match self.queue.pop_used() {
                None => break,
                Some(Ok(completion)) => {
                    self.finish(completion.token, completion.written, &mut done)
                }
                Some(Err(error)) => {
                    self.stats.hostile_entries += 1;
                    match error {
                        UsedError::LengthTooLarge { token, .. } => {
                            self.finish_failed(token, BlkError::IoError, &mut done)
                        }
                        UsedError::IdOutOfRange { .. } | UsedError::NotOutstanding { .. } => {}
                        UsedError::IndexJump { .. } | UsedError::Memory => {
                            self.fail(&mut done);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn take_slot(&mut self, token: Token) -> Option<Slot> {
        let entry = self.slots.get_mut(token.slot())?;
        match entry {
            Some(slot) if slot.token == token => entry.take(),
            _ => None,
        }
    }

    fn finish_failed(
        &mut self,
        token: Token,
        error: BlkError,
        done: &mut impl FnMut(u64, Result<&[u8], BlkError>),
    ) {
        if let Some(slot) = self.take_slot(token) {
            let cookie = slot.cookie;
            self.recycle(slot.header, slot.data, slot.status);
            self.stats.completed += 1;
            self.stats.device_errors += 1;
            done(cookie, Err(error));
        }
    }

    fn finish(
        &mut self,
        token: Token,
        written: u32,
        done: &mut impl FnMut(u64, Result<&[u8], BlkError>),
    ) {
        let Some(slot) = self.take_slot(token) else {
            self.stats.hostile_entries += 1;
            return;
        };
        self.stats.completed += 1;
        let cookie = slot.cookie;
        // Copy the status out once, then look at the copy.
        let mut byte = [status::UNWRITTEN];
        match slot.status.complete(&mut byte) {
            Ok(grant) => self.statuses.push(grant),
            Err(refused) => drop(refused),
        }
        self.headers.push(slot.header.complete());
        let mut result = match byte[0] {
            status::OK => Ok(0),
            status::UNSUPP => Err(BlkError::Unsupported),
            _ => Err(BlkError::IoError),
        };
        match slot.data {
            Data::Out(in_flight) => {
                let len = in_flight.len();
                let grant = in_flight.complete();
                self.put_out(grant);
                if result.is_ok() {
                    self.stats.bytes_written += len as u64;
                }
            }
            Data::In(in_flight) => {
                let len = in_flight.len();
                // The device must say it wrote the data and the status byte.
                if result.is_ok() && (written as usize) < len + 1 {
                    result = Err(BlkError::IoError);
                }
                let staging = self.staging.get_mut(..len).unwrap_or(&mut []);
                let copy = if result.is_ok() { staging } else { &mut [] };
                let copied = copy.len();
                match in_flight.complete(copy) {
                    Ok(grant) => self.put_in(grant),
                    Err(refused) => {
                        drop(refused);
                        result = Err(BlkError::IoError);
                    }
                }
                if result.is_ok() {
                    if copied == len {
                        self.stats.bytes_read += len as u64;
                        result = Ok(len);
                    } else {
                        result = Err(BlkError::IoError);
                    }
                }
            }
            Data::None => {}
        }
        if result.is_err() {
            self.stats.device_errors += 1;
        }
        match result {
            Ok(len) => done(cookie, Ok(self.staging.get(..len).unwrap_or(&[]))),
            Err(error) => done(cookie, Err(error)),
        }
    }

    /// The device cannot be trusted any more: reset it (its DMA stops once the status reads
    /// 0), fail everything in flight, refuse everything later.
    fn fail(&mut self, done: &mut impl FnMut(u64, Result<&[u8], BlkError>)) {
        self.failed = true;
        let stopped = self.transport.reset(RESET_POLLS).is_ok();
        let slots: Vec<Slot> = self.slots.iter_mut().filter_map(Option::take).collect();
        for slot in slots {
            let cookie = slot.cookie;
            if stopped {
                self.recycle(slot.header, slot.data, slot.status);
            } else {
                // The device may still write these buffers: never reuse them (they stay
                // allocated until the DMA server quarantines them when this instance dies).
                let _ = slot;
            }
            self.stats.completed += 1;
            done(cookie, Err(BlkError::DeviceFailed));
        }
    }
}
