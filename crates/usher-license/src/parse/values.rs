//! The values of single fields: host ids, signatures, seat counts, expiry and other dates.

use chrono::NaiveDate;

use super::error;
use crate::lex::{LexError, Pos};
use crate::{Expiry, HostId, SeatCount};

/// Parses a host id value: `ANY`, or one or more space-separated ids (any of which may
/// match). Ids are case-normalised, type in upper case and value in lower case
/// (`ETHER=00aa...`), because host ids compare case-insensitively and the canonical
/// encoding must not depend on how an administrator's tool capitalised them.
pub(super) fn parse_hostid(text: &str, at: Pos) -> Result<HostId, LexError> {
    if text.eq_ignore_ascii_case("ANY") {
        return Ok(HostId::Any);
    }
    let ids: Vec<String> = text
        .split(' ')
        .filter(|id| !id.is_empty())
        .map(normalise_id)
        .collect();
    if ids.is_empty()
        || ids
            .iter()
            .any(|id| id.ends_with('=') || id.starts_with('='))
    {
        return Err(error(
            at,
            format!(
                "expected a host id such as ANY, ETHER=<mac> or HOSTNAME=<name>, found {text:?}"
            ),
        ));
    }
    Ok(HostId::Id(ids.join(" ")))
}

fn normalise_id(id: &str) -> String {
    match id.split_once('=') {
        Some((kind, value)) => {
            format!(
                "{}={}",
                kind.to_ascii_uppercase(),
                value.to_ascii_lowercase()
            )
        }
        None => id.to_ascii_lowercase(),
    }
}

pub(super) fn parse_signature(text: &str, at: Pos) -> Result<[u8; 64], LexError> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let expected = "SIGN= to hold 128 hex digits (a 64-byte Ed25519 signature)";
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(error(at, format!("expected {expected}, found {bad:?}")));
    }
    let mut signature = [0u8; 64];
    hex::decode_to_slice(&digits, &mut signature).map_err(|_| {
        error(
            at,
            format!("expected {expected}, found {} hex digits", digits.len()),
        )
    })?;
    Ok(signature)
}

pub(super) fn parse_count(text: &str) -> Option<SeatCount> {
    if text.eq_ignore_ascii_case("uncounted") {
        return Some(SeatCount::Uncounted);
    }
    if text.eq_ignore_ascii_case("token") {
        return Some(SeatCount::Token);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match text.parse::<u32>().ok()? {
        // FlexLM writes uncounted as 0.
        0 => Some(SeatCount::Uncounted),
        n => Some(SeatCount::Counted(n)),
    }
}

pub(super) fn parse_expiry(text: &str) -> Option<Expiry> {
    if text.eq_ignore_ascii_case("permanent") {
        return Some(Expiry::Permanent);
    }
    match parse_date(text)? {
        DateText::Date(date) => Some(Expiry::On(date)),
        DateText::YearZero => Some(Expiry::Permanent),
    }
}

/// A date as written in a license file.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DateText {
    Date(NaiveDate),
    /// FlexLM's `dd-mmm-0` (or `-00`, `-0000`): "never expires".
    YearZero,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Parses `yyyy-mm-dd` or `dd-mmm-yyyy` (month name in any case).
pub(super) fn parse_date(text: &str) -> Option<DateText> {
    let parts: Vec<&str> = text.split('-').collect();
    let [a, b, c] = parts.as_slice() else {
        return None;
    };
    let number = |s: &str, len: std::ops::RangeInclusive<usize>| {
        (len.contains(&s.len()) && s.bytes().all(|d| d.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    if let (Some(year), Some(month), Some(day)) =
        (number(a, 4..=4), number(b, 2..=2), number(c, 2..=2))
    {
        let year = i32::try_from(year).ok().filter(|&y| y >= 1)?;
        return NaiveDate::from_ymd_opt(year, month, day).map(DateText::Date);
    }
    let day = number(a, 1..=2).filter(|d| (1..=31).contains(d))?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(b))?;
    let year = number(c, 1..=4)?;
    if year == 0 {
        return Some(DateText::YearZero);
    }
    if c.len() != 4 {
        return None;
    }
    let month = u32::try_from(month + 1).ok()?;
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day).map(DateText::Date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn dates() {
        assert_eq!(
            parse_date("31-dec-2027"),
            Some(DateText::Date(date(2027, 12, 31)))
        );
        assert_eq!(
            parse_date("1-JAN-2030"),
            Some(DateText::Date(date(2030, 1, 1)))
        );
        assert_eq!(
            parse_date("2027-02-28"),
            Some(DateText::Date(date(2027, 2, 28)))
        );
        for zero in ["1-jan-0", "01-jan-00", "1-Jan-0000"] {
            assert_eq!(parse_date(zero), Some(DateText::YearZero), "{zero}");
        }
        for bad in [
            "31-foo-2027",
            "30-feb-2027",
            "2027-2-28",
            "2027-13-01",
            "0000-01-01",
            "1-jan-27",
            "32-jan-2027",
            "0-jan-2027",
            "",
            "--",
            "1-jan-2027-",
            "+1-jan-2027",
            "1-jan-+027",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn expiry_and_count() {
        assert_eq!(parse_expiry("PERMANENT"), Some(Expiry::Permanent));
        assert_eq!(parse_expiry("1-jan-0"), Some(Expiry::Permanent));
        assert_eq!(parse_count("0"), Some(SeatCount::Uncounted));
        assert_eq!(parse_count("Uncounted"), Some(SeatCount::Uncounted));
        assert_eq!(parse_count("007"), Some(SeatCount::Counted(7)));
        for bad in ["-1", "+1", "1.5", "4294967296", ""] {
            assert_eq!(parse_count(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostids_are_case_normalised() {
        let at = Pos { line: 1, column: 1 };
        assert_eq!(parse_hostid("any", at), Ok(HostId::Any));
        assert_eq!(
            parse_hostid("ether=00AABBCCDDEE  HOSTNAME=Build-1", at),
            Ok(HostId::Id("ETHER=00aabbccddee HOSTNAME=build-1".into()))
        );
        assert!(parse_hostid("ETHER=", at).is_err());
        assert!(parse_hostid("", at).is_err());
    }
}
