//! Cells as a device file holds them, read back into what the upload sends: the
//! product's own CSV exports neutralise formula-like cells with a leading `'`, and a
//! kind column may name the kind in several ways.

use reseller_kit::device_id::DeviceIdKind;

use super::header::normalise;

/// A cell the product's CSV export neutralised against formula injection (a `'` followed
/// by `=`, `+`, `-`, `@`, tab or CR), without its `'`; any other cell as it is. A CR is a
/// LF here: [`super::decode`] wrote every line end as LF, quoted ones too.
pub fn unneutralise(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r', '\n']) => rest,
        _ => cell,
    }
}

/// Whether `cell` is a number in scientific notation (`4.90154E+14`): what Excel writes
/// for a long ID in a column formatted as a number. The digits are lost, so no such cell
/// is an identifier, and a file holding one must be saved again from a Text column.
pub fn is_scientific(cell: &str) -> bool {
    let Some((mantissa, exponent)) = cell.trim().split_once(['E', 'e']) else {
        return false;
    };
    // A decimal point, or the decimal comma of European Excel (in a semicolon file).
    let (whole, fraction) = mantissa.split_once(['.', ',']).unwrap_or((mantissa, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction) && exponent.strip_prefix('+').is_some_and(digits)
}

/// `reseller.v1.DeviceIdKind` as the wire carries it.
pub fn wire_kind(kind: Option<DeviceIdKind>) -> i32 {
    kind.map_or(0, |k| i32::from(k.as_i16()))
}

/// A kind cell: empty means the column's default; an unknown word becomes -1, which the
/// shared parser (and so the service) rejects as an unknown kind, on that row only.
pub fn kind_cell(text: &str, default: i32) -> i32 {
    match normalise(text).as_str() {
        "" => default,
        "imei" | "1" | "deviceidkindimei" => wire_kind(Some(DeviceIdKind::Imei)),
        "meid" | "2" | "deviceidkindmeid" => wire_kind(Some(DeviceIdKind::Meid)),
        "serial" | "serialnumber" | "sn" | "3" | "deviceidkindserial" => {
            wire_kind(Some(DeviceIdKind::Serial))
        }
        "auto" | "infer" | "0" => 0,
        _ => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutralised_cells_read_back_without_their_quote() {
        for (cell, read) in [
            ("'=cmd", "=cmd"),
            ("'+1", "+1"),
            ("'-R58M", "-R58M"),
            ("'@model", "@model"),
            ("'\tx", "\tx"),
            ("'\rx", "\rx"),
            ("'\nx", "\nx"),
            // Anything else keeps its quote: it was written so.
            ("'R58M", "'R58M"),
            ("O'Brien", "O'Brien"),
            ("'", "'"),
            ("", ""),
        ] {
            assert_eq!(unneutralise(cell), read, "{cell:?}");
        }
    }

    #[test]
    fn ids_excel_wrote_as_numbers_are_recognised() {
        // European Excel writes a decimal comma (in a semicolon file).
        for cell in [
            "4.90154E+14",
            "4,90154E+14",
            "3.56938E+14",
            "5E+14",
            " 4.9e+14 ",
        ] {
            assert!(is_scientific(cell), "{cell}");
        }
        for cell in [
            "490154203237518",
            "R58ME14",
            "A0E+1",
            "4.9E14",
            "E+14",
            "4.E+14",
        ] {
            assert!(!is_scientific(cell), "{cell}");
        }
    }

    #[test]
    fn kinds_read_as_people_and_the_exports_write_them() {
        assert_eq!(kind_cell("IMEI", 0), 1);
        assert_eq!(kind_cell("MEID", 0), 2);
        assert_eq!(kind_cell("Serial", 0), 3);
        assert_eq!(kind_cell("serial number", 0), 3);
        assert_eq!(kind_cell("DEVICE_ID_KIND_SERIAL", 0), 3);
        assert_eq!(kind_cell(" ", 1), 1);
        assert_eq!(kind_cell("auto", 1), 0);
        assert_eq!(kind_cell("gadget", 0), -1);
    }
}
