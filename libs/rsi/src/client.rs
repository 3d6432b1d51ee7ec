//! The typed RSI client: each command as a method, every answer checked before use.

use crate::abi::{
    ARG_REGS, ChangeDestroyed, Function, MAX_MEASUREMENT_LEN, RESULT_REGS, Response, Ripas, Status,
    Version, bytes_to_registers, is_smccc_not_supported, registers_to_bytes,
};
use crate::conduit::{Conduit, Granule};
use crate::config::{ConfigError, RealmConfig};
use crate::ripas::is_granule_aligned;

/// What went wrong with an RSI call.
///
/// `InvalidArgument` is the caller's mistake, caught before calling. `NotRealm`,
/// `VersionMismatch`, `Rejected` and `ZeroProgress` are outcomes a caller handles.
/// `Status` carries an RSI error status. `BadResponse` and `BadConfig` mean the RMM answered
/// something RMM 1.0 rules out: a fault, never to be papered over.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// RSI_VERSION returned SMCCC NOT_SUPPORTED: there is no RMM, this is not a Realm.
    NotRealm,
    /// The RMM does not implement the requested revision. It implements `lower..=higher`
    /// (as it reports them; raw if they do not decode).
    VersionMismatch {
        /// The revision asked for.
        requested: Version,
        /// Lower implemented revision, raw.
        lower: u64,
        /// Higher implemented revision, raw.
        higher: u64,
    },
    /// The command returned an error status.
    Status {
        /// The command.
        function: Function,
        /// Its status.
        status: Status,
    },
    /// The arguments break a rule the client checks before calling (alignment, empty range,
    /// DESTROYED as a target, measurement index or size).
    InvalidArgument(Function),
    /// The host refused a RIPAS change. Granules below `at` did change.
    Rejected {
        /// The first IPA whose RIPAS did not change.
        at: u64,
    },
    /// The RMM reported no progress on a RIPAS change (nothing changed at or above `at`);
    /// calling again would spin.
    ZeroProgress {
        /// The IPA where progress stopped.
        at: u64,
    },
    /// The RMM answered with a value RMM 1.0 does not allow for this command.
    BadResponse {
        /// The command.
        function: Function,
        /// The offending register (0 = X0).
        register: u8,
        /// Its value.
        value: u64,
    },
    /// REALM_CONFIG succeeded but the configuration it wrote is not valid.
    BadConfig(ConfigError),
}

/// Result of RSI calls.
pub type Result<T> = core::result::Result<T, Error>;

/// The outcome of a successful version negotiation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NegotiatedVersion {
    /// The revision in use: the one requested.
    pub version: Version,
    /// The highest revision the RMM implements.
    pub highest: Version,
}

/// MEASUREMENT_READ / _EXTEND slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum MeasurementIndex {
    /// The Realm Initial Measurement: read only.
    Rim = 0,
    /// Realm Extensible Measurement 0.
    Rem0 = 1,
    /// Realm Extensible Measurement 1.
    Rem1 = 2,
    /// Realm Extensible Measurement 2.
    Rem2 = 3,
    /// Realm Extensible Measurement 3.
    Rem3 = 4,
}

/// A measurement as MEASUREMENT_READ returns it: 64 bytes, of which the configured hash
/// algorithm's digest length are meaningful.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Measurement(pub [u8; MAX_MEASUREMENT_LEN]);

/// The RIPAS of the start of a range (IPA_STATE_GET).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IpaState {
    /// RIPAS of `[base, top)`.
    pub ripas: Ripas,
    /// End of the run of granules sharing `ripas`, within the requested range.
    pub top: u64,
}

/// What an IPA_STATE_SET loop took.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StateSetReport {
    /// Number of RSI_IPA_STATE_SET calls made.
    pub calls: u64,
}

/// The RSI client over a conduit.
#[derive(Debug)]
pub struct Rsi<C> {
    conduit: C,
}

impl<C: Conduit> Rsi<C> {
    /// A client issuing calls through `conduit`.
    pub fn new(conduit: C) -> Self {
        Rsi { conduit }
    }

    /// The conduit, for inspection.
    pub fn conduit(&self) -> &C {
        &self.conduit
    }

    /// The conduit, mutably (tests reconfigure models through it).
    pub fn conduit_mut(&mut self) -> &mut C {
        &mut self.conduit
    }

    /// Gives the conduit back.
    pub fn into_conduit(self) -> C {
        self.conduit
    }

    fn call(&mut self, function: Function, args: &[u64]) -> [u64; RESULT_REGS] {
        let mut registers = [0u64; ARG_REGS];
        registers[..args.len()].copy_from_slice(args);
        self.conduit.call(function.id(), registers)
    }

    /// Decodes X0, turning anything but SUCCESS into an error.
    fn status(function: Function, x0: u64) -> Result<()> {
        match Status::try_from(x0) {
            Ok(Status::Success) => Ok(()),
            Ok(status) => Err(Error::Status { function, status }),
            Err(value) => Err(Error::BadResponse {
                function,
                register: 0,
                value,
            }),
        }
    }

    /// RSI_VERSION for RSI 1.0, the only revision this client speaks.
    pub fn negotiate(&mut self) -> Result<NegotiatedVersion> {
        self.version(Version::V1_0)
    }

    /// RSI_VERSION: asks the RMM for revision `requested`.
    ///
    /// SMCCC NOT_SUPPORTED gives [`Error::NotRealm`]. ERROR_INPUT gives
    /// [`Error::VersionMismatch`] with the range the RMM reported. SUCCESS must come with
    /// `lower == requested <= higher`, or the answer is a [`Error::BadResponse`].
    pub fn version(&mut self, requested: Version) -> Result<NegotiatedVersion> {
        let function = Function::Version;
        let result = self.call(function, &[requested.encode()]);
        let [x0, lower, higher, ..] = result;
        if is_smccc_not_supported(x0) {
            return Err(Error::NotRealm);
        }
        match Status::try_from(x0) {
            Ok(Status::Success) => {}
            Ok(Status::ErrorInput) => {
                return Err(Error::VersionMismatch {
                    requested,
                    lower,
                    higher,
                });
            }
            _ => Self::status(function, x0)?,
        }
        let bad = |register, value| Error::BadResponse {
            function,
            register,
            value,
        };
        let version = Version::decode(lower).ok_or(bad(1, lower))?;
        if version != requested {
            return Err(bad(1, lower));
        }
        let highest = Version::decode(higher).ok_or(bad(2, higher))?;
        if highest < version {
            return Err(bad(2, higher));
        }
        Ok(NegotiatedVersion { version, highest })
    }

    /// RSI_FEATURES: feature register `index` (all zero in RMM 1.0).
    pub fn features(&mut self, index: u64) -> Result<u64> {
        let result = self.call(Function::Features, &[index]);
        Self::status(Function::Features, result[0])?;
        Ok(result[1])
    }

    /// RSI_REALM_CONFIG into `granule`, whose IPA is `granule_ipa`.
    ///
    /// The granule is zeroed first, then decoded and validated: IPA width 32..=52 bits and a
    /// known hash algorithm. On target the granule must be protected memory with RIPAS RAM
    /// and `granule_ipa` must be where it lives.
    pub fn realm_config(&mut self, granule: &mut Granule, granule_ipa: u64) -> Result<RealmConfig> {
        let function = Function::RealmConfig;
        if !is_granule_aligned(granule_ipa) {
            return Err(Error::InvalidArgument(function));
        }
        granule.0.fill(0);
        let mut args = [0u64; ARG_REGS];
        args[0] = granule_ipa;
        let result = self.conduit.call_with_granule(function.id(), args, granule);
        Self::status(function, result[0])?;
        RealmConfig::decode(granule).map_err(Error::BadConfig)
    }

    /// RSI_IPA_STATE_GET over `[base, top)`: the RIPAS at `base` and how far it extends.
    pub fn ipa_state_get(&mut self, base: u64, top: u64) -> Result<IpaState> {
        let function = Function::IpaStateGet;
        if !is_granule_aligned(base) || !is_granule_aligned(top) || top <= base {
            return Err(Error::InvalidArgument(function));
        }
        let result = self.call(function, &[base, top]);
        Self::status(function, result[0])?;
        let [_, run_top, ripas, ..] = result;
        if run_top <= base || run_top > top || !is_granule_aligned(run_top) {
            return Err(Error::BadResponse {
                function,
                register: 1,
                value: run_top,
            });
        }
        let ripas = Ripas::try_from(ripas).map_err(|value| Error::BadResponse {
            function,
            register: 2,
            value,
        })?;
        Ok(IpaState {
            ripas,
            top: run_top,
        })
    }

    /// RSI_IPA_STATE_SET over `[base, top)`, looping until the whole range changed.
    ///
    /// Each call returns the new base; the loop goes on from there. It stops with an error on
    /// REJECT, on zero progress (a call that returns its own base: calling again would spin),
    /// or on a new base outside `(base, top]`. Each successful call advances by at least one
    /// granule, so the loop makes at most `(top - base) / 4 KiB` calls.
    pub fn ipa_state_set(
        &mut self,
        base: u64,
        top: u64,
        ripas: Ripas,
        flags: ChangeDestroyed,
    ) -> Result<StateSetReport> {
        let function = Function::IpaStateSet;
        if !is_granule_aligned(base)
            || !is_granule_aligned(top)
            || top <= base
            || ripas == Ripas::Destroyed
        {
            return Err(Error::InvalidArgument(function));
        }
        let mut current = base;
        let mut calls = 0;
        while current < top {
            let result = self.call(function, &[current, top, ripas.raw(), flags.raw()]);
            calls += 1;
            Self::status(function, result[0])?;
            let [_, new_base, response, ..] = result;
            let response = Response::try_from(response).map_err(|value| Error::BadResponse {
                function,
                register: 2,
                value,
            })?;
            if new_base < current || new_base > top || !is_granule_aligned(new_base) {
                return Err(Error::BadResponse {
                    function,
                    register: 1,
                    value: new_base,
                });
            }
            if response == Response::Reject {
                return Err(Error::Rejected { at: new_base });
            }
            if new_base == current {
                return Err(Error::ZeroProgress { at: current });
            }
            current = new_base;
        }
        Ok(StateSetReport { calls })
    }

    /// RSI_MEASUREMENT_READ of slot `index`.
    pub fn measurement_read(&mut self, index: MeasurementIndex) -> Result<Measurement> {
        let result = self.call(Function::MeasurementRead, &[index as u64]);
        Self::status(Function::MeasurementRead, result[0])?;
        let mut registers = [0u64; 8];
        registers.copy_from_slice(&result[1..9]);
        Ok(Measurement(registers_to_bytes(&registers)))
    }

    /// RSI_MEASUREMENT_EXTEND of REM `index` with `value` (at most 64 bytes).
    ///
    /// The RIM cannot be extended: [`MeasurementIndex::Rim`] is an invalid argument.
    pub fn measurement_extend(&mut self, index: MeasurementIndex, value: &[u8]) -> Result<()> {
        let function = Function::MeasurementExtend;
        if index == MeasurementIndex::Rim || value.len() > MAX_MEASUREMENT_LEN {
            return Err(Error::InvalidArgument(function));
        }
        let mut args = [0u64; 10];
        args[0] = index as u64;
        args[1] = value.len() as u64;
        args[2..].copy_from_slice(&bytes_to_registers(value));
        let result = self.call(function, &args);
        Self::status(function, result[0])
    }
}
