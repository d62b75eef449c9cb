//! `resellerctl devices`: uploads (streamed from a file, or checked with `--dry-run`) and
//! deletions, followed with `--wait` until every portal has removed the devices
//! (role reseller).

use std::time::{Duration, Instant};

use reseller_proto::v1 as pb;

use super::device_ids;
use crate::cli::{DeleteArgs, DevicesCommand, OutputFormat, UploadArgs, WaitArgs};
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::{Printer, note};
use crate::upload::{self, DeviceFile, RejectsWriter, default_rejects_path};
use crate::views::{DeletionView, RejectionView, UploadView, words};

/// Most device IDs one DeleteDevices call may name (device-service's limit).
const MAX_DELETE_IDS: usize = 100_000;

/// Runs a `devices` command.
///
/// # Errors
/// The service's refusal, a lost connection, an unreadable file or a deletion that did
/// not complete in time.
pub async fn run(portal: &Portal, printer: Printer, cmd: DevicesCommand) -> Result<(), CliError> {
    match cmd {
        DevicesCommand::Upload(args) if args.dry_run => dry_run(printer, &args),
        DevicesCommand::Upload(args) => upload(portal, printer, &args).await,
        DevicesCommand::Delete(args) => delete(portal, printer, args).await,
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
        }
    }
}

fn rejects_path(args: &UploadArgs) -> std::path::PathBuf {
    args.rejects
        .clone()
        .unwrap_or_else(|| default_rejects_path(&args.file))
}

/// `devices upload FILE --dry-run`: the service's parser over the file, no connection.
///
/// # Errors
/// When the file cannot be read or the rejects file written.
pub fn dry_run(printer: Printer, args: &UploadArgs) -> Result<(), CliError> {
    let path = rejects_path(args);
    let mut file = DeviceFile::open(&args.file, args.no_header)?;
    let mut writer: Option<RejectsWriter> = None;
    let mut report = upload::dry_run(&mut file, |rejection| {
        if writer.is_none() {
            writer = Some(RejectsWriter::create(&path)?);
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
            Ok(())
        }
        _ => printer.one(&report),
    }
}

/// `devices upload FILE`: streams the file, then writes its rejects file.
///
/// # Errors
/// The service's refusal, a lost connection, or an unreadable file.
pub async fn upload(portal: &Portal, printer: Printer, args: &UploadArgs) -> Result<(), CliError> {
    let file = DeviceFile::open(&args.file, args.no_header)?;
    let header = pb::UploadHeader {
        target_knox_id: args.target.clone().unwrap_or_default(),
        order_number: args.order_number.clone(),
        client_upload_id: args.client_upload_id.clone(),
    };
    let (upload, sent) = upload::upload(portal, file, header, args.batch_size as usize).await?;
    let mut view = UploadView::new(&upload);
    if !upload.rejections.is_empty() {
        let mut writer = RejectsWriter::create(&rejects_path(args))?;
        for r in &upload.rejections {
            writer.write(&RejectionView::from(r.clone()))?;
        }
        view.rejects_file = Some(writer.finish()?.display().to_string());
    }
    let seconds = sent.elapsed.as_secs_f64();
    view.seconds = Some(seconds);
    view.stream_seconds = Some(sent.streamed.as_secs_f64());
    view.devices_per_second = Some(sent.devices as f64 / seconds.max(1e-3));
    match printer.format() {
        OutputFormat::Table => {
            let mut line = format!(
                "upload {}: {} accepted, {} rejected",
                view.upload_id, view.accepted, view.rejected
            );
            if view.rejected > 0 {
                line.push_str(&format!(" ({})", view.rejected_by_reason.describe()));
            }
            println!("{line}");
            if let Some(path) = &view.rejects_file {
                println!("rejected rows written to {path}");
            }
            note(format!(
                "{} devices in {seconds:.1}s end to end ({:.0} devices/s); streaming the file took {:.1}s",
                sent.devices,
                view.devices_per_second.unwrap_or_default(),
                sent.streamed.as_secs_f64()
            ));
            Ok(())
        }
        _ => printer.one(&view),
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
