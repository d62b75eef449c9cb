//! Device identifiers (DOMAIN.md "Devices and uploads"): the one parser the services and
//! `resellerctl --dry-run` share, with the rule for a device's model.
//!
//! Input is trimmed and upper-cased. An IMEI is 15 digits whose last digit is the Luhn
//! check digit of the first 14; an MEID is 14 hex digits; a serial number is 1 to 32 of
//! `A-Z 0-9 -`. Without a given kind: 15 digits → IMEI, 14 hex digits → MEID, else
//! serial.

use std::fmt;

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
    /// Parses `input` as `kind`, or infers the kind when `kind` is `None`.
    ///
    /// # Errors
    /// A message a person can act on when the identifier is not valid for its kind.
    pub fn parse(input: &str, kind: Option<DeviceIdKind>) -> Result<Self, String> {
        let value = input.trim().to_ascii_uppercase();
        if value.is_empty() {
            return Err("device ID is empty".into());
        }
        let kind = kind.unwrap_or_else(|| infer(&value));
        match kind {
            DeviceIdKind::Imei => check_imei(&value)?,
            DeviceIdKind::Meid => check_meid(&value)?,
            DeviceIdKind::Serial => check_serial(&value)?,
        }
        Ok(Self { value, kind })
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
    let model = parse_model(model)?;
    Ok((device, model))
}

/// Normalises an identifier the way [`DeviceId::parse`] does, without checking it (for
/// lookups such as deletions, where an unknown ID is simply "not found").
pub fn normalise(input: &str) -> String {
    input.trim().to_ascii_uppercase()
}

/// Most characters of a device model.
pub const MODEL_MAX_CHARS: usize = 64;

/// Parses a device model: free text, trimmed, 0 to 64 characters, no control characters.
///
/// # Errors
/// A message a person can act on when the model is too long or holds control characters.
pub fn parse_model(input: &str) -> Result<String, String> {
    let s = input.trim();
    let len = s.chars().count();
    if len > MODEL_MAX_CHARS {
        return Err(format!(
            "model must be at most {MODEL_MAX_CHARS} characters, got {len}"
        ));
    }
    if s.chars().any(char::is_control) {
        return Err("model must not contain control characters".into());
    }
    Ok(s.to_owned())
}

fn infer(value: &str) -> DeviceIdKind {
    if value.len() == 15 && value.bytes().all(|b| b.is_ascii_digit()) {
        DeviceIdKind::Imei
    } else if value.len() == 14 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        DeviceIdKind::Meid
    } else {
        DeviceIdKind::Serial
    }
}

fn check_imei(value: &str) -> Result<(), String> {
    if value.len() != 15 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("IMEI {value} must be 15 digits"));
    }
    let digits: Vec<u32> = value.bytes().map(|b| u32::from(b - b'0')).collect();
    let expected = luhn_check_digit(&digits[..14]);
    if digits[14] != expected {
        return Err(format!(
            "IMEI {value} fails the Luhn check: its last digit should be {expected}"
        ));
    }
    Ok(())
}

/// The Luhn check digit of `payload` (digits, most significant first).
pub fn luhn_check_digit(payload: &[u32]) -> u32 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

fn check_meid(value: &str) -> Result<(), String> {
    if value.len() == 14 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("MEID {value} must be 14 hexadecimal digits"))
    }
}

fn check_serial(value: &str) -> Result<(), String> {
    if value.len() > 32 {
        return Err(format!(
            "serial number {value} is longer than 32 characters"
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "serial number {value} may hold only A-Z, 0-9 and '-', not {c:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imeis_need_a_valid_luhn_digit() {
        // 49015420323751 → check digit 8 (a well-known example IMEI).
        let id = DeviceId::parse(" 490154203237518 ", None).unwrap();
        assert_eq!(
            (id.as_str(), id.kind()),
            ("490154203237518", DeviceIdKind::Imei)
        );
        let err = DeviceId::parse("490154203237517", None).unwrap_err();
        assert!(err.contains("Luhn") && err.contains('8'), "{err}");
        assert!(DeviceId::parse("12345", Some(DeviceIdKind::Imei)).is_err());
    }

    #[test]
    fn meids_are_14_hex_digits_upper_cased() {
        let id = DeviceId::parse("a0000000002329", None).unwrap();
        assert_eq!(
            (id.as_str(), id.kind()),
            ("A0000000002329", DeviceIdKind::Meid)
        );
        assert!(DeviceId::parse("G0000000002329", Some(DeviceIdKind::Meid)).is_err());
    }

    #[test]
    fn upload_inputs_check_kind_identifier_and_model() {
        let (id, model) = parse_input(" r58m-1 ", 0, " S26 ").unwrap();
        assert_eq!((id.as_str(), model.as_str()), ("R58M-1", "S26"));
        let (id, _) = parse_input("490154203237517", 3, "").unwrap();
        assert_eq!(id.kind(), DeviceIdKind::Serial);
        assert_eq!(
            parse_input("R58M-1", 7, "").unwrap_err(),
            "unknown id_kind 7"
        );
        assert!(parse_input("R58M 1", 0, "").is_err());
        assert!(parse_input("R58M-1", 0, "a\u{7}").is_err());
    }

    #[test]
    fn models_are_bounded_free_text() {
        assert_eq!(parse_model(" Galaxy S26\n").unwrap(), "Galaxy S26");
        assert_eq!(parse_model("").unwrap(), "");
        assert!(parse_model(&"x".repeat(64)).is_ok());
        assert!(parse_model(&"x".repeat(65)).is_err());
        assert!(parse_model("Gal\taxy").is_err());
    }

    #[test]
    fn everything_else_is_a_serial() {
        let id = DeviceId::parse("r58m-12ab", None).unwrap();
        assert_eq!(
            (id.as_str(), id.kind()),
            ("R58M-12AB", DeviceIdKind::Serial)
        );
        assert!(DeviceId::parse("R58M 12AB", None).is_err());
        assert!(DeviceId::parse(&"A".repeat(33), None).is_err());
        assert!(DeviceId::parse("   ", None).is_err());
        // A given kind wins over inference: 15 digits may be a serial.
        let id = DeviceId::parse("490154203237517", Some(DeviceIdKind::Serial)).unwrap();
        assert_eq!(id.kind(), DeviceIdKind::Serial);
    }
}
