//! Physical memory: the frame allocator over usable RAM, and the kernel heap.

use linked_list_allocator::LockedHeap;
use moat_kernel_core::frame::{FRAME_SIZE, FrameAllocator, FrameError};
use moat_kernel_core::layout::physmap;
use moat_kernel_core::range::{self, PhysRange};
use spin::Mutex;

/// Size of the kernel heap.
pub const HEAP_SIZE: usize = 4 << 20;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);

/// At most this many usable ranges after carving out reserved memory, the kernel and the DTB.
pub const MAX_USABLE: usize = 32;

/// What [`init`] set up, for the boot log.
#[derive(Debug)]
pub struct MemoryReport {
    /// RAM minus reserved ranges, the kernel image and the DTB.
    pub usable: heapless::Vec<PhysRange, MAX_USABLE>,
    /// The allocator's own bitmap.
    pub bitmap: PhysRange,
    /// The kernel heap.
    pub heap: PhysRange,
    /// Frames managed.
    pub total_frames: usize,
    /// Frames free after the bitmap and heap were taken.
    pub free_frames: usize,
}

/// Why memory could not be set up.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "fields are shown through Debug in boot failure reports"
)]
pub enum MemoryError {
    /// Too many pieces of usable memory.
    Fragmented,
    /// No usable range can hold the frame bitmap.
    NoRoomForBitmap,
    /// A usable range lies beyond the linear map.
    NotInPhysmap(PhysRange),
    /// The frame allocator refused.
    Frames(FrameError),
}

/// Builds the frame allocator over `memory` minus `holes`, then the kernel heap.
///
/// `shareable` (inside the usable memory) is set aside for [`alloc_shareable`]: the only frames
/// the DMA server may make shared, mapped page by page in the linear map.
pub fn init(
    memory: &[PhysRange],
    holes: &[PhysRange],
    shareable: PhysRange,
) -> Result<MemoryReport, MemoryError> {
    let usable: heapless::Vec<PhysRange, MAX_USABLE> =
        range::subtract(memory, holes).map_err(|_| MemoryError::Fragmented)?;
    // Split the shareable region off as a range of its own, so it can be set aside.
    let mut pieces: heapless::Vec<PhysRange, MAX_USABLE> =
        range::subtract(&usable, &[shareable]).map_err(|_| MemoryError::Fragmented)?;
    pieces
        .push(shareable)
        .map_err(|_| MemoryError::Fragmented)?;
    pieces.sort_unstable_by_key(|r| r.start);
    let usable = pieces;
    let usable: heapless::Vec<PhysRange, MAX_USABLE> = usable
        .iter()
        .map(|r| r.shrink_to_alignment(FRAME_SIZE))
        .filter(|r| !r.is_empty())
        .collect();
    let words = FrameAllocator::words_needed(&usable);
    let bitmap_bytes = ((words * 8) as u64).div_ceil(FRAME_SIZE) * FRAME_SIZE;
    let home = usable
        .iter()
        .find(|r| r.size() >= bitmap_bytes && !r.overlaps(&shareable))
        .ok_or(MemoryError::NoRoomForBitmap)?;
    let bitmap = PhysRange::new(home.start, home.start + bitmap_bytes);
    let bitmap_va = physmap(bitmap.start).ok_or(MemoryError::NotInPhysmap(bitmap))?;
    // SAFETY: `bitmap` is usable RAM (no reserved range, kernel or DTB overlaps it), linearly
    // mapped read-write, and nothing else uses it: the allocator reserves it below before
    // handing out any frame.
    let storage = unsafe { core::slice::from_raw_parts_mut(bitmap_va as *mut u64, words) };
    let mut frames = FrameAllocator::new(&usable, storage).map_err(MemoryError::Frames)?;
    frames.reserve(bitmap);
    frames.dedicate(shareable);

    let heap_frames = HEAP_SIZE / FRAME_SIZE as usize;
    let heap_pa = frames
        .alloc_contiguous(heap_frames, 1)
        .map_err(MemoryError::Frames)?;
    let heap = PhysRange::new(heap_pa, heap_pa + HEAP_SIZE as u64);
    let heap_va = physmap(heap_pa).ok_or(MemoryError::NotInPhysmap(heap))?;
    // SAFETY: the frames were just allocated for the heap alone and are linearly mapped
    // read-write; the heap is initialised once.
    unsafe { HEAP.lock().init(heap_va as *mut u8, HEAP_SIZE) };

    let report = MemoryReport {
        usable,
        bitmap,
        heap,
        total_frames: frames.total_frames(),
        free_frames: frames.free_frames(),
    };
    *FRAMES.lock() = Some(frames);
    Ok(report)
}

/// Allocates one frame.
pub fn alloc_frame() -> Result<u64, FrameError> {
    FRAMES
        .lock()
        .as_mut()
        .ok_or(FrameError::OutOfMemory)?
        .alloc()
}

/// Returns one frame.
pub fn free_frame(address: u64) -> Result<(), FrameError> {
    FRAMES
        .lock()
        .as_mut()
        .ok_or(FrameError::NotManaged)?
        .free(address)
}

/// Frames free now.
pub fn free_frames() -> usize {
    FRAMES.lock().as_ref().map_or(0, |f| f.free_frames())
}

/// Bytes of kernel heap in use and free.
pub fn heap_usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.used(), heap.free())
}

fn frame_va(pa: u64) -> *mut u8 {
    physmap(pa).expect("frames are in RAM, which the linear map covers") as *mut u8
}

/// Zeroes one frame through the linear map.
pub fn zero_frame(frame: u64) {
    // SAFETY: `frame` is a whole frame of RAM owned by the caller, mapped read-write in the
    // linear map; no reference to it exists.
    unsafe { core::ptr::write_bytes(frame_va(frame), 0, FRAME_SIZE as usize) };
}

/// Copies `bytes` into frame `frame` at `offset`.
pub fn write_frame(frame: u64, offset: usize, bytes: &[u8]) {
    assert!(
        offset + bytes.len() <= FRAME_SIZE as usize,
        "write stays inside the frame"
    );
    write_phys(frame + offset as u64, bytes);
}

/// Copies `bytes` to physical address `pa` (within one frame).
pub fn write_phys(pa: u64, bytes: &[u8]) {
    debug_assert!(pa % FRAME_SIZE + bytes.len() as u64 <= FRAME_SIZE);
    // SAFETY: the caller owns or is entitled to this part of one frame of RAM (a task page it
    // translated through the task's own tables); it is linearly mapped read-write, and the copy
    // uses raw pointers, never a reference into memory another agent may change.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), frame_va(pa), bytes.len()) };
}

/// Reads four words at physical address `pa` (8-byte aligned, within one frame): a message
/// header, in two load pairs instead of a copy call.
pub fn read_phys_words(pa: u64) -> [u64; 4] {
    debug_assert!(pa.is_multiple_of(8) && pa % FRAME_SIZE + 32 <= FRAME_SIZE);
    // SAFETY: as in `read_phys`; the address is 8-byte aligned.
    unsafe { frame_va(pa).cast::<[u64; 4]>().read() }
}

/// Writes four words at physical address `pa` (8-byte aligned, within one frame).
pub fn write_phys_words(pa: u64, words: [u64; 4]) {
    debug_assert!(pa.is_multiple_of(8) && pa % FRAME_SIZE + 32 <= FRAME_SIZE);
    // SAFETY: as in `write_phys`; the address is 8-byte aligned.
    unsafe { frame_va(pa).cast::<[u64; 4]>().write(words) }
}

/// Copies from physical address `pa` (within one frame) into `bytes`.
pub fn read_phys(pa: u64, bytes: &mut [u8]) {
    debug_assert!(pa % FRAME_SIZE + bytes.len() as u64 <= FRAME_SIZE);
    // SAFETY: as in `write_phys`, reading.
    unsafe { core::ptr::copy_nonoverlapping(frame_va(pa), bytes.as_mut_ptr(), bytes.len()) };
}

/// Copies `count` bytes from physical address `from` to `to` (each range within one frame;
/// they may overlap).
pub fn copy_phys(from: u64, to: u64, count: usize) {
    debug_assert!(from % FRAME_SIZE + count as u64 <= FRAME_SIZE);
    debug_assert!(to % FRAME_SIZE + count as u64 <= FRAME_SIZE);
    let disjoint = from + count as u64 <= to || to + count as u64 <= from;
    if disjoint {
        // SAFETY: as in `write_phys` and `read_phys`, for both ranges, which do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(frame_va(from), frame_va(to), count) };
    } else {
        // SAFETY: as above; `copy` allows the overlap (two tasks' buffers may be the same
        // memory).
        unsafe { core::ptr::copy(frame_va(from), frame_va(to), count) };
    }
}

/// Allocates `count` contiguous zeroed frames.
pub fn alloc_contiguous(count: usize, align: usize) -> Result<u64, FrameError> {
    let base = FRAMES
        .lock()
        .as_mut()
        .ok_or(FrameError::OutOfMemory)?
        .alloc_contiguous(count, align)?;
    for i in 0..count as u64 {
        zero_frame(base + i * FRAME_SIZE);
    }
    Ok(base)
}

/// Allocates `count` contiguous zeroed frames from the shareable region.
pub fn alloc_shareable(count: usize, align: usize) -> Result<u64, FrameError> {
    let base = FRAMES
        .lock()
        .as_mut()
        .ok_or(FrameError::OutOfMemory)?
        .alloc_contiguous_dedicated(count, align)?;
    for i in 0..count as u64 {
        zero_frame(base + i * FRAME_SIZE);
    }
    Ok(base)
}

/// Frames in use by everyone (managed minus free).
pub fn used_frames() -> usize {
    FRAMES
        .lock()
        .as_ref()
        .map_or(0, |f| f.total_frames() - f.free_frames())
}
