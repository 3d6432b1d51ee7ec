//! The command parser: a line to a [`Command`], or a message saying what is wrong.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Default seconds `trace` runs when no duration is given.
pub const TRACE_DEFAULT_SECONDS: u32 = 10;
/// Longest `trace` run.
pub const TRACE_MAX_SECONDS: u32 = 3600;
/// Default bytes `rng` prints.
pub const RNG_DEFAULT_BYTES: usize = 32;
/// Most bytes `rng` prints.
pub const RNG_MAX_BYTES: usize = 1024;
/// Default MiB `blk bench` reads.
pub const BLK_BENCH_DEFAULT_MIB: u32 = 4;
/// Most MiB `blk bench` reads.
pub const BLK_BENCH_MAX_MIB: u32 = 1024;

/// The commands and their one-line help, in the order `help` lists them.
pub const HELP: &[(&str, &str)] = &[
    ("help", "this list"),
    (
        "ps",
        "every task: index, name, binary, state, instance (index.generation), generation",
    ),
    (
        "dmastat [--reset-hiwater]",
        "the DMA server's figures (SWIOTLB-style); the option restarts high-water tracking first",
    ),
    (
        "trace [SECONDS]",
        "print DMA events as they happen, until a key is pressed or SECONDS (default 10) pass",
    ),
    ("blk info", "the disk: capacity, block size, limits"),
    ("blk read SECTOR", "read a 512-byte sector and dump it"),
    (
        "blk write SECTOR TEXT",
        "fill a sector with TEXT repeated (it is written to the disk)",
    ),
    (
        "blk bench [MIB]",
        "read MIB MiB (default 4) in 64 KiB requests and print the rate",
    ),
    ("net", "the network driver's link and counters"),
    (
        "rng [BYTES]",
        "BYTES (default 32) random bytes from the entropy driver",
    ),
    (
        "kill TASK",
        "stop a task (by task or binary name); the supervisor restarts it per its policy",
    ),
    ("poweroff", "power the system off (status 0)"),
];

/// What `blk` should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkCommand {
    /// The device's description.
    Info,
    /// Dump one sector.
    Read {
        /// Sector number.
        sector: u64,
    },
    /// Fill one sector with `text` repeated.
    Write {
        /// Sector number.
        sector: u64,
        /// The pattern.
        text: String,
    },
    /// Sequential read throughput.
    Bench {
        /// MiB to read.
        mib: u32,
    },
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// An empty line: nothing to do.
    Empty,
    /// `help`.
    Help,
    /// `ps`.
    Ps,
    /// `dmastat`, `dmastat --reset-hiwater`.
    DmaStat {
        /// Reset high-water tracking first.
        reset_high_water: bool,
    },
    /// `trace [SECONDS]`.
    Trace {
        /// How long to follow events at most.
        seconds: u32,
    },
    /// `blk ...`.
    Blk(BlkCommand),
    /// `net`.
    Net,
    /// `rng [BYTES]`.
    Rng {
        /// How many bytes.
        bytes: usize,
    },
    /// `kill TASK`.
    Kill {
        /// Task or binary name.
        task: String,
    },
    /// `poweroff`.
    PowerOff,
}

/// Why a line is not a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The first word is no command.
    Unknown(String),
    /// The command's arguments are wrong; the text says how to use it.
    Usage(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Unknown(word) => {
                write!(f, "unknown command `{word}`; commands:")?;
                for (usage, _) in HELP {
                    let name = usage.split(' ').next().unwrap_or(usage);
                    // List each command name once (blk has four forms).
                    if !usage.starts_with("blk ") || usage.starts_with("blk info") {
                        write!(f, " {name}")?;
                    }
                }
                write!(f, " (`help` explains them)")
            }
            ParseError::Usage(usage) => write!(f, "usage: {usage}"),
        }
    }
}

fn number<T: core::str::FromStr>(word: &str) -> Option<T> {
    word.parse().ok()
}

/// Parses one line. Words are separated by spaces; case matters.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&first, rest)) = words.split_first() else {
        return Ok(Command::Empty);
    };
    match (first, rest) {
        ("help" | "?", []) => Ok(Command::Help),
        ("ps", []) => Ok(Command::Ps),
        ("dmastat", []) => Ok(Command::DmaStat {
            reset_high_water: false,
        }),
        ("dmastat", ["--reset-hiwater"]) => Ok(Command::DmaStat {
            reset_high_water: true,
        }),
        ("dmastat", _) => Err(ParseError::Usage("dmastat [--reset-hiwater]")),
        ("trace", []) => Ok(Command::Trace {
            seconds: TRACE_DEFAULT_SECONDS,
        }),
        ("trace", [seconds]) => number(seconds)
            .filter(|s| (1..=TRACE_MAX_SECONDS).contains(s))
            .map(|seconds| Command::Trace { seconds })
            .ok_or(ParseError::Usage("trace [SECONDS] (1 to 3600)")),
        ("trace", _) => Err(ParseError::Usage("trace [SECONDS] (1 to 3600)")),
        ("blk", ["info"]) => Ok(Command::Blk(BlkCommand::Info)),
        ("blk", ["read", sector]) => number(sector)
            .map(|sector| Command::Blk(BlkCommand::Read { sector }))
            .ok_or(ParseError::Usage("blk read SECTOR")),
        ("blk", ["write", sector, text @ ..]) if !text.is_empty() => number(sector)
            .map(|sector| {
                Command::Blk(BlkCommand::Write {
                    sector,
                    text: text.join(" "),
                })
            })
            .ok_or(ParseError::Usage("blk write SECTOR TEXT")),
        ("blk", ["bench"]) => Ok(Command::Blk(BlkCommand::Bench {
            mib: BLK_BENCH_DEFAULT_MIB,
        })),
        ("blk", ["bench", mib]) => number(mib)
            .filter(|m| (1..=BLK_BENCH_MAX_MIB).contains(m))
            .map(|mib| Command::Blk(BlkCommand::Bench { mib }))
            .ok_or(ParseError::Usage("blk bench [MIB] (1 to 1024)")),
        ("blk", _) => Err(ParseError::Usage(
            "blk info | blk read SECTOR | blk write SECTOR TEXT | blk bench [MIB]",
        )),
        ("net", []) => Ok(Command::Net),
        ("net", _) => Err(ParseError::Usage("net")),
        ("rng", []) => Ok(Command::Rng {
            bytes: RNG_DEFAULT_BYTES,
        }),
        ("rng", [bytes]) => number(bytes)
            .filter(|b| (1..=RNG_MAX_BYTES).contains(b))
            .map(|bytes| Command::Rng { bytes })
            .ok_or(ParseError::Usage("rng [BYTES] (1 to 1024)")),
        ("rng", _) => Err(ParseError::Usage("rng [BYTES] (1 to 1024)")),
        ("kill", [task]) => Ok(Command::Kill {
            task: String::from(*task),
        }),
        ("kill", _) => Err(ParseError::Usage("kill TASK")),
        ("poweroff", []) => Ok(Command::PowerOff),
        ("poweroff", _) => Err(ParseError::Usage("poweroff")),
        ("help" | "?" | "ps", _) => Err(ParseError::Usage("help | ps (no arguments)")),
        (other, _) => Err(ParseError::Unknown(String::from(other))),
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;

    use super::*;

    #[test]
    fn every_command_parses() {
        assert_eq!(parse(""), Ok(Command::Empty));
        assert_eq!(parse("   "), Ok(Command::Empty));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse(" ps "), Ok(Command::Ps));
        assert_eq!(
            parse("dmastat"),
            Ok(Command::DmaStat {
                reset_high_water: false
            })
        );
        assert_eq!(
            parse("dmastat --reset-hiwater"),
            Ok(Command::DmaStat {
                reset_high_water: true
            })
        );
        assert_eq!(parse("trace"), Ok(Command::Trace { seconds: 10 }));
        assert_eq!(parse("trace 3"), Ok(Command::Trace { seconds: 3 }));
        assert_eq!(parse("blk info"), Ok(Command::Blk(BlkCommand::Info)));
        assert_eq!(
            parse("blk read 7"),
            Ok(Command::Blk(BlkCommand::Read { sector: 7 }))
        );
        assert_eq!(
            parse("blk write 9 hello  world"),
            Ok(Command::Blk(BlkCommand::Write {
                sector: 9,
                text: "hello world".into()
            }))
        );
        assert_eq!(
            parse("blk bench"),
            Ok(Command::Blk(BlkCommand::Bench { mib: 4 }))
        );
        assert_eq!(
            parse("blk bench 16"),
            Ok(Command::Blk(BlkCommand::Bench { mib: 16 }))
        );
        assert_eq!(parse("net"), Ok(Command::Net));
        assert_eq!(parse("rng"), Ok(Command::Rng { bytes: 32 }));
        assert_eq!(parse("rng 8"), Ok(Command::Rng { bytes: 8 }));
        assert_eq!(
            parse("kill virtio-blk"),
            Ok(Command::Kill {
                task: "virtio-blk".into()
            })
        );
        assert_eq!(parse("poweroff"), Ok(Command::PowerOff));
    }

    #[test]
    fn bad_arguments_say_how_to_use_the_command() {
        for (line, usage) in [
            ("dmastat --reset", "dmastat [--reset-hiwater]"),
            ("trace 0", "trace [SECONDS]"),
            ("trace soon", "trace [SECONDS]"),
            ("trace 99999", "trace [SECONDS]"),
            ("blk", "blk info |"),
            ("blk read", "blk info |"),
            ("blk read -1", "blk read SECTOR"),
            ("blk write 1", "blk info |"),
            ("blk write x y", "blk write SECTOR TEXT"),
            ("blk bench 0", "blk bench [MIB]"),
            ("rng 0", "rng [BYTES]"),
            ("rng 5000", "rng [BYTES]"),
            ("kill", "kill TASK"),
            ("kill a b", "kill TASK"),
            ("poweroff now", "poweroff"),
            ("ps -a", "help | ps"),
            ("net up", "net"),
        ] {
            match parse(line) {
                Err(error @ ParseError::Usage(_)) => {
                    let text = format!("{error}");
                    assert!(
                        text.starts_with("usage: ") && text.contains(usage),
                        "{line}: {text}"
                    );
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_commands_list_the_commands() {
        let error = parse("reboot now").expect_err("unknown");
        assert_eq!(error, ParseError::Unknown("reboot".into()));
        let text = format!("{error}");
        assert_eq!(
            text,
            "unknown command `reboot`; commands: help ps dmastat trace blk net rng kill \
             poweroff (`help` explains them)"
        );
        // Case matters.
        assert!(matches!(parse("PS"), Err(ParseError::Unknown(_))));
    }
}
