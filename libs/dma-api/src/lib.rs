//! The Moat DMA protocol: how drivers get device-visible memory from the DMA server.
//!
//! - [`protocol`]: the [`Request`]s, the [`Response`]s and how they sit in a message (postcard
//!   payloads, strict decoding, every message within 224 bytes);
//! - [`DmaClient`]: the typed client stub;
//! - [`Bounce`], [`Grant`], [`InFlight`]: streaming transfers with the Linux DMA API copy rules
//!   enforced by the types; [`Coherent`] for long-lived structures such as virtqueue rings;
//! - [`stats`]: the observability figures dmastat prints;
//! - [`config`]: the server's configuration (client identities and quotas) that `cargo xtask`
//!   compiles from the manifest;
//! - [`Window`]: the client's mapping of its shared window. All raw access to shared memory is in
//!   one private module (`shared`), the only `unsafe` code in the crate.
//!
//! The model (windows, grants, quarantine) and the guarantees are described in `docs/dma.md`.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod bounce;
pub mod client;
pub mod config;
pub mod protocol;
mod shared;
pub mod stats;
pub mod types;

#[cfg(test)]
mod tests;

pub use bounce::{
    Bidirectional, Bounce, BounceError, Coherent, DirectionMarker, FromDevice, Grant, InFlight,
    Refused, ToDevice,
};
pub use client::{ClientError, DmaClient};
pub use config::{ClientConfig, DmaConfig};
pub use protocol::{
    GrantReply, LABEL_REPLY, LABEL_REQUEST, Reply, Request, Response, Role, WINDOW_RIGHTS,
    WindowReply, badge, instance_of,
};
pub use shared::Window;
#[cfg(any(test, feature = "fake"))]
pub use shared::{FakeDevice, FakeWindow};
pub use stats::{ClientStats, Event, EventKind, EventPage, FailureCounts, StatsSummary};
pub use types::{ClientIdentity, Direction, DmaError, GrantId, InstanceGeneration};

/// Test support: make grants over a [`FakeWindow`] without a server.
#[cfg(any(test, feature = "fake"))]
pub mod fake {
    use crate::bounce::{Coherent, DirectionMarker, Grant};
    use crate::protocol::GrantReply;
    use crate::shared::Window;
    use crate::types::GrantId;

    /// A grant of `len` bytes at `offset` in `window`, as if the server had granted it; `None`
    /// if it does not fit.
    pub fn grant<D: DirectionMarker>(
        window: &Window,
        id: u64,
        offset: usize,
        len: usize,
    ) -> Option<Grant<D>> {
        Grant::from_reply(window, &reply(window, id, offset, len)?)
    }

    /// A coherent allocation of `len` bytes at `offset` in `window`; `None` if it does not fit.
    pub fn coherent(window: &Window, id: u64, offset: usize, len: usize) -> Option<Coherent> {
        Coherent::from_reply(window, &reply(window, id, offset, len)?)
    }

    fn reply(window: &Window, id: u64, offset: usize, len: usize) -> Option<GrantReply> {
        Some(GrantReply {
            id: GrantId::from_raw(id),
            window_offset: offset as u64,
            device_address: window.device_base().checked_add(offset as u64)?,
            length: len as u64,
        })
    }
}
