//! Device files: reading them row by row, checking them locally (`--dry-run`), streaming
//! them to `DeviceService.UploadDevices`, and writing the rejected rows.
//!
//! A file is CSV with a header naming the identifier column (`device_id`, `imei`,
//! `meid`, `serial` or `id`; optional `model` and `kind` columns), or one identifier per
//! line (the first column when a headerless line has several). Rows are numbered from 0
//! in file order, not counting the header: that number is the upload's `index`, so the
//! service's rejections and the dry run's name the same rows. Every data row is sent,
//! even an empty one, so the numbering never shifts.
//!
//! The file is never loaded whole: a blocking reader thread turns rows into batches and
//! feeds a small bounded channel that is the request stream, so memory stays flat and
//! reading waits for the network.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reseller_kit::device_id::{DeviceIdKind, parse_input};
use reseller_proto::v1::{self as pb, upload_devices_request::Item};
use tokio::sync::mpsc;

use crate::client::Portal;
use crate::errors::CliError;
use crate::output::Record;
use crate::views::{ReasonCounts, RejectionView};

/// Header names that mark the identifier column, in order of preference, with the kind
/// the name implies (`None`: infer it per row).
const ID_COLUMNS: &[(&str, Option<DeviceIdKind>)] = &[
    ("device_id", None),
    ("deviceid", None),
    ("device id", None),
    ("imei", Some(DeviceIdKind::Imei)),
    ("meid", Some(DeviceIdKind::Meid)),
    ("serial", Some(DeviceIdKind::Serial)),
    ("serial_number", Some(DeviceIdKind::Serial)),
    ("serial number", Some(DeviceIdKind::Serial)),
    ("id", None),
];
const MODEL_COLUMNS: &[&str] = &["model"];
const KIND_COLUMNS: &[&str] = &["kind", "id_kind", "type"];

/// The request stream's source: `None` means the file failed.
type Receiver = mpsc::Receiver<Option<pb::UploadDevicesRequest>>;

/// Batches in flight between the reader thread and the network.
const CHANNEL_BATCHES: usize = 4;

/// Where the columns are.
#[derive(Debug, Clone)]
struct Columns {
    id: usize,
    model: Option<usize>,
    kind: Option<usize>,
    /// The kind the identifier column's name implies.
    default_kind: i32,
}

/// `reseller.v1.DeviceIdKind` as the wire carries it.
fn wire_kind(kind: Option<DeviceIdKind>) -> i32 {
    kind.map_or(0, |k| i32::from(k.as_i16()))
}

/// A kind cell: empty means the column's default; an unknown word becomes -1, which the
/// shared parser (and so the service) rejects as an unknown kind.
fn kind_cell(text: &str, default: i32) -> i32 {
    match text.trim().to_ascii_lowercase().as_str() {
        "" => default,
        "imei" | "1" | "device_id_kind_imei" => wire_kind(Some(DeviceIdKind::Imei)),
        "meid" | "2" | "device_id_kind_meid" => wire_kind(Some(DeviceIdKind::Meid)),
        "serial" | "serial number" | "serial_number" | "3" | "device_id_kind_serial" => {
            wire_kind(Some(DeviceIdKind::Serial))
        }
        "auto" | "infer" | "0" => 0,
        _ => -1,
    }
}

fn header_name(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_start_matches('\u{feff}')
        .trim()
        .to_ascii_lowercase()
}

/// The columns a header names, or `None` when the line is not a header.
fn columns_of(header: &csv::ByteRecord) -> Option<Columns> {
    let names: Vec<String> = header.iter().map(header_name).collect();
    let find = |wanted: &str| names.iter().position(|n| n == wanted);
    let (id, default_kind) = ID_COLUMNS
        .iter()
        .find_map(|(name, kind)| find(name).map(|i| (i, wire_kind(*kind))))?;
    Some(Columns {
        id,
        model: MODEL_COLUMNS.iter().find_map(|n| find(n)),
        kind: KIND_COLUMNS.iter().find_map(|n| find(n)),
        default_kind,
    })
}

fn text(record: &csv::ByteRecord, column: Option<usize>) -> String {
    column
        .and_then(|c| record.get(c))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// A device file, read one row at a time.
pub struct DeviceFile {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    columns: Columns,
    /// The first line, when it turned out to be data.
    pending: Option<csv::ByteRecord>,
    record: csv::ByteRecord,
    len: u64,
}

impl std::fmt::Debug for DeviceFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceFile")
            .field("path", &self.path)
            .finish()
    }
}

impl DeviceFile {
    /// Opens `path` and reads its first line to tell a header from data.
    ///
    /// # Errors
    /// When the file cannot be opened or read.
    pub fn open(path: &Path, no_header: bool) -> Result<Self, CliError> {
        let file = File::open(path).map_err(|e| CliError::file(path, e))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(256 * 1024)
            .from_reader(BufReader::with_capacity(256 * 1024, file));
        let mut first = csv::ByteRecord::new();
        let has_first = reader
            .read_byte_record(&mut first)
            .map_err(|e| CliError::file(path, e))?;
        let header = if has_first && !no_header {
            columns_of(&first)
        } else {
            None
        };
        let (columns, pending) = match header {
            Some(columns) => (columns, None),
            None => {
                // A UTF-8 byte-order mark belongs to the file, not to the first ID.
                if let Some(rest) = first
                    .get(0)
                    .and_then(|field| field.strip_prefix("\u{feff}".as_bytes()))
                {
                    let mut fixed = csv::ByteRecord::new();
                    fixed.push_field(rest);
                    for f in first.iter().skip(1) {
                        fixed.push_field(f);
                    }
                    first = fixed;
                }
                let columns = Columns {
                    id: 0,
                    model: None,
                    kind: None,
                    default_kind: 0,
                };
                (columns, has_first.then_some(first))
            }
        };
        Ok(Self {
            path: path.to_owned(),
            reader,
            columns,
            pending,
            record: csv::ByteRecord::new(),
            len,
        })
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.reader.position().byte()
    }

    fn device(&self, record: &csv::ByteRecord) -> pb::DeviceInput {
        let kind = match self.columns.kind {
            Some(_) => kind_cell(&text(record, self.columns.kind), self.columns.default_kind),
            None => self.columns.default_kind,
        };
        pb::DeviceInput {
            device_id: text(record, Some(self.columns.id)),
            id_kind: kind,
            model: text(record, self.columns.model),
            secondary_ids: Vec::new(),
        }
    }

    /// The next device, or `None` at the end of the file.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn next_device(&mut self) -> Result<Option<pb::DeviceInput>, CliError> {
        if let Some(first) = self.pending.take() {
            return Ok(Some(self.device(&first)));
        }
        let mut record = std::mem::take(&mut self.record);
        let more = self
            .reader
            .read_byte_record(&mut record)
            .map_err(|e| CliError::file(&self.path, e))?;
        let device = more.then(|| self.device(&record));
        self.record = record;
        Ok(device)
    }
}

/// The default rejects file of `file`: `<FILE>.rejects.csv`.
pub fn default_rejects_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".rejects.csv");
    PathBuf::from(name)
}

/// Writes rejected rows (`index,device_id,reason,message`).
pub struct RejectsWriter {
    path: PathBuf,
    writer: csv::Writer<File>,
}

impl std::fmt::Debug for RejectsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectsWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl RejectsWriter {
    /// Creates (or truncates) `path` and writes the header.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn create(path: &Path) -> Result<Self, CliError> {
        let mut writer = csv::Writer::from_path(path).map_err(|e| CliError::file(path, e))?;
        writer
            .write_record(RejectionView::headers())
            .map_err(|e| CliError::file(path, e))?;
        Ok(Self {
            path: path.to_owned(),
            writer,
        })
    }

    /// Writes one row.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&mut self, rejection: &RejectionView) -> Result<(), CliError> {
        self.writer
            .write_record(rejection.cells())
            .map_err(|e| CliError::file(&self.path, e))
    }

    /// Flushes and closes the file.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn finish(mut self) -> Result<PathBuf, CliError> {
        self.writer
            .flush()
            .map_err(|e| CliError::file(&self.path, e))?;
        Ok(self.path)
    }
}

/// What a dry run found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DryRunReport {
    /// Data rows in the file.
    pub rows: i64,
    /// Rows the service would try to register.
    pub valid: i64,
    /// Rows it would reject.
    pub rejected: i64,
    /// The rejected rows by reason (never `already_registered`: only the service knows).
    pub rejected_by_reason: ReasonCounts,
    /// Where the rejected rows were written.
    pub rejects_file: Option<String>,
}

impl Record for DryRunReport {
    fn headers() -> &'static [&'static str] {
        &[
            "ROWS",
            "VALID",
            "REJECTED",
            "REJECTED BY REASON",
            "REJECTS FILE",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.rows.to_string(),
            self.valid.to_string(),
            self.rejected.to_string(),
            self.rejected_by_reason.describe(),
            self.rejects_file.clone().unwrap_or_default(),
        ]
    }
}

/// Checks every row of `file` with the service's parser, numbering rows as an upload
/// does and finding repeats within the file; `on_reject` gets each rejected row in
/// order.
///
/// # Errors
/// When the file cannot be read, or `on_reject` fails.
pub fn dry_run(
    file: &mut DeviceFile,
    mut on_reject: impl FnMut(RejectionView) -> Result<(), CliError>,
) -> Result<DryRunReport, CliError> {
    // First index of each valid device, by its normalised ID, as the service ranks them.
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut counts = ReasonCounts::default();
    let mut index: i64 = 0;
    let mut valid: i64 = 0;
    while let Some(input) = file.next_device()? {
        let rejection = match parse_input(&input.device_id, input.id_kind, &input.model) {
            Err(message) => Some(RejectionView {
                index,
                device_id: input.device_id.trim().to_owned(),
                reason: "invalid_id",
                message,
            }),
            Ok((device, _model)) => {
                let id = device.into_string();
                match seen.get(&id) {
                    Some(first) => Some(RejectionView {
                        index,
                        message: format!("duplicate of the device at index {first}"),
                        device_id: id,
                        reason: "duplicate_in_upload",
                    }),
                    None => {
                        seen.insert(id, index);
                        valid += 1;
                        None
                    }
                }
            }
        };
        if let Some(rejection) = rejection {
            counts.add(rejection.reason);
            on_reject(rejection)?;
        }
        index += 1;
    }
    Ok(DryRunReport {
        rows: index,
        valid,
        rejected: index - valid,
        rejected_by_reason: counts,
        rejects_file: None,
    })
}

/// What the upload sent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Devices streamed.
    pub devices: u64,
    /// From the first device to the last one handed to the connection.
    pub streamed: Duration,
    /// From the first device to the service's answer.
    pub elapsed: Duration,
}

/// Progress shared between the reader thread and the display.
#[derive(Debug, Default)]
struct Counters {
    devices: AtomicU64,
    bytes: AtomicU64,
}

/// Shows progress: a bar on a terminal, a plain line every few seconds otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    total_bytes: u64,
}

impl Progress {
    fn new(total_bytes: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total_bytes.max(1)),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {percent:>3}% {msg} ({elapsed}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            started: now,
            last_line: now,
            total_bytes,
        }
    }

    fn rate(&self, devices: u64) -> f64 {
        devices as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    fn update(&mut self, counters: &Counters) {
        let devices = counters.devices.load(Ordering::Relaxed);
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let rate = self.rate(devices);
        match &self.bar {
            Some(bar) => {
                bar.set_position(bytes);
                bar.set_message(format!("{devices} devices sent, {rate:.0} devices/s"));
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(2) {
                    self.last_line = Instant::now();
                    let percent = if self.total_bytes == 0 {
                        100.0
                    } else {
                        bytes as f64 * 100.0 / self.total_bytes as f64
                    };
                    eprintln!(
                        "sent {devices} devices ({percent:.0}% of the file), {rate:.0} devices/s"
                    );
                }
            }
        }
    }

    fn waiting(&mut self, devices: u64) {
        let rate = self.rate(devices);
        let message = format!(
            "sent {devices} devices in {:.1}s ({rate:.0} devices/s); the portal is registering them",
            self.started.elapsed().as_secs_f64()
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.total_bytes.max(1));
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(message);
                bar.enable_steady_tick(Duration::from_millis(100));
            }
            None => eprintln!("{message}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Reads `file` into batches of `batch_size` on the calling (blocking) thread and sends
/// them. On a read error the stream is left hanging (never ended) so the service cannot
/// mistake a cut file for a complete one; the caller then cancels the call.
fn read_batches(
    mut file: DeviceFile,
    batch_size: usize,
    tx: mpsc::Sender<Option<pb::UploadDevicesRequest>>,
    counters: Arc<Counters>,
) -> Result<u64, CliError> {
    let mut sent = 0u64;
    loop {
        let mut devices = Vec::with_capacity(batch_size);
        let failure = loop {
            if devices.len() == batch_size {
                break None;
            }
            match file.next_device() {
                Ok(Some(device)) => devices.push(device),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if let Some(err) = failure {
            let _ = tx.blocking_send(None);
            return Err(err);
        }
        if devices.is_empty() {
            return Ok(sent);
        }
        let n = devices.len() as u64;
        let message = pb::UploadDevicesRequest {
            item: Some(Item::Batch(pb::DeviceBatch { devices })),
        };
        if tx.blocking_send(Some(message)).is_err() {
            // The call ended early (the service refused it); its answer says why.
            return Ok(sent);
        }
        sent += n;
        counters.devices.store(sent, Ordering::Relaxed);
        counters.bytes.store(file.position(), Ordering::Relaxed);
    }
}

/// Streams `file` to the service as one upload with `header`.
///
/// # Errors
/// The service's refusal, a lost connection, or a file that cannot be read (in which
/// case the upload is cancelled and nothing is registered).
pub async fn upload(
    portal: &Portal,
    file: DeviceFile,
    header: pb::UploadHeader,
    batch_size: usize,
) -> Result<(pb::Upload, Sent), CliError> {
    let counters = Arc::new(Counters::default());
    let mut progress = Progress::new(file.len());
    let (tx, rx) = mpsc::channel::<Option<pb::UploadDevicesRequest>>(CHANNEL_BATCHES);
    let header = pb::UploadDevicesRequest {
        item: Some(Item::Header(header)),
    };
    // `None` means "the file failed": the stream then never ends, and the call is
    // dropped (cancelled) below.
    let batches = futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Some(Some(message)) => Some((message, rx)),
            Some(None) => {
                futures::future::pending::<Option<(pb::UploadDevicesRequest, Receiver)>>().await
            }
            None => None,
        }
    });
    let requests = futures::stream::iter([header]).chain(batches);

    let reader = {
        let counters = Arc::clone(&counters);
        tokio::task::spawn_blocking(move || read_batches(file, batch_size, tx, counters))
    };
    let mut client = portal.devices();
    let call = client.upload_devices(requests);
    tokio::pin!(call, reader);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut read_result: Option<u64> = None;
    let mut streamed = None;
    let answer = loop {
        tokio::select! {
            answer = &mut call => break answer,
            read = &mut reader, if read_result.is_none() => {
                match read {
                    Ok(Ok(devices)) => {
                        progress.update(&counters);
                        progress.waiting(devices);
                        read_result = Some(devices);
                        streamed = Some(progress.started.elapsed());
                    }
                    Ok(Err(err)) => {
                        progress.finish();
                        // Returning drops `call`, which cancels the upload.
                        return Err(CliError::Other(format!(
                            "{err}\nthe upload was cancelled; nothing was registered"
                        )));
                    }
                    Err(join) => {
                        progress.finish();
                        return Err(CliError::Other(format!("reading the file failed: {join}")));
                    }
                }
            }
            _ = ticker.tick(), if read_result.is_none() => progress.update(&counters),
        }
    };
    progress.finish();
    let elapsed = progress.started.elapsed();
    let upload = answer.map_err(|s| portal.fail(s))?.into_inner();
    let devices = read_result.unwrap_or_else(|| counters.devices.load(Ordering::Relaxed));
    Ok((
        upload,
        Sent {
            devices,
            streamed: streamed.unwrap_or(elapsed),
            elapsed,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_with(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    fn devices(content: &str) -> Vec<pb::DeviceInput> {
        let f = file_with(content);
        let mut file = DeviceFile::open(f.path(), false).unwrap();
        let mut out = Vec::new();
        while let Some(d) = file.next_device().unwrap() {
            out.push(d);
        }
        out
    }

    #[test]
    fn one_identifier_per_line_needs_no_header() {
        let d = devices("490154203237518\nR58M-1\n\n  A0000000002329 \n");
        let ids: Vec<_> = d.iter().map(|d| d.device_id.as_str()).collect();
        assert_eq!(ids, ["490154203237518", "R58M-1", "  A0000000002329 "]);
        assert!(d.iter().all(|d| d.id_kind == 0));
    }

    #[test]
    fn a_header_names_the_columns_and_may_imply_the_kind() {
        let d = devices("\u{feff}Model,IMEI\nGalaxy,490154203237518\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].device_id, "490154203237518");
        assert_eq!(d[0].model, "Galaxy");
        assert_eq!(d[0].id_kind, 1);

        let d = devices("device_id,kind\n123456789012345,serial\nX-1,\nY,imei\nZ,gadget\n");
        let kinds: Vec<_> = d.iter().map(|d| d.id_kind).collect();
        assert_eq!(kinds, [3, 0, 1, -1]);
    }

    #[test]
    fn dry_run_numbers_rows_and_finds_repeats_like_the_service() {
        let f =
            file_with("id\n490154203237518\n490154203237517\n 490154203237518\nr-1\nR-1\n\"\"\n");
        let mut file = DeviceFile::open(f.path(), false).unwrap();
        let mut rejected = Vec::new();
        let report = dry_run(&mut file, |r| {
            rejected.push(r);
            Ok(())
        })
        .unwrap();
        assert_eq!((report.rows, report.valid, report.rejected), (6, 2, 4));
        let got: Vec<_> = rejected
            .iter()
            .map(|r| (r.index, r.device_id.as_str(), r.reason))
            .collect();
        assert_eq!(
            got,
            [
                (1, "490154203237517", "invalid_id"),
                (2, "490154203237518", "duplicate_in_upload"),
                (4, "R-1", "duplicate_in_upload"),
                (5, "", "invalid_id"),
            ]
        );
        assert_eq!(rejected[1].message, "duplicate of the device at index 0");
    }

    #[test]
    fn the_rejects_file_sits_beside_the_upload_file() {
        assert_eq!(
            default_rejects_path(Path::new("/tmp/devices.csv")),
            PathBuf::from("/tmp/devices.csv.rejects.csv")
        );
    }
}
