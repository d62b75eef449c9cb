//! How a device file is laid out, told from its first line before any row is read
//! (DOMAIN.md "Upload files"): an Excel `sep=X` hint line, or else the separator the
//! header line (or first line) uses: `,`, `;` or tab.
//!
//! Works on the decoded text ([`super::decode::Decoded`]: UTF-8, every line end LF). The
//! first line is read up to a limit and handed back with the rest of the file, so
//! nothing is read twice and memory stays flat however long a line is.

use std::io::{self, BufRead, Chain, Cursor, Read};

/// Most bytes of leading lines kept for sniffing; a first line longer than this is
/// sniffed from its beginning.
const SNIFF_LIMIT: usize = 1024 * 1024;

/// The separators a file may use without a `sep=` line, most specific first: on a tie
/// the rarer one in cell text wins (a header like `Device ID;Model, colour` is a
/// semicolon file).
const SEPARATORS: [u8; 3] = [b'\t', b';', b','];

/// The whole text again: the lines read to sniff, then the rest.
pub type Replayed<R> = Chain<Cursor<Vec<u8>>, R>;

/// What the first lines say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The field separator.
    pub separator: u8,
    /// The file starts with an Excel `sep=` line: the CSV reader's first record is that
    /// line, never a header and never a device.
    pub hint_line: bool,
}

/// The separator an Excel hint line names (`sep=;`, `sep=,`, `sep=<tab>`, also written
/// `sep=\t`), or `None` when `line` is no such line.
///
/// # Errors
/// When it is a hint line naming a separator a CSV file cannot use.
fn hint_separator(line: &[u8]) -> Result<Option<u8>, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    // Some programs quote the whole line.
    let line = line
        .strip_prefix(b"\"")
        .and_then(|l| l.strip_suffix(b"\""))
        .unwrap_or(line);
    if line.len() < 4 || !line[..4].eq_ignore_ascii_case(b"sep=") {
        return Ok(None);
    }
    let rest = &line[4..];
    let separator = match rest {
        b"\\t" => b'\t',
        [one] => *one,
        // A line such as `sep=` alone or `sep=ab` is not Excel's: read it as text (it
        // then fails as a header naming no device ID column).
        _ => return Ok(None),
    };
    if matches!(separator, b'"' | b'\n') || !separator.is_ascii() {
        return Err(format!(
            "line 1: the Excel hint line {:?} names a separator a CSV file cannot use; use \
             sep=, or sep=; (or remove the line)",
            String::from_utf8_lossy(line)
        ));
    }
    Ok(Some(separator))
}

/// The separator `line` uses most often outside quotes; `,` when it uses none.
fn sniff_separator(line: &[u8]) -> u8 {
    let mut counts = [0usize; SEPARATORS.len()];
    let mut quoted = false;
    for &byte in line {
        if byte == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(i) = SEPARATORS.iter().position(|&s| s == byte) {
            counts[i] += 1;
        }
    }
    // The first of the most frequent, in SEPARATORS order.
    let mut best = None;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && best.is_none_or(|b: usize| count > counts[b]) {
            best = Some(i);
        }
    }
    best.map_or(b',', |i| SEPARATORS[i])
}

/// Reads one line (up to and including its LF, outside quotes) into `out`, at most
/// `limit` bytes. Returns false at the end of the file.
fn read_line(reader: &mut impl BufRead, out: &mut Vec<u8>, limit: usize) -> io::Result<bool> {
    let start = out.len();
    let mut quoted = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(out.len() > start);
        }
        let mut taken = 0;
        let mut ended = false;
        for &byte in buf {
            taken += 1;
            match byte {
                b'"' => quoted = !quoted,
                b'\n' if !quoted => {
                    ended = true;
                    break;
                }
                _ => {}
            }
            if out.len() - start + taken >= limit {
                ended = true;
                break;
            }
        }
        out.extend_from_slice(&buf[..taken]);
        reader.consume(taken);
        if ended {
            return Ok(true);
        }
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Reads the first lines of `reader` to find its layout; returns it and the reader of
/// the whole text again (the lines read, then the rest).
///
/// # Errors
/// When the file cannot be read, or a hint line names an impossible separator.
pub fn sniff<R: BufRead>(mut reader: R) -> Result<(Layout, Replayed<R>), io::Error> {
    let mut head = Vec::new();
    // Blank lines before the first line say nothing; the CSV reader skips them too.
    let mut line_start = 0;
    while read_line(&mut reader, &mut head, SNIFF_LIMIT)? {
        if !is_blank(&head[line_start..]) || head.len() >= SNIFF_LIMIT {
            break;
        }
        line_start = head.len();
    }
    let first = &head[line_start..];
    let layout = match hint_separator(first)
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidData, message))?
    {
        Some(separator) => Layout {
            separator,
            hint_line: true,
        },
        None => Layout {
            separator: sniff_separator(first),
            hint_line: false,
        },
    };
    Ok((layout, Cursor::new(head).chain(reader)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(text: &str) -> (Layout, String) {
        let (layout, mut rest) = sniff(text.as_bytes()).unwrap();
        let mut all = String::new();
        rest.read_to_string(&mut all).unwrap();
        assert_eq!(all, text, "the whole text is handed back");
        (layout, all)
    }

    fn separator(text: &str) -> char {
        char::from(layout(text).0.separator)
    }

    #[test]
    fn the_header_line_tells_the_separator() {
        assert_eq!(separator("IMEI;Model\n1;2\n"), ';');
        assert_eq!(separator("IMEI\tModel\n"), '\t');
        assert_eq!(separator("IMEI,Model\n"), ',');
        assert_eq!(separator("490154203237518\n"), ',');
        assert_eq!(separator(""), ',');
        // Quoted separators do not count; on a tie the rarer one wins.
        assert_eq!(separator("\"Model, colour\";IMEI\n"), ';');
        assert_eq!(separator("Device ID;Model, colour\n"), ';');
        assert_eq!(separator("a,b,c;d\n"), ',');
        // Blank lines before it are skipped.
        assert_eq!(separator("\n  \nIMEI;Model\n"), ';');
    }

    #[test]
    fn an_excel_hint_line_names_the_separator() {
        for (text, sep) in [
            ("sep=,\nIMEI\n", ','),
            ("sep=;\nIMEI;Model\n", ';'),
            ("SEP=|\nIMEI|Model\n", '|'),
            ("sep=\t\nIMEI\tModel\n", '\t'),
            ("sep=\\t\nIMEI\tModel\n", '\t'),
            ("\"sep=;\"\nIMEI;Model\n", ';'),
            ("sep=;", ';'),
        ] {
            let (layout, _) = layout(text);
            assert_eq!(
                layout,
                Layout {
                    separator: sep as u8,
                    hint_line: true
                },
                "{text:?}"
            );
        }
        assert!(!layout("sep=\nIMEI\n").0.hint_line);
        assert!(!layout("separator,IMEI\n").0.hint_line);
        let err = sniff("sep=\"\n".as_bytes()).err().unwrap();
        assert!(err.to_string().contains("sep=, or sep=;"), "{err}");
    }

    #[test]
    fn a_long_first_line_is_sniffed_from_its_start() {
        let text = format!("IMEI;{}\n", "x".repeat(3 * SNIFF_LIMIT));
        assert_eq!(separator(&text), ';');
    }
}
