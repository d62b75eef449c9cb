//! Device identifiers (DOMAIN.md "Devices and uploads", "One handset, one registration"):
//! the one parser the services and `resellerctl --dry-run` share, with the rule for a
//! device's model.
//!
//! Every identifier is stored in one canonical form, so two spellings of one handset
//! never become two devices. [`DeviceId::parse`] follows DOMAIN.md's numbered steps, in
//! order, whatever kind the caller gave:
//!
//! 1. trimmed and upper-cased; spaces, dashes, dots and slashes are removed when what
//!    remains is 14 to 18 decimal digits (`35-588799-946533-0`);
//! 2. 15 digits that pass Luhn: an IMEI;
//! 3. 18 digits whose first 10 are a manufacturer code from 2684354560 to 4294967295 and
//!    whose last 8 are at most 16777215: a decimal MEID, converted to its 14 hex digits;
//! 4. 14 hex digits beginning `A0`–`FF`: an MEID; 15 such characters whose last is the
//!    check digit (Luhn in base 16): the MEID without it;
//! 5. any other 14 to 18 decimal digits: `INVALID_ID`, with what it looks like and what
//!    to send instead (never a serial, whatever kind was given);
//! 6. otherwise the kind given (an explicit IMEI or MEID that fails its rule is invalid),
//!    or, unspecified, a serial number: 1 to 32 of `A-Z 0-9 -`.
//!
//! [`lookup_key`] is the one lookup rule for every place that takes an identifier
//! (deletions, moves, finding): the same canonical form, or nothing a device can have.

use std::fmt;

use crate::text::{FreeText, echo};

/// The kind of a device identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceIdKind {
    /// International Mobile Equipment Identity.
    Imei,
    /// Mobile Equipment Identifier.
    Meid,
    /// A manufacturer's serial number.
    Serial,
}

impl DeviceIdKind {
    /// The database spelling (also the protobuf enum value).
    pub fn as_i16(self) -> i16 {
        match self {
            DeviceIdKind::Imei => 1,
            DeviceIdKind::Meid => 2,
            DeviceIdKind::Serial => 3,
        }
    }

    /// Reads [`DeviceIdKind::as_i16`]; `None` for 0 (unspecified) or unknown values.
    pub fn from_i16(value: i16) -> Option<Self> {
        match value {
            1 => Some(DeviceIdKind::Imei),
            2 => Some(DeviceIdKind::Meid),
            3 => Some(DeviceIdKind::Serial),
            _ => None,
        }
    }

    /// The name people read.
    pub fn label(self) -> &'static str {
        match self {
            DeviceIdKind::Imei => "IMEI",
            DeviceIdKind::Meid => "MEID",
            DeviceIdKind::Serial => "Serial",
        }
    }
}

/// A normalised device identifier with its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId {
    value: String,
    kind: DeviceIdKind,
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl DeviceId {
    /// Canonicalises `input` by DOMAIN.md's steps (see the module docs); `kind` is the
    /// kind the caller gave, `None` to infer it.
    ///
    /// # Errors
    /// A message a person can act on: what the value looks like and what to send instead.
    /// It echoes the value through [`crate::text::echo`], so it is safe to store and
    /// short whatever the input.
    pub fn parse(input: &str, kind: Option<DeviceIdKind>) -> Result<Self, String> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err("device ID is empty".into());
        }
        let value = trimmed.to_ascii_uppercase();
        // Step 1: separators go when only 14 to 18 decimal digits remain.
        let digits = without_separators(&value);
        if let Some(digits) = digits {
            return Self::from_digits(digits, trimmed);
        }
        // Step 4: an MEID, with or without its printed check digit.
        if let Some(meid) = hex_meid(&value) {
            return Ok(Self {
                value: meid.to_owned(),
                kind: DeviceIdKind::Meid,
            });
        }
        // Step 6: the kind given, or a serial.
        match kind {
            Some(DeviceIdKind::Imei) => Err(format!(
                "IMEI {} must be 15 digits (separators allowed); send the IMEI as printed on the device",
                echo(trimmed)
            )),
            Some(DeviceIdKind::Meid) => Err(meid_problem(&value, trimmed)),
            Some(DeviceIdKind::Serial) | None => {
                check_serial(&value, trimmed)?;
                Ok(Self {
                    value,
                    kind: DeviceIdKind::Serial,
                })
            }
        }
    }

    /// Steps 2, 3 and 5: 14 to 18 decimal digits are an IMEI, a decimal MEID, or invalid.
    fn from_digits(digits: String, given: &str) -> Result<Self, String> {
        let spelled = if digits == given {
            digits.clone()
        } else {
            format!("{} ({digits})", echo(given))
        };
        let values: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
        match digits.len() {
            15 => {
                let expected = luhn_check_digit(&values[..14]);
                if values[14] == expected {
                    Ok(Self {
                        value: digits,
                        kind: DeviceIdKind::Imei,
                    })
                } else {
                    Err(format!(
                        "IMEI {spelled} fails the Luhn check: its last digit should be {expected}; check the IMEI"
                    ))
                }
            }
            18 => decimal_meid(&digits)
                .map(|value| Self {
                    value,
                    kind: DeviceIdKind::Meid,
                })
                .ok_or_else(|| {
                    format!(
                        "{spelled} has 18 digits but is not a decimal MEID (its first 10 digits must be \
                         2684354560 to 4294967295 and its last 8 at most 16777215); send the \
                         14-digit hexadecimal MEID or the 15-digit IMEI"
                    )
                }),
            14 => {
                let with_check = format!("{digits}{}", luhn_check_digit(&values));
                // A leading zero adds nothing to the Luhn sum: `0` + the 14 digits is an
                // IMEI exactly when the last of them is the check digit of the others.
                let leading_zero = luhn_check_digit(&values[..13]) == values[13];
                if leading_zero {
                    Err(format!(
                        "{spelled} has 14 digits: an IMEI missing its check digit ({with_check}) \
                         or its leading zero (0{digits}); send the full 15-digit IMEI"
                    ))
                } else {
                    Err(format!(
                        "{spelled} has 14 digits: an IMEI missing its check digit; send the full \
                         15-digit IMEI {with_check}"
                    ))
                }
            }
            16 => {
                let imei = format!("{}{}", &digits[..14], luhn_check_digit(&values[..14]));
                Err(format!(
                    "{spelled} has 16 digits: an IMEISV (IMEI with a software version); send the IMEI {imei}"
                ))
            }
            _ => Err(format!(
                "{spelled} has {} digits: no IMEI (15 digits) or MEID (14 hexadecimal or 18 \
                 decimal digits) is that long; check the value",
                digits.len()
            )),
        }
    }

    /// The normalised identifier.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// Its kind.
    pub fn kind(&self) -> DeviceIdKind {
        self.kind
    }

    /// The normalised identifier, owned.
    pub fn into_string(self) -> String {
        self.value
    }
}

/// Parses one device of an upload as the wire carries it: the identifier, the
/// `reseller.v1.DeviceIdKind` number (0 means "infer") and the model. device-service
/// judges every uploaded device with this, and `resellerctl devices upload --dry-run`
/// checks files with it, so both find the same invalid rows with the same messages.
///
/// # Errors
/// The first thing wrong with the device, for a person.
pub fn parse_input(
    device_id: &str,
    id_kind: i32,
    model: &str,
) -> Result<(DeviceId, String), String> {
    let kind = match id_kind {
        0 => None,
        k => Some(
            i16::try_from(k)
                .ok()
                .and_then(DeviceIdKind::from_i16)
                .ok_or_else(|| format!("unknown id_kind {k}"))?,
        ),
    };
    let device = DeviceId::parse(device_id, kind)?;
    let model = DeviceModel::parse("model", model).map_err(|e| e.to_string())?;
    Ok((device, model.into_string()))
}

/// Most secondary identifiers one device may carry (DOMAIN.md "Secondary identifiers").
pub const MAX_SECONDARY_IDS: usize = 4;

/// Parses a device's secondary identifiers (a dual-SIM's IMEI 2, its serial), each
/// canonicalised like the device ID with its kind inferred. One equal to the device ID or
/// to an earlier one names the same identifier again and is dropped (it adds no second
/// registration); empty cells are ignored.
///
/// # Errors
/// More than [`MAX_SECONDARY_IDS`], or an invalid one (the message names it).
pub fn parse_secondary_ids(inputs: &[String], device: &DeviceId) -> Result<Vec<DeviceId>, String> {
    let given: Vec<&str> = inputs
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if given.len() > MAX_SECONDARY_IDS {
        return Err(format!(
            "a device carries at most {MAX_SECONDARY_IDS} secondary identifiers, got {}",
            given.len()
        ));
    }
    let mut parsed: Vec<DeviceId> = Vec::with_capacity(given.len());
    for (n, input) in given.into_iter().enumerate() {
        let id = DeviceId::parse(input, None)
            .map_err(|message| format!("secondary identifier {}: {message}", n + 1))?;
        if id.value != device.value && !parsed.iter().any(|p| p.value == id.value) {
            parsed.push(id);
        }
    }
    Ok(parsed)
}

/// The one lookup rule (DOMAIN.md): the canonical form of an identifier a caller names to
/// delete, move or find a device, or `None` when no device can have it (such an ID is
/// simply "not found").
pub fn lookup_key(input: &str) -> Option<String> {
    DeviceId::parse(input, None).ok().map(DeviceId::into_string)
}

/// How an identifier a caller named is echoed back in an answer (a not-found list): its
/// canonical form when it has one, else the input cut and escaped by [`echo`].
pub fn echo_id(input: &str) -> String {
    lookup_key(input).unwrap_or_else(|| echo(input.trim()))
}

/// A device model: free text, trimmed, 0 to 64 characters, no control characters ("" when
/// none).
pub type DeviceModel = FreeText<64>;

/// The Luhn check digit of `payload` (digits, most significant first).
pub fn luhn_check_digit(payload: &[u32]) -> u32 {
    luhn_check_digit_in(10, payload)
}

/// The Luhn check digit of `payload` in base 16 (hex digit values, most significant
/// first), as printed after an MEID (3GPP2 X.S0008).
pub fn luhn_check_digit_hex(payload: &[u32]) -> u32 {
    luhn_check_digit_in(16, payload)
}

/// Luhn in `base`: from the right, every other digit doubled and its two digits (in
/// `base`) added, and the digit that brings the sum to a multiple of `base`. In base 10
/// that is the familiar "subtract 9 from a doubled digit above 9".
fn luhn_check_digit_in(base: u32, payload: &[u32]) -> u32 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let doubled = d * 2;
                doubled / base + doubled % base
            } else {
                d
            }
        })
        .sum();
    (base - sum % base) % base
}

/// Step 1: `value` without spaces, dashes, dots and slashes, when what remains is 14 to
/// 18 ASCII digits.
fn without_separators(value: &str) -> Option<String> {
    let digits: String = value
        .chars()
        .filter(|c| !(c.is_whitespace() || matches!(c, '-' | '.' | '/')))
        .collect();
    ((14..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// Step 3: the 14 hex digits of an 18-digit decimal MEID (10 digits of manufacturer
/// code, 8 of serial), or `None` outside the MEID's range.
fn decimal_meid(digits: &str) -> Option<String> {
    let manufacturer: u64 = digits[..10].parse().ok()?;
    let serial: u64 = digits[10..].parse().ok()?;
    ((2_684_354_560..=4_294_967_295).contains(&manufacturer) && serial <= 16_777_215)
        .then(|| format!("{manufacturer:08X}{serial:06X}"))
}

fn is_meid_start(value: &str) -> bool {
    value
        .get(..2)
        .and_then(|rr| u8::from_str_radix(rr, 16).ok())
        .is_some_and(|rr| rr >= 0xA0)
}

fn hex_values(value: &str) -> Option<Vec<u32>> {
    value.chars().map(|c| c.to_digit(16)).collect()
}

/// Step 4: the MEID in `value` (upper case): 14 hex digits beginning `A0`–`FF`, or 15
/// whose last is the check digit.
fn hex_meid(value: &str) -> Option<&str> {
    if !is_meid_start(value) {
        return None;
    }
    let digits = hex_values(value)?;
    match digits.len() {
        14 => Some(value),
        15 if luhn_check_digit_hex(&digits[..14]) == digits[14] => Some(&value[..14]),
        _ => None,
    }
}

/// What is wrong with `value` given explicitly as an MEID.
fn meid_problem(value: &str, given: &str) -> String {
    let shown = echo(given);
    match hex_values(value) {
        Some(digits) if digits.len() == 15 && is_meid_start(value) => format!(
            "MEID {shown} fails its check digit: its last character should be {:X}; send the 14-digit MEID",
            luhn_check_digit_hex(&digits[..14])
        ),
        Some(digits) if digits.len() == 14 => format!(
            "MEID {shown} must begin A0 to FF; a value that begins lower is an IMEI or a serial number"
        ),
        _ => format!(
            "MEID {shown} must be 14 hexadecimal digits (or 18 decimal digits); send the MEID as printed on the device"
        ),
    }
}

fn check_serial(value: &str, given: &str) -> Result<(), String> {
    let len = value.chars().count();
    if len > 32 {
        return Err(format!(
            "serial number {} is {len} characters, longer than 32; send the serial number, IMEI or MEID",
            echo(given)
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "serial number {} may hold only A-Z, 0-9 and '-', not '{}'",
            echo(given),
            c.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(input: &str) -> (String, DeviceIdKind) {
        let id = DeviceId::parse(input, None).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        (id.as_str().to_owned(), id.kind())
    }

    fn refused(input: &str, kind: Option<DeviceIdKind>) -> String {
        DeviceId::parse(input, kind).expect_err(input)
    }

    #[test]
    fn imeis_need_a_valid_luhn_digit() {
        // 49015420323751 → check digit 8 (a well-known example IMEI).
        assert_eq!(
            canonical(" 490154203237518 "),
            ("490154203237518".into(), DeviceIdKind::Imei)
        );
        let err = refused("490154203237517", None);
        assert!(err.contains("Luhn") && err.contains("should be 8"), "{err}");
        assert!(DeviceId::parse("12345", Some(DeviceIdKind::Imei)).is_err());
    }

    #[test]
    fn every_spelling_of_one_imei_is_one_canonical_string() {
        for spelling in [
            "355887999465330",
            "35-588799-946533-0",
            "35 588799 946533 0",
            "35.588799.946533.0",
            "35/588799/946533/0",
            " 35-588799-946533-0\t",
        ] {
            assert_eq!(
                canonical(spelling),
                ("355887999465330".into(), DeviceIdKind::Imei),
                "{spelling:?}"
            );
        }
    }

    #[test]
    fn a_valid_imei_is_an_imei_whatever_kind_was_given() {
        for kind in [
            None,
            Some(DeviceIdKind::Imei),
            Some(DeviceIdKind::Meid),
            Some(DeviceIdKind::Serial),
        ] {
            let id = DeviceId::parse("35-588799-946533-0", kind).unwrap();
            assert_eq!(
                (id.as_str(), id.kind()),
                ("355887999465330", DeviceIdKind::Imei)
            );
        }
    }

    #[test]
    fn fourteen_digits_are_an_imei_missing_a_digit_never_a_meid_or_serial() {
        // 35588799946533 + check digit 0; `0` + it fails Luhn, so one suggestion.
        for kind in [None, Some(DeviceIdKind::Serial), Some(DeviceIdKind::Meid)] {
            let err = refused("35588799946533", kind);
            assert!(
                err.contains("14 digits") && err.contains("355887999465330"),
                "{err}"
            );
            assert!(!err.contains("leading zero"), "{err}");
        }
        // 14 digits whose last is the check digit of the first 13 are also a full IMEI
        // without its leading zero: both readings are offered.
        let body = "1234567890123";
        let values: Vec<u32> = body.bytes().map(|b| u32::from(b - b'0')).collect();
        let fourteen = format!("{body}{}", luhn_check_digit(&values));
        let err = refused(&fourteen, None);
        assert!(
            err.contains("leading zero") && err.contains(&format!("0{fourteen}")),
            "{err}"
        );
        assert!(DeviceId::parse(&format!("0{fourteen}"), None).is_ok());
    }

    #[test]
    fn sixteen_digits_are_an_imeisv_and_the_message_gives_the_imei() {
        let err = refused("3558879994653301", None);
        assert!(
            err.contains("IMEISV") && err.contains("355887999465330"),
            "{err}"
        );
        let err = refused("35-588799-946533-01", Some(DeviceIdKind::Serial));
        assert!(err.contains("IMEISV"), "{err}");
    }

    #[test]
    fn seventeen_and_out_of_range_eighteen_digits_are_nothing_valid() {
        assert!(refused("12345678901234567", None).contains("17 digits"));
        let err = refused("123456789012345678", None);
        assert!(err.contains("not a decimal MEID"), "{err}");
        // Manufacturer code in range, serial above 16777215.
        assert!(refused("270113177616777216", None).contains("not a decimal MEID"));
    }

    #[test]
    fn decimal_meids_become_their_hex_form() {
        assert_eq!(
            canonical("270113177609606898"),
            ("A10000009296F2".into(), DeviceIdKind::Meid)
        );
        assert_eq!(
            canonical("27011 31776 0960 6898"),
            ("A10000009296F2".into(), DeviceIdKind::Meid)
        );
        // The range's ends.
        assert_eq!(canonical("268435456000000000").0, "A0000000000000");
        assert_eq!(canonical("429496729516777215").0, "FFFFFFFFFFFFFF");
        assert_eq!(canonical("a10000009296f2").0, "A10000009296F2");
    }

    #[test]
    fn meids_begin_a0_to_ff_and_may_carry_their_check_digit() {
        assert_eq!(
            canonical("a0000000002329"),
            ("A0000000002329".into(), DeviceIdKind::Meid)
        );
        // AF0123450ABCDE's base-16 Luhn check digit is C (3GPP2 X.S0008's example).
        assert_eq!(
            luhn_check_digit_hex(&hex_values("AF0123450ABCDE").unwrap()),
            0xC
        );
        assert_eq!(
            canonical("AF0123450ABCDEC"),
            ("AF0123450ABCDE".into(), DeviceIdKind::Meid)
        );
        // A wrong check digit given as an MEID says which it should be.
        let err = refused("AF0123450ABCDE1", Some(DeviceIdKind::Meid));
        assert!(err.contains("should be C"), "{err}");
        // Below A0 it is no MEID: an explicit MEID is refused, an inferred one a serial.
        assert!(refused("9F0123450ABCDE", Some(DeviceIdKind::Meid)).contains("A0 to FF"));
        assert_eq!(
            canonical("9F0123450ABCDE"),
            ("9F0123450ABCDE".into(), DeviceIdKind::Serial)
        );
        assert!(refused("G0000000002329", Some(DeviceIdKind::Meid)).contains("hexadecimal"));
    }

    #[test]
    fn upload_inputs_check_kind_identifier_and_model() {
        let (id, model) = parse_input(" r58m-1 ", 0, " S26 ").unwrap();
        assert_eq!((id.as_str(), model.as_str()), ("R58M-1", "S26"));
        assert_eq!(
            parse_input("R58M-1", 7, "").unwrap_err(),
            "unknown id_kind 7"
        );
        assert!(parse_input("R58M 1", 0, "").is_err());
        assert!(parse_input("R58M-1", 0, "a\u{7}").is_err());
    }

    #[test]
    fn models_are_bounded_free_text() {
        let parse_model = |s: &str| DeviceModel::parse("model", s).map(DeviceModel::into_string);
        assert_eq!(parse_model(" Galaxy S26\n").unwrap(), "Galaxy S26");
        assert_eq!(parse_model("").unwrap(), "");
        assert!(parse_model(&"x".repeat(64)).is_ok());
        assert!(parse_model(&"x".repeat(65)).is_err());
        assert!(parse_model("Gal\taxy").is_err());
        // A row's rejection names the field.
        assert_eq!(
            parse_input("R58M-1", 0, &"x".repeat(65)).unwrap_err(),
            "model must be at most 64 characters, got 65"
        );
    }

    #[test]
    fn everything_else_is_a_serial() {
        assert_eq!(
            canonical("r58m-12ab"),
            ("R58M-12AB".into(), DeviceIdKind::Serial)
        );
        assert!(DeviceId::parse("R58M 12AB", None).is_err());
        assert!(DeviceId::parse(&"A".repeat(33), None).is_err());
        assert!(DeviceId::parse("   ", None).is_err());
        // An explicit IMEI that is not one is refused, not made a serial.
        assert!(refused("R58M-12AB", Some(DeviceIdKind::Imei)).contains("15 digits"));
    }

    #[test]
    fn strings_nothing_downstream_can_hold_are_refused_with_a_short_safe_message() {
        let err = refused("R5CW\u{0}10DDD", None);
        assert!(!err.contains('\u{0}'), "{err:?}");
        assert!(err.contains("R5CW\\u{0}10DDD"), "{err}");
        let err = refused(&"X".repeat(10_000), None);
        assert!(err.len() < 300, "{} bytes", err.len());
        assert!(refused("R58M\u{1b}[31m", None).contains("\\u{1b}"));
        assert!(refused("Gerät-1", None).contains("not 'ä'"));
    }

    #[test]
    fn secondary_identifiers_are_canonical_bounded_and_deduplicated() {
        let device = DeviceId::parse("355887999465330", None).unwrap();
        let ids = parse_secondary_ids(
            &[
                "49-015420-323751-8".into(),
                "".into(),
                "r58m-1".into(),
                "490154203237518".into(),
                "35 588799 946533 0".into(),
            ],
            &device,
        )
        .unwrap();
        let ids: Vec<&str> = ids.iter().map(DeviceId::as_str).collect();
        assert_eq!(ids, ["490154203237518", "R58M-1"]);
        let err = parse_secondary_ids(&["490154203237517".into()], &device).unwrap_err();
        assert!(
            err.starts_with("secondary identifier 1:") && err.contains("Luhn"),
            "{err}"
        );
        let five: Vec<String> = (0..5).map(|n| format!("SN-{n}")).collect();
        assert!(
            parse_secondary_ids(&five, &device)
                .unwrap_err()
                .contains("at most 4")
        );
    }

    #[test]
    fn lookups_canonicalise_like_uploads() {
        assert_eq!(
            lookup_key("35-588799-946533-0").as_deref(),
            Some("355887999465330")
        );
        assert_eq!(
            lookup_key("270113177609606898").as_deref(),
            Some("A10000009296F2")
        );
        assert_eq!(lookup_key(" r58m-1 ").as_deref(), Some("R58M-1"));
        assert_eq!(lookup_key("R5\u{0}X"), None);
        assert_eq!(lookup_key("35588799946533"), None);
        assert_eq!(echo_id("R5\u{0}X"), "R5\\u{0}X");
        assert_eq!(echo_id("35-588799-946533-0"), "355887999465330");
    }
}
