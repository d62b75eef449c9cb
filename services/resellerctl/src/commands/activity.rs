//! `resellerctl activity`: the reseller's activity log, newest first (`ListActivity`),
//! or downloaded as CSV (`ExportActivityCsv`); DOMAIN.md "Finding devices, history and
//! the activity log".

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use reseller_proto::v1 as pb;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};

use super::customers::write_download;
use super::paged_rows;
use crate::cli::{OutputFormat, Paging};
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::{Printer, Record};
use crate::views::{cell_time, time};

/// `activity` arguments.
#[derive(Debug, Args)]
#[command(after_help = "\
Times are RFC 3339 (2026-11-29T08:00:00Z, 2026-11-29T09:00:00+01:00) or a date
(2026-11-29, which is midnight UTC). -o csv (or --output-file) downloads every matching
entry as the portal's CSV file (Occurred At, Kind, Actor, Customer IDs, Upload ID,
Deletion ID, Accepted, Rejected, Devices, Summary); paging does not apply to it.")]
pub struct ActivityArgs {
    /// Only entries at or after this time.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<OffsetDateTime>,
    /// Only entries before this time.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<OffsetDateTime>,
    /// Only entries of this kind (repeat, or separate with commas, for several).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kind: Vec<ActivityKindArg>,
    /// Only entries touching this customer (Knox ID); a deletion or move touching
    /// several customers is listed under each.
    #[arg(long)]
    pub customer: Option<String>,
    /// Write the CSV download to this file instead of standard output (implies -o csv).
    #[arg(long)]
    pub output_file: Option<PathBuf>,
    #[command(flatten)]
    pub paging: Paging,
}

/// An activity kind as `--kind` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActivityKindArg {
    /// Uploads (target, order number, accepted and rejected counts).
    Upload,
    /// Deletions (count, each portal's state).
    Deletion,
    /// Customers added to your list.
    CustomerAdded,
    /// Internal references edited.
    ReferenceUpdated,
    /// Approvals given or revoked by your customers.
    ApprovalChanged,
    /// MSP moves of your devices.
    MspMove,
    /// Delinks of customers holding your devices.
    MspDelink,
}

impl From<ActivityKindArg> for pb::ActivityKind {
    fn from(kind: ActivityKindArg) -> Self {
        match kind {
            ActivityKindArg::Upload => pb::ActivityKind::Upload,
            ActivityKindArg::Deletion => pb::ActivityKind::Deletion,
            ActivityKindArg::CustomerAdded => pb::ActivityKind::CustomerAdded,
            ActivityKindArg::ReferenceUpdated => pb::ActivityKind::ReferenceUpdated,
            ActivityKindArg::ApprovalChanged => pb::ActivityKind::ApprovalChanged,
            ActivityKindArg::MspMove => pb::ActivityKind::MspMove,
            ActivityKindArg::MspDelink => pb::ActivityKind::MspDelink,
        }
    }
}

/// Reads `--since` / `--until`: RFC 3339, or a date `YYYY-MM-DD` meaning midnight UTC.
///
/// # Errors
/// A message naming both accepted forms.
pub fn parse_time(input: &str) -> Result<OffsetDateTime, String> {
    let input = input.trim();
    if let Ok(at) = OffsetDateTime::parse(input, &Rfc3339) {
        return Ok(at);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = Date::parse(input, date_format) {
        return Ok(date.with_time(Time::MIDNIGHT).assume_utc());
    }
    Err(format!(
        "{input:?} is not a time: write RFC 3339 (2026-11-29T08:00:00Z) or a date \
         (2026-11-29, midnight UTC)"
    ))
}

/// Runs `activity`: a page of the log (every page with `--all`), or the CSV download
/// with `-o csv` / `--output-file`.
///
/// # Errors
/// A usage error for paging flags with the CSV download; the service's refusal (e.g.
/// `INVALID_ARGUMENT` for a malformed customer ID or `--since` not before `--until`)
/// or a lost connection; an unwritable output file.
pub async fn run(portal: &Portal, printer: Printer, args: ActivityArgs) -> Result<(), CliError> {
    let kinds: Vec<i32> = args
        .kind
        .iter()
        .map(|&k| pb::ActivityKind::from(k) as i32)
        .collect();
    let customer_knox_id = args.customer.unwrap_or_default();
    let since = args.since.map(reseller_kit::timestamp::to_proto);
    let until = args.until.map(reseller_kit::timestamp::to_proto);
    if printer.format() == OutputFormat::Csv || args.output_file.is_some() {
        if args.paging.all || args.paging.page_size != 0 || !args.paging.page_token.is_empty() {
            return Err(CliError::Usage(
                "the CSV download holds every matching entry: drop --all, --page-size and \
                 --page-token"
                    .into(),
            ));
        }
        let stream = portal
            .reporting()
            .export_activity_csv(pb::ExportActivityCsvRequest {
                kinds,
                customer_knox_id,
                since,
                until,
                byte_order_mark: printer.excel(),
            })
            .await
            .map_err(|s| portal.fail(s))?
            .into_inner();
        return write_download(portal, stream, args.output_file.as_deref()).await;
    }
    let (kinds, customer, since, until) = (&kinds, &customer_knox_id, &since, &until);
    paged_rows(
        portal,
        printer,
        &args.paging,
        ActivityView::from,
        |page| async move {
            let request = pb::ListActivityRequest {
                kinds: kinds.clone(),
                customer_knox_id: customer.clone(),
                since: *since,
                until: *until,
                page_size: page.size,
                page_token: page.token,
            };
            portal.reporting().list_activity(request).await
        },
    )
    .await?;
    Ok(())
}

impl super::paging::ListAnswer for pb::ListActivityResponse {
    type Row = pb::Activity;
    type View = ActivityView;
    fn into_page(self) -> (Vec<pb::Activity>, String) {
        (self.activities, self.next_page_token)
    }
}

/// `reseller.v1.ActivityKind` as a code (JSON; a table shows it in words).
pub fn activity_kind(kind: i32) -> &'static str {
    match pb::ActivityKind::try_from(kind) {
        Ok(pb::ActivityKind::Upload) => "upload",
        Ok(pb::ActivityKind::Deletion) => "deletion",
        Ok(pb::ActivityKind::CustomerAdded) => "customer_added",
        Ok(pb::ActivityKind::ReferenceUpdated) => "reference_updated",
        Ok(pb::ActivityKind::ApprovalChanged) => "approval_changed",
        Ok(pb::ActivityKind::MspMove) => "msp_move",
        Ok(pb::ActivityKind::MspDelink) => "msp_delink",
        _ => "unspecified",
    }
}

/// A kind code as a table shows it: in words, as the CSV download's `Kind` column.
fn kind_label(code: &str) -> String {
    match code {
        "msp_move" => "MSP move".into(),
        "msp_delink" => "MSP delink".into(),
        other => crate::views::words(other),
    }
}

/// One entry of the activity log.
#[derive(Debug, Serialize)]
pub struct ActivityView {
    pub activity_id: String,
    pub occurred_at: Option<String>,
    pub kind: &'static str,
    pub actor: String,
    pub customer_knox_id: String,
    pub customer_knox_ids: Vec<String>,
    pub upload_id: String,
    pub deletion_id: String,
    pub accepted_count: i64,
    pub rejected_count: i64,
    pub device_count: i64,
    pub summary: String,
}

impl From<pb::Activity> for ActivityView {
    fn from(a: pb::Activity) -> Self {
        Self {
            occurred_at: time(a.occurred_at.as_ref()),
            kind: activity_kind(a.kind),
            activity_id: a.activity_id,
            actor: a.actor,
            customer_knox_id: a.customer_knox_id,
            customer_knox_ids: a.customer_knox_ids,
            upload_id: a.upload_id,
            deletion_id: a.deletion_id,
            accepted_count: a.accepted_count,
            rejected_count: a.rejected_count,
            device_count: a.device_count,
            summary: a.summary,
        }
    }
}

impl Record for ActivityView {
    fn headers() -> &'static [&'static str] {
        &[
            "TIME",
            "KIND",
            "ACTOR",
            "CUSTOMERS",
            "UPLOAD/DELETION",
            "SUMMARY",
        ]
    }
    fn cells(&self) -> Vec<String> {
        let id = if self.upload_id.is_empty() {
            &self.deletion_id
        } else {
            &self.upload_id
        };
        vec![
            cell_time(&self.occurred_at),
            kind_label(self.kind),
            self.actor.clone(),
            self.customer_knox_ids.join(" "),
            id.clone(),
            self.summary.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_date_at_midnight_utc() {
        let at = parse_time("2026-11-29T09:30:00+01:00").unwrap();
        assert_eq!(at.unix_timestamp(), 1_795_941_000);
        let day = parse_time("2026-11-29").unwrap();
        assert_eq!(day, time::macros::datetime!(2026-11-29 00:00 UTC));
        let err = parse_time("yesterday").unwrap_err();
        assert!(
            err.contains("RFC 3339") && err.contains("2026-11-29"),
            "{err}"
        );
        assert!(parse_time("2026-13-01").is_err());
    }
}
