//! Device files as spreadsheets and other portals write them (DOMAIN.md "Upload
//! files"), read one device at a time for `devices upload`, its `--dry-run` and the
//! `--file` of deletions and moves.
//!
//! Reading goes in layers, each its own module:
//! 1. [`decode`]: the bytes as UTF-8 text: UTF-8 (its byte-order mark dropped), UTF-16
//!    with a byte-order mark, or the encoding named with `--encoding`; anything else is
//!    refused with the line and byte at fault. Every line end (CRLF, CR, LF) becomes LF.
//! 2. [`layout`]: an Excel `sep=X` first line, or the separator (`,`, `;`, tab) the first
//!    line uses.
//! 3. CSV records (the `csv` crate: quoted fields, doubled quotes, separators and line
//!    breaks inside quotes).
//! 4. [`header`]: whether the first non-blank line is a header, and which columns hold
//!    the device ID, secondary IDs, model and kind; without a header, one identifier per
//!    line.
//! 5. [`cells`]: cells the product's CSV export neutralised read back without their `'`;
//!    identifiers Excel wrote as rounded numbers (`4.90154E+14`) refuse the file.
//!
//! The header row is never a device, nor is the hint line, nor lines joined by a quote
//! left open (an identifier spanning lines refuses the file). Rows whose cells are all
//! empty (blank lines, the `;;;` rows Excel writes below a table) are skipped; every
//! other row is a device and is numbered from 0 in file order: that number is the
//! upload's `index`, for the service's rejections and the dry run's alike.
//!
//! The file is never loaded whole: the layers are streaming readers over fixed buffers.

mod cells;
mod decode;
mod header;
mod layout;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use encoding_rs::{Encoding, UTF_8};
use reseller_proto::v1 as pb;

pub use decode::encoding_for_label;

use self::cells::{is_scientific, kind_cell, unneutralise, wire_kind};
use self::decode::{Decoded, Fault};
use self::header::{Columns, is_header};
use crate::errors::CliError;

/// Bytes buffered between the layers.
const BUFFER: usize = 256 * 1024;

/// How to read a device file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// The first line is a device even if it looks like a header.
    pub no_header: bool,
    /// The file's encoding when it is not UTF-8 and has no byte-order mark.
    pub encoding: Option<&'static Encoding>,
}

/// How the rows are laid out.
#[derive(Debug, Clone)]
enum Shape {
    /// A header named the columns.
    Header(Columns),
    /// One identifier per line.
    Headerless,
}

/// The decoded text the CSV reader reads: the lines sniffed, then the rest.
type Text = layout::Replayed<BufReader<Decoded<File>>>;

/// A device file, read one device at a time.
pub struct DeviceFile {
    path: PathBuf,
    reader: csv::Reader<Text>,
    shape: Shape,
    record: csv::ByteRecord,
    /// The first device, read ahead so [`DeviceFile::open`] knows whether there is one.
    pending: Option<pb::DeviceInput>,
    /// How the file was read, for the user.
    description: String,
}

impl std::fmt::Debug for DeviceFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceFile")
            .field("path", &self.path)
            .field("shape", &self.shape)
            .finish()
    }
}

/// A read failure of `path` as the user sees it: the encoding or layout fault with its
/// fix, or the I/O error.
fn io_error(path: &Path, err: &std::io::Error) -> CliError {
    match Fault::of(err) {
        Some(fault) => CliError::file(path, fault),
        None => CliError::file(path, err),
    }
}

/// [`io_error`] for the CSV reader's failures.
fn file_error(path: &Path, err: csv::Error) -> CliError {
    match err.kind() {
        csv::ErrorKind::Io(io) => io_error(path, io),
        _ => CliError::file(path, err),
    }
}

/// How a file is read, for the user: `read as UTF-16LE; separator tab; device ID "IMEI"`.
fn describe(encoding: &'static Encoding, layout: &layout::Layout, shape: &Shape) -> String {
    let mut parts = Vec::new();
    if encoding != UTF_8 {
        parts.push(format!("read as {}", encoding.name()));
    }
    if layout.hint_line || layout.separator != b',' {
        let shown = match layout.separator {
            b'\t' => "tab".to_owned(),
            other => format!("\"{}\"", char::from(other)),
        };
        parts.push(format!("separator {shown}"));
    }
    match shape {
        Shape::Header(columns) => parts.push(columns.description.clone()),
        Shape::Headerless => parts.push("no header: one identifier per line".into()),
    }
    parts.join("; ")
}

/// A record's cells as text (the decoder made them UTF-8).
fn cells_of(record: &csv::ByteRecord) -> Vec<String> {
    record
        .iter()
        .map(|field| String::from_utf8_lossy(field).into_owned())
        .collect()
}

fn is_blank(record: &csv::ByteRecord) -> bool {
    record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace))
}

fn line_of(record: &csv::ByteRecord) -> u64 {
    record.position().map_or(0, csv::Position::line)
}

impl DeviceFile {
    /// Opens `path`, finds its encoding, separator and header, and reads ahead to its
    /// first device.
    ///
    /// # Errors
    /// When the file cannot be opened or read, is in an encoding it cannot be read as,
    /// has a header naming no device ID column, or its first device is malformed; each
    /// message says how to fix the file.
    pub fn open(path: &Path, options: ReadOptions) -> Result<Self, CliError> {
        let file = File::open(path).map_err(|e| CliError::file(path, e))?;
        let decoded = Decoded::new(file, options.encoding).map_err(|e| io_error(path, &e))?;
        let encoding = decoded.encoding();
        let (layout, text) = layout::sniff(BufReader::with_capacity(BUFFER, decoded))
            .map_err(|e| io_error(path, &e))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(layout.separator)
            .buffer_capacity(BUFFER)
            .from_reader(text);
        let mut record = csv::ByteRecord::new();
        let read = |reader: &mut csv::Reader<Text>, record: &mut csv::ByteRecord| {
            reader
                .read_byte_record(record)
                .map_err(|e| file_error(path, e))
        };
        if layout.hint_line {
            // Excel's `sep=` line: honoured by the layout, never a header or a device.
            read(&mut reader, &mut record)?;
        }
        let mut first = false;
        while read(&mut reader, &mut record)? {
            if !is_blank(&record) {
                first = true;
                break;
            }
        }
        let cells = cells_of(&record);
        let shape = if first && !options.no_header && is_header(&cells) {
            Shape::Header(Columns::of(&cells).map_err(|message| {
                CliError::file(path, format!("line {}: {message}", line_of(&record)))
            })?)
        } else {
            Shape::Headerless
        };
        let mut file = Self {
            path: path.to_owned(),
            description: describe(encoding, &layout, &shape),
            reader,
            shape,
            record,
            pending: None,
        };
        file.pending = match (&file.shape, first) {
            // The first line was a device.
            (Shape::Headerless, true) => Some(file.device()?),
            _ => file.read_device()?,
        };
        Ok(file)
    }

    /// How the file is read (encoding, separator, columns), for a note to the user.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// True when the file holds no device (it is empty, or a header alone).
    pub fn is_empty(&self) -> bool {
        self.pending.is_none()
    }

    /// Refuses an identifier no file should hold: one spanning lines (no identifier holds
    /// a line break, so the cell is a quote opened and never closed, which joined the
    /// lines after it into one rejected device), or a number in scientific notation
    /// (Excel rounded it: every such row would be rejected, and the fix is in Excel).
    fn one_line(&self, id: String) -> Result<String, CliError> {
        if is_scientific(&id) {
            return Err(CliError::file(
                &self.path,
                format!(
                    "line {}: the identifier {:?} is a number Excel wrote in scientific \
                     notation, and its digits are lost; format the column as Text, enter or \
                     import the identifiers again, and save the file again",
                    line_of(&self.record),
                    id.trim()
                ),
            ));
        }
        // Surrounding whitespace is trimmed by the parser; only a break inside counts.
        let lines = id.trim().matches('\n').count();
        if lines == 0 {
            return Ok(id);
        }
        let start = line_of(&self.record);
        Err(CliError::file(
            &self.path,
            format!(
                "line {start}: an identifier spans lines {start} to {}: a quote (\") opened \
                 there is not closed, which joins the lines after it; remove the stray quote \
                 or close it",
                start + lines as u64
            ),
        ))
    }

    /// The device in the current record.
    fn device(&self) -> Result<pb::DeviceInput, CliError> {
        let record = &self.record;
        let cell = |i: usize| {
            record
                .get(i)
                .map(|f| unneutralise(&String::from_utf8_lossy(f)).to_owned())
                .unwrap_or_default()
        };
        match &self.shape {
            Shape::Header(columns) => {
                let default = wire_kind(columns.id_kind);
                let secondary_ids = columns
                    .secondary
                    .iter()
                    .map(|&i| cell(i))
                    .filter(|id| !id.trim().is_empty())
                    .map(|id| self.one_line(id))
                    .collect::<Result<_, _>>()?;
                Ok(pb::DeviceInput {
                    device_id: self.one_line(cell(columns.id))?,
                    id_kind: columns
                        .kind
                        .map_or(default, |k| kind_cell(&cell(k), default)),
                    model: columns.model.map(cell).unwrap_or_default(),
                    secondary_ids,
                })
            }
            Shape::Headerless => {
                let values: Vec<String> = (0..record.len())
                    .map(cell)
                    .filter(|c| !c.trim().is_empty())
                    .collect();
                if values.len() > 1 {
                    // Taking one of them would upload a model or a second identifier as
                    // a device, or drop one silently.
                    let shown: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
                    return Err(CliError::file(
                        &self.path,
                        format!(
                            "line {}: a file without a header has one identifier per line, \
                             but this line has {} values ({}); add a header line naming the \
                             columns (e.g. imei,model or imei1,imei2)",
                            line_of(record),
                            values.len(),
                            shown.join(", ")
                        ),
                    ));
                }
                Ok(pb::DeviceInput {
                    device_id: self.one_line(values.into_iter().next().unwrap_or_default())?,
                    id_kind: 0,
                    model: String::new(),
                    secondary_ids: Vec::new(),
                })
            }
        }
    }

    /// Reads the next non-blank record as a device.
    fn read_device(&mut self) -> Result<Option<pb::DeviceInput>, CliError> {
        loop {
            let more = self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(|e| file_error(&self.path, e))?;
            if !more {
                return Ok(None);
            }
            if !is_blank(&self.record) {
                return self.device().map(Some);
            }
        }
    }

    /// The next device, or `None` at the end of the file.
    ///
    /// # Errors
    /// When the file cannot be read, is not valid in its encoding, or a line without a
    /// header holds more than one value.
    pub fn next_device(&mut self) -> Result<Option<pb::DeviceInput>, CliError> {
        match self.pending.take() {
            Some(device) => Ok(Some(device)),
            None => self.read_device(),
        }
    }

    /// Reads the whole file once and counts its devices, so a file that cannot be read
    /// to its end is refused before anything is sent.
    ///
    /// # Errors
    /// The first fault [`DeviceFile::open`] or [`DeviceFile::next_device`] meets.
    pub fn count(path: &Path, options: ReadOptions) -> Result<u64, CliError> {
        let mut file = Self::open(path, options)?;
        let mut devices = 0;
        while file.next_device()?.is_some() {
            devices += 1;
        }
        Ok(devices)
    }
}

#[cfg(test)]
mod tests;
