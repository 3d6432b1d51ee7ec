//! The Moat block protocol: what a client of a block driver (such as `drivers/virtio-blk`) sends
//! and gets back, and a typed client.
//!
//! # Model
//!
//! - Sectors are [`SECTOR_SIZE`] (512) bytes, whatever the device's preferred block size
//!   ([`DeviceInfo::block_size`]).
//! - Bulk data never travels in messages. A client hands the driver a private **data region**
//!   once: [`Request::SetupRegion`] carries a Memory capability (rights [`REGION_RIGHTS`]); the
//!   driver maps it, and every read or write names an offset and a length in it. The region is
//!   private memory: the driver copies between it and its own bounce buffers, the device never
//!   sees it.
//! - Requests are tagged by the client. Sent with `call` ([`BlkClient::read`], …) the reply
//!   is the request's [`Completion`]. Sent with `send` ([`BlkClient::submit`]) the client does
//!   not wait: many requests may be in flight, and their completions are collected with
//!   [`Request::Reap`] (a `call` that the driver answers as soon as at least one completion is
//!   ready, or at once when the client polls).
//! - Errors are typed ([`BlkError`]), with fixed numeric values.
//!
//! The wire format is `moat-ipc`'s: label [`Blk::ID`], postcard payloads.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use core::fmt;

use moat_abi::{CapSlot, Rights, Timeout};
use moat_ipc::{Client, IpcError, Protocol};
use moat_userlib::Syscalls;
use serde::{Deserialize, Serialize};

/// Bytes per sector.
pub const SECTOR_SIZE: u64 = 512;

/// Rights the region capability must carry (and the driver maps it with).
pub const REGION_RIGHTS: Rights = Rights::READ.union(Rights::WRITE);

/// Most completions one [`Response::Completions`] carries.
pub const MAX_COMPLETIONS: usize = 24;

/// The block protocol.
#[derive(Debug)]
pub enum Blk {}

impl Protocol for Blk {
    /// "BLK" and 0.
    const ID: u32 = 0x424c_4b00;
    type Request = Request;
    type Response = Response;
}

/// What the device is like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Capacity in 512-byte sectors.
    pub capacity_sectors: u64,
    /// The device's preferred (logical) block size in bytes; I/O in multiples of it is fastest.
    pub block_size: u32,
    /// Writes are refused with [`BlkError::ReadOnly`].
    pub read_only: bool,
    /// Whether the device has a volatile write cache that [`Request::Flush`] writes back.
    pub flush: bool,
    /// Largest length of one read or write, in bytes (a multiple of [`SECTOR_SIZE`]).
    pub max_transfer: u32,
    /// Requests the driver keeps in flight at the device at once.
    pub queue_depth: u16,
}

/// One operation on sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Device → region: `len` bytes from sector `sector` into the region at `offset`.
    Read {
        /// First sector.
        sector: u64,
        /// Byte offset in the data region.
        offset: u64,
        /// Bytes, a multiple of [`SECTOR_SIZE`], at most [`DeviceInfo::max_transfer`].
        len: u32,
    },
    /// Region → device: `len` bytes from the region at `offset` to sector `sector` on.
    Write {
        /// First sector.
        sector: u64,
        /// Byte offset in the data region.
        offset: u64,
        /// Bytes, a multiple of [`SECTOR_SIZE`], at most [`DeviceInfo::max_transfer`].
        len: u32,
    },
    /// Makes every completed write durable.
    Flush,
}

/// A request to a block driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The device's [`DeviceInfo`].
    Info,
    /// The message carries the client's data region (a Memory capability with at least
    /// [`REGION_RIGHTS`]); it replaces any earlier region of this client. Answered with
    /// [`Response::Region`].
    SetupRegion,
    /// One operation, named by the client's `tag` in its [`Completion`].
    Io {
        /// The client's name for the request.
        tag: u32,
        /// What to do.
        operation: Operation,
    },
    /// Completions of requests that were `send`-ed (at most [`MAX_COMPLETIONS`]).
    Reap {
        /// Wait until at least one is ready; otherwise answer at once, possibly with none.
        wait: bool,
    },
}

/// The result of one [`Request::Io`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The client's tag.
    pub tag: u32,
    /// Whether it worked.
    pub result: Result<(), BlkError>,
}

/// A driver's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::Info`].
    Info(DeviceInfo),
    /// To [`Request::SetupRegion`]: the region's size in bytes.
    Region {
        /// Bytes mapped.
        len: u64,
    },
    /// To a [`Request::Io`] sent with `call`.
    Done(Completion),
    /// To [`Request::Reap`]: at least one completion (none only when the driver gives up
    /// waiting, e.g. a second `Reap` replaced this one).
    Completions(heapless::Vec<Completion, MAX_COMPLETIONS>),
    /// The request was refused as a whole.
    Refused(BlkError),
}

/// Why a request failed. Values are fixed (0 is success and never an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum BlkError {
    /// The device reported an I/O error (`VIRTIO_BLK_S_IOERR`), or its answer was unusable.
    IoError = 1,
    /// The device does not support the operation (`VIRTIO_BLK_S_UNSUPP`).
    Unsupported = 2,
    /// The sector range is not inside the device.
    OutOfRange = 3,
    /// A write to a read-only device.
    ReadOnly = 4,
    /// The region range is outside the client's data region, or the region is unusable.
    BadRegion = 5,
    /// No data region has been set up.
    NoRegion = 6,
    /// Length zero, not a multiple of [`SECTOR_SIZE`], or above the maximum transfer.
    BadLength = 7,
    /// Too many requests in flight for this client (or a region change while some are): try
    /// again after completions.
    Busy = 8,
    /// The device has failed (it misbehaved and was reset, or did not start); nothing more
    /// will succeed until the driver restarts.
    DeviceFailed = 9,
    /// The driver could not get bounce memory from the DMA server.
    NoMemory = 10,
    /// The driver restarted or lost the request (e.g. it died with it in flight).
    Lost = 11,
}

impl BlkError {
    /// Every error, in value order.
    pub const ALL: [BlkError; 11] = [
        BlkError::IoError,
        BlkError::Unsupported,
        BlkError::OutOfRange,
        BlkError::ReadOnly,
        BlkError::BadRegion,
        BlkError::NoRegion,
        BlkError::BadLength,
        BlkError::Busy,
        BlkError::DeviceFailed,
        BlkError::NoMemory,
        BlkError::Lost,
    ];

    /// The fixed numeric value.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlkError::IoError => "I/O error",
            BlkError::Unsupported => "unsupported",
            BlkError::OutOfRange => "sector out of range",
            BlkError::ReadOnly => "read-only device",
            BlkError::BadRegion => "bad region range",
            BlkError::NoRegion => "no data region",
            BlkError::BadLength => "bad length",
            BlkError::Busy => "busy",
            BlkError::DeviceFailed => "device failed",
            BlkError::NoMemory => "no bounce memory",
            BlkError::Lost => "request lost",
        })
    }
}

/// Why a client call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The IPC failed (`Dead`: the driver restarted; set the region up again).
    Ipc(IpcError),
    /// The driver refused or failed the request.
    Blk(BlkError),
    /// The driver answered with a response that does not fit the request.
    UnexpectedResponse,
}

impl From<IpcError> for ClientError {
    fn from(error: IpcError) -> Self {
        ClientError::Ipc(error)
    }
}

impl From<BlkError> for ClientError {
    fn from(error: BlkError) -> Self {
        ClientError::Blk(error)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Ipc(error) => write!(f, "ipc: {error}"),
            ClientError::Blk(error) => write!(f, "blk: {error}"),
            ClientError::UnexpectedResponse => f.write_str("unexpected response"),
        }
    }
}

/// A typed client of a block driver over the endpoint capability `endpoint`.
pub struct BlkClient<S: Syscalls> {
    client: Client<Blk, S>,
}

impl<S: Syscalls> fmt::Debug for BlkClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlkClient")
            .field("endpoint", &self.client.endpoint())
            .finish()
    }
}

impl<S: Syscalls> BlkClient<S> {
    /// A client calling through `endpoint`, waiting forever for replies.
    pub fn new(syscalls: S, endpoint: CapSlot) -> Self {
        BlkClient {
            client: Client::new(syscalls, endpoint),
        }
    }

    /// The same client with a timeout on every call.
    pub fn with_timeout(self, timeout: Timeout) -> Self {
        BlkClient {
            client: self.client.with_timeout(timeout),
        }
    }

    /// The syscalls handle.
    pub fn syscalls(&self) -> &S {
        self.client.syscalls()
    }

    fn call(&self, request: &Request) -> Result<Response, ClientError> {
        match self.client.call(request)? {
            Response::Refused(error) => Err(ClientError::Blk(error)),
            response => Ok(response),
        }
    }

    /// The device's description.
    pub fn info(&self) -> Result<DeviceInfo, ClientError> {
        match self.call(&Request::Info)? {
            Response::Info(info) => Ok(info),
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Hands the driver the data region `memory` (a copy with [`REGION_RIGHTS`] is sent; the
    /// client keeps its own). Returns the bytes the driver mapped.
    pub fn setup_region(&self, memory: CapSlot) -> Result<u64, ClientError> {
        let reply = self
            .client
            .call_with_capability(&Request::SetupRegion, Some((memory, REGION_RIGHTS)))?;
        match reply.response {
            Response::Region { len } => Ok(len),
            Response::Refused(error) => Err(ClientError::Blk(error)),
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Runs `operation` and waits for it.
    pub fn run(&self, tag: u32, operation: Operation) -> Result<(), ClientError> {
        match self.call(&Request::Io { tag, operation })? {
            Response::Done(Completion { tag: done, result }) if done == tag => {
                result.map_err(ClientError::Blk)
            }
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Reads `len` bytes from `sector` into the region at `offset`, and waits.
    pub fn read(&self, sector: u64, offset: u64, len: u32) -> Result<(), ClientError> {
        self.run(
            0,
            Operation::Read {
                sector,
                offset,
                len,
            },
        )
    }

    /// Writes `len` bytes from the region at `offset` to `sector`, and waits.
    pub fn write(&self, sector: u64, offset: u64, len: u32) -> Result<(), ClientError> {
        self.run(
            0,
            Operation::Write {
                sector,
                offset,
                len,
            },
        )
    }

    /// Makes completed writes durable, and waits.
    pub fn flush(&self) -> Result<(), ClientError> {
        self.run(0, Operation::Flush)
    }

    /// Sends `operation` without waiting; its completion comes from [`Self::reap`]. Never
    /// blocks: `IpcError::Kernel(QueueFull)` is back-pressure (reap, then try again).
    pub fn submit(&self, tag: u32, operation: Operation) -> Result<(), ClientError> {
        self.client
            .send(&Request::Io { tag, operation })
            .map_err(ClientError::Ipc)
    }

    /// Collects completions of submitted requests and passes each to `each`. With `wait`, the
    /// driver answers once at least one is ready (or when it gives up on this wait: a later
    /// `Reap` replaces it); without, at once. Returns how many there were.
    pub fn reap(&self, wait: bool, mut each: impl FnMut(Completion)) -> Result<usize, ClientError> {
        match self.call(&Request::Reap { wait })? {
            Response::Completions(completions) => {
                let count = completions.len();
                completions.into_iter().for_each(&mut each);
                Ok(count)
            }
            _ => Err(ClientError::UnexpectedResponse),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use moat_abi::MAX_PAYLOAD;

    use super::*;

    fn encoded_len<T: Serialize>(value: &T) -> usize {
        let mut buffer = [0u8; 1024];
        postcard::to_slice(value, &mut buffer)
            .map(|used| used.len())
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn largest_request_fits_a_payload() {
        let request = Request::Io {
            tag: u32::MAX,
            operation: Operation::Write {
                sector: u64::MAX,
                offset: u64::MAX,
                len: u32::MAX,
            },
        };
        assert!(encoded_len(&request) <= MAX_PAYLOAD);
    }

    #[test]
    fn largest_response_fits_a_payload() {
        let mut completions = heapless::Vec::new();
        for _ in 0..MAX_COMPLETIONS {
            completions
                .push(Completion {
                    tag: u32::MAX,
                    result: Err(BlkError::Lost),
                })
                .expect("room");
        }
        let responses = [
            Response::Completions(completions),
            Response::Info(DeviceInfo {
                capacity_sectors: u64::MAX,
                block_size: u32::MAX,
                read_only: true,
                flush: true,
                max_transfer: u32::MAX,
                queue_depth: u16::MAX,
            }),
            Response::Region { len: u64::MAX },
            Response::Refused(BlkError::Lost),
        ];
        for response in responses {
            let len = encoded_len(&response);
            assert!(len <= MAX_PAYLOAD, "{response:?}: {len} bytes");
        }
    }

    #[test]
    fn round_trips_and_strict_decoding() {
        let request = Request::Io {
            tag: 7,
            operation: Operation::Read {
                sector: 9,
                offset: 4096,
                len: 512,
            },
        };
        let message = moat_ipc::encode(Blk::ID, &request).expect("fits");
        assert_eq!(
            moat_ipc::decode::<Request>(message.payload()),
            Some(request)
        );
        let mut bytes = std::vec::Vec::from(message.payload());
        bytes.push(0);
        assert_eq!(moat_ipc::decode::<Request>(&bytes), None);
        for error in BlkError::ALL {
            let completion = Completion {
                tag: 1,
                result: Err(error),
            };
            let message = moat_ipc::encode(0, &Response::Done(completion)).expect("fits");
            assert_eq!(
                moat_ipc::decode::<Response>(message.payload()),
                Some(Response::Done(completion))
            );
        }
    }

    #[test]
    fn error_values_are_fixed() {
        for (index, error) in BlkError::ALL.iter().enumerate() {
            assert_eq!(usize::from(error.code()), index + 1);
        }
    }
}
