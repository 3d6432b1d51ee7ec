//! Decoding the Exception Syndrome Register (ESR_ELx) into words for fault reports.

/// The exception class: ESR bits 31 to 26.
pub const fn exception_class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

/// The instruction-specific syndrome: ESR bits 24 to 0.
pub const fn syndrome(esr: u64) -> u32 {
    (esr & 0x01ff_ffff) as u32
}

/// Names an exception class (Arm ARM D23.2.41, ESR_EL1).
pub fn class_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "trapped WFI/WFE",
        0x07 => "trapped SIMD/FP access",
        0x0e => "illegal execution state",
        0x11 | 0x15 => "SVC (system call)",
        0x12 | 0x16 => "HVC",
        0x13 | 0x17 => "SMC",
        0x18 => "trapped MSR/MRS/system instruction",
        0x19 => "trapped SVE access",
        0x20 => "instruction abort from a lower exception level",
        0x21 => "instruction abort at the same exception level",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower exception level",
        0x25 => "data abort at the same exception level",
        0x26 => "SP alignment fault",
        0x28 | 0x2c => "trapped floating-point exception",
        0x2f => "SError interrupt",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x38 => "BKPT instruction",
        0x3c => "BRK instruction",
        _ => "reserved exception class",
    }
}

/// Names the fault status code of an instruction or data abort (ISS bits 5 to 0).
pub fn fault_status_name(iss: u32) -> &'static str {
    match iss & 0x3f {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x08..=0x0b => "access flag fault",
        0x0c..=0x0f => "permission fault",
        0x10 => "synchronous external abort",
        0x11 => "synchronous tag check fault",
        0x14..=0x17 => "synchronous external abort on table walk",
        0x18 => "synchronous parity/ECC error",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

/// The translation level of a translation, access-flag or permission fault.
pub fn fault_level(iss: u32) -> Option<u8> {
    match iss & 0x3f {
        0x04..=0x0f => Some((iss & 0x3) as u8),
        _ => None,
    }
}

/// Whether the exception class is an instruction or data abort.
pub const fn is_abort(ec: u8) -> bool {
    matches!(ec, 0x20 | 0x21 | 0x24 | 0x25)
}

/// For a data abort, whether the access was a write (ISS.WnR).
pub const fn is_write(iss: u32) -> bool {
    iss & (1 << 6) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_kernel_data_abort() {
        // A level-3 translation fault on a read at EL1, as QEMU reports it.
        let esr = 0x9600_0007;
        assert_eq!(exception_class(esr), 0x25);
        assert_eq!(
            class_name(exception_class(esr)),
            "data abort at the same exception level"
        );
        assert_eq!(fault_status_name(syndrome(esr)), "translation fault");
        assert_eq!(fault_level(syndrome(esr)), Some(3));
        assert!(!is_write(syndrome(esr)));
        assert!(is_abort(0x25));
    }

    #[test]
    fn decodes_undefined_and_svc() {
        assert_eq!(class_name(exception_class(0x0200_0000)), "unknown reason");
        assert_eq!(
            class_name(exception_class(0x5600_0000)),
            "SVC (system call)"
        );
        assert_eq!(class_name(0x3f), "reserved exception class");
    }
}
