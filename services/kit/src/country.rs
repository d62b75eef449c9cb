//! ISO 3166-1 alpha-2 country codes: an account's country (DOMAIN.md "Customers"), parsed
//! by customer-service from requests and by reporting-service from the events it projects.

/// Every officially assigned ISO 3166-1 alpha-2 code.
const ASSIGNED: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP \
KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW \
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ \
UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// A country, as its ISO 3166-1 alpha-2 code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Country(String);

impl Country {
    /// Parses a code; case and surrounding whitespace are ignored (`de` → `DE`).
    ///
    /// # Errors
    /// When the input is not an assigned code.
    pub fn parse(input: &str) -> Result<Self, String> {
        let code = input.trim().to_ascii_uppercase();
        if code.is_empty() {
            return Err("is required".into());
        }
        if code.len() == 2 && ASSIGNED.split(' ').any(|c| c == code) {
            Ok(Self(code))
        } else {
            // Echoed cut and escaped: the input may be 10 kB or hold a NUL.
            Err(format!(
                "must be an ISO 3166-1 alpha-2 code such as DE or US, got \"{}\"",
                crate::text::echo(input.trim())
            ))
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_assigned_codes_in_any_case() {
        assert_eq!(Country::parse(" de ").unwrap().as_str(), "DE");
        assert_eq!(ASSIGNED.split(' ').count(), 249);
        assert!(Country::parse("XX").is_err());
        assert!(Country::parse("DEU").is_err());
        assert!(Country::parse("").is_err());
    }

    #[test]
    fn refusals_echo_the_input_short_and_escaped() {
        assert!(Country::parse("XX").unwrap_err().ends_with("got \"XX\""));
        let err = Country::parse(&"Ä".repeat(5_000)).unwrap_err();
        assert!(err.len() < 400 && err.ends_with("…\""), "{err}");
        assert!(Country::parse("D\u{0}E").unwrap_err().contains("D\\u{0}E"));
    }
}
