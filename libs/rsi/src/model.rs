//! A model of an RMM 1.0 (and of the host behind it) behind the [`Conduit`] trait, for tests.
//!
//! It answers RSI_VERSION, FEATURES, REALM_CONFIG, IPA_STATE_SET/GET and MEASUREMENT_READ/
//! EXTEND as TF-RMM does, with RIPAS tracked per granule by [`RipasTable`] and measurements by
//! [`Measurements`]; the other RSI commands answer SMCCC NOT_SUPPORTED. The host's part of a
//! RIPAS change is configurable ([`HostBehaviour`]): complete, one granule per call (stress),
//! no progress, or refusal. Every granule whose RIPAS really changes is recorded: its contents
//! are what a real RMM would discard (zero).
//!
//! How a host refusal reaches the Realm follows TF-RMM (`complete_set_ripas`): REJECT is
//! reported only for a change to RAM; a refused change to EMPTY comes back ACCEPTed with
//! no progress past the refusal.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use crate::abi::{
    ARG_REGS, Function, GRANULE_SIZE, HashAlgorithm, RESULT_REGS, Response, Ripas,
    SMCCC_NOT_SUPPORTED, Status, Version, bytes_to_registers, registers_to_bytes,
};
use crate::conduit::{Conduit, Granule};
use crate::measurement::{MeasurementBytes, Measurements, digest};
use crate::ripas::{RipasTable, check_config_address, check_state_get, check_state_set};

/// How the host handles the RIPAS changes the Realm asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HostBehaviour {
    /// Every request completes in one call.
    Accept,
    /// At most one granule per call, like realm-sim's `--stress-host`.
    OneGranulePerCall,
    /// Nothing changes: every call returns its own base, accepted.
    ZeroProgress,
    /// The host lets `granules` more granules through (in total), then refuses everything.
    RejectAfter {
        /// Granules still let through.
        granules: u64,
    },
}

impl HostBehaviour {
    /// Refuse from the first granule.
    pub const REJECT: HostBehaviour = HostBehaviour::RejectAfter { granules: 0 };
}

/// The Realm as the model's RMM was asked to create it.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// IPA width reported by REALM_CONFIG. Stored raw so tests can configure invalid values.
    pub ipa_width: u64,
    /// Hash algorithm reported by REALM_CONFIG (raw, for the same reason).
    pub hash_algorithm: u8,
    /// First IPA of the Realm's RAM (where RIPAS is tracked).
    pub ram_base: u64,
    /// Size of the Realm's RAM in bytes (a multiple of 4 KiB).
    pub ram_size: u64,
    /// The RSI revisions the RMM implements, ascending.
    pub implemented: Vec<Version>,
    /// The Realm Initial Measurement.
    pub rim: MeasurementBytes,
}

impl Default for ModelConfig {
    /// A 39-bit SHA-256 Realm with 16 MiB of RAM at 1 GiB, RSI 1.0, and a fixed RIM.
    fn default() -> Self {
        ModelConfig {
            ipa_width: 39,
            hash_algorithm: HashAlgorithm::Sha256 as u8,
            ram_base: 0x4000_0000,
            ram_size: 16 << 20,
            implemented: vec![Version::V1_0],
            rim: digest(
                HashAlgorithm::Sha256,
                &[b"moat rmm model initial measurement"],
            ),
        }
    }
}

/// One call the model received.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ModelCall {
    /// The function id in W0.
    pub function_id: u32,
    /// X1..X10.
    pub args: [u64; ARG_REGS],
}

/// The RMM model. Its RAM starts with RIPAS EMPTY everywhere.
#[derive(Debug)]
pub struct RmmModel {
    config: ModelConfig,
    realm: bool,
    ripas: RipasTable<Vec<u8>>,
    measurements: Measurements,
    host: HostBehaviour,
    zeroed: Vec<u64>,
    calls: Vec<ModelCall>,
    injected: VecDeque<[u64; RESULT_REGS]>,
}

impl RmmModel {
    /// A Realm as `config` describes.
    ///
    /// # Panics
    /// If `ram_base` or `ram_size` is not granule aligned or the RAM does not fit below the
    /// shared bit: a broken test setup.
    pub fn new(config: ModelConfig) -> Self {
        assert!(
            config.ram_size.is_multiple_of(GRANULE_SIZE),
            "model RAM size must be granule aligned"
        );
        let granules = usize::try_from(config.ram_size / GRANULE_SIZE)
            .expect("model RAM too large for this host");
        let ripas = RipasTable::new(config.ram_base, vec![0u8; granules])
            .expect("model RAM base must be granule aligned");
        // A width the client would refuse still needs a protected range here; clamp it.
        let width = config.ipa_width.clamp(1, 63);
        assert!(
            ripas.top() <= 1 << (width - 1),
            "model RAM must lie in protected IPA space"
        );
        let algorithm =
            HashAlgorithm::try_from(config.hash_algorithm).unwrap_or(HashAlgorithm::Sha256);
        let measurements = Measurements::new(algorithm, &config.rim);
        RmmModel {
            config,
            realm: true,
            ripas,
            measurements,
            host: HostBehaviour::Accept,
            zeroed: Vec::new(),
            calls: Vec::new(),
            injected: VecDeque::new(),
        }
    }

    /// No RMM at all: every SMC answers SMCCC NOT_SUPPORTED, as for a plain guest.
    pub fn not_a_realm() -> Self {
        let mut model = RmmModel::new(ModelConfig::default());
        model.realm = false;
        model
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// End of the protected IPA range (the shared bit).
    pub fn protected_top(&self) -> u64 {
        1 << (self.config.ipa_width.clamp(1, 63) - 1)
    }

    /// Changes how the host handles RIPAS changes from now on.
    pub fn set_host_behaviour(&mut self, behaviour: HostBehaviour) {
        self.host = behaviour;
    }

    /// The RIPAS of the granule holding `ipa` (EMPTY outside RAM).
    pub fn ripas(&self, ipa: u64) -> Ripas {
        self.ripas.ripas_or_empty(ipa)
    }

    /// The RIPAS table.
    pub fn ripas_table(&self) -> &RipasTable<Vec<u8>> {
        &self.ripas
    }

    /// Sets RIPAS before the Realm runs (as the host does when creating it), unrecorded.
    pub fn set_initial_ripas(&mut self, base: u64, top: u64, ripas: Ripas) {
        self.ripas.set_range(base, top, ripas);
    }

    /// The host destroys `[base, top)`: RAM granules there become DESTROYED.
    pub fn destroy(&mut self, base: u64, top: u64) {
        let mut ipa = base;
        while ipa < top {
            if self.ripas.get(ipa) == Some(Ripas::Ram) {
                self.ripas.set(ipa, Ripas::Destroyed);
            }
            ipa += GRANULE_SIZE;
        }
    }

    /// Granules whose RIPAS really changed (and whose contents were discarded), in order.
    pub fn zeroed_granules(&self) -> &[u64] {
        &self.zeroed
    }

    /// Forgets the recorded zeroed granules.
    pub fn clear_zeroed(&mut self) {
        self.zeroed.clear();
    }

    /// Every call received, in order.
    pub fn calls(&self) -> &[ModelCall] {
        &self.calls
    }

    /// Number of calls to `function` received.
    pub fn count_calls(&self, function: Function) -> usize {
        self.calls
            .iter()
            .filter(|call| call.function_id == function.id())
            .count()
    }

    /// The next call answers `result` instead of what the RMM would (a misbehaving RMM).
    pub fn inject_result(&mut self, result: [u64; RESULT_REGS]) {
        self.injected.push_back(result);
    }

    /// The measurement slots.
    pub fn measurements(&self) -> &Measurements {
        &self.measurements
    }

    fn handle(
        &mut self,
        function_id: u32,
        args: [u64; ARG_REGS],
        granule: Option<&mut Granule>,
    ) -> [u64; RESULT_REGS] {
        self.calls.push(ModelCall { function_id, args });
        if let Some(result) = self.injected.pop_front() {
            return result;
        }
        let mut result = [0u64; RESULT_REGS];
        if !self.realm {
            result[0] = SMCCC_NOT_SUPPORTED;
            return result;
        }
        let outcome = match Function::try_from(function_id) {
            Ok(Function::Version) => return self.version(args[0]),
            Ok(Function::Features) => Ok(()),
            Ok(Function::MeasurementRead) => self.measurements.read(args[0]).map(|value| {
                result[1..9].copy_from_slice(&bytes_to_registers(&value));
            }),
            Ok(Function::MeasurementExtend) => {
                let mut registers = [0u64; 8];
                registers.copy_from_slice(&args[2..10]);
                self.measurements
                    .extend(args[0], args[1], &registers_to_bytes(&registers))
            }
            Ok(Function::RealmConfig) => self.realm_config(args[0], granule),
            Ok(Function::IpaStateSet) => self.ipa_state_set(args, &mut result),
            Ok(Function::IpaStateGet) => check_state_get(args[0], args[1], self.protected_top())
                .map(|()| {
                    let (top, ripas) = self.ripas.run_end(args[0], args[1]);
                    result[1] = top;
                    result[2] = ripas.raw();
                }),
            _ => {
                result[0] = SMCCC_NOT_SUPPORTED;
                return result;
            }
        };
        result[0] = match outcome {
            Ok(()) => Status::Success as u64,
            Err(status) => {
                result = [0; RESULT_REGS];
                status as u64
            }
        };
        result
    }

    fn version(&self, requested: u64) -> [u64; RESULT_REGS] {
        let mut result = [0u64; RESULT_REGS];
        let implemented = &self.config.implemented;
        let highest = implemented.last().copied().unwrap_or(Version::V1_0);
        result[2] = highest.encode();
        match Version::decode(requested) {
            Some(version) if implemented.contains(&version) => {
                result[0] = Status::Success as u64;
                result[1] = version.encode();
            }
            requested => {
                // Not implemented: report the highest implemented revision below the one asked
                // for, or the lowest implemented if there is none below.
                let below = requested
                    .and_then(|requested| implemented.iter().rev().find(|v| **v < requested));
                let lower = below.or(implemented.first()).copied().unwrap_or(highest);
                result[0] = Status::ErrorInput as u64;
                result[1] = lower.encode();
            }
        }
        result
    }

    fn realm_config(&mut self, ipa: u64, granule: Option<&mut Granule>) -> Result<(), Status> {
        check_config_address(ipa, self.protected_top())?;
        // The RMM writes only to protected memory the Realm owns.
        if self.ripas.ripas_or_empty(ipa) != Ripas::Ram {
            return Err(Status::ErrorInput);
        }
        if let Some(granule) = granule {
            granule.0[0..8].copy_from_slice(&self.config.ipa_width.to_le_bytes());
            granule.0[8] = self.config.hash_algorithm;
        }
        Ok(())
    }

    fn ipa_state_set(
        &mut self,
        args: [u64; ARG_REGS],
        result: &mut [u64; RESULT_REGS],
    ) -> Result<(), Status> {
        let request = check_state_set(args[0], args[1], args[2], args[3], self.protected_top())?;
        let (budget, refusing) = match self.host {
            HostBehaviour::Accept => (u64::MAX, false),
            HostBehaviour::OneGranulePerCall => (1, false),
            HostBehaviour::ZeroProgress => (0, false),
            HostBehaviour::RejectAfter { granules } => (granules, true),
        };
        let zeroed = &mut self.zeroed;
        let new_base = self
            .ripas
            .apply(&request, budget, |ipa, _, _| zeroed.push(ipa));
        let walked = (new_base - request.base) / GRANULE_SIZE;
        if let HostBehaviour::RejectAfter { granules } = &mut self.host {
            *granules -= walked;
        }
        // The host's refusal, not a DESTROYED granule, stopped the change.
        let rejected =
            refusing && walked == budget && new_base < request.top && request.ripas == Ripas::Ram;
        result[1] = new_base;
        result[2] = if rejected {
            Response::Reject as u64
        } else {
            Response::Accept as u64
        };
        Ok(())
    }
}

impl Conduit for RmmModel {
    fn call(&mut self, function_id: u32, args: [u64; ARG_REGS]) -> [u64; RESULT_REGS] {
        self.handle(function_id, args, None)
    }

    fn call_with_granule(
        &mut self,
        function_id: u32,
        args: [u64; ARG_REGS],
        granule: &mut Granule,
    ) -> [u64; RESULT_REGS] {
        self.handle(function_id, args, Some(granule))
    }
}
