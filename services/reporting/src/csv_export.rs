//! CSV files as DOMAIN.md "CSV downloads" defines them: RFC 4180 (a header row, CRLF,
//! fields quoted only when they must be, quotes doubled, UTF-8), text cells neutralised
//! against formula injection, written into chunks of about [`CHUNK_BYTES`].
//!
//! Pure and reusable: every download (the customers list, one customer's devices) writes
//! its rows through [`CsvChunker`].

use std::borrow::Cow;

/// The size a chunk reaches before it is handed out (a chunk may exceed it by less than
/// one row plus the writer's 8 KiB buffer).
pub const CHUNK_BYTES: usize = 64 * 1024;

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

/// A text cell as written: one that a spreadsheet would read as a formula (it begins with
/// `=`, `+`, `-`, `@`, tab or carriage return) gets a leading `'`.
pub fn neutralise(text: &str) -> Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{text}")),
        _ => Cow::Borrowed(text),
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

/// Writes rows as CSV and hands out the bytes in chunks.
pub struct CsvChunker {
    writer: csv::Writer<Vec<u8>>,
    chunk_bytes: usize,
}

impl std::fmt::Debug for CsvChunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvChunker")
            .field("chunk_bytes", &self.chunk_bytes)
            .finish()
    }
}

impl CsvChunker {
    /// A file starting with `header`, in chunks of about [`CHUNK_BYTES`].
    ///
    /// # Errors
    /// Only if writing to memory fails.
    pub fn new(header: &[&str]) -> Result<Self, csv::Error> {
        Self::with_chunk_bytes(header, CHUNK_BYTES)
    }

    /// A file starting with `header`, in chunks of about `chunk_bytes`.
    ///
    /// # Errors
    /// Only if writing to memory fails.
    pub fn with_chunk_bytes(header: &[&str], chunk_bytes: usize) -> Result<Self, csv::Error> {
        let mut writer = writer(chunk_bytes);
        writer.write_record(header)?;
        Ok(Self {
            writer,
            chunk_bytes,
        })
    }

    /// Writes one row; returns a chunk when enough bytes have gathered.
    ///
    /// # Errors
    /// Only if writing to memory fails.
    pub fn write_row(&mut self, cells: &[Cell<'_>]) -> Result<Option<Vec<u8>>, csv::Error> {
        let fields = cells.iter().map(|cell| match cell {
            Cell::Text(text) => neutralise(text).into_owned(),
            Cell::Int(n) => n.to_string(),
        });
        self.writer.write_record(fields)?;
        // The writer moves its buffer into the Vec 8 KiB at a time; check what arrived.
        if self.writer.get_ref().len() >= self.chunk_bytes {
            return self.take().map(Some);
        }
        Ok(None)
    }

    /// Ends the file and returns what is left (at least the header when no chunk was
    /// handed out yet; empty when the last row filled the last chunk exactly).
    ///
    /// # Errors
    /// Only if writing to memory fails.
    pub fn finish(self) -> Result<Vec<u8>, csv::Error> {
        self.writer
            .into_inner()
            .map_err(|e| csv::Error::from(e.into_error()))
    }

    /// Hands out what was written, continuing the file in a fresh writer (rows are
    /// complete, so no writer state carries over).
    fn take(&mut self) -> Result<Vec<u8>, csv::Error> {
        let full = std::mem::replace(&mut self.writer, writer(self.chunk_bytes));
        full.into_inner()
            .map_err(|e| csv::Error::from(e.into_error()))
    }
}

/// The RFC 4180 writer: quotes only when needed, CRLF line ends.
fn writer(chunk_bytes: usize) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Necessary)
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(chunk_bytes + 16 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &[&str], rows: &[Vec<Cell<'_>>]) -> String {
        let mut chunker = CsvChunker::new(header).unwrap();
        let mut bytes = Vec::new();
        for row in rows {
            if let Some(chunk) = chunker.write_row(row).unwrap() {
                bytes.extend(chunk);
            }
        }
        bytes.extend(chunker.finish().unwrap());
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
        assert_eq!(out, "A\r\n'-x\r\n'\tx\r\n");
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
        let mut chunker = CsvChunker::with_chunk_bytes(&["n", "text"], 1024).unwrap();
        let mut chunks = Vec::new();
        let mut expected = String::from("n,text\r\n");
        for i in 0..5000 {
            expected.push_str(&format!("{i},row {i}\r\n"));
            if let Some(chunk) = chunker
                .write_row(&[Cell::Int(i), Cell::owned(format!("row {i}"))])
                .unwrap()
            {
                chunks.push(chunk);
            }
        }
        chunks.push(chunker.finish().unwrap());
        assert!(chunks.len() > 5, "a large file comes in several chunks");
        // The writer hands its buffer over 8 KiB at a time, which bounds a chunk.
        assert!(chunks.iter().all(|c| c.len() <= 1024 + 8 * 1024 + 64));
        assert_eq!(String::from_utf8(chunks.concat()).unwrap(), expected);
    }

    #[test]
    fn an_empty_file_is_its_header() {
        assert_eq!(file(&["A", "B"], &[]), "A,B\r\n");
    }
}
