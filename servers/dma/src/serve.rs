//! The serve loop of the DMA server task, over the [`Syscalls`] trait so it runs against the
//! fake kernel in host tests.
//!
//! The server receives on two endpoints: `dma`, where clients (drivers, dmastat) call, and
//! `dma-admin`, which only the supervisor calls (`Revoke` when a task ends). A task receives on
//! one endpoint at a time, so the loop waits on `dma` with a short timeout
//! ([`ADMIN_POLL_MS`]) and drains `dma-admin` without blocking before every wait and after
//! every client request; the supervisor's requests therefore wait at most that long and are
//! always served before queued client requests. Without an admin endpoint the loop waits on
//! `dma` forever.
//!
//! Every call gets a reply. A capability a sender attaches is dropped at once (the server never
//! wants one, and keeping them would let a client fill its capability table); a message sent
//! without `call` cannot be answered and is counted as malformed.

use core::convert::Infallible;

use moat_abi::{CapSlot, Error, Message, Timeout};
use moat_dma_api::{DmaConfig, WINDOW_RIGHTS};
use moat_userlib::{Received, Syscalls};

use crate::dispatch::Dispatcher;
use crate::error::DmaError;
use crate::grant::ClientIdentity;
use crate::pool::DEFAULT_SLOT_SIZE;
use crate::server::{DmaServer, ServerConfig};
use crate::syscall_backing::{SyscallBacking, ZeroFn};

/// How long the loop waits on the client endpoint before looking at the admin endpoint again.
pub const ADMIN_POLL_MS: u64 = 10;

/// Consecutive receive errors after which the loop gives up (the kernel refusing `recv` over
/// and over means the server's capabilities are broken; the supervisor restarts it).
const MAX_CONSECUTIVE_ERRORS: u32 = 1000;

/// The endpoints the server receives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// `serve:dma`: clients and observers.
    pub clients: CapSlot,
    /// `serve:dma-admin`: the supervisor (absent in systems without one).
    pub admin: Option<CapSlot>,
}

/// The DMA server task: the dispatcher over the syscall backing, and its message buffers.
#[derive(Debug)]
pub struct Serve<S: Syscalls + Clone> {
    syscalls: S,
    endpoints: Endpoints,
    config: DmaConfig,
    dispatcher: Dispatcher<SyscallBacking<S>>,
    request: Message,
    reply: Message,
}

impl<S: Syscalls + Clone> Serve<S> {
    /// A server for the clients in `config`, sharing memory with the Share capability `share`
    /// and zeroing windows with `zero`.
    pub fn new(
        syscalls: S,
        share: CapSlot,
        zero: ZeroFn<S>,
        config: DmaConfig,
        endpoints: Endpoints,
    ) -> Self {
        let backing = SyscallBacking::new(syscalls.clone(), share, zero);
        let server = DmaServer::new(
            ServerConfig {
                slot_size: DEFAULT_SLOT_SIZE,
                budget_bytes: config.budget_bytes,
            },
            backing,
        );
        let dispatcher = Dispatcher::new(server, config.quotas());
        Serve {
            syscalls,
            endpoints,
            config,
            dispatcher,
            request: Message::zeroed(),
            reply: Message::zeroed(),
        }
    }

    /// The dispatcher (statistics, the model, the backing).
    pub fn dispatcher(&self) -> &Dispatcher<SyscallBacking<S>> {
        &self.dispatcher
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &DmaConfig {
        &self.config
    }

    /// Serves every message queued on both endpoints (admin first) without blocking; returns
    /// how many were handled.
    pub fn serve_pending(&mut self) -> Result<usize, Error> {
        let mut handled = 0;
        loop {
            let admin = self.drain_admin()?;
            let client = self.receive_one(self.endpoints.clients, false, Timeout::NonBlocking)?;
            handled += admin + usize::from(client);
            if admin == 0 && !client {
                return Ok(handled);
            }
        }
    }

    /// The serve loop: never returns unless receiving keeps failing.
    pub fn run(&mut self) -> Result<Infallible, Error> {
        let wait = match self.endpoints.admin {
            Some(_) => Timeout::from_milliseconds(ADMIN_POLL_MS),
            None => Timeout::Forever,
        };
        let mut errors = 0u32;
        loop {
            let result = self
                .drain_admin()
                .and_then(|_| self.receive_one(self.endpoints.clients, false, wait));
            match result {
                Ok(_) => errors = 0,
                Err(error) => {
                    errors += 1;
                    if errors == 1 {
                        log::warn!("receive failed: {error:?}");
                    }
                    if errors >= MAX_CONSECUTIVE_ERRORS {
                        return Err(error);
                    }
                }
            }
        }
    }

    fn drain_admin(&mut self) -> Result<usize, Error> {
        let Some(admin) = self.endpoints.admin else {
            return Ok(0);
        };
        let mut handled = 0;
        while self.receive_one(admin, true, Timeout::NonBlocking)? {
            handled += 1;
        }
        Ok(handled)
    }

    /// Receives one message on `endpoint` and answers it; `Ok(false)` when none came in time.
    fn receive_one(
        &mut self,
        endpoint: CapSlot,
        on_admin: bool,
        timeout: Timeout,
    ) -> Result<bool, Error> {
        match self.syscalls.recv(endpoint, &mut self.request, timeout, 0) {
            Ok(Received::Message) => {
                self.answer(on_admin);
                Ok(true)
            }
            Ok(Received::Notification(_)) | Err(Error::WouldBlock | Error::TimedOut) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Answers the request in `self.request`.
    fn answer(&mut self, on_admin: bool) {
        if let Some((slot, _)) = self.request.capability() {
            let _ = self.syscalls.cap_drop(slot);
        }
        let Some(reply_capability) = self.request.reply_capability() else {
            let identity = ClientIdentity(self.request.header.badge as u32);
            self.dispatcher
                .server_mut()
                .record_failure(identity, DmaError::Malformed);
            return;
        };
        let window = self
            .dispatcher
            .handle_message(&self.request, on_admin, &mut self.reply);
        let mut reply = self.reply.clone();
        if let Some(region) = window {
            let capability = self.dispatcher.server().backing().capability(&region);
            let identity = ClientIdentity(self.request.header.badge as u32);
            log::info!(
                "{} (identity {}) registered: window {} KiB at device address {:#x}",
                self.config.name_of(identity).unwrap_or("?"),
                identity.0,
                region.pages * moat_abi::PAGE_SIZE / 1024,
                region.device_base
            );
            match capability {
                Some(slot) => reply = reply.with_capability(slot, WINDOW_RIGHTS),
                None => {
                    // Cannot happen (the backing made the region); the client sees a window
                    // reply without a capability and reports it as malformed.
                    log::error!("no capability for window {region:?}");
                }
            }
        }
        // A caller that died meanwhile (`Dead`) needs no answer.
        let _ = self.syscalls.reply(reply_capability, &reply);
    }
}
