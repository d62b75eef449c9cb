//! Printing results as a table, JSON or CSV.
//!
//! Results are plain structs ([`crate::views`]) that serialise to JSON and know their
//! columns. Lists stream: CSV and JSON rows are written as pages arrive; a table waits
//! for its rows so it can align them. Notes for people (paging hints, progress) go to
//! standard error so standard output stays parseable. With `--excel`, CSV starts with a
//! UTF-8 byte-order mark, without which Excel reads UTF-8 as the local code page and
//! garbles accented company names.

use std::io::{self, Write};

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::errors::CliError;

/// The UTF-8 byte-order mark `--excel` puts before CSV.
pub const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// Something printable as a row.
pub trait Record: Serialize {
    /// How `-o csv` writes these rows: plain CSV unless the portal downloads the same
    /// rows as a file.
    const CSV_DIALECT: CsvDialect = CsvDialect::Plain;

    /// Column names, as a table (and, unless [`Record::csv_headers`] says otherwise, CSV)
    /// shows them.
    fn headers() -> &'static [&'static str];
    /// The cells of this row, in column order.
    fn cells(&self) -> Vec<String>;

    /// The columns `-o csv` writes: the table's, unless the portal's download of the
    /// same rows names them otherwise.
    fn csv_headers() -> &'static [&'static str] {
        Self::headers()
    }
    /// The cells `-o csv` writes, in [`Record::csv_headers`] order.
    fn csv_cells(&self) -> Vec<String> {
        self.cells()
    }
}

/// The two ways resellerctl writes CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvDialect {
    /// The `csv` crate's defaults: LF line ends, a cell quoted when it holds a comma, a
    /// quote or a line break. Every list the portal does not download as a file.
    Plain,
    /// The portal's CSV downloads (DOMAIN.md "CSV downloads", as reporting-service's
    /// `csv_export` writes them): CRLF line ends, a cell quoted also when it holds a
    /// semicolon or another control character, and `'` before a cell a spreadsheet
    /// would run as a formula. For rows the portal also downloads, so that `-o csv` and
    /// the download of the same rows are the same bytes.
    Download,
}

/// Whether a spreadsheet would run `cell` as a formula: it begins with `=`, `+`, `-`,
/// `@`, tab or carriage return (DOMAIN.md "CSV downloads").
fn is_formula(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// One line of a [`CsvDialect::Download`] file, CRLF included: each cell after a `'`
/// when [`is_formula`], quoted (its quotes doubled) when it holds a comma, a quote, a
/// semicolon or a control character.
///
/// The download leaves fixed labels (the header, `IMEI`, `yes`) unguarded; none of
/// them begins like a formula, so guarding every cell writes the same bytes.
fn download_line<S: AsRef<str>>(cells: &[S]) -> String {
    let mut line = String::new();
    for (n, cell) in cells.iter().map(AsRef::as_ref).enumerate() {
        if n > 0 {
            line.push(',');
        }
        let guard = if is_formula(cell) { "'" } else { "" };
        let quoted = cell
            .chars()
            .any(|c| matches!(c, ',' | '"' | ';') || c.is_ascii_control());
        if quoted {
            line.push('"');
            line.push_str(guard);
            line.push_str(&cell.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(guard);
            line.push_str(cell);
        }
    }
    line.push_str("\r\n");
    line
}

/// CSV rows in one [`CsvDialect`], on standard output (or, in tests, into a buffer).
enum CsvOut<W: Write = io::Stdout> {
    // Boxed: the `csv` crate's writer carries its own buffer and state.
    Plain(Box<csv::Writer<W>>),
    Download(io::BufWriter<W>),
}

impl CsvOut {
    /// Starts `T`'s CSV on standard output.
    ///
    /// # Errors
    /// When standard output cannot be written.
    fn stdout<T: Record>(excel: bool) -> Result<Self, CliError> {
        Self::start::<T>(io::stdout(), excel)
    }
}

impl<W: Write> CsvOut<W> {
    /// Starts `T`'s CSV on `out`: the byte-order mark when `excel`, then the header.
    ///
    /// # Errors
    /// When `out` cannot be written.
    fn start<T: Record>(mut out: W, excel: bool) -> Result<Self, CliError> {
        if excel {
            out.write_all(BYTE_ORDER_MARK)?;
        }
        let mut csv = match T::CSV_DIALECT {
            CsvDialect::Plain => CsvOut::Plain(Box::new(csv::Writer::from_writer(out))),
            CsvDialect::Download => CsvOut::Download(io::BufWriter::new(out)),
        };
        csv.row(T::csv_headers())?;
        Ok(csv)
    }

    /// One row.
    ///
    /// # Errors
    /// When the output cannot be written.
    fn row<S: AsRef<str>>(&mut self, cells: &[S]) -> Result<(), CliError> {
        match self {
            CsvOut::Plain(w) => w.write_record(cells.iter().map(AsRef::as_ref))?,
            CsvOut::Download(w) => w.write_all(download_line(cells).as_bytes())?,
        }
        Ok(())
    }

    /// Writes out what is buffered.
    ///
    /// # Errors
    /// When the output cannot be written.
    fn flush(&mut self) -> Result<(), CliError> {
        match self {
            CsvOut::Plain(w) => w.flush()?,
            CsvOut::Download(w) => w.flush()?,
        }
        Ok(())
    }
}

/// Prints results in the chosen format to standard output.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    format: OutputFormat,
    excel: bool,
}

fn table() -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_content_arrangement(ContentArrangement::Disabled);
    table
}

fn print_table(table: &Table) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    for line in table.lines() {
        // comfy-table pads the first column with one space; trim it away like kubectl.
        writeln!(
            out,
            "{}",
            line.strip_prefix(' ').unwrap_or(&line).trim_end()
        )?;
    }
    out.flush()?;
    Ok(())
}

impl Printer {
    /// A printer for `format`; `excel` starts CSV with a byte-order mark.
    pub fn new(format: OutputFormat, excel: bool) -> Self {
        Self { format, excel }
    }

    /// The chosen format.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Whether CSV is for Excel (`--excel`): files resellerctl writes get a byte-order
    /// mark too.
    pub fn excel(&self) -> bool {
        self.excel
    }

    /// One object: a table of field and value (empty fields left out), a JSON object,
    /// or CSV with one row.
    ///
    /// # Errors
    /// When standard output cannot be written.
    pub fn one<T: Record>(&self, item: &T) -> Result<(), CliError> {
        match self.format {
            OutputFormat::Table => {
                let mut t = table();
                // Empty fields are left out: they are noise in a field-value listing.
                for (header, cell) in T::headers().iter().zip(item.cells()) {
                    if !cell.is_empty() {
                        t.add_row(vec![format!("{header}:"), cell]);
                    }
                }
                print_table(&t)
            }
            OutputFormat::Json => self.json(item),
            OutputFormat::Csv => {
                let mut csv = CsvOut::stdout::<T>(self.excel)?;
                csv.row(&item.csv_cells())?;
                csv.flush()
            }
        }
    }

    /// Any serialisable value as pretty JSON.
    ///
    /// # Errors
    /// When standard output cannot be written.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), CliError> {
        let mut out = io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        out.flush()?;
        Ok(())
    }

    /// Starts a list.
    pub fn list<T: Record>(&self) -> ListWriter<T> {
        ListWriter {
            format: self.format,
            excel: self.excel,
            rows: Vec::new(),
            started: false,
            count: 0,
            csv: None,
        }
    }

    /// A whole list at once.
    ///
    /// # Errors
    /// When standard output cannot be written.
    pub fn all<T: Record>(&self, rows: Vec<T>) -> Result<(), CliError> {
        let mut list = self.list();
        list.push(rows)?;
        list.finish()?;
        Ok(())
    }
}

/// A list being printed, page by page.
pub struct ListWriter<T: Record> {
    format: OutputFormat,
    excel: bool,
    /// A table's rows, printed together by `finish` (aligned).
    rows: Vec<T>,
    /// JSON: the opening `[` is written.
    started: bool,
    count: usize,
    /// CSV: the writer, from the first page on (header written).
    csv: Option<CsvOut>,
}

impl<T: Record> std::fmt::Debug for ListWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListWriter")
            .field("count", &self.count)
            .finish()
    }
}

impl<T: Record> ListWriter<T> {
    /// Adds a page of rows.
    ///
    /// # Errors
    /// When standard output cannot be written.
    pub fn push(&mut self, rows: Vec<T>) -> Result<(), CliError> {
        self.count += rows.len();
        match self.format {
            OutputFormat::Table => self.rows.extend(rows),
            OutputFormat::Csv => {
                let csv = match self.csv.take() {
                    Some(csv) => self.csv.insert(csv),
                    None => self.csv.insert(CsvOut::stdout::<T>(self.excel)?),
                };
                for row in rows {
                    csv.row(&row.csv_cells())?;
                }
                csv.flush()?;
            }
            OutputFormat::Json => {
                let mut out = io::stdout().lock();
                for row in rows {
                    out.write_all(if self.started { b",\n  " } else { b"[\n  " })?;
                    self.started = true;
                    serde_json::to_writer(&mut out, &row)?;
                }
                out.flush()?;
            }
        }
        Ok(())
    }

    /// Ends the list; returns how many rows it had.
    ///
    /// # Errors
    /// When standard output cannot be written.
    pub fn finish(mut self) -> Result<usize, CliError> {
        match self.format {
            OutputFormat::Table => {
                if self.rows.is_empty() {
                    eprintln!("(none)");
                } else {
                    let mut t = table();
                    t.set_header(T::headers().to_vec());
                    for row in &self.rows {
                        t.add_row(row.cells());
                    }
                    print_table(&t)?;
                }
            }
            OutputFormat::Csv => match self.csv.as_mut() {
                Some(csv) => csv.flush()?,
                // No page came: the header alone.
                None => CsvOut::stdout::<T>(self.excel)?.flush()?,
            },
            OutputFormat::Json => {
                let mut out = io::stdout().lock();
                out.write_all(if self.started { b"\n]\n" } else { b"[]\n" })?;
                out.flush()?;
            }
        }
        Ok(self.count)
    }
}

/// A note for people, on standard error (never mixed into parseable output).
pub fn note(message: impl std::fmt::Display) {
    eprintln!("{message}");
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use reseller_proto::v1 as pb;

    use super::*;
    use crate::views::{CustomerDeviceView, RejectionView};

    /// `rows` as `-o csv` (with `--excel` when `excel`) writes them.
    fn written<T: Record>(rows: &[T], excel: bool) -> String {
        let mut bytes = Vec::new();
        let mut out = CsvOut::start::<T>(&mut bytes, excel).unwrap();
        for row in rows {
            out.row(&row.csv_cells()).unwrap();
        }
        out.flush().unwrap();
        drop(out);
        String::from_utf8(bytes).unwrap()
    }

    fn customer_device(
        order_number: &str,
        device_id: &str,
        kind: pb::DeviceIdKind,
        model: &str,
        via_msp_id: Option<&str>,
    ) -> CustomerDeviceView {
        let mut view = CustomerDeviceView::from(pb::CustomerDevice {
            device_id: device_id.into(),
            id_kind: kind as i32,
            model: model.into(),
            upload_id: "01900000-0000-7000-8000-000000000001".into(),
            uploaded_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 250_000_000,
            }),
            order_number: order_number.into(),
            r#virtual: via_msp_id.is_some(),
        });
        view.via_msp_id = via_msp_id.unwrap_or_default().into();
        view
    }

    #[test]
    fn a_customers_devices_are_written_as_its_download() {
        let devices = [
            customer_device(
                "PO, 7",
                "356938035643809",
                pb::DeviceIdKind::Imei,
                "Galaxy S26",
                None,
            ),
            customer_device(
                "=cmd",
                "-R58M",
                pb::DeviceIdKind::Serial,
                "@model",
                Some("200001"),
            ),
            customer_device("", "A0000000002329", pb::DeviceIdKind::Meid, "", None),
        ];
        // reporting-service's own test of the same rows (export.rs,
        // `the_devices_file_has_the_domain_columns`): the same bytes.
        let download = "Upload ID,Uploaded At,Order Number,Device ID,Device Type,Model,Virtual Upload,Via MSP\r\n\
             01900000-0000-7000-8000-000000000001,2023-11-14T22:13:20.25Z,\"PO, 7\",356938035643809,IMEI,Galaxy S26,no,\r\n\
             01900000-0000-7000-8000-000000000001,2023-11-14T22:13:20.25Z,'=cmd,'-R58M,Serial,'@model,yes,200001\r\n\
             01900000-0000-7000-8000-000000000001,2023-11-14T22:13:20.25Z,,A0000000002329,MEID,,no,\r\n";
        assert_eq!(written(&devices, false), download);
        assert_eq!(written(&devices, true), format!("\u{feff}{download}"));
        // An empty list is the header alone.
        assert_eq!(
            written::<CustomerDeviceView>(&[], false),
            download.split_inclusive("\r\n").next().unwrap()
        );
        // JSON and the table keep their own fields and columns.
        let json = serde_json::to_value(&devices[1]).unwrap();
        assert_eq!(json["kind"], "serial");
        assert_eq!(json["uploaded_at"], "2023-11-14T22:13:20.25Z");
        assert!(json.get("via_msp_id").is_none(), "{json}");
        assert_eq!(CustomerDeviceView::headers()[0], "DEVICE ID");
        assert_eq!(devices[1].cells()[4], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn download_cells_are_guarded_and_quoted_as_the_downloads_are() {
        assert_eq!(
            download_line(&[
                "a;b",
                "=x,y",
                "\tt",
                "say \"hi\"",
                "two\nlines",
                "Müller",
                "+1",
                ""
            ]),
            "\"a;b\",\"'=x,y\",\"'\tt\",\"say \"\"hi\"\"\",\"two\nlines\",Müller,'+1,\r\n"
        );
    }

    #[test]
    fn other_lists_stay_plain_csv() {
        let rejections = [RejectionView::from(pb::DeviceRejection {
            index: 3,
            device_id: "-R58M".into(),
            reason: pb::RejectionReason::InvalidId as i32,
            message: "IMEI fails, Luhn".into(),
        })];
        assert_eq!(
            written(&rejections, false),
            "index,device_id,reason,message\n3,-R58M,invalid_id,\"IMEI fails, Luhn\"\n"
        );
    }
}
