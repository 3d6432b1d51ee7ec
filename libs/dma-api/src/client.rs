//! [`DmaClient`]: the typed client stub, one method per request.

use core::fmt;

use moat_abi::{CapSlot, Error, Message, Timeout};
use moat_userlib::Syscalls;

use crate::bounce::{Coherent, DirectionMarker, Grant};
use crate::protocol::{GrantReply, Request, Response, WINDOW_RIGHTS, WindowReply, decode_reply};
use crate::shared::{Window, map_window};
use crate::stats::{ClientStats, EventPage, FailureCounts, StatsSummary};
use crate::types::{ClientIdentity, DmaError};

/// Why a client call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The IPC itself failed (e.g. [`Error::Dead`]: the server restarted; register again).
    Ipc(Error),
    /// The server refused the request, or its reply was malformed ([`DmaError::Malformed`]).
    Dma(DmaError),
    /// The request needs a window and the client has not registered.
    NotRegistered,
}

impl From<DmaError> for ClientError {
    fn from(error: DmaError) -> Self {
        ClientError::Dma(error)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Ipc(error) => write!(f, "ipc: {error:?}"),
            ClientError::Dma(error) => write!(f, "dma: {error}"),
            ClientError::NotRegistered => f.write_str("not registered"),
        }
    }
}

/// A client of the DMA server, over the endpoint capability `endpoint`.
#[derive(Debug)]
pub struct DmaClient<S: Syscalls> {
    syscalls: S,
    endpoint: CapSlot,
    timeout: Timeout,
    window: Option<(Window, WindowReply, CapSlot)>,
}

impl<S: Syscalls> DmaClient<S> {
    /// A client that calls the server through `endpoint` and waits forever for replies.
    pub fn new(syscalls: S, endpoint: CapSlot) -> Self {
        DmaClient {
            syscalls,
            endpoint,
            timeout: Timeout::Forever,
            window: None,
        }
    }

    /// Sets how long each call waits for its reply.
    pub fn with_timeout(mut self, timeout: Timeout) -> Self {
        self.timeout = timeout;
        self
    }

    /// The syscalls handle.
    pub fn syscalls(&self) -> &S {
        &self.syscalls
    }

    /// The registered window and what the server said about it.
    pub fn window(&self) -> Option<(&Window, &WindowReply)> {
        self.window.as_ref().map(|(window, info, _)| (window, info))
    }

    /// Sends `request` and returns the decoded reply (and the message, for its capability).
    fn call(&self, request: Request) -> Result<(Response, Message), ClientError> {
        let mut message = Message::empty(0);
        request.encode(&mut message)?;
        self.syscalls
            .call(self.endpoint, &mut message, self.timeout)
            .map_err(ClientError::Ipc)?;
        let response = decode_reply(&message)?;
        Ok((response, message))
    }

    /// Registers and maps the window into this task. On the target this is the way in; host
    /// tests use [`DmaClient::register_with`] with a fake window.
    pub fn register(&mut self, quota_hint: Option<u64>) -> Result<WindowReply, ClientError> {
        self.register_with(quota_hint, |syscalls, memory, info| {
            let size = usize::try_from(info.size).map_err(|_| DmaError::Malformed)?;
            map_window(syscalls, memory, size, info.device_base)
        })
    }

    /// Registers and makes the window reachable with `map`, which is given the window's Memory
    /// capability and the server's description and returns the mapped [`Window`]. If `map`
    /// fails, the capability is dropped.
    ///
    /// A client registers once per instance; registering again (e.g. after [`Error::Dead`]
    /// from a restarted server) replaces the window and drops the old capability.
    pub fn register_with(
        &mut self,
        quota_hint: Option<u64>,
        map: impl FnOnce(&S, CapSlot, &WindowReply) -> Result<Window, DmaError>,
    ) -> Result<WindowReply, ClientError> {
        let (response, message) = self.call(Request::Register { quota_hint })?;
        let capability = match message.capability() {
            Some((slot, rights)) if rights == WINDOW_RIGHTS => Some(slot),
            Some((slot, _)) => {
                let _ = self.syscalls.cap_drop(slot);
                None
            }
            None => None,
        };
        let (Response::Window(info), Some(memory)) = (response, capability) else {
            if let Some(slot) = capability {
                let _ = self.syscalls.cap_drop(slot);
            }
            return Err(DmaError::Malformed.into());
        };
        let window = match map(&self.syscalls, memory, &info) {
            Ok(window) if window.len() as u64 == info.size => window,
            Ok(_) => {
                let _ = self.syscalls.cap_drop(memory);
                return Err(DmaError::Malformed.into());
            }
            Err(error) => {
                let _ = self.syscalls.cap_drop(memory);
                return Err(error.into());
            }
        };
        if let Some((_, _, old)) = self.window.replace((window, info, memory)) {
            // The old window's mapping stays (a window is never unmapped), only the spare
            // capability goes.
            let _ = self.syscalls.cap_drop(old);
        }
        Ok(info)
    }

    fn registered(&self) -> Result<&Window, ClientError> {
        self.window
            .as_ref()
            .map(|(window, _, _)| window)
            .ok_or(ClientError::NotRegistered)
    }

    fn grant_reply(&self, request: Request) -> Result<GrantReply, ClientError> {
        match self.call(request)?.0 {
            Response::Grant(reply) => Ok(reply),
            _ => Err(DmaError::Malformed.into()),
        }
    }

    /// Grants a streaming bounce buffer of `len` bytes for direction `D`, at a device address
    /// aligned to `align` (0 = slot size) not crossing a multiple of `boundary` (0 = none).
    pub fn map<D: DirectionMarker>(
        &self,
        len: usize,
        align: u64,
        boundary: u64,
    ) -> Result<Grant<D>, ClientError> {
        let window = self.registered()?;
        let reply = self.grant_reply(Request::Map {
            len: len as u64,
            direction: D::DIRECTION,
            align,
            boundary,
        })?;
        match Grant::from_reply(window, &reply) {
            Some(grant) if grant.len() == len => Ok(grant),
            _ => Err(DmaError::Malformed.into()),
        }
    }

    /// Returns a streaming grant to the window.
    pub fn unmap<D: DirectionMarker>(&self, grant: Grant<D>) -> Result<(), ClientError> {
        self.unmap_id(grant.id())
    }

    fn unmap_id(&self, id: crate::types::GrantId) -> Result<(), ClientError> {
        match self.call(Request::Unmap { id })?.0 {
            Response::Done => Ok(()),
            _ => Err(DmaError::Malformed.into()),
        }
    }

    /// Allocates a long-lived device-visible buffer of `size` bytes aligned to `align`.
    pub fn alloc_coherent(&self, size: usize, align: u64) -> Result<Coherent, ClientError> {
        let window = self.registered()?;
        let reply = self.grant_reply(Request::AllocCoherent {
            size: size as u64,
            align,
        })?;
        match Coherent::from_reply(window, &reply) {
            Some(coherent) if coherent.len() == size => Ok(coherent),
            _ => Err(DmaError::Malformed.into()),
        }
    }

    /// Frees a coherent allocation (the device must no longer use it).
    pub fn free_coherent(&self, coherent: Coherent) -> Result<(), ClientError> {
        self.unmap_id(coherent.id())
    }

    /// Declares this restarted instance's device reset; returns the slots taken out of
    /// quarantine.
    pub fn reset_complete(&self) -> Result<u64, ClientError> {
        match self.call(Request::ResetComplete)?.0 {
            Response::Slots(slots) => Ok(slots),
            _ => Err(DmaError::Malformed.into()),
        }
    }

    /// The server-wide summary.
    pub fn stats(&self) -> Result<StatsSummary, ClientError> {
        match self.call(Request::Stats)?.0 {
            Response::Stats(stats) => Ok(stats),
            _ => Err(DmaError::Malformed.into()),
        }
    }

    /// Failures by reason.
    pub fn failures(&self) -> Result<FailureCounts, ClientError> {
        match self.call(Request::Failures)?.0 {
            Response::Failures(failures) => Ok(failures),
            _ => Err(DmaError::Malformed.into()),
        }
    }

    /// The first client after `after` (in identity order) whose figures the caller may see.
    pub fn client_stats(
        &self,
        after: Option<ClientIdentity>,
    ) -> Result<Option<ClientStats>, ClientError> {
        match self.call(Request::ClientStats { after })?.0 {
            Response::Client(stats) => match (stats, after) {
                (Some(stats), Some(after)) if stats.identity <= after => {
                    Err(DmaError::Malformed.into())
                }
                (stats, _) => Ok(stats),
            },
            _ => Err(DmaError::Malformed.into()),
        }
    }

    /// Every visible client's figures, in identity order, passed to `each`; at most `limit`
    /// calls (so a misbehaving server cannot keep the caller looping).
    pub fn for_each_client(
        &self,
        limit: usize,
        mut each: impl FnMut(&ClientStats),
    ) -> Result<(), ClientError> {
        let mut after = None;
        for _ in 0..limit {
            match self.client_stats(after)? {
                Some(stats) => {
                    each(&stats);
                    after = Some(stats.identity);
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Recent events from sequence `from` on.
    pub fn events(&self, from: u64) -> Result<EventPage, ClientError> {
        match self.call(Request::Events { from })?.0 {
            Response::Events(page) if page.next >= from => Ok(page),
            _ => Err(DmaError::Malformed.into()),
        }
    }

    /// Observer or supervisor: restarts high-water tracking.
    pub fn reset_high_water(&self) -> Result<(), ClientError> {
        match self.call(Request::ResetHighWater)?.0 {
            Response::Done => Ok(()),
            _ => Err(DmaError::Malformed.into()),
        }
    }

    /// Supervisor: the client `client` died; returns the slots its grants put in quarantine.
    pub fn revoke(&self, client: ClientIdentity) -> Result<u64, ClientError> {
        match self.call(Request::Revoke { client })?.0 {
            Response::Slots(slots) => Ok(slots),
            _ => Err(DmaError::Malformed.into()),
        }
    }
}
