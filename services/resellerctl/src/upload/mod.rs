//! Streaming a device file to `DeviceService.UploadDevices`, checking it locally
//! (`--dry-run`, [`dry_run`]) and writing the rejected rows ([`rejects`]).
//!
//! The file is never loaded whole: a blocking reader thread turns rows into batches and
//! feeds a small bounded channel that is the request stream, so memory stays flat and
//! reading waits for the network. Every device the reader yields is sent, so the
//! upload's `index` of a row is the dry run's too.

pub mod dry_run;
mod progress;
pub mod rejects;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use reseller_proto::v1::{self as pb, upload_devices_request::Item};
use tokio::sync::mpsc;

use self::progress::{Counters, Progress};
use crate::client::Portal;
use crate::device_file::DeviceFile;
use crate::errors::CliError;

/// The request stream's source: `None` means the file failed.
type Receiver = mpsc::Receiver<Option<pb::UploadDevicesRequest>>;

/// Batches in flight between the reader thread and the network.
const CHANNEL_BATCHES: usize = 4;

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
    }
}

/// Streams `file` (of `total` devices, counted beforehand) to the service as one upload
/// with `header`.
///
/// # Errors
/// The service's refusal, a lost connection, or a file that cannot be read (in which
/// case the upload is cancelled and nothing is registered).
pub async fn upload(
    portal: &Portal,
    file: DeviceFile,
    total: u64,
    header: pb::UploadHeader,
    batch_size: usize,
) -> Result<(pb::Upload, Sent), CliError> {
    let counters = Arc::new(Counters::default());
    let mut progress = Progress::new(total);
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
