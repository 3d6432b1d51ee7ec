//! The line editor: turns console bytes into lines, with the echo a terminal expects.
//!
//! Printable ASCII is appended and echoed; backspace (0x7f, what terminals send, and 0x08)
//! removes the last character and echoes `\b \b`; CR or LF ends the line (CR LF and LF CR
//! count once) and echoes `\r\n`; Ctrl-C (0x03) drops the line and echoes `^C`; Ctrl-U (0x15)
//! clears it. Escape sequences (arrow keys: ESC `[` x) are swallowed. Everything else is
//! ignored. Lines are at most [`MAX_LINE`] bytes; further characters are refused with a bell.

use alloc::string::String;
use alloc::vec::Vec;

/// Longest line the editor keeps.
pub const MAX_LINE: usize = 200;

/// What one byte of input did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Nothing to do (the byte was ignored or part of an escape sequence).
    Nothing,
    /// Write these bytes back to the terminal.
    Echo(&'static [u8]),
    /// Write this character back to the terminal.
    EchoByte(u8),
    /// A line was entered (without its end); the terminal has been sent `\r\n`.
    Line(String),
    /// The line was dropped (Ctrl-C).
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// After ESC `[` (a CSI sequence, ended by a byte in 0x40..=0x7e).
    Csi,
}

/// The line being typed.
#[derive(Debug)]
pub struct LineEditor {
    line: Vec<u8>,
    /// The last byte ended a line with this byte (CR or LF), so its partner is ignored.
    ended_by: Option<u8>,
    escape: Escape,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    /// An empty line.
    pub const fn new() -> Self {
        LineEditor {
            line: Vec::new(),
            ended_by: None,
            escape: Escape::None,
        }
    }

    /// What has been typed so far.
    pub fn pending(&self) -> &[u8] {
        &self.line
    }

    /// Takes one byte of input.
    pub fn feed(&mut self, byte: u8) -> Edit {
        let ended_by = self.ended_by.take();
        match self.escape {
            Escape::Start => {
                self.escape = if byte == b'[' {
                    Escape::Csi
                } else {
                    Escape::None
                };
                return Edit::Nothing;
            }
            Escape::Csi => {
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                }
                return Edit::Nothing;
            }
            Escape::None => {}
        }
        match byte {
            b'\r' | b'\n' => {
                if ended_by.is_some_and(|previous| previous != byte) {
                    // The second half of CR LF (or LF CR): the line already ended.
                    return Edit::Nothing;
                }
                self.ended_by = Some(byte);
                let line = core::mem::take(&mut self.line);
                // Only printable ASCII is ever stored, so this is always valid UTF-8.
                Edit::Line(String::from_utf8(line).unwrap_or_default())
            }
            0x7f | 0x08 => {
                if self.line.pop().is_some() {
                    Edit::Echo(b"\x08 \x08")
                } else {
                    Edit::Nothing
                }
            }
            0x03 => {
                self.line.clear();
                Edit::Cancelled
            }
            0x15 => {
                let erase = self.line.len();
                self.line.clear();
                if erase == 0 {
                    Edit::Nothing
                } else {
                    Edit::Echo(b"\r\x1b[K")
                }
            }
            0x1b => {
                self.escape = Escape::Start;
                Edit::Nothing
            }
            b' '..=b'~' => {
                if self.line.len() >= MAX_LINE {
                    return Edit::Echo(b"\x07");
                }
                self.line.push(byte);
                Edit::EchoByte(byte)
            }
            _ => Edit::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(editor: &mut LineEditor, bytes: &[u8]) -> Vec<Edit> {
        bytes.iter().map(|byte| editor.feed(*byte)).collect()
    }

    fn lines(bytes: &[u8]) -> Vec<String> {
        let mut editor = LineEditor::new();
        feed_all(&mut editor, bytes)
            .into_iter()
            .filter_map(|edit| match edit {
                Edit::Line(line) => Some(line),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn characters_echo_and_a_line_ends_with_cr_or_lf() {
        let mut editor = LineEditor::new();
        assert_eq!(editor.feed(b'p'), Edit::EchoByte(b'p'));
        assert_eq!(editor.feed(b's'), Edit::EchoByte(b's'));
        assert_eq!(editor.pending(), b"ps");
        assert_eq!(editor.feed(b'\r'), Edit::Line("ps".into()));
        assert_eq!(editor.pending(), b"");
        assert_eq!(lines(b"ps\ndmastat\n"), ["ps", "dmastat"]);
    }

    #[test]
    fn crlf_and_lfcr_end_one_line_but_two_crs_end_two() {
        assert_eq!(lines(b"a\r\nb\n\rc\r\r"), ["a", "b", "c", ""]);
        assert_eq!(lines(b"\r\n\r\n"), ["", ""]);
    }

    #[test]
    fn both_backspaces_erase_and_never_underflow() {
        let mut editor = LineEditor::new();
        feed_all(&mut editor, b"pz");
        assert_eq!(editor.feed(0x7f), Edit::Echo(b"\x08 \x08"));
        assert_eq!(editor.feed(b's'), Edit::EchoByte(b's'));
        assert_eq!(editor.pending(), b"ps");
        assert_eq!(editor.feed(0x08), Edit::Echo(b"\x08 \x08"));
        assert_eq!(editor.feed(0x08), Edit::Echo(b"\x08 \x08"));
        assert_eq!(editor.feed(0x7f), Edit::Nothing);
        assert_eq!(lines(b"kill blx\x7fk\r"), ["kill blk"]);
    }

    #[test]
    fn ctrl_c_drops_ctrl_u_clears_and_escapes_are_swallowed() {
        let mut editor = LineEditor::new();
        feed_all(&mut editor, b"rm -rf");
        assert_eq!(editor.feed(0x03), Edit::Cancelled);
        assert_eq!(editor.pending(), b"");
        feed_all(&mut editor, b"junk");
        assert_eq!(editor.feed(0x15), Edit::Echo(b"\r\x1b[K"));
        assert_eq!(editor.pending(), b"");
        // Up arrow, then a word: only the word is kept.
        assert_eq!(lines(b"\x1b[Aps\x1bOx\r"), ["psx"]);
    }

    #[test]
    fn control_bytes_and_non_ascii_are_ignored_and_lines_are_bounded() {
        assert_eq!(lines(b"p\x00\x01\xffs\r"), ["ps"]);
        let mut editor = LineEditor::new();
        for _ in 0..MAX_LINE {
            assert_eq!(editor.feed(b'x'), Edit::EchoByte(b'x'));
        }
        assert_eq!(editor.feed(b'y'), Edit::Echo(b"\x07"));
        assert_eq!(editor.pending().len(), MAX_LINE);
    }
}
