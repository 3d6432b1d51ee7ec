//! RSI 1.0 numbers: function ids, status codes, RIPAS values, flags, responses and versions.
//!
//! Every value here is what crosses the SMC boundary in a register. Decoding from a raw
//! register never panics: an unknown value is an `Err` carrying the raw value back.

/// Size of a granule, the unit the RMM tracks memory in (RMM 1.0 supports 4 KiB only).
pub const GRANULE_SIZE: u64 = 4096;

/// SMCCC "NOT_SUPPORTED" (-1), as it appears in X0 after an SMC64 call nobody implements.
///
/// A Realm guest sees this from RSI_VERSION when there is no RMM behind the conduit, that is
/// when it is not running in a Realm.
pub const SMCCC_NOT_SUPPORTED: u64 = u64::MAX;

/// The 32-bit form of SMCCC NOT_SUPPORTED (-1 in W0 with the upper half of X0 clear).
///
/// SMCCC asks for the sign-extended value in X0, but some firmware writes only W0; both forms
/// mean the same and no RSI status comes anywhere near them.
pub const SMCCC_NOT_SUPPORTED_32: u64 = 0xFFFF_FFFF;

/// Returns true if `x0` is SMCCC NOT_SUPPORTED in either its 64-bit or its 32-bit form.
pub const fn is_smccc_not_supported(x0: u64) -> bool {
    x0 == SMCCC_NOT_SUPPORTED || x0 == SMCCC_NOT_SUPPORTED_32
}

/// The RSI commands of RMM 1.0: SMC64 fast calls in the standard secure service range,
/// `0xC400_0000 | 0x190 + n`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Function {
    /// RSI_VERSION: negotiate the interface revision.
    Version = 0xC400_0190,
    /// RSI_FEATURES: read a feature register.
    Features = 0xC400_0191,
    /// RSI_MEASUREMENT_READ: read the RIM or one of the REMs.
    MeasurementRead = 0xC400_0192,
    /// RSI_MEASUREMENT_EXTEND: extend one of the REMs.
    MeasurementExtend = 0xC400_0193,
    /// RSI_ATTESTATION_TOKEN_INIT: start building an attestation token.
    AttestationTokenInit = 0xC400_0194,
    /// RSI_ATTESTATION_TOKEN_CONTINUE: continue building an attestation token.
    AttestationTokenContinue = 0xC400_0195,
    /// RSI_REALM_CONFIG: have the RMM write the Realm configuration into a granule.
    RealmConfig = 0xC400_0196,
    /// RSI_IPA_STATE_SET: ask for the RIPAS of an IPA range to change.
    IpaStateSet = 0xC400_0197,
    /// RSI_IPA_STATE_GET: read the RIPAS of (the start of) an IPA range.
    IpaStateGet = 0xC400_0198,
    /// RSI_HOST_CALL: make a call to the host.
    HostCall = 0xC400_0199,
}

impl Function {
    /// All RSI 1.0 functions, in id order.
    pub const ALL: [Function; 10] = [
        Function::Version,
        Function::Features,
        Function::MeasurementRead,
        Function::MeasurementExtend,
        Function::AttestationTokenInit,
        Function::AttestationTokenContinue,
        Function::RealmConfig,
        Function::IpaStateSet,
        Function::IpaStateGet,
        Function::HostCall,
    ];

    /// The SMC function id (the value in W0).
    pub const fn id(self) -> u32 {
        self as u32
    }
}

impl TryFrom<u32> for Function {
    type Error = u32;

    fn try_from(id: u32) -> Result<Self, u32> {
        Function::ALL
            .iter()
            .copied()
            .find(|function| function.id() == id)
            .ok_or(id)
    }
}

/// RSI command return codes (RsiCommandReturnCode) defined by RMM 1.0.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Status {
    /// The command completed successfully.
    Success = 0,
    /// The value of an input caused the command to fail.
    ErrorInput = 1,
    /// The state of the Realm or REC does not match what the command expects.
    ErrorState = 2,
    /// The operation is not complete (attestation token calls).
    Incomplete = 3,
    /// The operation failed for an unknown reason.
    ErrorUnknown = 4,
}

impl TryFrom<u64> for Status {
    type Error = u64;

    fn try_from(raw: u64) -> Result<Self, u64> {
        match raw {
            0 => Ok(Status::Success),
            1 => Ok(Status::ErrorInput),
            2 => Ok(Status::ErrorState),
            3 => Ok(Status::Incomplete),
            4 => Ok(Status::ErrorUnknown),
            other => Err(other),
        }
    }
}

/// Realm IPA state (RIPAS) of a protected granule, as RMM 1.0 defines it.
///
/// RMM 1.1 adds DEV (3); an RMM that reports it to a 1.0 guest is answering outside the
/// interface this crate negotiated, so decoding 3 fails.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Ripas {
    /// Not usable by the Realm as private memory; the unprotected alias may be used instead.
    Empty = 0,
    /// Private Realm memory.
    Ram = 1,
    /// The host destroyed the granule's contents; the Realm must not trust or use it.
    Destroyed = 2,
}

impl Ripas {
    /// The raw value as it appears in a register.
    pub const fn raw(self) -> u64 {
        self as u64
    }
}

impl TryFrom<u64> for Ripas {
    type Error = u64;

    fn try_from(raw: u64) -> Result<Self, u64> {
        match raw {
            0 => Ok(Ripas::Empty),
            1 => Ok(Ripas::Ram),
            2 => Ok(Ripas::Destroyed),
            other => Err(other),
        }
    }
}

/// The `flags` argument of RSI_IPA_STATE_SET (RsiRipasChangeDestroyed in bit 0).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum ChangeDestroyed {
    /// A granule whose RIPAS is DESTROYED stops the change: it keeps DESTROYED.
    NoChangeDestroyed = 0,
    /// A granule whose RIPAS is DESTROYED may change to the target RIPAS.
    ChangeDestroyed = 1,
}

impl ChangeDestroyed {
    /// Decodes the flags register; only bit 0 carries meaning in RMM 1.0.
    pub const fn from_flags(flags: u64) -> Self {
        if flags & 1 == 1 {
            ChangeDestroyed::ChangeDestroyed
        } else {
            ChangeDestroyed::NoChangeDestroyed
        }
    }

    /// The raw flags value.
    pub const fn raw(self) -> u64 {
        self as u64
    }
}

/// The host's answer to a RIPAS change request (RsiResponse).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Response {
    /// The host accepted (possibly only part of) the request.
    Accept = 0,
    /// The host refused the request.
    Reject = 1,
}

impl TryFrom<u64> for Response {
    type Error = u64;

    fn try_from(raw: u64) -> Result<Self, u64> {
        match raw {
            0 => Ok(Response::Accept),
            1 => Ok(Response::Reject),
            other => Err(other),
        }
    }
}

/// The hash algorithm of the Realm's measurements (RsiHashAlgorithm).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HashAlgorithm {
    /// SHA-256: 32-byte measurements.
    Sha256 = 0,
    /// SHA-512: 64-byte measurements.
    Sha512 = 1,
}

impl HashAlgorithm {
    /// Number of meaningful bytes in a measurement made with this algorithm.
    pub const fn digest_len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

impl TryFrom<u8> for HashAlgorithm {
    type Error = u8;

    fn try_from(raw: u8) -> Result<Self, u8> {
        match raw {
            0 => Ok(HashAlgorithm::Sha256),
            1 => Ok(HashAlgorithm::Sha512),
            other => Err(other),
        }
    }
}

/// An RSI interface revision (RsiInterfaceVersion): `major << 16 | minor`.
///
/// Bits 15:0 hold the minor revision, bits 30:16 the major revision; bit 31 and above are
/// reserved and must be zero.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major revision (15 bits).
    pub major: u16,
    /// Minor revision.
    pub minor: u16,
}

impl Version {
    /// RSI 1.0, the revision this crate implements.
    pub const V1_0: Version = Version::new(1, 0);

    /// Builds a version. `major` must fit in 15 bits; higher bits are dropped when encoding.
    pub const fn new(major: u16, minor: u16) -> Self {
        Version { major, minor }
    }

    /// The register encoding.
    pub const fn encode(self) -> u64 {
        (((self.major & 0x7FFF) as u64) << 16) | self.minor as u64
    }

    /// Decodes a register, refusing values with reserved bits set.
    pub const fn decode(raw: u64) -> Option<Version> {
        if raw >> 31 != 0 {
            return None;
        }
        Some(Version {
            major: (raw >> 16) as u16,
            minor: raw as u16,
        })
    }
}

impl core::fmt::Display for Version {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "{}.{}", self.major, self.minor)
    }
}

/// Number of argument registers a [`Conduit`](crate::Conduit) passes: X1..X10.
///
/// MEASUREMENT_EXTEND is the widest RSI 1.0 call (index, size and eight value registers).
pub const ARG_REGS: usize = 10;

/// Number of result registers a [`Conduit`](crate::Conduit) returns: X0..X8.
///
/// MEASUREMENT_READ is the widest RSI 1.0 result (status and eight value registers).
pub const RESULT_REGS: usize = 9;

/// Largest measurement (and extend value) in bytes: a SHA-512 digest.
pub const MAX_MEASUREMENT_LEN: usize = 64;

/// Number of measurement slots: the RIM (0) and four REMs (1..=4).
pub const MEASUREMENT_SLOTS: usize = 5;

/// Packs up to 64 bytes into eight registers, little-endian, as the RMM lays measurement
/// values out in X1..X8 (read) or X3..X10 (extend). Missing bytes are zero.
pub fn bytes_to_registers(bytes: &[u8]) -> [u64; 8] {
    let mut padded = [0u8; MAX_MEASUREMENT_LEN];
    let len = bytes.len().min(MAX_MEASUREMENT_LEN);
    padded[..len].copy_from_slice(&bytes[..len]);
    let mut registers = [0u64; 8];
    for (register, chunk) in registers.iter_mut().zip(padded.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        *register = u64::from_le_bytes(word);
    }
    registers
}

/// Unpacks eight registers into 64 bytes, the inverse of [`bytes_to_registers`].
pub fn registers_to_bytes(registers: &[u64; 8]) -> [u8; MAX_MEASUREMENT_LEN] {
    let mut bytes = [0u8; MAX_MEASUREMENT_LEN];
    for (chunk, register) in bytes.chunks_exact_mut(8).zip(registers.iter()) {
        chunk.copy_from_slice(&register.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ids_are_the_spec_values() {
        for (offset, function) in Function::ALL.iter().enumerate() {
            assert_eq!(function.id(), 0xC400_0190 + offset as u32);
            assert_eq!(Function::try_from(function.id()), Ok(*function));
        }
        assert_eq!(Function::try_from(0xC400_019A), Err(0xC400_019A));
    }

    #[test]
    fn status_ripas_response_decode() {
        assert_eq!(Status::try_from(0), Ok(Status::Success));
        assert_eq!(Status::try_from(4), Ok(Status::ErrorUnknown));
        assert_eq!(Status::try_from(5), Err(5));
        assert_eq!(Ripas::try_from(2), Ok(Ripas::Destroyed));
        // DEV exists only from RMM 1.1.
        assert_eq!(Ripas::try_from(3), Err(3));
        assert_eq!(Response::try_from(1), Ok(Response::Reject));
        assert_eq!(Response::try_from(2), Err(2));
        assert_eq!(HashAlgorithm::try_from(1), Ok(HashAlgorithm::Sha512));
        assert_eq!(HashAlgorithm::try_from(2), Err(2));
        assert_eq!(
            ChangeDestroyed::from_flags(1),
            ChangeDestroyed::ChangeDestroyed
        );
        assert_eq!(
            ChangeDestroyed::from_flags(0),
            ChangeDestroyed::NoChangeDestroyed
        );
    }

    #[test]
    fn version_encoding() {
        assert_eq!(Version::V1_0.encode(), 0x1_0000);
        assert_eq!(Version::new(1, 1).encode(), 0x1_0001);
        assert_eq!(Version::decode(0x2_0003), Some(Version::new(2, 3)));
        assert_eq!(Version::decode(1 << 31), None);
        assert_eq!(Version::decode(SMCCC_NOT_SUPPORTED), None);
        assert!(Version::new(1, 0) < Version::new(1, 1));
        assert!(Version::new(0, 9) < Version::new(1, 0));
    }

    #[test]
    fn register_packing() {
        let registers = bytes_to_registers(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(registers[0], 0x0807_0605_0403_0201);
        assert_eq!(registers[1], 9);
        assert_eq!(&registers[2..], &[0; 6]);
        let bytes = registers_to_bytes(&registers);
        assert_eq!(&bytes[..9], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(bytes[9..].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn not_supported_forms() {
        assert!(is_smccc_not_supported(u64::MAX));
        assert!(is_smccc_not_supported(0xFFFF_FFFF));
        assert!(!is_smccc_not_supported(0));
        assert!(!is_smccc_not_supported(1));
    }
}
