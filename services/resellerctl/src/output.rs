//! Printing results as a table, JSON or CSV.
//!
//! Results are plain structs ([`crate::views`]) that serialise to JSON and know their
//! columns. Lists stream: CSV and JSON rows are written as pages arrive; a table waits
//! for its rows so it can align them. Notes for people (paging hints, progress) go to
//! standard error so standard output stays parseable.

use std::io::{self, Write};

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::errors::CliError;

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
    /// A printer for `format`.
    pub fn new(format: OutputFormat) -> Self {
        Self { format }
    }

    /// The chosen format.
    pub fn format(&self) -> OutputFormat {
        self.format
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
                let mut w = csv::Writer::from_writer(io::stdout().lock());
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
                let w = self
                    .csv
                    .get_or_insert_with(|| csv::Writer::from_writer(io::stdout()));
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
                    let mut w = csv::Writer::from_writer(io::stdout());
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
