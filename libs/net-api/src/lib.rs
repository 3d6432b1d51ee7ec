//! The Moat network driver protocol (`net-api`): what a TCP/IP stack asks of a network driver.
//!
//! # Model
//!
//! Frame data never travels in messages (224-byte payloads). The client allocates a **frame
//! region** of [`REGION_PAGES`] pages of its own private memory and hands the driver a Memory
//! capability for it with [`Request::Attach`]. The region is cut into [`SLOT_SIZE`]-byte slots:
//! the first [`TX_SLOTS`] carry frames to send (client writes, driver reads), the next
//! [`RX_SLOTS`] carry received frames (driver writes, client reads). Messages name slots and
//! lengths only:
//!
//! - [`Request::Transmit`]: "send the frames in these TX slots, with these lengths"; the driver
//!   has copied them out of the region (into its DMA bounce buffers) before it replies, so the
//!   client may reuse the slots at once.
//! - [`Request::Receive`]: the driver copies up to [`RX_SLOTS`] received frames into the RX slots
//!   and replies with their lengths, in order; they stay valid until the next `Receive`.
//!
//! The region is memory of the Realm (never shared with the host), but both tasks map it: each
//! treats the other's bytes as untrusted, copies them out before looking at them, and checks
//! every slot number and length in a message against the constants here. [`FrameMemory`] is that
//! access (raw copies, never a Rust reference into the region); [`MappedRegion`] implements it
//! over a mapping, [`HeapRegion`] on the heap for host tests.
//!
//! One client at a time: the first `Attach` binds the driver to that client's badge (its manifest
//! identity), and a restarted instance of the same client may attach again. Others get
//! [`NetError::Busy`].
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod region;

use core::fmt;

use moat_abi::{CapSlot, Rights};
use moat_ipc::{Client, IpcError, Protocol};
use moat_userlib::Syscalls;
use serde::{Deserialize, Serialize};

pub use region::{FrameMemory, HeapRegion, MappedRegion};

/// Bytes per frame slot: holds the largest Ethernet frame the driver passes (1514 bytes).
pub const SLOT_SIZE: usize = 2048;
/// Transmit slots, at the start of the region.
pub const TX_SLOTS: usize = 16;
/// Receive slots, after the transmit slots.
pub const RX_SLOTS: usize = 16;
/// Size of the frame region in bytes.
pub const REGION_SIZE: usize = SLOT_SIZE * (TX_SLOTS + RX_SLOTS);
/// Size of the frame region in pages.
pub const REGION_PAGES: usize = REGION_SIZE / moat_abi::PAGE_SIZE;
/// Shortest Ethernet frame (header only) the driver accepts in either direction.
pub const MIN_FRAME: usize = 14;
/// Longest Ethernet frame (1500-byte MTU plus the 14-byte header; no FCS, no VLAN tag).
pub const MAX_FRAME: usize = 1514;
const _: () = assert!(SLOT_SIZE >= MAX_FRAME && REGION_SIZE.is_multiple_of(moat_abi::PAGE_SIZE));

/// Rights the frame region capability must carry (the driver maps it read-write).
pub const REGION_RIGHTS: Rights = Rights::READ.union(Rights::WRITE);

/// Byte offset of transmit slot `slot` in the region, or `None` if there is no such slot.
pub const fn tx_slot_offset(slot: usize) -> Option<usize> {
    if slot < TX_SLOTS {
        Some(slot * SLOT_SIZE)
    } else {
        None
    }
}

/// Byte offset of receive slot `slot` in the region, or `None` if there is no such slot.
pub const fn rx_slot_offset(slot: usize) -> Option<usize> {
    if slot < RX_SLOTS {
        Some((TX_SLOTS + slot) * SLOT_SIZE)
    } else {
        None
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddress = MacAddress([0xff; 6]);

    /// Whether this is a group (multicast or broadcast) address.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// What the driver knows about its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The device's MAC address (from the device, or chosen by the driver if it offers none).
    pub mac: MacAddress,
    /// The MTU (IP packet size) the driver passes: the device's, at most 1500.
    pub mtu: u16,
    /// Whether the link is up (always true if the device does not report link status).
    pub link_up: bool,
}

/// Received frames dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RxDrops {
    /// Shorter than the net header plus an Ethernet header (truncated).
    pub truncated: u64,
    /// The device claimed more bytes than the buffer holds, or the frame is longer than
    /// [`MAX_FRAME`].
    pub too_long: u64,
    /// The net header had fields set that were not negotiated (checksum offload, GSO, merged
    /// buffers).
    pub bad_header: u64,
    /// The destination MAC was neither ours, broadcast nor multicast.
    pub not_for_us: u64,
    /// The driver's private receive queue was full (the client does not keep up).
    pub overrun: u64,
}

/// Frames the driver could not send, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxDrops {
    /// Shorter than [`MIN_FRAME`] or longer than the MTU allows.
    pub bad_length: u64,
    /// The transmit ring was full or no bounce buffer could be had.
    pub no_buffer: u64,
}

/// The driver's counters since it started (a restart sets them back to zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Frames handed to the client.
    pub rx_frames: u64,
    /// Bytes of those frames (Ethernet header included, net header not).
    pub rx_bytes: u64,
    /// Frames handed to the device.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Received frames dropped, by reason.
    pub rx_drops: RxDrops,
    /// Frames not sent, by reason.
    pub tx_drops: TxDrops,
    /// Used-ring entries naming no outstanding buffer (bad ids, repeated completions).
    pub bad_used_entries: u64,
    /// Times the device published a used index that jumped (the device is then reset).
    pub ring_faults: u64,
    /// Device resets after a fault.
    pub resets: u64,
}

/// Why the driver refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetError {
    /// No frame region attached (send `Attach` first).
    NotAttached,
    /// The region capability was missing, of the wrong kind or rights, too small, or could not
    /// be mapped.
    BadRegion,
    /// A slot number out of range, or the same slot twice.
    BadSlot,
    /// A frame length out of range.
    BadLength,
    /// Another client is attached.
    Busy,
    /// The device is not working (failed initialisation or a fault it has not recovered from).
    Device,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetError::NotAttached => "no frame region attached",
            NetError::BadRegion => "bad frame region",
            NetError::BadSlot => "bad slot",
            NetError::BadLength => "bad frame length",
            NetError::Busy => "another client is attached",
            NetError::Device => "device not working",
        })
    }
}

/// One frame to send: a transmit slot and the frame's length in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxFrame {
    /// Transmit slot (below [`TX_SLOTS`]).
    pub slot: u8,
    /// Frame length, [`MIN_FRAME`] to [`MAX_FRAME`] (and within the MTU).
    pub len: u16,
}

/// Requests to the driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Attach the frame region carried as the message's capability (a Memory capability of at
    /// least [`REGION_PAGES`] pages with [`REGION_RIGHTS`]). Replaces the caller's earlier
    /// region. Answer: [`Response::Link`].
    Attach,
    /// Send these frames, in order. Answer: [`Response::Sent`] with how many were accepted (the
    /// first `accepted`); the rest were dropped and counted.
    Transmit(heapless::Vec<TxFrame, TX_SLOTS>),
    /// Copy received frames into the RX slots. Answer: [`Response::Received`].
    Receive,
    /// The link. Answer: [`Response::Link`].
    Link,
    /// The counters. Answer: [`Response::Counters`].
    Counters,
}

/// Answers from the driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The link as it is now.
    Link(LinkInfo),
    /// How many of the frames were handed to the device.
    Sent {
        /// The first `accepted` frames went out.
        accepted: u8,
    },
    /// Frames now in RX slots `0..lengths.len()`, with their lengths; `more` if the driver holds
    /// further frames (ask again at once).
    Received {
        /// Frame lengths, slot by slot.
        lengths: heapless::Vec<u16, RX_SLOTS>,
        /// More frames are waiting.
        more: bool,
    },
    /// The counters.
    Counters(Counters),
    /// The request was refused.
    Error(NetError),
}

/// The protocol marker for `moat-ipc`.
#[derive(Debug)]
pub struct NetProtocol;

impl Protocol for NetProtocol {
    const ID: u32 = 0x0000_0600;
    type Request = Request;
    type Response = Response;
}

/// Why a client call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// Transport: the driver died (`Dead`: it was restarted, attach again), timed out, or
    /// answered garbage.
    Ipc(IpcError),
    /// The driver refused.
    Net(NetError),
    /// The answer did not fit the question (a confused driver).
    Unexpected,
}

impl From<IpcError> for ClientError {
    fn from(error: IpcError) -> Self {
        ClientError::Ipc(error)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Ipc(error) => write!(f, "ipc: {error}"),
            ClientError::Net(error) => write!(f, "net: {error}"),
            ClientError::Unexpected => f.write_str("unexpected reply"),
        }
    }
}

/// A typed client of the network driver over the endpoint capability `endpoint`.
pub struct NetClient<S: Syscalls> {
    client: Client<NetProtocol, S>,
}

impl<S: Syscalls> fmt::Debug for NetClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetClient")
            .field("endpoint", &self.client.endpoint())
            .finish()
    }
}

impl<S: Syscalls> NetClient<S> {
    /// A client calling through `endpoint`.
    pub fn new(syscalls: S, endpoint: CapSlot) -> Self {
        NetClient {
            client: Client::new(syscalls, endpoint),
        }
    }

    /// The same client with a timeout on every call.
    pub fn with_timeout(self, timeout: moat_abi::Timeout) -> Self {
        NetClient {
            client: self.client.with_timeout(timeout),
        }
    }

    /// The syscalls handle.
    pub fn syscalls(&self) -> &S {
        self.client.syscalls()
    }

    fn call(&self, request: &Request) -> Result<Response, ClientError> {
        match self.client.call(request)? {
            Response::Error(error) => Err(ClientError::Net(error)),
            response => Ok(response),
        }
    }

    /// Attaches the frame region `memory` (a Memory capability the caller holds with
    /// [`REGION_RIGHTS`] and `TRANSFER`); the driver receives a copy without `TRANSFER`.
    pub fn attach(&self, memory: CapSlot) -> Result<LinkInfo, ClientError> {
        let reply = self
            .client
            .call_with_capability(&Request::Attach, Some((memory, REGION_RIGHTS)))?;
        if let Some((slot, _)) = reply.capability {
            // The driver sends nothing back with Attach; do not keep what it sent.
            let _ = self.syscalls().cap_drop(slot);
        }
        match reply.response {
            Response::Link(info) => Ok(info),
            Response::Error(error) => Err(ClientError::Net(error)),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Sends the frames in the given TX slots; returns how many went out.
    pub fn transmit(&self, frames: &[TxFrame]) -> Result<usize, ClientError> {
        let frames =
            heapless::Vec::from_slice(frames).map_err(|_| ClientError::Net(NetError::BadSlot))?;
        match self.call(&Request::Transmit(frames))? {
            Response::Sent { accepted } => Ok(usize::from(accepted)),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Asks for received frames: their lengths (slot `i` holds frame `i`) and whether more wait.
    /// Every length is checked here against [`SLOT_SIZE`] and [`MAX_FRAME`].
    pub fn receive(&self) -> Result<(heapless::Vec<u16, RX_SLOTS>, bool), ClientError> {
        match self.call(&Request::Receive)? {
            Response::Received { lengths, more }
                if lengths
                    .iter()
                    .all(|&len| usize::from(len) >= MIN_FRAME && usize::from(len) <= MAX_FRAME) =>
            {
                Ok((lengths, more))
            }
            _ => Err(ClientError::Unexpected),
        }
    }

    /// The link.
    pub fn link(&self) -> Result<LinkInfo, ClientError> {
        match self.call(&Request::Link)? {
            Response::Link(info) => Ok(info),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// The counters.
    pub fn counters(&self) -> Result<Counters, ClientError> {
        match self.call(&Request::Counters)? {
            Response::Counters(counters) => Ok(counters),
            _ => Err(ClientError::Unexpected),
        }
    }
}

#[cfg(test)]
mod tests;
