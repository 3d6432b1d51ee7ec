//! Slot pool: a window cut into fixed-size slots, handed out as contiguous runs that meet an
//! alignment and a boundary constraint, in time that does not grow with the window's size.
//!
//! # Design
//!
//! Like Linux SWIOTLB, the window is divided into slots (2 KiB by default) and a mapping takes a
//! run of contiguous slots. Unlike SWIOTLB, which keeps 24 bytes per slot and searches linearly
//! from a hint, this pool keeps:
//!
//! - one free bit per slot, grouped in *blocks* of 128 slots (one `u128` each). A run never
//!   crosses a block, so the maximum mapping size is 128 slots (256 KiB with 2 KiB slots, the
//!   same as SWIOTLB's segment limit);
//! - eight *size classes*: the class of a block whose longest free run `r` satisfies
//!   `2^c <= r < 2^(c+1)` is `c`. Each block has a *recorded* class that is never below its true
//!   class (see below). Each class is a hierarchical bitmap over blocks (64-way: a summary bit per
//!   non-empty word, up to a single top word), all eight in one vector, plus a byte with a bit
//!   per non-empty class, so "the first block of the smallest non-empty class at or above `c`"
//!   costs one `trailing_zeros` for the class and one per level.
//!
//! `alloc` first tries the run freed last: if it has the requested length, is still free and
//! meets the alignment and boundary, it is taken with a few word operations (a driver that maps
//! and unmaps one buffer per I/O hits this every time, and the slots are still in its cache).
//! Otherwise it looks for a block whose class *guarantees* a fit (a free run of at least
//! `count + spread - 1` slots always contains a start that satisfies the alignment and the
//! boundary), in the smallest such class: a fixed number of word operations, whatever the pool
//! size. Inside a block the candidate starts are computed with a handful of `u128` operations:
//! run starts (`x & x >> s`, doubling), an alignment pattern and a boundary exclusion mask. Only
//! when no block guarantees a fit does `alloc` scan blocks that *might* fit (near exhaustion, or
//! alignments above 128 slots), so it never reports exhaustion while a fitting run exists.
//!
//! Recorded classes are upper bounds, kept cheaply: taking slots never reclassifies a block (its
//! class can only fall, so the recorded one stays an upper bound), and freeing raises the
//! recorded class to the class of the free run around the freed slots (two bit scans) — or does
//! nothing when the free exactly undoes the last allocation from that block. When the guaranteed
//! search meets a block whose recorded class overstated it, it records the true class and looks
//! again; each such correction pays for one earlier allocation, so the cost stays independent of
//! the pool size. The exhaustive scan stays complete because a block's recorded class is never
//! below its true one.
//!
//! Freeing the run the pool handed out last (LIFO, the common case) skips the argument checks
//! and the mask arithmetic: the pool made that run, so it is known to be inside one block.
//!
//! Bookkeeping is about 73 bytes per MiB of pool with 2 KiB slots at 256 MiB, 148 at 4 MiB
//! (SWIOTLB: 12,288).
//!
//! Alignment and boundary apply to *device addresses*: the pool knows the device address of its
//! first slot and computes with absolute slot numbers, so a window need not be aligned to
//! anything larger than one slot.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::DmaError;

/// Slots per block; a run never crosses a block, so this bounds the mapping size.
pub const SLOTS_PER_BLOCK: usize = 128;

/// The default slot size in bytes (SWIOTLB's `IO_TLB_SIZE`).
pub const DEFAULT_SLOT_SIZE: usize = 2048;

/// The smallest slot size the pool accepts, in bytes.
pub const MIN_SLOT_SIZE: usize = 64;

/// Number of size classes: `floor(log2(longest free run))` for runs of 1 to 128 slots.
const CLASS_COUNT: usize = 8;

/// A run of contiguous slots, as handed out by [`SlotPool::alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotRun {
    /// Index of the first slot in the window.
    pub first: usize,
    /// Number of slots (1 to [`SLOTS_PER_BLOCK`]).
    pub count: usize,
}

impl SlotRun {
    /// The slot index one past the run.
    pub fn end(&self) -> usize {
        self.first + self.count
    }
}

/// The most summary levels a class bitmap can have: 64^6 = 2^36 blocks (2^43 slots), far past
/// any window (a larger pool is refused by [`SlotPool::new`]).
const MAX_LEVELS: usize = 6;

/// Block membership of every size class: one bitmap per class with summary levels, all in one
/// vector so a lookup touches no second allocation.
///
/// In each class's bitmap, bit `i` of level `k + 1` is set when word `i` of level `k` is not zero,
/// and the top level is a single word, so finding a class's first or next block costs one word
/// operation per level (log64 of the block count). `non_empty` has bit `c` set when class `c`
/// holds a block, so the first non-empty class at or above `c` is one `trailing_zeros`.
#[derive(Clone, Debug)]
struct ClassIndex {
    /// Class `c`'s bitmap is `words[c * stride .. (c + 1) * stride]`; inside it, level `k` is
    /// `level_starts[k] .. level_starts[k + 1]` (level 0: one bit per block).
    words: Vec<u64>,
    stride: usize,
    level_starts: [usize; MAX_LEVELS + 1],
    levels: usize,
    non_empty: u8,
}

impl ClassIndex {
    /// An empty index over `blocks` blocks; `None` if that needs more than [`MAX_LEVELS`].
    fn new(blocks: usize) -> Option<Self> {
        let mut level_starts = [0; MAX_LEVELS + 1];
        let mut levels = 0;
        let mut bits = blocks.max(1);
        loop {
            let words = bits.div_ceil(64);
            if levels == MAX_LEVELS {
                return None;
            }
            level_starts[levels + 1] = level_starts[levels] + words;
            levels += 1;
            if words == 1 {
                break;
            }
            bits = words;
        }
        let stride = level_starts[levels];
        Some(ClassIndex {
            words: vec![0; stride.checked_mul(CLASS_COUNT)?],
            stride,
            level_starts,
            levels,
            non_empty: 0,
        })
    }

    /// The index in `words` of word `word` of `class`'s level `level`.
    fn at(&self, class: usize, level: usize, word: usize) -> usize {
        class * self.stride + self.level_starts[level] + word
    }

    fn insert(&mut self, class: usize, mut block: usize) {
        for level in 0..self.levels {
            let at = self.at(class, level, block / 64);
            let was_empty = self.words[at] == 0;
            self.words[at] |= 1u64 << (block % 64);
            if !was_empty {
                break;
            }
            block /= 64;
        }
        self.non_empty |= 1 << class;
    }

    fn remove(&mut self, class: usize, mut block: usize) {
        for level in 0..self.levels {
            let at = self.at(class, level, block / 64);
            self.words[at] &= !(1u64 << (block % 64));
            if self.words[at] != 0 {
                return;
            }
            block /= 64;
        }
        // The top word is now zero: the class is empty.
        self.non_empty &= !(1 << class);
    }

    fn contains(&self, class: usize, block: usize) -> bool {
        self.words[self.at(class, 0, block / 64)] & (1u64 << (block % 64)) != 0
    }

    /// The lowest non-empty class at or above `class`.
    fn first_class_from(&self, class: usize) -> Option<usize> {
        let above = self.non_empty.checked_shr(class as u32).unwrap_or(0);
        (above != 0).then(|| class + above.trailing_zeros() as usize)
    }

    /// The first block of `class`, descending from the top word.
    fn first(&self, class: usize) -> Option<usize> {
        let mut index = 0;
        for level in (0..self.levels).rev() {
            let word = self.words[self.at(class, level, index)];
            if word == 0 {
                return None;
            }
            index = index * 64 + word.trailing_zeros() as usize;
        }
        Some(index)
    }

    /// The first block of `class` at or after `from`.
    fn next(&self, class: usize, from: usize) -> Option<usize> {
        self.next_in_level(class, 0, from)
    }

    fn next_in_level(&self, class: usize, level: usize, from: usize) -> Option<usize> {
        if level >= self.levels {
            return None;
        }
        let word_index = from / 64;
        if word_index >= self.level_starts[level + 1] - self.level_starts[level] {
            return None;
        }
        let word = self.words[self.at(class, level, word_index)] & (!0u64 << (from % 64));
        if word != 0 {
            return Some(word_index * 64 + word.trailing_zeros() as usize);
        }
        let next_word = self.next_in_level(class, level + 1, word_index + 1)?;
        let word = self.words[self.at(class, level, next_word)];
        Some(next_word * 64 + word.trailing_zeros() as usize)
    }

    /// Whether every summary bit and `non_empty` agree with the level below. Linear; for tests.
    fn check_consistency(&self) -> bool {
        (0..CLASS_COUNT).all(|class| {
            let summaries_agree = (0..self.levels - 1).all(|level| {
                let words = self.level_starts[level + 1] - self.level_starts[level];
                (0..words).all(|word| {
                    let below = self.words[self.at(class, level, word)] != 0;
                    let above = self.words[self.at(class, level + 1, word / 64)]
                        & (1u64 << (word % 64))
                        != 0;
                    below == above
                })
            });
            let top = self.words[self.at(class, self.levels - 1, 0)] != 0;
            summaries_agree && top == (self.non_empty & (1 << class) != 0)
        })
    }

    fn metadata_bytes(&self) -> usize {
        self.words.capacity() * core::mem::size_of::<u64>()
    }
}

/// The slot allocator for one window. See the module documentation for the design.
#[derive(Clone, Debug)]
pub struct SlotPool {
    slot_shift: u32,
    total_slots: usize,
    free_slots: usize,
    /// Device address of slot 0, divided by the slot size.
    base_slot: u64,
    /// One bit per slot, 1 = free; bits past `total_slots` stay 0.
    blocks: Vec<u128>,
    /// Each block's recorded size class (`NO_CLASS` only when it has no free slot): at least
    /// its true class, see the module documentation.
    block_classes: Vec<u8>,
    /// Block membership per recorded size class.
    classes: ClassIndex,
    /// The run the pool allocated or freed last.
    last: LastRun,
}

/// The run the pool allocated or freed last (`run.count` 0: none yet), with its block and slot
/// mask.
///
/// - Freed last: the next allocation of the same length tries it first.
/// - Allocated last: freeing it needs no argument checks or mask arithmetic (the pool made it,
///   inside one block). `bits_before` and `class_before` are then the block's free bits and
///   recorded class just before the allocation: a free that brings back exactly these bits,
///   while the block still has this recorded class, leaves the class an upper bound without
///   any work. (After a free through the checked path they are invalid, `class_before` =
///   [`NOT_A_CLASS`]; the run can only be allocated again through `take_mask`, which sets them.)
#[derive(Clone, Copy, Debug)]
struct LastRun {
    run: SlotRun,
    block: usize,
    mask: u128,
    bits_before: u128,
    class_before: u8,
}

/// A `class_before` that matches no block's recorded class.
const NOT_A_CLASS: u8 = u8::MAX - 1;

/// The class byte of a block with no free slot.
const NO_CLASS: u8 = u8::MAX;

/// An allocation request in slot units.
#[derive(Clone, Copy, Debug)]
struct SlotRequest {
    count: usize,
    /// Start alignment in slots (1 = none).
    align: u64,
    /// Boundary in slots that a run must not cross (0 = none).
    boundary: u64,
}

impl SlotPool {
    /// Creates a pool over a window of `window_bytes` (rounded down to whole slots) whose first
    /// byte has device address `device_base`.
    ///
    /// Fails with [`DmaError::InvalidArgument`] when `slot_size` is not a power of two of at
    /// least [`MIN_SLOT_SIZE`], the window holds no slot, or `device_base` is not slot-aligned.
    pub fn new(window_bytes: usize, slot_size: usize, device_base: u64) -> Result<Self, DmaError> {
        if !slot_size.is_power_of_two() || slot_size < MIN_SLOT_SIZE {
            return Err(DmaError::InvalidArgument);
        }
        let slot_shift = slot_size.trailing_zeros();
        let total_slots = window_bytes >> slot_shift;
        if total_slots == 0 || device_base & (slot_size as u64 - 1) != 0 {
            return Err(DmaError::InvalidArgument);
        }
        let block_count = total_slots.div_ceil(SLOTS_PER_BLOCK);
        let mut pool = SlotPool {
            slot_shift,
            total_slots,
            free_slots: total_slots,
            base_slot: device_base >> slot_shift,
            blocks: vec![u128::MAX; block_count],
            block_classes: vec![NO_CLASS; block_count],
            classes: ClassIndex::new(block_count).ok_or(DmaError::InvalidArgument)?,
            last: LastRun {
                run: SlotRun { first: 0, count: 0 },
                block: 0,
                mask: 0,
                bits_before: 0,
                class_before: NOT_A_CLASS,
            },
        };
        let tail = total_slots % SLOTS_PER_BLOCK;
        if tail != 0 {
            pool.blocks[block_count - 1] = low_ones(tail);
        }
        for block in 0..block_count {
            if let Some(class) = class_of(pool.blocks[block]) {
                pool.classes.insert(class, block);
                pool.block_classes[block] = class as u8;
            }
        }
        Ok(pool)
    }

    /// The slot size in bytes.
    pub fn slot_size(&self) -> usize {
        1 << self.slot_shift
    }

    /// The largest length one `alloc` can satisfy, in bytes (reported to clients).
    pub fn max_mapping_size(&self) -> usize {
        SLOTS_PER_BLOCK << self.slot_shift
    }

    /// The number of slots in the pool.
    pub fn total_slots(&self) -> usize {
        self.total_slots
    }

    /// The number of free slots.
    pub fn free_slots(&self) -> usize {
        self.free_slots
    }

    /// The number of allocated slots.
    pub fn used_slots(&self) -> usize {
        self.total_slots - self.free_slots
    }

    /// The window size in bytes (whole slots).
    pub fn window_bytes(&self) -> usize {
        self.total_slots << self.slot_shift
    }

    /// The byte offset of a run in the window.
    pub fn offset_of(&self, run: SlotRun) -> usize {
        run.first << self.slot_shift
    }

    /// Whether slot `slot` is free (`false` for slots outside the pool).
    pub fn is_slot_free(&self, slot: usize) -> bool {
        slot < self.total_slots
            && self.blocks[slot / SLOTS_PER_BLOCK] & (1u128 << (slot % SLOTS_PER_BLOCK)) != 0
    }

    /// Bytes of bookkeeping this pool keeps (the struct and everything it owns).
    pub fn metadata_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + self.blocks.capacity() * core::mem::size_of::<u128>()
            + self.block_classes.capacity()
            + self.classes.metadata_bytes()
    }

    /// Allocates a run of slots for `len` bytes whose device address is a multiple of `align`
    /// (0 or 1 = any slot) and which does not cross a multiple of `boundary` (0 = no boundary).
    ///
    /// Errors: [`DmaError::InvalidArgument`] for a zero length, an alignment or boundary that is
    /// not a power of two, or a boundary smaller than `len`; [`DmaError::TooLarge`] beyond
    /// [`max_mapping_size`](Self::max_mapping_size); [`DmaError::PoolExhausted`] when no free run
    /// satisfies the request.
    #[inline]
    pub fn alloc(&mut self, len: u64, align: u64, boundary: u64) -> Result<SlotRun, DmaError> {
        let request = self.request(len, align, boundary)?;
        // Fastest path (a driver that maps and unmaps one buffer per I/O): the run freed last,
        // if it is still free, has the requested length and meets the constraints. A few word
        // operations, inlined into the caller, and the slots are likely still in the cache.
        let last = self.last;
        if last.run.count == request.count
            && self.blocks.get(last.block).copied().unwrap_or(0) & last.mask == last.mask
            && self.placement_ok(last.run.first, request)
        {
            self.take_mask(last.run, last.block, last.mask);
            return Ok(last.run);
        }
        self.search(request)
    }

    /// [`SlotPool::alloc`] beyond the run freed last: the class search.
    #[inline(never)]
    fn search(&mut self, request: SlotRequest) -> Result<SlotRun, DmaError> {
        if request.count > self.free_slots {
            return Err(DmaError::PoolExhausted);
        }
        // Fast path: the first block of the smallest non-empty class in which every block whose
        // class is exact is certain to fit.
        if let Some(first_class) = self.guaranteed_class(request) {
            while let Some(class) = self.classes.first_class_from(first_class)
                && let Some(block) = self.classes.first(class)
            {
                if let Some(start) = self.fit_in_block(block, request) {
                    return Ok(self.take(block, start, request.count));
                }
                // The block's recorded class overstated it (allocations leave it high): record
                // its true class, which is below `first_class`, and look again. Each such step
                // corrects one block that an earlier allocation took slots from, so the cost is
                // bounded by the allocations made, not by the pool size. A block whose class was
                // already exact would not be moved; stop rather than loop.
                if !self.reclassify(block) {
                    break;
                }
            }
        }
        // Slow path: blocks that may fit. Reached only when nothing guarantees a fit. Recorded
        // classes are never below the true ones, so every block that can hold the run is seen.
        let lowest_class = floor_log2(request.count as u64) as usize;
        for class in lowest_class..CLASS_COUNT {
            let mut from = 0;
            while let Some(block) = self.classes.next(class, from) {
                if let Some(start) = self.fit_in_block(block, request) {
                    return Ok(self.take(block, start, request.count));
                }
                from = block + 1;
            }
        }
        Err(DmaError::PoolExhausted)
    }

    /// Returns a run to the pool. Fails with [`DmaError::InvalidArgument`] (and changes nothing)
    /// unless every slot of the run is currently allocated.
    #[inline]
    pub fn free(&mut self, run: SlotRun) -> Result<(), DmaError> {
        let last = self.last;
        if run == last.run && run.count != 0 {
            // The run the last allocation made (LIFO, the common case): inside the pool and
            // one block by construction, and the mask is known. (If it is free already, this is
            // a double free, refused below.) It stays `last`, now as the run freed last.
            let old = self.blocks.get(last.block).copied().unwrap_or(u128::MAX);
            if old & last.mask != 0 {
                return Err(DmaError::InvalidArgument);
            }
            let bits = old | last.mask;
            self.blocks[last.block] = bits;
            self.free_slots += run.count;
            if bits != last.bits_before
                || self.block_classes.get(last.block) != Some(&last.class_before)
            {
                self.raise_class(last.block, run.first % SLOTS_PER_BLOCK, run.count);
            }
            return Ok(());
        }
        self.free_checked(run)
    }

    /// [`SlotPool::free`] of any run: checks it, then frees it.
    #[inline(never)]
    fn free_checked(&mut self, run: SlotRun) -> Result<(), DmaError> {
        if run.count == 0 || run.count > SLOTS_PER_BLOCK {
            return Err(DmaError::InvalidArgument);
        }
        let end = run
            .first
            .checked_add(run.count)
            .ok_or(DmaError::InvalidArgument)?;
        if end > self.total_slots || run.first / SLOTS_PER_BLOCK != (end - 1) / SLOTS_PER_BLOCK {
            return Err(DmaError::InvalidArgument);
        }
        let block = run.first / SLOTS_PER_BLOCK;
        let start = run.first % SLOTS_PER_BLOCK;
        let mask = low_ones(run.count) << start;
        let old = self.blocks[block];
        if old & mask != 0 {
            return Err(DmaError::InvalidArgument);
        }
        let bits = old | mask;
        self.blocks[block] = bits;
        self.free_slots += run.count;
        let last = self.last;
        self.last = LastRun {
            run,
            block,
            mask,
            bits_before: 0,
            class_before: NOT_A_CLASS,
        };
        if last.block == block
            && last.bits_before == bits
            && self.block_classes.get(block) == Some(&last.class_before)
        {
            // The block is as it was before the last allocation from it, and so is its class.
            return Ok(());
        }
        self.raise_class(block, start, run.count);
        Ok(())
    }

    /// After slots `start .. start + count` of `block` were freed: raises the block's recorded
    /// class to the class of the free run around them, if that is higher.
    #[inline(never)]
    fn raise_class(&mut self, block: usize, start: usize, count: usize) {
        let bits = self.blocks[block];
        let recorded = self.block_classes[block];
        // Freeing can only lengthen the free run around the freed slots; the block's class
        // becomes at least that run's class (it may already be higher).
        let merged = run_around(bits, start, start + count);
        let class = floor_log2(merged as u64) as u8;
        if recorded == NO_CLASS || recorded < class {
            self.move_block(block, recorded, class);
        }
    }

    /// Checks the pool's internal invariants (free count, tail bits, each block's recorded
    /// class at least its true class and only a block without free slots in no class, class
    /// membership, summary levels). Meant for tests; cost is linear in the pool size.
    pub fn check_consistency(&self) -> bool {
        let free: usize = self.blocks.iter().map(|b| b.count_ones() as usize).sum();
        if free != self.free_slots {
            return false;
        }
        let tail = self.total_slots % SLOTS_PER_BLOCK;
        if tail != 0 && self.blocks[self.blocks.len() - 1] & !low_ones(tail) != 0 {
            return false;
        }
        self.classes.check_consistency()
            && self.blocks.iter().enumerate().all(|(block, &bits)| {
                let recorded = self.block_classes[block];
                let recorded = (recorded != NO_CLASS).then_some(recorded as usize);
                // `None` (no class) orders below every class.
                recorded >= class_of(bits)
                    && (0..CLASS_COUNT)
                        .all(|c| self.classes.contains(c, block) == (recorded == Some(c)))
            })
    }

    #[inline]
    fn request(&self, len: u64, align: u64, boundary: u64) -> Result<SlotRequest, DmaError> {
        if len == 0 || (align != 0 && !align.is_power_of_two()) {
            return Err(DmaError::InvalidArgument);
        }
        if boundary != 0 && (!boundary.is_power_of_two() || boundary < len) {
            return Err(DmaError::InvalidArgument);
        }
        if len > self.max_mapping_size() as u64 {
            return Err(DmaError::TooLarge);
        }
        // Runs start on slot boundaries: alignments up to a slot always hold, and a boundary of
        // at most one slot cannot be crossed by a length that fits under it.
        let count = len.div_ceil(1u64 << self.slot_shift) as usize;
        let align = (align >> self.slot_shift).max(1);
        let boundary = boundary >> self.slot_shift;
        let boundary = if boundary > 1 { boundary } else { 0 };
        Ok(SlotRequest {
            count,
            align,
            boundary,
        })
    }

    /// Whether a run of `request.count` slots starting at slot `first` meets the request's
    /// alignment and boundary (its slots' being free is not checked).
    #[inline]
    fn placement_ok(&self, first: usize, request: SlotRequest) -> bool {
        let start = self.base_slot + first as u64;
        let last = start + request.count as u64 - 1;
        start & (request.align - 1) == 0
            && (request.boundary == 0 || (start ^ last) & !(request.boundary - 1) == 0)
    }

    /// The smallest class in which every block holds a run satisfying `request`, if any.
    fn guaranteed_class(&self, request: SlotRequest) -> Option<usize> {
        // When block starts are multiples of the boundary's period, a boundary of at least a
        // block never cuts a block, so it constrains nothing.
        let boundary_cuts_blocks = request.boundary != 0
            && (request.boundary < SLOTS_PER_BLOCK as u64
                || !self.base_slot.is_multiple_of(SLOTS_PER_BLOCK as u64));
        // Any start aligned to `spread` satisfies both constraints: the alignment directly, and
        // the boundary because an aligned power-of-two span at least `count` long lies inside one
        // boundary period (count <= boundary). A free run of count + spread - 1 holds such a
        // start.
        let mut spread = request.align;
        if boundary_cuts_blocks {
            spread = spread.max((request.count as u64).next_power_of_two());
        }
        let needed = (request.count as u64).checked_add(spread - 1)?;
        if needed > SLOTS_PER_BLOCK as u64 {
            return None;
        }
        Some(ceil_log2(needed) as usize)
    }

    /// The lowest start in `block` that satisfies `request`, if any.
    fn fit_in_block(&self, block: usize, request: SlotRequest) -> Option<usize> {
        let starts = run_starts(self.blocks[block], request.count);
        if starts == 0 {
            return None;
        }
        let block_start = self.base_slot + (block * SLOTS_PER_BLOCK) as u64;
        let mut candidates = starts;
        if request.align > 1 {
            candidates &= periodic_mask(request.align, block_start);
        }
        if request.boundary != 0 && candidates != 0 {
            candidates &= !crossing_starts(request.boundary, block_start, request.count);
        }
        if candidates == 0 {
            None
        } else {
            Some(candidates.trailing_zeros() as usize)
        }
    }

    /// Takes the slots `start .. start + count` of `block`. The block keeps its recorded class,
    /// which may now overstate it; [`SlotPool::alloc`] corrects it when it matters.
    fn take(&mut self, block: usize, start: usize, count: usize) -> SlotRun {
        let run = SlotRun {
            first: block * SLOTS_PER_BLOCK + start,
            count,
        };
        self.take_mask(run, block, low_ones(count) << start);
        run
    }

    /// Takes the free slots `mask` of `block` (the run `run`), remembering the block as it was.
    #[inline]
    fn take_mask(&mut self, run: SlotRun, block: usize, mask: u128) {
        let old = self.blocks[block];
        debug_assert_eq!(old & mask, mask);
        self.last = LastRun {
            run,
            block,
            mask,
            bits_before: old,
            class_before: self.block_classes[block],
        };
        self.blocks[block] = old & !mask;
        self.free_slots -= run.count;
    }

    /// Records `block`'s true class; returns whether that moved it.
    fn reclassify(&mut self, block: usize) -> bool {
        let recorded = self.block_classes[block];
        let exact = class_of(self.blocks[block]).map_or(NO_CLASS, |class| class as u8);
        if recorded == exact {
            return false;
        }
        self.move_block(block, recorded, exact);
        true
    }

    /// Moves `block` from class `from` to class `to` (either may be `NO_CLASS`).
    fn move_block(&mut self, block: usize, from: u8, to: u8) {
        if from != NO_CLASS {
            self.classes.remove(from as usize, block);
        }
        if to != NO_CLASS {
            self.classes.insert(to as usize, block);
        }
        self.block_classes[block] = to;
    }
}

/// A mask of the `count` lowest bits (`count` from 0 to 128).
fn low_ones(count: usize) -> u128 {
    if count >= 128 {
        u128::MAX
    } else {
        (1u128 << count) - 1
    }
}

fn floor_log2(value: u64) -> u32 {
    63 - value.leading_zeros()
}

fn ceil_log2(value: u64) -> u32 {
    value.next_power_of_two().trailing_zeros()
}

/// Bits `p` such that bits `p .. p + len` of `free` are all set (`len` from 1 to 128).
fn run_starts(free: u128, len: usize) -> u128 {
    let mut starts = free;
    let mut covered = 1;
    while covered < len && starts != 0 {
        let shift = covered.min(len - covered);
        starts &= starts >> shift;
        covered += shift;
    }
    starts
}

/// The size class of a block with free bits `free`: `floor(log2(longest run of set bits))`, or
/// `None` when it has no free slot.
fn class_of(free: u128) -> Option<usize> {
    if free == 0 {
        return None;
    }
    // `starts` holds the starts of runs at least 2^class long; doubling the length needs one
    // shift and one AND.
    let mut starts = free;
    let mut class = 0;
    while class + 1 < CLASS_COUNT {
        let longer = starts & (starts >> (1u32 << class));
        if longer == 0 {
            break;
        }
        starts = longer;
        class += 1;
    }
    Some(class)
}

/// The length of the run of set bits in `bits` that contains `start .. end` (all set,
/// `start < end <= 128`).
fn run_around(bits: u128, start: usize, end: usize) -> usize {
    let above = if end >= SLOTS_PER_BLOCK {
        0
    } else {
        (bits >> end).trailing_ones() as usize
    };
    let below = if start == 0 {
        0
    } else {
        (bits << (SLOTS_PER_BLOCK - start)).leading_ones() as usize
    };
    below + (end - start) + above
}

/// Bits `p` in a block such that `block_start + p` is a multiple of `period` (a power of two).
fn periodic_mask(period: u64, block_start: u64) -> u128 {
    let first = block_start.wrapping_neg() & (period - 1);
    if first >= SLOTS_PER_BLOCK as u64 {
        return 0;
    }
    let pattern = if period >= SLOTS_PER_BLOCK as u64 {
        1
    } else {
        PERIODIC_PATTERNS[period.trailing_zeros() as usize]
    };
    pattern << first
}

/// `PERIODIC_PATTERNS[k]`: bits at every multiple of `2^k`, for periods 1 to 64.
const PERIODIC_PATTERNS: [u128; 7] = {
    let mut patterns = [0u128; 7];
    let mut k = 0;
    while k < 7 {
        let mut bit = 0;
        while bit < 128 {
            patterns[k] |= 1u128 << bit;
            bit += 1 << k;
        }
        k += 1;
    }
    patterns
};

/// Starts `p` in a block whose run of `count` slots would cross a multiple of `boundary`.
fn crossing_starts(boundary: u64, block_start: u64, count: usize) -> u128 {
    // A run starting at p crosses the boundary point x when p < x < p + count, that is when
    // p = x - k for some k in 1 .. count. Boundary points at or past the block's end cannot be
    // crossed by a run that stays inside the block.
    let points = periodic_mask(boundary, block_start);
    let reach = count - 1;
    if reach == 0 {
        return 0;
    }
    let mut crossing = points >> 1;
    let mut covered = 1;
    while covered < reach {
        let shift = covered.min(reach - covered);
        crossing |= crossing >> shift;
        covered += shift;
    }
    crossing
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOT: u64 = DEFAULT_SLOT_SIZE as u64;

    fn longest_run_reference(free: u128) -> usize {
        let (mut best, mut current) = (0, 0);
        for bit in 0..128 {
            if free & (1u128 << bit) != 0 {
                current += 1;
                best = best.max(current);
            } else {
                current = 0;
            }
        }
        best
    }

    const SAMPLES: [u128; 10] = [
        0,
        1,
        u128::MAX,
        u128::MAX >> 1,
        u128::MAX << 1,
        0xF0F0_FF00_0FFF_0000_1234_5678_9ABC_DEF0,
        (u128::MAX >> 64) << 30,
        0x5555_5555_5555_5555_5555_5555_5555_5555,
        (1u128 << 127) | 0b111,
        0x0000_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF_FFF0,
    ];

    #[test]
    fn class_of_matches_reference() {
        for free in SAMPLES {
            let expected = match longest_run_reference(free) {
                0 => None,
                run => Some(floor_log2(run as u64) as usize),
            };
            assert_eq!(class_of(free), expected, "{free:#x}");
        }
        for length in 1..=128 {
            let free = low_ones(length) << (128 - length);
            assert_eq!(class_of(free), Some(floor_log2(length as u64) as usize));
        }
    }

    #[test]
    fn run_around_matches_reference() {
        for free in SAMPLES {
            for start in 0..128 {
                for end in start + 1..=128 {
                    let mask = low_ones(end - start) << start;
                    if free & mask != mask {
                        continue;
                    }
                    let mut low = start;
                    while low > 0 && free & (1u128 << (low - 1)) != 0 {
                        low -= 1;
                    }
                    let mut high = end;
                    while high < 128 && free & (1u128 << high) != 0 {
                        high += 1;
                    }
                    assert_eq!(
                        run_around(free, start, end),
                        high - low,
                        "{free:#x} {start}"
                    );
                }
            }
        }
    }

    #[test]
    fn periodic_mask_matches_reference() {
        for shift in 0..10 {
            let period = 1u64 << shift;
            for block_start in [0u64, 1, 3, 64, 127, 128, 1000, 4096 + 5] {
                let mask = periodic_mask(period, block_start);
                for bit in 0..128u64 {
                    let expected = (block_start + bit) % period == 0;
                    assert_eq!(
                        mask & (1u128 << bit) != 0,
                        expected,
                        "{period} {block_start}"
                    );
                }
            }
        }
    }

    #[test]
    fn class_index_finds_first_and_next() {
        let mut index = ClassIndex::new(10_000).unwrap();
        assert_eq!(index.levels, 3);
        for class in 0..CLASS_COUNT {
            assert_eq!(index.first(class), None);
            assert_eq!(index.next(class, 0), None);
        }
        assert_eq!(index.first_class_from(0), None);
        for block in [5, 64, 4095, 4096, 9_999] {
            index.insert(3, block);
        }
        index.insert(5, 77);
        assert!(index.check_consistency());
        assert_eq!(index.first_class_from(0), Some(3));
        assert_eq!(index.first_class_from(4), Some(5));
        assert_eq!(index.first_class_from(6), None);
        assert_eq!(index.first(3), Some(5));
        assert_eq!(index.first(5), Some(77));
        assert_eq!(index.next(3, 0), Some(5));
        assert_eq!(index.next(3, 6), Some(64));
        assert_eq!(index.next(3, 65), Some(4095));
        assert_eq!(index.next(3, 4096), Some(4096));
        assert_eq!(index.next(3, 4097), Some(9_999));
        assert_eq!(index.next(3, 10_000), None);
        // Classes do not see each other's blocks.
        assert_eq!(index.next(5, 78), None);
        assert!(!index.contains(4, 5));
        index.remove(3, 4095);
        index.remove(3, 4096);
        assert_eq!(index.next(3, 65), Some(9_999));
        index.remove(3, 5);
        index.remove(3, 64);
        assert_eq!(index.first(3), Some(9_999));
        index.remove(3, 9_999);
        assert_eq!(index.next(3, 0), None);
        assert_eq!(index.first(3), None);
        assert_eq!(index.first_class_from(0), Some(5));
        assert!(index.check_consistency());
    }

    #[test]
    fn class_index_one_block_and_level_limit() {
        let mut index = ClassIndex::new(1).unwrap();
        assert_eq!(index.levels, 1);
        index.insert(7, 0);
        assert_eq!(index.first_class_from(7), Some(7));
        assert_eq!(index.first(7), Some(0));
        index.remove(7, 0);
        assert_eq!(index.first_class_from(0), None);
        // One block more than 64^6 would need a seventh level (refused before allocating).
        assert!(ClassIndex::new((1 << 36) + 1).is_none());
    }

    /// A pool whose slot 0 has an odd device slot number, with slots 0 and 1 taken and the run
    /// `{ first: 2, count: 2 }` (odd device slot, too) freed last.
    fn pool_with_run_freed_last() -> (SlotPool, u64, SlotRun) {
        let base = 0x4000_0000 + SLOT;
        let mut pool = SlotPool::new(1 << 20, DEFAULT_SLOT_SIZE, base).unwrap();
        pool.alloc(SLOT, 0, 0).unwrap();
        pool.alloc(SLOT, 0, 0).unwrap();
        let run = pool.alloc(2 * SLOT, 0, 0).unwrap();
        assert_eq!(run, SlotRun { first: 2, count: 2 });
        pool.free(run).unwrap();
        (pool, base, run)
    }

    #[test]
    fn the_run_freed_last_is_reused_only_when_it_fits() {
        // The same length with no constraint gets it back.
        let (mut pool, _, freed) = pool_with_run_freed_last();
        assert_eq!(pool.alloc(2 * SLOT, 0, 0).unwrap(), freed);
        assert!(pool.check_consistency());

        // An alignment it does not meet.
        let (mut pool, base, freed) = pool_with_run_freed_last();
        let aligned = pool.alloc(2 * SLOT, 2 * SLOT, 0).unwrap();
        assert_ne!(aligned, freed);
        assert_eq!((base + pool.offset_of(aligned) as u64) % (2 * SLOT), 0);
        assert!(pool.check_consistency());

        // A boundary it would cross (a 2-slot run from an odd slot crosses an even one).
        let (mut pool, base, freed) = pool_with_run_freed_last();
        let bounded = pool.alloc(2 * SLOT, 0, 2 * SLOT).unwrap();
        assert_ne!(bounded, freed);
        // Two slots that cross no multiple of two slots start on one.
        let address = base + pool.offset_of(bounded) as u64;
        assert_eq!(address % (2 * SLOT), 0);
        assert!(pool.check_consistency());

        // Taken since by another allocation: not handed out twice.
        let (mut pool, _, freed) = pool_with_run_freed_last();
        let single = pool.alloc(SLOT, 0, 0).unwrap();
        assert_eq!(single.first, freed.first);
        let pair = pool.alloc(2 * SLOT, 0, 0).unwrap();
        assert!(single.end() <= pair.first || pair.end() <= single.first);
        assert!(pool.check_consistency());
    }

    #[test]
    fn freeing_the_last_allocation_still_checks() {
        let mut pool = SlotPool::new(1 << 20, DEFAULT_SLOT_SIZE, 0).unwrap();
        let a = pool.alloc(2 * SLOT, 0, 0).unwrap();
        pool.free(a).unwrap();
        // A double free of the run allocated last is refused like any other.
        assert_eq!(pool.free(a), Err(DmaError::InvalidArgument));
        assert_eq!(pool.free_slots(), 512);
        // A zero-slot run never matches the remembered allocation.
        let fresh = SlotPool::new(1 << 20, DEFAULT_SLOT_SIZE, 0).unwrap();
        let mut fresh = fresh;
        assert_eq!(
            fresh.free(SlotRun { first: 0, count: 0 }),
            Err(DmaError::InvalidArgument)
        );
        // Two allocations from one block, freed in allocation order: the second free finds the
        // block changed since its allocation and works its class out again.
        let b = pool.alloc(100 * SLOT, 0, 0).unwrap();
        let c = pool.alloc(20 * SLOT, 0, 0).unwrap();
        assert_eq!(b.first / SLOTS_PER_BLOCK, c.first / SLOTS_PER_BLOCK);
        pool.free(b).unwrap();
        assert!(pool.check_consistency());
        pool.free(c).unwrap();
        assert!(pool.check_consistency());
        assert_eq!(pool.block_classes[b.first / SLOTS_PER_BLOCK], 7);
        assert_eq!(pool.free_slots(), 512);
    }

    #[test]
    fn stale_classes_are_corrected_when_allocation_needs_it() {
        let mut pool = SlotPool::new(2 * 128 * SLOT as usize, DEFAULT_SLOT_SIZE, 0).unwrap();
        // Block 0 keeps class 7 after losing 127 slots; a whole-block request corrects it once
        // and takes block 1.
        let most = pool.alloc(127 * SLOT, 0, 0).unwrap();
        assert_eq!(pool.block_classes[0], 7);
        assert!(pool.check_consistency());
        assert_eq!(pool.alloc(128 * SLOT, 0, 0).unwrap().first, 128);
        assert_eq!(pool.block_classes[0], 0);
        // The last free slot of block 0 is found; the pool is then full.
        assert_eq!(pool.alloc(SLOT, 0, 0).unwrap().first, 127);
        assert_eq!(pool.alloc(SLOT, 0, 0), Err(DmaError::PoolExhausted));
        // A block left with no free slot is moved out of every class when it is next looked at.
        pool.free(SlotRun {
            first: 128,
            count: 128,
        })
        .unwrap();
        assert_eq!(pool.block_classes[0], 0);
        assert_eq!(pool.alloc(SLOT, 0, 0).unwrap().first, 128);
        assert_eq!(pool.block_classes[0], NO_CLASS);
        assert!(pool.check_consistency());
        // Freeing raises the class at once.
        pool.free(most).unwrap();
        assert_eq!(pool.block_classes[0], 6);
        assert!(pool.check_consistency());
    }

    #[test]
    fn new_rejects_bad_geometry() {
        assert_eq!(
            SlotPool::new(1 << 20, 3000, 0).unwrap_err(),
            DmaError::InvalidArgument
        );
        assert_eq!(
            SlotPool::new(1 << 20, 32, 0).unwrap_err(),
            DmaError::InvalidArgument
        );
        assert_eq!(
            SlotPool::new(1000, 2048, 0).unwrap_err(),
            DmaError::InvalidArgument
        );
        assert_eq!(
            SlotPool::new(1 << 20, 2048, 1024).unwrap_err(),
            DmaError::InvalidArgument
        );
    }

    #[test]
    fn alloc_and_free_round_trip() {
        let mut pool = SlotPool::new(1 << 20, DEFAULT_SLOT_SIZE, 0x4000_0000).unwrap();
        assert_eq!(pool.total_slots(), 512);
        assert_eq!(pool.max_mapping_size(), 256 * 1024);
        let a = pool.alloc(100, 0, 0).unwrap();
        assert_eq!(a, SlotRun { first: 0, count: 1 });
        let b = pool.alloc(4096, 0, 0).unwrap();
        assert_eq!(b.count, 2);
        assert_eq!(pool.used_slots(), 3);
        pool.free(a).unwrap();
        assert_eq!(pool.free(a), Err(DmaError::InvalidArgument));
        pool.free(b).unwrap();
        assert_eq!(pool.free_slots(), 512);
        assert!(pool.check_consistency());
    }

    #[test]
    fn rejects_bad_requests() {
        let mut pool = SlotPool::new(1 << 20, DEFAULT_SLOT_SIZE, 0).unwrap();
        assert_eq!(pool.alloc(0, 0, 0), Err(DmaError::InvalidArgument));
        assert_eq!(pool.alloc(10, 3, 0), Err(DmaError::InvalidArgument));
        assert_eq!(pool.alloc(10, 0, 24), Err(DmaError::InvalidArgument));
        assert_eq!(pool.alloc(8192, 0, 4096), Err(DmaError::InvalidArgument));
        assert_eq!(pool.alloc(256 * 1024 + 1, 0, 0), Err(DmaError::TooLarge));
        assert_eq!(
            pool.alloc(u64::MAX, u64::MAX, u64::MAX),
            Err(DmaError::InvalidArgument)
        );
        assert_eq!(pool.alloc(u64::MAX, 0, 0), Err(DmaError::TooLarge));
        let bad_runs = [
            SlotRun { first: 0, count: 0 },
            SlotRun {
                first: 0,
                count: 129,
            },
            SlotRun {
                first: 127,
                count: 2,
            },
            SlotRun {
                first: 511,
                count: 2,
            },
            SlotRun {
                first: usize::MAX,
                count: 1,
            },
        ];
        for run in bad_runs {
            assert_eq!(pool.free(run), Err(DmaError::InvalidArgument));
        }
        assert!(pool.check_consistency());
        assert_eq!(pool.free_slots(), 512);
    }

    #[test]
    fn full_block_mapping() {
        let mut pool = SlotPool::new(1 << 20, DEFAULT_SLOT_SIZE, 0).unwrap();
        let runs: Vec<_> = (0..4)
            .map(|_| pool.alloc(256 * 1024, 0, 0).unwrap())
            .collect();
        assert_eq!(pool.free_slots(), 0);
        assert_eq!(pool.alloc(1, 0, 0), Err(DmaError::PoolExhausted));
        for run in runs {
            pool.free(run).unwrap();
        }
        assert!(pool.check_consistency());
    }

    #[test]
    fn alignment_is_on_device_addresses() {
        // The window starts 3 slots past a 64 KiB boundary.
        let base = 0x4000_0000 + 3 * SLOT;
        let mut pool = SlotPool::new(1 << 20, DEFAULT_SLOT_SIZE, base).unwrap();
        for align in [4096u64, 8192, 65536, 256 * 1024, 512 * 1024] {
            let run = pool.alloc(3000, align, 0).unwrap();
            let address = base + pool.offset_of(run) as u64;
            assert_eq!(address % align, 0, "align {align}");
        }
        assert!(pool.check_consistency());
    }

    #[test]
    fn boundary_is_never_crossed() {
        let base = 0x4000_0000 + 5 * SLOT;
        let mut pool = SlotPool::new(1 << 20, DEFAULT_SLOT_SIZE, base).unwrap();
        // Take slot 0 so the next 4-slot runs would naturally straddle boundaries.
        let _first = pool.alloc(1, 0, 0).unwrap();
        for _ in 0..20 {
            let len = 3 * SLOT;
            let run = pool.alloc(len, 0, 4 * SLOT).unwrap();
            let address = base + pool.offset_of(run) as u64;
            assert_eq!(address / (4 * SLOT), (address + len - 1) / (4 * SLOT));
        }
        // A large boundary with an unaligned base.
        let len = 100 * SLOT;
        let run = pool.alloc(len, 0, 128 * SLOT).unwrap();
        let address = base + pool.offset_of(run) as u64;
        assert_eq!(address / (128 * SLOT), (address + len - 1) / (128 * SLOT));
        assert!(pool.check_consistency());
    }

    #[test]
    fn sub_slot_boundary_and_alignment_hold_trivially() {
        let mut pool = SlotPool::new(1 << 20, DEFAULT_SLOT_SIZE, 0).unwrap();
        let run = pool.alloc(512, 256, 1024).unwrap();
        assert_eq!(run.count, 1);
    }

    #[test]
    fn exhaustion_then_recovery() {
        let mut pool = SlotPool::new(64 * SLOT as usize, DEFAULT_SLOT_SIZE, 0).unwrap();
        let mut runs = Vec::new();
        while let Ok(run) = pool.alloc(SLOT, 0, 0) {
            runs.push(run);
        }
        assert_eq!(runs.len(), 64);
        // Free every other slot: 32 free, but no run of two.
        for run in runs.iter().step_by(2) {
            pool.free(*run).unwrap();
        }
        assert_eq!(pool.alloc(2 * SLOT, 0, 0), Err(DmaError::PoolExhausted));
        assert!(pool.alloc(SLOT, 0, 0).is_ok());
        assert!(pool.check_consistency());
    }

    #[test]
    fn metadata_is_a_tenth_of_swiotlb_or_less() {
        let pool = SlotPool::new(256 << 20, DEFAULT_SLOT_SIZE, 0).unwrap();
        let per_mib = pool.metadata_bytes() / 256;
        assert!(per_mib <= 1229, "{per_mib} bytes per MiB");
    }

    #[test]
    fn allocation_prefers_small_classes() {
        let mut pool = SlotPool::new(2 * 128 * SLOT as usize, DEFAULT_SLOT_SIZE, 0).unwrap();
        // Leave a 4-slot hole in block 0 and keep block 1 whole.
        let big = pool.alloc(124 * SLOT, 0, 0).unwrap();
        assert_eq!(big.first, 0);
        let small = pool.alloc(3 * SLOT, 0, 0).unwrap();
        assert_eq!(small.first, 124);
        assert_eq!(pool.alloc(128 * SLOT, 0, 0).unwrap().first, 128);
    }
}
