//! Typed IPC for Moat: a protocol is a request enum, a response enum and an id; this crate
//! carries them in [`Message`] payloads (serde + postcard), with a client stub and a server
//! dispatch loop.
//!
//! # Defining a protocol
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! enum Request { Add(u32, u32), Ping }
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! enum Response { Sum(u32), Pong }
//!
//! struct Calculator;
//! impl moat_ipc::Protocol for Calculator {
//!     const ID: u32 = 0x0000_0100;
//!     type Request = Request;
//!     type Response = Response;
//! }
//! ```
//!
//! A client calls with [`Client::call`]; a server answers with [`Server::serve_one`] or
//! [`Server::run`] and a [`Handler`] (any `FnMut(Request, &mut RequestContext) -> Response`
//! works). Application errors belong in the response type (e.g. `Response::Error(MyError)` or a
//! `Result`); this crate's own errors are about transport and encoding.
//!
//! # Wire format
//!
//! - A request has label [`Protocol::ID`] and the postcard encoding of the request as payload.
//! - A reply has label [`REPLY_OK`] with the encoded response, or [`REPLY_ERROR`] with an encoded
//!   [`RemoteError`] when the server could not handle the request at all (it could not decode it,
//!   the label named another protocol, or the response did not fit).
//! - Payloads must decode completely: trailing bytes make a request malformed.
//! - A capability may ride along in either direction ([`Client::call_with_capability`],
//!   [`RequestContext::attach_capability`]).
//!
//! Every byte of a request is untrusted input: the server decodes it with postcard (which checks
//! lengths and enum tags) and answers garbage with an error reply, then keeps serving.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use core::fmt;
use core::marker::PhantomData;

use moat_abi::{CapSlot, Error, Message, MessageHeader, Rights, TaskId, Timeout};
use moat_userlib::{Received, Syscalls};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Reply label: the payload is the encoded response.
pub const REPLY_OK: u32 = 0;
/// Reply label: the payload is an encoded [`RemoteError`].
pub const REPLY_ERROR: u32 = 1;

/// A request/response protocol carried in messages.
pub trait Protocol {
    /// The label of every request of this protocol: unique per server endpoint, not
    /// [`REPLY_OK`] or [`REPLY_ERROR`], and below the kernel-reserved labels.
    const ID: u32;
    /// What clients send.
    type Request: Serialize + DeserializeOwned;
    /// What the server answers.
    type Response: Serialize + DeserializeOwned;
}

/// Whether `id` is usable as a [`Protocol::ID`].
pub const fn valid_protocol_id(id: u32) -> bool {
    id != REPLY_OK && id != REPLY_ERROR && id < MessageHeader::KERNEL_LABEL_BASE
}

/// Why a server refused a request without handling it (sent back in a [`REPLY_ERROR`] reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteError {
    /// The payload did not decode as a request of the protocol.
    MalformedRequest,
    /// The label named no protocol this server speaks.
    UnknownProtocol,
    /// The response did not fit in a message.
    ResponseTooLarge,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            RemoteError::MalformedRequest => "malformed request",
            RemoteError::UnknownProtocol => "unknown protocol",
            RemoteError::ResponseTooLarge => "response too large",
        })
    }
}

/// What can go wrong with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpcError {
    /// The kernel refused or ended the call (`Dead`, `QueueFull`, `TimedOut`, …).
    Kernel(Error),
    /// The request did not fit in a message.
    RequestTooLarge,
    /// The reply did not decode (a confused or hostile server).
    MalformedReply,
    /// The server refused the request.
    Remote(RemoteError),
}

impl From<Error> for IpcError {
    fn from(error: Error) -> Self {
        IpcError::Kernel(error)
    }
}

impl fmt::Display for IpcError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::Kernel(error) => write!(formatter, "kernel: {error}"),
            IpcError::RequestTooLarge => formatter.write_str("request too large for a message"),
            IpcError::MalformedReply => formatter.write_str("malformed reply"),
            IpcError::Remote(error) => write!(formatter, "server: {error}"),
        }
    }
}

/// Encodes `value` as the payload of a message with `label`; `None` if it does not fit.
pub fn encode<T: Serialize>(label: u32, value: &T) -> Option<Message> {
    let mut message = Message::empty(label);
    let length = postcard::to_slice(value, &mut message.payload).ok()?.len();
    message.set_length(length).ok()?;
    Some(message)
}

/// Decodes a whole payload as a `T`; `None` if it is malformed or has trailing bytes.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Option<T> {
    match postcard::take_from_bytes(payload) {
        Ok((value, [])) => Some(value),
        _ => None,
    }
}

/// A reply and the capability it carried, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<T> {
    /// The decoded response.
    pub response: T,
    /// A capability the server sent with it (the slot is in the caller's table).
    pub capability: Option<(CapSlot, Rights)>,
}

/// A typed client for protocol `P` over the endpoint capability `endpoint`.
pub struct Client<P: Protocol, S: Syscalls> {
    syscalls: S,
    endpoint: CapSlot,
    timeout: Timeout,
    protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol, S: Syscalls> Client<P, S> {
    /// A client calling through `endpoint`, waiting forever for replies.
    pub fn new(syscalls: S, endpoint: CapSlot) -> Self {
        const { assert!(valid_protocol_id(P::ID), "invalid protocol id") };
        Client {
            syscalls,
            endpoint,
            timeout: Timeout::Forever,
            protocol: PhantomData,
        }
    }

    /// The same client with a timeout for every call.
    pub fn with_timeout(mut self, timeout: Timeout) -> Self {
        self.timeout = timeout;
        self
    }

    /// The endpoint capability.
    pub fn endpoint(&self) -> CapSlot {
        self.endpoint
    }

    /// The syscall implementation.
    pub fn syscalls(&self) -> &S {
        &self.syscalls
    }

    /// Sends `request` and waits for the response.
    pub fn call(&self, request: &P::Request) -> Result<P::Response, IpcError> {
        self.call_with_capability(request, None)
            .map(|reply| reply.response)
    }

    /// Sends `request`, carrying a copy of the capability in `capability` with the given rights
    /// if set, and waits for the response and any capability the server returns.
    pub fn call_with_capability(
        &self,
        request: &P::Request,
        capability: Option<(CapSlot, Rights)>,
    ) -> Result<Reply<P::Response>, IpcError> {
        let mut message = encode(P::ID, request).ok_or(IpcError::RequestTooLarge)?;
        if let Some((slot, rights)) = capability {
            message = message.with_capability(slot, rights);
        }
        self.syscalls
            .call(self.endpoint, &mut message, self.timeout)?;
        let capability = message.capability();
        match message.label() {
            REPLY_OK => {
                let response = decode(message.payload()).ok_or(IpcError::MalformedReply)?;
                Ok(Reply {
                    response,
                    capability,
                })
            }
            REPLY_ERROR => Err(decode(message.payload())
                .map(IpcError::Remote)
                .unwrap_or(IpcError::MalformedReply)),
            _ => Err(IpcError::MalformedReply),
        }
    }

    /// Sends `request` without waiting for an answer (the server handles it and discards the
    /// response). Never blocks: `QueueFull` is back-pressure.
    pub fn send(&self, request: &P::Request) -> Result<(), IpcError> {
        let message = encode(P::ID, request).ok_or(IpcError::RequestTooLarge)?;
        self.syscalls.send(self.endpoint, &message)?;
        Ok(())
    }
}

/// Who sent a request, and what the handler wants to send back besides the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    /// The badge of the client's capability (the kernel stamps it; it cannot be forged).
    pub badge: u64,
    /// The sending task instance.
    pub sender: TaskId,
    /// A capability that came with the request (already in the server's table).
    pub capability: Option<(CapSlot, Rights)>,
    /// Whether the client waits for a reply (a `call`) rather than having `send`-ed.
    pub expects_reply: bool,
    reply_capability: Option<(CapSlot, Rights)>,
}

impl RequestContext {
    fn of(message: &Message) -> RequestContext {
        RequestContext {
            badge: message.header.badge,
            sender: message.header.sender,
            capability: message.capability(),
            expects_reply: message.reply_capability().is_some(),
            reply_capability: None,
        }
    }

    /// Sends a copy of the server's capability `slot` with `rights` along with the response.
    pub fn attach_capability(&mut self, slot: CapSlot, rights: Rights) {
        self.reply_capability = Some((slot, rights));
    }
}

/// Handles the requests of protocol `P`.
pub trait Handler<P: Protocol> {
    /// Answers one request.
    fn handle(&mut self, request: P::Request, context: &mut RequestContext) -> P::Response;

    /// Notification bits arrived (only when the server waits with a notification mask).
    fn notified(&mut self, bits: u64) {
        let _ = bits;
    }

    /// A message this protocol does not cover arrived without expecting a reply (e.g. a kernel
    /// fault report, or a malformed `send`). The default drops it.
    fn unhandled(&mut self, message: &Message) {
        let _ = message;
    }
}

impl<P, F> Handler<P> for F
where
    P: Protocol,
    F: FnMut(P::Request, &mut RequestContext) -> P::Response,
{
    fn handle(&mut self, request: P::Request, context: &mut RequestContext) -> P::Response {
        self(request, context)
    }
}

/// What one [`Server::serve_one`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// A request was handled (and answered, if it was a call).
    Handled,
    /// A request was refused with an error reply (or dropped, if it was not a call).
    Refused(RemoteError),
    /// Notification bits were passed to [`Handler::notified`].
    Notified(u64),
    /// A message outside the protocol went to [`Handler::unhandled`].
    Unhandled,
    /// The handler's reply could not be delivered (the client died or stopped waiting): the
    /// kernel's error.
    ReplyFailed(Error),
}

/// The serving side of protocol `P` on the endpoint capability `endpoint`.
pub struct Server<P: Protocol, S: Syscalls> {
    syscalls: S,
    endpoint: CapSlot,
    notification_mask: u64,
    protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol, S: Syscalls> Server<P, S> {
    /// A server receiving on `endpoint` (which needs `RECEIVE`).
    pub fn new(syscalls: S, endpoint: CapSlot) -> Self {
        const { assert!(valid_protocol_id(P::ID), "invalid protocol id") };
        Server {
            syscalls,
            endpoint,
            notification_mask: 0,
            protocol: PhantomData,
        }
    }

    /// Also wake for notification bits in `mask` (interrupts, signals), passed to
    /// [`Handler::notified`].
    pub fn with_notifications(mut self, mask: u64) -> Self {
        self.notification_mask = mask;
        self
    }

    /// The syscall implementation.
    pub fn syscalls(&self) -> &S {
        &self.syscalls
    }

    /// Waits up to `timeout` for one message or notification and deals with it. Errors are the
    /// kernel's from `Recv` (`WouldBlock`, `TimedOut`, …); a bad request is not an error here
    /// but an error reply ([`Served::Refused`]).
    pub fn serve_one(
        &mut self,
        handler: &mut impl Handler<P>,
        timeout: Timeout,
    ) -> Result<Served, Error> {
        let mut message = Message::empty(0);
        match self
            .syscalls
            .recv(self.endpoint, &mut message, timeout, self.notification_mask)?
        {
            Received::Notification(bits) => {
                handler.notified(bits);
                Ok(Served::Notified(bits))
            }
            Received::Message => Ok(self.dispatch(handler, &message)),
        }
    }

    /// Serves forever. `Recv` errors other than timeouts (which cannot happen with
    /// `Timeout::Forever`) are passed to `on_error`, which decides whether to go on.
    pub fn run(
        &mut self,
        handler: &mut impl Handler<P>,
        mut on_error: impl FnMut(Error) -> bool,
    ) -> Error {
        loop {
            if let Err(error) = self.serve_one(handler, Timeout::Forever)
                && !on_error(error)
            {
                return error;
            }
        }
    }

    /// Handles one received message.
    pub fn dispatch(&mut self, handler: &mut impl Handler<P>, message: &Message) -> Served {
        let reply = message.reply_capability();
        let refused = if message.label() != P::ID {
            RemoteError::UnknownProtocol
        } else if let Some(request) = decode::<P::Request>(message.payload()) {
            let mut context = RequestContext::of(message);
            let response = handler.handle(request, &mut context);
            let Some(reply) = reply else {
                return Served::Handled;
            };
            return match encode(REPLY_OK, &response) {
                Some(mut answer) => {
                    if let Some((slot, rights)) = context.reply_capability {
                        answer = answer.with_capability(slot, rights);
                    }
                    match self.syscalls.reply(reply, &answer) {
                        Ok(()) => Served::Handled,
                        Err(error) => Served::ReplyFailed(error),
                    }
                }
                None => self.refuse(reply, RemoteError::ResponseTooLarge),
            };
        } else {
            RemoteError::MalformedRequest
        };
        match reply {
            Some(reply) => self.refuse(reply, refused),
            None if refused == RemoteError::UnknownProtocol => {
                handler.unhandled(message);
                Served::Unhandled
            }
            None => Served::Refused(refused),
        }
    }

    fn refuse(&mut self, reply: CapSlot, error: RemoteError) -> Served {
        // A RemoteError always fits in a message.
        let answer = encode(REPLY_ERROR, &error).unwrap_or_else(|| Message::empty(REPLY_ERROR));
        match self.syscalls.reply(reply, &answer) {
            Ok(()) => Served::Refused(error),
            Err(failure) => Served::ReplyFailed(failure),
        }
    }
}
