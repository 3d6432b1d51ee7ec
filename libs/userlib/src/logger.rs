//! A `log` backend that writes each record as one console line, prefixed with the task's name.
//!
//! Format: `name: message` for `Info`, `name: LEVEL: message` for the other levels. A record is
//! formatted into a fixed line buffer and written with one `ConsoleWrite`, so lines from
//! different tasks do not interleave; a record longer than the buffer is written in pieces.

use core::fmt::{self, Write};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::syscalls::Syscalls;

/// Bytes formatted before a console write.
pub const LINE_BUFFER: usize = 256;

/// Formats text into a fixed buffer and writes it to the console when full or flushed.
pub struct ConsoleWriter<'a, S: Syscalls + ?Sized> {
    syscalls: &'a S,
    buffer: [u8; LINE_BUFFER],
    length: usize,
}

impl<'a, S: Syscalls + ?Sized> ConsoleWriter<'a, S> {
    /// An empty writer on `syscalls`' console.
    pub fn new(syscalls: &'a S) -> Self {
        ConsoleWriter {
            syscalls,
            buffer: [0; LINE_BUFFER],
            length: 0,
        }
    }

    /// Writes out what is buffered. Console errors are dropped: there is nowhere to report
    /// them.
    pub fn flush(&mut self) {
        let mut pending = &self.buffer[..self.length];
        while !pending.is_empty() {
            match self.syscalls.console_write(pending) {
                Ok(written) if written > 0 => pending = &pending[written.min(pending.len())..],
                _ => break,
            }
        }
        self.length = 0;
    }
}

impl<S: Syscalls + ?Sized> Write for ConsoleWriter<'_, S> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut bytes = text.as_bytes();
        while !bytes.is_empty() {
            if self.length == LINE_BUFFER {
                self.flush();
            }
            let room = LINE_BUFFER - self.length;
            let take = room.min(bytes.len());
            self.buffer[self.length..self.length + take].copy_from_slice(&bytes[..take]);
            self.length += take;
            bytes = &bytes[take..];
        }
        Ok(())
    }
}

/// Writes one log line for `name` at `level` to the console.
pub fn write_line<S: Syscalls + ?Sized>(
    syscalls: &S,
    name: &str,
    level: Level,
    arguments: fmt::Arguments<'_>,
) {
    let mut writer = ConsoleWriter::new(syscalls);
    // Formatting into ConsoleWriter cannot fail; a Display impl that fails just ends the line.
    let _ = if level == Level::Info {
        write!(writer, "{name}: {arguments}")
    } else {
        write!(writer, "{name}: {level}: {arguments}")
    };
    let _ = writer.write_str("\n");
    writer.flush();
}

/// The `log` backend: records go to the console of `S`, named after the task.
pub struct ConsoleLogger<S> {
    syscalls: S,
}

impl<S> ConsoleLogger<S> {
    /// A logger writing through `syscalls`.
    pub const fn new(syscalls: S) -> Self {
        ConsoleLogger { syscalls }
    }
}

impl<S: Syscalls + Send + Sync> Log for ConsoleLogger<S> {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        write_line(
            &self.syscalls,
            crate::task::name(),
            record.level(),
            *record.args(),
        );
    }

    fn flush(&self) {}
}

/// Installs `logger` as the `log` backend with `level` as the maximum level. Returns false if
/// a backend was already installed.
pub fn install<S: Syscalls + Send + Sync>(
    logger: &'static ConsoleLogger<S>,
    level: LevelFilter,
) -> bool {
    let installed = log::set_logger(logger).is_ok();
    if installed {
        log::set_max_level(level);
    }
    installed
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::cell::RefCell;
    use std::vec::Vec;

    use moat_abi::Syscall;

    use super::*;

    /// Captures console writes; writes at most `chunk` bytes per call.
    struct Console {
        output: RefCell<Vec<Vec<u8>>>,
        chunk: usize,
    }

    impl Syscalls for Console {
        unsafe fn syscall(&self, number: Syscall, args: [u64; 6]) -> [u64; 4] {
            assert_eq!(number, Syscall::ConsoleWrite);
            let length = (args[1] as usize).min(self.chunk);
            // SAFETY: `console_write` passes a borrowed slice of at least args[1] bytes.
            let bytes = unsafe { core::slice::from_raw_parts(args[0] as *const u8, length) };
            self.output.borrow_mut().push(bytes.to_vec());
            [0, length as u64, 0, 0]
        }
    }

    #[test]
    fn lines_are_prefixed_and_written_at_once() {
        let console = Console {
            output: RefCell::new(Vec::new()),
            chunk: usize::MAX,
        };
        write_line(&console, "hello", Level::Info, format_args!("x = {}", 42));
        write_line(&console, "hello", Level::Warn, format_args!("careful"));
        let output = console.output.borrow();
        assert_eq!(output.len(), 2);
        assert_eq!(output[0], b"hello: x = 42\n");
        assert_eq!(output[1], b"hello: WARN: careful\n");
    }

    #[test]
    fn long_and_partial_writes_lose_nothing() {
        let console = Console {
            output: RefCell::new(Vec::new()),
            chunk: 100,
        };
        let long = "y".repeat(600);
        write_line(&console, "t", Level::Error, format_args!("{long}"));
        let all: Vec<u8> = console.output.borrow().concat();
        let expected = std::format!("t: ERROR: {long}\n");
        assert_eq!(all, expected.as_bytes());
    }
}
