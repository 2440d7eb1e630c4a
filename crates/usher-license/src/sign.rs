//! Signing a license file: appending `SIGN=` to each unsigned entitlement of one vendor.
//!
//! The signer edits text rather than re-printing parsed values, so the vendor's comments,
//! layout and already-signed lines come out exactly as they went in.

use ed25519_dalek::Signer;

use crate::parse::{ParseError, parse_with_ends};
use crate::{AttributeProblem, VendorSigningKey, parse, verify};

/// The result of [`sign_text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignOutcome {
    /// The license file with `SIGN=` added to every entitlement that lacked one.
    pub text: String,
    /// How many entitlements were signed now.
    pub signed: usize,
    /// How many entitlements already carried a signature and were left untouched.
    pub already_signed: usize,
}

/// Why a file could not be signed. Nothing is signed unless everything can be.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The file does not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// An unsigned entitlement names a vendor other than the key's.
    #[error(
        "{file}:{line}: entitlement is for vendor {found:?} but the key signs for {expected:?}"
    )]
    WrongVendor {
        /// File name.
        file: String,
        /// 1-based line of the entitlement.
        line: usize,
        /// The entitlement's vendor.
        found: String,
        /// The key's vendor.
        expected: String,
    },
    /// An unsigned entitlement carries an attribute value its keyword does not take
    /// (`BORROW=99999`), or an upper-case attribute not in
    /// [`KNOWN_ATTRIBUTES`](crate::KNOWN_ATTRIBUTES), most likely a typo (`LINGRE=`):
    /// signed, it could be fixed only by a new license.
    #[error("{0}")]
    Attribute(AttributeProblem),
    /// The signed text did not parse back to verifying entitlements. This is a bug in
    /// usher, reported instead of writing a license that would not work.
    #[error("internal error: the signed file does not verify: {0}")]
    SelfCheck(String),
}

/// Signs every entitlement of `text` that has no `SIGN=` and belongs to `key`'s vendor.
///
/// Refuses the whole file if an unsigned entitlement belongs to another vendor, uses an
/// unknown upper-case attribute or gives one a value it does not take (see
/// [`crate::attribute_value`]). `SIGN="..."` is appended on continuation lines after the
/// entitlement's last field (before any trailing comment); everything else is preserved
/// byte for byte.
pub fn sign_text(
    file_name: &str,
    text: &str,
    key: &VendorSigningKey,
) -> Result<SignOutcome, SignError> {
    let (file, ends) = parse_with_ends(file_name, text)?;
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };

    let mut insertions = Vec::new();
    let mut signed = Vec::new();
    let mut already_signed = 0;
    for (index, (entitlement, &end)) in file.entitlements.iter().zip(&ends).enumerate() {
        if entitlement.signature.is_some() {
            already_signed += 1;
            continue;
        }
        if entitlement.vendor != key.vendor() {
            return Err(SignError::WrongVendor {
                file: file_name.to_string(),
                line: entitlement.line,
                found: entitlement.vendor.clone(),
                expected: key.vendor().to_string(),
            });
        }
        if let Some(problem) = file
            .attribute_problems
            .iter()
            .find(|p| p.entitlement == index)
        {
            return Err(SignError::Attribute(problem.clone()));
        }
        let signature = key.signing_key().sign(&entitlement.canonical_bytes());
        insertions.push((end, sign_attribute(&signature.to_bytes(), newline)));
        signed.push(index);
    }

    let mut out = String::with_capacity(text.len() + insertions.len() * 200);
    let mut copied = 0;
    for (at, insertion) in &insertions {
        // Offsets come from the lexer and lie on character boundaries, in increasing order.
        out.push_str(text.get(copied..*at).unwrap_or_default());
        out.push_str(insertion);
        copied = *at;
    }
    out.push_str(text.get(copied..).unwrap_or_default());

    self_check(file_name, &out, key, file.entitlements.len(), &signed)?;
    Ok(SignOutcome {
        text: out,
        signed: signed.len(),
        already_signed,
    })
}

/// ` \` + newline + `    SIGN="abcd ef01 ... \` (eight groups of four hex digits per line).
fn sign_attribute(signature: &[u8; 64], newline: &str) -> String {
    let groups: Vec<String> = signature.chunks(2).map(hex::encode_upper).collect();
    let lines: Vec<String> = groups.chunks(8).map(|line| line.join(" ")).collect();
    let joiner = format!(" \\{newline}          ");
    format!(" \\{newline}    SIGN=\"{}\"", lines.join(&joiner))
}

/// Parses the signed text again and verifies the entitlements signed just now.
fn self_check(
    file_name: &str,
    text: &str,
    key: &VendorSigningKey,
    count: usize,
    signed: &[usize],
) -> Result<(), SignError> {
    let file = parse(file_name, text).map_err(|e| SignError::SelfCheck(e.to_string()))?;
    if file.entitlements.len() != count {
        return Err(SignError::SelfCheck(format!(
            "{count} entitlements before signing, {} after",
            file.entitlements.len()
        )));
    }
    let public = key.public_key();
    for &index in signed {
        let entitlement = &file.entitlements[index];
        verify(entitlement, &public)
            .map_err(|e| SignError::SelfCheck(format!("line {}: {e}", entitlement.line)))?;
    }
    Ok(())
}
