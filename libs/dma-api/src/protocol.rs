//! The requests a client sends, the replies the server returns, and how they sit in a
//! [`Message`].
//!
//! A request is a [`Request`] encoded with postcard in the payload of a message with label
//! [`LABEL_REQUEST`], sent with `call`. The reply has label [`LABEL_REPLY`] and carries a
//! [`Reply`] (`Result<Response, DmaError>`). Only the reply to a successful
//! [`Request::Register`] carries a capability: the Memory capability of the caller's window
//! (see [`WindowReply`]). Decoding is strict: a wrong label, a payload that does not decode or
//! has trailing bytes is [`DmaError::Malformed`]. Every request and reply fits one payload
//! ([`MAX_PAYLOAD`] bytes) whatever its field values; the tests check the largest encodings.

use moat_abi::{Message, Rights, TaskId};
use serde::{Deserialize, Serialize};

use crate::stats::{ClientStats, EventPage, FailureCounts, StatsSummary};
use crate::types::{ClientIdentity, Direction, DmaError, GrantId, InstanceGeneration};

/// Label of a request message ("DMA" and 0).
pub const LABEL_REQUEST: u32 = 0x444d_4100;

/// Label of a reply message.
pub const LABEL_REPLY: u32 = 0x444d_4101;

/// Rights of the window capability in a [`Request::Register`] reply: read and write, never
/// transfer (the client cannot pass its window on), execute or physical.
pub const WINDOW_RIGHTS: Rights = Rights::READ.union(Rights::WRITE);

/// A request to the DMA server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Registers the calling instance and returns its window (with its Memory capability). The
    /// first registration of an identity creates the window, sized by the manifest quota (or
    /// the smaller `quota_hint`); later ones, from restarted instances, attach the same window.
    Register {
        /// Bytes the client wants, at most its manifest quota; `None` asks for the full quota.
        quota_hint: Option<u64>,
    },
    /// Allocates a long-lived device-visible buffer (e.g. a virtqueue ring) in the window.
    AllocCoherent {
        /// Bytes.
        size: u64,
        /// Device-address alignment (a power of two; 0 = slot size).
        align: u64,
    },
    /// Grants a streaming bounce buffer for one transfer.
    Map {
        /// Bytes.
        len: u64,
        /// Transfer direction.
        direction: Direction,
        /// Device-address alignment (a power of two; 0 = slot size).
        align: u64,
        /// The buffer may not cross a multiple of this (a power of two; 0 = no constraint).
        boundary: u64,
    },
    /// Returns a grant (streaming or coherent) to the window.
    Unmap {
        /// The grant.
        id: GrantId,
    },
    /// The restarted caller has reset its device (VirtIO: status read back 0): its quarantined
    /// slots may be reused.
    ResetComplete,
    /// The server-wide [`StatsSummary`].
    Stats,
    /// Failures by reason ([`FailureCounts`]).
    Failures,
    /// The next client's [`ClientStats`] after `after` in identity order (`None` = the first).
    /// A plain client sees only itself; observers see everyone.
    ClientStats {
        /// The identity to continue after.
        after: Option<ClientIdentity>,
    },
    /// Recent events from sequence number `from` on. A plain client sees only its own.
    Events {
        /// The first sequence number wanted.
        from: u64,
    },
    /// Observer or supervisor only: restart high-water tracking from the current use.
    ResetHighWater,
    /// Supervisor only: the client died; its grants go to quarantine.
    Revoke {
        /// The dead client.
        client: ClientIdentity,
    },
}

/// The window of a registered client. The reply's capability is the window's Memory capability
/// (rights [`WINDOW_RIGHTS`]); the client maps it wherever it likes, and every grant is then
/// at `client base + window_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowReply {
    /// Device address of the window's first byte.
    pub device_base: u64,
    /// Window size in bytes (whole pages).
    pub size: u64,
    /// Slot size in bytes.
    pub slot_size: u32,
    /// Largest length one map or coherent allocation can request.
    pub max_mapping_size: u64,
    /// Whether quarantined slots wait for [`Request::ResetComplete`].
    pub reset_pending: bool,
}

/// A grant: a buffer in the caller's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantReply {
    /// The grant's id, for [`Request::Unmap`].
    pub id: GrantId,
    /// Byte offset of the buffer in the window.
    pub window_offset: u64,
    /// Device address of the buffer.
    pub device_address: u64,
    /// Length in bytes (as requested).
    pub length: u64,
}

/// A successful reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::Register`].
    Window(WindowReply),
    /// To [`Request::Map`] and [`Request::AllocCoherent`].
    Grant(GrantReply),
    /// To [`Request::Unmap`] and [`Request::ResetHighWater`].
    Done,
    /// To [`Request::ResetComplete`] (slots reclaimed) and [`Request::Revoke`] (slots
    /// quarantined).
    Slots(u64),
    /// To [`Request::Stats`].
    Stats(StatsSummary),
    /// To [`Request::Failures`].
    Failures(FailureCounts),
    /// To [`Request::ClientStats`]; `None` when no client is left.
    Client(Option<ClientStats>),
    /// To [`Request::Events`].
    Events(EventPage),
}

/// What the server answers.
pub type Reply = Result<Response, DmaError>;

/// What a request may do, from the badge of the capability it came through (and, for the
/// supervisor, the endpoint it came on; the serve loop decides that).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A driver: its own window, grants and figures.
    Client,
    /// A monitoring tool such as dmastat: every client's figures and events, and resetting the
    /// high-water mark; no window of its own unless it also has a quota.
    Observer,
    /// The supervisor: everything an observer may do, plus revoke.
    Supervisor,
}

/// The badge layout of capabilities to the DMA server's endpoint: the client identity in the
/// low 32 bits, the role in bits 32–33 (0 client, 1 observer, 2 supervisor), the rest zero.
pub mod badge {
    use super::{ClientIdentity, DmaError, Role};

    const ROLE_SHIFT: u32 = 32;

    /// The badge for `identity` acting as `role` (for manifests and tests).
    pub const fn encode(identity: ClientIdentity, role: Role) -> u64 {
        let role = match role {
            Role::Client => 0u64,
            Role::Observer => 1,
            Role::Supervisor => 2,
        };
        (role << ROLE_SHIFT) | identity.0 as u64
    }

    /// The identity and role of a badge; undefined bits are [`DmaError::Denied`].
    pub const fn decode(badge: u64) -> Result<(ClientIdentity, Role), DmaError> {
        let identity = ClientIdentity(badge as u32);
        let role = match badge >> ROLE_SHIFT {
            0 => Role::Client,
            1 => Role::Observer,
            2 => Role::Supervisor,
            _ => return Err(DmaError::Denied),
        };
        Ok((identity, role))
    }
}

/// The instance a message came from: the sender's raw `TaskId` (index and generation).
pub const fn instance_of(sender: TaskId) -> InstanceGeneration {
    InstanceGeneration(sender.to_raw())
}

// --- Encoding (a small postcard adapter; to be replaced by `moat-ipc` once it lands) ----------

/// Encodes `value` into `message`'s payload and sets `label` and the length.
fn encode<T: Serialize>(label: u32, value: &T, message: &mut Message) -> Result<(), DmaError> {
    let used = postcard::to_slice(value, &mut message.payload)
        .map_err(|_| DmaError::Malformed)?
        .len();
    message.set_length(used).map_err(|_| DmaError::Malformed)?;
    message.header.label = label;
    Ok(())
}

/// Decodes a whole payload of a message labelled `label`: nothing may be left over.
fn decode<'de, T: Deserialize<'de>>(label: u32, message: &'de Message) -> Result<T, DmaError> {
    if message.label() != label {
        return Err(DmaError::Malformed);
    }
    decode_payload(message.payload())
}

/// Decodes `bytes` as one whole `T`.
pub fn decode_payload<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, DmaError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(DmaError::Malformed),
    }
}

impl Request {
    /// Writes the request into `message` (label, payload, length; no capability).
    pub fn encode(&self, message: &mut Message) -> Result<(), DmaError> {
        *message = Message::empty(LABEL_REQUEST);
        encode(LABEL_REQUEST, self, message)
    }

    /// Reads a request from a received message; anything but a well-formed request is
    /// [`DmaError::Malformed`].
    pub fn decode(message: &Message) -> Result<Request, DmaError> {
        decode(LABEL_REQUEST, message)
    }
}

/// Writes `reply` into `message` (label, payload, length; the caller attaches the window
/// capability to a `Register` reply).
pub fn encode_reply(reply: &Reply, message: &mut Message) -> Result<(), DmaError> {
    *message = Message::empty(LABEL_REPLY);
    encode(LABEL_REPLY, reply, message)
}

/// Reads a reply; a reply that does not decode is [`DmaError::Malformed`].
pub fn decode_reply(message: &Message) -> Reply {
    decode::<Reply>(LABEL_REPLY, message)?
}

#[cfg(test)]
mod tests {
    use moat_abi::MAX_PAYLOAD;

    use super::*;
    use crate::stats::{EVENTS_PER_PAGE, Event, EventKind};

    fn round_trip_request(request: Request) -> usize {
        let mut message = Message::empty(0);
        request.encode(&mut message).expect("fits");
        assert_eq!(Request::decode(&message), Ok(request));
        message.payload().len()
    }

    fn round_trip_reply(reply: Reply) -> usize {
        let mut message = Message::empty(0);
        encode_reply(&reply, &mut message).expect("fits");
        assert_eq!(decode_reply(&message), reply);
        message.payload().len()
    }

    const BIG: u64 = u64::MAX;

    fn biggest_client() -> ClientStats {
        ClientStats {
            identity: ClientIdentity(u32::MAX),
            instance: Some(InstanceGeneration(u32::MAX)),
            window_bytes: BIG,
            grants: BIG,
            granted_bytes: BIG,
            used_slots: BIG,
            quarantined_slots: BIG,
            reset_pending: true,
            bytes_to_device: BIG,
            bytes_from_device: BIG,
            failures: BIG,
        }
    }

    #[test]
    fn every_request_fits_a_payload() {
        let requests = [
            Request::Register {
                quota_hint: Some(BIG),
            },
            Request::Register { quota_hint: None },
            Request::AllocCoherent {
                size: BIG,
                align: BIG,
            },
            Request::Map {
                len: BIG,
                direction: Direction::Bidirectional,
                align: BIG,
                boundary: BIG,
            },
            Request::Unmap {
                id: GrantId::from_raw(BIG),
            },
            Request::ResetComplete,
            Request::Stats,
            Request::Failures,
            Request::ClientStats {
                after: Some(ClientIdentity(u32::MAX)),
            },
            Request::Events { from: BIG },
            Request::ResetHighWater,
            Request::Revoke {
                client: ClientIdentity(u32::MAX),
            },
        ];
        for request in requests {
            assert!(round_trip_request(request) <= MAX_PAYLOAD);
        }
    }

    #[test]
    fn every_reply_fits_a_payload_at_maximum_values() {
        let event = Event {
            sequence: BIG,
            kind: EventKind::Reclaim,
            client: ClientIdentity(u32::MAX),
            direction: Direction::Bidirectional,
            device_address: BIG,
            size: BIG,
        };
        let mut events = EventPage {
            events: heapless::Vec::new(),
            next: BIG,
        };
        for _ in 0..EVENTS_PER_PAGE {
            events.events.push(event).expect("room");
        }
        let summary = StatsSummary {
            slot_size: u32::MAX,
            max_mapping_size: BIG,
            total_slots: BIG,
            used_slots: BIG,
            high_water_slots: BIG,
            quarantined_slots: BIG,
            grants: BIG,
            clients: u32::MAX,
            budget_bytes: BIG,
            shared_bytes: BIG,
            bytes_to_device: BIG,
            bytes_from_device: BIG,
            maps: BIG,
            unmaps: BIG,
            coherent_allocs: BIG,
            failures: BIG,
            metadata_bytes: BIG,
            events: BIG,
        };
        let replies = [
            Ok(Response::Window(WindowReply {
                device_base: BIG,
                size: BIG,
                slot_size: u32::MAX,
                max_mapping_size: BIG,
                reset_pending: true,
            })),
            Ok(Response::Grant(GrantReply {
                id: GrantId::from_raw(BIG),
                window_offset: BIG,
                device_address: BIG,
                length: BIG,
            })),
            Ok(Response::Done),
            Ok(Response::Slots(BIG)),
            Ok(Response::Stats(summary)),
            Ok(Response::Failures(FailureCounts {
                by_code: [BIG; DmaError::ALL.len()],
            })),
            Ok(Response::Client(Some(biggest_client()))),
            Ok(Response::Client(None)),
            Ok(Response::Events(events)),
        ];
        let mut largest = 0;
        for reply in replies {
            largest = largest.max(round_trip_reply(reply));
        }
        for error in DmaError::ALL {
            round_trip_reply(Err(error));
        }
        assert!(largest <= MAX_PAYLOAD, "largest reply {largest} bytes");
    }

    #[test]
    fn decoding_is_strict() {
        let mut message = Message::empty(0);
        Request::Stats.encode(&mut message).expect("fits");
        // Wrong label.
        let mut wrong = message.clone();
        wrong.header.label = LABEL_REPLY;
        assert_eq!(Request::decode(&wrong), Err(DmaError::Malformed));
        // Trailing byte.
        let mut trailing = message.clone();
        let length = trailing.payload().len();
        trailing.set_length(length + 1).expect("fits");
        assert_eq!(Request::decode(&trailing), Err(DmaError::Malformed));
        // Unknown variant.
        let unknown = Message::new(LABEL_REQUEST, &[0x7f]).expect("fits");
        assert_eq!(Request::decode(&unknown), Err(DmaError::Malformed));
        // Empty payload.
        let empty = Message::empty(LABEL_REQUEST);
        assert_eq!(Request::decode(&empty), Err(DmaError::Malformed));
        // A reply that does not decode is an error for the client, never a panic.
        let garbage = Message::new(LABEL_REPLY, &[0xff, 0xff, 0xff]).expect("fits");
        assert_eq!(decode_reply(&garbage), Err(DmaError::Malformed));
    }

    #[test]
    fn badges() {
        for role in [Role::Client, Role::Observer, Role::Supervisor] {
            let raw = badge::encode(ClientIdentity(77), role);
            assert_eq!(badge::decode(raw), Ok((ClientIdentity(77), role)));
        }
        assert_eq!(badge::decode(3 << 32), Err(DmaError::Denied));
        assert_eq!(badge::decode(1 << 63), Err(DmaError::Denied));
        assert_eq!(badge::decode(0), Ok((ClientIdentity(0), Role::Client)));
    }
}
