//! Header lines (DOMAIN.md "Upload files"): which columns hold the device ID, the
//! secondary identifiers, the model and the kind, recognised by name ignoring case,
//! spaces and `_ . # -`.
//!
//! - device ID: `device_id`, `device id`, `imei`, `imei1`, `imei 1`, `meid`, `serial`,
//!   `serial number`, `serialnumber`, `sn`, `id`. When several are present the most
//!   specific wins, in that order (`device id`, then IMEI, MEID, serial, and `id` last,
//!   since a spreadsheet's `ID` column is often a row number); `imei`, `meid` and the
//!   serial names also give the kind of its cells.
//! - secondary identifiers: `imei2`/`imei 2`, and every serial column beside a device ID
//!   that is not itself a serial (`Device ID,Serial`: a device ID with its serial).
//! - `model`; the kind: `kind` or `Device Type`.
//!
//! Other columns are ignored. A first line is a header when any cell is a recognised name
//! or no cell holds a digit; a header without a device ID column is refused.

use reseller_kit::device_id::DeviceIdKind;

/// A header cell as compared: lower case, without spaces and `_ . # -`.
pub fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '_' | '.' | '#' | '-' | '\u{feff}'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// What a recognised header name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    /// A device ID column, ranked: the lower the rank, the more specific the name.
    DeviceId {
        rank: u8,
        kind: Option<DeviceIdKind>,
    },
    /// A dual-SIM's second IMEI.
    Imei2,
    Model,
    Kind,
}

/// Serial columns: the device ID when there is nothing more specific, else a secondary
/// identifier.
const SERIAL_RANK: u8 = 3;

fn name_of(normalised: &str) -> Option<Name> {
    let id = |rank, kind| Some(Name::DeviceId { rank, kind });
    match normalised {
        "deviceid" => id(0, None),
        "imei" | "imei1" => id(1, Some(DeviceIdKind::Imei)),
        "meid" => id(2, Some(DeviceIdKind::Meid)),
        "serial" | "serialnumber" | "sn" => id(SERIAL_RANK, Some(DeviceIdKind::Serial)),
        "id" => id(4, None),
        "imei2" => Some(Name::Imei2),
        "model" => Some(Name::Model),
        "kind" | "devicetype" => Some(Name::Kind),
        _ => None,
    }
}

/// The names accepted for the device ID column, as a refusal lists them.
pub const DEVICE_ID_NAMES: &str = "device_id, device id, imei, imei1, imei 1, meid, serial, \
                                   serial number, serialnumber, sn or id";

/// Whether `cells` (the first non-blank line) is a header rather than a device.
pub fn is_header(cells: &[String]) -> bool {
    cells.iter().any(|c| name_of(&normalise(c)).is_some())
        || !cells
            .iter()
            .any(|c| c.chars().any(|ch| ch.is_ascii_digit()))
}

/// Where a header puts things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The device ID column.
    pub id: usize,
    /// The kind the device ID column's name implies (`None`: inferred per row).
    pub id_kind: Option<DeviceIdKind>,
    /// The secondary identifier columns, in file order.
    pub secondary: Vec<usize>,
    /// The model column.
    pub model: Option<usize>,
    /// The kind column.
    pub kind: Option<usize>,
    /// How the header was read, for the user: `device ID "IMEI 1"; …`.
    pub description: String,
}

impl Columns {
    /// The columns `cells` name.
    ///
    /// # Errors
    /// When no cell names a device ID column: the message names the columns found and
    /// the names accepted.
    pub fn of(cells: &[String]) -> Result<Self, String> {
        let names: Vec<Option<Name>> = cells.iter().map(|c| name_of(&normalise(c))).collect();
        let (id, id_rank, id_kind) = names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n {
                Some(Name::DeviceId { rank, kind }) => Some((i, *rank, *kind)),
                _ => None,
            })
            // The most specific name; the leftmost of equals.
            .min_by_key(|&(i, rank, _)| (rank, i))
            .ok_or_else(|| {
                let found: Vec<String> = cells.iter().map(|c| format!("{:?}", c.trim())).collect();
                format!(
                    "the header line names no device ID column (found {}); name the column \
                     of identifiers {DEVICE_ID_NAMES} (case, spaces and _ . # - do not \
                     matter), or pass --no-header if the first line is a device (a file \
                     without a header has one identifier per line)",
                    found.join(", ")
                )
            })?;
        let secondary: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|&(i, n)| {
                i != id
                    && match n {
                        Some(Name::Imei2) => true,
                        Some(Name::DeviceId { rank, .. }) => {
                            *rank == SERIAL_RANK && id_rank < SERIAL_RANK
                        }
                        _ => false,
                    }
            })
            .map(|(i, _)| i)
            .collect();
        let first = |wanted: Name| names.iter().position(|n| *n == Some(wanted));
        let model = first(Name::Model);
        let kind = first(Name::Kind);

        let quoted = |i: usize| format!("{:?}", cells[i].trim());
        let mut parts = vec![format!("device ID {}", quoted(id))];
        if !secondary.is_empty() {
            let list: Vec<String> = secondary.iter().map(|&i| quoted(i)).collect();
            parts.push(format!("secondary IDs {}", list.join(", ")));
        }
        if let Some(i) = model {
            parts.push(format!("model {}", quoted(i)));
        }
        if let Some(i) = kind {
            parts.push(format!("kind {}", quoted(i)));
        }
        let used =
            |i: usize| i == id || secondary.contains(&i) || Some(i) == model || Some(i) == kind;
        let ignored: Vec<String> = (0..cells.len())
            .filter(|&i| !used(i) && !cells[i].trim().is_empty())
            .map(quoted)
            .collect();
        if !ignored.is_empty() {
            parts.push(format!("ignored {}", ignored.join(", ")));
        }
        Ok(Self {
            id,
            id_kind,
            secondary,
            model,
            kind,
            description: parts.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(line: &str) -> Vec<String> {
        line.split(',').map(str::to_owned).collect()
    }

    fn columns(line: &str) -> Columns {
        Columns::of(&cells(line)).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn names_match_ignoring_case_spaces_and_punctuation() {
        for name in [
            "device_id",
            "Device ID",
            "DEVICE-ID",
            "imei",
            "IMEI1",
            "IMEI 1",
            "Imei #1",
            "meid",
            "serial",
            "Serial Number",
            "serialnumber",
            "S.N.",
            "sn",
            "ID",
            "\u{feff}imei",
        ] {
            assert_eq!(columns(name).id, 0, "{name}");
        }
        assert_eq!(columns("Model,IMEI").id_kind, Some(DeviceIdKind::Imei));
        assert_eq!(columns("MEID").id_kind, Some(DeviceIdKind::Meid));
        assert_eq!(columns("Serial Number").id_kind, Some(DeviceIdKind::Serial));
        assert_eq!(columns("Device ID").id_kind, None);
        assert_eq!(columns("id").id_kind, None);
    }

    #[test]
    fn the_most_specific_device_id_column_wins() {
        assert_eq!(columns("ID,IMEI,Model").id, 1);
        assert_eq!(columns("Serial,IMEI").id, 1);
        assert_eq!(columns("imei,Device ID").id, 1);
        assert_eq!(columns("id,serial").id, 1);
        assert_eq!(columns("IMEI,IMEI").id, 0);
    }

    #[test]
    fn second_imeis_and_serials_beside_an_id_are_secondary() {
        let c = columns("IMEI1,IMEI2,Model");
        assert_eq!((c.id, c.secondary.clone(), c.model), (0, vec![1], Some(2)));
        let c = columns("Device ID,Serial");
        assert_eq!((c.id, c.secondary.clone()), (0, vec![1]));
        let c = columns("Serial Number,IMEI 2,IMEI 1,Device Type");
        assert_eq!(
            (c.id, c.secondary.clone(), c.kind),
            (2, vec![0, 1], Some(3))
        );
        // A lone serial column is the device ID; an `id` column beside it is ignored.
        let c = columns("id,serial");
        assert!(c.secondary.is_empty());
        // A second IMEI or MEID column is not a secondary identifier (an MEID column often
        // holds the IMEI without its check digit).
        assert!(columns("IMEI,MEID").secondary.is_empty());
    }

    #[test]
    fn the_description_says_how_the_header_was_read() {
        assert_eq!(
            columns("IMEI 1,IMEI 2,Model,Colour").description,
            "device ID \"IMEI 1\"; secondary IDs \"IMEI 2\"; model \"Model\"; ignored \"Colour\""
        );
    }

    #[test]
    fn a_header_without_a_device_id_column_is_refused() {
        for line in ["device,model", "Handset", "IMEI2,Model"] {
            let err = Columns::of(&cells(line)).unwrap_err();
            assert!(
                err.starts_with("the header line names no device ID column (found "),
                "{err}"
            );
            assert!(err.contains(DEVICE_ID_NAMES), "{err}");
        }
    }

    #[test]
    fn a_first_line_is_a_header_when_a_cell_is_a_name_or_none_holds_a_digit() {
        assert!(is_header(&cells("IMEI;Model")));
        assert!(is_header(&cells("device,model")));
        assert!(is_header(&cells("Handset")));
        assert!(is_header(&cells("Model 2,IMEI")));
        assert!(!is_header(&cells("490154203237518")));
        assert!(!is_header(&cells("490154203237518,Galaxy")));
        assert!(!is_header(&cells("R58M1")));
    }
}
