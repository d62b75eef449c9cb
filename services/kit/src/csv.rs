//! The portal's CSV downloads, in one place: the files' headers ([`CUSTOMERS_HEADER`],
//! [`CUSTOMER_DEVICES_HEADER`]), their lines ([`CustomerLine`], [`DeviceLine`]) and the
//! writer every cell goes through ([`CsvChunker`]: the formula guard, the quoting, CRLF,
//! the time format). reporting-service streams its downloads with it and resellerctl
//! writes `-o csv` of the same rows with it, so both are the same bytes.
//!
//! The format is DOMAIN.md "CSV downloads": RFC 4180 (a header row, CRLF, fields quoted
//! when they hold a comma, a quote or a line break, quotes doubled, UTF-8), text cells
//! neutralised against formula injection, written into chunks of about [`CHUNK_BYTES`].
//! A file may start with the UTF-8 byte-order mark, for Excel
//! ([`CsvChunker::starting`]).
//!
//! Text cells hold what people typed elsewhere (company names, references, order numbers,
//! models), so no text can break the file: a cell is also quoted when it holds a
//! semicolon or any other control character (see `needs_quotes`), and a cell that
//! begins like a formula is neutralised ([`neutralise`]).
//!
//! The writer is hand-rolled rather than the `csv` crate's because a million-row
//! download spends most of its time here: cells are written straight into the chunk
//! being filled, and times and UUIDs are formatted in place, so a row costs no
//! allocation.

use std::borrow::Cow;
use std::io::Write as _;

use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use crate::device_id::DeviceIdKind;

/// The size a chunk reaches before it is handed out (a chunk exceeds it by less than one
/// row).
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The UTF-8 byte-order mark (U+FEFF), which a file may start with: Excel reads a CSV
/// file without one in the machine's legacy code page, so `Ärzte` shows as `Ã„rzte`.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One cell of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell<'a> {
    /// Text, neutralised against formula injection when written.
    Text(Cow<'a, str>),
    /// A number, written as is.
    Int(i64),
}

impl<'a> Cell<'a> {
    /// A text cell borrowing `text`.
    pub fn text(text: &'a str) -> Self {
        Cell::Text(Cow::Borrowed(text))
    }

    /// A text cell owning `text`.
    pub fn owned(text: String) -> Self {
        Cell::Text(Cow::Owned(text))
    }
}

/// Whether a text cell would be read as a formula by a spreadsheet: it begins with `=`,
/// `+`, `-`, `@`, tab or carriage return.
fn is_formula(text: &str) -> bool {
    matches!(
        text.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// A text cell as written: one that a spreadsheet would read as a formula (it begins with
/// `=`, `+`, `-`, `@`, tab or carriage return) gets a leading `'`.
pub fn neutralise(text: &str) -> Cow<'_, str> {
    if is_formula(text) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The `Company Name / Internal Reference` cell: the company name, then ` / ` and the
/// reference when there is one.
pub fn name_and_reference(company_name: &str, reference: &str) -> String {
    if reference.is_empty() {
        company_name.to_owned()
    } else {
        format!("{company_name} / {reference}")
    }
}

/// A line of one of the download files, written by [`CsvChunker`].
pub trait CsvLine {
    /// The file's header.
    const HEADER: &'static [&'static str];

    /// Writes the line's cells in [`HEADER`](Self::HEADER) order (the caller ends the
    /// row).
    fn write(&self, out: &mut CsvChunker);
}

/// The columns of the customers file (DOMAIN.md "CSV downloads"), in this order.
pub const CUSTOMERS_HEADER: &[&str] = &[
    "Company Name / Internal Reference",
    "Customer ID / MSP ID",
    "Country",
    "Last Uploaded",
    "Uploads",
    "Devices",
    "Status",
];

/// One line of the customers file: one row of the reseller's Customers page.
#[derive(Debug, Clone, Copy)]
pub struct CustomerLine<'a> {
    /// The account's company name.
    pub company_name: &'a str,
    /// The reseller's reference for it ("" when none).
    pub internal_reference: &'a str,
    /// The row's display ID: the Knox ID, or the managing MSP's Knox ID for a customer
    /// an MSP manages now. The portal's MSP tag marks a kind (an MSP row, or a managed
    /// customer), and this file has no kind column; writing the tag into the ID cell
    /// would make it no longer an ID, so the cell stays a bare Knox ID.
    pub customer_id: &'a str,
    /// ISO 3166-1 alpha-2.
    pub country: &'a str,
    /// The last upload to the row, if any.
    pub last_uploaded: Option<OffsetDateTime>,
    /// Devices uploaded to the row (deleted ones included).
    pub uploads: i64,
    /// Its live devices.
    pub devices: i64,
    /// The status's label ([`crate::accounts::CustomerStatus::label`]).
    pub status: &'a str,
}

impl CsvLine for CustomerLine<'_> {
    const HEADER: &'static [&'static str] = CUSTOMERS_HEADER;

    fn write(&self, out: &mut CsvChunker) {
        out.text(&name_and_reference(
            self.company_name,
            self.internal_reference,
        ));
        out.text(self.customer_id);
        out.text(self.country);
        out.opt_time(self.last_uploaded);
        out.int(self.uploads);
        out.int(self.devices);
        out.plain(self.status);
    }
}

/// The columns of one customer's devices file (DOMAIN.md "CSV downloads", and the
/// model and the virtual upload's MSP besides), in this order.
pub const CUSTOMER_DEVICES_HEADER: &[&str] = &[
    "Upload ID",
    "Uploaded At",
    "Order Number",
    "Device ID",
    "Device Type",
    "Model",
    "Virtual Upload",
    "Via MSP",
];

/// One line of a customer's devices file: a live device placed under the customer.
#[derive(Debug, Clone, Copy)]
pub struct DeviceLine<'a> {
    /// The upload that registered the device (a UUID, as the API shows it).
    pub upload_id: &'a str,
    /// When (an empty cell when unknown).
    pub uploaded_at: Option<OffsetDateTime>,
    /// The upload's order number.
    pub order_number: &'a str,
    /// The device.
    pub device_id: &'a str,
    /// Its kind (an empty cell when unknown).
    pub kind: Option<DeviceIdKind>,
    /// Its model.
    pub model: &'a str,
    /// Part of a virtual upload.
    pub virtual_upload: bool,
    /// The virtual upload's MSP ("" when not virtual).
    pub via_msp_id: &'a str,
}

impl CsvLine for DeviceLine<'_> {
    const HEADER: &'static [&'static str] = CUSTOMER_DEVICES_HEADER;

    fn write(&self, out: &mut CsvChunker) {
        // A UUID never needs quotes nor the guard: written as is.
        out.plain(self.upload_id);
        out.opt_time(self.uploaded_at);
        out.text(self.order_number);
        // A serial number may begin with `-`: device IDs are text cells too.
        out.text(self.device_id);
        out.plain(self.kind.map_or("", DeviceIdKind::label));
        out.text(self.model);
        out.plain(if self.virtual_upload { "yes" } else { "no" });
        out.text(self.via_msp_id);
    }
}

/// Writes rows as CSV and hands out the bytes in chunks.
///
/// A row is written cell by cell ([`text`](Self::text), [`int`](Self::int),
/// [`time`](Self::time), …) and ended with [`end_row`](Self::end_row), which hands out a
/// chunk once enough bytes have gathered.
#[derive(Debug)]
pub struct CsvChunker {
    buf: Vec<u8>,
    chunk_bytes: usize,
    /// A cell of the current row has been written (the next one needs a comma).
    in_row: bool,
}

impl CsvChunker {
    /// A file starting with `header`, in chunks of about [`CHUNK_BYTES`].
    pub fn new(header: &[&str]) -> Self {
        Self::with_chunk_bytes(header, CHUNK_BYTES)
    }

    /// A file starting with [`UTF8_BOM`] when `byte_order_mark`, then `header`, in chunks
    /// of about [`CHUNK_BYTES`]. Without the mark, the file is exactly [`new`](Self::new)'s.
    pub fn starting(header: &[&str], byte_order_mark: bool) -> Self {
        Self::start(header, CHUNK_BYTES, byte_order_mark)
    }

    /// A file starting with `header`, in chunks of about `chunk_bytes`.
    pub fn with_chunk_bytes(header: &[&str], chunk_bytes: usize) -> Self {
        Self::start(header, chunk_bytes, false)
    }

    fn start(header: &[&str], chunk_bytes: usize, byte_order_mark: bool) -> Self {
        let mut chunker = Self {
            buf: Self::fresh_buffer(chunk_bytes),
            chunk_bytes,
            in_row: false,
        };
        if byte_order_mark {
            chunker.buf.extend_from_slice(UTF8_BOM);
        }
        for name in header {
            chunker.plain(name);
        }
        // The header is part of the first chunk, never a chunk of its own.
        chunker.buf.extend_from_slice(b"\r\n");
        chunker.in_row = false;
        chunker
    }

    /// A chunk's buffer: room for a full chunk and the row that overflows it, so filling
    /// a chunk never reallocates.
    fn fresh_buffer(chunk_bytes: usize) -> Vec<u8> {
        Vec::with_capacity(chunk_bytes + 4 * 1024)
    }

    /// Writes one row of `cells`; returns a chunk when enough bytes have gathered.
    pub fn write_row(&mut self, cells: &[Cell<'_>]) -> Option<Vec<u8>> {
        for cell in cells {
            match cell {
                Cell::Text(text) => self.text(text),
                Cell::Int(n) => self.int(*n),
            }
        }
        self.end_row()
    }

    /// A text cell, neutralised against formula injection.
    pub fn text(&mut self, text: &str) {
        let prefix: &[u8] = if is_formula(text) { b"'" } else { b"" };
        self.field(prefix, text.as_bytes());
    }

    /// A cell written as is: for values that cannot begin with a formula character
    /// (fixed labels, header names, Knox IDs). Still quoted when it must be.
    pub fn plain(&mut self, text: &str) {
        self.field(b"", text.as_bytes());
    }

    /// A number.
    pub fn int(&mut self, n: i64) {
        self.separate();
        // Writing into a Vec cannot fail.
        let _ = write!(self.buf, "{n}");
    }

    /// A UUID, lower-case and hyphenated (as the API shows upload IDs).
    pub fn uuid(&mut self, id: Uuid) {
        self.separate();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.buf
            .extend_from_slice(id.hyphenated().encode_lower(&mut text).as_bytes());
    }

    /// A time in RFC 3339, UTC, with `Z` and fractional seconds only when there are any,
    /// exactly as [`crate::timestamp::rfc3339_utc`] writes it; an empty cell for a
    /// year RFC 3339 cannot hold (outside 0 to 9999).
    pub fn time(&mut self, at: OffsetDateTime) {
        self.separate();
        let at = at.to_offset(UtcOffset::UTC);
        let year = at.year();
        if !(0..=9999).contains(&year) {
            return;
        }
        let (hour, minute, second, nanos) = at.to_hms_nano();
        let mut text = [0u8; 30];
        digits(&mut text[0..4], year as u32);
        text[4] = b'-';
        digits(&mut text[5..7], u32::from(u8::from(at.month())));
        text[7] = b'-';
        digits(&mut text[8..10], u32::from(at.day()));
        text[10] = b'T';
        digits(&mut text[11..13], u32::from(hour));
        text[13] = b':';
        digits(&mut text[14..16], u32::from(minute));
        text[16] = b':';
        digits(&mut text[17..19], u32::from(second));
        let mut len = 19;
        if nanos != 0 {
            text[19] = b'.';
            digits(&mut text[20..29], nanos);
            len = 29;
            while text[len - 1] == b'0' {
                len -= 1;
            }
        }
        text[len] = b'Z';
        self.buf.extend_from_slice(&text[..=len]);
    }

    /// [`time`](Self::time), or an empty cell for `None`.
    pub fn opt_time(&mut self, at: Option<OffsetDateTime>) {
        match at {
            Some(at) => self.time(at),
            None => self.separate(),
        }
    }

    /// Ends the row; returns a chunk when enough bytes have gathered.
    pub fn end_row(&mut self) -> Option<Vec<u8>> {
        self.buf.extend_from_slice(b"\r\n");
        self.in_row = false;
        if self.buf.len() >= self.chunk_bytes {
            Some(std::mem::replace(
                &mut self.buf,
                Self::fresh_buffer(self.chunk_bytes),
            ))
        } else {
            None
        }
    }

    /// Hands out the bytes gathered so far (after an ended row): for a writer that
    /// flushes as it goes rather than by the chunk, such as resellerctl's `-o csv`.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.buf, Self::fresh_buffer(self.chunk_bytes))
    }

    /// Ends the file and returns what is left (at least the header when no chunk was
    /// handed out yet; empty when the last row filled the last chunk exactly).
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// The comma before every cell but a row's first.
    fn separate(&mut self) {
        if self.in_row {
            self.buf.push(b',');
        }
        self.in_row = true;
    }

    /// One cell: `prefix` then `text`, quoted when [`needs_quotes`], with its quotes
    /// doubled.
    fn field(&mut self, prefix: &[u8], text: &[u8]) {
        self.separate();
        if needs_quotes(text) {
            self.buf.push(b'"');
            self.buf.extend_from_slice(prefix);
            for part in text.split_inclusive(|b| *b == b'"') {
                self.buf.extend_from_slice(part);
                if part.last() == Some(&b'"') {
                    self.buf.push(b'"');
                }
            }
            self.buf.push(b'"');
        } else {
            self.buf.extend_from_slice(prefix);
            self.buf.extend_from_slice(text);
        }
    }
}

/// Whether a cell must be quoted: it holds a comma, a quote or a line break (RFC 4180),
/// or a semicolon or another control character.
///
/// Why the last two: text cells hold what customers and resellers typed. `;` is the list
/// separator of Excel in much of Europe, and a reader that splits at it would start a new
/// cell inside `Acme;=HYPERLINK(…)`, past the `'` guard ([`neutralise`]), which looks only
/// at a cell's start; quoted, the cell is one field to every reader that honours quotes
/// (OWASP's advice against CSV injection). RFC 4180's unquoted text is printable ASCII,
/// so a control character (a tab, say) is never left bare either. Quoting more than
/// needed changes nothing an RFC 4180 reader reads back.
fn needs_quotes(text: &[u8]) -> bool {
    text.iter()
        .any(|&b| matches!(b, b',' | b'"' | b';') || b.is_ascii_control())
}

/// Writes `n` as `out.len()` decimal digits, zero-padded (`n` fits by construction).
fn digits(out: &mut [u8], mut n: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &[&str], rows: &[Vec<Cell<'_>>]) -> String {
        let mut chunker = CsvChunker::new(header);
        let mut bytes = Vec::new();
        for row in rows {
            if let Some(chunk) = chunker.write_row(row) {
                bytes.extend(chunk);
            }
        }
        bytes.extend(chunker.finish());
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn rows_end_in_crlf_and_are_quoted_only_when_needed() {
        let out = file(
            &["Name", "Count"],
            &[
                vec![Cell::text("Acme, Inc."), Cell::Int(3)],
                vec![Cell::text("Say \"hi\""), Cell::Int(0)],
                vec![Cell::text("two\nlines"), Cell::Int(1)],
                vec![Cell::text("cr\rhere"), Cell::Int(1)],
                vec![Cell::text("plain"), Cell::Int(12)],
                vec![Cell::text("Müller GmbH"), Cell::Int(2)],
            ],
        );
        assert_eq!(
            out,
            "Name,Count\r\n\"Acme, Inc.\",3\r\n\"Say \"\"hi\"\"\",0\r\n\"two\nlines\",1\r\n\
             \"cr\rhere\",1\r\nplain,12\r\nMüller GmbH,2\r\n"
        );
    }

    #[test]
    fn formulas_are_neutralised_in_text_cells_only() {
        for risky in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(risky), format!("'{risky}"), "{risky:?}");
        }
        for safe in ["", "Acme", "1-2", "'quoted", " =x"] {
            assert_eq!(neutralise(safe), safe, "{safe:?}");
        }
        let out = file(
            &["A", "B"],
            &[vec![Cell::text("=HYPERLINK(\"http://x\")"), Cell::Int(-5)]],
        );
        assert_eq!(out, "A,B\r\n\"'=HYPERLINK(\"\"http://x\"\")\",-5\r\n");
        let out = file(&["A"], &[vec![Cell::text("-x")], vec![Cell::text("\tx")]]);
        assert_eq!(out, "A\r\n'-x\r\n\"'\tx\"\r\n");
    }

    #[test]
    fn text_cells_are_guarded_and_quoted_together() {
        // Moved from resellerctl (`download_cells_are_guarded_and_quoted_as_the_downloads_are`),
        // whose `-o csv` of downloaded rows now writes through this writer.
        let cells = [
            "a;b",
            "=x,y",
            "\tt",
            "say \"hi\"",
            "two\nlines",
            "Müller",
            "+1",
            "",
        ];
        let mut chunker = CsvChunker::new(&[]);
        for cell in cells {
            chunker.text(cell);
        }
        let _ = chunker.end_row();
        assert_eq!(
            String::from_utf8(chunker.finish()).unwrap(),
            "\r\n\"a;b\",\"'=x,y\",\"'\tt\",\"say \"\"hi\"\"\",\"two\nlines\",Müller,'+1,\r\n"
        );
    }

    #[test]
    fn the_reference_follows_the_name_when_there_is_one() {
        assert_eq!(name_and_reference("Acme", ""), "Acme");
        assert_eq!(name_and_reference("Acme", "PO-7"), "Acme / PO-7");
        // The joined cell is what is neutralised: a reference cannot make it a formula.
        assert_eq!(neutralise(&name_and_reference("Acme", "=1")), "Acme / =1");
        assert_eq!(neutralise(&name_and_reference("=Acme", "x")), "'=Acme / x");
    }

    #[test]
    fn chunks_split_a_large_file_and_concatenate_back() {
        let mut chunker = CsvChunker::with_chunk_bytes(&["n", "text"], 1024);
        let mut chunks = Vec::new();
        let mut expected = String::from("n,text\r\n");
        for i in 0..5000 {
            expected.push_str(&format!("{i},row {i}\r\n"));
            if let Some(chunk) = chunker.write_row(&[Cell::Int(i), Cell::owned(format!("row {i}"))])
            {
                chunks.push(chunk);
            }
        }
        chunks.push(chunker.finish());
        assert!(chunks.len() > 5, "a large file comes in several chunks");
        // A chunk exceeds its size by less than one row.
        assert!(chunks.iter().all(|c| c.len() < 1024 + 16));
        assert_eq!(String::from_utf8(chunks.concat()).unwrap(), expected);
    }

    #[test]
    fn an_empty_file_is_its_header() {
        assert_eq!(file(&["A", "B"], &[]), "A,B\r\n");
    }

    #[test]
    fn a_byte_order_mark_comes_first_only_when_asked_for() {
        let mut with = CsvChunker::starting(&["Name"], true);
        with.text("Ärzte");
        let _ = with.end_row();
        assert_eq!(with.finish(), "\u{feff}Name\r\nÄrzte\r\n".as_bytes());
        let mut without = CsvChunker::starting(&["Name"], false);
        without.text("Ärzte");
        let _ = without.end_row();
        let mut plain = CsvChunker::new(&["Name"]);
        plain.text("Ärzte");
        let _ = plain.end_row();
        assert_eq!(without.finish(), plain.finish());
        assert_eq!(UTF8_BOM, "\u{feff}".as_bytes());
    }

    #[test]
    fn semicolons_and_control_characters_are_quoted() {
        let out = file(
            &["A", "B"],
            &[
                vec![Cell::text("Acme;=HYPERLINK(1)"), Cell::text("a\u{1}b")],
                vec![Cell::text("x\u{7f}"), Cell::text("Ärzte Nord")],
            ],
        );
        assert_eq!(
            out,
            "A,B\r\n\"Acme;=HYPERLINK(1)\",\"a\u{1}b\"\r\n\"x\u{7f}\",Ärzte Nord\r\n"
        );
    }

    #[test]
    fn times_are_written_as_the_kit_writes_them() {
        let mut samples = vec![
            0,
            1_700_000_000_000_000_000,
            1_700_000_000_123_456_000,
            1_700_000_000_100_000_000,
            1_700_000_000_000_000_001,
            1_700_000_000_999_999_999,
            -1_000_000_000,
            -62_167_219_200_000_000_000, // 0000-01-01
            253_402_300_799_999_999_000, // 9999-12-31T23:59:59.999999
        ];
        // A spread of instants with microsecond fractions, as PostgreSQL stores them.
        let mut n: i128 = 987_654_321_123_000;
        for _ in 0..2000 {
            n = (n * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % 4_102_444_800_000_000;
            samples.push(n * 1_000);
        }
        for nanos in samples {
            let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let mut chunker = CsvChunker::new(&[]);
            chunker.time(at);
            let _ = chunker.end_row();
            let written = String::from_utf8(chunker.finish()).unwrap();
            assert_eq!(
                written,
                format!("\r\n{}\r\n", crate::timestamp::rfc3339_utc(at)),
                "{nanos}"
            );
        }
        // Years RFC 3339 cannot hold leave the cell empty, as the kit does.
        let far = OffsetDateTime::from_unix_timestamp(-62_167_219_201).unwrap(); // year -1
        assert_eq!(crate::timestamp::rfc3339_utc(far), "");
        let mut chunker = CsvChunker::new(&[]);
        chunker.plain("a");
        chunker.time(far);
        chunker.opt_time(None);
        chunker.uuid(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
        let _ = chunker.end_row();
        assert_eq!(
            String::from_utf8(chunker.finish()).unwrap(),
            "\r\na,,,01234567-89ab-cdef-0123-456789abcdef\r\n"
        );
    }

    #[test]
    fn any_text_reads_back_as_written_by_an_rfc_4180_reader() {
        let texts = [
            "",
            "plain",
            "a,b",
            "\"quoted\"",
            "\"",
            "line\nbreak",
            "crlf\r\ninside",
            "=SUM(1,2)",
            "-\"x\"",
            "\ttab",
            "\rcr",
            "trailing \"",
            "Müller, \"GmbH\"",
            "semi;=colon",
            "a\u{1}\u{1b}[31m\u{7f}b",
            "\u{85}next line\u{2028}line sep",
            "\u{feff}bom inside",
            "Ärzte Nord / émile 😀",
        ];
        let long = "é,\"\n".repeat(3_000);
        let texts: Vec<&str> = texts.iter().copied().chain([long.as_str()]).collect();
        let mut chunker = CsvChunker::with_chunk_bytes(&["i", "text"], 64);
        let mut bytes = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            chunker.int(i as i64);
            chunker.text(text);
            if let Some(chunk) = chunker.end_row() {
                bytes.extend(chunk);
            }
        }
        bytes.extend(chunker.finish());
        let mut reader = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
        let read: Vec<(String, String)> = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[0].to_owned(), r[1].to_owned())
            })
            .collect();
        assert_eq!(read.len(), texts.len());
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(read[i], (i.to_string(), neutralise(text).into_owned()));
        }
    }
}
