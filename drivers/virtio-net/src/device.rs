//! [`NetDevice`]: the two virtqueues, their bounce buffers, and the receive and transmit paths.
//!
//! Private state (never in shared memory): which grant sits behind each outstanding descriptor
//! chain (indexed by the queue's token slot), spare transmit grants, the received frames waiting
//! for the client, the MAC, MTU, link state and the counters.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use moat_dma_api::{Bounce, FromDevice, Grant, InFlight, ToDevice};
use moat_net_api::{Counters, LinkInfo, MAX_FRAME, MIN_FRAME, MacAddress};
use moat_virtio::{
    AllocateError, DeviceBuffer, Mmio, SplitQueue, Transport, TransportError, UsedError,
};

use crate::dma::DmaMemory;
use crate::frame::{NET_HEADER, NetHeader, RxDrop, check_received};
use crate::{DEVICE_ID, config, features};

/// Receive queue index.
pub const RX_QUEUE: u16 = 0;
/// Transmit queue index.
pub const TX_QUEUE: u16 = 1;
/// Receive and transmit queue size the driver asks for (smaller if the device allows less).
pub const QUEUE_SIZE: u16 = 32;
/// Received frames the driver holds for its client before dropping new ones.
pub const MAX_PENDING: usize = 256;
/// Status reads allowed for a reset to complete.
pub const RESET_POLLS: u32 = 1_000;
/// Smallest MTU the driver accepts from a device (IPv4's minimum).
pub const MIN_MTU: u16 = 68;
/// Largest MTU the driver uses (it does not negotiate jumbo frames).
pub const MAX_MTU: u16 = (MAX_FRAME - MIN_FRAME) as u16;

/// Why the device could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError<E> {
    /// Not a network device.
    NotNet(u32),
    /// The transport refused (reset timeout, features, queue setup).
    Transport(TransportError),
    /// Ring memory could not be allocated or was unusable.
    Queue(AllocateError<E>),
    /// No receive buffer could be granted.
    Dma(E),
}

impl<E: fmt::Debug> fmt::Display for InitError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::NotNet(id) => write!(f, "device type {id} is not a network device"),
            InitError::Transport(error) => write!(f, "transport: {error}"),
            InitError::Queue(error) => write!(f, "queue: {error:?}"),
            InitError::Dma(error) => write!(f, "dma: {error:?}"),
        }
    }
}

impl<E> From<TransportError> for InitError<E> {
    fn from(error: TransportError) -> Self {
        InitError::Transport(error)
    }
}

/// Why a frame was not sent (counted in [`Counters::tx_drops`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Shorter than an Ethernet header or longer than the MTU allows.
    BadLength,
    /// No free descriptor or bounce buffer now.
    NoBuffer,
    /// The caller could not provide the frame bytes (e.g. a bad region offset).
    Source,
    /// The device has faulted.
    Faulted,
}

/// A virtio-net device with its queues. See the [module docs](self).
pub struct NetDevice<T: Mmio, D: DmaMemory> {
    transport: Transport<T>,
    dma: D,
    rx: SplitQueue<D::Region>,
    tx: SplitQueue<D::Region>,
    /// Per receive token slot: the posted buffer.
    rx_posted: Vec<Option<InFlight<FromDevice>>>,
    /// Receive grants not posted (a post failed); retried on the next poll.
    rx_spare: Vec<Grant<FromDevice>>,
    /// Per transmit token slot: the buffer the device is reading.
    tx_posted: Vec<Option<InFlight<ToDevice>>>,
    /// Transmit grants free for the next frame.
    tx_spare: Vec<Grant<ToDevice>>,
    /// Transmit grants obtained so far (at most the queue size).
    tx_granted: usize,
    /// A private buffer where a frame is put together with its net header before the bounce.
    staging: Vec<u8>,
    /// Checked received buffers (net header included) waiting for the client.
    received: VecDeque<Vec<u8>>,
    /// Bytes of one buffer: net header plus the largest frame.
    buffer_len: usize,
    mac: MacAddress,
    mtu: u16,
    link_up: bool,
    has_status: bool,
    counters: Counters,
    faulted: bool,
}

impl<T: Mmio, D: DmaMemory> fmt::Debug for NetDevice<T, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetDevice")
            .field("mac", &self.mac)
            .field("mtu", &self.mtu)
            .field("link_up", &self.link_up)
            .field("faulted", &self.faulted)
            .finish()
    }
}

impl<T: Mmio, D: DmaMemory> NetDevice<T, D> {
    /// Brings the device up: reset, feature negotiation (`MAC`, `MTU`, `STATUS` when offered),
    /// queues, `DRIVER_OK`, and every receive buffer posted. `fallback_mac` is used when the
    /// device offers no MAC address.
    pub fn new(
        mut transport: Transport<T>,
        dma: D,
        fallback_mac: MacAddress,
    ) -> Result<Self, InitError<D::Error>> {
        if transport.device_id() != DEVICE_ID {
            return Err(InitError::NotNet(transport.device_id()));
        }
        let accepted = transport.initialize(features::WANTED, RESET_POLLS)?;
        let (mac, status, mtu) = transport.read_config(|config| {
            let mut mac = [0; 6];
            for (index, byte) in mac.iter_mut().enumerate() {
                *byte = config.read_u8(config::MAC + index)?;
            }
            Ok((
                MacAddress(mac),
                config.read_u16(config::STATUS)?,
                config.read_u16(config::MTU)?,
            ))
        })?;
        // A device MAC that is a group address cannot be a station's: use our own.
        let mac = if accepted & features::MAC != 0 && !mac.is_multicast() {
            mac
        } else {
            fallback_mac
        };
        let mtu = if accepted & features::MTU != 0 {
            mtu.clamp(MIN_MTU, MAX_MTU)
        } else {
            MAX_MTU
        };
        let has_status = accepted & features::STATUS != 0;
        let link_up = !has_status || status & config::STATUS_LINK_UP != 0;

        let rx_size =
            SplitQueue::<D::Region>::fit_size(transport.queue_max_size(RX_QUEUE)?, QUEUE_SIZE);
        let tx_size =
            SplitQueue::<D::Region>::fit_size(transport.queue_max_size(TX_QUEUE)?, QUEUE_SIZE);
        let rx = SplitQueue::allocate(&dma, RX_QUEUE, rx_size, false).map_err(InitError::Queue)?;
        let tx = SplitQueue::allocate(&dma, TX_QUEUE, tx_size, false).map_err(InitError::Queue)?;
        transport.attach_queue(&rx)?;
        transport.attach_queue(&tx)?;

        let buffer_len = NET_HEADER + MIN_FRAME + usize::from(mtu);
        let mut device = NetDevice {
            transport,
            dma,
            rx_posted: (0..rx.size()).map(|_| None).collect(),
            tx_posted: (0..tx.size()).map(|_| None).collect(),
            rx,
            tx,
            rx_spare: Vec::new(),
            tx_spare: Vec::new(),
            tx_granted: 0,
            staging: vec![0; buffer_len],
            received: VecDeque::new(),
            buffer_len,
            mac,
            mtu,
            link_up,
            has_status,
            counters: Counters::default(),
            faulted: false,
        };
        for _ in 0..device.rx.size() {
            let grant = device
                .dma
                .map_from_device(buffer_len)
                .map_err(InitError::Dma)?;
            device.post_rx(grant);
        }
        device.transport.driver_ok();
        if device.rx.should_notify() {
            device.transport.notify(RX_QUEUE);
        }
        Ok(device)
    }

    /// The link as the driver sees it.
    pub fn link(&self) -> LinkInfo {
        LinkInfo {
            mac: self.mac,
            mtu: self.mtu,
            link_up: self.link_up && !self.faulted,
        }
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether the device broke a ring rule it cannot recover from without a reset: the driver
    /// no longer touches it.
    pub fn faulted(&self) -> bool {
        self.faulted
    }

    /// The transport (e.g. a fake device's test handle).
    pub fn transport(&self) -> &Transport<T> {
        &self.transport
    }

    /// Gives the DMA memory back, dropping the device (reset it first if it is live).
    pub fn into_dma(self) -> D {
        self.dma
    }

    /// The DMA memory (e.g. to tell the DMA server the device was reset).
    pub fn dma(&self) -> &D {
        &self.dma
    }

    /// The largest frame (Ethernet header included) the driver sends or passes on.
    pub fn max_frame(&self) -> usize {
        MIN_FRAME + usize::from(self.mtu)
    }

    /// Received frames waiting for the client.
    pub fn pending(&self) -> usize {
        self.received.len()
    }

    /// Stops the device (reset, waiting for status 0) and marks it faulted. After this the
    /// device no longer touches the rings or buffers.
    pub fn stop(&mut self) -> Result<(), TransportError> {
        self.faulted = true;
        self.transport.reset(RESET_POLLS)
    }

    fn fault(&mut self) {
        self.counters.ring_faults += 1;
        self.faulted = true;
        // Stop the device from using the rings; if it will not stop, it is stopped by the
        // task's exit and the next instance's reset.
        let _ = self.transport.reset(RESET_POLLS);
    }

    /// Handles an interrupt: acknowledges it first (edge-triggered), re-reads the link status on
    /// a configuration change, then reaps transmit completions and receives frames. Also safe to
    /// call without an interrupt (polling).
    pub fn handle_interrupt(&mut self) {
        if self.faulted {
            return;
        }
        let causes = self.transport.take_interrupt();
        if causes.config_changed() {
            self.refresh_link();
        }
        self.poll();
    }

    /// Reaps transmit completions and receives frames, without touching the interrupt status.
    pub fn poll(&mut self) {
        self.reap_tx();
        self.receive();
    }

    fn refresh_link(&mut self) {
        if !self.has_status {
            return;
        }
        if let Ok(status) = self.transport.config_u16(config::STATUS) {
            self.link_up = status & config::STATUS_LINK_UP != 0;
        }
    }

    /// Posts one receive grant (zeroed by `Bounce`, so nothing stale or host-written is mistaken
    /// for a frame).
    fn post_rx(&mut self, grant: Grant<FromDevice>) {
        let in_flight = match Bounce::from_device(grant, self.buffer_len) {
            Ok(in_flight) => in_flight,
            Err(refused) => {
                // A grant shorter than a buffer: keep it out of use.
                self.rx_spare.push(refused.value);
                return;
            }
        };
        let Some(segment) = in_flight.segment() else {
            return self.rx_park(in_flight);
        };
        match self.rx.add(&[segment]) {
            Ok(token) => match self.rx_posted.get_mut(token.slot()) {
                Some(entry) => *entry = Some(in_flight),
                None => self.rx_park(in_flight),
            },
            Err(_) => self.rx_park(in_flight),
        }
    }

    /// Takes back a buffer that was never made available to the device.
    fn rx_park(&mut self, in_flight: InFlight<FromDevice>) {
        if let Ok(grant) = in_flight.complete(&mut []) {
            self.rx_spare.push(grant);
        }
    }

    /// Drains the receive used ring (at most one ring's worth per call), copying each frame out
    /// and checking it, then re-posts the buffers and notifies the device once.
    fn receive(&mut self) {
        if self.faulted {
            return;
        }
        for _ in 0..self.rx.size() {
            let Some(result) = self.rx.pop_used() else {
                break;
            };
            match result {
                Ok(completion) => {
                    let taken = self
                        .rx_posted
                        .get_mut(completion.token.slot())
                        .and_then(Option::take);
                    let Some(in_flight) = taken else {
                        self.counters.bad_used_entries += 1;
                        continue;
                    };
                    self.accept(in_flight, completion.written);
                }
                Err(UsedError::LengthTooLarge { token, .. }) => {
                    self.counters.rx_drops.too_long += 1;
                    let taken = self.rx_posted.get_mut(token.slot()).and_then(Option::take);
                    if let Some(in_flight) = taken
                        && let Ok(grant) = in_flight.complete(&mut [])
                    {
                        self.post_rx(grant);
                    }
                }
                Err(UsedError::IdOutOfRange { .. } | UsedError::NotOutstanding { .. }) => {
                    self.counters.bad_used_entries += 1;
                }
                Err(UsedError::IndexJump { .. } | UsedError::Memory) => {
                    self.fault();
                    return;
                }
            }
        }
        for grant in core::mem::take(&mut self.rx_spare) {
            self.post_rx(grant);
        }
        if self.rx.should_notify() {
            self.transport.notify(RX_QUEUE);
        }
    }

    /// A completed receive buffer of which the device says it wrote `written` bytes (at most the
    /// buffer: `moat-virtio` checked): copy out, check, queue, re-post.
    fn accept(&mut self, in_flight: InFlight<FromDevice>, written: u32) {
        let len = (written as usize).min(in_flight.len());
        let mut bytes = vec![0; len];
        let grant = match in_flight.complete(&mut bytes) {
            Ok(grant) => grant,
            // Cannot happen (len <= the transfer); the grant is lost, not the driver.
            Err(_) => return,
        };
        self.post_rx(grant);
        match check_received(&bytes, self.mac, self.max_frame()) {
            Ok(()) if self.received.len() >= MAX_PENDING => self.counters.rx_drops.overrun += 1,
            Ok(()) => self.received.push_back(bytes),
            Err(RxDrop::Truncated) => self.counters.rx_drops.truncated += 1,
            Err(RxDrop::TooLong) => self.counters.rx_drops.too_long += 1,
            Err(RxDrop::BadHeader) => self.counters.rx_drops.bad_header += 1,
            Err(RxDrop::NotForUs) => self.counters.rx_drops.not_for_us += 1,
        }
    }

    /// Hands the next received frame (Ethernet header first, net header stripped) to `deliver`,
    /// and counts it. `deliver` returning `false` (e.g. the client's slot was unusable) drops it.
    pub fn take_frame(&mut self, deliver: impl FnOnce(&[u8]) -> bool) -> Option<bool> {
        let bytes = self.received.pop_front()?;
        let frame = bytes.get(NET_HEADER..).unwrap_or(&[]);
        let delivered = deliver(frame);
        if delivered {
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += frame.len() as u64;
        }
        Some(delivered)
    }

    /// Returns transmit buffers the device has finished with to the spare list.
    fn reap_tx(&mut self) {
        if self.faulted {
            return;
        }
        for _ in 0..self.tx.size() {
            let Some(result) = self.tx.pop_used() else {
                break;
            };
            let token = match result {
                Ok(completion) => completion.token,
                // A transmit buffer has no device-writable capacity, so any length is a lie;
                // the buffer is still finished with.
                Err(UsedError::LengthTooLarge { token, .. }) => {
                    self.counters.bad_used_entries += 1;
                    token
                }
                Err(UsedError::IdOutOfRange { .. } | UsedError::NotOutstanding { .. }) => {
                    self.counters.bad_used_entries += 1;
                    continue;
                }
                Err(UsedError::IndexJump { .. } | UsedError::Memory) => {
                    self.fault();
                    return;
                }
            };
            match self.tx_posted.get_mut(token.slot()).and_then(Option::take) {
                Some(in_flight) => self.tx_spare.push(in_flight.complete()),
                None => self.counters.bad_used_entries += 1,
            }
        }
    }

    /// Sends one frame of `len` bytes that `fill` writes into the driver's private staging
    /// buffer (so a frame from the client's region is copied once before the bounce). Call
    /// [`Self::flush`] after a batch.
    pub fn send_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> Result<(), SendError> {
        if self.faulted {
            return Err(SendError::Faulted);
        }
        if !(MIN_FRAME..=self.max_frame()).contains(&len) {
            self.counters.tx_drops.bad_length += 1;
            return Err(SendError::BadLength);
        }
        if self.tx_spare.is_empty() {
            self.reap_tx();
        }
        let grant = match self.tx_spare.pop() {
            Some(grant) => grant,
            None if self.tx_granted < usize::from(self.tx.size()) => {
                match self.dma.map_to_device(self.buffer_len) {
                    Ok(grant) => {
                        self.tx_granted += 1;
                        grant
                    }
                    Err(_) => {
                        self.counters.tx_drops.no_buffer += 1;
                        return Err(SendError::NoBuffer);
                    }
                }
            }
            None => {
                self.counters.tx_drops.no_buffer += 1;
                return Err(SendError::NoBuffer);
            }
        };
        let total = NET_HEADER + len;
        let Some(staging) = self.staging.get_mut(..total) else {
            self.tx_spare.push(grant);
            return Err(SendError::BadLength);
        };
        staging[..NET_HEADER].copy_from_slice(&NetHeader::TX);
        if !fill(&mut staging[NET_HEADER..]) {
            self.tx_spare.push(grant);
            return Err(SendError::Source);
        }
        let in_flight = match Bounce::to_device(grant, staging) {
            Ok(in_flight) => in_flight,
            Err(refused) => {
                self.tx_spare.push(refused.value);
                self.counters.tx_drops.no_buffer += 1;
                return Err(SendError::NoBuffer);
            }
        };
        let added = in_flight
            .segment()
            .ok_or(())
            .and_then(|segment| self.tx.add(&[segment]).map_err(|_| ()));
        match added.map(|token| token.slot()) {
            Ok(slot) if slot < self.tx_posted.len() => {
                self.tx_posted[slot] = Some(in_flight);
                self.counters.tx_frames += 1;
                self.counters.tx_bytes += len as u64;
                Ok(())
            }
            _ => {
                self.tx_spare.push(in_flight.complete());
                self.counters.tx_drops.no_buffer += 1;
                Err(SendError::NoBuffer)
            }
        }
    }

    /// Sends `frame` (Ethernet header first). Call [`Self::flush`] after a batch.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.send_with(frame.len(), |buffer| {
            buffer.copy_from_slice(frame);
            true
        })
    }

    /// Tells the device about frames sent since the last flush, if it wants to hear.
    pub fn flush(&mut self) {
        if !self.faulted && self.tx.should_notify() {
            self.transport.notify(TX_QUEUE);
        }
    }
}
