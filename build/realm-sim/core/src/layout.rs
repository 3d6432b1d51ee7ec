//! The memory layout: the Realm's IPA window, host memory, private memory and realm-sim itself.
//!
//! Physical memory (QEMU `-m`, starting at [`RAM_BASE`]), for a Realm with N bytes of RAM:
//!
//! ```text
//! RAM_BASE            .. RAM_BASE + N     host memory: the unprotected alias x | S maps here
//!                                         (x itself, while RIPAS(x) = EMPTY); QEMU's DTB
//! RAM_BASE + N        .. RAM_BASE + 2N    private memory: protected IPA x maps to x + N
//!                                         while RIPAS(x) = RAM
//! RAM_BASE + 2N       .. SIM_BASE         unused (when N is below its maximum)
//! SIM_BASE            .. IMAGE_LOAD_ADDR  realm-sim: code, data, stack, stage-2 tables, RIPAS
//! IMAGE_LOAD_ADDR     .. + image_size     the Moat Image as the host loaded it (-device loader)
//! ```
//!
//! The Realm sees RAM at IPA `[RAM_BASE, RAM_BASE + N)`: the DTB it gets is the host's with
//! `/memory`'s size cell set to N. realm-sim copies the DTB to IPA [`RAM_BASE`] and the Image to
//! IPA `RAM_BASE + 2 MiB` (+ `text_offset`), both in private memory.
//!
//! realm-sim is an ELF linked at [`SIM_BASE`] (QEMU loads it there and places its DTB at
//! `RAM_BASE`), so N is at most `(SIM_BASE - RAM_BASE) / 2` = 512 MiB; the command-line key
//! `realm-sim.ram=SIZE` asks for less. QEMU needs `-m` of at least
//! `IMAGE_LOAD_ADDR - RAM_BASE + image_size`: `-m 1088M` fits any Image up to 32 MiB.

use moat_rsi::GRANULE_SIZE;

/// Where QEMU's virt machine starts RAM, and where the Realm's RAM starts in IPA space.
pub const RAM_BASE: u64 = 0x4000_0000;

/// realm-sim's link address (`build/realm-sim/link.ld` must agree).
pub const SIM_BASE: u64 = 0x8000_0000;

/// Where the host loads the Moat `Image` (`-device loader,addr=…,force-raw=on`).
pub const IMAGE_LOAD_ADDR: u64 = 0x8200_0000;

/// Width of the Realm's IPA space, as REALM_CONFIG reports it. 39 bits start stage-2 walks at
/// level 1 with a single 4 KiB table.
pub const IPA_WIDTH: u64 = 39;

/// The shared (unprotected) bit: `1 << (IPA_WIDTH - 1)`.
pub const SHARED_BIT: u64 = 1 << (IPA_WIDTH - 1);

/// Offset of the DTB from the start of the Realm's RAM.
pub const DTB_OFFSET: u64 = 0;

/// Largest DTB realm-sim passes on (Linux's arm64 booting rules use the same bound).
pub const MAX_DTB_SIZE: u64 = 2 << 20;

/// Offset of the Image's 2 MiB-aligned base from the start of the Realm's RAM.
pub const IMAGE_OFFSET: u64 = 2 << 20;

/// The largest Realm RAM this link address allows.
pub const MAX_REALM_RAM: u64 = (SIM_BASE - RAM_BASE) / 2;

/// Realm RAM sizes are multiples of 2 MiB (one level-3 stage-2 table each).
pub const REALM_RAM_ALIGN: u64 = 2 << 20;

/// The smallest Realm RAM realm-sim accepts: the DTB's 2 MiB and a 2 MiB image.
pub const MIN_REALM_RAM: u64 = 4 << 20;

/// Why the layout cannot be built.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The DTB's memory does not start at [`RAM_BASE`].
    RamBase(u64),
    /// The DTB's memory ends below the Image load address: `-m` is too small.
    RamTooSmall {
        /// End of RAM the DTB reports.
        ram_end: u64,
        /// End of RAM needed.
        needed: u64,
    },
    /// `realm-sim.ram=` asked for a size that is not a multiple of 2 MiB, below the minimum or
    /// above [`MAX_REALM_RAM`].
    RealmSize(u64),
}

/// The Realm's memory layout. Built once at boot; every address below derives from it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    ram_base: u64,
    realm_size: u64,
    physical_end: u64,
}

impl Layout {
    /// The layout for the host's RAM `[memory_base, memory_base + memory_size)` (the DTB's
    /// `/memory`), with `requested` Realm RAM (`realm-sim.ram=`) or the largest possible.
    pub fn new(
        memory_base: u64,
        memory_size: u64,
        requested: Option<u64>,
    ) -> Result<Layout, LayoutError> {
        if memory_base != RAM_BASE {
            return Err(LayoutError::RamBase(memory_base));
        }
        let physical_end =
            memory_base
                .checked_add(memory_size)
                .ok_or(LayoutError::RamTooSmall {
                    ram_end: u64::MAX,
                    needed: IMAGE_LOAD_ADDR,
                })?;
        // At least one granule of Image must fit; the Image itself is checked with its size.
        let needed = IMAGE_LOAD_ADDR + GRANULE_SIZE;
        if physical_end < needed {
            return Err(LayoutError::RamTooSmall {
                ram_end: physical_end,
                needed,
            });
        }
        let realm_size = requested.unwrap_or(MAX_REALM_RAM);
        if !realm_size.is_multiple_of(REALM_RAM_ALIGN)
            || !(MIN_REALM_RAM..=MAX_REALM_RAM).contains(&realm_size)
        {
            return Err(LayoutError::RealmSize(realm_size));
        }
        Ok(Layout {
            ram_base: memory_base,
            realm_size,
            physical_end,
        })
    }

    /// First IPA of the Realm's RAM (and first PA of host memory).
    pub const fn ram_base(&self) -> u64 {
        self.ram_base
    }

    /// N: the size of the Realm's RAM.
    pub const fn realm_size(&self) -> u64 {
        self.realm_size
    }

    /// End of the Realm's RAM in IPA space, exclusive.
    pub const fn ram_top(&self) -> u64 {
        self.ram_base + self.realm_size
    }

    /// Number of 4 KiB granules in the Realm's RAM.
    pub const fn granules(&self) -> u64 {
        self.realm_size / GRANULE_SIZE
    }

    /// End of physical RAM as the host's DTB describes it.
    pub const fn physical_end(&self) -> u64 {
        self.physical_end
    }

    /// First PA of private memory.
    pub const fn private_base(&self) -> u64 {
        self.ram_base + self.realm_size
    }

    /// End of private memory, exclusive (realm-sim and everything of its lives above).
    pub const fn private_top(&self) -> u64 {
        self.ram_base + 2 * self.realm_size
    }

    /// The shared bit S.
    pub const fn shared_bit(&self) -> u64 {
        SHARED_BIT
    }

    /// End of the protected IPA space (S).
    pub const fn protected_top(&self) -> u64 {
        SHARED_BIT
    }

    /// Returns true if protected IPA `ipa` is inside the Realm's RAM.
    pub const fn in_ram(&self, ipa: u64) -> bool {
        ipa >= self.ram_base && ipa < self.ram_top()
    }

    /// The private PA behind protected IPA `ipa` (`ipa + N`), if `ipa` is Realm RAM.
    pub const fn private_pa(&self, ipa: u64) -> Option<u64> {
        if self.in_ram(ipa) {
            Some(ipa + self.realm_size)
        } else {
            None
        }
    }

    /// The host PA behind the unprotected alias of protected IPA `ipa` (`ipa` itself), if
    /// `ipa` is Realm RAM.
    pub const fn host_pa(&self, ipa: u64) -> Option<u64> {
        if self.in_ram(ipa) { Some(ipa) } else { None }
    }

    /// IPA where the Realm finds its DTB.
    pub const fn dtb_ipa(&self) -> u64 {
        self.ram_base + DTB_OFFSET
    }

    /// IPA of the Image's 2 MiB-aligned base (add the header's `text_offset` for the entry).
    pub const fn image_base_ipa(&self) -> u64 {
        self.ram_base + IMAGE_OFFSET
    }

    /// Checks that an Image of `image_size` bytes placed at `text_offset` fits both where the
    /// host loaded it and in the Realm's RAM. Returns the IPA range it occupies.
    pub fn image_range(&self, text_offset: u64, image_size: u64) -> Option<(u64, u64)> {
        let load_end = IMAGE_LOAD_ADDR.checked_add(image_size)?;
        if load_end > self.physical_end {
            return None;
        }
        let start = self.image_base_ipa().checked_add(text_offset)?;
        let end = start.checked_add(image_size)?;
        let end = end.checked_next_multiple_of(GRANULE_SIZE)?;
        if end > self.ram_top() {
            return None;
        }
        Some((start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn default_layout_for_1088m() {
        let layout = Layout::new(RAM_BASE, 1088 * MIB, None).unwrap();
        assert_eq!(layout.realm_size(), 512 * MIB);
        assert_eq!(layout.ram_top(), 0x6000_0000);
        assert_eq!(layout.private_base(), 0x6000_0000);
        assert_eq!(layout.private_top(), SIM_BASE);
        assert_eq!(layout.granules(), 512 * MIB / 4096);
        assert_eq!(layout.physical_end(), 0x8400_0000);
        assert_eq!(layout.private_pa(0x4000_0000), Some(0x6000_0000));
        assert_eq!(layout.private_pa(0x5fff_f000), Some(0x7fff_f000));
        assert_eq!(layout.private_pa(0x6000_0000), None);
        assert_eq!(layout.private_pa(0x3fff_f000), None);
        assert_eq!(layout.host_pa(0x4123_4000), Some(0x4123_4000));
        assert_eq!(layout.dtb_ipa(), 0x4000_0000);
        assert_eq!(layout.image_base_ipa(), 0x4020_0000);
        assert_eq!(layout.shared_bit(), 0x40_0000_0000);
    }

    #[test]
    fn requested_size() {
        let layout = Layout::new(RAM_BASE, 1088 * MIB, Some(64 * MIB)).unwrap();
        assert_eq!(layout.realm_size(), 64 * MIB);
        assert_eq!(layout.private_base(), 0x4400_0000);
        assert_eq!(layout.private_top(), 0x4800_0000);
        for bad in [0, 2 * MIB, 3 * MIB, 513 * MIB, 1024 * MIB] {
            assert_eq!(
                Layout::new(RAM_BASE, 1088 * MIB, Some(bad)),
                Err(LayoutError::RealmSize(bad))
            );
        }
    }

    #[test]
    fn refuses_other_ram() {
        assert_eq!(
            Layout::new(0x8000_0000, 1088 * MIB, None),
            Err(LayoutError::RamBase(0x8000_0000))
        );
        assert!(matches!(
            Layout::new(RAM_BASE, 1024 * MIB, None),
            Err(LayoutError::RamTooSmall { .. })
        ));
        assert!(matches!(
            Layout::new(RAM_BASE, u64::MAX, None),
            Err(LayoutError::RamTooSmall { .. })
        ));
    }

    #[test]
    fn image_fits() {
        let layout = Layout::new(RAM_BASE, 1088 * MIB, None).unwrap();
        assert_eq!(
            layout.image_range(0, 0x12_3456),
            Some((0x4020_0000, 0x4032_4000))
        );
        // Larger than what the host loaded into (RAM ends 32 MiB above the load address).
        assert_eq!(layout.image_range(0, 33 * MIB), None);
        assert_eq!(layout.image_range(0, u64::MAX), None);
        let small = Layout::new(RAM_BASE, 1088 * MIB, Some(4 * MIB)).unwrap();
        assert_eq!(
            small.image_range(0, 2 * MIB),
            Some((0x4020_0000, 0x4040_0000))
        );
        assert_eq!(small.image_range(0x1000, 2 * MIB), None);
    }
}
