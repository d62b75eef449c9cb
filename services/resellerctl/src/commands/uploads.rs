//! `resellerctl uploads`: past uploads and their rejections (role reseller).
//!
//! An `Upload` answer carries at most the first 1,000 rejections; `uploads get --rejects
//! FILE` and `-o csv` page the rest with `ListUploadRejections`, and `uploads rejections`
//! lists them page by page (`--all -o csv` is a complete rejects file).

use reseller_proto::v1 as pb;

use super::paged;
use crate::cli::{OutputFormat, Paging, UploadsCommand};
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::{Printer, note};
use crate::upload::rejects::{each_rejection, write_rejects_file};
use crate::views::{RejectionView, UploadView};

/// Rejections a table shows before pointing to the complete list.
const SHOWN_REJECTIONS: usize = 20;

/// Runs an `uploads` command.
///
/// # Errors
/// The service's refusal, a lost connection or an unwritable rejects file.
pub async fn run(portal: &Portal, printer: Printer, cmd: UploadsCommand) -> Result<(), CliError> {
    match cmd {
        UploadsCommand::Get { upload_id, rejects } => {
            get(portal, printer, upload_id, rejects.as_deref()).await
        }
        UploadsCommand::Rejections { upload_id, paging } => {
            rejections(portal, printer, &upload_id, &paging).await
        }
        UploadsCommand::List {
            target,
            order_number,
            paging,
        } => list(portal, printer, target, order_number, &paging).await,
    }
}

/// `uploads list`: the reseller's uploads, newest first, page by page.
async fn list(
    portal: &Portal,
    printer: Printer,
    target: Option<String>,
    order_number: Option<String>,
    paging: &Paging,
) -> Result<(), CliError> {
    let (target, order_number) = (target.unwrap_or_default(), order_number.unwrap_or_default());
    let (target, order_number) = (&target, &order_number);
    paged(portal, printer, paging, |page| async move {
        let request = pb::ListUploadsRequest {
            target_knox_id: target.clone(),
            order_number: order_number.clone(),
            ..page.into()
        };
        portal.devices().list_uploads(request).await
    })
    .await?;
    Ok(())
}

/// `uploads get ID`: the upload, its first rejections, and where to get the rest.
async fn get(
    portal: &Portal,
    printer: Printer,
    upload_id: String,
    rejects: Option<&std::path::Path>,
) -> Result<(), CliError> {
    let upload = portal
        .devices()
        .get_upload(pb::GetUploadRequest { upload_id })
        .await
        .map_err(|s| portal.fail(s))?
        .into_inner();
    let mut view = UploadView::new(&upload);
    if let Some(path) = rejects {
        let (path, counts) = write_rejects_file(portal, &upload, path, printer.excel()).await?;
        view.rejects_file = Some(path.display().to_string());
        view.rejected_by_reason = Some(counts);
    }
    let every = format!(
        "resellerctl uploads rejections {} --all -o csv",
        upload.upload_id
    );
    match printer.format() {
        OutputFormat::Json => {
            #[derive(serde::Serialize)]
            struct WithRejections<'a> {
                #[serde(flatten)]
                upload: &'a UploadView,
                /// The first rejections (all of them unless `rejections_truncated`).
                rejections: Vec<RejectionView>,
            }
            printer.json(&WithRejections {
                upload: &view,
                rejections: upload
                    .rejections
                    .iter()
                    .cloned()
                    .map(RejectionView::from)
                    .collect(),
            })?;
            if upload.rejections_truncated {
                note(format!(
                    "\"rejections\" holds the first {} of {} rejections; all of them: {every}",
                    upload.rejections.len(),
                    upload.rejected_count
                ));
            }
            Ok(())
        }
        // CSV: the rejections, the rows a program wants: every one of them.
        OutputFormat::Csv => {
            let mut list = printer.list::<RejectionView>();
            each_rejection(portal, &upload, |page| list.push(page)).await?;
            list.finish()?;
            Ok(())
        }
        OutputFormat::Table => {
            printer.one(&view)?;
            if !upload.rejections.is_empty() {
                println!();
                let shown: Vec<RejectionView> = upload
                    .rejections
                    .iter()
                    .take(SHOWN_REJECTIONS)
                    .cloned()
                    .map(RejectionView::from)
                    .collect();
                let more = upload.rejected_count - shown.len() as i64;
                printer.all(shown)?;
                if more > 0 && rejects.is_none() {
                    note(format!(
                        "{more} more rejections: write them all with --rejects FILE, or list \
                         them with `{every}`"
                    ));
                }
            }
            Ok(())
        }
    }
}

/// `uploads rejections ID`: every rejection, page by page.
async fn rejections(
    portal: &Portal,
    printer: Printer,
    upload_id: &str,
    paging: &Paging,
) -> Result<(), CliError> {
    // Following every page: the largest pages the service serves.
    let paging = Paging {
        page_size: match (paging.page_size, paging.all) {
            (0, true) => 1000,
            (size, _) => size,
        },
        ..paging.clone()
    };
    paged(portal, printer, &paging, |page| async move {
        let request = pb::ListUploadRejectionsRequest {
            upload_id: upload_id.to_owned(),
            ..page.into()
        };
        portal.devices().list_upload_rejections(request).await
    })
    .await?;
    Ok(())
}
