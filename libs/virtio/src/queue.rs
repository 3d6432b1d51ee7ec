//! The split virtqueue: requests in, completions out, with every device-written value checked
//! against private bookkeeping.
//!
//! # What is private and what is shared
//!
//! The rings (descriptor table, available ring, used ring) live in one [`SharedRegion`] that the
//! device and the host may rewrite at any moment. The driver only ever *writes* descriptors and
//! the available ring, and never reads them back: the free-descriptor list, the chain links, the
//! queue size, the indices the driver owns (next available index, last used index) and, per
//! head, whether it is outstanding, its chain length and its device-writable capacity are all in
//! private memory ([`SplitQueue`]'s own fields).
//!
//! From the used ring the queue reads `used.idx` and the entries. Each is read once into a
//! local, then validated: the index may be at most the queue size ahead of the last one seen,
//! an entry's id must be below the queue size and name the head of an outstanding chain, and its
//! length must not exceed that chain's device-writable capacity. A bad entry becomes a
//! [`UsedError`] for that entry (and, with a bad length, a failed request); the queue carries
//! on. Nothing the device writes can make the queue panic, read or write outside its region,
//! or report one [`Token`] twice.
//!
//! # Ordering
//!
//! - Descriptors and the ring entry are written, then a release fence, then `avail.idx`: the
//!   device never sees an index before the entries it covers.
//! - `avail.idx` is written, then a full fence, then the device's notification suppression
//!   (`used.flags` or `avail_event`) is read ([`SplitQueue::should_notify`]).
//! - `used.idx` is read, then an acquire fence, then the entries it covers.
//!
//! `core::sync::atomic::fence` gives `dmb ish` (release, full) and `dmb ishld` (acquire) on
//! aarch64: the device is emulated by host threads in the same inner-shareable domain. The
//! notification itself is an MMIO write, which [`crate::MmioRegion`] orders after earlier memory
//! writes.
//!
//! # Interrupts
//!
//! VirtIO interrupts on QEMU `virt` are edge-triggered. A driver must **acknowledge
//! `InterruptStatus` first** ([`crate::Transport::take_interrupt`]) and only then drain the used
//! ring with [`SplitQueue::pop_used`] until it returns `None`; draining first and acknowledging
//! after can lose a completion that arrives in between. With `VIRTIO_F_EVENT_IDX`,
//! [`SplitQueue::pop_used`] re-arms `used_event` and checks the used index once more before
//! returning `None`, for the same reason.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{Ordering, fence};

use crate::memory::{CoherentAllocator, Segment, SharedRegion};
use crate::ring::{DESC_F_NEXT, DESC_F_WRITE, Layout, REGION_ALIGN, SharedRing, USED_F_NO_NOTIFY};

/// Names one request from [`SplitQueue::add`] to its completion. Never reported twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    head: u16,
    serial: u64,
}

impl Token {
    /// The chain's head descriptor, below the queue size: use it to index per-request state
    /// (at most one outstanding request has a given slot).
    pub const fn slot(&self) -> usize {
        self.head as usize
    }

    /// A number unique to this request for the queue's lifetime.
    pub const fn serial(&self) -> u64 {
        self.serial
    }
}

/// A request the device has finished, with the byte count it says it wrote (at most the
/// request's device-writable capacity: checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The request.
    pub token: Token,
    /// Bytes written to the device-writable segments, as reported by the device.
    pub written: u32,
}

/// Why [`SplitQueue::new`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The size is not a power of two from 1 to 32768.
    BadSize(u16),
    /// The region is smaller than [`SplitQueue::region_size`].
    RegionTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        len: usize,
    },
    /// The region's device address is not 16-byte aligned.
    Misaligned(u64),
    /// The region could not be written (a broken [`SharedRegion`]).
    Memory,
}

/// Why [`SplitQueue::allocate`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocateError<E> {
    /// The allocator failed.
    Allocate(E),
    /// The region it gave was unusable (or the size was bad); the region was freed again.
    Setup(SetupError),
}

/// Why [`SplitQueue::add`] refused a request (nothing was made available).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddError {
    /// No segments.
    NoSegments,
    /// Not enough free descriptors now; try again after completions.
    Full {
        /// Descriptors the request needs.
        needed: usize,
        /// Descriptors free.
        free: usize,
    },
    /// A segment is empty.
    EmptySegment,
    /// A device-readable segment follows a device-writable one (VirtIO requires readable
    /// segments first).
    ReadableAfterWritable,
    /// The ring could not be written (a broken [`SharedRegion`]).
    Memory,
}

/// What was wrong with the device's side of the used ring. Only [`UsedError::LengthTooLarge`]
/// ends a request (the driver must fail it); the others name no request of ours and are
/// reported so the driver can count them, log them, or reset a device that keeps misbehaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedError {
    /// An entry named a descriptor id beyond the queue size. The entry was consumed.
    IdOutOfRange {
        /// The id the device wrote.
        id: u32,
    },
    /// An entry named a descriptor that is not the head of an outstanding request (never
    /// used, not a head, or already completed). The entry was consumed.
    NotOutstanding {
        /// The id the device wrote.
        id: u16,
    },
    /// An entry completed a request but claimed more bytes written than the request's
    /// device-writable capacity. The request is over (its descriptors are free again) and
    /// failed: the driver must not trust its buffers' contents.
    LengthTooLarge {
        /// The failed request.
        token: Token,
        /// The length the device wrote.
        written: u32,
        /// The request's device-writable capacity.
        capacity: u64,
    },
    /// `used.idx` is more than the queue size ahead of the last entry consumed (or behind it):
    /// no entry is consumed, and every call reports this until the index is sane again. A
    /// device doing this is broken; reset it.
    IndexJump {
        /// The used index the device published.
        used_idx: u16,
        /// The queue's last consumed index.
        last_used: u16,
    },
    /// The ring could not be read (a broken [`SharedRegion`]).
    Memory,
}

impl UsedError {
    /// The request this error ends, if any: fail it.
    pub const fn token(&self) -> Option<Token> {
        match self {
            UsedError::LengthTooLarge { token, .. } => Some(*token),
            _ => None,
        }
    }
}

impl fmt::Display for UsedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsedError::IdOutOfRange { id } => write!(f, "used id {id} out of range"),
            UsedError::NotOutstanding { id } => write!(f, "used id {id} not outstanding"),
            UsedError::LengthTooLarge {
                written, capacity, ..
            } => write!(f, "used length {written} exceeds capacity {capacity}"),
            UsedError::IndexJump {
                used_idx,
                last_used,
            } => write!(f, "used index jumped to {used_idx} from {last_used}"),
            UsedError::Memory => f.write_str("ring memory inaccessible"),
        }
    }
}

/// Device addresses of a queue's three parts, for the transport's queue registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAddresses {
    /// Descriptor table (descriptor area).
    pub descriptors: u64,
    /// Available ring (driver area).
    pub driver: u64,
    /// Used ring (device area).
    pub device: u64,
}

/// A request in the device's hands, as the driver recorded it when it made it available.
#[derive(Clone, Copy, Debug)]
struct Outstanding {
    serial: u64,
    chain_len: u16,
    capacity: u64,
}

/// A split virtqueue over one coherent region. See the [module docs](self).
#[derive(Debug)]
pub struct SplitQueue<M: SharedRegion> {
    ring: SharedRing<M>,
    index: u16,
    size: u16,
    event_idx: bool,
    /// Private chain links: for a free descriptor, the next free one; for a descriptor in a
    /// chain, the next in the chain. Never read from shared memory.
    next: Vec<u16>,
    /// Per head descriptor: the outstanding request it starts, if any.
    heads: Vec<Option<Outstanding>>,
    free_head: u16,
    free_count: u16,
    /// The next available index to publish.
    avail_idx: u16,
    /// `avail_idx` when the device was last told about new buffers.
    notified_avail: u16,
    /// The used index up to which entries have been consumed.
    last_used: u16,
    in_flight: u16,
    next_serial: u64,
}

impl<M: SharedRegion> SplitQueue<M> {
    /// Bytes of region a queue of `size` entries needs, or `None` if `size` is not a power of
    /// two from 1 to 32768.
    pub const fn region_size(size: u16) -> Option<usize> {
        match Layout::new(size) {
            Some(layout) => Some(layout.total),
            None => None,
        }
    }

    /// Alignment the region's device address needs.
    pub const REGION_ALIGN: usize = REGION_ALIGN;

    /// The queue size to use for a device whose maximum is `max` when the driver would like
    /// `wanted`: the largest power of two not above either (0 if either is 0).
    pub const fn fit_size(max: u16, wanted: u16) -> u16 {
        let limit = if max < wanted { max } else { wanted };
        if limit == 0 {
            0
        } else {
            1 << (15 - limit.leading_zeros())
        }
    }

    /// Queue `index` of `size` entries over `region`, which it zeroes. `event_idx`: whether
    /// `VIRTIO_F_EVENT_IDX` was negotiated.
    pub fn new(index: u16, size: u16, region: M, event_idx: bool) -> Result<Self, SetupError> {
        let layout = Layout::new(size).ok_or(SetupError::BadSize(size))?;
        if region.len() < layout.total {
            return Err(SetupError::RegionTooSmall {
                needed: layout.total,
                len: region.len(),
            });
        }
        if !region.device_address().is_multiple_of(REGION_ALIGN as u64)
            || region
                .device_address()
                .checked_add(layout.total as u64)
                .is_none()
        {
            return Err(SetupError::Misaligned(region.device_address()));
        }
        region.zero();
        let ring = SharedRing::new(region, layout);
        if !ring.write_avail_flags(0) || !ring.write_avail_idx(0) || !ring.write_used_event(0) {
            return Err(SetupError::Memory);
        }
        // Free list 0 -> 1 -> ... -> size-1 (the last link is never followed: free_count bounds
        // every walk).
        let next = (0..size).map(|i| i.wrapping_add(1) & (size - 1)).collect();
        Ok(SplitQueue {
            ring,
            index,
            size,
            event_idx,
            next,
            heads: vec![None; usize::from(size)],
            free_head: 0,
            free_count: size,
            avail_idx: 0,
            notified_avail: 0,
            last_used: 0,
            in_flight: 0,
            next_serial: 0,
        })
    }

    /// Allocates the rings from `allocator` and sets the queue up over them.
    pub fn allocate<A>(
        allocator: &A,
        index: u16,
        size: u16,
        event_idx: bool,
    ) -> Result<Self, AllocateError<A::Error>>
    where
        A: CoherentAllocator<Region = M>,
    {
        let bytes =
            Self::region_size(size).ok_or(AllocateError::Setup(SetupError::BadSize(size)))?;
        let region = allocator
            .alloc_coherent(bytes, REGION_ALIGN)
            .map_err(AllocateError::Allocate)?;
        let device_address = region.device_address();
        let len = region.len();
        // Check before handing the region over so it can be freed on failure.
        let problem = if len < bytes {
            Some(SetupError::RegionTooSmall { needed: bytes, len })
        } else if !device_address.is_multiple_of(REGION_ALIGN as u64) {
            Some(SetupError::Misaligned(device_address))
        } else {
            None
        };
        if let Some(problem) = problem {
            let _ = allocator.free_coherent(region);
            return Err(AllocateError::Setup(problem));
        }
        Self::new(index, size, region, event_idx).map_err(AllocateError::Setup)
    }

    /// The queue's index on its device (for notifications).
    pub const fn index(&self) -> u16 {
        self.index
    }

    /// Number of entries (descriptors).
    pub const fn size(&self) -> u16 {
        self.size
    }

    /// Requests made available and not yet completed.
    pub const fn in_flight(&self) -> usize {
        self.in_flight as usize
    }

    /// Free descriptors.
    pub const fn free_descriptors(&self) -> usize {
        self.free_count as usize
    }

    /// Whether the queue uses `used_event` / `avail_event`.
    pub const fn event_idx(&self) -> bool {
        self.event_idx
    }

    /// The region holding the rings.
    pub fn region(&self) -> &M {
        self.ring.region()
    }

    /// Device addresses for the transport's queue registers.
    pub fn addresses(&self) -> QueueAddresses {
        let (descriptors, driver, device) = self.ring.device_addresses();
        QueueAddresses {
            descriptors,
            driver,
            device,
        }
    }

    /// The tokens of every outstanding request, in slot order (e.g. to fail them after a
    /// device reset).
    pub fn outstanding(&self) -> impl Iterator<Item = Token> + '_ {
        self.heads.iter().enumerate().filter_map(|(head, state)| {
            state.map(|state| Token {
                head: head as u16,
                serial: state.serial,
            })
        })
    }

    /// Gives the region back. Only after the device has been reset (status read back as 0),
    /// or it may still write the rings.
    pub fn into_region(self) -> M {
        self.ring.into_region()
    }

    /// Makes one request available: its `segments` in order, device-readable ones first, as
    /// one descriptor chain. Tell the device with [`Self::should_notify`] and the transport's
    /// notify (after adding a batch, once).
    pub fn add(&mut self, segments: &[Segment]) -> Result<Token, AddError> {
        let count = segments.len();
        if count == 0 {
            return Err(AddError::NoSegments);
        }
        if count > usize::from(self.free_count) {
            return Err(AddError::Full {
                needed: count,
                free: usize::from(self.free_count),
            });
        }
        let mut seen_writable = false;
        let mut capacity = 0u64;
        for segment in segments {
            if segment.len == 0 {
                return Err(AddError::EmptySegment);
            }
            if segment.writable {
                seen_writable = true;
                capacity += u64::from(segment.len);
            } else if seen_writable {
                return Err(AddError::ReadableAfterWritable);
            }
        }

        // count <= free_count <= size <= 32768, so it fits a u16.
        let chain_len = count as u16;
        let head = self.free_head;
        let mut descriptor = head;
        let mut written = true;
        for (position, segment) in segments.iter().enumerate() {
            let last = position + 1 == count;
            let next = self.next[usize::from(descriptor)];
            let mut flags = 0;
            if !last {
                flags |= DESC_F_NEXT;
            }
            if segment.writable {
                flags |= DESC_F_WRITE;
            }
            written &= self.ring.write_descriptor(
                descriptor,
                segment.address,
                segment.len,
                flags,
                if last { 0 } else { next },
            );
            if !last {
                descriptor = next;
            }
        }
        let slot = self.avail_idx;
        written &= self.ring.write_avail_entry(slot, head);
        if !written {
            // Nothing was published (avail.idx untouched) and the private lists are unchanged.
            return Err(AddError::Memory);
        }

        // Take the chain off the free list: its links stay in `next` as the chain's links.
        self.free_head = self.next[usize::from(descriptor)];
        self.free_count -= chain_len;
        let serial = self.next_serial;
        self.next_serial += 1;
        self.heads[usize::from(head)] = Some(Outstanding {
            serial,
            chain_len,
            capacity,
        });
        self.in_flight += 1;

        // Descriptors and ring entry before the index that publishes them.
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // A failed write here cannot be taken back (the chain is recorded); the region checked
        // out at construction, so it does not happen with a sane SharedRegion.
        let _ = self.ring.write_avail_idx(self.avail_idx);
        Ok(Token { head, serial })
    }

    /// Whether the device wants a notification for the requests added since the last call
    /// (`used.flags` `NO_NOTIFY`, or `avail_event` with `VIRTIO_F_EVENT_IDX`). Call after a
    /// batch of [`Self::add`]s and notify through the transport if `true`. Any value the device
    /// wrote is acceptable: at worst it costs a notification or a stalled device.
    pub fn should_notify(&mut self) -> bool {
        // The new avail.idx must be visible before the device's suppression is read.
        fence(Ordering::SeqCst);
        let old = self.notified_avail;
        let new = self.avail_idx;
        self.notified_avail = new;
        if old == new {
            return false;
        }
        if self.event_idx {
            match self.ring.read_avail_event() {
                // Notify if avail_event lies in [old, new): the device asked to hear about it.
                Some(event) => new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old),
                None => true,
            }
        } else {
            match self.ring.read_used_flags() {
                Some(flags) => flags & USED_F_NO_NOTIFY == 0,
                None => true,
            }
        }
    }

    /// The next completion, if the device has published one: `None` when the used ring is
    /// drained. Each call does a bounded amount of work (one entry, at most one chain of at
    /// most the queue size freed).
    ///
    /// A device that keeps publishing entries can keep this returning `Some` for ever; a driver
    /// loop should stop after [`Self::size`] results per interrupt and come back later.
    pub fn pop_used(&mut self) -> Option<Result<Completion, UsedError>> {
        let mut used_idx = match self.ring.read_used_idx() {
            Some(idx) => idx,
            None => return Some(Err(UsedError::Memory)),
        };
        if used_idx == self.last_used {
            if !self.event_idx {
                return None;
            }
            // Ask for an interrupt on the next entry, then look again: an entry published
            // before the device saw used_event would otherwise raise no interrupt.
            let _ = self.ring.write_used_event(self.last_used);
            fence(Ordering::SeqCst);
            used_idx = match self.ring.read_used_idx() {
                Some(idx) => idx,
                None => return Some(Err(UsedError::Memory)),
            };
            if used_idx == self.last_used {
                return None;
            }
        }
        let pending = used_idx.wrapping_sub(self.last_used);
        if pending > self.size {
            return Some(Err(UsedError::IndexJump {
                used_idx,
                last_used: self.last_used,
            }));
        }
        // The entries covered by used.idx, only after reading it.
        fence(Ordering::Acquire);
        let entry = self.ring.read_used_entry(self.last_used);
        // The entry is consumed whatever it says: the device has moved past it.
        self.last_used = self.last_used.wrapping_add(1);
        let Some((id, written)) = entry else {
            return Some(Err(UsedError::Memory));
        };
        Some(self.complete(id, written))
    }

    /// Checks a used entry (already copied out of shared memory) and retires its chain.
    fn complete(&mut self, id: u32, written: u32) -> Result<Completion, UsedError> {
        let head = match u16::try_from(id) {
            Ok(head) if head < self.size => head,
            _ => return Err(UsedError::IdOutOfRange { id }),
        };
        let Some(request) = self.heads[usize::from(head)].take() else {
            return Err(UsedError::NotOutstanding { id: head });
        };
        self.free_chain(head, request.chain_len);
        self.in_flight -= 1;
        let token = Token {
            head,
            serial: request.serial,
        };
        if u64::from(written) > request.capacity {
            return Err(UsedError::LengthTooLarge {
                token,
                written,
                capacity: request.capacity,
            });
        }
        Ok(Completion { token, written })
    }

    /// Returns a chain of `chain_len` descriptors starting at `head` to the free list, walking
    /// the private links only.
    fn free_chain(&mut self, head: u16, chain_len: u16) {
        let mut last = head;
        for _ in 1..chain_len {
            last = self.next[usize::from(last)];
        }
        self.next[usize::from(last)] = self.free_head;
        self.free_head = head;
        self.free_count += chain_len;
    }
}
