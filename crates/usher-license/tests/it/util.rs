//! Shared fixtures. Helpers panic with the full text involved, so a failure shows what was
//! being parsed.

use chrono::NaiveDate;
use usher_license::{Checked, LicenseFile, Status, VendorSigningKey, check, parse, sign_text};

/// A license file using every line type, continuations, comments and attributes.
pub const SAMPLE: &str = "\
# Acme CAD license for Example Corp
SERVER lic1.example.com ANY 1648
VENDOR acme
USE_SERVER

FEATURE cad acme 2025.1 31-dec-2027 10 \\
    ISSUED=2025-01-15 NOTICE=\"Example Corp, site license\" \\
    LINGER=60 DUP_GROUP=UH asset_info=\"rack 4\"
INCREMENT cad acme 2025.1 permanent 5 START=1-jan-2026 # spare seats
INCREMENT solver acme 3 2027-06-30 uncounted HOSTID=ETHER=00:1a:2b:3c:4d:5e
";

/// The fixed key the sample is signed with.
pub fn acme_key() -> VendorSigningKey {
    VendorSigningKey::from_seed("acme", [7; 32]).unwrap()
}

/// A second vendor's key.
pub fn other_key() -> VendorSigningKey {
    VendorSigningKey::from_seed("other", [8; 32]).unwrap()
}

/// A day on which every sample entitlement is within its dates.
pub fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, 1).unwrap()
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

pub fn parse_ok(text: &str) -> LicenseFile {
    match parse("test.lic", text) {
        Ok(file) => file,
        Err(e) => panic!("parse failed: {e}\n--- text ---\n{text}"),
    }
}

/// `text` signed with [`acme_key`].
pub fn signed(text: &str) -> String {
    match sign_text("test.lic", text, &acme_key()) {
        Ok(outcome) => outcome.text,
        Err(e) => panic!("signing failed: {e}\n--- text ---\n{text}"),
    }
}

/// The statuses of every entitlement of `text` against the acme and other keys.
pub fn statuses(text: &str, today: NaiveDate) -> Vec<Status> {
    checked(text, today).into_iter().map(|c| c.status).collect()
}

pub fn checked(text: &str, today: NaiveDate) -> Vec<Checked> {
    let keys = [acme_key().public_key(), other_key().public_key()];
    check(&parse_ok(text), &keys, today)
}

/// Replaces the only occurrence of `from` in `text`, failing if it is missing or repeated.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} must occur once in:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// `text` with every `SIGN="..."` the signer appended (and its leading continuation)
/// removed.
pub fn strip_signatures(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(" \\\n    SIGN=\"") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " \\\n    SIGN=\"".len()..];
        let close = after.find('"').expect("closing quote of SIGN");
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}
