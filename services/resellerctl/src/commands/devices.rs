//! `resellerctl devices`: uploads (streamed from a file, or checked with `--dry-run`) and
//! deletions, followed with `--wait` until every portal has removed the devices
//! (role reseller).

use std::path::Path;
use std::time::{Duration, Instant};

use reseller_proto::v1 as pb;

use super::device_ids;
use crate::cli::{DeleteArgs, DevicesCommand, Global, OutputFormat, UploadArgs, WaitArgs};
use crate::client::Portal;
use crate::device_file::{DeviceFile, ReadOptions};
use crate::errors::{CliError, Outcome};
use crate::output::{Printer, note};
use crate::upload::{
    self,
    rejects::{RejectsWriter, default_rejects_path, write_rejects_file},
};
use crate::views::{DeletionView, UploadView, words};

/// Most device IDs one DeleteDevices call may name (device-service's limit).
const MAX_DELETE_IDS: usize = 100_000;

/// Runs a `devices` command on a connection (an upload from the command line starts in
/// [`upload_command`], which checks its file before connecting).
///
/// # Errors
/// The service's refusal, a lost connection, an unreadable file or a deletion that did
/// not complete in time.
pub async fn run(
    portal: &Portal,
    printer: Printer,
    cmd: DevicesCommand,
) -> Result<Outcome, CliError> {
    match cmd {
        DevicesCommand::Upload(args) if args.dry_run => dry_run(printer, &args),
        DevicesCommand::Upload(args) => {
            let total = count_devices(&args)?;
            upload(portal, printer, &args, total).await
        }
        DevicesCommand::Delete(args) => delete(portal, printer, args)
            .await
            .map(|()| Outcome::Success),
        DevicesCommand::Find(args) => super::find::run(portal, printer, args)
            .await
            .map(|()| Outcome::Success),
        DevicesCommand::History { device_id } => super::history::run(portal, printer, device_id)
            .await
            .map(|()| Outcome::Success),
        DevicesCommand::Deletion { deletion_id, wait } => {
            let deletion = portal
                .devices()
                .get_deletion(pb::GetDeletionRequest { deletion_id })
                .await
                .map_err(|s| portal.fail(s))?
                .into_inner();
            let deletion = if wait.wait {
                follow(portal, deletion, &wait).await?
            } else {
                deletion
            };
            finish_deletions(printer, vec![DeletionView::from(deletion)], &wait)
                .map(|()| Outcome::Success)
        }
    }
}

fn rejects_path(args: &UploadArgs) -> std::path::PathBuf {
    args.rejects
        .clone()
        .unwrap_or_else(|| default_rejects_path(&args.file))
}

fn read_options(args: &UploadArgs) -> ReadOptions {
    ReadOptions {
        no_header: args.no_header,
        encoding: args.encoding,
    }
}

/// The refusal of a file without devices: an upload of nothing would only be refused
/// by the service, and a script must not take it for success.
fn no_devices(path: &Path) -> CliError {
    CliError::file(
        path,
        "the file holds no devices (it is empty, or a header line alone); nothing was sent",
    )
}

/// Opens the file, refuses it when it holds no device, and tells how it is read.
fn open(args: &UploadArgs) -> Result<DeviceFile, CliError> {
    let file = DeviceFile::open(&args.file, read_options(args))?;
    if file.is_empty() {
        return Err(no_devices(&args.file));
    }
    note(format!("{}: {}", args.file.display(), file.description()));
    Ok(file)
}

/// `devices upload FILE [--dry-run]`. The file is read to its end before connecting,
/// so a file that cannot be read (an encoding fault on its last line), or holds no
/// devices, is refused before anything is sent.
///
/// # Errors
/// A refused or unreadable file, an unreachable portal, the service's refusal.
pub async fn upload_command(
    global: &Global,
    printer: Printer,
    args: &UploadArgs,
) -> Result<Outcome, CliError> {
    if args.dry_run {
        return dry_run(printer, args);
    }
    let total = count_devices(args)?;
    let portal = Portal::connect(global).await?;
    upload(&portal, printer, args, total).await
}

/// Reads the whole upload file once: its number of devices, or why it is refused.
fn count_devices(args: &UploadArgs) -> Result<u64, CliError> {
    match DeviceFile::count(&args.file, read_options(args))? {
        0 => Err(no_devices(&args.file)),
        total => Ok(total),
    }
}

/// `devices upload FILE --dry-run`: the service's parser over the file, no connection.
///
/// # Errors
/// When the file is refused, cannot be read or holds no devices, or the rejects file
/// cannot be written.
fn dry_run(printer: Printer, args: &UploadArgs) -> Result<Outcome, CliError> {
    let path = rejects_path(args);
    let mut file = open(args)?;
    let mut writer: Option<RejectsWriter> = None;
    let mut report = upload::dry_run::dry_run(&mut file, |rejection| {
        if writer.is_none() {
            writer = Some(RejectsWriter::create(&path, printer.excel())?);
        }
        match writer.as_mut() {
            Some(w) => w.write(&rejection),
            None => Ok(()),
        }
    })?;
    if let Some(writer) = writer {
        report.rejects_file = Some(writer.finish()?.display().to_string());
    }
    match printer.format() {
        OutputFormat::Table => {
            println!(
                "dry run of {}: {} rows, {} valid, {} would be rejected ({})",
                args.file.display(),
                report.rows,
                report.valid,
                report.rejected,
                report.rejected_by_reason.describe()
            );
            if let Some(path) = &report.rejects_file {
                println!("rejected rows written to {path}");
            }
            println!(
                "nothing was uploaded; devices already registered to an account can only be \
                 found by the portal, so an upload may reject more"
            );
        }
        _ => printer.one(&report)?,
    }
    Ok(Outcome::of_upload(report.valid, report.rejected))
}

/// `devices upload FILE`: streams the file's `total` devices, then writes the complete
/// rejects file (paging the rejections when the answer carries only the first ones).
///
/// # Errors
/// The service's refusal, a lost connection, or an unreadable file.
async fn upload(
    portal: &Portal,
    printer: Printer,
    args: &UploadArgs,
    total: u64,
) -> Result<Outcome, CliError> {
    let file = open(args)?;
    let header = pb::UploadHeader {
        target_knox_id: args.target.clone().unwrap_or_default(),
        order_number: args.order_number.clone(),
        client_upload_id: args.client_upload_id.clone(),
        validate_only: args.validate_only,
    };
    let (upload, sent) =
        upload::upload(portal, file, total, header, args.batch_size as usize).await?;
    let mut view = UploadView::new(&upload);
    // The upload is done whatever happens to its rejects file: say what it did first.
    let mut failure = None;
    if upload.rejected_count > 0 || !upload.rejections.is_empty() {
        match write_rejects_file(portal, &upload, &rejects_path(args), printer.excel()).await {
            Ok((path, counts)) => {
                view.rejects_file = Some(path.display().to_string());
                view.rejected_by_reason = Some(counts);
            }
            Err(err) => failure = Some(err),
        }
    }
    let seconds = sent.elapsed.as_secs_f64();
    view.seconds = Some(seconds);
    view.stream_seconds = Some(sent.streamed.as_secs_f64());
    view.devices_per_second = Some(sent.devices as f64 / seconds.max(1e-3));
    match printer.format() {
        OutputFormat::Table => {
            let mut line = if args.validate_only {
                format!(
                    "validated, nothing recorded: {} would be accepted, {} rejected",
                    view.accepted, view.rejected
                )
            } else {
                format!(
                    "upload {}: {} accepted, {} rejected",
                    view.upload_id, view.accepted, view.rejected
                )
            };
            if let (true, Some(counts)) = (view.rejected > 0, view.rejected_by_reason) {
                line.push_str(&format!(" ({})", counts.describe()));
            }
            println!("{line}");
            if let Some(path) = &view.rejects_file {
                println!("rejected rows written to {path}");
            }
            if args.validate_only && upload.rejections_truncated {
                println!(
                    "the rejects file holds the first {} rejections (a validation keeps no more)",
                    upload.rejections.len()
                );
            } else if view.accepted == 0 && !args.validate_only {
                println!("no device was registered");
            }
            note(format!(
                "{} devices in {seconds:.1}s end to end ({:.0} devices/s); streaming the file took {:.1}s",
                sent.devices,
                view.devices_per_second.unwrap_or_default(),
                sent.streamed.as_secs_f64()
            ));
        }
        _ => printer.one(&view)?,
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(Outcome::of_upload(view.accepted, view.rejected)),
    }
}

/// `devices delete`: one deletion per 100,000 IDs, optionally followed to the end.
async fn delete(portal: &Portal, printer: Printer, args: DeleteArgs) -> Result<(), CliError> {
    let ids = device_ids(args.device_ids, args.file.as_deref())?;
    let mut deletions = Vec::new();
    for chunk in ids.chunks(MAX_DELETE_IDS) {
        let deletion = portal
            .devices()
            .delete_devices(pb::DeleteDevicesRequest {
                device_ids: chunk.to_vec(),
            })
            .await
            .map_err(|s| portal.fail(s))?
            .into_inner();
        deletions.push(deletion);
    }
    let mut done = Vec::new();
    for deletion in deletions {
        let deletion = if args.wait.wait {
            follow(portal, deletion, &args.wait).await?
        } else {
            deletion
        };
        done.push(DeletionView::from(deletion));
    }
    finish_deletions(printer, done, &args.wait)
}

fn states(d: &pb::Deletion) -> String {
    let v = DeletionView::from(d.clone());
    format!(
        "reseller portal {}, MSP portal {}, customer portal {}",
        words(v.reseller_portal),
        words(v.msp_portal),
        words(v.customer_portal)
    )
}

/// Polls a deletion until it is complete or `wait.timeout` passes, telling each change
/// of the portals' states on standard error.
async fn follow(
    portal: &Portal,
    mut deletion: pb::Deletion,
    wait: &WaitArgs,
) -> Result<pb::Deletion, CliError> {
    let deadline = Instant::now() + wait.timeout;
    let mut shown = states(&deletion);
    note(format!("deletion {}: {shown}", deletion.deletion_id));
    let mut pause = Duration::from_millis(100);
    while !deletion.complete {
        if Instant::now() >= deadline {
            return Err(CliError::Other(format!(
                "deletion {} is not complete after {}s: {shown}\n\
                 follow it with `resellerctl devices deletion {} --wait`",
                deletion.deletion_id,
                wait.timeout.as_secs(),
                deletion.deletion_id
            )));
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_secs(1));
        deletion = portal
            .devices()
            .get_deletion(pb::GetDeletionRequest {
                deletion_id: deletion.deletion_id.clone(),
            })
            .await
            .map_err(|s| portal.fail(s))?
            .into_inner();
        let now = states(&deletion);
        if now != shown {
            note(format!("deletion {}: {now}", deletion.deletion_id));
            shown = now;
        }
    }
    Ok(deletion)
}

fn finish_deletions(
    printer: Printer,
    deletions: Vec<DeletionView>,
    wait: &WaitArgs,
) -> Result<(), CliError> {
    let complete = deletions.iter().all(|d| d.complete);
    match (printer.format(), deletions.len()) {
        (OutputFormat::Json, 1) | (OutputFormat::Table, 1) => {
            printer.one(&deletions[0])?;
        }
        _ => printer.all(deletions)?,
    }
    if !complete && !wait.wait {
        note("the portals are still removing the devices: add --wait to follow them");
    }
    Ok(())
}
