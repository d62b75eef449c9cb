//! Rejects files (`index,device_id,reason,message`, one row per rejected device, by
//! index) and the complete list of an upload's rejections.
//!
//! An `Upload` answer carries at most the first 1,000 rejections
//! (`rejections_truncated` says when there are more), so the answer stays deliverable
//! however big the upload; [`each_rejection`] pages every one of them with
//! `DeviceService.ListUploadRejections`, so a rejects file is always complete.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use reseller_proto::v1 as pb;

use crate::client::Portal;
use crate::errors::CliError;
use crate::output::{BYTE_ORDER_MARK, Record};
use crate::views::{ReasonCounts, RejectionView};

/// Rejections asked for per page (the service's maximum).
const PAGE_SIZE: i32 = 1000;

/// The default rejects file of `file`: `<FILE>.rejects.csv`.
pub fn default_rejects_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".rejects.csv");
    PathBuf::from(name)
}

/// Writes rejected rows (`index,device_id,reason,message`) and counts them by reason.
pub struct RejectsWriter {
    path: PathBuf,
    writer: csv::Writer<File>,
    counts: ReasonCounts,
}

impl std::fmt::Debug for RejectsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectsWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl RejectsWriter {
    /// Creates (or truncates) `path` and writes the header, after a UTF-8 byte-order
    /// mark when `excel` (so Excel reads accented messages right).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn create(path: &Path, excel: bool) -> Result<Self, CliError> {
        let mut file = File::create(path).map_err(|e| CliError::file(path, e))?;
        if excel {
            file.write_all(BYTE_ORDER_MARK)
                .map_err(|e| CliError::file(path, e))?;
        }
        let mut writer = csv::Writer::from_writer(file);
        writer
            .write_record(RejectionView::headers())
            .map_err(|e| CliError::file(path, e))?;
        Ok(Self {
            path: path.to_owned(),
            writer,
            counts: ReasonCounts::default(),
        })
    }

    /// Writes one row.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&mut self, rejection: &RejectionView) -> Result<(), CliError> {
        self.counts.add(rejection.reason);
        self.writer
            .write_record(rejection.cells())
            .map_err(|e| CliError::file(&self.path, e))
    }

    /// The rows written so far, by reason.
    pub fn counts(&self) -> ReasonCounts {
        self.counts
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

/// Calls `each` with every rejection of `upload`, a page at a time, by index: the ones it
/// carries, or, when it carries only the first ones, every page of
/// `ListUploadRejections`.
///
/// # Errors
/// The service's refusal or a lost connection while paging, or what `each` failed with.
pub async fn each_rejection(
    portal: &Portal,
    upload: &pb::Upload,
    mut each: impl FnMut(Vec<RejectionView>) -> Result<(), CliError>,
) -> Result<(), CliError> {
    // A validation (no upload ID) recorded nothing to page: its answer is all there is.
    if !upload.rejections_truncated || upload.upload_id.is_empty() {
        return each(
            upload
                .rejections
                .iter()
                .cloned()
                .map(RejectionView::from)
                .collect(),
        );
    }
    let mut page_token = String::new();
    loop {
        let page = portal
            .devices()
            .list_upload_rejections(pb::ListUploadRejectionsRequest {
                upload_id: upload.upload_id.clone(),
                page_size: PAGE_SIZE,
                page_token,
            })
            .await
            .map_err(|s| portal.fail(s))?
            .into_inner();
        each(
            page.rejections
                .into_iter()
                .map(RejectionView::from)
                .collect(),
        )?;
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// Writes every rejection of `upload` to a new rejects file at `path`.
///
/// # Errors
/// As [`each_rejection`], or when the file cannot be written. A failure while paging
/// leaves the rows written so far and says so: the upload itself is done either way.
pub async fn write_rejects_file(
    portal: &Portal,
    upload: &pb::Upload,
    path: &Path,
    excel: bool,
) -> Result<(PathBuf, ReasonCounts), CliError> {
    let mut writer = RejectsWriter::create(path, excel)?;
    let paged = each_rejection(portal, upload, |page| {
        page.iter().try_for_each(|r| writer.write(r))
    })
    .await;
    let counts = writer.counts();
    let path = writer.finish()?;
    match paged {
        Ok(()) => Ok((path, counts)),
        Err(err) => Err(CliError::Other(format!(
            "{err}\n{} holds only the first {} of the upload's {} rejections; get them all \
             with `resellerctl uploads rejections {} --all -o csv`",
            path.display(),
            counts.total(),
            upload.rejected_count,
            upload.upload_id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rejects_file_sits_beside_the_upload_file() {
        assert_eq!(
            default_rejects_path(Path::new("/tmp/devices.csv")),
            PathBuf::from("/tmp/devices.csv.rejects.csv")
        );
    }

    #[test]
    fn an_excel_rejects_file_starts_with_a_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        for excel in [false, true] {
            let path = dir.path().join(format!("{excel}.csv"));
            let mut writer = RejectsWriter::create(&path, excel).unwrap();
            writer
                .write(&RejectionView {
                    index: 1,
                    device_id: "X".into(),
                    reason: "invalid_id",
                    message: "Modèle, bad".into(),
                })
                .unwrap();
            assert_eq!(writer.counts().invalid_id, 1);
            writer.finish().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let text = "index,device_id,reason,message\n1,X,invalid_id,\"Modèle, bad\"\n";
            let want = if excel {
                [BYTE_ORDER_MARK, text.as_bytes()].concat()
            } else {
                text.as_bytes().to_vec()
            };
            assert_eq!(bytes, want);
        }
    }
}
