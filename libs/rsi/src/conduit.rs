//! How RSI calls reach the RMM: a trait, so that host tests can put a model behind it.

use crate::abi::{ARG_REGS, GRANULE_SIZE, RESULT_REGS};

/// One 4 KiB-aligned granule of Realm memory that the RMM writes into (REALM_CONFIG).
#[derive(Clone)]
#[repr(C, align(4096))]
pub struct Granule(pub [u8; GRANULE_SIZE as usize]);

impl Granule {
    /// A zeroed granule.
    pub const fn zeroed() -> Self {
        Granule([0; GRANULE_SIZE as usize])
    }
}

impl Default for Granule {
    fn default() -> Self {
        Granule::zeroed()
    }
}

/// A way to issue an RSI call: an SMC on target, a model in host tests.
pub trait Conduit {
    /// Issues `function_id` with `args` in X1..X10 and returns X0..X8.
    ///
    /// Unused argument registers are zero.
    fn call(&mut self, function_id: u32, args: [u64; ARG_REGS]) -> [u64; RESULT_REGS];

    /// Issues a call that makes the RMM write into `granule`, whose IPA is in `args`.
    ///
    /// On hardware the RMM writes the granule through its IPA, so the default just calls
    /// [`Conduit::call`]; a model overrides this to write `granule` itself.
    fn call_with_granule(
        &mut self,
        function_id: u32,
        args: [u64; ARG_REGS],
        granule: &mut Granule,
    ) -> [u64; RESULT_REGS] {
        let _ = granule;
        self.call(function_id, args)
    }
}

impl<C: Conduit + ?Sized> Conduit for &mut C {
    fn call(&mut self, function_id: u32, args: [u64; ARG_REGS]) -> [u64; RESULT_REGS] {
        (**self).call(function_id, args)
    }

    fn call_with_granule(
        &mut self,
        function_id: u32,
        args: [u64; ARG_REGS],
        granule: &mut Granule,
    ) -> [u64; RESULT_REGS] {
        (**self).call_with_granule(function_id, args, granule)
    }
}

/// The real conduit: an SMC64 call (SMCCC 1.x) to the RMM.
///
/// Only use it once the PSCI conduit is known to be `smc`: an SMC with nothing at a higher
/// exception level to take it is undefined.
#[cfg(target_arch = "aarch64")]
#[derive(Debug, Default)]
pub struct SmcConduit;

#[cfg(target_arch = "aarch64")]
impl Conduit for SmcConduit {
    fn call(&mut self, function_id: u32, args: [u64; ARG_REGS]) -> [u64; RESULT_REGS] {
        let mut registers = [0u64; 17];
        registers[..ARG_REGS].copy_from_slice(&args);
        let results = smccc::smc64(function_id, registers);
        let mut out = [0u64; RESULT_REGS];
        out.copy_from_slice(&results[..RESULT_REGS]);
        out
    }

    fn call_with_granule(
        &mut self,
        function_id: u32,
        args: [u64; ARG_REGS],
        granule: &mut Granule,
    ) -> [u64; RESULT_REGS] {
        // The RMM writes the granule through its IPA, behind the compiler's back. Handing the
        // granule's address to an (empty) asm block before and after the SMC tells the compiler
        // that its memory may be read and written there: the caller's zeroing is not sunk past
        // the call, and the RMM's writes are not assumed away afterwards.
        let pointer = granule.0.as_mut_ptr();
        // SAFETY: the asm body is empty; it only makes `pointer` escape to the compiler.
        unsafe {
            core::arch::asm!("/* {0} */", in(reg) pointer, options(nostack, preserves_flags))
        };
        let results = self.call(function_id, args);
        // SAFETY: as above.
        unsafe {
            core::arch::asm!("/* {0} */", in(reg) pointer, options(nostack, preserves_flags))
        };
        results
    }
}
