//! [`Link`]: how frames get between the stack and a driver.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use moat_net_api::{
    ClientError, FrameMemory, LinkInfo, NetClient, RX_SLOTS, SLOT_SIZE, TX_SLOTS, TxFrame,
    rx_slot_offset, tx_slot_offset,
};
use moat_userlib::Syscalls;

/// Why a link operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// The driver refused or could not be reached (`Dead`: it restarted; attach again).
    Driver(ClientError),
    /// The frame region could not be read or written.
    Region,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Driver(error) => write!(f, "driver: {error}"),
            LinkError::Region => f.write_str("frame region"),
        }
    }
}

/// A source and sink of Ethernet frames (Ethernet header first, no FCS).
pub trait Link {
    /// Appends received frames to `into` (at most a few batches per call).
    fn receive(&mut self, into: &mut VecDeque<Vec<u8>>) -> Result<(), LinkError>;
    /// Sends the frames in `frames`, removing those handed over (or dropped: the protocols above
    /// retransmit).
    fn transmit(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), LinkError>;
}

/// Batches [`NetApiLink::receive`] asks for per call, at most (bounds the time one poll takes).
pub const RECEIVE_BATCHES: usize = 4;

/// The virtio-net driver through `moat-net-api`: frames copied through the frame region `R`.
pub struct NetApiLink<S: Syscalls, R: FrameMemory> {
    client: NetClient<S>,
    region: R,
}

impl<S: Syscalls, R: FrameMemory> fmt::Debug for NetApiLink<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetApiLink").finish_non_exhaustive()
    }
}

impl<S: Syscalls, R: FrameMemory> NetApiLink<S, R> {
    /// A link over `client` whose attached frame region this task sees as `region`.
    pub fn new(client: NetClient<S>, region: R) -> Self {
        NetApiLink { client, region }
    }

    /// The driver's view of the link.
    pub fn info(&self) -> Result<LinkInfo, LinkError> {
        self.client.link().map_err(LinkError::Driver)
    }

    /// The client (e.g. for counters).
    pub fn client(&self) -> &NetClient<S> {
        &self.client
    }
}

impl<S: Syscalls, R: FrameMemory> Link for NetApiLink<S, R> {
    fn receive(&mut self, into: &mut VecDeque<Vec<u8>>) -> Result<(), LinkError> {
        for _ in 0..RECEIVE_BATCHES {
            let (lengths, more) = self.client.receive().map_err(LinkError::Driver)?;
            for (slot, &len) in lengths.iter().enumerate().take(RX_SLOTS) {
                // Lengths were checked by the client stub (MIN_FRAME..=MAX_FRAME <= SLOT_SIZE).
                let len = usize::from(len).min(SLOT_SIZE);
                let mut frame = vec![0; len];
                let offset = rx_slot_offset(slot).ok_or(LinkError::Region)?;
                if !self.region.read(offset, &mut frame) {
                    return Err(LinkError::Region);
                }
                into.push_back(frame);
            }
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn transmit(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), LinkError> {
        while !frames.is_empty() {
            let mut batch: heapless::Vec<TxFrame, TX_SLOTS> = heapless::Vec::new();
            for (slot, frame) in frames.iter().take(TX_SLOTS).enumerate() {
                let offset = tx_slot_offset(slot).ok_or(LinkError::Region)?;
                let len = frame.len().min(SLOT_SIZE);
                if !self.region.write(offset, &frame[..len]) {
                    return Err(LinkError::Region);
                }
                // slot < TX_SLOTS <= 255, len <= SLOT_SIZE < 65536.
                let _ = batch.push(TxFrame {
                    slot: slot as u8,
                    len: len as u16,
                });
            }
            let count = batch.len();
            // Frames the driver did not accept are dropped: TCP retransmits, ARP and DHCP retry.
            let result = self.client.transmit(&batch);
            frames.drain(..count);
            result.map_err(LinkError::Driver)?;
        }
        Ok(())
    }
}

/// One end of an in-memory cable (tests): what one end transmits, the other receives.
#[derive(Clone, Debug)]
pub struct MemoryLink {
    inbox: Arc<spin::Mutex<VecDeque<Vec<u8>>>>,
    outbox: Arc<spin::Mutex<VecDeque<Vec<u8>>>>,
    /// Frames sent through this end so far.
    pub sent: Arc<spin::Mutex<u64>>,
}

impl MemoryLink {
    /// The two ends of a new cable.
    pub fn pair() -> (MemoryLink, MemoryLink) {
        let a = Arc::new(spin::Mutex::new(VecDeque::new()));
        let b = Arc::new(spin::Mutex::new(VecDeque::new()));
        (
            MemoryLink {
                inbox: Arc::clone(&a),
                outbox: Arc::clone(&b),
                sent: Arc::default(),
            },
            MemoryLink {
                inbox: b,
                outbox: a,
                sent: Arc::default(),
            },
        )
    }
}

impl Link for MemoryLink {
    fn receive(&mut self, into: &mut VecDeque<Vec<u8>>) -> Result<(), LinkError> {
        into.extend(self.inbox.lock().drain(..));
        Ok(())
    }

    fn transmit(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), LinkError> {
        *self.sent.lock() += frames.len() as u64;
        self.outbox.lock().extend(frames.drain(..));
        Ok(())
    }
}
