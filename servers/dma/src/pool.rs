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
//! - eight *size classes*: block `b` is in class `c` when its longest free run `r` satisfies
//!   `2^c <= r < 2^(c+1)`. Each class is a hierarchical bitmap over blocks (64-way: a summary bit
//!   per non-empty word, up to a single top word), so "the first block of class `c`" costs one
//!   `trailing_zeros` per level.
//!
//! `alloc` first looks for a block whose class *guarantees* a fit (a free run of at least
//! `count + spread - 1` slots always contains a start that satisfies the alignment and the
//! boundary), in the smallest such class: a fixed number of word operations, whatever the pool
//! size. Inside a block the candidate starts are computed with a handful of `u128` operations:
//! run starts (`x & x >> s`, doubling), an alignment pattern and a boundary exclusion mask. Only
//! when no block guarantees a fit does `alloc` scan blocks that *might* fit (near exhaustion, or
//! alignments above 128 slots), so it never reports exhaustion while a fitting run exists.
//!
//! Bookkeeping is about 72 bytes per MiB of pool with 2 KiB slots (SWIOTLB: 12,288).
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

/// A bitmap with summary levels: bit `i` of level `k + 1` is set when word `i` of level `k` is
/// not zero. The top level is a single word, so finding the next set bit costs one word
/// operation per level (log64 of the size).
#[derive(Clone, Debug)]
struct SummaryBitmap {
    levels: Vec<Vec<u64>>,
}

impl SummaryBitmap {
    fn new(bits: usize) -> Self {
        let mut levels = Vec::new();
        let mut bits = bits.max(1);
        loop {
            let words = bits.div_ceil(64);
            levels.push(vec![0u64; words]);
            if words <= 1 {
                break;
            }
            bits = words;
        }
        SummaryBitmap { levels }
    }

    fn set(&mut self, mut index: usize) {
        for level in self.levels.iter_mut() {
            let word = &mut level[index / 64];
            let was_empty = *word == 0;
            *word |= 1u64 << (index % 64);
            if !was_empty {
                break;
            }
            index /= 64;
        }
    }

    fn clear(&mut self, mut index: usize) {
        for level in self.levels.iter_mut() {
            let word = &mut level[index / 64];
            *word &= !(1u64 << (index % 64));
            if *word != 0 {
                break;
            }
            index /= 64;
        }
    }

    fn get(&self, index: usize) -> bool {
        self.levels[0][index / 64] & (1u64 << (index % 64)) != 0
    }

    /// The first set bit at or after `from`.
    fn find_next(&self, from: usize) -> Option<usize> {
        self.find_next_in_level(0, from)
    }

    fn find_next_in_level(&self, level: usize, from: usize) -> Option<usize> {
        let words = self.levels.get(level)?;
        let word_index = from / 64;
        let word = *words.get(word_index)?;
        let masked = word & (!0u64 << (from % 64));
        if masked != 0 {
            return Some(word_index * 64 + masked.trailing_zeros() as usize);
        }
        let next_word = self.find_next_in_level(level + 1, word_index + 1)?;
        Some(next_word * 64 + words[next_word].trailing_zeros() as usize)
    }

    fn metadata_bytes(&self) -> usize {
        self.levels
            .iter()
            .map(|level| level.capacity() * core::mem::size_of::<u64>())
            .sum::<usize>()
            + self.levels.capacity() * core::mem::size_of::<Vec<u64>>()
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
    /// Each block's size class (`NO_CLASS` when full), so a change need not recompute it.
    block_classes: Vec<u8>,
    /// Block membership per size class.
    classes: [SummaryBitmap; CLASS_COUNT],
}

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
            classes: core::array::from_fn(|_| SummaryBitmap::new(block_count)),
        };
        let tail = total_slots % SLOTS_PER_BLOCK;
        if tail != 0 {
            pool.blocks[block_count - 1] = low_ones(tail);
        }
        for block in 0..block_count {
            if let Some(class) = class_of(pool.blocks[block]) {
                pool.classes[class].set(block);
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
            + self
                .classes
                .iter()
                .map(SummaryBitmap::metadata_bytes)
                .sum::<usize>()
    }

    /// Allocates a run of slots for `len` bytes whose device address is a multiple of `align`
    /// (0 or 1 = any slot) and which does not cross a multiple of `boundary` (0 = no boundary).
    ///
    /// Errors: [`DmaError::InvalidArgument`] for a zero length, an alignment or boundary that is
    /// not a power of two, or a boundary smaller than `len`; [`DmaError::TooLarge`] beyond
    /// [`max_mapping_size`](Self::max_mapping_size); [`DmaError::PoolExhausted`] when no free run
    /// satisfies the request.
    pub fn alloc(&mut self, len: u64, align: u64, boundary: u64) -> Result<SlotRun, DmaError> {
        let request = self.request(len, align, boundary)?;
        if request.count > self.free_slots {
            return Err(DmaError::PoolExhausted);
        }
        // Fast path: the smallest class whose every block is certain to fit.
        if let Some(first_class) = self.guaranteed_class(request) {
            for class in first_class..CLASS_COUNT {
                if let Some(block) = self.classes[class].find_next(0)
                    && let Some(start) = self.fit_in_block(block, request)
                {
                    return Ok(self.take(block, start, request.count));
                }
            }
        }
        // Slow path: blocks that may fit. Reached only when nothing guarantees a fit.
        let lowest_class = floor_log2(request.count as u64) as usize;
        for class in lowest_class..CLASS_COUNT {
            let mut from = 0;
            while let Some(block) = self.classes[class].find_next(from) {
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
    pub fn free(&mut self, run: SlotRun) -> Result<(), DmaError> {
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
        let mask = low_ones(run.count) << (run.first % SLOTS_PER_BLOCK);
        let old = self.blocks[block];
        if old & mask != 0 {
            return Err(DmaError::InvalidArgument);
        }
        self.set_block(block, old | mask);
        self.free_slots += run.count;
        Ok(())
    }

    /// Checks the pool's internal invariants (free count, tail bits, class membership).
    /// Meant for tests; cost is linear in the pool size.
    pub fn check_consistency(&self) -> bool {
        let free: usize = self.blocks.iter().map(|b| b.count_ones() as usize).sum();
        if free != self.free_slots {
            return false;
        }
        let tail = self.total_slots % SLOTS_PER_BLOCK;
        if tail != 0 && self.blocks[self.blocks.len() - 1] & !low_ones(tail) != 0 {
            return false;
        }
        self.blocks.iter().enumerate().all(|(block, &bits)| {
            let class = class_of(bits);
            self.block_classes[block] == class.map_or(NO_CLASS, |class| class as u8)
                && (0..CLASS_COUNT).all(|c| self.classes[c].get(block) == (class == Some(c)))
        })
    }

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

    fn take(&mut self, block: usize, start: usize, count: usize) -> SlotRun {
        let mask = low_ones(count) << start;
        let old = self.blocks[block];
        debug_assert_eq!(old & mask, mask);
        self.set_block(block, old & !mask);
        self.free_slots -= count;
        SlotRun {
            first: block * SLOTS_PER_BLOCK + start,
            count,
        }
    }

    /// Stores a block's new bits and moves it between classes if its class changed.
    fn set_block(&mut self, block: usize, bits: u128) {
        let old_class = self.block_classes[block];
        let new_class = class_of(bits).map_or(NO_CLASS, |class| class as u8);
        self.blocks[block] = bits;
        if old_class != new_class {
            if let Some(bitmap) = self.classes.get_mut(old_class as usize) {
                bitmap.clear(block);
            }
            if let Some(bitmap) = self.classes.get_mut(new_class as usize) {
                bitmap.set(block);
            }
            self.block_classes[block] = new_class;
        }
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

/// The length of the longest run of set bits.
fn longest_run(free: u128) -> usize {
    if free == 0 {
        return 0;
    }
    // runs[k]: starts of runs at least 2^k long.
    let mut runs = [0u128; CLASS_COUNT];
    runs[0] = free;
    let mut k = 0;
    while k + 1 < CLASS_COUNT {
        let next = runs[k] & (runs[k] >> (1u32 << k));
        if next == 0 {
            break;
        }
        k += 1;
        runs[k] = next;
    }
    if k + 1 == CLASS_COUNT {
        return SLOTS_PER_BLOCK;
    }
    // Extend greedily by decreasing powers of two; the length stays below 2^(k+1) <= 128.
    let mut length = 1usize << k;
    let mut starts = runs[k];
    for j in (0..k).rev() {
        let extended = starts & (runs[j] >> length);
        if extended != 0 {
            starts = extended;
            length += 1 << j;
        }
    }
    length
}

/// The size class of a block with free bits `free` (`None` when it has no free slot).
fn class_of(free: u128) -> Option<usize> {
    match longest_run(free) {
        0 => None,
        run => Some(floor_log2(run as u64) as usize),
    }
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

    #[test]
    fn longest_run_matches_reference() {
        let samples = [
            0u128,
            1,
            u128::MAX,
            u128::MAX >> 1,
            u128::MAX << 1,
            0xF0F0_FF00_0FFF_0000_1234_5678_9ABC_DEF0,
            (u128::MAX >> 64) << 30,
            0x5555_5555_5555_5555_5555_5555_5555_5555,
            (1u128 << 127) | 0b111,
        ];
        for free in samples {
            assert_eq!(longest_run(free), longest_run_reference(free), "{free:#x}");
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
    fn summary_bitmap_finds_next() {
        let mut bitmap = SummaryBitmap::new(10_000);
        assert_eq!(bitmap.levels.len(), 3);
        assert_eq!(bitmap.find_next(0), None);
        for index in [5, 64, 4095, 4096, 9_999] {
            bitmap.set(index);
        }
        assert_eq!(bitmap.find_next(0), Some(5));
        assert_eq!(bitmap.find_next(6), Some(64));
        assert_eq!(bitmap.find_next(65), Some(4095));
        assert_eq!(bitmap.find_next(4096), Some(4096));
        assert_eq!(bitmap.find_next(4097), Some(9_999));
        assert_eq!(bitmap.find_next(10_000), None);
        bitmap.clear(4095);
        bitmap.clear(4096);
        assert_eq!(bitmap.find_next(65), Some(9_999));
        bitmap.clear(9_999);
        assert_eq!(bitmap.find_next(65), None);
        assert_eq!(bitmap.levels[2][0], 1);
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
