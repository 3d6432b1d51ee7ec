//! The Realm's state and the SMC dispatch: RSI 1.0, PSCI and SMCCC over an abstract machine.
//!
//! [`Realm::handle_smc`] takes the Realm's X0..X10 at an SMC and returns what to answer, or
//! that the call goes on to QEMU's own PSCI firmware (SYSTEM_OFF, SYSTEM_RESET). Effects on
//! memory and the TLBs go through [`Machine`], which the EL2 binary implements with real
//! stores and TLB maintenance and host tests implement with a recording fake.
//!
//! RSI semantics are `moat-rsi`'s ([`moat_rsi::ripas`], [`moat_rsi::measurement`]); what this
//! module adds is what a change of RIPAS does to memory:
//! - every granule whose RIPAS really changes has both of its stage-2 entries invalidated
//!   (break), then the TLBs are invalidated once for the call, then the granule's private
//!   memory is zeroed and the entry its new RIPAS allows is written (make); a granule already
//!   at the target RIPAS is passed over untouched, contents and mapping kept;
//! - each call walks at most [`MAX_GRANULES_PER_CALL`] granules, and in stress mode
//!   (`realm-sim.stress-host`) at most one.
//!
//! Not implemented, answered with SMCCC NOT_SUPPORTED: ATTESTATION_TOKEN_INIT/CONTINUE and
//! HOST_CALL (no attestation and no host in realm-sim), PSCI CPU_ON/CPU_OFF/CPU_SUSPEND/
//! AFFINITY_INFO (one CPU), and every other function id.

use moat_rsi::abi::{ARG_REGS, SMCCC_NOT_SUPPORTED, bytes_to_registers, registers_to_bytes};
use moat_rsi::config::{HASH_ALGORITHM_OFFSET, IPA_WIDTH_OFFSET};
use moat_rsi::measurement::{MeasurementBytes, Measurements};
use moat_rsi::ripas::{RipasTable, check_config_address, check_state_get, check_state_set};
use moat_rsi::{Function, GRANULE_SIZE, HashAlgorithm, Response, Ripas, Status, Version};

use crate::layout::{IPA_WIDTH, Layout};
use crate::stage2::{TableError, Tables};

/// PSCI and SMCCC function ids realm-sim answers.
pub mod psci {
    /// SMCCC_VERSION.
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// SMCCC_ARCH_FEATURES.
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// PSCI_VERSION.
    pub const VERSION: u32 = 0x8400_0000;
    /// SYSTEM_OFF (forwarded: QEMU exits with status 0).
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// SYSTEM_RESET (forwarded: QEMU resets, or exits with `-no-reboot`).
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    /// PSCI_FEATURES.
    pub const FEATURES: u32 = 0x8400_000A;
    /// SMCCC version realm-sim implements: 1.1.
    pub const SMCCC_VERSION_1_1: u64 = 0x1_0001;
    /// PSCI version realm-sim implements: 1.0.
    pub const PSCI_VERSION_1_0: u64 = 0x1_0000;
}

/// Most granules one IPA_STATE_SET call walks outside stress mode (1 GiB): a request over the
/// whole protected space comes back as partial progress instead of keeping EL2 busy.
pub const MAX_GRANULES_PER_CALL: u64 = 1 << 18;

/// Number of result registers (X0..X8).
pub const REPLY_REGS: usize = 9;

/// What to write back into the Realm's registers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// X0..X8; only the first `count` are written, the others keep the Realm's values.
    pub registers: [u64; REPLY_REGS],
    /// How many result registers the call defines.
    pub count: usize,
}

impl Reply {
    fn new(values: &[u64]) -> Reply {
        let mut registers = [0; REPLY_REGS];
        let count = values.len().min(REPLY_REGS);
        registers[..count].copy_from_slice(&values[..count]);
        Reply { registers, count }
    }

    fn status(status: Status) -> Reply {
        Reply::new(&[status as u64])
    }

    /// SMCCC NOT_SUPPORTED in X0.
    pub fn not_supported() -> Reply {
        Reply::new(&[SMCCC_NOT_SUPPORTED])
    }
}

/// What to do with an SMC.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write the reply and resume the Realm after the SMC.
    Return(Reply),
    /// Issue the same call (X0..X3) to the firmware from EL2: PSCI SYSTEM_OFF / SYSTEM_RESET.
    Forward,
}

/// Memory and TLB effects of the Realm's calls.
pub trait Machine {
    /// Zeroes the private granule at `pa` (and makes the zeros visible to a Realm that runs
    /// with its caches off).
    fn zero_granule(&mut self, pa: u64);
    /// Writes `bytes` into private memory at `pa`.
    fn write_bytes(&mut self, pa: u64, bytes: &[u8]);
    /// Completes the break: make the invalidated entries visible to the walker, then
    /// invalidate the Realm's stage-1 and stage-2 TLB entries.
    fn invalidate_stage2(&mut self);
    /// Completes the make: make the new entries visible to the walker.
    fn publish_stage2(&mut self);
}

/// Why a Realm cannot be built.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RealmError {
    /// The RIPAS storage is not one byte per granule.
    RipasStorage,
    /// The level-3 tables do not fit the layout.
    Tables(TableError),
}

/// The Realm as realm-sim runs it.
#[derive(Debug)]
pub struct Realm<S, T> {
    layout: Layout,
    ripas: RipasTable<S>,
    tables: Tables<T>,
    measurements: Measurements,
    stress_host: bool,
}

impl<S, T> Realm<S, T>
where
    S: AsRef<[u8]> + AsMut<[u8]>,
    T: AsRef<[u64]> + AsMut<[u64]>,
{
    /// A Realm with every granule EMPTY (and so nothing mapped but devices), RIM `rim`.
    ///
    /// `ripas_storage` holds one byte per granule of Realm RAM; `l3_protected` and `l3_alias`
    /// are the level-3 tables of both halves of stage 2 (see [`crate::stage2`]).
    pub fn new(
        layout: Layout,
        ripas_storage: S,
        l3_protected: T,
        l3_alias: T,
        rim: &[u8],
        stress_host: bool,
    ) -> Result<Self, RealmError> {
        if ripas_storage.as_ref().len() as u64 != layout.granules() {
            return Err(RealmError::RipasStorage);
        }
        let ripas =
            RipasTable::new(layout.ram_base(), ripas_storage).ok_or(RealmError::RipasStorage)?;
        let tables = Tables::new(layout, l3_protected, l3_alias).map_err(RealmError::Tables)?;
        Ok(Realm {
            layout,
            ripas,
            tables,
            measurements: Measurements::new(HashAlgorithm::Sha256, rim),
            stress_host,
        })
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The RIPAS of protected IPA `ipa` (EMPTY outside the Realm's RAM).
    pub fn ripas(&self, ipa: u64) -> Ripas {
        self.ripas.ripas_or_empty(ipa)
    }

    /// The stage-2 level-3 tables.
    pub fn tables(&self) -> &Tables<T> {
        &self.tables
    }

    /// The measurements.
    pub fn measurements(&self) -> &Measurements {
        &self.measurements
    }

    /// Whether IPA_STATE_SET answers one granule at a time.
    pub fn stress_host(&self) -> bool {
        self.stress_host
    }

    /// Before the Realm runs: RIPAS RAM for `[base, top)` (what realm-sim loaded there),
    /// mapped, contents kept. The caller invalidates the TLBs once before entering the Realm.
    pub fn set_initial_ram(&mut self, base: u64, top: u64) {
        self.ripas.set_range(base, top, Ripas::Ram);
        let mut ipa = base & !(GRANULE_SIZE - 1);
        while ipa < top && self.layout.in_ram(ipa) {
            self.tables.map(ipa, Ripas::Ram);
            ipa += GRANULE_SIZE;
        }
    }

    /// Maps every granule's current RIPAS: the initial stage 2 (all EMPTY: host aliases).
    pub fn map_all(&mut self) {
        let mut ipa = self.layout.ram_base();
        while ipa < self.layout.ram_top() {
            let ripas = self.ripas.ripas_or_empty(ipa);
            self.tables.map(ipa, ripas);
            ipa += GRANULE_SIZE;
        }
    }

    /// Handles an SMC with immediate `immediate` and the Realm's X0..X10 in `x`.
    pub fn handle_smc(
        &mut self,
        immediate: u16,
        x: &[u64; ARG_REGS + 1],
        machine: &mut impl Machine,
    ) -> Outcome {
        if immediate != 0 {
            return Outcome::Return(Reply::not_supported());
        }
        // SMCCC: the function id is W0.
        let function_id = x[0] as u32;
        let mut args = [0u64; ARG_REGS];
        args.copy_from_slice(&x[1..]);
        if let Ok(function) = Function::try_from(function_id) {
            return Outcome::Return(self.rsi(function, &args, machine));
        }
        match function_id {
            psci::SYSTEM_OFF | psci::SYSTEM_RESET => Outcome::Forward,
            psci::VERSION => Outcome::Return(Reply::new(&[psci::PSCI_VERSION_1_0])),
            psci::FEATURES => Outcome::Return(Reply::new(&[psci_features(args[0] as u32)])),
            psci::SMCCC_VERSION => Outcome::Return(Reply::new(&[psci::SMCCC_VERSION_1_1])),
            psci::SMCCC_ARCH_FEATURES => {
                let supported = matches!(
                    args[0] as u32,
                    psci::SMCCC_VERSION | psci::SMCCC_ARCH_FEATURES
                );
                Outcome::Return(Reply::new(&[if supported {
                    0
                } else {
                    SMCCC_NOT_SUPPORTED
                }]))
            }
            _ => Outcome::Return(Reply::not_supported()),
        }
    }

    fn rsi(
        &mut self,
        function: Function,
        args: &[u64; ARG_REGS],
        machine: &mut impl Machine,
    ) -> Reply {
        let protected_top = self.layout.protected_top();
        let result = match function {
            Function::Version => return rsi_version(args[0]),
            Function::Features => Ok(Reply::new(&[Status::Success as u64, 0])),
            Function::MeasurementRead => self.measurements.read(args[0]).map(|value| {
                let mut registers = [0u64; REPLY_REGS];
                registers[1..].copy_from_slice(&bytes_to_registers(&value));
                Reply {
                    registers,
                    count: REPLY_REGS,
                }
            }),
            Function::MeasurementExtend => {
                let mut value = [0u64; 8];
                value.copy_from_slice(&args[2..10]);
                let bytes: MeasurementBytes = registers_to_bytes(&value);
                self.measurements
                    .extend(args[0], args[1], &bytes)
                    .map(|()| Reply::status(Status::Success))
            }
            Function::RealmConfig => self.realm_config(args[0], machine),
            Function::IpaStateSet => self.ipa_state_set(args, machine),
            Function::IpaStateGet => check_state_get(args[0], args[1], protected_top).map(|()| {
                let (top, ripas) = self.ripas.run_end(args[0], args[1]);
                Reply::new(&[Status::Success as u64, top, ripas.raw()])
            }),
            Function::AttestationTokenInit
            | Function::AttestationTokenContinue
            | Function::HostCall => return Reply::not_supported(),
        };
        result.unwrap_or_else(Reply::status)
    }

    fn realm_config(&mut self, ipa: u64, machine: &mut impl Machine) -> Result<Reply, Status> {
        check_config_address(ipa, self.layout.protected_top())?;
        if self.ripas.get(ipa) != Some(Ripas::Ram) {
            return Err(Status::ErrorInput);
        }
        let pa = self.layout.private_pa(ipa).ok_or(Status::ErrorInput)?;
        machine.write_bytes(pa + IPA_WIDTH_OFFSET as u64, &IPA_WIDTH.to_le_bytes());
        machine.write_bytes(
            pa + HASH_ALGORITHM_OFFSET as u64,
            &[self.measurements.algorithm() as u8],
        );
        Ok(Reply::status(Status::Success))
    }

    fn ipa_state_set(
        &mut self,
        args: &[u64; ARG_REGS],
        machine: &mut impl Machine,
    ) -> Result<Reply, Status> {
        let request = check_state_set(
            args[0],
            args[1],
            args[2],
            args[3],
            self.layout.protected_top(),
        )?;
        let budget = if self.stress_host {
            1
        } else {
            MAX_GRANULES_PER_CALL
        };
        // Break: invalidate both entries of every granule whose RIPAS really changes.
        let tables = &mut self.tables;
        let layout = self.layout;
        let mut changed = false;
        let new_base = self.ripas.apply(&request, budget, |ipa, _old, _new| {
            tables.invalidate(ipa);
            changed = true;
        });
        if changed {
            machine.invalidate_stage2();
            // Make. A granule with both entries invalid is one that changed (an unchanged
            // granule keeps the valid entry of its RAM or EMPTY state; DESTROYED is never a
            // target): zero its private memory, then write the entry its new RIPAS allows.
            let mut ipa = request.base.max(layout.ram_base());
            let end = new_base.min(layout.ram_top());
            while ipa < end {
                if self.tables.is_broken(ipa)
                    && let Some(pa) = layout.private_pa(ipa)
                {
                    machine.zero_granule(pa);
                    self.tables.map(ipa, self.ripas.ripas_or_empty(ipa));
                }
                ipa += GRANULE_SIZE;
            }
            machine.publish_stage2();
        }
        // realm-sim's host accepts every change; a DESTROYED granule without CHANGE_DESTROYED
        // stops the walk, which the Realm sees as partial progress.
        Ok(Reply::new(&[
            Status::Success as u64,
            new_base,
            Response::Accept as u64,
        ]))
    }
}

/// RSI_VERSION: realm-sim implements RSI 1.0 only.
fn rsi_version(requested: u64) -> Reply {
    let implemented = Version::V1_0.encode();
    let status = if Version::decode(requested) == Some(Version::V1_0) {
        Status::Success
    } else {
        Status::ErrorInput
    };
    Reply::new(&[status as u64, implemented, implemented])
}

/// PSCI_FEATURES: 0 for the functions realm-sim implements, NOT_SUPPORTED otherwise.
fn psci_features(function_id: u32) -> u64 {
    match function_id {
        psci::VERSION
        | psci::FEATURES
        | psci::SYSTEM_OFF
        | psci::SYSTEM_RESET
        | psci::SMCCC_VERSION => 0,
        _ => SMCCC_NOT_SUPPORTED,
    }
}
