//! `resellerctl uploads`: past uploads and their rejections (role reseller).

use reseller_proto::v1 as pb;

use crate::cli::{OutputFormat, UploadsCommand};
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::{Printer, note};
use crate::upload::RejectsWriter;
use crate::views::{RejectionView, UploadView};

/// Rejections a table shows before pointing to `--rejects`.
const SHOWN_REJECTIONS: usize = 20;

/// Runs an `uploads` command.
///
/// # Errors
/// The service's refusal, a lost connection or an unwritable rejects file.
pub async fn run(portal: &Portal, printer: Printer, cmd: UploadsCommand) -> Result<(), CliError> {
    let UploadsCommand::Get { upload_id, rejects } = cmd;
    let upload = portal
        .devices()
        .get_upload(pb::GetUploadRequest { upload_id })
        .await
        .map_err(|s| portal.fail(s))?
        .into_inner();
    let mut view = UploadView::new(&upload);
    if let Some(path) = &rejects {
        let mut writer = RejectsWriter::create(path)?;
        for r in &upload.rejections {
            writer.write(&RejectionView::from(r.clone()))?;
        }
        view.rejects_file = Some(writer.finish()?.display().to_string());
    }
    let rejections: Vec<RejectionView> = upload
        .rejections
        .into_iter()
        .map(RejectionView::from)
        .collect();
    match printer.format() {
        OutputFormat::Json => {
            #[derive(serde::Serialize)]
            struct WithRejections<'a> {
                #[serde(flatten)]
                upload: &'a UploadView,
                rejections: &'a [RejectionView],
            }
            printer.json(&WithRejections {
                upload: &view,
                rejections: &rejections,
            })
        }
        // CSV: the rejections, the rows a program wants.
        OutputFormat::Csv => printer.all(rejections),
        OutputFormat::Table => {
            printer.one(&view)?;
            if !rejections.is_empty() {
                println!();
                let total = rejections.len();
                printer.all(rejections.into_iter().take(SHOWN_REJECTIONS).collect())?;
                if total > SHOWN_REJECTIONS && rejects.is_none() {
                    note(format!(
                        "{} more rejections: write them all with --rejects FILE (or -o csv)",
                        total - SHOWN_REJECTIONS
                    ));
                }
            }
            Ok(())
        }
    }
}
