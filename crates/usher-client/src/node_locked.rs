//! Uncounted, node-locked licenses: checked by the application itself, from the license
//! file, with no server.
//!
//! An entitlement whose count is `uncounted` is bound to hosts by its `HOSTID=`. The
//! application that embeds its vendor's public key verifies the signature (so the file
//! cannot be edited or forged), the dates, and that this machine is one the entitlement
//! names.
//!
//! ```no_run
//! # fn demo() -> Result<(), usher_client::node_locked::LocalError> {
//! let key = usher_license::VendorPublicKey::read_from("acme.pub".as_ref()).unwrap();
//! let text = std::fs::read_to_string("cad.lic").unwrap();
//! let ok = usher_client::node_locked::check("cad.lic", &text, &[key], "cad", "2025")?;
//! println!("licensed until {:?}", ok.expires);
//! # Ok(()) }
//! ```

use chrono::NaiveDate;
use usher_license::{
    Expiry, ParseError, SeatCount, Status, VendorPublicKey, Version, check as check_file, host_ids,
    matches_host, parse,
};

/// A node-locked entitlement that covers this machine today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLocked {
    /// Feature.
    pub feature: String,
    /// Vendor.
    pub vendor: String,
    /// Licensed version.
    pub version: String,
    /// Last valid day (`None`: permanent).
    pub expires: Option<NaiveDate>,
    /// Line in the license file.
    pub line: usize,
}

/// Why no node-locked entitlement covers this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    /// The license file does not parse (the message names file, line and column).
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The version asked for is malformed.
    #[error("bad version {0:?}")]
    BadVersion(String),
    /// No entitlement fits; each line says why one that names the feature does not.
    #[error("no node-locked license for {feature:?} on this machine{}", reasons(.tried))]
    NotLicensed {
        /// Feature asked for.
        feature: String,
        /// One line per entitlement of the feature that was considered and rejected.
        tried: Vec<String>,
    },
}

fn reasons(tried: &[String]) -> String {
    if tried.is_empty() {
        String::new()
    } else {
        format!(": {}", tried.join("; "))
    }
}

/// Checks `text` (the license file named `file_name`) for an uncounted entitlement of
/// `feature` at `version` or newer (empty: any) that is signed by one of `keys`, valid
/// today, and bound to this machine.
pub fn check(
    file_name: &str,
    text: &str,
    keys: &[VendorPublicKey],
    feature: &str,
    version: &str,
) -> Result<NodeLocked, LocalError> {
    check_for(
        file_name,
        text,
        keys,
        feature,
        version,
        &host_ids(),
        chrono::Utc::now().date_naive(),
    )
}

/// [`check`] for given host ids and date (what tests use).
pub fn check_for(
    file_name: &str,
    text: &str,
    keys: &[VendorPublicKey],
    feature: &str,
    version: &str,
    ids: &[String],
    today: NaiveDate,
) -> Result<NodeLocked, LocalError> {
    let wanted: Version = if version.is_empty() { "0" } else { version }
        .parse()
        .map_err(|_| LocalError::BadVersion(version.to_string()))?;
    let file = parse(file_name, text)?;
    let mut tried = Vec::new();
    for checked in check_file(&file, keys, today) {
        let e = &checked.entitlement;
        if e.feature != feature {
            continue;
        }
        let why = if e.count != SeatCount::Uncounted {
            Some("counted (it needs a license server)".to_string())
        } else if e.version < wanted {
            Some(format!("version {} is older than {version}", e.version))
        } else if checked.status != Status::Valid {
            Some(checked.to_string())
        } else if !matches_host(&e.hostid, ids) {
            Some("bound to another machine (HOSTID)".to_string())
        } else {
            None
        };
        match why {
            Some(why) => tried.push(format!("line {}: {why}", e.line)),
            None => {
                return Ok(NodeLocked {
                    feature: e.feature.clone(),
                    vendor: e.vendor.clone(),
                    version: e.version.to_string(),
                    expires: match e.expiry {
                        Expiry::Permanent => None,
                        Expiry::On(day) => Some(day),
                    },
                    line: e.line,
                });
            }
        }
    }
    Err(LocalError::NotLicensed {
        feature: feature.to_string(),
        tried,
    })
}

#[cfg(test)]
mod tests {
    use usher_license::{VendorPublicKey, VendorSigningKey, keygen, sign_text};

    use super::*;

    fn signed(text: &str) -> (String, VendorPublicKey) {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = keygen("acme", dir.path()).unwrap();
        let key = VendorSigningKey::read_from(&secret).unwrap();
        let signed = sign_text("node.lic", text, &key).unwrap().text;
        (signed, VendorPublicKey::read_from(&public).unwrap())
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    const LICENSE: &str = "\
FEATURE cad acme 2025 31-dec-2027 uncounted HOSTID=ID=ws7
FEATURE sim acme 1.0 permanent 5 HOSTID=ANY
FEATURE old acme 2025 31-dec-2020 uncounted HOSTID=ID=ws7
";

    #[test]
    fn a_signed_entitlement_for_this_host_is_granted_without_a_server() {
        let (text, key) = signed(LICENSE);
        let ids = vec!["ID=ws7".to_string()];
        let ok = check_for(
            "node.lic",
            &text,
            &[key],
            "cad",
            "2025",
            &ids,
            day(2026, 1, 1),
        );
        let ok = ok.expect("licensed");
        assert_eq!(ok.expires, Some(day(2027, 12, 31)));
        assert_eq!(ok.line, 1);
    }

    #[test]
    fn each_refusal_says_why() {
        let (text, key) = signed(LICENSE);
        let keys = [key];
        let today = day(2026, 1, 1);
        let here = vec!["ID=ws7".to_string()];
        let elsewhere = vec!["ID=ws8".to_string()];
        let cases: &[(&str, &str, &[String], &str)] = &[
            ("cad", "2025", &elsewhere, "another machine"),
            ("cad", "2026", &here, "older than 2026"),
            ("sim", "", &here, "needs a license server"),
            ("old", "", &here, "expired"),
            ("nosuch", "", &here, "no node-locked license for \"nosuch\""),
        ];
        for (feature, version, ids, expected) in cases {
            let err = check_for("node.lic", &text, &keys, feature, version, ids, today)
                .expect_err(feature)
                .to_string();
            assert!(err.contains(expected), "{feature}: {err}");
        }
    }

    #[test]
    fn an_edited_file_is_refused() {
        let (text, key) = signed(LICENSE);
        let edited = text.replace("31-dec-2027", "31-dec-2099");
        let ids = vec!["ID=ws7".to_string()];
        let err = check_for(
            "node.lic",
            &edited,
            &[key],
            "cad",
            "",
            &ids,
            day(2026, 1, 1),
        )
        .expect_err("tampered")
        .to_string();
        assert!(err.contains("signature"), "{err}");
    }
}
