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
use reseller_kit::csv::CsvChunker;
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::errors::CliError;

/// The UTF-8 byte-order mark `--excel` puts before CSV.
pub const BYTE_ORDER_MARK: &[u8] = reseller_kit::csv::UTF8_BOM;

/// Something printable as a row.
pub trait Record: Serialize {
    /// How `-o csv` writes these rows: plain CSV unless the portal downloads the same
    /// rows as a file.
    const CSV_DIALECT: CsvDialect = CsvDialect::Plain;

    /// Column names, as a table (and plain CSV) shows them.
    fn headers() -> &'static [&'static str];
    /// The cells of this row, in column order.
    fn cells(&self) -> Vec<String>;

    /// Writes this row as the portal's download of the same rows does, for
    /// [`CsvDialect::Download`] (the row's line of `reseller_kit::csv`, in that file's
    /// header order). By default, the table's cells as text cells.
    fn write_download(&self, out: &mut CsvChunker) {
        for cell in self.cells() {
            out.text(&cell);
        }
    }
}

/// The two ways resellerctl writes CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvDialect {
    /// The `csv` crate's defaults: LF line ends, a cell quoted when it holds a comma, a
    /// quote or a line break; the table's columns. Every list the portal does not
    /// download as a file.
    Plain,
    /// The portal's download of the same rows, whose header this is: written by
    /// `reseller_kit::csv`'s writer, as reporting-service writes the download (DOMAIN.md
    /// "CSV downloads": CRLF line ends, a cell quoted also when it holds a semicolon or
    /// another control character, `'` before a cell a spreadsheet would run as a
    /// formula), so `-o csv` and the download of the same rows are the same bytes.
    Download(&'static [&'static str]),
}

/// CSV rows in one [`CsvDialect`], on standard output (or, in tests, into a buffer).
enum CsvOut<W: Write = io::Stdout> {
    // Boxed: the `csv` crate's writer carries its own buffer and state.
    Plain(Box<csv::Writer<W>>),
    Download { out: W, file: Box<CsvChunker> },
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
        Ok(match T::CSV_DIALECT {
            CsvDialect::Plain => {
                if excel {
                    out.write_all(BYTE_ORDER_MARK)?;
                }
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(T::headers())?;
                CsvOut::Plain(Box::new(csv))
            }
            CsvDialect::Download(header) => CsvOut::Download {
                out,
                file: Box::new(CsvChunker::starting(header, excel)),
            },
        })
    }

    /// One row.
    ///
    /// # Errors
    /// When the output cannot be written.
    fn row<T: Record>(&mut self, row: &T) -> Result<(), CliError> {
        match self {
            CsvOut::Plain(w) => w.write_record(row.cells())?,
            CsvOut::Download { out, file } => {
                row.write_download(file);
                if let Some(chunk) = file.end_row() {
                    out.write_all(&chunk)?;
                }
            }
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
            CsvOut::Download { out, file } => {
                out.write_all(&file.take())?;
                out.flush()?;
            }
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
                csv.row(item)?;
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
                for row in &rows {
                    csv.row(row)?;
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
    use crate::views::{CustomerDeviceView, CustomerRowView, RejectionView};

    /// `rows` as `-o csv` (with `--excel` when `excel`) writes them.
    fn written<T: Record>(rows: &[T], excel: bool) -> String {
        let mut bytes = Vec::new();
        let mut out = CsvOut::start::<T>(&mut bytes, excel).unwrap();
        for row in rows {
            out.row(row).unwrap();
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
        // reporting-service's own test of the same rows (grpc/csv.rs,
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

    /// A customer row as `ListCustomers` answers it (Knox ID 123456, DE).
    fn customer_row(
        company_name: &str,
        internal_reference: &str,
        managing_msp_id: &str,
        status: pb::CustomerStatus,
    ) -> pb::CustomerRow {
        pb::CustomerRow {
            knox_id: "123456".into(),
            kind: pb::AccountKind::Customer as i32,
            company_name: company_name.into(),
            internal_reference: internal_reference.into(),
            display_id: if managing_msp_id.is_empty() {
                "123456"
            } else {
                managing_msp_id
            }
            .into(),
            managing_msp_id: managing_msp_id.into(),
            country: "DE".into(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn customer_rows_are_written_as_the_customers_download() {
        let managed = pb::CustomerRow {
            last_uploaded_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            uploaded_devices: 12,
            devices: 10,
            ..customer_row("=Evil", "PO 1, 2", "999999", pb::CustomerStatus::Active)
        };
        let rows = [
            customer_row("Acme", "PO-7", "", pb::CustomerStatus::PendingVerification),
            managed,
            customer_row("Beta", "", "", pb::CustomerStatus::Inactive),
        ]
        .map(CustomerRowView::from);
        // reporting-service's own test of the same rows (grpc/csv.rs,
        // `the_customers_file_has_the_domain_columns`): the same bytes.
        let download = "Company Name / Internal Reference,Customer ID / MSP ID,Country,Last Uploaded,Uploads,Devices,Status\r\n\
             Acme / PO-7,123456,DE,,0,0,Pending customer verification\r\n\
             \"'=Evil / PO 1, 2\",999999,DE,2023-11-14T22:13:20Z,12,10,Active\r\n\
             Beta,123456,DE,,0,0,Inactive\r\n";
        assert_eq!(written(&rows, false), download);
        assert_eq!(written(&rows, true), format!("\u{feff}{download}"));
        assert_eq!(
            written::<CustomerRowView>(&[], false),
            download.split_inclusive("\r\n").next().unwrap()
        );
        // The table keeps its columns: the MSP tag, times to the second.
        assert_eq!(rows[1].cells()[1], "999999 [MSP]");
        // Times to their full precision, as the download writes them.
        let precise = CustomerRowView::from(pb::CustomerRow {
            last_uploaded_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_000,
            }),
            ..customer_row("Acme", "", "", pb::CustomerStatus::Active)
        });
        assert!(written(&[precise], false).contains(",2023-11-14T22:13:20.123456Z,"));
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
