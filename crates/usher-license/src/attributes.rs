//! What each signed licensing attribute's value may be, said once.
//!
//! [`attribute_value`] is the one judge of a vendor attribute's value. The parser runs it
//! on every upper-case attribute of every line and records what it refuses, with the
//! value's file, line and column, in [`LicenseFile::attribute_problems`]; from there
//! `usher vendor sign` refuses to sign the line, `usher license check` marks it bad, and the
//! server logs it when it loads the file. The server's pools take their terms from
//! [`Terms::of`], which reads the values through the same function, so what is reported
//! and what is served cannot disagree.
//!
//! A refused value does not make the file unreadable (a license signed by an older or
//! newer tool still loads): the server serves the line as if the attribute were absent,
//! in the direction that never grants more than the vendor wrote (see
//! [`AttributeProblem::served_as`]).
//!
//! [`LicenseFile::attribute_problems`]: crate::LicenseFile::attribute_problems

use std::fmt;

use crate::entitlement::{KNOWN_ATTRIBUTES, MAX_NAME_LEN};
use crate::{Entitlement, TokenAlternative, parse_token_alternatives};

/// The largest number of seconds `LINGER=` and `MIN_CHECKOUT=` may hold (one year).
pub const MAX_HOLD_SECONDS: u64 = 366 * 86_400;

/// How long a bare `BORROW` lets seats be borrowed, in hours (one week, as in FlexLM).
pub const DEFAULT_BORROW_HOURS: u64 = 168;

/// The longest `BORROW=` allowed, in hours (one year: 8784).
pub const MAX_BORROW_HOURS: u64 = 366 * 24;

/// Which checkouts of a pool share one seat (`DUP_GROUP=`): those whose user, host and
/// display agree on the parts set here. With none set (`SITE`), every checkout shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DupGroup {
    /// Same user (`U`).
    pub user: bool,
    /// Same host (`H`).
    pub host: bool,
    /// Same display (`D`).
    pub display: bool,
}

impl DupGroup {
    /// Parses a `DUP_GROUP=` value: `NONE` (no sharing: `Ok(None)`), `SITE`, or a
    /// combination of `U`, `H` and `D`, in any case.
    pub fn parse(text: &str) -> Result<Option<DupGroup>, String> {
        let upper = text.to_ascii_uppercase();
        match upper.as_str() {
            "NONE" => return Ok(None),
            "SITE" => {
                return Ok(Some(DupGroup {
                    user: false,
                    host: false,
                    display: false,
                }));
            }
            _ => {}
        }
        if upper.is_empty() || !upper.chars().all(|c| matches!(c, 'U' | 'H' | 'D')) {
            return Err(format!(
                "DUP_GROUP={text:?} is not NONE, SITE or a combination of U, H and D"
            ));
        }
        Ok(Some(DupGroup {
            user: upper.contains('U'),
            host: upper.contains('H'),
            display: upper.contains('D'),
        }))
    }
}

impl std::fmt::Display for DupGroup {
    /// The `DUP_GROUP=` value [`DupGroup::parse`] reads back: `SITE`, or the letters of
    /// the parts compared, in the order `U`, `H`, `D`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !(self.user || self.host || self.display) {
            return f.write_str("SITE");
        }
        for (set, letter) in [(self.user, "U"), (self.host, "H"), (self.display, "D")] {
            if set {
                f.write_str(letter)?;
            }
        }
        Ok(())
    }
}

/// A vendor attribute's value, as [`attribute_value`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// Free text (`ISSUER=`, `SN=`, `VENDOR_STRING=`, `PLATFORMS=`).
    Text,
    /// A flag that takes no value (`QUEUE`).
    Flag,
    /// Seconds (`LINGER=`, `MIN_CHECKOUT=`), at most [`MAX_HOLD_SECONDS`].
    Seconds(u64),
    /// Hours (`BORROW`, `BORROW=n`), from 1 to [`MAX_BORROW_HOURS`]; a bare `BORROW` is
    /// [`DEFAULT_BORROW_HOURS`].
    Hours(u64),
    /// A number of seats, 0 or more (`OVERDRAFT=`).
    Seats(u32),
    /// A number of users or hosts, 1 or more, or `None` for the bare flag (`USER_BASED`,
    /// `HOST_BASED`).
    Named(Option<u32>),
    /// `DUP_GROUP=`: `None` for `NONE`.
    DupGroup(Option<DupGroup>),
    /// `TOKEN=`: the pools that pay for a token-based feature.
    Token(Vec<TokenAlternative>),
    /// Feature names (`SUPERSEDE`, `SUPERSEDE="a b"`); none for the bare flag.
    Features(Vec<String>),
}

/// Reads the value of the vendor attribute `key` (upper case; `""` for a bare flag), or
/// says why it is not one `key` takes, or that usher does not know `key`.
///
/// The one place that knows every licensing attribute's values; see the module docs.
/// `START=`, `ISSUED=`, `NOTICE=`, `HOSTID=` and `SIGN=` are fields of the entitlement,
/// checked by the parser, and are answered here as text.
pub fn attribute_value(key: &str, value: &str) -> Result<AttributeValue, String> {
    let shown = || format!("{key}={value:?}");
    match key {
        "START" | "ISSUED" | "NOTICE" | "HOSTID" | "SIGN" | "ISSUER" | "SN" | "VENDOR_STRING"
        | "PLATFORMS" => Ok(AttributeValue::Text),
        "QUEUE" if value.is_empty() => Ok(AttributeValue::Flag),
        "QUEUE" => Err(format!("{} takes no value: write QUEUE alone", shown())),
        "LINGER" | "MIN_CHECKOUT" => whole_number(value)
            .filter(|&secs| secs <= MAX_HOLD_SECONDS)
            .map(AttributeValue::Seconds)
            .ok_or_else(|| {
                format!(
                    "{} is not a number of seconds from 0 to {MAX_HOLD_SECONDS}",
                    shown()
                )
            }),
        "BORROW" if value.is_empty() => Ok(AttributeValue::Hours(DEFAULT_BORROW_HOURS)),
        "BORROW" => whole_number(value)
            .filter(|hours| (1..=MAX_BORROW_HOURS).contains(hours))
            .map(AttributeValue::Hours)
            .ok_or_else(|| {
                format!(
                    "{} is not a number of hours from 1 to {MAX_BORROW_HOURS}",
                    shown()
                )
            }),
        "OVERDRAFT" => whole_number(value)
            .and_then(|n| u32::try_from(n).ok())
            .map(AttributeValue::Seats)
            .ok_or_else(|| format!("{} is not a number of seats (0 or more)", shown())),
        "USER_BASED" | "HOST_BASED" if value.is_empty() => Ok(AttributeValue::Named(None)),
        "USER_BASED" | "HOST_BASED" => whole_number(value)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n >= 1)
            .map(|n| AttributeValue::Named(Some(n)))
            .ok_or_else(|| {
                let what = if key == "USER_BASED" {
                    "users"
                } else {
                    "hosts"
                };
                format!(
                    "{} is not a number of {what} (1 or more; {key} alone means the seat count)",
                    shown()
                )
            }),
        "DUP_GROUP" => DupGroup::parse(value).map(AttributeValue::DupGroup),
        "TOKEN" => parse_token_alternatives(value).map(AttributeValue::Token),
        "SUPERSEDE" => {
            let names: Vec<String> = value.split_whitespace().map(str::to_string).collect();
            match names.iter().find(|n| !is_feature_name(n)) {
                Some(bad) => Err(format!(
                    "{} names {bad:?}, which is not a feature name (SUPERSEDE alone, or \
                     SUPERSEDE=\"feature ...\")",
                    shown()
                )),
                None => Ok(AttributeValue::Features(names)),
            }
        }
        _ => Err(unknown_attribute(key)),
    }
}

fn unknown_attribute(key: &str) -> String {
    let near = KNOWN_ATTRIBUTES
        .iter()
        .filter(|known| edit_distance(known, key) <= 2)
        .min_by_key(|known| edit_distance(known, key));
    let hint = match near {
        Some(known) => format!("did you mean {known}?"),
        None => format!("known attributes: {}", KNOWN_ATTRIBUTES.join(" ")),
    };
    format!("unknown attribute {key}; check the spelling ({hint})")
}

/// Levenshtein distance, for spelling hints over short ASCII names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Digits only (no sign, no spaces, no exponent), within `u64`.
fn whole_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_feature_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A vendor attribute [`attribute_value`] refused, located in its file at the value (at
/// the keyword, for an unknown keyword or a flag missing its value).
///
/// Displays as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeProblem {
    /// The file name given to [`crate::parse`].
    pub file: String,
    /// 1-based line of the value in the original text.
    pub line: usize,
    /// 1-based column of the value, in characters.
    pub column: usize,
    /// Index into [`crate::LicenseFile::entitlements`] of the line that carries it.
    pub entitlement: usize,
    /// The attribute's keyword, as written (upper case).
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl AttributeProblem {
    /// How the server serves the line instead: as if the attribute were absent, in the
    /// direction that never grants more than the vendor wrote.
    pub fn served_as(&self) -> &'static str {
        match self.key.as_str() {
            "OVERDRAFT" => "served with no overdraft",
            "BORROW" => "its seats cannot be borrowed",
            "DUP_GROUP" => "duplicate checkouts are not grouped",
            "USER_BASED" => "the seat count is the number of named users",
            _ => "ignored",
        }
    }
}

impl fmt::Display for AttributeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// The licensing terms the server acts on, read from an entitlement's attributes through
/// [`attribute_value`]. A value it refuses counts as described in
/// [`AttributeProblem::served_as`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Terms {
    /// `OVERDRAFT=`: seats allowed beyond the count.
    pub overdraft: u32,
    /// `LINGER=`, in seconds.
    pub linger_secs: u64,
    /// `MIN_CHECKOUT=`, in seconds.
    pub min_checkout_secs: u64,
    /// `DUP_GROUP=`; `None` when absent, `NONE` or refused.
    pub dup_group: Option<DupGroup>,
    /// `BORROW[=hours]`: the longest borrow, in hours; `None` when the seats cannot be
    /// borrowed.
    pub borrow_hours: Option<u64>,
    /// `USER_BASED[=n]`: `Some(None)` for the bare flag (or a refused number: the seat
    /// count applies); `None` when absent.
    pub user_based: Option<Option<u32>>,
}

impl Terms {
    /// Reads `entitlement`'s terms.
    pub fn of(entitlement: &Entitlement) -> Terms {
        let mut terms = Terms::default();
        for (key, text) in &entitlement.attrs {
            let value = attribute_value(key, text);
            match (key.as_str(), value) {
                ("OVERDRAFT", Ok(AttributeValue::Seats(n))) => terms.overdraft = n,
                ("LINGER", Ok(AttributeValue::Seconds(s))) => terms.linger_secs = s,
                ("MIN_CHECKOUT", Ok(AttributeValue::Seconds(s))) => terms.min_checkout_secs = s,
                ("DUP_GROUP", Ok(AttributeValue::DupGroup(d))) => terms.dup_group = d,
                ("BORROW", Ok(AttributeValue::Hours(h))) => terms.borrow_hours = Some(h),
                ("USER_BASED", Ok(AttributeValue::Named(n))) => terms.user_based = Some(n),
                ("USER_BASED", Err(_)) => terms.user_based = Some(None),
                _ => {}
            }
        }
        terms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attribute_takes_its_values_and_refuses_the_rest() {
        let ok: &[(&str, &[&str])] = &[
            ("LINGER", &["0", "60", "31622400"]),
            ("MIN_CHECKOUT", &["0", "600"]),
            ("BORROW", &["", "1", "72", "8784"]),
            ("OVERDRAFT", &["0", "2", "4294967295"]),
            ("USER_BASED", &["", "1", "5"]),
            ("HOST_BASED", &["", "3"]),
            ("DUP_GROUP", &["NONE", "SITE", "UHD", "uh", "D"]),
            ("TOKEN", &["<units 2.0 5>", "<a 1 1> <b 2 3>"]),
            ("SUPERSEDE", &["", "old_cad other-1"]),
            ("QUEUE", &[""]),
            ("ISSUER", &["", "Acme Inc."]),
            ("VENDOR_STRING", &["anything at all"]),
        ];
        for (key, values) in ok {
            for value in *values {
                assert!(attribute_value(key, value).is_ok(), "{key}={value:?}");
            }
        }
        let bad: &[(&str, &[&str])] = &[
            (
                "LINGER",
                &[
                    "abc",
                    "-1",
                    "1.5",
                    "+5",
                    "1e3",
                    "",
                    "31622401",
                    "99999999999999999999",
                ],
            ),
            ("MIN_CHECKOUT", &["soon", " 5"]),
            ("BORROW", &["99999", "0", "8785", "72h", "-1"]),
            ("OVERDRAFT", &["lots", "", "-1", "4294967296"]),
            ("USER_BASED", &["0", "many", "-2"]),
            ("HOST_BASED", &["x"]),
            ("DUP_GROUP", &["XYZ", "", "UX"]),
            ("TOKEN", &["", "units 2 5", "<units 2>"]),
            ("SUPERSEDE", &["a,b", "bad name!"]),
            ("QUEUE", &["1"]),
            ("LINGRE", &["60"]),
        ];
        for (key, values) in bad {
            for value in *values {
                let why = attribute_value(key, value).unwrap_err();
                assert!(why.contains(key), "{key}={value:?}: {why}");
            }
        }
    }

    #[test]
    fn unknown_keywords_get_a_spelling_hint() {
        let why = attribute_value("LINGRE", "60").unwrap_err();
        assert!(why.contains("did you mean LINGER?"), "{why}");
        let why = attribute_value("FROBNICATE", "1").unwrap_err();
        assert!(why.contains("known attributes: START"), "{why}");
    }

    #[test]
    fn every_known_attribute_has_a_rule() {
        for key in KNOWN_ATTRIBUTES {
            let refused_as_unknown = |v: &str| {
                attribute_value(key, v).is_err_and(|why| why.contains("unknown attribute"))
            };
            assert!(!refused_as_unknown("") && !refused_as_unknown("1"), "{key}");
        }
    }
}
