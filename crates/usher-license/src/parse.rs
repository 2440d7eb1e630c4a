//! The license file grammar: SERVER, VENDOR, USE_SERVER, FEATURE and INCREMENT lines.
//!
//! Parsing is all-or-nothing for syntax: a file with one malformed line is refused with
//! the position of the first problem, because serving "the lines we understood" would hide
//! a damaged file from the administrator. Signatures are *not* checked here; a line whose
//! signature does not verify is still a well-formed line, and [`crate::check`] reports it
//! without taking the rest of the file down.

use std::collections::HashMap;
use std::fmt;

use chrono::NaiveDate;

use crate::entitlement::{KNOWN_ATTRIBUTES, MAX_NAME_LEN};
use crate::lex::{self, LexError, LogicalLine, Pos, Token};
use crate::{
    AttributeProblem, Entitlement, Expiry, HostId, LineKind, SeatCount, Version, attribute_value,
};

/// A syntax error, located in the original text.
///
/// Displays as `file:line:column: message`, the form editors and terminals recognise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file name given to [`parse`].
    pub file: String,
    /// 1-based line in the original text (continuations are not joined here).
    pub line: usize,
    /// 1-based column, counted in characters (a tab counts as one).
    pub column: usize,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// A `SERVER host hostid [port]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    /// Host name or address, as written.
    pub host: String,
    /// The host id the server must have (`ANY` for none).
    pub hostid: HostId,
    /// TCP port, if given (usher's default is 1648).
    pub port: Option<u16>,
    /// 1-based line number of the SERVER keyword.
    pub line: usize,
}

/// A lowercase `key=value` attribute on an entitlement line.
///
/// These are the administrator's notes (FlexLM's `asset_info=`, `sort=`, ...): they are
/// not signed, may be added or edited freely, and never change what is licensed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAttribute {
    /// Index into [`LicenseFile::entitlements`] of the line that carries it.
    pub entitlement: usize,
    /// The lowercase key.
    pub key: String,
    /// The value (quotes removed).
    pub value: String,
}

/// A parsed license file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseFile {
    /// The file name given to [`parse`], used in messages.
    pub name: String,
    /// FEATURE and INCREMENT lines in file order, signed or not.
    pub entitlements: Vec<Entitlement>,
    /// SERVER lines in file order.
    pub servers: Vec<ServerLine>,
    /// Names from VENDOR lines in file order (the rest of a VENDOR line is ignored).
    pub vendors: Vec<String>,
    /// Whether a USE_SERVER line is present.
    pub use_server: bool,
    /// Lowercase (unsigned, administrator-editable) attributes of the entitlements, in
    /// file order.
    pub user_attrs: Vec<UserAttribute>,
    /// Vendor attributes whose value is not one their keyword takes, or whose keyword usher
    /// does not know, in file order (see [`crate::attribute_value`]). The lines still
    /// parse: signing refuses them, checking marks them bad, the server serves them as
    /// [`AttributeProblem::served_as`] says.
    pub attribute_problems: Vec<AttributeProblem>,
}

/// Parses a license file. `file_name` is only used in error messages and
/// [`LicenseFile::name`].
///
/// Never panics, whatever the input.
pub fn parse(file_name: &str, text: &str) -> Result<LicenseFile, ParseError> {
    parse_with_ends(file_name, text).map(|(file, _)| file)
}

/// Like [`parse`], also returning for each entitlement the byte offset in `text` just after
/// its last token (before trailing whitespace and comments), where the signer inserts
/// `SIGN=`.
pub(crate) fn parse_with_ends(
    file_name: &str,
    text: &str,
) -> Result<(LicenseFile, Vec<usize>), ParseError> {
    let located = |LexError { pos, message }| ParseError {
        file: file_name.to_string(),
        line: pos.line,
        column: pos.column,
        message,
    };
    let mut file = LicenseFile {
        name: file_name.to_string(),
        entitlements: Vec::new(),
        servers: Vec::new(),
        vendors: Vec::new(),
        use_server: false,
        user_attrs: Vec::new(),
        attribute_problems: Vec::new(),
    };
    let mut ends = Vec::new();
    for line in lex::logical_lines(text).map_err(located)? {
        parse_line(&line, &mut file, &mut ends).map_err(located)?;
    }
    for problem in &mut file.attribute_problems {
        problem.file = file_name.to_string();
    }
    Ok((file, ends))
}

fn error(pos: Pos, message: impl Into<String>) -> LexError {
    LexError {
        pos,
        message: message.into(),
    }
}

fn parse_line(
    line: &LogicalLine,
    file: &mut LicenseFile,
    ends: &mut Vec<usize>,
) -> Result<(), LexError> {
    let mut fields = Fields {
        tokens: &line.tokens,
        next: 0,
        end: line.end(),
    };
    let expected_keyword = "SERVER, VENDOR, USE_SERVER, FEATURE or INCREMENT";
    let (keyword, at) = fields.bare(expected_keyword)?;
    let upper = keyword.to_ascii_uppercase();
    match upper.as_str() {
        "SERVER" => {
            let server = parse_server(&mut fields, at.line)?;
            file.servers.push(server);
        }
        "VENDOR" => {
            // Paths, options files and ports after the name belong to other products'
            // daemons; usher has one daemon and its own configuration, so they are ignored.
            let (name, at) = fields.bare("a vendor name")?;
            file.vendors.push(check_name(name, at, "a vendor name")?);
        }
        "USE_SERVER" => {
            if let Some(extra) = fields.peek() {
                return Err(error(extra.pos, "USE_SERVER takes no arguments"));
            }
            file.use_server = true;
        }
        "FEATURE" | "INCREMENT" => {
            let kind = match upper.as_str() {
                "FEATURE" => LineKind::Feature,
                _ => LineKind::Increment,
            };
            let index = file.entitlements.len();
            let (entitlement, user_attrs, problems) =
                parse_entitlement(kind, at.line, &mut fields)?;
            file.attribute_problems
                .extend(
                    problems
                        .into_iter()
                        .map(|(key, at, message)| AttributeProblem {
                            file: String::new(),
                            line: at.line,
                            column: at.column,
                            entitlement: index,
                            key,
                            message,
                        }),
                );
            file.entitlements.push(entitlement);
            file.user_attrs
                .extend(user_attrs.into_iter().map(|(key, value)| UserAttribute {
                    entitlement: index,
                    key,
                    value,
                }));
            ends.push(line.end_offset());
        }
        "DAEMON" => return Err(error(at, "DAEMON lines are not supported; write VENDOR")),
        _ => {
            return Err(error(
                at,
                format!("expected {expected_keyword}, found {keyword:?}"),
            ));
        }
    }
    Ok(())
}

/// The tokens of one logical line, consumed left to right.
struct Fields<'a> {
    tokens: &'a [Token],
    next: usize,
    /// Where "found end of line" is reported.
    end: Pos,
}

impl<'a> Fields<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.next)
    }

    fn next_token(&mut self) -> Option<&'a Token> {
        let token = self.tokens.get(self.next)?;
        self.next += 1;
        Some(token)
    }

    /// The next token, which must be a plain word (no `=`, no quotes).
    fn bare(&mut self, expected: &str) -> Result<(&'a str, Pos), LexError> {
        let end = self.end;
        match self.next_token() {
            None => Err(error(
                end,
                format!("expected {expected}, found end of line"),
            )),
            Some(token) => match token.bare() {
                Some(word) => Ok((word, token.pos)),
                None => Err(error(
                    token.pos,
                    format!("expected {expected}, found {:?}", token.as_written()),
                )),
            },
        }
    }
}

fn parse_server(fields: &mut Fields<'_>, line: usize) -> Result<ServerLine, LexError> {
    let (host, _) = fields.bare("a server host name")?;
    let hostid = match fields.next_token() {
        None => {
            return Err(error(
                fields.end,
                "expected a server host id, found end of line",
            ));
        }
        // A host id is usually `TYPE=value`, which the lexer splits like an attribute.
        Some(token) if !token.quoted => parse_hostid(&token.as_written(), token.pos)?,
        Some(token) => {
            return Err(error(
                token.pos,
                format!("expected a server host id, found {:?}", token.as_written()),
            ));
        }
    };
    let port = match fields.peek() {
        None => None,
        Some(_) => {
            let expected = "a port number (1-65535)";
            let (text, at) = fields.bare(expected)?;
            match text.parse::<u16>() {
                Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(port),
                _ => return Err(error(at, format!("expected {expected}, found {text:?}"))),
            }
        }
    };
    if let Some(extra) = fields.peek() {
        return Err(error(
            extra.pos,
            format!(
                "unexpected {:?} after the SERVER port: usher's SERVER line is \
                 `SERVER host hostid [port]`",
                extra.as_written()
            ),
        ));
    }
    Ok(ServerLine {
        host: host.to_string(),
        hostid,
        port,
        line,
    })
}

fn check_name(name: &str, at: Pos, what: &str) -> Result<String, LexError> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(name.to_string())
    } else {
        Err(error(
            at,
            format!(
                "expected {what} (letters, digits, '_' and '-', at most {MAX_NAME_LEN} \
                 characters), found {name:?}"
            ),
        ))
    }
}

const EXPIRY_EXPECTED: &str = "an expiry date (dd-mmm-yyyy, yyyy-mm-dd or permanent)";
const COUNT_EXPECTED: &str = "a seat count (a positive number, uncounted or token)";

type UserAttrs = Vec<(String, String)>;
/// Refused vendor attribute values: keyword, where, why.
type Problems = Vec<(String, Pos, String)>;

fn parse_entitlement(
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

/// Parses a host id value: `ANY`, or one or more space-separated ids (any of which may
/// match). Ids are case-normalised, type in upper case and value in lower case
/// (`ETHER=00aa...`), because host ids compare case-insensitively and the canonical
/// encoding must not depend on how an administrator's tool capitalised them.
pub(crate) fn parse_hostid(text: &str, at: Pos) -> Result<HostId, LexError> {
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

fn parse_signature(text: &str, at: Pos) -> Result<[u8; 64], LexError> {
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

fn parse_count(text: &str) -> Option<SeatCount> {
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

fn parse_expiry(text: &str) -> Option<Expiry> {
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
enum DateText {
    Date(NaiveDate),
    /// FlexLM's `dd-mmm-0` (or `-00`, `-0000`): "never expires".
    YearZero,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Parses `yyyy-mm-dd` or `dd-mmm-yyyy` (month name in any case).
fn parse_date(text: &str) -> Option<DateText> {
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
