//! The Moat entropy protocol: what a client of an entropy driver (such as `drivers/virtio-rng`)
//! sends and gets back, a typed client ([`RngClient`]), the serving side ([`RngServer`] over any
//! [`EntropySource`]) and [`seed`], which mixes the driver's bytes with the kernel's per-task
//! entropy for whoever needs a seed (the network stack's TCP sequence numbers, ports, DHCP ids).
//!
//! # Model
//!
//! - [`Request::Fill`] asks for `len` random bytes, 1 to [`MAX_FILL`] (192: what fits in one
//!   message's 224-byte payload beside the response's tag and length). The answer carries
//!   exactly `len` bytes ([`Response::Bytes`]) or a typed error ([`RngError`]).
//!   [`RngClient::fill`] splits larger buffers into several requests.
//! - [`Request::Info`] returns the limit and the driver's counters ([`RngInfo`]).
//! - The bytes come from a device the host emulates: in a Realm the host chooses them. They are
//!   never used alone where secrecy from the host matters; [`seed`] hashes them together with
//!   the kernel's per-task entropy (`TaskInfo::entropy`, which mixes the CPU's `RNDR` when it
//!   has one), so the result is at least as unpredictable as the better of the two.
//!
//! The wire format is `moat-ipc`'s: label [`Rng::ID`], postcard payloads.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use core::fmt;

use moat_abi::{CapSlot, Timeout};
use moat_ipc::{Client, Handler, IpcError, Protocol, RequestContext};
use moat_userlib::Syscalls;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most bytes one [`Request::Fill`] returns.
pub const MAX_FILL: usize = 192;

/// Device requests [`RngServer`] makes for one [`Request::Fill`] before it gives up on a device
/// that keeps returning fewer bytes than asked ([`RngError::Starved`]).
pub const FILL_ATTEMPTS: usize = 8;

/// The entropy protocol.
#[derive(Debug)]
pub enum Rng {}

impl Protocol for Rng {
    /// "RNG" and 0.
    const ID: u32 = 0x524e_4700;
    type Request = Request;
    type Response = Response;
}

/// A request to an entropy driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The driver's [`RngInfo`].
    Info,
    /// `len` random bytes, 1 to [`MAX_FILL`].
    Fill {
        /// Bytes wanted.
        len: u16,
    },
}

/// What the driver says about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngInfo {
    /// Most bytes one [`Request::Fill`] returns ([`MAX_FILL`]).
    pub max_fill: u16,
    /// Fill requests answered with bytes.
    pub fills: u64,
    /// Bytes handed out.
    pub bytes: u64,
    /// Device requests that returned fewer bytes than asked (legal, but counted).
    pub short_reads: u64,
    /// Requests refused ([`RngError`]).
    pub errors: u64,
}

/// A driver's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::Info`].
    Info(RngInfo),
    /// To [`Request::Fill`]: exactly the bytes asked for.
    Bytes(heapless::Vec<u8, MAX_FILL>),
    /// The request failed.
    Refused(RngError),
}

/// Why a request failed. Values are fixed (0 is success and never an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum RngError {
    /// `len` is 0 or above [`MAX_FILL`].
    BadLength = 1,
    /// The device misbehaved or did not start; it has been reset and nothing more will succeed
    /// until the driver restarts.
    DeviceFailed = 2,
    /// The driver could not get bounce memory from the DMA server.
    NoMemory = 3,
    /// The device did not answer in time.
    TimedOut = 4,
    /// The device kept returning fewer bytes than asked ([`FILL_ATTEMPTS`] requests).
    Starved = 5,
}

impl RngError {
    /// Every error, in value order.
    pub const ALL: [RngError; 5] = [
        RngError::BadLength,
        RngError::DeviceFailed,
        RngError::NoMemory,
        RngError::TimedOut,
        RngError::Starved,
    ];

    /// The fixed numeric value.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for RngError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RngError::BadLength => "bad length",
            RngError::DeviceFailed => "device failed",
            RngError::NoMemory => "no bounce memory",
            RngError::TimedOut => "device timed out",
            RngError::Starved => "device returned too few bytes",
        })
    }
}

/// Where a server's bytes come from: a device driver (or a fake in tests).
pub trait EntropySource {
    /// Fills the start of `out` (at most [`MAX_FILL`] bytes) with random bytes; returns how
    /// many it wrote, at most `out.len()` (fewer is allowed: the server asks again).
    fn fill(&mut self, out: &mut [u8]) -> Result<usize, RngError>;
}

/// The serving side of [`Rng`]: answers requests from an [`EntropySource`] and keeps the
/// counters of [`RngInfo`]. A `moat_ipc::Handler`, so `moat_ipc::Server::run` drives it.
#[derive(Debug)]
pub struct RngServer<E: EntropySource> {
    source: E,
    info: RngInfo,
}

impl<E: EntropySource> RngServer<E> {
    /// A server handing out `source`'s bytes.
    pub fn new(source: E) -> Self {
        RngServer {
            source,
            info: RngInfo {
                max_fill: MAX_FILL as u16,
                ..RngInfo::default()
            },
        }
    }

    /// The source.
    pub fn source(&self) -> &E {
        &self.source
    }

    /// The counters.
    pub fn info(&self) -> RngInfo {
        self.info
    }

    /// Answers one request.
    pub fn respond(&mut self, request: Request) -> Response {
        match request {
            Request::Info => Response::Info(self.info),
            Request::Fill { len } => match self.fill(usize::from(len)) {
                Ok(bytes) => {
                    self.info.fills += 1;
                    self.info.bytes += bytes.len() as u64;
                    Response::Bytes(bytes)
                }
                Err(error) => {
                    self.info.errors += 1;
                    Response::Refused(error)
                }
            },
        }
    }

    fn fill(&mut self, len: usize) -> Result<heapless::Vec<u8, MAX_FILL>, RngError> {
        if len == 0 || len > MAX_FILL {
            return Err(RngError::BadLength);
        }
        let mut buffer = [0u8; MAX_FILL];
        let mut filled = 0;
        for _ in 0..FILL_ATTEMPTS {
            let want = len - filled;
            // A source that claims more than it was given is held to what it was given.
            let got = self.source.fill(&mut buffer[filled..len])?.min(want);
            if got < want {
                self.info.short_reads += 1;
            }
            filled += got;
            if filled == len {
                return heapless::Vec::from_slice(&buffer[..len]).map_err(|_| RngError::BadLength);
            }
        }
        Err(RngError::Starved)
    }
}

impl<E: EntropySource> Handler<Rng> for RngServer<E> {
    fn handle(&mut self, request: Request, _context: &mut RequestContext) -> Response {
        self.respond(request)
    }
}

/// Why a client call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The IPC failed (`Dead`: the driver restarted; calling again reaches the new instance).
    Ipc(IpcError),
    /// The driver refused or failed the request.
    Rng(RngError),
    /// The driver answered with a response that does not fit the request.
    UnexpectedResponse,
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
            ClientError::Rng(error) => write!(f, "rng: {error}"),
            ClientError::UnexpectedResponse => f.write_str("unexpected response"),
        }
    }
}

/// A typed client of an entropy driver over the endpoint capability `endpoint`.
pub struct RngClient<S: Syscalls> {
    client: Client<Rng, S>,
}

impl<S: Syscalls> fmt::Debug for RngClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RngClient")
            .field("endpoint", &self.client.endpoint())
            .finish()
    }
}

impl<S: Syscalls> RngClient<S> {
    /// A client calling through `endpoint`, waiting forever for replies.
    pub fn new(syscalls: S, endpoint: CapSlot) -> Self {
        RngClient {
            client: Client::new(syscalls, endpoint),
        }
    }

    /// The same client with a timeout on every call.
    pub fn with_timeout(self, timeout: Timeout) -> Self {
        RngClient {
            client: self.client.with_timeout(timeout),
        }
    }

    fn call(&self, request: &Request) -> Result<Response, ClientError> {
        match self.client.call(request)? {
            Response::Refused(error) => Err(ClientError::Rng(error)),
            response => Ok(response),
        }
    }

    /// The driver's limit and counters.
    pub fn info(&self) -> Result<RngInfo, ClientError> {
        match self.call(&Request::Info)? {
            Response::Info(info) => Ok(info),
            _ => Err(ClientError::UnexpectedResponse),
        }
    }

    /// Fills all of `out` with random bytes, [`MAX_FILL`] per request. On an error `out` may be
    /// partly filled.
    pub fn fill(&self, out: &mut [u8]) -> Result<(), ClientError> {
        for chunk in out.chunks_mut(MAX_FILL) {
            // A chunk is at most MAX_FILL (192) bytes: it fits in a u16.
            let len = chunk.len() as u16;
            match self.call(&Request::Fill { len })? {
                Response::Bytes(bytes) if bytes.len() == chunk.len() => {
                    chunk.copy_from_slice(&bytes);
                }
                _ => return Err(ClientError::UnexpectedResponse),
            }
        }
        Ok(())
    }
}

/// A 32-byte seed and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed {
    /// The seed.
    pub bytes: [u8; 32],
    /// Whether the entropy driver's bytes went into it (otherwise only the kernel's did).
    pub from_device: bool,
}

impl Seed {
    /// The first 8 bytes as a little-endian `u64` (e.g. `smoltcp`'s `random_seed`).
    pub fn as_u64(&self) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.bytes[..8]);
        u64::from_le_bytes(word)
    }
}

/// SHA-256 over a domain label, the kernel's per-task entropy and the device's bytes (if any),
/// each length-prefixed: unpredictable if either input is.
pub fn mix_seed(kernel: &[u8; 32], device: Option<&[u8]>) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"moat rng seed v1");
    hash.update((kernel.len() as u64).to_le_bytes());
    hash.update(kernel);
    match device {
        Some(bytes) => {
            hash.update([1u8]);
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        None => hash.update([0u8]),
    }
    let digest = hash.finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest[..32]);
    out
}

/// A seed for this task: 32 bytes from the entropy driver behind `client` (if it is given and
/// answers) mixed with `TaskInfo::entropy`, the kernel's per-instance entropy ([`mix_seed`]).
/// Never fails: without the driver the seed is the kernel's entropy hashed
/// ([`Seed::from_device`] says which).
pub fn seed<S: Syscalls>(client: Option<&RngClient<S>>) -> Seed {
    let kernel = moat_userlib::task::info().map_or([0u8; 32], |info| info.entropy);
    let mut device = [0u8; 32];
    let from_device = client.is_some_and(|client| client.fill(&mut device).is_ok());
    Seed {
        bytes: mix_seed(&kernel, from_device.then_some(&device[..])),
        from_device,
    }
}

#[cfg(test)]
mod tests;
