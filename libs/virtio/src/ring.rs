//! The split-virtqueue memory layout (VirtIO 1.2 section 2.7) and [`SharedRing`], typed volatile
//! access to its fields in a [`SharedRegion`].
//!
//! One allocation holds, in order:
//!
//! | part             | offset                         | size          | alignment |
//! |------------------|--------------------------------|---------------|-----------|
//! | descriptor table | 0                              | 16 × N        | 16        |
//! | available ring   | 16 × N                         | 6 + 2 × N     | 2         |
//! | used ring        | (22 × N + 6) rounded up to 4   | 6 + 8 × N     | 4         |
//!
//! (the available and used rings' sizes include the `used_event` and `avail_event` words of
//! `VIRTIO_F_EVENT_IDX`). Offsets come only from the private queue size, and every ring index is
//! reduced modulo N before use, so no value from the device ever chooses where we read or write.

use crate::memory::SharedRegion;

/// Bytes per descriptor.
pub(crate) const DESCRIPTOR_SIZE: usize = 16;
/// Alignment the region's device address needs (the descriptor table's).
pub(crate) const REGION_ALIGN: usize = 16;
/// Largest split queue size.
pub(crate) const MAX_QUEUE_SIZE: u16 = 32768;

/// Descriptor flag: the chain continues at `next`.
pub(crate) const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub(crate) const DESC_F_WRITE: u16 = 2;
/// Used-ring flag: the device asks not to be notified.
pub(crate) const USED_F_NO_NOTIFY: u16 = 1;

/// Where each part of a queue of `size` entries lies in its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) size: u16,
    pub(crate) avail: usize,
    pub(crate) used: usize,
    pub(crate) total: usize,
}

impl Layout {
    /// The layout for `size` entries, or `None` unless `size` is a power of two up to
    /// [`MAX_QUEUE_SIZE`].
    pub(crate) const fn new(size: u16) -> Option<Layout> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return None;
        }
        let entries = size as usize;
        let avail = DESCRIPTOR_SIZE * entries;
        let avail_end = avail + 6 + 2 * entries;
        let used = (avail_end + 3) & !3;
        let total = used + 6 + 8 * entries;
        Some(Layout {
            size,
            avail,
            used,
            total,
        })
    }
}

/// Typed volatile access to one queue's rings. Holds the region and its private layout; every
/// method takes ring positions that it reduces modulo the queue size itself.
#[derive(Debug)]
pub(crate) struct SharedRing<M> {
    region: M,
    layout: Layout,
}

impl<M: SharedRegion> SharedRing<M> {
    /// `region` must be at least `layout.total` bytes (checked by the caller).
    pub(crate) fn new(region: M, layout: Layout) -> SharedRing<M> {
        SharedRing { region, layout }
    }

    pub(crate) fn region(&self) -> &M {
        &self.region
    }

    pub(crate) fn into_region(self) -> M {
        self.region
    }

    fn slot(&self, position: u16) -> usize {
        usize::from(position & (self.layout.size - 1))
    }

    /// Device addresses of the descriptor table, available ring and used ring.
    pub(crate) fn device_addresses(&self) -> (u64, u64, u64) {
        let base = self.region.device_address();
        (
            base,
            base + self.layout.avail as u64,
            base + self.layout.used as u64,
        )
    }

    /// Writes descriptor `index` (< size, the caller's free list guarantees it).
    pub(crate) fn write_descriptor(
        &self,
        index: u16,
        address: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> bool {
        let at = DESCRIPTOR_SIZE * self.slot(index);
        self.region.write_u64(at, address)
            & self.region.write_u32(at + 8, len)
            & self.region.write_u16(at + 12, flags)
            & self.region.write_u16(at + 14, next)
    }

    pub(crate) fn write_avail_flags(&self, flags: u16) -> bool {
        self.region.write_u16(self.layout.avail, flags)
    }

    pub(crate) fn write_avail_idx(&self, idx: u16) -> bool {
        self.region.write_u16(self.layout.avail + 2, idx)
    }

    /// Puts `head` in the available ring at position `position` (mod size).
    pub(crate) fn write_avail_entry(&self, position: u16, head: u16) -> bool {
        self.region
            .write_u16(self.layout.avail + 4 + 2 * self.slot(position), head)
    }

    /// `used_event`: ask for an interrupt once the used index passes this value.
    pub(crate) fn write_used_event(&self, idx: u16) -> bool {
        let at = self.layout.avail + 4 + 2 * usize::from(self.layout.size);
        self.region.write_u16(at, idx)
    }

    pub(crate) fn read_used_flags(&self) -> Option<u16> {
        self.region.read_u16(self.layout.used)
    }

    pub(crate) fn read_used_idx(&self) -> Option<u16> {
        self.region.read_u16(self.layout.used + 2)
    }

    /// The used-ring entry at `position` (mod size), `(id, len)`, each read exactly once.
    pub(crate) fn read_used_entry(&self, position: u16) -> Option<(u32, u32)> {
        let at = self.layout.used + 4 + 8 * self.slot(position);
        let id = self.region.read_u32(at)?;
        let len = self.region.read_u32(at + 4)?;
        Some((id, len))
    }

    /// `avail_event`: the device wants a notification once the available index passes it.
    pub(crate) fn read_avail_event(&self) -> Option<u16> {
        let at = self.layout.used + 4 + 8 * usize::from(self.layout.size);
        self.region.read_u16(at)
    }
}
