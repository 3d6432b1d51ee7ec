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
//! - `SetupRegion` starts a **session** with the driver instance that answers it. If that
//!   instance dies (the supervisor restarts the driver), [`BlkClient`] notices — a `Dead` call
//!   or send, or a reply stamped with another instance's id — reports every request still
//!   outstanding as a [`BlkError::Lost`] completion, and refuses requests with
//!   [`ClientError::SessionLost`] until `setup_region` starts a new session (see
//!   [`BlkClient`], and `docs/virtio.md` for the whole recovery).
//!
//! The wire format is `moat-ipc`'s: label [`Blk::ID`], postcard payloads.
#![no_std]
#![deny(missing_docs)]
// The tests' scripted kernel must implement the (unsafe) raw syscall entry of `Syscalls`.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]

use core::cell::RefCell;
use core::fmt;

use moat_abi::{CapSlot, Error, Rights, TaskId, Timeout};
use moat_ipc::{Client, IpcError, Protocol, REPLY_ERROR, REPLY_OK};
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
    /// Whether the device has a volatile write cache that [`Operation::Flush`] writes back.
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
    /// [`REGION_RIGHTS`]); it replaces any earlier region of this client and starts a new
    /// session: completions of requests sent before it, not yet reaped or still to come, are
    /// discarded. Answered with [`Response::Region`].
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
    /// Too many requests in flight for this client (or too many clients): try again after
    /// completions.
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
    /// The IPC failed (`Dead` before any region was set up: the driver is not running now).
    Ipc(IpcError),
    /// The driver refused or failed the request.
    Blk(BlkError),
    /// The driver answered with a response that does not fit the request.
    UnexpectedResponse,
    /// The driver instance this client set its region up with is gone (it died, or a restarted
    /// instance answered). Every request it had not completed was lost: [`BlkClient::reap`]
    /// reports each one as [`BlkError::Lost`]. Call [`BlkClient::setup_region`] again (once
    /// the driver is back) to start a new session, then send the requests again.
    SessionLost,
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
            ClientError::SessionLost => f.write_str("driver restarted: session lost"),
        }
    }
}

/// Requests one [`BlkClient`] keeps track of between [`BlkClient::submit`] and their completion
/// (the driver accepts at most 64 per client; more are refused with [`BlkError::Busy`] here,
/// without a message).
pub const MAX_OUTSTANDING: usize = 128;

/// The client's view of its session with one driver instance.
#[derive(Debug)]
struct Session {
    /// The driver instance that accepted the region (the kernel stamps it on every reply, so it
    /// cannot be forged); `None` before the first [`BlkClient::setup_region`].
    driver: Option<TaskId>,
    /// The driver instance is gone; requests need a new session.
    lost: bool,
    /// Tags of submitted requests not yet completed (a multiset: tags are the caller's).
    outstanding: heapless::Vec<u32, MAX_OUTSTANDING>,
    /// Tags of requests the lost session took with it, reported by the next `reap`.
    lost_tags: heapless::Vec<u32, MAX_OUTSTANDING>,
}

/// A typed client of a block driver over the endpoint capability `endpoint`.
///
/// # Sessions and driver restarts
///
/// [`BlkClient::setup_region`] starts a *session* with the driver instance that answers it
/// (the kernel stamps the replying task's generation-tagged id on the reply). Every later
/// reply is checked against it: a call that fails with `Dead`, or a reply from another
/// instance (the supervisor restarted the driver), ends the session. The requests that were
/// in flight are then lost — the dead instance took them with it, and the kernel dropped the
/// messages queued for it — so the client reports each one, by tag, as a [`BlkError::Lost`]
/// completion from [`BlkClient::reap`]; after that, requests fail with
/// [`ClientError::SessionLost`] until `setup_region` starts a new session. Completions the
/// driver reports for tags this client is not waiting for (stale ones from an older session)
/// are ignored.
pub struct BlkClient<S: Syscalls> {
    client: Client<Blk, S>,
    timeout: Timeout,
    session: RefCell<Session>,
}

impl<S: Syscalls> fmt::Debug for BlkClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlkClient")
            .field("endpoint", &self.client.endpoint())
            .field("session", &self.session)
            .finish()
    }
}

/// A decoded reply and who sent it.
struct Answer {
    response: Response,
    driver: TaskId,
}

impl<S: Syscalls> BlkClient<S> {
    /// A client calling through `endpoint`, waiting forever for replies.
    pub fn new(syscalls: S, endpoint: CapSlot) -> Self {
        BlkClient {
            client: Client::new(syscalls, endpoint),
            timeout: Timeout::Forever,
            session: RefCell::new(Session {
                driver: None,
                lost: false,
                outstanding: heapless::Vec::new(),
                lost_tags: heapless::Vec::new(),
            }),
        }
    }

    /// The same client with a timeout on every call.
    pub fn with_timeout(self, timeout: Timeout) -> Self {
        BlkClient {
            client: self.client.with_timeout(timeout),
            timeout,
            session: self.session,
        }
    }

    /// The syscalls handle.
    pub fn syscalls(&self) -> &S {
        self.client.syscalls()
    }

    /// The driver instance of the current session (`None` before `setup_region`).
    pub fn driver(&self) -> Option<TaskId> {
        self.session.borrow().driver
    }

    /// Whether the session ended (see [`ClientError::SessionLost`]).
    pub fn session_lost(&self) -> bool {
        self.session.borrow().lost
    }

    /// Requests submitted and not yet completed (or reported lost).
    pub fn outstanding(&self) -> usize {
        self.session.borrow().outstanding.len()
    }

    /// Ends the session: every outstanding request is lost.
    fn lose_session(&self) {
        let mut session = self.session.borrow_mut();
        if session.driver.is_none() || session.lost {
            return;
        }
        session.lost = true;
        let tags = core::mem::take(&mut session.outstanding);
        for tag in tags {
            // `submit` keeps both together within one vector's capacity, so this fits.
            let _ = session.lost_tags.push(tag);
        }
    }

    /// Sends `request` (with a copy of `capability`) and waits; checks who answered. A `Dead`
    /// call, or an answer from another instance than the session's, ends the session.
    fn exchange(
        &self,
        request: &Request,
        capability: Option<(CapSlot, Rights)>,
    ) -> Result<(Answer, Option<(CapSlot, Rights)>), ClientError> {
        let mut message = moat_ipc::encode(Blk::ID, request).ok_or(IpcError::RequestTooLarge)?;
        if let Some((slot, rights)) = capability {
            message = message.with_capability(slot, rights);
        }
        if let Err(error) =
            self.client
                .syscalls()
                .call(self.client.endpoint(), &mut message, self.timeout)
        {
            if error == Error::Dead {
                self.lose_session();
            }
            return Err(ClientError::Ipc(IpcError::Kernel(error)));
        }
        let driver = message.header.sender;
        let session_driver = self.session.borrow().driver;
        if session_driver.is_some_and(|known| known != driver) {
            self.lose_session();
        }
        let carried = message.capability();
        let response = match message.label() {
            REPLY_OK => moat_ipc::decode(message.payload()).ok_or(IpcError::MalformedReply)?,
            REPLY_ERROR => {
                return Err(ClientError::Ipc(
                    moat_ipc::decode(message.payload())
                        .map(IpcError::Remote)
                        .unwrap_or(IpcError::MalformedReply),
                ));
            }
            _ => return Err(ClientError::Ipc(IpcError::MalformedReply)),
        };
        Ok((Answer { response, driver }, carried))
    }

    /// As [`Self::exchange`] for requests that belong to the session.
    fn session_call(&self, request: &Request) -> Result<Response, ClientError> {
        if self.session_lost() {
            return Err(ClientError::SessionLost);
        }
        let result = self.exchange(request, None);
        if self.session_lost() {
            return Err(ClientError::SessionLost);
        }
        match result?.0.response {
            Response::Refused(error) => Err(ClientError::Blk(error)),
            response => Ok(response),
        }
    }

    /// The device's description. Answers from any instance (a way to learn that a restarted
    /// driver is back; the session still ends if it is not the session's instance).
    pub fn info(&self) -> Result<DeviceInfo, ClientError> {
        match self.exchange(&Request::Info, None)?.0.response {
            Response::Info(info) => Ok(info),
            Response::Refused(error) => Err(ClientError::Blk(error)),
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Hands the driver the data region `memory` (a copy with [`REGION_RIGHTS`] is sent; the
    /// client keeps its own) and starts a new session with the instance that answers: requests
    /// of an earlier session still outstanding are reported lost by the next [`Self::reap`]
    /// (the driver discards their completions). Returns the bytes the driver mapped.
    pub fn setup_region(&self, memory: CapSlot) -> Result<u64, ClientError> {
        let (answer, _) = self.exchange(&Request::SetupRegion, Some((memory, REGION_RIGHTS)))?;
        match answer.response {
            Response::Region { len } => {
                // A new session: whatever was outstanding belongs to the old one.
                let mut session = self.session.borrow_mut();
                let tags = core::mem::take(&mut session.outstanding);
                for tag in tags {
                    // As in `lose_session`: this fits.
                    let _ = session.lost_tags.push(tag);
                }
                session.driver = Some(answer.driver);
                session.lost = false;
                Ok(len)
            }
            Response::Refused(error) => Err(ClientError::Blk(error)),
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Runs `operation` and waits for it.
    pub fn run(&self, tag: u32, operation: Operation) -> Result<(), ClientError> {
        match self.session_call(&Request::Io { tag, operation })? {
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
    /// [`BlkError::Busy`] when [`MAX_OUTSTANDING`] requests are outstanding already.
    pub fn submit(&self, tag: u32, operation: Operation) -> Result<(), ClientError> {
        {
            let session = self.session.borrow();
            if session.lost {
                return Err(ClientError::SessionLost);
            }
            // Outstanding and not-yet-reported lost tags together stay within one vector's
            // capacity, so moving the first into the second never overflows.
            if session.outstanding.len() + session.lost_tags.len() >= MAX_OUTSTANDING {
                return Err(ClientError::Blk(BlkError::Busy));
            }
        }
        match self.client.send(&Request::Io { tag, operation }) {
            Ok(()) => {
                // Checked for room above; nothing else pushes in between.
                let _ = self.session.borrow_mut().outstanding.push(tag);
                Ok(())
            }
            Err(IpcError::Kernel(Error::Dead)) if self.driver().is_some() => {
                self.lose_session();
                Err(ClientError::SessionLost)
            }
            Err(error) => Err(ClientError::Ipc(error)),
        }
    }

    /// Collects completions of submitted requests and passes each to `each`. With `wait`, the
    /// driver answers once at least one is ready (or when it gives up on this wait: a later
    /// `Reap` replaces it); without, at once. Returns how many there were.
    ///
    /// When the session has ended, the requests it lost are passed to `each` as
    /// [`BlkError::Lost`] completions (without asking the driver); once they are reported,
    /// [`ClientError::SessionLost`].
    pub fn reap(&self, wait: bool, mut each: impl FnMut(Completion)) -> Result<usize, ClientError> {
        if let Some(count) = self.report_lost(&mut each) {
            return Ok(count);
        }
        let result = self.session_call(&Request::Reap { wait });
        if let Some(count) = self.report_lost(&mut each) {
            return Ok(count);
        }
        match result? {
            Response::Completions(completions) => {
                let mut count = 0;
                let mut session = self.session.borrow_mut();
                for completion in completions {
                    // Only completions this client waits for (not stale ones of an older
                    // session, nor a confused driver's inventions).
                    if let Some(at) = session
                        .outstanding
                        .iter()
                        .position(|&tag| tag == completion.tag)
                    {
                        session.outstanding.swap_remove(at);
                        count += 1;
                        each(completion);
                    }
                }
                Ok(count)
            }
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Passes every lost request to `each` as a [`BlkError::Lost`] completion; `None` if there
    /// were none.
    fn report_lost(&self, each: &mut impl FnMut(Completion)) -> Option<usize> {
        let tags = core::mem::take(&mut self.session.borrow_mut().lost_tags);
        if tags.is_empty() {
            return None;
        }
        for &tag in &tags {
            each(Completion {
                tag,
                result: Err(BlkError::Lost),
            });
        }
        Some(tags.len())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::cell::RefCell;

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

    /// What the scripted driver does with the next call.
    #[allow(clippy::large_enum_variant)] // a test script of a few steps
    enum Step {
        /// Answers with `response`, stamped as sent by `driver`.
        Reply(TaskId, Response),
        /// The call fails.
        Fail(Error),
    }

    /// A fake kernel whose calls are answered from a script; sends succeed unless `send_error`.
    struct Scripted {
        steps: RefCell<std::collections::VecDeque<Step>>,
        sent: core::cell::Cell<usize>,
        send_error: core::cell::Cell<Option<Error>>,
    }

    impl Scripted {
        fn new(steps: impl IntoIterator<Item = Step>) -> Scripted {
            Scripted {
                steps: RefCell::new(steps.into_iter().collect()),
                sent: core::cell::Cell::new(0),
                send_error: core::cell::Cell::new(None),
            }
        }
    }

    #[allow(unsafe_code)]
    impl Syscalls for &Scripted {
        /// Never used: the typed calls the client makes are overridden below.
        unsafe fn syscall(&self, _: moat_abi::Syscall, _: [u64; 6]) -> [u64; 4] {
            [moat_abi::Error::NoSuchSyscall as u64, 0, 0, 0]
        }

        fn send(&self, _: CapSlot, _: &moat_abi::Message) -> Result<(), Error> {
            self.sent.set(self.sent.get() + 1);
            self.send_error.get().map_or(Ok(()), Err)
        }

        fn call(
            &self,
            _: CapSlot,
            message: &mut moat_abi::Message,
            _: Timeout,
        ) -> Result<(), Error> {
            match self
                .steps
                .borrow_mut()
                .pop_front()
                .expect("a scripted step")
            {
                Step::Fail(error) => Err(error),
                Step::Reply(driver, response) => {
                    *message = moat_ipc::encode(REPLY_OK, &response).expect("fits");
                    message.stamp(0, driver);
                    Ok(())
                }
            }
        }
    }

    const FIRST: TaskId = TaskId::new(2, 0);
    const SECOND: TaskId = TaskId::new(2, 1);

    fn region() -> Response {
        Response::Region { len: 4096 }
    }

    fn completions(tags: &[(u32, Result<(), BlkError>)]) -> Response {
        let mut list = heapless::Vec::new();
        for &(tag, result) in tags {
            list.push(Completion { tag, result }).expect("room");
        }
        Response::Completions(list)
    }

    fn read(sector: u64) -> Operation {
        Operation::Read {
            sector,
            offset: 0,
            len: 512,
        }
    }

    fn reaped(client: &BlkClient<&Scripted>) -> Result<std::vec::Vec<Completion>, ClientError> {
        let mut seen = std::vec::Vec::new();
        client.reap(false, |completion| seen.push(completion))?;
        Ok(seen)
    }

    #[test]
    fn a_reply_from_a_restarted_driver_loses_the_session_and_its_requests() {
        let kernel = Scripted::new([
            Step::Reply(FIRST, region()),
            Step::Reply(FIRST, completions(&[(1, Ok(()))])),
            // The driver was restarted: the new instance knows nothing of tags 2 and 3.
            Step::Reply(SECOND, completions(&[])),
            Step::Reply(SECOND, region()),
            Step::Reply(
                SECOND,
                completions(&[(2, Err(BlkError::NoRegion)), (4, Ok(()))]),
            ),
        ]);
        let client = BlkClient::new(&kernel, CapSlot(1));
        assert_eq!(client.setup_region(CapSlot(9)), Ok(4096));
        assert_eq!(client.driver(), Some(FIRST));
        for tag in 1..=3 {
            client.submit(tag, read(tag.into())).expect("sent");
        }
        assert_eq!(client.outstanding(), 3);
        assert_eq!(
            reaped(&client),
            Ok(std::vec![Completion {
                tag: 1,
                result: Ok(())
            }])
        );
        // Tags 2 and 3 were lost with the first instance: reported once each, by tag.
        let mut lost: std::vec::Vec<u32> = reaped(&client)
            .expect("lost requests are reported")
            .into_iter()
            .map(|completion| {
                assert_eq!(completion.result, Err(BlkError::Lost));
                completion.tag
            })
            .collect();
        lost.sort_unstable();
        assert_eq!(lost, [2, 3]);
        assert!(client.session_lost());
        assert_eq!(client.outstanding(), 0);
        // Then every request fails with a typed error, without reaching the driver.
        assert_eq!(reaped(&client), Err(ClientError::SessionLost));
        assert_eq!(client.submit(5, read(5)), Err(ClientError::SessionLost));
        assert_eq!(client.read(0, 0, 512), Err(ClientError::SessionLost));
        assert_eq!(kernel.sent.get(), 3);
        // A new session with the new instance; a stale completion (tag 2) is ignored.
        assert_eq!(client.setup_region(CapSlot(9)), Ok(4096));
        assert_eq!(client.driver(), Some(SECOND));
        client.submit(4, read(4)).expect("sent");
        assert_eq!(
            reaped(&client),
            Ok(std::vec![Completion {
                tag: 4,
                result: Ok(())
            }])
        );
        assert!(kernel.steps.borrow().is_empty());
    }

    #[test]
    fn dead_calls_and_sends_lose_the_session() {
        let kernel = Scripted::new([
            Step::Reply(FIRST, region()),
            Step::Fail(Error::Dead),
            Step::Fail(Error::Dead),
            Step::Reply(SECOND, region()),
        ]);
        let client = BlkClient::new(&kernel, CapSlot(1));
        client.setup_region(CapSlot(9)).expect("region");
        client.submit(7, read(0)).expect("sent");
        // The driver died while the client waited in `Reap`.
        let lost = reaped(&client).expect("reported");
        assert_eq!(
            lost,
            [Completion {
                tag: 7,
                result: Err(BlkError::Lost)
            }]
        );
        // While it is down, `info` says so.
        assert_eq!(
            client.info(),
            Err(ClientError::Ipc(IpcError::Kernel(Error::Dead)))
        );
        client.setup_region(CapSlot(9)).expect("back");
        // A send to a dead driver ends the new session too.
        kernel.send_error.set(Some(Error::Dead));
        assert_eq!(client.submit(8, read(0)), Err(ClientError::SessionLost));
        assert!(client.session_lost());
        assert_eq!(reaped(&client), Err(ClientError::SessionLost));
    }

    #[test]
    fn before_a_session_errors_pass_through_and_setup_starts_one() {
        let kernel = Scripted::new([
            Step::Fail(Error::Dead),
            Step::Reply(FIRST, Response::Refused(BlkError::BadRegion)),
            Step::Reply(FIRST, region()),
            Step::Reply(FIRST, Response::Refused(BlkError::Busy)),
        ]);
        let client = BlkClient::new(&kernel, CapSlot(1));
        assert_eq!(
            client.info(),
            Err(ClientError::Ipc(IpcError::Kernel(Error::Dead)))
        );
        assert!(!client.session_lost());
        assert_eq!(
            client.setup_region(CapSlot(9)),
            Err(ClientError::Blk(BlkError::BadRegion))
        );
        assert_eq!(client.driver(), None);
        client.setup_region(CapSlot(9)).expect("region");
        // Requests submitted before a region change are reported lost.
        client.submit(3, read(0)).expect("sent");
        assert_eq!(
            client.setup_region(CapSlot(9)),
            Err(ClientError::Blk(BlkError::Busy))
        );
        assert_eq!(client.outstanding(), 1);
    }

    #[test]
    fn the_client_bounds_what_it_tracks() {
        let kernel = Scripted::new([Step::Reply(FIRST, region())]);
        let client = BlkClient::new(&kernel, CapSlot(1));
        client.setup_region(CapSlot(9)).expect("region");
        for tag in 0..MAX_OUTSTANDING as u32 {
            client.submit(tag, read(0)).expect("room");
        }
        assert_eq!(
            client.submit(999, read(0)),
            Err(ClientError::Blk(BlkError::Busy))
        );
        assert_eq!(kernel.sent.get(), MAX_OUTSTANDING);
    }

    #[test]
    fn error_values_are_fixed() {
        for (index, error) in BlkError::ALL.iter().enumerate() {
            assert_eq!(usize::from(error.code()), index + 1);
        }
    }
}
