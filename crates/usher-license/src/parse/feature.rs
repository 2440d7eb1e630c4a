//! FEATURE and INCREMENT lines: the fixed fields, the attributes after them, and the
//! checks that tie the two together (an uncounted line is host-locked, a token-based one
//! names its pools).

use std::collections::HashMap;

use super::values::{
    DateText, parse_count, parse_date, parse_expiry, parse_hostid, parse_signature,
};
use super::{Fields, check_name, error};
use crate::entitlement::{KNOWN_ATTRIBUTES, MAX_NAME_LEN};
use crate::lex::{LexError, Pos, Token};
use crate::{Entitlement, HostId, LineKind, SeatCount, Version, attribute_value};

const EXPIRY_EXPECTED: &str = "an expiry date (dd-mmm-yyyy, yyyy-mm-dd or permanent)";
const COUNT_EXPECTED: &str = "a seat count (a positive number, uncounted or token)";

type UserAttrs = Vec<(String, String)>;
/// Refused vendor attribute values: keyword, where, why.
type Problems = Vec<(String, Pos, String)>;

pub(super) fn parse_entitlement(
    kind: LineKind,
    line: usize,
    fields: &mut Fields<'_>,
) -> Result<(Entitlement, UserAttrs, Problems), LexError> {
    let (feature, at) = fields.bare("a feature name")?;
    let feature = check_name(feature, at, "a feature name")?;
    let (vendor, at) = fields.bare("a vendor name")?;
    let vendor = check_name(vendor, at, "a vendor name")?;

    let expected = "a version (dot-separated numbers such as 2025 or 2025.10)";
    let (text, at) = fields.bare(expected)?;
    let version: Version = text
        .parse()
        .map_err(|_| error(at, format!("expected {expected}, found {text:?}")))?;

    let (text, at) = fields.bare(EXPIRY_EXPECTED)?;
    let expiry = parse_expiry(text)
        .ok_or_else(|| error(at, format!("expected {EXPIRY_EXPECTED}, found {text:?}")))?;

    let (text, count_at) = fields.bare(COUNT_EXPECTED)?;
    let count = parse_count(text).ok_or_else(|| {
        error(
            count_at,
            format!("expected {COUNT_EXPECTED}, found {text:?}"),
        )
    })?;

    let mut entitlement = Entitlement {
        kind,
        feature,
        vendor,
        version,
        expiry,
        count,
        start: None,
        issued: None,
        notice: None,
        hostid: HostId::Any,
        attrs: Vec::new(),
        signature: None,
        line,
    };
    let mut user_attrs = Vec::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<String, Pos> = HashMap::new();
    while let Some(token) = fields.next_token() {
        let (key, value) = attribute(token)?;
        if let Some(first) = seen.insert(key.to_string(), token.pos) {
            return Err(error(
                token.pos,
                format!(
                    "duplicate attribute {key} (first given at line {}, column {})",
                    first.line, first.column
                ),
            ));
        }
        if is_lower_key(key) {
            let value = value.ok_or_else(|| {
                error(
                    token.pos,
                    format!("expected {key}=value: lowercase attributes need a value"),
                )
            })?;
            user_attrs.push((key.to_string(), value.to_string()));
            continue;
        }
        apply_signed_attribute(&mut entitlement, token, key, value, &mut problems)?;
    }

    if entitlement.count == SeatCount::Uncounted && entitlement.hostid == HostId::Any {
        return Err(error(
            count_at,
            "an uncounted entitlement must be locked to a host: add HOSTID=<host id> \
             (HOSTID=ANY is not allowed)",
        ));
    }
    match (
        entitlement.count,
        entitlement.attr("TOKEN"),
        seen.get("TOKEN"),
    ) {
        (SeatCount::Token, None, _) => {
            return Err(error(
                count_at,
                "a token-based entitlement needs TOKEN=\"<feature version tokens> ...\" to \
                 say which pools pay for it",
            ));
        }
        (SeatCount::Token, Some(text), Some(&at)) => {
            crate::entitlement::parse_token_alternatives(text).map_err(|why| error(at, why))?;
        }
        (_, Some(_), Some(&at)) => {
            return Err(error(
                at,
                "TOKEN= applies only to a token-based entitlement (count `token`)",
            ));
        }
        _ => {}
    }
    entitlement.attrs.sort();
    Ok((entitlement, user_attrs, problems))
}

/// Splits an attribute token into its key and value (`None` for a bare `FLAG`), checking
/// that the key is either UPPER_CASE (signed) or lower_case (the administrator's).
fn attribute(token: &Token) -> Result<(&str, Option<&str>), LexError> {
    let (key, value) = match (&token.key, token.quoted) {
        (Some(key), _) => (key.as_str(), Some(token.value.as_str())),
        (None, false) => (token.value.as_str(), None),
        (None, true) => {
            return Err(error(
                token.pos,
                format!("expected KEY=value, found {:?}", token.as_written()),
            ));
        }
    };
    if !(is_upper_key(key) || is_lower_key(key)) || key.len() > MAX_NAME_LEN {
        return Err(error(
            token.pos,
            format!(
                "expected an attribute name in UPPER_CASE (set and signed by the vendor) or \
                 lower_case (an administrator's note), found {key:?}"
            ),
        ));
    }
    if is_lower_key(key) {
        let upper = key.to_ascii_uppercase();
        if KNOWN_ATTRIBUTES.contains(&upper.as_str()) {
            return Err(error(
                token.pos,
                format!(
                    "{key} must be written {upper}: lowercase attributes are unsigned notes \
                     and would have no effect"
                ),
            ));
        }
    }
    if let Some("") = value
        && !token.quoted
    {
        return Err(error(
            token.value_pos,
            format!("expected a value after {key}= (write {key}=\"\" for an empty value)"),
        ));
    }
    Ok((key, value))
}

fn is_upper_key(key: &str) -> bool {
    key.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn is_lower_key(key: &str) -> bool {
    key.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn apply_signed_attribute(
    entitlement: &mut Entitlement,
    token: &Token,
    key: &str,
    value: Option<&str>,
    problems: &mut Problems,
) -> Result<(), LexError> {
    let needs_value = |what: &str| error(token.pos, format!("expected {key}={what}"));
    let at = token.value_pos;
    match key {
        "START" | "ISSUED" => {
            let expected = "<date> (dd-mmm-yyyy or yyyy-mm-dd)";
            let text = value.ok_or_else(|| needs_value(expected))?;
            let date = match parse_date(text) {
                Some(DateText::Date(date)) => date,
                _ => {
                    return Err(error(
                        at,
                        format!("expected {key}={expected}, found {text:?}"),
                    ));
                }
            };
            if key == "START" {
                entitlement.start = Some(date);
            } else {
                entitlement.issued = Some(date);
            }
        }
        "NOTICE" => {
            let text = value.ok_or_else(|| needs_value("\"text\""))?;
            // An empty notice and no notice mean the same and sign the same.
            entitlement.notice = (!text.is_empty()).then(|| text.to_string());
        }
        "HOSTID" => {
            let text = value.ok_or_else(|| needs_value("ANY or HOSTID=<host id>"))?;
            entitlement.hostid = parse_hostid(text, at)?;
        }
        "SIGN" => {
            let text = value.ok_or_else(|| needs_value("\"<signature>\""))?;
            entitlement.signature = Some(parse_signature(text, at)?);
        }
        _ => {
            let text = value.unwrap_or_default();
            if let Err(why) = attribute_value(key, text) {
                // At the value, or at the keyword of a bare flag or an unknown keyword.
                let known = KNOWN_ATTRIBUTES.contains(&key);
                let pos = if value.is_some() && known {
                    at
                } else {
                    token.pos
                };
                problems.push((key.to_string(), pos, why));
            }
            entitlement.attrs.push((key.to_string(), text.to_string()));
        }
    }
    Ok(())
}
