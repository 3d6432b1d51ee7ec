//! The fixed-size IPC message: a 32-byte header and up to 224 bytes of payload.

use core::fmt;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::caps::{CapSlot, Rights};
use crate::error::Error;
use crate::task::TaskId;

/// Size of a whole message in bytes (a power of two, so queues of messages pack evenly).
pub const MESSAGE_SIZE: usize = 256;
/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 32;
/// The largest payload a message can carry.
pub const MAX_PAYLOAD: usize = MESSAGE_SIZE - HEADER_SIZE;

/// Flags in [`MessageHeader::flags`].
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(transparent)]
pub struct MessageFlags(u16);

impl MessageFlags {
    /// No flags.
    pub const NONE: MessageFlags = MessageFlags(0);
    /// The message carries a capability. On send: `capability` is the sender's slot to copy and
    /// `capability_rights` the rights the copy keeps. On receipt: `capability` is the slot in the
    /// receiver's table where the copy landed and `capability_rights` its rights.
    pub const CARRIES_CAPABILITY: MessageFlags = MessageFlags(1 << 0);
    /// Set by the kernel on receipt: the message came from `call`; `reply` names a one-shot Reply
    /// capability the receiver must answer with `Reply` (or drop).
    pub const EXPECTS_REPLY: MessageFlags = MessageFlags(1 << 1);
    /// Set by the kernel on the message a `call` returns: it is the server's reply.
    pub const IS_REPLY: MessageFlags = MessageFlags(1 << 2);

    /// The flags a sender may set; the kernel rejects others with [`Error::InvalidArgument`].
    pub const SENDER_SETTABLE: MessageFlags = MessageFlags::CARRIES_CAPABILITY;
    /// Every defined flag.
    pub const ALL: MessageFlags = MessageFlags(0b111);

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Flags from raw bits, or `None` if an undefined bit is set.
    pub const fn from_bits(bits: u16) -> Option<MessageFlags> {
        if bits & !MessageFlags::ALL.0 == 0 {
            Some(MessageFlags(bits))
        } else {
            None
        }
    }

    /// Whether every flag in `other` is set in `self`.
    pub const fn contains(self, other: MessageFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the flags in `other` added.
    pub const fn with(self, other: MessageFlags) -> MessageFlags {
        MessageFlags(self.0 | other.0)
    }

    /// `self` with the flags in `other` removed.
    pub const fn without(self, other: MessageFlags) -> MessageFlags {
        MessageFlags(self.0 & !other.0)
    }
}

impl fmt::Debug for MessageFlags {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "MessageFlags({:#05b})", self.0)
    }
}

/// The header of every message. `#[repr(C)]`, 32 bytes, no padding.
///
/// Fields marked *kernel* are overwritten by the kernel on delivery whatever the sender wrote, so
/// a receiver can trust them: the badge and sender identify the sender unforgeably.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MessageHeader {
    /// *Kernel*: the badge of the endpoint capability the message was sent through (0 for an
    /// unbadged capability). Servers use it to tell clients apart.
    pub badge: u64,
    /// *Kernel*: the sending task (with its generation).
    pub sender: TaskId,
    /// The operation or message type, chosen by the protocol. Labels `0xffff_0000` and above are
    /// reserved for messages the kernel originates.
    pub label: u32,
    /// Number of meaningful payload bytes, at most [`MAX_PAYLOAD`].
    pub length: u16,
    /// [`MessageFlags`]; a sender may set only [`MessageFlags::SENDER_SETTABLE`].
    pub flags: MessageFlags,
    /// The transferred capability's slot (see [`MessageFlags::CARRIES_CAPABILITY`]); otherwise
    /// [`CapSlot::NONE`].
    pub capability: CapSlot,
    /// Raw [`Rights`] of the transferred capability (see [`MessageFlags::CARRIES_CAPABILITY`]).
    pub capability_rights: u32,
    /// *Kernel*: the one-shot Reply capability for a message that came from `call`
    /// ([`MessageFlags::EXPECTS_REPLY`]); otherwise [`CapSlot::NONE`].
    pub reply: CapSlot,
}

impl MessageHeader {
    /// First label reserved for messages the kernel originates.
    pub const KERNEL_LABEL_BASE: u32 = 0xffff_0000;

    /// The kernel's check of a header copied in from a sender (see
    /// [`Message::check_from_sender`]).
    pub fn check_from_sender(&self) -> Result<(), Error> {
        if usize::from(self.length) > MAX_PAYLOAD {
            return Err(Error::BadLength);
        }
        let flags = self.flags;
        if flags.bits() & !MessageFlags::SENDER_SETTABLE.bits() != 0 {
            return Err(Error::InvalidArgument);
        }
        if flags.contains(MessageFlags::CARRIES_CAPABILITY) {
            if self.capability.is_none() {
                return Err(Error::InvalidCapability);
            }
            if Rights::from_bits(self.capability_rights).is_none() {
                return Err(Error::InvalidArgument);
            }
        }
        Ok(())
    }

    /// Stamps a checked header (see [`Message::stamp`]).
    pub fn stamp(&mut self, badge: u64, sender: TaskId) {
        self.badge = badge;
        self.sender = sender;
        self.reply = CapSlot::NONE;
        self.flags = MessageFlags(self.flags.bits() & MessageFlags::SENDER_SETTABLE.bits());
        if !self.flags.contains(MessageFlags::CARRIES_CAPABILITY) {
            self.capability = CapSlot::NONE;
            self.capability_rights = 0;
        }
    }

    /// A header for a message with `label` and no payload or capability.
    pub const fn new(label: u32) -> MessageHeader {
        MessageHeader {
            badge: 0,
            sender: TaskId(0),
            label,
            length: 0,
            flags: MessageFlags::NONE,
            capability: CapSlot::NONE,
            capability_rights: 0,
            reply: CapSlot::NONE,
        }
    }
}

/// One IPC message, copied by value between tasks: [`MESSAGE_SIZE`] bytes, 8-byte aligned.
///
/// The payload length is validated by every constructor and setter; a header read from memory
/// with a larger length is clamped by [`Message::payload`] and refused by
/// [`Message::check_from_sender`].
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Message {
    /// The header.
    pub header: MessageHeader,
    /// Payload storage; only the first `header.length` bytes are meaningful.
    pub payload: [u8; MAX_PAYLOAD],
}

const _: () = assert!(core::mem::size_of::<MessageHeader>() == HEADER_SIZE);
const _: () = assert!(core::mem::size_of::<Message>() == MESSAGE_SIZE);
const _: () = assert!(MESSAGE_SIZE.is_power_of_two());
const _: () = assert!(core::mem::align_of::<Message>() == 8);
const _: () = assert!(MAX_PAYLOAD <= u16::MAX as usize);

impl Default for Message {
    fn default() -> Message {
        Message::empty(0)
    }
}

impl Message {
    /// A message with `label` and no payload.
    pub const fn empty(label: u32) -> Message {
        Message {
            header: MessageHeader::new(label),
            payload: [0; MAX_PAYLOAD],
        }
    }

    /// A message with `label` and a copy of `payload`, or [`Error::BadLength`] if the payload is
    /// longer than [`MAX_PAYLOAD`].
    pub fn new(label: u32, payload: &[u8]) -> Result<Message, Error> {
        let mut message = Message::empty(label);
        message.set_payload(payload)?;
        Ok(message)
    }

    /// Replaces the payload, or returns [`Error::BadLength`] (leaving the message unchanged) if
    /// `payload` is longer than [`MAX_PAYLOAD`].
    pub fn set_payload(&mut self, payload: &[u8]) -> Result<(), Error> {
        let destination = self
            .payload
            .get_mut(..payload.len())
            .ok_or(Error::BadLength)?;
        destination.copy_from_slice(payload);
        // Cannot truncate: MAX_PAYLOAD fits in u16 (asserted above).
        self.header.length = payload.len() as u16;
        Ok(())
    }

    /// Sets the payload length after writing into [`Message::payload`] directly (e.g. when a
    /// serializer encodes in place), or returns [`Error::BadLength`].
    pub fn set_length(&mut self, length: usize) -> Result<(), Error> {
        if length > MAX_PAYLOAD {
            return Err(Error::BadLength);
        }
        self.header.length = length as u16;
        Ok(())
    }

    /// The meaningful payload bytes (clamped to [`MAX_PAYLOAD`] if the header is corrupt).
    pub fn payload(&self) -> &[u8] {
        let length = usize::from(self.header.length).min(MAX_PAYLOAD);
        &self.payload[..length]
    }

    /// The operation label.
    pub const fn label(&self) -> u32 {
        self.header.label
    }

    /// Marks the message as carrying a copy of the capability in the sender's `slot`; the copy
    /// keeps only `rights` (which must be rights the source has, and the source needs
    /// [`Rights::TRANSFER`]). Omit `TRANSFER` from `rights` to hand out a capability the
    /// receiver cannot pass on.
    pub const fn with_capability(mut self, slot: CapSlot, rights: Rights) -> Message {
        self.header.flags = self.header.flags.with(MessageFlags::CARRIES_CAPABILITY);
        self.header.capability = slot;
        self.header.capability_rights = rights.bits();
        self
    }

    /// The capability this message carries and its rights, if any. On the receiving side the
    /// slot is in the receiver's table. `None` also when the rights field holds undefined bits.
    pub fn capability(&self) -> Option<(CapSlot, Rights)> {
        if !self.header.flags.contains(MessageFlags::CARRIES_CAPABILITY) {
            return None;
        }
        let rights = Rights::from_bits(self.header.capability_rights)?;
        Some((self.header.capability, rights))
    }

    /// The Reply capability to answer this message with, if it came from `call`.
    pub fn reply_capability(&self) -> Option<CapSlot> {
        if self.header.flags.contains(MessageFlags::EXPECTS_REPLY) && !self.header.reply.is_none() {
            Some(self.header.reply)
        } else {
            None
        }
    }

    /// The kernel's check of a message copied in from a sender: the length is at most
    /// [`MAX_PAYLOAD`] ([`Error::BadLength`]), only sender-settable flags are set and the
    /// capability rights are defined bits ([`Error::InvalidArgument`]), and a carried capability
    /// names a slot ([`Error::InvalidCapability`]).
    pub fn check_from_sender(&self) -> Result<(), Error> {
        self.header.check_from_sender()
    }

    /// The kernel stamps a checked message before queueing it: badge and sender are set, the
    /// reply slot is cleared, and only sender-settable flags survive.
    pub fn stamp(&mut self, badge: u64, sender: TaskId) {
        self.header.stamp(badge, sender);
    }

    /// How many leading bytes of the message are meaningful (header plus payload length): the
    /// kernel need copy no more.
    pub fn used_size(&self) -> usize {
        HEADER_SIZE + self.payload().len()
    }

    /// A message from its bytes, or `None` if `bytes` is not exactly [`MESSAGE_SIZE`] long.
    /// No field is trusted: check it with [`Message::check_from_sender`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Message> {
        Message::read_from_bytes(bytes).ok()
    }

    /// A zeroed message (label 0, every field 0, including slot fields).
    pub fn zeroed() -> Message {
        FromZeros::new_zeroed()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Message")
            .field("header", &self.header)
            .field("payload", &self.payload())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of, size_of};

    use zerocopy::IntoBytes;

    use super::*;

    #[test]
    fn layout_is_fixed() {
        assert_eq!(size_of::<MessageHeader>(), 32);
        assert_eq!(size_of::<Message>(), 256);
        assert_eq!(align_of::<Message>(), 8);
        assert_eq!(MAX_PAYLOAD, 224);
        assert_eq!(offset_of!(MessageHeader, badge), 0);
        assert_eq!(offset_of!(MessageHeader, sender), 8);
        assert_eq!(offset_of!(MessageHeader, label), 12);
        assert_eq!(offset_of!(MessageHeader, length), 16);
        assert_eq!(offset_of!(MessageHeader, flags), 18);
        assert_eq!(offset_of!(MessageHeader, capability), 20);
        assert_eq!(offset_of!(MessageHeader, capability_rights), 24);
        assert_eq!(offset_of!(MessageHeader, reply), 28);
        assert_eq!(offset_of!(Message, payload), 32);
    }

    #[test]
    fn constructors_validate_length() {
        assert!(Message::new(1, &[0; MAX_PAYLOAD]).is_ok());
        assert_eq!(
            Message::new(1, &[0; MAX_PAYLOAD + 1]),
            Err(Error::BadLength)
        );
        let mut message = Message::new(7, b"hello").expect("fits");
        assert_eq!(message.payload(), b"hello");
        assert_eq!(message.label(), 7);
        assert_eq!(message.used_size(), HEADER_SIZE + 5);
        assert_eq!(message.set_payload(&[1; 300]), Err(Error::BadLength));
        assert_eq!(
            message.payload(),
            b"hello",
            "failed set leaves message unchanged"
        );
        assert_eq!(message.set_length(MAX_PAYLOAD + 1), Err(Error::BadLength));
        message.payload[..3].copy_from_slice(b"abc");
        message.set_length(3).expect("fits");
        assert_eq!(message.payload(), b"abc");
    }

    #[test]
    fn corrupt_length_is_clamped_and_refused() {
        let mut message = Message::empty(0);
        message.header.length = u16::MAX;
        assert_eq!(message.payload().len(), MAX_PAYLOAD);
        assert_eq!(message.check_from_sender(), Err(Error::BadLength));
    }

    #[test]
    fn byte_round_trip() {
        let message = Message::new(0xdead, b"payload")
            .expect("fits")
            .with_capability(CapSlot(4), Rights::READ | Rights::WRITE);
        let bytes = message.as_bytes();
        assert_eq!(bytes.len(), MESSAGE_SIZE);
        assert_eq!(&bytes[12..16], &0xdead_u32.to_ne_bytes());
        assert_eq!(Message::from_bytes(bytes), Some(message.clone()));
        assert_eq!(Message::from_bytes(&bytes[1..]), None);
        assert_eq!(Message::zeroed().as_bytes(), &[0; MESSAGE_SIZE]);
    }

    #[test]
    fn sender_checks() {
        let plain = Message::new(1, b"x").expect("fits");
        assert_eq!(plain.check_from_sender(), Ok(()));
        assert_eq!(plain.capability(), None);

        let mut kernel_flag = plain.clone();
        kernel_flag.header.flags = MessageFlags::EXPECTS_REPLY;
        assert_eq!(kernel_flag.check_from_sender(), Err(Error::InvalidArgument));

        let mut unknown_flag = plain.clone();
        unknown_flag.header.flags = MessageFlags(0x8000);
        assert_eq!(
            unknown_flag.check_from_sender(),
            Err(Error::InvalidArgument)
        );

        let no_slot = plain.clone().with_capability(CapSlot::NONE, Rights::READ);
        assert_eq!(no_slot.check_from_sender(), Err(Error::InvalidCapability));

        let mut bad_rights = plain.clone().with_capability(CapSlot(1), Rights::READ);
        bad_rights.header.capability_rights = 1 << 31;
        assert_eq!(bad_rights.check_from_sender(), Err(Error::InvalidArgument));
        assert_eq!(bad_rights.capability(), None);

        let carrying = plain.with_capability(CapSlot(2), Rights::READ);
        assert_eq!(carrying.check_from_sender(), Ok(()));
        assert_eq!(carrying.capability(), Some((CapSlot(2), Rights::READ)));
    }

    #[test]
    fn stamping_overwrites_kernel_fields() {
        let mut message = Message::new(1, b"x").expect("fits");
        message.header.badge = 99;
        message.header.sender = TaskId::new(9, 9);
        message.header.reply = CapSlot(3);
        message.header.capability = CapSlot(5);
        message.header.capability_rights = 7;
        message.stamp(42, TaskId::new(1, 2));
        assert_eq!(message.header.badge, 42);
        assert_eq!(message.header.sender, TaskId::new(1, 2));
        assert_eq!(message.header.reply, CapSlot::NONE);
        assert_eq!(message.header.capability, CapSlot::NONE);
        assert_eq!(message.header.capability_rights, 0);
        assert_eq!(message.reply_capability(), None);

        message.header.flags = MessageFlags::EXPECTS_REPLY;
        message.header.reply = CapSlot(8);
        assert_eq!(message.reply_capability(), Some(CapSlot(8)));
    }

    #[test]
    fn flags_round_trip() {
        for bits in 0..=MessageFlags::ALL.bits() {
            let flags = MessageFlags::from_bits(bits).expect("defined");
            assert_eq!(flags.bits(), bits);
        }
        assert_eq!(MessageFlags::from_bits(8), None);
        let flags = MessageFlags::NONE.with(MessageFlags::IS_REPLY);
        assert!(flags.contains(MessageFlags::IS_REPLY));
        assert!(
            !flags
                .without(MessageFlags::IS_REPLY)
                .contains(MessageFlags::IS_REPLY)
        );
    }
}
