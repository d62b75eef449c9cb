//! The bytes of a device file as UTF-8 text (DOMAIN.md "Upload files": UTF-8, or UTF-16
//! with a byte-order mark, converted; any other encoding refused with the line and byte
//! at fault unless named with `--encoding`).
//!
//! [`Decoded`] is a streaming [`Read`] adaptor over `encoding_rs`'s decoder: it never
//! holds more than two fixed buffers, so a file of any size reads in flat memory. The
//! decoder runs *without replacement*, because a byte that is not valid in the file's
//! encoding must stop the upload with its position, never become a `�` inside a device
//! ID. It also turns every line end (CRLF, CR, LF) into LF: the CSV reader counts lines
//! by LF only, and the line numbers of messages must match what an editor shows for
//! files with CR-only line ends (old Mac Excel) too.

use std::fmt;
use std::io::{self, Read};

use encoding_rs::{Decoder, DecoderResult, Encoding, UTF_8};

/// Bytes read from the file at a time (and the size of the decoded buffer).
const CHUNK: usize = 64 * 1024;
/// Consumed bytes remembered for a fault's message: a malformed sequence and the bytes
/// consumed after it are at most 6 (`encoding_rs::DecoderResult::Malformed`).
const RECENT: usize = 8;

/// Why a file cannot be read as text, with where, for a person to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fault {}

impl Fault {
    fn io(message: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, Fault { message })
    }

    /// The fault an I/O error carries, if it is one.
    pub fn of(err: &io::Error) -> Option<&Fault> {
        err.get_ref().and_then(|e| e.downcast_ref::<Fault>())
    }
}

/// The advice for a file that is not in the encoding it was read as.
const ENCODING_ADVICE: &str = "save the file as UTF-8 (in Excel: \"CSV UTF-8\"), or name its \
                               encoding with --encoding (e.g. --encoding windows-1252)";

/// Files people pick by mistake, recognised by their first bytes, with the fix.
fn not_a_text_file(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"PK\x03\x04") {
        Some(
            "this is an Excel workbook (.xlsx) or another zip file, not CSV: in Excel, \
             File > Save As > \"CSV UTF-8 (Comma delimited)\"",
        )
    } else if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        Some(
            "this is an old Excel workbook (.xls), not CSV: in Excel, \
             File > Save As > \"CSV UTF-8 (Comma delimited)\"",
        )
    } else {
        None
    }
}

/// UTF-16 without a byte-order mark: ASCII text with a zero byte beside every character.
/// As UTF-8 it would be valid (NUL is a character) and every ID would hold NULs, so it is
/// refused with the option that reads it.
fn bomless_utf16(head: &[u8]) -> Option<&'static str> {
    match head {
        [a, 0, b, 0, ..] if *a != 0 && *b != 0 => Some("utf-16le"),
        [0, a, 0, b, ..] if *a != 0 && *b != 0 => Some("utf-16be"),
        _ => None,
    }
}

/// A file's bytes decoded to UTF-8, with every line end written as LF.
pub struct Decoded<R> {
    inner: R,
    decoder: Decoder,
    /// The encoding read, as people name it (for messages).
    encoding: &'static Encoding,
    /// Whether the user named the encoding (the advice differs).
    named: bool,
    input: Box<[u8]>,
    in_pos: usize,
    in_len: usize,
    eof: bool,
    output: Box<[u8]>,
    out_pos: usize,
    out_len: usize,
    /// File bytes the decoder has consumed, the byte-order mark included.
    consumed: u64,
    /// The last bytes consumed, which hold any malformed sequence when the decoder
    /// reports one (it may have begun in an earlier buffer).
    recent: Vec<u8>,
    /// LFs written so far: the line being decoded is `lines + 1`.
    lines: u64,
    /// The last byte decoded was a CR (a following LF belongs to it).
    after_cr: bool,
    finished: bool,
}

impl<R> fmt::Debug for Decoded<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoded")
            .field("encoding", &self.encoding.name())
            .field("consumed", &self.consumed)
            .finish()
    }
}

impl<R: Read> Decoded<R> {
    /// Starts reading `inner` as `named` (or UTF-8 when `None`); a byte-order mark at the
    /// start wins over either, as it does in every program that reads text.
    ///
    /// # Errors
    /// When the file cannot be read, or its first bytes show it is not text in the
    /// encoding it would be read as (a workbook, UTF-16 without a byte-order mark).
    pub fn new(mut inner: R, named: Option<&'static Encoding>) -> io::Result<Self> {
        let mut input = vec![0u8; CHUNK].into_boxed_slice();
        // Enough bytes to see a byte-order mark and a workbook's signature.
        let mut len = 0;
        let mut eof = false;
        while len < 8 {
            let n = inner.read(&mut input[len..])?;
            if n == 0 {
                eof = true;
                break;
            }
            len += n;
        }
        let head = &input[..len];
        let bom = Encoding::for_bom(head).map(|(encoding, _)| encoding);
        if bom.is_none() && named.is_none() {
            if let Some(advice) = not_a_text_file(head) {
                return Err(Fault::io(advice.to_owned()));
            }
            if let Some(label) = bomless_utf16(head) {
                return Err(Fault::io(format!(
                    "line 1, byte offset 0: this looks like UTF-16 without a byte-order mark \
                     (a zero byte beside every character); read it with --encoding {label}, \
                     or save the file as UTF-8"
                )));
            }
        }
        let encoding = bom.or(named).unwrap_or(UTF_8);
        Ok(Self {
            inner,
            decoder: encoding.new_decoder_with_bom_removal(),
            encoding,
            named: named.is_some() && bom.is_none(),
            input,
            in_pos: 0,
            in_len: len,
            eof,
            output: vec![0u8; CHUNK].into_boxed_slice(),
            out_pos: 0,
            out_len: 0,
            consumed: 0,
            recent: Vec::with_capacity(2 * RECENT),
            lines: 0,
            after_cr: false,
            finished: false,
        })
    }

    /// The encoding the file is read as (after its byte-order mark, if any).
    pub fn encoding(&self) -> &'static Encoding {
        self.encoding
    }

    /// Rewrites the decoded bytes in `output[..written]` so every line end is one LF,
    /// counting lines; returns the new length.
    fn normalise_line_ends(&mut self, written: usize) -> usize {
        let mut kept = 0;
        for i in 0..written {
            let byte = self.output[i];
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                // The LF of a CRLF: its CR already ended the line.
                b'\n' if after_cr => continue,
                b'\r' | b'\n' => {
                    self.output[kept] = b'\n';
                    self.lines += 1;
                }
                _ => self.output[kept] = byte,
            }
            kept += 1;
        }
        kept
    }

    /// Remembers the last [`RECENT`] bytes consumed.
    fn remember(&mut self, consumed: std::ops::Range<usize>) {
        let bytes = &self.input[consumed];
        let keep = bytes.len().min(RECENT);
        self.recent.extend_from_slice(&bytes[bytes.len() - keep..]);
        if self.recent.len() > RECENT {
            self.recent.drain(..self.recent.len() - RECENT);
        }
    }

    /// The fault for a malformed sequence of `bad` bytes followed by `after` consumed
    /// ones.
    fn malformed(&self, bad: u8, after: u8) -> io::Error {
        let (bad, after) = (usize::from(bad), usize::from(after));
        let offset = self.consumed - (bad + after) as u64;
        let end = self.recent.len().saturating_sub(after);
        let bytes: Vec<String> = self.recent[end.saturating_sub(bad)..end]
            .iter()
            .map(|b| format!("0x{b:02X}"))
            .collect();
        let shown = format!(" ({})", bytes.join(" "));
        let line = self.lines + 1;
        let name = self.encoding.name();
        let message = if self.named {
            format!(
                "line {line}, byte offset {offset}: the file is not valid {name}{shown}; \
                 name the file's real encoding with --encoding, or save it as UTF-8"
            )
        } else if self.encoding == UTF_8 {
            format!(
                "line {line}, byte offset {offset}: the file is not UTF-8{shown}, it is in \
                 another encoding; {ENCODING_ADVICE}"
            )
        } else {
            format!(
                "line {line}, byte offset {offset}: the file starts with a {name} byte-order \
                 mark but is not valid {name}{shown}; save it again as UTF-8"
            )
        };
        Fault::io(message)
    }

    /// Decodes the next piece into `output`. Returns false at the end of the file.
    fn fill(&mut self) -> io::Result<bool> {
        loop {
            if self.finished {
                return Ok(false);
            }
            if self.in_pos == self.in_len && !self.eof {
                let n = self.inner.read(&mut self.input)?;
                self.in_pos = 0;
                self.in_len = n;
                self.eof = n == 0;
            }
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(
                &self.input[self.in_pos..self.in_len],
                &mut self.output,
                self.eof,
            );
            self.remember(self.in_pos..self.in_pos + read);
            self.in_pos += read;
            self.consumed += read as u64;
            let len = self.normalise_line_ends(written);
            self.out_pos = 0;
            self.out_len = len;
            match result {
                DecoderResult::InputEmpty if self.eof => self.finished = true,
                DecoderResult::InputEmpty | DecoderResult::OutputFull => {}
                DecoderResult::Malformed(bad, after) => {
                    return Err(self.malformed(bad, after));
                }
            }
            if len > 0 {
                return Ok(true);
            }
        }
    }
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.out_pos == self.out_len && !self.fill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.out_len - self.out_pos);
        buf[..n].copy_from_slice(&self.output[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// The encoding a label names (`windows-1252`, `latin1`, `utf-16le`, `shift_jis`, any
/// WHATWG label `encoding_rs` knows).
///
/// # Errors
/// A message naming a few labels when `label` is none.
pub fn encoding_for_label(label: &str) -> Result<&'static Encoding, String> {
    Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
        format!(
            "{label:?} is not an encoding this client knows; try utf-8, windows-1252 \
             (Western European Excel), iso-8859-2, utf-16le, utf-16be, shift_jis or gbk"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_file::tests::utf16;

    /// Reads `bytes` in pieces of `step` bytes, as a slow file would deliver them.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn decode(bytes: &[u8], named: Option<&'static Encoding>) -> Result<String, String> {
        let mut all = Vec::new();
        for step in [1, 3, CHUNK] {
            let reader = Decoded::new(Trickle { bytes, step }, named).map_err(|e| e.to_string());
            let mut out = String::new();
            let result = reader
                .and_then(|mut r| r.read_to_string(&mut out).map_err(|e| e.to_string()))
                .map(|_| out);
            all.push(result);
        }
        assert!(
            all.windows(2).all(|w| w[0] == w[1]),
            "the result must not depend on how the file is read: {all:?}"
        );
        all.remove(0)
    }

    #[test]
    fn utf8_passes_and_its_byte_order_mark_goes() {
        assert_eq!(decode("IMEI\n1\n".as_bytes(), None).unwrap(), "IMEI\n1\n");
        assert_eq!(
            decode("\u{feff}Modèle\n".as_bytes(), None).unwrap(),
            "Modèle\n"
        );
    }

    #[test]
    fn every_line_end_becomes_one_lf() {
        assert_eq!(decode(b"a\r\nb\rc\nd\r", None).unwrap(), "a\nb\nc\nd\n");
        assert_eq!(decode(b"a\r\r\nb", None).unwrap(), "a\n\nb");
    }

    #[test]
    fn utf16_with_a_byte_order_mark_is_converted() {
        let text = "IMEI,Modèle\r\n490154203237518,Galaxy\r\n";
        let want = "IMEI,Modèle\n490154203237518,Galaxy\n";
        assert_eq!(decode(&utf16(text, false), None).unwrap(), want);
        assert_eq!(decode(&utf16(text, true), None).unwrap(), want);
        // The mark wins over a named encoding.
        assert_eq!(
            decode(&utf16(text, false), Some(encoding_rs::WINDOWS_1252)).unwrap(),
            want
        );
    }

    #[test]
    fn other_encodings_are_refused_at_their_line_and_byte() {
        // "Modèle" in windows-1252: è is the single byte 0xE8.
        let bytes = b"IMEI,Model\r\n490154203237518,Mod\xE8le\r\n";
        let err = decode(bytes, None).unwrap_err();
        assert_eq!(
            err,
            "line 2, byte offset 31: the file is not UTF-8 (0xE8), it is in another \
             encoding; save the file as UTF-8 (in Excel: \"CSV UTF-8\"), or name its \
             encoding with --encoding (e.g. --encoding windows-1252)"
        );
        assert_eq!(bytes[31], 0xE8);
        // Named, it reads.
        let text = decode(bytes, Some(encoding_for_label("windows-1252").unwrap())).unwrap();
        assert_eq!(text, "IMEI,Model\n490154203237518,Modèle\n");
    }

    #[test]
    fn a_cut_sequence_at_the_end_is_refused_too() {
        let err = decode(b"abc\n\xE2\x82", None).unwrap_err();
        assert!(err.starts_with("line 2, byte offset 4: "), "{err}");
    }

    #[test]
    fn bad_utf16_is_refused_with_its_position() {
        // An unpaired high surrogate in UTF-16LE.
        let mut bytes = utf16("ab\n", false);
        bytes.extend([0x00, 0xD8, b'c', 0x00]);
        let err = decode(&bytes, None).unwrap_err();
        assert!(
            err.starts_with(
                "line 2, byte offset 8: the file starts with a UTF-16LE byte-order mark but \
                 is not valid UTF-16LE (0x00 0xD8)"
            ),
            "{err}"
        );
    }

    #[test]
    fn workbooks_and_utf16_without_a_mark_are_refused_with_the_fix() {
        let err = decode(b"PK\x03\x04\x14\x00\x06\x00rest", None).unwrap_err();
        assert!(err.contains("Excel workbook (.xlsx)"), "{err}");
        let err = decode(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0], None).unwrap_err();
        assert!(err.contains("(.xls)"), "{err}");
        let le = &utf16("IMEI\n", false)[2..];
        let err = decode(le, None).unwrap_err();
        assert!(err.contains("--encoding utf-16le"), "{err}");
        let be = &utf16("IMEI\n", true)[2..];
        assert!(
            decode(be, None)
                .unwrap_err()
                .contains("--encoding utf-16be")
        );
        assert_eq!(
            decode(le, Some(encoding_for_label("utf-16le").unwrap())).unwrap(),
            "IMEI\n"
        );
    }

    #[test]
    fn labels_name_encodings() {
        assert_eq!(
            encoding_for_label("latin1").unwrap(),
            encoding_rs::WINDOWS_1252
        );
        assert!(
            encoding_for_label("klingon")
                .unwrap_err()
                .contains("windows-1252")
        );
    }
}
