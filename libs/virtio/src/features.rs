//! Feature bits (VirtIO 1.2 section 6) this crate knows about, as masks over the 64-bit feature
//! word.
//!
//! Bits 0 to 23 belong to the device type (e.g. virtio-blk's `RO`, `FLUSH`); the caller asks for
//! those. Bits 24 to 41 are transport and ring features; of those the transport accepts only
//! the ones this crate implements ([`TRANSPORT_SUPPORTED`]), whatever the caller asks.

/// The device uses indirect descriptors (not used by this crate's queue).
pub const INDIRECT_DESC: u64 = 1 << 28;
/// `used_event` / `avail_event` notification suppression (supported by [`crate::SplitQueue`]).
pub const EVENT_IDX: u64 = 1 << 29;
/// A VirtIO 1.0+ (non-legacy) device: required.
pub const VERSION_1: u64 = 1 << 32;
/// The device reaches memory through the platform's DMA translation (IOMMU, Realm shared
/// mappings): accepted whenever offered, as a device may refuse to work without it.
pub const ACCESS_PLATFORM: u64 = 1 << 33;
/// The packed ring layout (not supported).
pub const RING_PACKED: u64 = 1 << 34;
/// Extra data in queue notifications (not supported: it changes the notify register format).
pub const NOTIFICATION_DATA: u64 = 1 << 38;

/// Transport and ring features (bits 24 to 41): these the transport filters.
pub const TRANSPORT_RANGE: u64 = ((1 << 42) - 1) & !((1 << 24) - 1);

/// Transport features this crate implements and so may accept.
pub const TRANSPORT_SUPPORTED: u64 = VERSION_1 | ACCESS_PLATFORM | EVENT_IDX;

/// Device-type bits (0 to 23).
pub const DEVICE_RANGE: u64 = (1 << 24) - 1;
