//! The kernel command line (`/chosen/bootargs`): `key` and `key=value` words.
//!
//! Unknown keys and bad values are collected as warnings for the boot log rather than being
//! ignored silently. The command line comes from the host; nothing here trusts it.

use heapless::Vec;

/// A test hook: a deliberate kernel fault used by the QEMU tests to check the fault path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultHook {
    /// Load from an unmapped kernel address.
    DataAbort,
    /// Execute a permanently undefined instruction.
    Undefined,
    /// Call `panic!`.
    Panic,
    /// Recurse until the boot stack runs into its guard page.
    StackOverflow,
    /// Write to kernel text, which is mapped read-only.
    WriteText,
    /// In a Realm: read a protected IPA whose RIPAS is EMPTY (the RMM refuses the access and
    /// injects a synchronous external abort).
    EmptyIpa,
}

impl FaultHook {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "data-abort" => Self::DataAbort,
            "undef" => Self::Undefined,
            "panic" => Self::Panic,
            "stack-overflow" => Self::StackOverflow,
            "write-text" => Self::WriteText,
            "empty-ipa" => Self::EmptyIpa,
            _ => return None,
        })
    }
}

/// Which address a device is given for a shared buffer in a Realm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaAddressForm {
    /// `pa | shared bit`, as real Realm VMMs expect (Linux >= 6.13 does the same).
    Alias,
    /// `pa`: realm-sim's devices are QEMU's own and see guest-physical addresses.
    Canonical,
}

/// How much the kernel logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The normal boot log.
    #[default]
    Info,
    /// Everything.
    Debug,
}

/// A problem found on the command line, reported in the boot log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning<'a> {
    /// A key the kernel does not know.
    UnknownKey(&'a str),
    /// A known key with a value it cannot take.
    BadValue {
        /// The key.
        key: &'a str,
        /// The value given.
        value: &'a str,
    },
    /// More words than the kernel keeps warnings for; the rest were not examined.
    TooManyWarnings,
}

impl core::fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownKey(key) => write!(f, "unknown key `{key}` ignored"),
            Self::BadValue { key, value } => write!(f, "bad value `{value}` for `{key}` ignored"),
            Self::TooManyWarnings => write!(f, "too many problems; the rest are not listed"),
        }
    }
}

/// Maximum number of warnings kept.
pub const MAX_WARNINGS: usize = 8;

/// The parsed command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandLine<'a> {
    /// `semihosting`: the runner enabled Arm semihosting, so the kernel may end through
    /// SYS_EXIT with a status (PSCI SYSTEM_OFF has no failure status).
    pub semihosting: bool,
    /// `fault=KIND`: a test hook.
    pub fault: Option<FaultHook>,
    /// `loglevel=error|warn|info|debug`.
    pub log_level: LogLevel,
    /// `ticks=N`: timer ticks to wait for before the boot self-check ends (default 5).
    pub ticks: Option<u32>,
    /// `dma-address=alias|canonical`: the DMA address form in a Realm (default alias).
    pub dma_address: Option<DmaAddressForm>,
    /// Problems found, in order.
    pub warnings: Vec<Warning<'a>, MAX_WARNINGS>,
}

impl<'a> CommandLine<'a> {
    /// Parses whitespace-separated words.
    pub fn parse(line: &'a str) -> Self {
        let mut out = CommandLine::default();
        for word in line.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            let problem = match (key, value) {
                ("semihosting", None) => {
                    out.semihosting = true;
                    None
                }
                ("fault", Some(v)) => match FaultHook::parse(v) {
                    Some(hook) => {
                        out.fault = Some(hook);
                        None
                    }
                    None => Some(Warning::BadValue { key, value: v }),
                },
                ("loglevel", Some(v)) => {
                    let level = match v {
                        "error" => Some(LogLevel::Error),
                        "warn" => Some(LogLevel::Warn),
                        "info" => Some(LogLevel::Info),
                        "debug" => Some(LogLevel::Debug),
                        _ => None,
                    };
                    match level {
                        Some(level) => {
                            out.log_level = level;
                            None
                        }
                        None => Some(Warning::BadValue { key, value: v }),
                    }
                }
                ("ticks", Some(v)) => match v.parse::<u32>() {
                    Ok(n) if n > 0 && n <= 100_000 => {
                        out.ticks = Some(n);
                        None
                    }
                    _ => Some(Warning::BadValue { key, value: v }),
                },
                ("dma-address", Some(v)) => match v {
                    "alias" => {
                        out.dma_address = Some(DmaAddressForm::Alias);
                        None
                    }
                    "canonical" => {
                        out.dma_address = Some(DmaAddressForm::Canonical);
                        None
                    }
                    _ => Some(Warning::BadValue { key, value: v }),
                },
                ("semihosting", Some(v)) => Some(Warning::BadValue { key, value: v }),
                ("fault" | "loglevel" | "ticks" | "dma-address", None) => {
                    Some(Warning::BadValue { key, value: "" })
                }
                _ => Some(Warning::UnknownKey(key)),
            };
            if let Some(problem) = problem {
                if out.warnings.len() + 1 == MAX_WARNINGS {
                    let _ = out.warnings.push(Warning::TooManyWarnings);
                    break;
                }
                let _ = out.warnings.push(problem);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys() {
        let c = CommandLine::parse(
            "  semihosting fault=data-abort loglevel=debug ticks=3 dma-address=canonical ",
        );
        assert_eq!(c.dma_address, Some(DmaAddressForm::Canonical));
        assert!(c.semihosting);
        assert_eq!(c.fault, Some(FaultHook::DataAbort));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.ticks, Some(3));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn problems_are_reported() {
        let c = CommandLine::parse("console=ttyAMA0 fault=sideways ticks=0 semihosting=yes fault");
        assert_eq!(
            c.warnings.as_slice(),
            &[
                Warning::UnknownKey("console"),
                Warning::BadValue {
                    key: "fault",
                    value: "sideways"
                },
                Warning::BadValue {
                    key: "ticks",
                    value: "0"
                },
                Warning::BadValue {
                    key: "semihosting",
                    value: "yes"
                },
                Warning::BadValue {
                    key: "fault",
                    value: ""
                },
            ]
        );
        assert_eq!(c.fault, None);
        assert!(!c.semihosting);
    }

    #[test]
    fn warning_list_is_bounded() {
        let c = CommandLine::parse("a b c d e f g h i j k l");
        assert_eq!(c.warnings.len(), MAX_WARNINGS);
        assert_eq!(c.warnings.last(), Some(&Warning::TooManyWarnings));
    }

    #[test]
    fn empty() {
        assert_eq!(CommandLine::parse(""), CommandLine::default());
    }
}
