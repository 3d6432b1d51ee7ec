//! Request dispatch: from a received [`Message`] to the encoded reply, the step the thin
//! binary's serve loop runs for every message.
//!
//! The caller is taken from what the kernel stamped on the message, never from the payload:
//! the badge gives the client's manifest identity and [`Role`] (see [`moat_dma_api::badge`]),
//! the sender's `TaskId` its instance. The supervisor role counts only for messages that
//! arrived on the supervisor's own endpoint. Every request gets a reply — an error for a
//! malformed payload, a badge without the needed role or a refused operation — and nothing a
//! client sends can stop the server.

use alloc::collections::BTreeMap;

use moat_abi::Message;
use moat_dma_api::protocol::{GrantReply, Reply, Request, Response, Role, WindowReply};
use moat_dma_api::stats::{EVENTS_PER_PAGE, EventPage, StatsSummary};
use moat_dma_api::{badge, instance_of};

use crate::backing::{Backing, SharedRegion};
use crate::error::DmaError;
use crate::grant::{ClientIdentity, ClientRef};
use crate::server::{DmaServer, GrantInfo, Supervisor, WindowInfo};

/// Who sent a request, as the kernel vouches for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Identity and instance.
    pub client: ClientRef,
    /// What the caller may do.
    pub role: Role,
}

impl Caller {
    /// The caller of a received message: identity and role from the badge, instance from the
    /// sender. A supervisor badge on any endpoint but the supervisor's is
    /// [`DmaError::Denied`], as is a badge with undefined bits.
    pub fn from_message(
        message: &Message,
        on_supervisor_endpoint: bool,
    ) -> Result<Caller, DmaError> {
        let (identity, role) = badge::decode(message.header.badge)?;
        if role == Role::Supervisor && !on_supervisor_endpoint {
            return Err(DmaError::Denied);
        }
        Ok(Caller {
            client: ClientRef {
                identity,
                instance: instance_of(message.header.sender),
            },
            role,
        })
    }
}

/// The reply to one request, and the window whose Memory capability must travel with it (only
/// for a successful `Register`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The reply.
    pub reply: Reply,
    /// The region to attach, with rights [`moat_dma_api::WINDOW_RIGHTS`].
    pub window: Option<SharedRegion>,
}

/// The DMA server with its manifest quotas: decodes requests, applies roles and quotas, and
/// calls the model.
#[derive(Debug)]
pub struct Dispatcher<B: Backing> {
    server: DmaServer<B>,
    quotas: BTreeMap<ClientIdentity, u64>,
}

impl<B: Backing> Dispatcher<B> {
    /// A dispatcher over `server`; `quotas` gives each manifest identity that may register its
    /// window size in bytes. Identity 0 (unbadged capabilities) never gets a window.
    pub fn new(
        server: DmaServer<B>,
        quotas: impl IntoIterator<Item = (ClientIdentity, u64)>,
    ) -> Self {
        let quotas = quotas
            .into_iter()
            .filter(|(identity, _)| identity.0 != 0)
            .collect();
        Dispatcher { server, quotas }
    }

    /// The model.
    pub fn server(&self) -> &DmaServer<B> {
        &self.server
    }

    /// The model, mutably (the serve loop's own bookkeeping, tests).
    pub fn server_mut(&mut self) -> &mut DmaServer<B> {
        &mut self.server
    }

    /// Handles one received message: writes the encoded reply into `reply` and returns the
    /// region whose capability the serve loop must attach to it. Never fails: a request that
    /// cannot be decoded gets a [`DmaError::Malformed`] reply.
    pub fn handle_message(
        &mut self,
        message: &Message,
        on_supervisor_endpoint: bool,
        reply: &mut Message,
    ) -> Option<SharedRegion> {
        let outcome = self.handle(message, on_supervisor_endpoint);
        match moat_dma_api::protocol::encode_reply(&outcome.reply, reply) {
            Ok(()) => outcome.window,
            Err(error) => {
                // Cannot happen (every reply fits, tested); answer with the bare error rather
                // than nothing.
                let _ = moat_dma_api::protocol::encode_reply(&Err(error), reply);
                None
            }
        }
    }

    /// Decodes and dispatches one message.
    pub fn handle(&mut self, message: &Message, on_supervisor_endpoint: bool) -> Outcome {
        let decoded = Caller::from_message(message, on_supervisor_endpoint)
            .and_then(|caller| Request::decode(message).map(|request| (caller, request)));
        match decoded {
            Ok((caller, request)) => self.dispatch(caller, request),
            Err(error) => {
                let identity = ClientIdentity(message.header.badge as u32);
                self.server.record_failure(identity, error);
                Outcome {
                    reply: Err(error),
                    window: None,
                }
            }
        }
    }

    /// Carries out one decoded request.
    pub fn dispatch(&mut self, caller: Caller, request: Request) -> Outcome {
        let identity = caller.client.identity;
        let privileged = matches!(caller.role, Role::Observer | Role::Supervisor);
        let mut window = None;
        let reply = match request {
            Request::Register { quota_hint } => {
                self.register(caller.client, quota_hint).map(|info| {
                    window = self.server.window_region(identity);
                    Response::Window(window_reply(info))
                })
            }
            Request::AllocCoherent { size, align } => self
                .server
                .alloc_coherent(caller.client, size, align)
                .map(grant_reply),
            Request::Map {
                len,
                direction,
                align,
                boundary,
            } => self
                .server
                .map(caller.client, len, direction, align, boundary)
                .map(grant_reply),
            Request::Unmap { id } => self
                .server
                .unmap(caller.client, id)
                .map(|()| Response::Done),
            Request::ResetComplete => self
                .server
                .reset_complete(caller.client)
                .map(Response::Slots),
            Request::Stats => Ok(Response::Stats(self.summary())),
            Request::Failures => Ok(Response::Failures(self.server.failures())),
            Request::ClientStats { after } => Ok(Response::Client(if privileged {
                self.server.next_client_stats(after)
            } else if after.is_none_or(|after| after < identity) {
                self.server.client_stats(identity)
            } else {
                None
            })),
            Request::Events { from } => Ok(Response::Events(
                self.events(from, (!privileged).then_some(identity)),
            )),
            Request::ResetHighWater if privileged => {
                self.server.reset_high_water();
                Ok(Response::Done)
            }
            Request::Revoke { client } if caller.role == Role::Supervisor => self
                .server
                .revoke(&Supervisor::from_supervisor_endpoint(), client)
                .map(Response::Slots),
            Request::ResetHighWater | Request::Revoke { .. } => {
                self.server.record_failure(identity, DmaError::Denied);
                Err(DmaError::Denied)
            }
        };
        Outcome { reply, window }
    }

    fn register(
        &mut self,
        caller: ClientRef,
        quota_hint: Option<u64>,
    ) -> Result<WindowInfo, DmaError> {
        let Some(&quota) = self.quotas.get(&caller.identity) else {
            self.server
                .record_failure(caller.identity, DmaError::NotRegistered);
            return Err(DmaError::NotRegistered);
        };
        let size = quota_hint.map_or(quota, |hint| hint.min(quota));
        self.server.register(caller, size)
    }

    fn summary(&self) -> StatsSummary {
        self.server.stats()
    }

    /// Up to [`EVENTS_PER_PAGE`] kept events from sequence `from` on (only `only`'s, if set).
    fn events(&self, from: u64, only: Option<ClientIdentity>) -> EventPage {
        let mut page = EventPage {
            events: heapless::Vec::new(),
            next: from.max(self.server.events_total()),
        };
        let wanted = self
            .server
            .events()
            .into_iter()
            .filter(|event| event.sequence >= from)
            .filter(|event| only.is_none_or(|identity| event.client == identity));
        for event in wanted {
            if page.events.push(event).is_err() {
                break;
            }
            page.next = event.sequence + 1;
            if page.events.len() == EVENTS_PER_PAGE {
                break;
            }
        }
        if page.events.len() < EVENTS_PER_PAGE {
            page.next = from.max(self.server.events_total());
        }
        page
    }
}

fn window_reply(info: WindowInfo) -> WindowReply {
    WindowReply {
        device_base: info.device_base,
        size: info.size,
        slot_size: info.slot_size,
        max_mapping_size: info.max_mapping_size,
        reset_pending: info.reset_pending,
    }
}

fn grant_reply(info: GrantInfo) -> Response {
    Response::Grant(GrantReply {
        id: info.id,
        window_offset: info.window_offset,
        device_address: info.device_address,
        length: info.length,
    })
}
