//! realm-sim: the project's stand-in for the Realm Management Monitor (DESIGN.md section 7).
//!
//! Runs at EL2 under `qemu-system-aarch64 -M virt,virtualization=on,gic-version=3`, loads the
//! Moat `Image` as a Realm at EL1 and answers its RSI, PSCI and SMCCC calls. All decisions are
//! `realm-sim-core`'s; this binary copies bytes, programs EL2 and takes the Realm's traps.
//! Memory layout and load addresses: `realm_sim_core::layout` and this crate's README.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]

mod hw;
mod uart;

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, Ordering};

use moat_rsi::measurement::digest;
use moat_rsi::{GRANULE_SIZE, HashAlgorithm};
use realm_sim_core::fault::{self, Trap, TrapState};
use realm_sim_core::layout::{IMAGE_LOAD_ADDR, IMAGE_OFFSET, Layout, LayoutError};
use realm_sim_core::realm::{Outcome, Realm};
use realm_sim_core::stage2::{self, TableAddresses};
use realm_sim_core::{dtb, image, options};

use crate::hw::{HwMachine, read_sysreg, write_sysreg};

core::arch::global_asm!(include_str!("entry.S"));

unsafe extern "C" {
    /// End of realm-sim's image, stack included (link.ld); the table pool starts here.
    static __sim_end: u8;
    /// Enters the Realm at `entry` with x0 = `dtb` (entry.S). Never returns.
    fn realm_sim_enter(entry: u64, dtb: u64) -> !;
}

type SimRealm = Realm<&'static mut [u8], &'static mut [u64]>;

/// The Realm, once built. Taken by the trap handler with exceptions masked at EL2 and one CPU,
/// so the lock is never contended; it is there so that the `&mut` is provably unique.
static REALM: spin::Mutex<Option<SimRealm>> = spin::Mutex::new(None);

/// Stage-2 faults reported on the console before going quiet.
const FAULT_REPORTS: u32 = 32;
static FAULTS: AtomicU32 = AtomicU32::new(0);

/// HCR_EL2: RW (EL1 is AArch64), TSC (EL1 SMCs trap to EL2), SWIO, VM (stage 2 on). IMO, FMO
/// and AMO stay clear: physical interrupts and SErrors go straight to the Realm at EL1.
const HCR_EL2: u64 = (1 << 31) | (1 << 19) | (1 << 1) | (1 << 0);
/// SCTLR_EL1 for entry: RES1 bits, little-endian, MMU and caches off.
const SCTLR_EL1_ENTRY: u64 = 0x30d0_0800;
/// CPTR_EL2: RES1 bits, no FP/SIMD trap.
const CPTR_EL2: u64 = 0x33ff;

/// Ends the run on a realm-sim error: print it and power off.
fn fail(what: core::fmt::Arguments<'_>) -> ! {
    println!("error: {what}");
    hw::system_off()
}

/// A bump allocator over realm-sim's pool: 4 KiB pages from `__sim_end` to the Image load
/// address.
struct Pool {
    next: u64,
}

impl Pool {
    /// Zeroed, page-aligned memory for `len` bytes.
    fn take(&mut self, len: u64) -> u64 {
        let Some(len) = len.checked_next_multiple_of(GRANULE_SIZE) else {
            fail(format_args!("pool request too large"));
        };
        let start = self.next;
        match start.checked_add(len) {
            Some(end) if end <= IMAGE_LOAD_ADDR => self.next = end,
            _ => fail(format_args!(
                "realm-sim's pool (up to {IMAGE_LOAD_ADDR:#x}) cannot hold {len:#x} more bytes"
            )),
        }
        // SAFETY: [start, start + len) is pool memory above realm-sim's image and below the
        // Image load address, identity-mapped Normal memory, handed out once.
        unsafe { core::ptr::write_bytes(start as *mut u8, 0, len as usize) };
        start
    }

    fn take_words(&mut self, count: usize) -> (u64, &'static mut [u64]) {
        let start = self.take(count as u64 * 8);
        // SAFETY: `take` returned fresh, zeroed, exclusively owned memory of this size.
        let slice = unsafe { core::slice::from_raw_parts_mut(start as *mut u64, count) };
        (start, slice)
    }
}

/// A byte slice of physical memory.
///
/// # Safety
/// `[pa, pa + len)` must be identity-mapped RAM that nothing mutates while the slice lives.
unsafe fn physical(pa: u64, len: u64) -> &'static [u8] {
    // SAFETY: the caller's promise.
    unsafe { core::slice::from_raw_parts(pa as *const u8, len as usize) }
}

/// A mutable byte slice of physical memory.
///
/// # Safety
/// `[pa, pa + len)` must be identity-mapped RAM that nothing else references while it lives.
unsafe fn physical_mut(pa: u64, len: u64) -> &'static mut [u8] {
    // SAFETY: the caller's promise.
    unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, len as usize) }
}

struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0
            .iter()
            .try_for_each(|byte| write!(formatter, "{byte:02x}"))
    }
}

/// Boot: read the host's DTB and Image, build the Realm, enter it.
#[unsafe(no_mangle)]
extern "C" fn realm_sim_main(host_dtb: u64) -> ! {
    // The host's DTB, read in place (host memory, below the private half).
    // SAFETY: QEMU put a DTB at the base of RAM; the 8-byte header is inside RAM.
    let header = unsafe { physical(host_dtb, 8) };
    let Some(dtb_size) = dtb::total_size(header) else {
        hw::system_off(); // no DTB, no console: nothing to report on
    };
    let dtb_size = dtb_size as u64;
    if dtb_size > IMAGE_OFFSET {
        hw::system_off();
    }
    // SAFETY: within the first 2 MiB of RAM, where QEMU put the DTB; nothing writes it.
    let host_blob = unsafe { physical(host_dtb, dtb_size) };
    let info = match dtb::parse(host_blob) {
        Ok(info) => info,
        Err(_) => hw::system_off(),
    };
    if let Some(base) = info.pl011 {
        uart::init(base);
    }
    let (options, unknown) = options::parse(dtb::bootargs(host_blob, &info));
    if let Some(word) = unknown {
        println!(
            "ignoring unknown option {}",
            core::str::from_utf8(word.0).unwrap_or("?")
        );
    }
    let layout = match Layout::new(info.memory.base, info.memory.size, options.ram) {
        Ok(layout) => layout,
        Err(LayoutError::RamTooSmall { ram_end, needed }) => fail(format_args!(
            "memory layout: RAM ends at {ram_end:#x}, realm-sim needs it up to at least \
             {needed:#x} plus the Image (QEMU -m 1088M)"
        )),
        Err(error) => fail(format_args!("memory layout: {error:?}")),
    };

    // The Image as the host loaded it.
    // SAFETY: Layout::new checked that RAM extends past the load address's first granule.
    let image_header = match image::parse(unsafe { physical(IMAGE_LOAD_ADDR, 64) }) {
        Ok(header) => header,
        Err(error) => fail(format_args!(
            "no arm64 Image at {IMAGE_LOAD_ADDR:#x}: {error:?}"
        )),
    };
    let Some((image_ipa, image_top)) =
        layout.image_range(image_header.text_offset, image_header.image_size)
    else {
        fail(format_args!(
            "an Image of {:#x} bytes does not fit",
            image_header.image_size
        ));
    };

    // Tables and RIPAS from the pool.
    let pool_start = core::ptr::addr_of!(__sim_end) as u64;
    let mut pool = Pool {
        next: pool_start.next_multiple_of(GRANULE_SIZE),
    };
    let l2_count = stage2::l2_tables(&layout);
    let (l1_pa, l1) = pool.take_words(stage2::ENTRIES);
    let (l2_protected_pa, l2_protected) = pool.take_words(l2_count * stage2::ENTRIES);
    let (l2_alias_pa, l2_alias) = pool.take_words(l2_count * stage2::ENTRIES);
    let (l3_protected_pa, l3_protected) = pool.take_words(stage2::l3_entries(&layout));
    let (l3_alias_pa, l3_alias) = pool.take_words(stage2::l3_entries(&layout));
    let ripas_pa = pool.take(layout.granules());
    // SAFETY: fresh pool memory, one byte per granule, owned by the Realm from now on.
    let ripas = unsafe { physical_mut(ripas_pa, layout.granules()) };
    let addresses = TableAddresses {
        l1: l1_pa,
        l2_protected: l2_protected_pa,
        l2_alias: l2_alias_pa,
        l3_protected: l3_protected_pa,
        l3_alias: l3_alias_pa,
    };
    if let Err(error) = stage2::build_upper_levels(&layout, &addresses, l1, l2_protected, l2_alias)
    {
        fail(format_args!("stage 2: {error:?}"));
    }

    // Copy the DTB and the Image into private memory; fix the DTB up there.
    let Some(dtb_private) = layout.private_pa(layout.dtb_ipa()) else {
        fail(format_args!("no room for the DTB"));
    };
    let image_len = image_header.image_size;
    let Some(image_private) = layout.private_pa(image_ipa) else {
        fail(format_args!("no room for the Image"));
    };
    // SAFETY: private memory (below realm-sim, above host memory), not yet mapped into the
    // Realm, and disjoint from the host copies: the DTB's 2 MiB slot and the Image's range
    // were checked against the layout.
    let realm_blob = unsafe { physical_mut(dtb_private, dtb_size) };
    realm_blob.copy_from_slice(host_blob);
    if let Err(error) = dtb::set_memory_size(realm_blob, &info.memory, layout.realm_size()) {
        fail(format_args!("DTB memory rewrite: {error:?}"));
    }
    let blanked = dtb::blank_realm_sim_words(realm_blob, &info);
    // SAFETY: private memory as above: the Image's IPA range was checked to lie inside the
    // Realm's RAM (image_range), disjoint from the DTB's 2 MiB slot.
    let realm_image = unsafe { physical_mut(image_private, image_len) };
    // SAFETY: the host's copy: image_range checked that RAM extends past the load address
    // plus image_size; realm-sim's pool ends at the load address, so nothing else is there.
    let host_image = unsafe { physical(IMAGE_LOAD_ADDR, image_len) };
    realm_image.copy_from_slice(host_image);
    hw::clean_dcache(dtb_private, dtb_size);
    hw::clean_dcache(image_private, image_len);
    hw::invalidate_icache();

    let rim = digest(HashAlgorithm::Sha256, &[realm_image, realm_blob]);
    let mut realm = match Realm::new(
        layout,
        ripas,
        l3_protected,
        l3_alias,
        &rim,
        options.stress_host,
    ) {
        Ok(realm) => realm,
        Err(error) => fail(format_args!("Realm: {error:?}")),
    };
    realm.map_all();
    let dtb_top = (layout.dtb_ipa() + dtb_size).next_multiple_of(GRANULE_SIZE);
    realm.set_initial_ram(layout.dtb_ipa(), dtb_top);
    realm.set_initial_ram(image_ipa & !(GRANULE_SIZE - 1), image_top);

    println!(
        "Realm RAM {} MiB at IPA {:#x}, private at PA {:#x}, shared bit {:#x}{}",
        layout.realm_size() >> 20,
        layout.ram_base(),
        layout.private_base(),
        layout.shared_bit(),
        if options.stress_host {
            ", stress-host"
        } else {
            ""
        }
    );
    println!(
        "Image {image_len:#x} bytes at IPA {image_ipa:#x}, DTB {dtb_size:#x} bytes at IPA {:#x}{}",
        layout.dtb_ipa(),
        if blanked > 0 {
            " (realm-sim options removed)"
        } else {
            ""
        }
    );
    println!("RIM sha256:{}", Hex(&rim[..32]));
    *REALM.lock() = Some(realm);

    // EL2 set-up for the Realm.
    write_sysreg!("vtcr_el2", stage2::VTCR_EL2);
    write_sysreg!("vttbr_el2", stage2::vttbr(l1_pa));
    write_sysreg!("vpidr_el2", read_sysreg!("midr_el1"));
    write_sysreg!("vmpidr_el2", read_sysreg!("mpidr_el1"));
    write_sysreg!("cnthctl_el2", read_sysreg!("cnthctl_el2") | 0b11);
    write_sysreg!("cntvoff_el2", 0);
    write_sysreg!("cptr_el2", CPTR_EL2);
    write_sysreg!("hstr_el2", 0);
    // GICv3: the Realm uses the system-register CPU interface directly (no virtual one).
    if (read_sysreg!("id_aa64pfr0_el1") >> 24) & 0xf != 0 {
        write_sysreg!("S3_4_C12_C9_5", read_sysreg!("S3_4_C12_C9_5") | 0b1001); // ICC_SRE_EL2
        write_sysreg!("S3_4_C12_C11_0", 0); // ICH_HCR_EL2
    }
    write_sysreg!("sctlr_el1", SCTLR_EL1_ENTRY);
    write_sysreg!("hcr_el2", HCR_EL2);
    // SAFETY: barriers and a local TLB invalidation for the Realm's VMID.
    unsafe {
        core::arch::asm!(
            "isb",
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        )
    };
    let entry = image_ipa;
    // SAFETY: stage 2 maps the Image (RIPAS RAM, private) and the DTB; EL2 is set up above.
    unsafe { realm_sim_enter(entry, layout.dtb_ipa()) }
}

/// The Realm's registers as entry.S saved them.
#[repr(C)]
struct Frame {
    x: [u64; 31],
    padding: u64,
}

/// A synchronous exception from the Realm.
#[unsafe(no_mangle)]
extern "C" fn realm_sim_trap(frame: &mut Frame, _kind: u64) {
    let esr = read_sysreg!("esr_el2");
    let state = TrapState {
        esr,
        far: read_sysreg!("far_el2"),
        elr: read_sysreg!("elr_el2"),
        spsr: read_sysreg!("spsr_el2"),
        vbar: read_sysreg!("vbar_el1"),
    };
    match fault::classify(esr) {
        Trap::Smc { immediate } => {
            // A trapped SMC returns to itself: step over it.
            write_sysreg!("elr_el2", state.elr.wrapping_add(4));
            let mut x = [0u64; 11];
            x.copy_from_slice(&frame.x[..11]);
            let mut guard = REALM.lock();
            let Some(realm) = guard.as_mut() else {
                fail(format_args!("SMC before the Realm exists"));
            };
            match realm.handle_smc(immediate, &x, &mut HwMachine) {
                Outcome::Return(reply) => {
                    frame.x[..reply.count].copy_from_slice(&reply.registers[..reply.count]);
                }
                Outcome::Forward => {
                    drop(guard);
                    frame.x[0] = hw::firmware_smc([x[0], x[1], x[2], x[3]]);
                }
            }
        }
        Trap::Hvc => frame.x[0] = moat_rsi::abi::SMCCC_NOT_SUPPORTED,
        Trap::StageTwoAbort {
            instruction, write, ..
        } => {
            let ipa = fault::fault_ipa(read_sysreg!("hpfar_el2"), state.far);
            let count = FAULTS.fetch_add(1, Ordering::Relaxed);
            if count < FAULT_REPORTS {
                let access = match (instruction, write) {
                    (true, _) => "instruction fetch",
                    (false, true) => "write",
                    (false, false) => "read",
                };
                println!(
                    "refused {access} at IPA {ipa:#x} (VA {:#x}, PC {:#x}): external abort injected",
                    state.far, state.elr
                );
            } else if count == FAULT_REPORTS {
                println!("further refused accesses are not reported");
            }
            inject(&fault::external_abort(&state, instruction));
        }
        Trap::Other(class) => {
            println!(
                "unexpected trap, class {class:#x} at PC {:#x}: undefined instruction injected",
                state.elr
            );
            inject(&fault::undefined(&state));
        }
    }
}

fn inject(injection: &fault::Injection) {
    write_sysreg!("esr_el1", injection.esr_el1);
    if let Some(far) = injection.far_el1 {
        write_sysreg!("far_el1", far);
    }
    write_sysreg!("elr_el1", injection.elr_el1);
    write_sysreg!("spsr_el1", injection.spsr_el1);
    write_sysreg!("elr_el2", injection.elr_el2);
    write_sysreg!("spsr_el2", injection.spsr_el2);
}

/// An exception realm-sim does not expect (a fault in realm-sim, or an interrupt at EL2).
#[unsafe(no_mangle)]
extern "C" fn realm_sim_fatal(frame: &mut Frame, kind: u64) -> ! {
    fail(format_args!(
        "unexpected exception (vector {kind}): ESR {:#x} ELR {:#x} FAR {:#x} x0 {:#x}",
        read_sysreg!("esr_el2"),
        read_sysreg!("elr_el2"),
        read_sysreg!("far_el2"),
        frame.x[0]
    ))
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    fail(format_args!("panic: {info}"))
}
