//! `ListActivity` and `ExportActivityCsv`: the filters parsed at the edge, entries in
//! protobuf and CSV.

use reseller_kit::ApiError;
use reseller_kit::csv::CsvChunker;
use reseller_kit::error::FieldViolations;
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::paging;
use reseller_kit::timestamp;
use reseller_proto::v1 as pb;
use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;

use super::csv::{CsvRecord, RowSource};
use crate::domain::{Activity, ActivityCursor, ActivityFilter, ActivityKind, PortalProgress};
use crate::postgres::{self, Repository};

/// Entries per page of the CSV download's reads.
const EXPORT_BATCH: i64 = 1000;

/// The kind a request names.
fn kind_from_proto(value: i32) -> Option<ActivityKind> {
    Some(match pb::ActivityKind::try_from(value).ok()? {
        pb::ActivityKind::Upload => ActivityKind::Upload,
        pb::ActivityKind::Deletion => ActivityKind::Deletion,
        pb::ActivityKind::CustomerAdded => ActivityKind::CustomerAdded,
        pb::ActivityKind::ReferenceUpdated => ActivityKind::ReferenceUpdated,
        pb::ActivityKind::ApprovalChanged => ActivityKind::ApprovalChanged,
        pb::ActivityKind::MspMove => ActivityKind::MspMove,
        pb::ActivityKind::MspDelink => ActivityKind::MspDelink,
        pb::ActivityKind::Unspecified => return None,
    })
}

fn kind_to_proto(kind: ActivityKind) -> pb::ActivityKind {
    match kind {
        ActivityKind::Upload => pb::ActivityKind::Upload,
        ActivityKind::Deletion => pb::ActivityKind::Deletion,
        ActivityKind::CustomerAdded => pb::ActivityKind::CustomerAdded,
        ActivityKind::ReferenceUpdated => pb::ActivityKind::ReferenceUpdated,
        ActivityKind::ApprovalChanged => pb::ActivityKind::ApprovalChanged,
        ActivityKind::MspMove => pb::ActivityKind::MspMove,
        ActivityKind::MspDelink => pb::ActivityKind::MspDelink,
    }
}

/// The filters of `ListActivity` / `ExportActivityCsv`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming every bad field: an unspecified or unknown kind, a Knox ID
/// that is not one, `since` not before `until`.
pub fn parse_filter(
    kinds: &[i32],
    customer_knox_id: &str,
    since: Option<&prost_types::Timestamp>,
    until: Option<&prost_types::Timestamp>,
) -> Result<ActivityFilter, ApiError> {
    let mut violations = FieldViolations::new();
    let mut parsed = Vec::with_capacity(kinds.len());
    for &k in kinds {
        match kind_from_proto(k) {
            Some(kind) if !parsed.contains(&kind) => parsed.push(kind),
            Some(_) => {}
            None => violations.add(
                "kinds",
                format!(
                    "{k} is not an activity kind (ACTIVITY_KIND_UPLOAD … ACTIVITY_KIND_MSP_DELINK)"
                ),
            ),
        }
    }
    let customer = if customer_knox_id.is_empty() {
        None
    } else {
        violations
            .check("customer_knox_id", KnoxId::parse(customer_knox_id))
            .map(|k| k.as_str().to_owned())
    };
    let since = since.map(|t| timestamp::from_proto(Some(t)));
    let until = until.map(|t| timestamp::from_proto(Some(t)));
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        violations.add("until", "must be after since");
    }
    violations.finish()?;
    Ok(ActivityFilter {
        kinds: parsed,
        customer_knox_id: customer,
        since,
        until,
    })
}

/// A page token's cursor.
///
/// # Errors
/// `INVALID_ARGUMENT` on `page_token` when this list did not issue it.
pub fn parse_cursor(token: &str) -> Result<Option<(OffsetDateTime, String)>, ApiError> {
    let Some(cursor) = paging::decode_token::<ActivityCursor>(token)? else {
        return Ok(None);
    };
    let at = cursor
        .time()
        .map_err(|_| ApiError::invalid("page_token", crate::domain::TOKEN_NOT_ISSUED_HERE))?;
    Ok(Some((at, cursor.id)))
}

impl From<Activity> for pb::Activity {
    fn from(a: Activity) -> Self {
        let [reseller_portal, msp_portal, customer_portal] = if a.kind == ActivityKind::Deletion {
            a.portal_states.map(PortalProgress::as_proto)
        } else {
            [0; 3]
        };
        pb::Activity {
            reseller_portal,
            msp_portal,
            customer_portal,
            summary: a.summary(),
            customer_knox_id: a.customer().to_owned(),
            activity_id: a.activity_id,
            occurred_at: Some(timestamp::to_proto(a.occurred_at)),
            kind: kind_to_proto(a.kind) as i32,
            actor: a.actor,
            upload_id: a.upload_id.map(|u| u.to_string()).unwrap_or_default(),
            deletion_id: a.deletion_id.map(|u| u.to_string()).unwrap_or_default(),
            accepted_count: a.accepted_count,
            rejected_count: a.rejected_count,
            device_count: a.device_count,
            customer_knox_ids: a.customer_knox_ids,
        }
    }
}

/// The activity file: a row per entry, newest first.
impl CsvRecord for Activity {
    const HEADER: &'static [&'static str] = &[
        "Occurred At",
        "Kind",
        "Actor",
        "Customer IDs",
        "Upload ID",
        "Deletion ID",
        "Accepted",
        "Rejected",
        "Devices",
        "Reseller Portal",
        "MSP Portal",
        "Customer Portal",
        "Summary",
    ];

    fn write(&self, out: &mut CsvChunker) -> Result<(), sqlx::Error> {
        out.time(self.occurred_at);
        out.plain(self.kind.label());
        // A person's name: free text, neutralised like every cell a person typed.
        out.text(&self.actor);
        out.plain(&self.customer_knox_ids.join(" "));
        match self.upload_id {
            Some(id) => out.uuid(id),
            None => out.plain(""),
        }
        match self.deletion_id {
            Some(id) => out.uuid(id),
            None => out.plain(""),
        }
        out.int(self.accepted_count);
        out.int(self.rejected_count);
        out.int(self.device_count);
        for state in self.portal_states {
            out.plain(if self.kind == ActivityKind::Deletion {
                state.label()
            } else {
                ""
            });
        }
        out.text(&self.summary());
        Ok(())
    }
}

/// The CSV download's rows: the log read a page at a time by its keyset, all pages in one
/// read-only transaction (one snapshot, taken at the first page), so an entry whose
/// counts grow during the download (an upload's parts, a deletion's receipts) shows as
/// it was when the download began, like the other downloads' cursors.
pub struct ActivitySource {
    repo: Repository,
    reseller: ResellerId,
    filter: ActivityFilter,
    after: Option<(OffsetDateTime, String)>,
    snapshot: Option<Transaction<'static, Postgres>>,
    done: bool,
}

impl ActivitySource {
    /// The rows of `reseller`'s log matching `filter`.
    pub fn new(repo: Repository, reseller: ResellerId, filter: ActivityFilter) -> Self {
        ActivitySource {
            repo,
            reseller,
            filter,
            after: None,
            snapshot: None,
            done: false,
        }
    }
}

impl RowSource for ActivitySource {
    type Row = Activity;

    async fn next_batch(&mut self) -> Result<Vec<Activity>, sqlx::Error> {
        if self.done {
            return Ok(Vec::new());
        }
        let snapshot = match &mut self.snapshot {
            Some(snapshot) => snapshot,
            None => self.snapshot.insert(self.repo.begin_snapshot().await?),
        };
        let page = postgres::activity_page(
            snapshot,
            self.reseller.as_str(),
            &self.filter,
            self.after.take(),
            EXPORT_BATCH,
        )
        .await?;
        match page.next {
            Some(next) => {
                self.after = Some((next.time().unwrap_or(OffsetDateTime::UNIX_EPOCH), next.id));
            }
            None => {
                self.done = true;
                // Read only: ending it is all there is to do.
                self.snapshot = None;
            }
        }
        Ok(page.entries)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::PgPool;

    use super::*;

    /// An entry whose counts grow while the log is being downloaded (an upload's parts
    /// arriving) shows in the download as it was when the download began, as in the
    /// other downloads.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_download_shows_every_entry_as_it_was_when_it_began(pool: PgPool) {
        // 1,500 uploads of one device each, a second apart: two batches, newest first.
        sqlx::query(
            "INSERT INTO reporting.activities
               (reseller_id, activity_id, occurred_at, kind, actor, accepted_count)
             SELECT 'acme', lpad(g::text, 8, '0'),
               timestamptz '2026-01-01 00:00Z' + g * interval '1 second', 'UPLOAD', 'Ann', 1
             FROM generate_series(1, 1500) g",
        )
        .execute(&pool)
        .await
        .unwrap();
        let reseller = ResellerId::parse("acme").unwrap();
        let repo = Repository::new(pool.clone());
        let mut download =
            ActivitySource::new(repo.clone(), reseller.clone(), ActivityFilter::default());
        let first = download.next_batch().await.unwrap();
        assert_eq!(first.len(), EXPORT_BATCH as usize);

        // The oldest upload, in the second batch, grows meanwhile.
        sqlx::query(
            "UPDATE reporting.activities SET accepted_count = 1000 WHERE activity_id = '00000001'",
        )
        .execute(&pool)
        .await
        .unwrap();
        let second = download.next_batch().await.unwrap();
        assert_eq!(second.len(), 500);
        let oldest = second.last().unwrap();
        assert_eq!(oldest.activity_id, "00000001");
        assert_eq!(oldest.accepted_count, 1, "the download's snapshot");
        assert!(download.next_batch().await.unwrap().is_empty());

        // A download that begins now shows it grown.
        let mut later = ActivitySource::new(repo, reseller, ActivityFilter::default());
        let mut last = None;
        loop {
            let batch = later.next_batch().await.unwrap();
            if batch.is_empty() {
                break;
            }
            last = batch.last().cloned();
        }
        assert_eq!(last.unwrap().accepted_count, 1000);
    }
}
