//! The entitlement: one signed FEATURE or INCREMENT line of a license file.

use chrono::NaiveDate;

use crate::Version;

/// The longest feature, vendor or attribute name accepted, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// The upper-case attributes the signer accepts on an entitlement.
///
/// The parser accepts any UPPER_CASE attribute (so a newer vendor's files still parse),
/// but [`crate::sign_text`] refuses names outside this list, so that a typo such as
/// `LINGRE=60` is caught before it is signed into a license that cannot be changed.
/// Extend it when the server learns a new attribute.
pub const KNOWN_ATTRIBUTES: &[&str] = &[
    "START",
    "ISSUED",
    "NOTICE",
    "HOSTID",
    "SIGN",
    "ISSUER",
    "SN",
    "LINGER",
    "MIN_CHECKOUT",
    "DUP_GROUP",
    "TOKEN",
    "BORROW",
    "OVERDRAFT",
    "USER_BASED",
    "HOST_BASED",
    "SUPERSEDE",
    "VENDOR_STRING",
    "PLATFORMS",
    "QUEUE",
];

/// Whether a line started a pool (`FEATURE`) or adds to one (`INCREMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineKind {
    /// `FEATURE`: in FlexLM only the first FEATURE line for a name counts; usher treats
    /// FEATURE and INCREMENT alike for counting (seats add up within a pool) and keeps the
    /// keyword for display and compatibility.
    Feature,
    /// `INCREMENT`: adds seats to the pool it belongs to.
    Increment,
}

/// When an entitlement stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expiry {
    /// Valid through the end of this date (UTC).
    On(NaiveDate),
    /// Never expires (`permanent`).
    Permanent,
}

/// How many seats an entitlement grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeatCount {
    /// Floating seats counted by a server.
    Counted(u32),
    /// `uncounted`: node-locked to `HOSTID`, validated by the client with no server.
    Uncounted,
    /// `token`: the feature has no seats of its own; each checkout draws tokens from
    /// other pools, as its `TOKEN=` attribute says (see [`TokenAlternative`]).
    Token,
}

/// One way a token-based feature (`count` = `token`) is paid for: `tokens` seats of the
/// pool `feature` at version `version` or newer, per seat checked out. A `TOKEN=` value
/// lists alternatives in the order they are tried, RLM-style:
/// `TOKEN="<units 2.0 5> <office 1 1>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAlternative {
    /// The pool's feature.
    pub feature: String,
    /// Minimum version of the pool.
    pub version: Version,
    /// Tokens per seat.
    pub tokens: u32,
}

/// Parses a `TOKEN=` value: one or more `<feature version tokens>` groups.
pub fn parse_token_alternatives(text: &str) -> Result<Vec<TokenAlternative>, String> {
    let expected = "TOKEN=\"<feature version tokens> ...\", e.g. TOKEN=\"<units 2.0 5>\"";
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let inner = rest
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .ok_or_else(|| format!("expected {expected}, found {text:?}"))?;
        let (group, after) = inner;
        let parts: Vec<&str> = group.split_whitespace().collect();
        let [feature, version, tokens] = parts.as_slice() else {
            return Err(format!(
                "expected <feature version tokens> in {expected}, found <{group}>"
            ));
        };
        let name_ok = feature.len() <= MAX_NAME_LEN
            && feature
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(format!("{feature:?} is not a feature name (in TOKEN=)"));
        }
        let version: Version = version
            .parse()
            .map_err(|_| format!("{version:?} is not a version (in TOKEN=)"))?;
        let tokens = tokens
            .parse::<u32>()
            .ok()
            .filter(|&n| n >= 1 && tokens.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("{tokens:?} is not a token count of 1 or more (in TOKEN=)"))?;
        out.push(TokenAlternative {
            feature: (*feature).to_string(),
            version,
            tokens,
        });
        rest = after.trim_start();
    }
    if out.is_empty() {
        return Err(format!("expected {expected}, found an empty value"));
    }
    Ok(out)
}

/// The server (or, for uncounted entitlements, client) an entitlement is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostId {
    /// `ANY`: no binding.
    Any,
    /// A specific host id such as `ID=<server identity fingerprint>`, `ETHER=...`,
    /// `HOSTNAME=...` or a bare id. Stored exactly as written (case-normalised).
    Id(String),
}

/// One entitlement line, as parsed (and, once checked, as served).
///
/// Every field except `line` and `signature` is covered by the vendor's signature through
/// [`Entitlement::canonical_bytes`]. The administrator's lowercase attributes are not part
/// of an entitlement; the parser keeps them in [`crate::LicenseFile::user_attrs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    /// FEATURE or INCREMENT.
    pub kind: LineKind,
    /// Feature name, `[A-Za-z0-9_-]+`.
    pub feature: String,
    /// Vendor name, `[A-Za-z0-9_-]+`.
    pub vendor: String,
    /// Highest version this entitlement serves.
    pub version: Version,
    /// Expiry date or permanent.
    pub expiry: Expiry,
    /// Seat count.
    pub count: SeatCount,
    /// `START=`: first valid date.
    pub start: Option<NaiveDate>,
    /// `ISSUED=`: issue date (informational).
    pub issued: Option<NaiveDate>,
    /// `NOTICE=`: customer text (informational, signed).
    pub notice: Option<String>,
    /// `HOSTID=`: server binding (`ANY` when absent).
    pub hostid: HostId,
    /// Vendor-defined licensing attributes (signed), such as `LINGER=`, `DUP_GROUP=`,
    /// `BORROW=`, `OVERDRAFT=`. Keys are upper case; order is canonical (sorted).
    pub attrs: Vec<(String, String)>,
    /// `SIGN=`: Ed25519 signature over the canonical bytes, if signed.
    pub signature: Option<[u8; 64]>,
    /// 1-based line number where the entitlement starts in its file.
    pub line: usize,
}

impl Entitlement {
    /// The value of a signed vendor attribute, by upper-case key.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// First millisecond (since the Unix epoch) at which the entitlement is valid: 00:00 UTC
    /// of its `START=` date, or 0 when it has none.
    pub fn valid_from_ms(&self) -> u64 {
        self.start.map_or(0, start_of_day_ms)
    }

    /// First millisecond after validity: 00:00 UTC of the day after the expiry date, or
    /// `None` for permanent entitlements.
    pub fn valid_until_ms(&self) -> Option<u64> {
        match self.expiry {
            Expiry::Permanent => None,
            Expiry::On(date) => Some(date.succ_opt().map_or(u64::MAX, start_of_day_ms)),
        }
    }

    /// Seats granted, or `None` for uncounted and token-based entitlements.
    pub fn seats(&self) -> Option<u32> {
        match self.count {
            SeatCount::Counted(n) => Some(n),
            SeatCount::Uncounted | SeatCount::Token => None,
        }
    }

    /// For a token-based entitlement: how its checkouts are paid for, in the order tried.
    /// `None` for others, or if `TOKEN=` is missing or malformed (the parser refuses both).
    pub fn token_alternatives(&self) -> Option<Vec<TokenAlternative>> {
        if self.count != SeatCount::Token {
            return None;
        }
        parse_token_alternatives(self.attr("TOKEN")?).ok()
    }
}

/// Milliseconds since the Unix epoch at 00:00 UTC of `date` (0 for dates before 1970).
pub fn start_of_day_ms(date: NaiveDate) -> u64 {
    let secs = date
        .and_hms_opt(0, 0, 0)
        .map_or(0, |dt| dt.and_utc().timestamp());
    u64::try_from(secs).unwrap_or(0).saturating_mul(1000)
}
