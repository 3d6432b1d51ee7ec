//! The kernel's own translation tables (TTBR1): the image with page-granular permissions, guard
//! pages under the stacks, the linear map of RAM, the DTB and device MMIO.
//!
//! The boot stub maps the whole image read-write-executable in 4 KiB pages just to get Rust
//! running. [`init`] builds the real tables with `aarch64-paging` and switches TTBR1 to them.
//! The image is mapped with the same 4 KiB granularity (no blocks, no contiguous hint) and the
//! DTB with the same 2 MiB blocks as the boot tables, so the switch only changes permissions of
//! live entries, which needs no break-before-make.

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use aarch64_paging::Mapping;
use aarch64_paging::descriptor::{El1Attributes as Attributes, PhysicalAddress};
use aarch64_paging::paging::{Constraints, El1And0, MemoryRegion, PageTable, Translation, VaRange};
use moat_kernel_core::layout::{
    DEVICE_BASE, DEVICE_WINDOW, DTB_WINDOW, KERNEL_BASE, PAGE_SIZE, PHYSMAP_BASE, PHYSMAP_LIMIT,
    physmap,
};
use moat_kernel_core::range::PhysRange;
use spin::Mutex;

/// Normal write-back memory, inner shareable.
const NORMAL: Attributes = Attributes::VALID
    .union(Attributes::ATTRIBUTE_INDEX_1)
    .union(Attributes::INNER_SHAREABLE)
    .union(Attributes::ACCESSED)
    .union(Attributes::UXN);
const TEXT: Attributes = NORMAL.union(Attributes::READ_ONLY);
const READ_ONLY: Attributes = NORMAL.union(Attributes::READ_ONLY).union(Attributes::PXN);
const READ_WRITE: Attributes = NORMAL.union(Attributes::PXN);
/// Device-nGnRE, never executable.
const DEVICE: Attributes = Attributes::VALID
    .union(Attributes::ATTRIBUTE_INDEX_0)
    .union(Attributes::ACCESSED)
    .union(Attributes::PXN)
    .union(Attributes::UXN);

unsafe extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __bss_end: u8;
    static __boot_stack_guard: u8;
    static __boot_stack_bottom: u8;
    static __boot_stack_top: u8;
    static __fatal_stack_guard: u8;
    static __fatal_stack_bottom: u8;
    static __fatal_stack_top: u8;
    static __image_end: u8;
}

/// Addresses of the image's sections, from the linker script.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// Start of the image (KERNEL_BASE).
    pub start: usize,
    /// End of text (page aligned).
    pub text_end: usize,
    /// End of read-only data.
    pub rodata_end: usize,
    /// End of data and bss.
    pub bss_end: usize,
    /// The boot stack's guard page.
    pub boot_stack_guard: usize,
    /// The boot stack.
    pub boot_stack: (usize, usize),
    /// The fatal-exception stack's guard page.
    pub fatal_stack_guard: usize,
    /// The fatal-exception stack.
    pub fatal_stack: (usize, usize),
    /// End of the image, stacks included.
    pub end: usize,
}

impl ImageLayout {
    /// Reads the linker-script symbols.
    pub fn get() -> Self {
        Self {
            start: (&raw const __image_start) as usize,
            text_end: (&raw const __text_end) as usize,
            rodata_end: (&raw const __rodata_end) as usize,
            bss_end: (&raw const __bss_end) as usize,
            boot_stack_guard: (&raw const __boot_stack_guard) as usize,
            boot_stack: (
                (&raw const __boot_stack_bottom) as usize,
                (&raw const __boot_stack_top) as usize,
            ),
            fatal_stack_guard: (&raw const __fatal_stack_guard) as usize,
            fatal_stack: (
                (&raw const __fatal_stack_bottom) as usize,
                (&raw const __fatal_stack_top) as usize,
            ),
            end: (&raw const __image_end) as usize,
        }
    }

    /// Size of the image in memory, bss and stacks included.
    pub fn size(&self) -> usize {
        self.end - self.start
    }
}

/// Kernel table pages come from this pool in .bss, so building the linear map needs no memory
/// that is not mapped yet. It covers the image, the DTB, RAM in 2 MiB blocks, the shareable
/// region in 4 KiB pages (up to 128 MiB) and the devices.
const POOL_TABLES: usize = 96;

#[repr(C, align(4096))]
struct TablePage([u64; 512]);

struct TablePool(UnsafeCell<[TablePage; POOL_TABLES]>);

// SAFETY: the pool is only reached through `KernelTranslation`, which lives inside the
// `KERNEL_TABLES` mutex, and each page is handed out at most once.
unsafe impl Sync for TablePool {}

static POOL: TablePool = TablePool(UnsafeCell::new(
    [const { TablePage([0; 512]) }; POOL_TABLES],
));

/// Allocates kernel table pages from the pool and finds tables by physical address.
pub struct KernelTranslation {
    /// Physical address of KERNEL_BASE.
    phys_base: u64,
    used: usize,
}

impl KernelTranslation {
    fn pool_va(&self) -> usize {
        POOL.0.get() as usize
    }

    fn image_pa(&self, va: usize) -> u64 {
        (va - KERNEL_BASE) as u64 + self.phys_base
    }

    /// Table pages used so far.
    pub fn tables_used(&self) -> usize {
        self.used
    }
}

impl Translation<Attributes> for KernelTranslation {
    fn allocate_table(&mut self) -> (NonNull<PageTable<Attributes>>, PhysicalAddress) {
        // The pool is sized for the kernel's fixed mappings; running out is a kernel bug, not
        // something a task or the host can cause (device mappings reuse the same few tables).
        assert!(self.used < POOL_TABLES, "kernel page-table pool exhausted");
        let va = self.pool_va() + self.used * PAGE_SIZE;
        self.used += 1;
        let pa = self.image_pa(va);
        // The pool is zeroed .bss and this page was never handed out before.
        (
            NonNull::new(va as *mut PageTable<Attributes>).expect("pool is not null"),
            PhysicalAddress(pa as usize),
        )
    }

    unsafe fn deallocate_table(&mut self, _page_table: NonNull<PageTable<Attributes>>) {
        // Pool pages are never reused: the kernel's fixed mappings are never torn down.
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<Attributes>> {
        let pool_pa = self.image_pa(self.pool_va()) as usize;
        let va = if pa.0 >= pool_pa && pa.0 < pool_pa + POOL_TABLES * PAGE_SIZE {
            self.pool_va() + (pa.0 - pool_pa)
        } else {
            PHYSMAP_BASE + pa.0
        };
        NonNull::new(va as *mut PageTable<Attributes>).expect("table address is not null")
    }
}

static KERNEL_TABLES: Mutex<Option<Mapping<KernelTranslation, El1And0>>> = Mutex::new(None);

/// Why a kernel mapping could not be made.
#[derive(Clone, Copy, Debug)]
#[allow(
    dead_code,
    reason = "fields are shown through Debug in boot failure reports"
)]
pub enum MmuError {
    /// The physical range is outside what the linear map or the device window can hold.
    OutOfWindow(PhysRange),
    /// `aarch64-paging` refused the mapping.
    Map,
}

fn map(
    tables: &mut Mapping<KernelTranslation, El1And0>,
    va: usize,
    pa: u64,
    size: usize,
    attributes: Attributes,
    constraints: Constraints,
) -> Result<(), MmuError> {
    tables
        .map_range(
            &MemoryRegion::new(va, va + size),
            PhysicalAddress(pa as usize),
            attributes,
            constraints,
        )
        .map_err(|_| MmuError::Map)
}

/// Builds the kernel's tables and switches TTBR1 to them. Turns off TTBR0 walks: no user task
/// exists yet, so the boot identity map goes away and a stray low address faults.
///
/// `fine` is mapped with 4 KiB pages (the shareable region, whose pages change state one by one
/// later); the rest of RAM with the largest blocks that fit.
pub fn init(
    phys_base: u64,
    dtb_pa: u64,
    memory: &[PhysRange],
    fine: PhysRange,
) -> Result<ImageLayout, MmuError> {
    let image = ImageLayout::get();
    let translation = KernelTranslation { phys_base, used: 0 };
    let mut tables = Mapping::with_asid_and_va_range(translation, 0, 1, El1And0, VaRange::Upper);
    let pa = |va: usize| (va - KERNEL_BASE) as u64 + phys_base;
    let exact = Constraints::NO_BLOCK_MAPPINGS | Constraints::NO_CONTIGUOUS_HINT;

    map(
        &mut tables,
        image.start,
        pa(image.start),
        image.text_end - image.start,
        TEXT,
        exact,
    )?;
    map(
        &mut tables,
        image.text_end,
        pa(image.text_end),
        image.rodata_end - image.text_end,
        READ_ONLY,
        exact,
    )?;
    map(
        &mut tables,
        image.rodata_end,
        pa(image.rodata_end),
        image.bss_end - image.rodata_end,
        READ_WRITE,
        exact,
    )?;
    // The guard pages stay unmapped.
    let (bottom, top) = image.boot_stack;
    map(
        &mut tables,
        bottom,
        pa(bottom),
        top - bottom,
        READ_WRITE,
        exact,
    )?;
    let (bottom, top) = image.fatal_stack;
    map(
        &mut tables,
        bottom,
        pa(bottom),
        top - bottom,
        READ_WRITE,
        exact,
    )?;

    // The DTB exactly as the boot stub mapped it: two read-only 2 MiB blocks.
    const BLOCK: u64 = 2 << 20;
    map(
        &mut tables,
        DTB_WINDOW,
        dtb_pa & !(BLOCK - 1),
        2 * BLOCK as usize,
        READ_ONLY,
        Constraints::empty(),
    )?;

    for bank in memory {
        if bank.end > PHYSMAP_LIMIT {
            return Err(MmuError::OutOfWindow(*bank));
        }
        let pieces: heapless::Vec<PhysRange, 3> =
            moat_kernel_core::range::subtract(&[*bank], &[fine]).map_err(|_| MmuError::Map)?;
        for piece in &pieces {
            map(
                &mut tables,
                PHYSMAP_BASE + piece.start as usize,
                piece.start,
                piece.size() as usize,
                READ_WRITE,
                Constraints::empty(),
            )?;
        }
        let overlap = PhysRange::new(bank.start.max(fine.start), bank.end.min(fine.end));
        if !overlap.is_empty() {
            map(
                &mut tables,
                PHYSMAP_BASE + overlap.start as usize,
                overlap.start,
                overlap.size() as usize,
                READ_WRITE,
                Constraints::NO_BLOCK_MAPPINGS | Constraints::NO_CONTIGUOUS_HINT,
            )?;
        }
    }

    let root = tables.root_address().0 as u64;
    // SAFETY: the new tables map the image, the stacks and the DTB to the same physical pages
    // with the same granule as the boot tables; only permissions differ, which is allowed on
    // live entries. The TLB is flushed so no stale RWX entry survives.
    unsafe {
        core::arch::asm!(
            "msr ttbr1_el1, {root}",
            "isb",
            "mrs {tcr}, tcr_el1",
            "orr {tcr}, {tcr}, #(1 << 7)", // EPD0: no TTBR0 walks until user tasks exist
            "msr tcr_el1, {tcr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            root = in(reg) root,
            tcr = out(reg) _,
            options(nostack),
        );
    }
    tables.mark_active();
    *KERNEL_TABLES.lock() = Some(tables);
    Ok(image)
}

/// Maps a device's registers (Device-nGnRE, never executable) and returns their virtual
/// address. Device VA = DEVICE_BASE + PA, so mapping the same registers twice is harmless.
pub fn map_device(regs: PhysRange) -> Result<usize, MmuError> {
    let page = PAGE_SIZE as u64;
    let Some(aligned) = regs.grow_to_alignment(page) else {
        return Err(MmuError::OutOfWindow(regs));
    };
    if aligned.end > DEVICE_WINDOW as u64 || regs.is_empty() {
        return Err(MmuError::OutOfWindow(regs));
    }
    let mut guard = KERNEL_TABLES.lock();
    let tables = guard.as_mut().ok_or(MmuError::Map)?;
    // In a Realm, host-emulated devices are reachable only at their unprotected alias.
    map(
        tables,
        DEVICE_BASE + aligned.start as usize,
        crate::realm::alias(aligned.start),
        aligned.size() as usize,
        DEVICE,
        Constraints::empty(),
    )?;
    Ok(DEVICE_BASE + regs.start as usize)
}

/// What the linear map shows at a page of the shareable region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhysmapState {
    /// The private page (RIPAS RAM).
    Private,
    /// Nothing: the break in break-before-make.
    Unmapped,
    /// The page's unprotected alias (shared with the host).
    Alias,
}

/// Changes the linear map over `range` (page aligned, inside the 4 KiB-mapped shareable region).
/// `aarch64-paging` invalidates the TLB for every changed entry and refuses any change that would
/// need break-before-make, so callers go Private -> Unmapped -> Alias and back.
pub fn set_physmap(range: PhysRange, state: PhysmapState) -> Result<(), MmuError> {
    let mut guard = KERNEL_TABLES.lock();
    let tables = guard.as_mut().ok_or(MmuError::Map)?;
    let va = physmap(range.start).ok_or(MmuError::OutOfWindow(range))?;
    let (pa, attributes) = match state {
        PhysmapState::Private => (range.start, READ_WRITE),
        PhysmapState::Unmapped => (0, Attributes::empty()),
        PhysmapState::Alias => (crate::realm::alias(range.start), READ_WRITE),
    };
    let exact = Constraints::NO_BLOCK_MAPPINGS | Constraints::NO_CONTIGUOUS_HINT;
    map(tables, va, pa, range.size() as usize, attributes, exact)
}

/// Kernel table pages in use.
pub fn tables_used() -> usize {
    KERNEL_TABLES
        .lock()
        .as_ref()
        .map_or(0, |t| t.translation().tables_used())
}
