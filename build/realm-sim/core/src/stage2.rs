//! Stage 2: which IPA maps where under which RIPAS, as VMSAv8-64 stage-2 descriptors.
//!
//! The rules (DESIGN.md section 7), with S the shared bit and N the Realm's RAM size:
//! - protected IPA x in the Realm's RAM → private PA x + N, only while RIPAS(x) = RAM;
//! - unprotected alias x | S of Realm RAM → host PA x, only while RIPAS(x) = EMPTY, never
//!   executable;
//! - unprotected alias x | S of anything below the Realm's RAM (QEMU virt's devices: GIC, UART,
//!   RTC, fw_cfg, virtio-mmio, PCIe windows) → x as Device-nGnRE, never executable;
//! - everything else (protected device addresses, protected RAM with RIPAS EMPTY, the alias of
//!   RAM with RIPAS RAM, private memory, realm-sim) is unmapped: the access faults to EL2 and
//!   realm-sim injects a synchronous external abort.
//!
//! Shape of the tables (4 KiB granule, 39-bit IPA, walks start at level 1):
//! - one level-1 table: 512 entries of 1 GiB; entries below the RAM base in the alias half are
//!   Device blocks;
//! - per half (protected, alias), one level-2 table per GiB the RAM window touches, whose
//!   entries point at level-3 tables;
//! - per half, N / 2 MiB level-3 tables, contiguous, so the level-3 entry for IPA x is element
//!   `(x - RAM_BASE) / 4 KiB` of one flat array. These are the only entries that change after
//!   boot, one per granule per RIPAS change.

use moat_rsi::{GRANULE_SIZE, Ripas};

use crate::layout::{IPA_WIDTH, Layout};

/// Entries in one 4 KiB translation table.
pub const ENTRIES: usize = 512;

/// Bytes covered by a level-1 entry.
pub const L1_BLOCK: u64 = 1 << 30;

/// Bytes covered by a level-2 entry.
pub const L2_BLOCK: u64 = 2 << 20;

/// VTCR_EL2: T0SZ = 25 (39-bit IPA), SL0 = 1 (start at level 1), inner/outer write-back
/// write-allocate, inner shareable, 4 KiB granule, PS = 40-bit output, RES1 bit 31.
pub const VTCR_EL2: u64 = (1 << 31)
    | (0b010 << 16) // PS: 40 bits (TG0, bits 15:14, = 0b00: 4 KiB)
    | (0b11 << 12) // SH0: inner shareable
    | (0b01 << 10) // ORGN0: write-back, write-allocate
    | (0b01 << 8) // IRGN0: write-back, write-allocate
    | (0b01 << 6) // SL0: level 1
    | (64 - IPA_WIDTH); // T0SZ

/// The VMID realm-sim gives its one Realm.
pub const VMID: u64 = 1;

/// VTTBR_EL2 for a level-1 table at `l1_pa`.
pub const fn vttbr(l1_pa: u64) -> u64 {
    (VMID << 48) | (l1_pa & OUTPUT_ADDRESS)
}

/// Descriptor bits and values.
pub mod descriptor {
    /// Valid.
    pub const VALID: u64 = 1 << 0;
    /// Table (levels 1 and 2) or page (level 3); clear for a block.
    pub const TABLE_OR_PAGE: u64 = 1 << 1;
    /// MemAttr (bits 5:2) Normal, inner and outer write-back (stage 2, FWB off).
    pub const NORMAL_WRITE_BACK: u64 = 0b1111 << 2;
    /// MemAttr Device-nGnRE.
    pub const DEVICE_NGNRE: u64 = 0b0001 << 2;
    /// MemAttr mask.
    pub const MEM_ATTR: u64 = 0b1111 << 2;
    /// S2AP (bits 7:6) read and write.
    pub const READ_WRITE: u64 = 0b11 << 6;
    /// SH (bits 9:8) inner shareable.
    pub const INNER_SHAREABLE: u64 = 0b11 << 8;
    /// Access flag: set, so no access flag faults.
    pub const ACCESS_FLAG: u64 = 1 << 10;
    /// XN (bit 54): no instruction fetch at EL1 or EL0.
    pub const EXECUTE_NEVER: u64 = 1 << 54;
    /// A next-level table.
    pub const TABLE: u64 = VALID | TABLE_OR_PAGE;
    /// A private RAM page: Normal write-back, read/write, executable.
    pub const PRIVATE_PAGE: u64 =
        VALID | TABLE_OR_PAGE | NORMAL_WRITE_BACK | READ_WRITE | INNER_SHAREABLE | ACCESS_FLAG;
    /// A host (shared) RAM page: as private, but never executable.
    pub const HOST_PAGE: u64 = PRIVATE_PAGE | EXECUTE_NEVER;
    /// A 1 GiB level-1 block of device MMIO: Device-nGnRE, read/write, never executable.
    pub const DEVICE_BLOCK: u64 = VALID | DEVICE_NGNRE | READ_WRITE | ACCESS_FLAG | EXECUTE_NEVER;
}

/// Output address bits of a descriptor (47:12).
pub const OUTPUT_ADDRESS: u64 = 0x0000_ffff_ffff_f000;

/// Where an IPA goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Private memory at this PA (protected IPA, RIPAS RAM).
    Private(u64),
    /// Host memory at this PA (unprotected alias of Realm RAM, RIPAS EMPTY).
    Host(u64),
    /// Device MMIO at this PA (unprotected alias of an address below the Realm's RAM).
    Device(u64),
    /// Unmapped: an access faults and the Realm gets a synchronous external abort.
    Refused,
}

/// The rule: where `ipa` goes, given the RIPAS of protected IPAs.
pub fn decide(layout: &Layout, ipa: u64, ripas_of: impl Fn(u64) -> Ripas) -> Decision {
    let shared = layout.shared_bit();
    if ipa >= 2 * shared {
        return Decision::Refused;
    }
    let canonical = ipa & !shared;
    let granule = canonical & !(GRANULE_SIZE - 1);
    let alias = ipa & shared != 0;
    match (alias, layout.in_ram(canonical)) {
        (false, true) if ripas_of(granule) == Ripas::Ram => layout
            .private_pa(canonical)
            .map_or(Decision::Refused, Decision::Private),
        (true, true) if ripas_of(granule) == Ripas::Empty => layout
            .host_pa(canonical)
            .map_or(Decision::Refused, Decision::Host),
        (true, false) if canonical < layout.ram_base() => Decision::Device(canonical),
        _ => Decision::Refused,
    }
}

/// Physical addresses of the tables (in realm-sim's identity-mapped memory).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TableAddresses {
    /// The level-1 table.
    pub l1: u64,
    /// The protected half's level-2 tables (`l2_tables(layout)` of them, contiguous).
    pub l2_protected: u64,
    /// The alias half's level-2 tables.
    pub l2_alias: u64,
    /// The protected half's level-3 tables (N / 2 MiB of them, contiguous).
    pub l3_protected: u64,
    /// The alias half's level-3 tables.
    pub l3_alias: u64,
}

/// Index of the level-1 entry covering `ipa`.
const fn l1_index(ipa: u64) -> usize {
    ((ipa >> 30) & 0x1ff) as usize
}

/// Number of level-2 tables each half needs: one per GiB the RAM window touches.
pub const fn l2_tables(layout: &Layout) -> usize {
    l1_index(layout.ram_top() - 1) - l1_index(layout.ram_base()) + 1
}

/// Number of level-3 entries each half needs: one per granule of Realm RAM.
pub const fn l3_entries(layout: &Layout) -> usize {
    layout.granules() as usize
}

/// Why the tables cannot be built.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// A table slice has the wrong length.
    Size,
    /// The layout does not suit the table shape (RAM base or size not 2 MiB aligned, devices
    /// not GiB aligned).
    Alignment,
}

/// Fills the level-1 and level-2 tables, which never change after boot. Every level-3 entry
/// starts invalid (see [`Tables::new`]).
pub fn build_upper_levels(
    layout: &Layout,
    addresses: &TableAddresses,
    l1: &mut [u64],
    l2_protected: &mut [u64],
    l2_alias: &mut [u64],
) -> Result<(), TableError> {
    let l2_count = l2_tables(layout);
    if l1.len() != ENTRIES
        || l2_protected.len() != l2_count * ENTRIES
        || l2_alias.len() != l2_count * ENTRIES
    {
        return Err(TableError::Size);
    }
    if !layout.ram_base().is_multiple_of(L1_BLOCK) || !layout.realm_size().is_multiple_of(L2_BLOCK)
    {
        return Err(TableError::Alignment);
    }
    l1.fill(0);
    l2_protected.fill(0);
    l2_alias.fill(0);
    let shared = layout.shared_bit();
    // Devices: the alias of every GiB below the Realm's RAM.
    let mut device = 0;
    while device < layout.ram_base() {
        l1[l1_index(device | shared)] = device | descriptor::DEVICE_BLOCK;
        device += L1_BLOCK;
    }
    let first_gib = l1_index(layout.ram_base());
    for table in 0..l2_count {
        let offset = (table * ENTRIES * 8) as u64;
        l1[first_gib + table] = (addresses.l2_protected + offset) | descriptor::TABLE;
        l1[l1_index(shared) + first_gib + table] =
            (addresses.l2_alias + offset) | descriptor::TABLE;
    }
    // Level 2: one entry per 2 MiB of RAM, pointing at consecutive level-3 tables.
    let first_l2 = ((layout.ram_base() >> 21) & 0x1ff) as usize;
    let chunks = (layout.realm_size() / L2_BLOCK) as usize;
    for chunk in 0..chunks {
        let offset = (chunk * ENTRIES * 8) as u64;
        l2_protected[first_l2 + chunk] = (addresses.l3_protected + offset) | descriptor::TABLE;
        l2_alias[first_l2 + chunk] = (addresses.l3_alias + offset) | descriptor::TABLE;
    }
    Ok(())
}

/// The level-3 entries of both halves: the part of stage 2 that follows RIPAS.
#[derive(Debug)]
pub struct Tables<T> {
    layout: Layout,
    protected: T,
    alias: T,
}

impl<T: AsRef<[u64]> + AsMut<[u64]>> Tables<T> {
    /// Wraps the two level-3 arrays (each [`l3_entries`] long) and invalidates every entry.
    pub fn new(layout: Layout, mut protected: T, mut alias: T) -> Result<Self, TableError> {
        let entries = l3_entries(&layout);
        if protected.as_ref().len() != entries || alias.as_ref().len() != entries {
            return Err(TableError::Size);
        }
        protected.as_mut().fill(0);
        alias.as_mut().fill(0);
        Ok(Tables {
            layout,
            protected,
            alias,
        })
    }

    fn index(&self, ipa: u64) -> Option<usize> {
        if self.layout.in_ram(ipa) {
            usize::try_from((ipa - self.layout.ram_base()) / GRANULE_SIZE).ok()
        } else {
            None
        }
    }

    /// Break: invalidates both entries of the granule at protected IPA `ipa` (the caller then
    /// invalidates the TLBs before making new entries).
    pub fn invalidate(&mut self, ipa: u64) {
        if let Some(index) = self.index(ipa) {
            self.protected.as_mut()[index] = 0;
            self.alias.as_mut()[index] = 0;
        }
    }

    /// Make: writes both entries of the granule at protected IPA `ipa` for `ripas`.
    pub fn map(&mut self, ipa: u64, ripas: Ripas) {
        let Some(index) = self.index(ipa) else {
            return;
        };
        let granule = ipa & !(GRANULE_SIZE - 1);
        let (protected, alias) = match ripas {
            Ripas::Ram => (
                self.layout
                    .private_pa(granule)
                    .map_or(0, |pa| pa | descriptor::PRIVATE_PAGE),
                0,
            ),
            Ripas::Empty => (
                0,
                self.layout
                    .host_pa(granule)
                    .map_or(0, |pa| pa | descriptor::HOST_PAGE),
            ),
            Ripas::Destroyed => (0, 0),
        };
        self.protected.as_mut()[index] = protected;
        self.alias.as_mut()[index] = alias;
    }

    /// Returns true if both entries of the granule at `ipa` are invalid (RIPAS DESTROYED, or
    /// between the break and the make of a change).
    pub fn is_broken(&self, ipa: u64) -> bool {
        self.index(ipa).is_some_and(|index| {
            self.protected.as_ref()[index] & descriptor::VALID == 0
                && self.alias.as_ref()[index] & descriptor::VALID == 0
        })
    }

    /// The protected half's level-3 entry for `ipa` (tests, diagnostics).
    pub fn protected_entry(&self, ipa: u64) -> Option<u64> {
        self.index(ipa).map(|index| self.protected.as_ref()[index])
    }

    /// The alias half's level-3 entry for `ipa` (tests, diagnostics).
    pub fn alias_entry(&self, ipa: u64) -> Option<u64> {
        self.index(ipa).map(|index| self.alias.as_ref()[index])
    }
}

/// A stage-2 walk as the MMU does it (4 KiB granule, 39-bit IPA, start at level 1), for tests
/// and diagnostics. `read(pa)` returns the descriptor at `pa`. Returns the output PA and the
/// leaf descriptor, or `None` for a translation fault.
pub fn walk(l1_pa: u64, ipa: u64, read: impl Fn(u64) -> Option<u64>) -> Option<(u64, u64)> {
    if ipa >> IPA_WIDTH != 0 {
        return None;
    }
    let mut table = l1_pa;
    for level in 1..=3u32 {
        let shift = 39 - 9 * level;
        let index = (ipa >> shift) & 0x1ff;
        let entry = read(table + index * 8)?;
        if entry & descriptor::VALID == 0 {
            return None;
        }
        let is_table_or_page = entry & descriptor::TABLE_OR_PAGE != 0;
        if level == 3 {
            if !is_table_or_page {
                return None; // reserved encoding at level 3
            }
            return Some(((entry & OUTPUT_ADDRESS) | (ipa & 0xfff), entry));
        }
        if !is_table_or_page {
            let block_mask = (1u64 << shift) - 1;
            let base = entry & OUTPUT_ADDRESS & !block_mask;
            return Some((base | (ipa & block_mask), entry));
        }
        table = entry & OUTPUT_ADDRESS;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::RAM_BASE;

    const MIB: u64 = 1 << 20;

    #[test]
    fn vtcr_value() {
        assert_eq!(VTCR_EL2, 0x8002_3559);
        assert_eq!(vttbr(0x8010_0000), 0x0001_0000_8010_0000);
    }

    #[test]
    fn decisions() {
        let layout = Layout::new(RAM_BASE, 1088 * MIB, Some(64 * MIB)).unwrap();
        let s = layout.shared_bit();
        let n = layout.realm_size();
        // RIPAS RAM for the first 1 MiB, EMPTY elsewhere.
        let ripas = |ipa: u64| {
            if ipa < RAM_BASE + MIB {
                Ripas::Ram
            } else {
                Ripas::Empty
            }
        };
        assert_eq!(
            decide(&layout, RAM_BASE + 0x123, ripas),
            Decision::Private(RAM_BASE + n + 0x123)
        );
        // RAM: the alias is refused. EMPTY: the protected IPA is refused, the alias is host.
        assert_eq!(decide(&layout, s | RAM_BASE, ripas), Decision::Refused);
        assert_eq!(decide(&layout, RAM_BASE + MIB, ripas), Decision::Refused);
        assert_eq!(
            decide(&layout, s | (RAM_BASE + MIB + 8), ripas),
            Decision::Host(RAM_BASE + MIB + 8)
        );
        // Devices only at the alias.
        assert_eq!(decide(&layout, 0x0900_0000, ripas), Decision::Refused);
        assert_eq!(
            decide(&layout, s | 0x0900_0018, ripas),
            Decision::Device(0x0900_0018)
        );
        // Private memory, realm-sim and anything above RAM: never.
        for pa in [layout.private_base(), layout.private_top(), 0x8000_0000] {
            assert_eq!(decide(&layout, pa, ripas), Decision::Refused);
            assert_eq!(decide(&layout, s | pa, ripas), Decision::Refused);
        }
        // Beyond the IPA space.
        assert_eq!(decide(&layout, 2 * s, ripas), Decision::Refused);
        // DESTROYED: neither.
        let destroyed = |_| Ripas::Destroyed;
        assert_eq!(decide(&layout, RAM_BASE, destroyed), Decision::Refused);
        assert_eq!(decide(&layout, s | RAM_BASE, destroyed), Decision::Refused);
    }
}
