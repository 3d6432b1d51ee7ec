//! User address spaces: one TTBR0 translation table per task, tagged with the task's ASID.
//!
//! Table pages come from the frame allocator and are reached through the linear map. Because
//! `aarch64-paging` cannot report a failed table allocation, every operation first reserves the
//! worst-case number of table frames it could need; running out is then an `OutOfMemory` error
//! to the task, never a kernel panic.

use aarch64_paging::Mapping;
use aarch64_paging::descriptor::{El1Attributes as Attributes, PhysicalAddress};
use aarch64_paging::paging::{Constraints, El1And0, MemoryRegion, PageTable, Translation, VaRange};
use core::cell::{Cell, RefCell};
use core::ptr::NonNull;
use moat_abi::Error;
use moat_kernel_core::layout::{PAGE_SIZE, physmap};

use crate::memory;

/// Lowest user virtual address that may be mapped.
pub const USER_VA_START: u64 = 0x10_0000;
/// End of the user half (39-bit).
pub const USER_VA_END: u64 = 1 << 39;

/// How a user page may be accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Writable (never together with `execute`).
    pub write: bool,
    /// Executable at EL0.
    pub execute: bool,
    /// Device-nGnRE instead of Normal memory.
    pub device: bool,
}

impl Access {
    /// Read-only data.
    pub const READ: Access = Access {
        write: false,
        execute: false,
        device: false,
    };
    /// Read-write data.
    pub const READ_WRITE: Access = Access {
        write: true,
        execute: false,
        device: false,
    };
    /// Code.
    pub const EXECUTE: Access = Access {
        write: false,
        execute: true,
        device: false,
    };

    fn attributes(self) -> Attributes {
        let mut a = Attributes::VALID
            | Attributes::ACCESSED
            | Attributes::USER
            | Attributes::NON_GLOBAL
            | Attributes::PXN;
        if self.device {
            a |= Attributes::ATTRIBUTE_INDEX_0 | Attributes::UXN;
        } else {
            a |= Attributes::ATTRIBUTE_INDEX_1 | Attributes::INNER_SHAREABLE;
        }
        if !self.write {
            a |= Attributes::READ_ONLY;
        }
        if !self.execute {
            a |= Attributes::UXN;
        }
        a
    }
}

const STASH: usize = 8;

/// Table pages for one address space.
pub struct UserTranslation {
    /// Frames reserved for tables the next operation may need. Interior mutability because
    /// `Mapping` only lends its translation out immutably between operations.
    stash: RefCell<heapless::Vec<u64, STASH>>,
    /// Table frames in use (for accounting).
    tables: Cell<usize>,
}

impl UserTranslation {
    fn reserve(&self, wanted: usize) -> Result<(), Error> {
        let mut stash = self.stash.borrow_mut();
        while stash.len() < wanted.min(STASH) {
            let frame = memory::alloc_frame().map_err(|_| Error::OutOfMemory)?;
            memory::zero_frame(frame);
            // Cannot fail: the loop stops at the stash's capacity.
            let _ = stash.push(frame);
        }
        Ok(())
    }
}

impl Drop for UserTranslation {
    fn drop(&mut self) {
        for frame in self.stash.get_mut().drain(..) {
            let _ = memory::free_frame(frame);
        }
    }
}

impl Translation<Attributes> for UserTranslation {
    fn allocate_table(&mut self) -> (NonNull<PageTable<Attributes>>, PhysicalAddress) {
        // `AddressSpace` reserves the worst case before every mapping call, so the stash is
        // never empty here.
        let frame = self
            .stash
            .get_mut()
            .pop()
            .expect("table frames were reserved before mapping");
        self.tables.set(self.tables.get() + 1);
        (
            self.physical_to_virtual(PhysicalAddress(frame as usize)),
            PhysicalAddress(frame as usize),
        )
    }

    unsafe fn deallocate_table(&mut self, page_table: NonNull<PageTable<Attributes>>) {
        let va = page_table.as_ptr() as usize;
        let pa = va - moat_kernel_core::layout::PHYSMAP_BASE;
        self.tables.set(self.tables.get().saturating_sub(1));
        let _ = memory::free_frame(pa as u64);
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<Attributes>> {
        let va =
            physmap(pa.0 as u64).expect("table frames are in RAM, which the linear map covers");
        NonNull::new(va as *mut PageTable<Attributes>).expect("linear map addresses are not null")
    }
}

/// A task's address space.
pub struct AddressSpace {
    tables: Mapping<UserTranslation, El1And0>,
    asid: u16,
}

/// Worst-case new table pages for mapping `pages` pages at level 3 in a 3-level tree.
/// (One more level-3 table than the pages fill when the range is not 2 MiB aligned, and two
/// level-2 tables when it crosses a 1 GiB boundary.)
fn tables_needed(pages: usize) -> usize {
    pages.div_ceil(512) + 3
}

impl AddressSpace {
    /// An empty address space for ASID `asid`.
    pub fn new(asid: u16) -> Result<Self, Error> {
        let translation = UserTranslation {
            stash: RefCell::new(heapless::Vec::new()),
            tables: Cell::new(0),
        };
        translation.reserve(1)?;
        let tables =
            Mapping::with_asid_and_va_range(translation, asid as usize, 1, El1And0, VaRange::Lower);
        // Marked active from the start: its ASID may have TLB entries whenever it has run, so
        // every change must be invalidated and checked for break-before-make.
        tables.mark_active();
        Ok(Self { tables, asid })
    }

    /// The TTBR0 value: root table and ASID.
    pub fn ttbr0(&self) -> u64 {
        self.tables.root_address().0 as u64 | (u64::from(self.asid) << 48)
    }

    /// Checks a user range: page aligned, inside the user half, not wrapping.
    pub fn check_range(va: u64, pages: usize) -> Result<u64, Error> {
        if !va.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Error::BadAlignment);
        }
        let len = (pages as u64)
            .checked_mul(PAGE_SIZE as u64)
            .ok_or(Error::BadLength)?;
        let end = va.checked_add(len).ok_or(Error::BadAddress)?;
        if pages == 0 || va < USER_VA_START || end > USER_VA_END {
            return Err(Error::BadAddress);
        }
        Ok(end)
    }

    /// Maps `pages` physically contiguous pages at `pa` to `va`. Refuses (without changing
    /// anything) if any page in the range is already mapped.
    pub fn map(&mut self, va: u64, pa: u64, pages: usize, access: Access) -> Result<(), Error> {
        let end = Self::check_range(va, pages)?;
        if access.write && access.execute {
            return Err(Error::InvalidArgument);
        }
        if (va..end)
            .step_by(PAGE_SIZE)
            .any(|page| self.translate(page).is_some())
        {
            return Err(Error::AlreadyMapped);
        }
        // The stash holds at most STASH frames; map in chunks that cannot need more.
        let chunk_pages = 512 * (STASH - 3);
        let mut done = 0;
        while done < pages {
            let count = (pages - done).min(chunk_pages);
            let start = va + (done * PAGE_SIZE) as u64;
            self.tables.translation().reserve(tables_needed(count))?;
            self.tables
                .map_range(
                    &MemoryRegion::new(start as usize, start as usize + count * PAGE_SIZE),
                    PhysicalAddress((pa + (done * PAGE_SIZE) as u64) as usize),
                    access.attributes(),
                    Constraints::NO_BLOCK_MAPPINGS | Constraints::NO_CONTIGUOUS_HINT,
                )
                .map_err(|_| Error::InvalidArgument)?;
            done += count;
        }
        Ok(())
    }

    /// Unmaps `pages` pages at `va`; every page must be mapped. Returns nothing about the
    /// frames: the caller owns them through its memory objects.
    pub fn unmap(&mut self, va: u64, pages: usize) -> Result<(), Error> {
        let end = Self::check_range(va, pages)?;
        if (va..end)
            .step_by(PAGE_SIZE)
            .any(|page| self.translate(page).is_none())
        {
            return Err(Error::NotMapped);
        }
        self.tables
            .map_range(
                &MemoryRegion::new(va as usize, end as usize),
                PhysicalAddress(0),
                Attributes::empty(),
                Constraints::NO_BLOCK_MAPPINGS,
            )
            .map_err(|_| Error::InvalidArgument)?;
        // `aarch64-paging` invalidated by VA for all ASIDs; make sure of it for this ASID.
        self.flush();
        Ok(())
    }

    /// Physical address and writability of the page holding `va`, if mapped.
    pub fn translate(&self, va: u64) -> Option<(u64, Access)> {
        if !(USER_VA_START..USER_VA_END).contains(&va) {
            return None;
        }
        // A direct three-level walk (this is on every IPC copy; `walk_range` is general and
        // several times slower). The tables are this address space's own, reached through the
        // linear map; the kernel lock keeps them from changing underneath.
        const VALID_TABLE: u64 = 0b11;
        const ADDRESS: u64 = 0x0000_ffff_ffff_f000;
        let mut table = self.tables.root_address().0 as u64;
        for level in 1..=3u32 {
            let index = (va >> (39 - 9 * level)) & 511;
            let entry_va = physmap(table + index * 8)?;
            // SAFETY: `table` is a table page of this address space (from its own entries or
            // root), which the linear map covers; the read is of one aligned 8-byte entry.
            let entry = unsafe { core::ptr::read_volatile(entry_va as *const u64) };
            if entry & VALID_TABLE != VALID_TABLE {
                // Invalid, or a block (never made for user space: NO_BLOCK_MAPPINGS).
                return None;
            }
            if level < 3 {
                table = entry & ADDRESS;
                continue;
            }
            let flags = Attributes::from_bits_retain(entry as usize);
            let access = Access {
                write: !flags.contains(Attributes::READ_ONLY),
                execute: !flags.contains(Attributes::UXN),
                device: !flags.contains(Attributes::ATTRIBUTE_INDEX_1),
            };
            return Some(((entry & ADDRESS) | (va & (PAGE_SIZE as u64 - 1)), access));
        }
        None
    }

    /// Invalidates every TLB entry of this ASID.
    pub fn flush(&self) {
        let operand = u64::from(self.asid) << 48;
        // SAFETY: TLB maintenance has no effect on memory contents.
        unsafe {
            core::arch::asm!("dsb ishst", "tlbi aside1is, {0}", "dsb ish", "isb", in(reg) operand, options(nostack));
        }
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        self.tables.mark_inactive();
        self.flush();
    }
}
