//! Traps from the Realm: what each one is, and the synchronous external abort realm-sim injects
//! for accesses the RMM would refuse.
//!
//! Stage 2 maps everything the Realm may touch up front, so every stage-2 fault (data abort
//! EC 0x24, instruction abort EC 0x20, from EL1 or EL0) is an access the RMM refuses: a
//! protected IPA with RIPAS EMPTY, the alias of RAM, a device at its protected address, an
//! instruction fetch from shared memory, anything outside the Realm. realm-sim then does what
//! the exception would have done had it been taken to EL1 as an external abort:
//! - ESR_EL1: EC 0x25 (data abort, same EL) or 0x24 (from EL0); 0x21 / 0x20 for instruction
//!   aborts; IL copied; FSC 0x10 (synchronous external abort, not on a table walk); WnR copied
//!   for data aborts;
//! - FAR_EL1 = FAR_EL2 (the virtual address), ELR_EL1 = the faulting instruction, SPSR_EL1 =
//!   the Realm's PSTATE at the fault;
//! - PSTATE = EL1h with D, A, I, F masked, PC = VBAR_EL1 + the synchronous vector for where the
//!   fault came from (0x000 EL1t, 0x200 EL1h, 0x400 EL0 AArch64).
//!
//! A trap realm-sim does not handle (no other is enabled) becomes an Unknown-reason exception
//! (EC 0) at the Realm's vector, the architecture's answer to an instruction nobody implements.

/// Exception classes realm-sim sees from the Realm.
pub mod class {
    /// Unknown reason.
    pub const UNKNOWN: u8 = 0x00;
    /// HVC from AArch64.
    pub const HVC64: u8 = 0x16;
    /// SMC from AArch64 (trapped by HCR_EL2.TSC).
    pub const SMC64: u8 = 0x17;
    /// Instruction abort from a lower EL.
    pub const INSTRUCTION_ABORT_LOWER: u8 = 0x20;
    /// Instruction abort from the same EL.
    pub const INSTRUCTION_ABORT_SAME: u8 = 0x21;
    /// Data abort from a lower EL.
    pub const DATA_ABORT_LOWER: u8 = 0x24;
    /// Data abort from the same EL.
    pub const DATA_ABORT_SAME: u8 = 0x25;
}

/// Synchronous external abort, not on a translation table walk (DFSC/IFSC).
pub const FSC_SYNC_EXTERNAL: u64 = 0x10;

const ESR_IL: u64 = 1 << 25;
const ESR_WNR: u64 = 1 << 6;
const ESR_S1PTW: u64 = 1 << 7;

/// PSTATE for the Realm's exception entry: EL1h, D A I F masked.
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// Exception class of an ESR value.
pub const fn exception_class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

/// What a trap from the Realm is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Trap {
    /// An SMC (ELR points at it: step over it when returning).
    Smc {
        /// The SMC's immediate.
        immediate: u16,
    },
    /// An HVC (ELR already points past it).
    Hvc,
    /// A stage-2 abort.
    StageTwoAbort {
        /// Instruction fetch (else data access).
        instruction: bool,
        /// A write (data aborts).
        write: bool,
        /// During the stage-1 table walk.
        stage1_walk: bool,
    },
    /// Anything else.
    Other(u8),
}

/// Classifies ESR_EL2.
pub const fn classify(esr: u64) -> Trap {
    match exception_class(esr) {
        class::SMC64 => Trap::Smc {
            immediate: esr as u16,
        },
        class::HVC64 => Trap::Hvc,
        class::DATA_ABORT_LOWER => Trap::StageTwoAbort {
            instruction: false,
            write: esr & ESR_WNR != 0,
            stage1_walk: esr & ESR_S1PTW != 0,
        },
        class::INSTRUCTION_ABORT_LOWER => Trap::StageTwoAbort {
            instruction: true,
            write: false,
            stage1_walk: esr & ESR_S1PTW != 0,
        },
        other => Trap::Other(other),
    }
}

/// The faulting IPA: HPFAR_EL2.FIPA (bits 39:4 hold IPA 51:12) plus the page offset from FAR.
pub const fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar >> 4) & 0xff_ffff_ffff) << 12 | (far & 0xfff)
}

/// The Realm's registers realm-sim reads to inject an exception.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TrapState {
    /// ESR_EL2.
    pub esr: u64,
    /// FAR_EL2 (the virtual address, for aborts).
    pub far: u64,
    /// ELR_EL2: the instruction that trapped.
    pub elr: u64,
    /// SPSR_EL2: the Realm's PSTATE.
    pub spsr: u64,
    /// VBAR_EL1.
    pub vbar: u64,
}

/// The registers to write so the Realm takes an exception at EL1.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// ESR_EL1.
    pub esr_el1: u64,
    /// FAR_EL1 (written only for aborts).
    pub far_el1: Option<u64>,
    /// ELR_EL1.
    pub elr_el1: u64,
    /// SPSR_EL1.
    pub spsr_el1: u64,
    /// ELR_EL2: where the Realm resumes (its vector).
    pub elr_el2: u64,
    /// SPSR_EL2: PSTATE it resumes with.
    pub spsr_el2: u64,
}

/// Offset of the synchronous vector for an exception taken to EL1 from PSTATE `spsr`.
pub const fn sync_vector_offset(spsr: u64) -> u64 {
    match spsr & 0b1111 {
        0b0100 => 0x000, // EL1t
        0b0101 => 0x200, // EL1h
        _ => 0x400,      // EL0 (AArch64; realm-sim runs no AArch32 Realm)
    }
}

fn from_el0(spsr: u64) -> bool {
    (spsr >> 2) & 0b11 == 0
}

fn enter_el1(state: &TrapState, esr_el1: u64, far_el1: Option<u64>) -> Injection {
    Injection {
        esr_el1,
        far_el1,
        elr_el1: state.elr,
        spsr_el1: state.spsr,
        elr_el2: state.vbar.wrapping_add(sync_vector_offset(state.spsr)),
        spsr_el2: SPSR_EL1H_MASKED,
    }
}

/// The synchronous external abort for a refused access described by `state`.
pub fn external_abort(state: &TrapState, instruction: bool) -> Injection {
    let el0 = from_el0(state.spsr);
    let class = match (instruction, el0) {
        (true, true) => class::INSTRUCTION_ABORT_LOWER,
        (true, false) => class::INSTRUCTION_ABORT_SAME,
        (false, true) => class::DATA_ABORT_LOWER,
        (false, false) => class::DATA_ABORT_SAME,
    };
    let write = if instruction { 0 } else { state.esr & ESR_WNR };
    let esr = (u64::from(class) << 26) | (state.esr & ESR_IL) | write | FSC_SYNC_EXTERNAL;
    enter_el1(state, esr, Some(state.far))
}

/// An Unknown-reason exception for a trap realm-sim does not handle.
pub fn undefined(state: &TrapState) -> Injection {
    enter_el1(state, (u64::from(class::UNKNOWN) << 26) | ESR_IL, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VBAR: u64 = 0xffff_ffff_8000_0800;

    fn state(esr: u64, spsr: u64) -> TrapState {
        TrapState {
            esr,
            far: 0xffff_ffc0_0900_0000,
            elr: 0xffff_ffff_8000_1234,
            spsr,
            vbar: VBAR,
        }
    }

    #[test]
    fn classifies() {
        assert_eq!(classify(0x5e00_0000), Trap::Smc { immediate: 0 });
        assert_eq!(classify(0x5e00_0001), Trap::Smc { immediate: 1 });
        assert_eq!(classify(0x5a00_0000), Trap::Hvc);
        // Data abort from EL1, write, translation fault level 3.
        assert_eq!(
            classify(0x9200_0047),
            Trap::StageTwoAbort {
                instruction: false,
                write: true,
                stage1_walk: false
            }
        );
        assert_eq!(
            classify(0x8200_0087),
            Trap::StageTwoAbort {
                instruction: true,
                write: false,
                stage1_walk: true
            }
        );
        assert_eq!(classify(0x0400_0000), Trap::Other(0x01));
    }

    #[test]
    fn fault_ipa_from_hpfar() {
        assert_eq!(
            fault_ipa(0x0900_0000 >> 8, 0xffff_ffc0_0900_0018),
            0x0900_0018
        );
        assert_eq!(fault_ipa(0x4000_0000 >> 8, 0x123), 0x4000_0123);
    }

    #[test]
    fn data_abort_from_el1h() {
        // A write from EL1h that missed stage 2 (translation fault, level 3).
        let injection = external_abort(&state(0x9200_0047, 0x3c5), false);
        assert_eq!(injection.esr_el1, 0x9600_0050);
        assert_eq!(injection.far_el1, Some(0xffff_ffc0_0900_0000));
        assert_eq!(injection.elr_el1, 0xffff_ffff_8000_1234);
        assert_eq!(injection.spsr_el1, 0x3c5);
        assert_eq!(injection.elr_el2, VBAR + 0x200);
        assert_eq!(injection.spsr_el2, 0x3c5);
    }

    #[test]
    fn aborts_from_el0_and_el1t() {
        let read_el0 = external_abort(&state(0x9200_0007, 0x0), false);
        assert_eq!(read_el0.esr_el1, 0x9200_0010);
        assert_eq!(read_el0.elr_el2, VBAR + 0x400);
        let fetch_el0 = external_abort(&state(0x8200_0007, 0x0), true);
        assert_eq!(fetch_el0.esr_el1, 0x8200_0010);
        let fetch_el1t = external_abort(&state(0x8200_0007, 0x3c4), true);
        assert_eq!(fetch_el1t.esr_el1, 0x8600_0010);
        assert_eq!(fetch_el1t.elr_el2, VBAR);
    }

    #[test]
    fn undefined_has_no_far() {
        let injection = undefined(&state(0x0400_0000, 0x3c5));
        assert_eq!(injection.esr_el1, 0x0200_0000);
        assert_eq!(injection.far_el1, None);
        assert_eq!(injection.elr_el2, VBAR + 0x200);
    }
}
