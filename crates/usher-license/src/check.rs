//! Verifying signatures and judging each entitlement of a file against trusted keys and a
//! date.
//!
//! A bad line does not spoil its neighbours: every entitlement gets its own [`Status`], and
//! the caller serves those that are valid.

use std::fmt;

use chrono::NaiveDate;
use ed25519_dalek::Signature;

use crate::{Entitlement, Expiry, LicenseFile, VendorPublicKey};

/// Why an entitlement's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The entitlement has no `SIGN=`.
    #[error("not signed")]
    Unsigned,
    /// The key belongs to another vendor than the entitlement names.
    #[error("entitlement is for vendor {entitlement:?}, key is for vendor {key:?}")]
    VendorMismatch {
        /// The entitlement's vendor.
        entitlement: String,
        /// The key's vendor.
        key: String,
    },
    /// The signature does not match the signed fields under this key.
    #[error("signature does not verify (tampered or wrong vendor key)")]
    Invalid,
}

/// Verifies `entitlement`'s signature with `key`, which must belong to the same vendor.
///
/// Uses Ed25519 strict verification, which rejects non-canonical and small-order
/// encodings, so a signature cannot be altered into another one that also verifies.
pub fn verify(entitlement: &Entitlement, key: &VendorPublicKey) -> Result<(), SignatureError> {
    let bytes = entitlement.signature.ok_or(SignatureError::Unsigned)?;
    if entitlement.vendor != key.vendor() {
        return Err(SignatureError::VendorMismatch {
            entitlement: entitlement.vendor.clone(),
            key: key.vendor().to_string(),
        });
    }
    let signature = Signature::from_bytes(&bytes);
    key.verifying_key()
        .verify_strict(&entitlement.canonical_bytes(), &signature)
        .map_err(|_| SignatureError::Invalid)
}

/// What [`check`] concluded about one entitlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Signed by a trusted key of its vendor and within its dates.
    Valid,
    /// No `SIGN=`.
    Unsigned,
    /// No trusted key for the entitlement's vendor.
    UnknownVendor,
    /// Signed, but the signature does not verify under any trusted key of its vendor.
    BadSignature,
    /// Correctly signed, but the expiry date (shown) has passed.
    Expired(NaiveDate),
    /// Correctly signed, but the START date (shown) is still to come.
    NotYetStarted(NaiveDate),
}

impl Status {
    /// Whether the signature is good, whatever the date: the entitlement is genuine and
    /// may be shown, and becomes servable when its dates allow.
    pub fn signature_ok(self) -> bool {
        matches!(
            self,
            Status::Valid | Status::Expired(_) | Status::NotYetStarted(_)
        )
    }

    /// Whether the entitlement may be served on the date it was checked for.
    pub fn is_valid_now(self) -> bool {
        self == Status::Valid
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Valid => f.write_str("valid"),
            Status::Unsigned => f.write_str("not signed (no SIGN= attribute)"),
            Status::UnknownVendor => f.write_str("no trusted public key for its vendor"),
            Status::BadSignature => {
                f.write_str("signature does not verify (tampered or wrong vendor key)")
            }
            Status::Expired(date) => write!(f, "expired on {date}"),
            Status::NotYetStarted(date) => write!(f, "not valid before {date}"),
        }
    }
}

/// One entitlement and its [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The entitlement as parsed.
    pub entitlement: Entitlement,
    /// What [`check`] concluded.
    pub status: Status,
}

impl fmt::Display for Checked {
    /// `line 12: feature "cad": signature does not verify (tampered or wrong vendor key)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.entitlement;
        write!(f, "line {}: feature {:?}: ", e.line, e.feature)?;
        match self.status {
            Status::UnknownVendor => {
                write!(f, "no trusted public key for vendor {:?}", e.vendor)
            }
            status => write!(f, "{status}"),
        }
    }
}

/// Judges every entitlement of `file` against the trusted `keys` on the UTC date `today`.
///
/// An entitlement is valid from 00:00 UTC on its START date through the end of its expiry
/// date. A vendor may have several trusted keys (during a key rotation); any one that
/// verifies is enough. Results are in file order, one per entitlement.
pub fn check(file: &LicenseFile, keys: &[VendorPublicKey], today: NaiveDate) -> Vec<Checked> {
    file.entitlements
        .iter()
        .map(|entitlement| Checked {
            entitlement: entitlement.clone(),
            status: status(entitlement, keys, today),
        })
        .collect()
}

fn status(entitlement: &Entitlement, keys: &[VendorPublicKey], today: NaiveDate) -> Status {
    if entitlement.signature.is_none() {
        return Status::Unsigned;
    }
    let mut vendor_keys = keys
        .iter()
        .filter(|k| k.vendor() == entitlement.vendor)
        .peekable();
    if vendor_keys.peek().is_none() {
        return Status::UnknownVendor;
    }
    if !vendor_keys.any(|key| verify(entitlement, key).is_ok()) {
        return Status::BadSignature;
    }
    if let Some(start) = entitlement.start.filter(|&start| today < start) {
        return Status::NotYetStarted(start);
    }
    match entitlement.expiry {
        Expiry::On(date) if today > date => Status::Expired(date),
        _ => Status::Valid,
    }
}
