//! The few hardware touches: system registers, TLB and cache maintenance, the firmware SMC,
//! and [`HwMachine`], the [`Machine`] realm-sim-core drives.

use core::arch::asm;

use realm_sim_core::realm::Machine;

/// Reads a system register.
macro_rules! read_sysreg {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: reading this system register at EL2 has no side effects.
        unsafe { core::arch::asm!(concat!("mrs {0}, ", $name), out(reg) value, options(nomem, nostack, preserves_flags)) };
        value
    }};
}
pub(crate) use read_sysreg;

/// Writes a system register.
macro_rules! write_sysreg {
    ($name:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: realm-sim owns EL2; every write is to a register that controls the Realm
        // (EL1 state, stage 2, traps) or an exception return, with a value the caller computed
        // for it.
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {0}"), in(reg) value, options(nostack, preserves_flags)) };
    }};
}
pub(crate) use write_sysreg;

/// Smallest data cache line, from CTR_EL0.DminLine.
fn dcache_line() -> u64 {
    4 << ((read_sysreg!("ctr_el0") >> 16) & 0xf)
}

/// Cleans `[start, start + len)` to the point of coherency, so that a Realm running with its
/// MMU (and so its caches) off sees what realm-sim wrote through its cacheable mapping.
pub fn clean_dcache(start: u64, len: u64) {
    let line = dcache_line();
    let mut address = start & !(line - 1);
    let end = start.saturating_add(len);
    while address < end {
        // SAFETY: DC CVAC on an identity-mapped RAM address only writes back cache contents.
        unsafe { asm!("dc cvac, {0}", in(reg) address, options(nostack, preserves_flags)) };
        address += line;
    }
    // SAFETY: a barrier.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Invalidates the Realm's stage-1 and stage-2 TLB entries (current VMID), all CPUs.
pub fn invalidate_realm_tlbs() {
    // SAFETY: TLB maintenance and barriers; they only drop cached translations.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi vmalls12e1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Invalidates the instruction cache (after copying the Image).
pub fn invalidate_icache() {
    // SAFETY: cache maintenance and barriers only.
    unsafe {
        asm!(
            "ic iallu",
            "dsb sy",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Issues an SMC from EL2 to QEMU's own PSCI firmware with X0..X3; returns X0.
pub fn firmware_smc(x: [u64; 4]) -> u64 {
    let result: u64;
    // SAFETY: with virtualization=on and no EL3, QEMU implements PSCI for SMCs issued at EL2;
    // the call clobbers at most X0..X17 as SMCCC allows.
    unsafe {
        asm!(
            "smc #0",
            inlateout("x0") x[0] => result,
            inlateout("x1") x[1] => _,
            inlateout("x2") x[2] => _,
            inlateout("x3") x[3] => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack)
        )
    };
    result
}

/// Powers the machine off through the firmware; waits forever if that returns.
pub fn system_off() -> ! {
    const SYSTEM_OFF: u64 = 0x8400_0008;
    firmware_smc([SYSTEM_OFF, 0, 0, 0]);
    loop {
        // SAFETY: waiting for an event has no side effects.
        unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
    }
}

/// The real machine: private memory is identity-mapped at EL2.
pub struct HwMachine;

impl Machine for HwMachine {
    fn zero_granule(&mut self, pa: u64) {
        let granule = moat_rsi::GRANULE_SIZE;
        let dczid = read_sysreg!("dczid_el0");
        let block = 4u64 << (dczid & 0xf);
        if dczid & (1 << 4) == 0 && block <= granule {
            // DC ZVA: one instruction per block (64 bytes on Cortex-A72).
            let mut address = pa;
            while address < pa + granule {
                // SAFETY: realm-sim-core passes only private PAs of Realm RAM (granule
                // aligned), identity-mapped as Normal memory and referenced by nothing else in
                // realm-sim; DC ZVA zeroes one aligned block inside that granule.
                unsafe { asm!("dc zva, {0}", in(reg) address, options(nostack, preserves_flags)) };
                address += block;
            }
        } else {
            // SAFETY: realm-sim-core passes only private PAs of Realm RAM, which realm-sim's
            // identity map covers as Normal memory and which nothing else in realm-sim
            // references.
            unsafe { core::ptr::write_bytes(pa as *mut u8, 0, granule as usize) };
        }
        clean_dcache(pa, granule);
    }

    fn write_bytes(&mut self, pa: u64, bytes: &[u8]) {
        // SAFETY: as for `zero_granule`: a private PA of Realm RAM (REALM_CONFIG's granule,
        // checked RIPAS RAM), and `bytes` is realm-sim's own data.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), pa as *mut u8, bytes.len()) };
        clean_dcache(pa, bytes.len() as u64);
    }

    fn invalidate_stage2(&mut self) {
        invalidate_realm_tlbs();
    }

    fn publish_stage2(&mut self) {
        // SAFETY: a barrier: the new entries are visible to the table walker before the
        // Realm resumes (ERET is context synchronizing).
        unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
    }
}
