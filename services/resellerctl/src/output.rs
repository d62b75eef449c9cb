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
    /// Column names, as a table and CSV show them.
    fn headers() -> &'static [&'static str];
    /// The cells of this row, in column order.
    fn cells(&self) -> Vec<String>;
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

    /// A CSV writer on standard output, after the byte-order mark when `--excel`.
    fn csv_out(excel: bool) -> Result<csv::Writer<io::Stdout>, CliError> {
        let mut out = io::stdout();
        if excel {
            out.write_all(BYTE_ORDER_MARK)?;
        }
        Ok(csv::Writer::from_writer(out))
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
                let mut w = Self::csv_out(self.excel)?;
                w.write_record(T::headers())?;
                w.write_record(item.cells())?;
                w.flush()?;
                Ok(())
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
    rows: Vec<T>,
    started: bool,
    count: usize,
    csv: Option<csv::Writer<io::Stdout>>,
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
                let w = match self.csv.take() {
                    Some(w) => self.csv.insert(w),
                    None => self.csv.insert(Printer::csv_out(self.excel)?),
                };
                if !self.started {
                    w.write_record(T::headers())?;
                    self.started = true;
                }
                for row in rows {
                    w.write_record(row.cells())?;
                }
                w.flush()?;
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
            OutputFormat::Csv => {
                if !self.started {
                    let mut w = Printer::csv_out(self.excel)?;
                    w.write_record(T::headers())?;
                    w.flush()?;
                } else if let Some(w) = self.csv.as_mut() {
                    w.flush()?;
                }
            }
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
