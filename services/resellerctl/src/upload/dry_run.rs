//! `devices upload --dry-run`: the service's verdicts on a file without a portal.
//!
//! Every row goes through the parser device-service uses
//! (`reseller_kit::device_id::parse_input` and `parse_secondary_ids`), and repeats are
//! found the way its registration statement finds them: a device is a duplicate when any
//! of its identifiers (device ID or secondary) belongs to an earlier valid row of the
//! file, duplicate or not, and it names the earliest such row. So the dry run reports
//! the same invalid and duplicate rows, with the same messages and echoed IDs; only
//! "already registered" needs the portal.

use std::collections::HashMap;

use reseller_kit::device_id::{echo_id, parse_input, parse_secondary_ids};

use crate::device_file::DeviceFile;
use crate::errors::CliError;
use crate::output::Record;
use crate::views::{ReasonCounts, RejectionView};

/// What a dry run found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DryRunReport {
    /// Devices in the file.
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
/// does and finding repeats across every identifier of every row; `on_reject` gets each
/// rejected row in index order.
///
/// # Errors
/// When the file cannot be read, or `on_reject` fails.
pub fn dry_run(
    file: &mut DeviceFile,
    mut on_reject: impl FnMut(RejectionView) -> Result<(), CliError>,
) -> Result<DryRunReport, CliError> {
    // The first row of the file that carries each canonical identifier, among valid rows
    // (a duplicate's identifiers count too, as they do in the service's statement).
    let mut first_row: HashMap<String, i64> = HashMap::new();
    let mut counts = ReasonCounts::default();
    let mut index: i64 = 0;
    let mut valid: i64 = 0;
    while let Some(input) = file.next_device()? {
        let parsed = parse_input(&input.device_id, input.id_kind, &input.model).and_then(
            |(device, _model)| {
                let secondary = parse_secondary_ids(&input.secondary_ids, &device)?;
                Ok((device, secondary))
            },
        );
        let rejection = match parsed {
            Err(message) => Some(RejectionView {
                index,
                device_id: echo_id(&input.device_id),
                reason: "invalid_id",
                message,
            }),
            Ok((device, secondary)) => {
                let identifiers: Vec<String> = std::iter::once(device)
                    .chain(secondary)
                    .map(|id| id.into_string())
                    .collect();
                let earlier = identifiers
                    .iter()
                    .filter_map(|id| first_row.get(id).copied())
                    .min();
                for id in &identifiers {
                    first_row.entry(id.clone()).or_insert(index);
                }
                match earlier {
                    Some(first) => Some(RejectionView {
                        index,
                        device_id: identifiers[0].clone(),
                        reason: "duplicate_in_upload",
                        message: format!("duplicate of the device at index {first}"),
                    }),
                    None => {
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::device_file::ReadOptions;

    fn run(content: &str) -> (DryRunReport, Vec<RejectionView>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        let mut file = DeviceFile::open(f.path(), ReadOptions::default()).unwrap();
        let mut rejected = Vec::new();
        let report = dry_run(&mut file, |r| {
            rejected.push(r);
            Ok(())
        })
        .unwrap();
        (report, rejected)
    }

    fn rows(rejected: &[RejectionView]) -> Vec<(i64, &str, &str)> {
        rejected
            .iter()
            .map(|r| (r.index, r.device_id.as_str(), r.reason))
            .collect()
    }

    #[test]
    fn dry_run_numbers_rows_and_finds_repeats_like_the_service() {
        let (report, rejected) =
            run("id\n490154203237518\n490154203237517\n 490154203237518\nr-1\nR-1\n\"\",x\n");
        assert_eq!((report.rows, report.valid, report.rejected), (6, 2, 4));
        assert_eq!(
            rows(&rejected),
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
    fn repeats_are_found_across_every_identifier_of_every_row() {
        // Row 1's IMEI 2 is row 0's IMEI 1; row 2's IMEI 1 is row 1's IMEI 2 (row 1 was a
        // duplicate, its identifiers still count); row 3 repeats an IMEI 2 as IMEI 2;
        // row 4 repeats its own IMEI 1 as IMEI 2, which is no repeat; row 5's serial was
        // written with separators and case the parser removes.
        let (report, rejected) = run("IMEI1,IMEI2,Serial\n\
             490154203237518,,R58M-1\n\
             356938035643809,490154203237518,\n\
             352099001761481,356938035643809,\n\
             35-209900-176148-1,,\n\
             353918057788933,353918057788933,\n\
             351756051523993,,r58m-1\n");
        assert_eq!(
            rows(&rejected),
            [
                (1, "356938035643809", "duplicate_in_upload"),
                (2, "352099001761481", "duplicate_in_upload"),
                (3, "352099001761481", "duplicate_in_upload"),
                (5, "351756051523993", "duplicate_in_upload"),
            ]
        );
        let messages: Vec<&str> = rejected.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "duplicate of the device at index 0",
                "duplicate of the device at index 1",
                "duplicate of the device at index 2",
                "duplicate of the device at index 0",
            ]
        );
        assert_eq!((report.rows, report.valid), (6, 2));
    }

    #[test]
    fn an_invalid_secondary_id_rejects_its_row_and_names_it() {
        let (_, rejected) = run("IMEI1;IMEI2\n490154203237518;490154203237517\n");
        assert_eq!(rows(&rejected), [(0, "490154203237518", "invalid_id")]);
        assert!(
            rejected[0].message.starts_with("secondary identifier 1: "),
            "{}",
            rejected[0].message
        );
    }

    #[test]
    fn invalid_ids_are_echoed_cut_and_escaped() {
        let long = "X".repeat(100);
        let (_, rejected) = run(&format!("id\n{long}!\n\"R5\u{1}X\"\n"));
        assert_eq!(rejected[0].device_id.chars().count(), 64);
        assert!(rejected[0].device_id.ends_with('…'));
        assert_eq!(rejected[1].device_id, "R5\\u{1}X");
    }
}
