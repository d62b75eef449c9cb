//! Files as spreadsheets, other portals and this product write them: every example of
//! issue 9 ("Upload files as spreadsheets write them") and the other members of each
//! kind, read through [`DeviceFile`] as an upload reads them.

use std::io::Write;

use super::*;

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

/// Every device of `bytes` read with `options`, or the refusal (without the path).
fn read_with(bytes: &[u8], options: ReadOptions) -> Result<Vec<pb::DeviceInput>, String> {
    let f = file_with(bytes);
    let strip = |e: CliError| {
        let text = e.to_string();
        let prefix = format!("{}: ", f.path().display());
        text.strip_prefix(&prefix).unwrap_or(&text).to_owned()
    };
    let mut file = DeviceFile::open(f.path(), options).map_err(strip)?;
    let mut out = Vec::new();
    while let Some(d) = file.next_device().map_err(strip)? {
        out.push(d);
    }
    let counted = DeviceFile::count(f.path(), options).map_err(strip)?;
    assert_eq!(counted, out.len() as u64, "count() agrees with reading");
    Ok(out)
}

fn read(text: &str) -> Result<Vec<pb::DeviceInput>, String> {
    read_with(text.as_bytes(), ReadOptions::default())
}

fn devices(text: &str) -> Vec<pb::DeviceInput> {
    read(text).unwrap_or_else(|e| panic!("{text:?} refused: {e}"))
}

fn ids(devices: &[pb::DeviceInput]) -> Vec<&str> {
    devices.iter().map(|d| d.device_id.as_str()).collect()
}

fn device(id: &str, kind: i32, model: &str, secondary: &[&str]) -> pb::DeviceInput {
    pb::DeviceInput {
        device_id: id.into(),
        id_kind: kind,
        model: model.into(),
        secondary_ids: secondary.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// `text` in UTF-16 after its byte-order mark, as Excel's "Unicode Text" saves it
/// (little-endian) or big-endian; also the decoder's tests' input.
pub(super) fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    let mut out: Vec<u8> = if big_endian {
        vec![0xFE, 0xFF]
    } else {
        vec![0xFF, 0xFE]
    };
    for unit in text.encode_utf16() {
        out.extend(if big_endian {
            unit.to_be_bytes()
        } else {
            unit.to_le_bytes()
        });
    }
    out
}

const IMEI_A: &str = "490154203237518";
const IMEI_B: &str = "356938035643809";

#[test]
fn one_identifier_per_line_needs_no_header() {
    let d = devices("490154203237518\nR58M-1\n\n  A0000000002329 \n");
    assert_eq!(ids(&d), [IMEI_A, "R58M-1", "  A0000000002329 "]);
    assert!(
        d.iter()
            .all(|d| d.id_kind == 0 && d.secondary_ids.is_empty())
    );
}

#[test]
fn an_excel_sep_line_is_honoured_and_never_a_device() {
    // The issue's example: `sep=,` then a header; before, `IMEI` was registered.
    let d = devices("sep=,\r\nIMEI\r\n490154203237518\r\n");
    assert_eq!(d, [device(IMEI_A, 1, "", &[])]);
    // Without a header, and with another separator.
    assert_eq!(ids(&devices("sep=,\n490154203237518\n")), [IMEI_A]);
    let d = devices("sep=;\r\nIMEI;Model\r\n490154203237518;Galaxy, S26\r\n");
    assert_eq!(d, [device(IMEI_A, 1, "Galaxy, S26", &[])]);
    // With a UTF-8 byte-order mark before it, as Excel's "CSV UTF-8" writes.
    let d = devices("\u{feff}sep=;\r\nIMEI;Model\r\n490154203237518;S26\r\n");
    assert_eq!(d, [device(IMEI_A, 1, "S26", &[])]);
    // A hint line alone holds no device.
    assert!(devices("sep=,\r\n").is_empty());
}

#[test]
fn dual_sim_files_send_imei_2_as_a_secondary_id() {
    // The issue's example: before, a device `IMEI1` was registered and IMEI 2 dropped.
    let d = devices("IMEI1,IMEI2\n490154203237518,356938035643809\n");
    assert_eq!(d, [device(IMEI_A, 1, "", &[IMEI_B])]);
    let d = devices("IMEI 1;IMEI 2;Serial Number;Model\n490154203237518;;R58M1;S26\n");
    assert_eq!(
        d,
        [device(IMEI_A, 1, "S26", &["R58M1"])],
        "empty cells are omitted"
    );
    let d = devices("Device ID,Serial\nA0000000002329,R58M1\n");
    assert_eq!(d, [device("A0000000002329", 0, "", &["R58M1"])]);
}

#[test]
fn a_european_excel_file_uses_semicolons() {
    // The issue's example: before, every row was a bad serial and the header row 0.
    let d = devices("IMEI;Model\r\n490154203237518;Galaxy S26\r\n356938035643809;Galaxy A56\r\n");
    assert_eq!(
        d,
        [
            device(IMEI_A, 1, "Galaxy S26", &[]),
            device(IMEI_B, 1, "Galaxy A56", &[])
        ]
    );
}

#[test]
fn tab_separated_files_read() {
    let d = devices("Model\tIMEI\n\"Galaxy\tTab\"\t490154203237518\n");
    assert_eq!(d, [device(IMEI_A, 1, "Galaxy\tTab", &[])]);
}

#[test]
fn utf16_files_with_a_byte_order_mark_are_converted() {
    // The issue's example (before: `internal error`), as Excel's "Unicode Text" writes it:
    // UTF-16LE with a mark, tab-separated, CRLF.
    let text = "IMEI\tModel\r\n490154203237518\tGalaxy Café\r\n";
    let want = [device(IMEI_A, 1, "Galaxy Café", &[])];
    let le = read_with(&utf16(text, false), ReadOptions::default()).unwrap();
    assert_eq!(le, want);
    let be = read_with(&utf16(text, true), ReadOptions::default()).unwrap();
    assert_eq!(be, want);
}

#[test]
fn every_line_end_works() {
    let want = [IMEI_A, IMEI_B];
    assert_eq!(
        ids(&devices("IMEI\r490154203237518\r356938035643809\r")),
        want
    );
    assert_eq!(
        ids(&devices("IMEI\r\n490154203237518\r\n356938035643809")),
        want
    );
    assert_eq!(
        ids(&devices("IMEI\n490154203237518\r356938035643809\r\n")),
        want
    );
}

#[test]
fn quoted_fields_may_hold_separators_quotes_and_line_breaks() {
    let d = devices(
        "\"IMEI\",\"Model\"\n\"490154203237518\",\"Galaxy S26, 5G\"\n356938035643809,\"Tab \"\"Pro\"\"\"\n",
    );
    assert_eq!(
        d,
        [
            device(IMEI_A, 1, "Galaxy S26, 5G", &[]),
            device(IMEI_B, 1, "Tab \"Pro\"", &[])
        ]
    );
    let d = devices("IMEI;Model\n490154203237518;\"two\r\nlines\"\n");
    assert_eq!(d[0].model, "two\nlines", "kept for the parser to reject");
}

#[test]
fn a_header_alone_or_nothing_holds_no_device() {
    for text in [
        "",
        "\n\n",
        "IMEI\n",
        "IMEI;Model\r\n;\r\n;;\r\n",
        "\u{feff}",
    ] {
        let f = file_with(text.as_bytes());
        let file = DeviceFile::open(f.path(), ReadOptions::default()).unwrap();
        assert!(file.is_empty(), "{text:?}");
    }
    let f = file_with(b"IMEI\n490154203237518\n");
    assert!(
        !DeviceFile::open(f.path(), ReadOptions::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn rows_of_empty_cells_are_skipped_and_not_numbered() {
    let d = devices("IMEI;Model\n490154203237518;A\n;\n ; \n356938035643809;B\n;;;\n");
    assert_eq!(ids(&d), [IMEI_A, IMEI_B]);
    // A row with a model but no ID is a device (the parser rejects its empty ID).
    let d = devices("IMEI,Model\n,Galaxy\n");
    assert_eq!(d, [device("", 1, "Galaxy", &[])]);
}

#[test]
fn headers_without_a_device_id_column_are_refused() {
    for text in ["device,model\nX1,Galaxy\n", "Handset\n490154203237518\n"] {
        let err = read(text).unwrap_err();
        assert!(
            err.starts_with("line 1: the header line names no device ID column (found "),
            "{err}"
        );
        assert!(err.contains("device_id, device id, imei"), "{err}");
        assert!(err.contains("--no-header"), "{err}");
    }
    // The line number counts a hint line.
    let err = read("sep=;\ndevice;model\n").unwrap_err();
    assert!(err.starts_with("line 2: "), "{err}");
    // A first line without digits is a header: a file of digit-less serials needs
    // --no-header.
    assert!(read("ABCDEF\nGHIJKL\n").is_err());
    let d = read_with(
        b"ABCDEF\nGHIJKL\n",
        ReadOptions {
            no_header: true,
            ..ReadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(ids(&d), ["ABCDEF", "GHIJKL"]);
}

#[test]
fn a_header_names_the_columns_and_may_imply_the_kind() {
    let d = devices("\u{feff}Model,IMEI\nGalaxy,490154203237518\n");
    assert_eq!(d, [device(IMEI_A, 1, "Galaxy", &[])]);
    let d = devices("device_id,kind\n123456789012345,serial\nX-1,\nY,imei\nZ,gadget\n");
    let kinds: Vec<_> = d.iter().map(|d| d.id_kind).collect();
    assert_eq!(kinds, [3, 0, 1, -1]);
    // Short rows read as empty cells; long rows' extra cells are ignored.
    let d = devices("ID,IMEI,Model\n1,490154203237518\n2,356938035643809,S26,extra\n");
    assert_eq!(
        d,
        [device(IMEI_A, 1, "", &[]), device(IMEI_B, 1, "S26", &[])],
        "a row-number ID column beside an IMEI column is not the device ID"
    );
}

#[test]
fn a_quote_left_open_never_joins_lines_into_one_device() {
    let err = read("490154203237518\n\"356938035643809\n352099001761481\n").unwrap_err();
    assert!(
        err.starts_with("line 2: an identifier spans lines 2 to 3: a quote (\") opened there"),
        "{err}"
    );
    let err = read("IMEI1;IMEI2\n490154203237518;\"356938035643809\n1;2\n").unwrap_err();
    assert!(err.starts_with("line 2: "), "{err}");
    // A closed quote is fine, and a line break in a model is the parser's to reject.
    assert_eq!(ids(&devices("\"490154203237518\"\n")), [IMEI_A]);
    assert_eq!(
        devices("IMEI,Model\n490154203237518,\"a\nb\"\n")[0].model,
        "a\nb"
    );
}

#[test]
fn ids_excel_rounded_to_numbers_refuse_the_file_with_the_fix() {
    let err = read("IMEI;Model\r\n4,90154E+14;S26\r\n").unwrap_err();
    assert!(
        err.starts_with(
            "line 2: the identifier \"4,90154E+14\" is a number Excel wrote in scientific \
             notation"
        ),
        "{err}"
    );
    assert!(err.contains("format the column as Text"), "{err}");
    assert!(read("4.90154E+14\n").is_err());
}

#[test]
fn lines_with_several_values_need_a_header() {
    let err = read("490154203237518\n356938035643809,Galaxy\n").unwrap_err();
    assert_eq!(
        err,
        "line 2: a file without a header has one identifier per line, but this line has 2 \
         values (\"356938035643809\", \"Galaxy\"); add a header line naming the columns \
         (e.g. imei,model or imei1,imei2)"
    );
    // The first line too, before anything is read further.
    assert!(
        read("490154203237518;356938035643809\n")
            .unwrap_err()
            .starts_with("line 1: ")
    );
    // Trailing separators are not values.
    assert_eq!(
        ids(&devices("490154203237518;;\n;356938035643809\n")),
        [IMEI_A, IMEI_B]
    );
}

#[test]
fn the_products_own_exports_read_back() {
    // One customer's devices as reporting-service writes them (its own test's bytes):
    // CRLF, quoted cells, and `'` before cells a spreadsheet would run as formulas.
    let export = "Upload ID,Uploaded At,Order Number,Device ID,Device Type,Model,Virtual Upload,Via MSP\r\n\
         01900000-0000-7000-8000-000000000001,2023-11-14T22:13:20.25Z,\"PO, 7\",356938035643809,IMEI,Galaxy S26,no,\r\n\
         01900000-0000-7000-8000-000000000001,2023-11-14T22:13:20.25Z,'=cmd,'-R58M,Serial,'@model,yes,200001\r\n\
         01900000-0000-7000-8000-000000000001,2023-11-14T22:13:20.25Z,,A0000000002329,MEID,,no,\r\n";
    let want = [
        device(IMEI_B, 1, "Galaxy S26", &[]),
        device("-R58M", 3, "@model", &[]),
        device("A0000000002329", 2, "", &[]),
    ];
    assert_eq!(devices(export), want);
    // With the byte-order mark `--excel` asks for.
    assert_eq!(devices(&format!("\u{feff}{export}")), want);
    // resellerctl's own `-o csv` device lists (`customers devices` as it wrote them
    // before issue 13 — it now writes the download above; `msp devices` and `portal
    // devices` still start with these columns), and its rejects files.
    let d = devices(
        "DEVICE ID,KIND,MODEL,UPLOAD ID,UPLOADED,ORDER NUMBER,VIRTUAL\n\
         356938035643809,imei,S26,01900000-0000-7000-8000-000000000001,2023-11-14T22:13:20Z,PO-1,no\n",
    );
    assert_eq!(d, [device(IMEI_B, 1, "S26", &[])]);
    let d = devices(
        "index,device_id,reason,message\n3,490154203237517,invalid_id,\"IMEI fails, Luhn\"\n",
    );
    assert_eq!(ids(&d), ["490154203237517"]);
}

#[test]
fn other_encodings_are_refused_unless_named() {
    // "Modèle" as Western European Excel saves it (windows-1252: è is 0xE8).
    let bytes = b"IMEI;Model\r\n490154203237518;T\xE9l\xE9phone\r\n";
    let err = read_with(bytes, ReadOptions::default()).unwrap_err();
    assert!(
        err.starts_with("line 2, byte offset 29: the file is not UTF-8 (0xE9)"),
        "{err}"
    );
    assert!(err.contains("--encoding windows-1252"), "{err}");
    let named = ReadOptions {
        encoding: Some(encoding_for_label("windows-1252").unwrap()),
        ..ReadOptions::default()
    };
    let d = read_with(bytes, named).unwrap();
    assert_eq!(d, [device(IMEI_A, 1, "Téléphone", &[])]);
    let f = file_with(bytes);
    let file = DeviceFile::open(f.path(), named).unwrap();
    assert!(file.description().contains("windows-1252"), "{file:?}");
}

#[test]
fn a_bad_byte_deep_in_the_file_is_found_by_count_before_sending() {
    let mut bytes = b"IMEI\n".to_vec();
    for n in 0..50_000u64 {
        bytes.extend(format!("{:015}\n", n).as_bytes());
    }
    let at = bytes.len();
    bytes.extend(b"49015420323751\xFF\n");
    let f = file_with(&bytes);
    let err = DeviceFile::count(f.path(), ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("line 50002, byte offset {}: ", at + 14)),
        "{err}"
    );
}

#[test]
fn the_description_says_how_the_file_was_read() {
    let f = file_with(&utf16("IMEI1\tIMEI2\r\n490154203237518\t\r\n", false));
    let file = DeviceFile::open(f.path(), ReadOptions::default()).unwrap();
    assert_eq!(
        file.description(),
        "read as UTF-16LE; separator tab; device ID \"IMEI1\"; secondary IDs \"IMEI2\""
    );
    let f = file_with(b"490154203237518\n");
    let file = DeviceFile::open(f.path(), ReadOptions::default()).unwrap();
    assert_eq!(file.description(), "no header: one identifier per line");
}
