//! [`NetServer`]: the `net-api` request handler over a [`NetDevice`].
//!
//! # Copies
//!
//! - Transmit: client frame region → driver staging buffer (private) → bounce grant (shared,
//!   `Bounce::to_device`) → device. The staging copy is where the net header is put in front;
//!   the region is never read twice for one frame.
//! - Receive: device → bounce grant (shared) → private buffer (`InFlight::complete`, then the
//!   checks of [`crate::frame`]) → client frame region (on `Receive`).
//!
//! The region is the client's memory: the handler checks every slot and length in a request
//! against `moat-net-api`'s constants, reads each frame out exactly once, and never forms a
//! reference into it.

use moat_abi::{CapSlot, Rights};
use moat_ipc::{Handler, RequestContext};
use moat_net_api::{
    FrameMemory, NetError, NetProtocol, REGION_RIGHTS, REGION_SIZE, RX_SLOTS, Request, Response,
    TX_SLOTS, rx_slot_offset, tx_slot_offset,
};
use moat_virtio::Mmio;

use crate::device::NetDevice;
use crate::dma::DmaMemory;

/// What the handler needs from the task around it.
pub trait Platform {
    /// The client's frame region once mapped.
    type Region: FrameMemory;
    /// Maps the Memory capability `memory` (received with `rights`) as a frame region.
    fn map_region(&mut self, memory: CapSlot, rights: Rights) -> Option<Self::Region>;
    /// Drops a capability the handler will not use.
    fn drop_capability(&mut self, slot: CapSlot);
    /// Acknowledges the device interrupt at the interrupt controller (after the device's own
    /// interrupt status was acknowledged and the rings drained).
    fn acknowledge_irq(&mut self);
}

/// The attached client.
struct Attached<R> {
    badge: u64,
    region: R,
}

/// Serves `net-api` over a device. See the [module docs](self).
pub struct NetServer<T: Mmio, D: DmaMemory, P: Platform> {
    device: NetDevice<T, D>,
    platform: P,
    client: Option<Attached<P::Region>>,
    irq_mask: u64,
}

impl<T: Mmio, D: DmaMemory, P: Platform> core::fmt::Debug for NetServer<T, D, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetServer")
            .field("device", &self.device)
            .field("attached", &self.client.as_ref().map(|client| client.badge))
            .finish()
    }
}

impl<T: Mmio, D: DmaMemory, P: Platform> NetServer<T, D, P> {
    /// A server for `device`; notification bits in `irq_mask` are the device's interrupt.
    pub fn new(device: NetDevice<T, D>, platform: P, irq_mask: u64) -> Self {
        NetServer {
            device,
            platform,
            client: None,
            irq_mask,
        }
    }

    /// The device.
    pub fn device(&self) -> &NetDevice<T, D> {
        &self.device
    }

    /// The device, mutably (tests, shutdown).
    pub fn device_mut(&mut self) -> &mut NetDevice<T, D> {
        &mut self.device
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    fn attach(&mut self, badge: u64, capability: Option<(CapSlot, Rights)>) -> Response {
        let Some((slot, rights)) = capability else {
            return Response::Error(NetError::BadRegion);
        };
        if let Some(client) = &self.client
            && client.badge != badge
        {
            self.platform.drop_capability(slot);
            return Response::Error(NetError::Busy);
        }
        if !rights.contains(REGION_RIGHTS) {
            self.platform.drop_capability(slot);
            return Response::Error(NetError::BadRegion);
        }
        match self.platform.map_region(slot, rights) {
            Some(region) if region.len() >= REGION_SIZE => {
                self.client = Some(Attached { badge, region });
                Response::Link(self.device.link())
            }
            _ => {
                self.platform.drop_capability(slot);
                Response::Error(NetError::BadRegion)
            }
        }
    }

    fn client(&self, badge: u64) -> Result<&P::Region, NetError> {
        match &self.client {
            Some(client) if client.badge == badge => Ok(&client.region),
            Some(_) => Err(NetError::Busy),
            None => Err(NetError::NotAttached),
        }
    }

    fn transmit(&mut self, frames: &[moat_net_api::TxFrame], badge: u64) -> Response {
        let mut seen = [false; TX_SLOTS];
        for frame in frames {
            match seen.get_mut(usize::from(frame.slot)) {
                Some(used) if !*used => *used = true,
                _ => return Response::Error(NetError::BadSlot),
            }
        }
        if self.device.faulted() {
            return Response::Error(NetError::Device);
        }
        let region = match &self.client {
            Some(client) if client.badge == badge => &client.region,
            Some(_) => return Response::Error(NetError::Busy),
            None => return Response::Error(NetError::NotAttached),
        };
        let mut accepted = 0u8;
        for frame in frames {
            let Some(offset) = tx_slot_offset(usize::from(frame.slot)) else {
                break;
            };
            let sent = self
                .device
                .send_with(usize::from(frame.len), |buffer| region.read(offset, buffer));
            if sent.is_err() {
                break;
            }
            accepted += 1;
        }
        self.device.flush();
        Response::Sent { accepted }
    }

    fn receive(&mut self, badge: u64) -> Response {
        if let Err(error) = self.client(badge) {
            return Response::Error(error);
        }
        let Some(client) = &self.client else {
            return Response::Error(NetError::NotAttached);
        };
        let mut lengths = heapless::Vec::new();
        for slot in 0..RX_SLOTS {
            let Some(offset) = rx_slot_offset(slot) else {
                break;
            };
            let mut length = 0u16;
            let taken = self.device.take_frame(|frame| {
                length = frame.len() as u16;
                client.region.write(offset, frame)
            });
            match taken {
                None => break,
                Some(true) => {
                    // At most RX_SLOTS pushes.
                    let _ = lengths.push(length);
                }
                // The frame could not be written (a region too small): dropped.
                Some(false) => {}
            }
        }
        Response::Received {
            lengths,
            more: self.device.pending() > 0,
        }
    }
}

impl<T: Mmio, D: DmaMemory, P: Platform> NetServer<T, D, P> {
    /// Answers one request from the client with badge `badge`, which carried `capability` (if
    /// any, already in this task's table: consumed here).
    pub fn handle_request(
        &mut self,
        request: Request,
        badge: u64,
        capability: Option<(CapSlot, Rights)>,
    ) -> Response {
        // Interrupts can be coalesced or lost to a misbehaving device: look at the rings on
        // every request too (cheap when nothing happened).
        self.device.poll();
        let capability = match (&request, capability) {
            (Request::Attach, capability) => capability,
            (_, Some((slot, _))) => {
                self.platform.drop_capability(slot);
                None
            }
            (_, None) => None,
        };
        match request {
            Request::Attach => self.attach(badge, capability),
            Request::Transmit(frames) => self.transmit(&frames, badge),
            Request::Receive => self.receive(badge),
            Request::Link => Response::Link(self.device.link()),
            Request::Counters => Response::Counters(self.device.counters()),
        }
    }
}

impl<T: Mmio, D: DmaMemory, P: Platform> Handler<NetProtocol> for NetServer<T, D, P> {
    fn handle(&mut self, request: Request, context: &mut RequestContext) -> Response {
        self.handle_request(request, context.badge, context.capability.take())
    }

    fn notified(&mut self, bits: u64) {
        if bits & self.irq_mask != 0 {
            self.device.handle_interrupt();
            self.platform.acknowledge_irq();
        }
    }
}
