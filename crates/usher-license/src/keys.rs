//! Vendor key pairs and their files.
//!
//! Key files are standard PEM (PKCS#8 for the secret key, SubjectPublicKeyInfo for the
//! public key), so `openssl pkey` reads them, preceded by `#` comment lines that name the
//! vendor. The vendor name travels with the key because a signature only counts for the
//! vendor its key belongs to.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::entitlement::MAX_NAME_LEN;

const SECRET_HEADER: &str = "# usher vendor secret key";
const PUBLIC_HEADER: &str = "# usher vendor public key";
const VENDOR_PREFIX: &str = "# vendor:";

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The vendor name is not `[A-Za-z0-9_-]+` of at most 64 characters.
    #[error(
        "invalid vendor name {0:?}: expected letters, digits, '_' and '-', at most 64 characters"
    )]
    InvalidVendor(String),
    /// The key file has no `# vendor: NAME` line before the PEM block.
    #[error("key file has no \"# vendor: NAME\" line before the PEM block")]
    MissingVendor,
    /// The file holds the other kind of key (a public key where a secret one was
    /// expected, or the reverse).
    #[error("expected a {expected} key file, found a {found} key")]
    WrongKind {
        /// `secret` or `public`.
        expected: &'static str,
        /// `secret`, `public` or `unrecognised`.
        found: &'static str,
    },
    /// The PEM block is not a valid Ed25519 key.
    #[error("malformed {kind} key: {reason}")]
    Malformed {
        /// `secret` or `public`.
        kind: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("cannot get random bytes for a new key: {0}")]
    Random(String),
    /// Writing would replace an existing file and [`WriteMode::CreateNew`] was asked for.
    #[error("{} already exists; refusing to overwrite a key file", .0.display())]
    Exists(PathBuf),
    /// Reading or writing a key file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Whether writing a key file may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Fail with [`KeyError::Exists`] if the file exists: losing a vendor's secret key
    /// strands every license signed with it.
    CreateNew,
    /// Replace an existing file.
    Overwrite,
}

/// A vendor's secret signing key. `Debug` shows the vendor and public fingerprint only.
#[derive(Clone)]
pub struct VendorSigningKey {
    vendor: String,
    key: SigningKey,
}

/// A vendor's public key, used to verify the vendor's entitlements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorPublicKey {
    vendor: String,
    key: VerifyingKey,
}

fn check_vendor(vendor: &str) -> Result<(), KeyError> {
    let valid = !vendor.is_empty()
        && vendor.len() <= MAX_NAME_LEN
        && vendor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(KeyError::InvalidVendor(vendor.to_string()))
    }
}

impl VendorSigningKey {
    /// Generates a new key pair for `vendor` from the operating system's random source.
    pub fn generate(vendor: &str) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Self::from_seed(vendor, seed)
    }

    /// A key from a 32-byte Ed25519 seed. Deterministic; meant for tests and for importing
    /// keys kept elsewhere.
    pub fn from_seed(vendor: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        check_vendor(vendor)?;
        Ok(VendorSigningKey {
            vendor: vendor.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The vendor this key signs for.
    pub fn vendor(&self) -> &str {
        &self.vendor
    }

    /// The matching public key.
    pub fn public_key(&self) -> VendorPublicKey {
        VendorPublicKey {
            vendor: self.vendor.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The Ed25519 key itself.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The key file text: two comment lines naming the vendor, then a PKCS#8 PEM block.
    pub fn to_file_text(&self) -> String {
        // Without the public half the document is PKCS#8 v1, the form `openssl genpkey`
        // writes and every OpenSSL version reads.
        let bytes = KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        // Encoding 32 bytes into a fixed ASN.1 structure cannot fail; the message is for
        // the impossible case.
        let pem = bytes
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding of an Ed25519 key");
        format!(
            "{SECRET_HEADER}\n{VENDOR_PREFIX} {}\n{}",
            self.vendor,
            pem.as_str()
        )
    }

    /// Reads the text written by [`Self::to_file_text`] (or any PKCS#8 Ed25519 PEM preceded
    /// by a `# vendor: NAME` line).
    pub fn from_file_text(text: &str) -> Result<Self, KeyError> {
        let (vendor, pem) = split_key_file(text, "secret", "PRIVATE KEY")?;
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Malformed {
            kind: "secret",
            reason: e.to_string(),
        })?;
        Ok(VendorSigningKey { vendor, key })
    }

    /// Writes the key file, readable and writable by its owner only (mode 0600).
    pub fn write_to(&self, path: &Path, mode: WriteMode) -> Result<(), KeyError> {
        write_key_file(path, &self.to_file_text(), 0o600, mode)
    }

    /// Reads a key file written by [`Self::write_to`].
    pub fn read_from(path: &Path) -> Result<Self, KeyError> {
        Self::from_file_text(&read_key_file(path)?)
    }
}

impl fmt::Debug for VendorSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorSigningKey")
            .field("vendor", &self.vendor)
            .field("public_fingerprint", &self.public_key().fingerprint())
            .finish_non_exhaustive()
    }
}

impl VendorPublicKey {
    /// A public key from its 32 raw bytes, as an application embeds it.
    pub fn from_bytes(vendor: &str, bytes: &[u8; 32]) -> Result<Self, KeyError> {
        check_vendor(vendor)?;
        let key = VerifyingKey::from_bytes(bytes).map_err(|e| KeyError::Malformed {
            kind: "public",
            reason: e.to_string(),
        })?;
        Ok(VendorPublicKey {
            vendor: vendor.to_string(),
            key,
        })
    }

    /// The 32 raw key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The vendor whose entitlements this key verifies.
    pub fn vendor(&self) -> &str {
        &self.vendor
    }

    /// The Ed25519 key itself.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// A short, stable identifier for display: the first 16 bytes of the SHA-256 of the
    /// raw key, in hex groups of four (`ab12-cd34-...`).
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.key.as_bytes());
        digest[..16]
            .chunks(2)
            .map(hex::encode)
            .collect::<Vec<_>>()
            .join("-")
    }

    /// The key file text: two comment lines naming the vendor, then an SPKI PEM block.
    pub fn to_file_text(&self) -> String {
        // Encoding 32 bytes into a fixed ASN.1 structure cannot fail; the message is for
        // the impossible case.
        let pem = self
            .key
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI encoding of a key");
        format!("{PUBLIC_HEADER}\n{VENDOR_PREFIX} {}\n{pem}", self.vendor)
    }

    /// Reads the text written by [`Self::to_file_text`] (or any SPKI Ed25519 PEM preceded
    /// by a `# vendor: NAME` line).
    pub fn from_file_text(text: &str) -> Result<Self, KeyError> {
        let (vendor, pem) = split_key_file(text, "public", "PUBLIC KEY")?;
        let key = VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::Malformed {
            kind: "public",
            reason: e.to_string(),
        })?;
        Ok(VendorPublicKey { vendor, key })
    }

    /// Writes the key file (mode 0644 before the umask).
    pub fn write_to(&self, path: &Path, mode: WriteMode) -> Result<(), KeyError> {
        write_key_file(path, &self.to_file_text(), 0o644, mode)
    }

    /// Reads a key file written by [`Self::write_to`].
    pub fn read_from(path: &Path) -> Result<Self, KeyError> {
        Self::from_file_text(&read_key_file(path)?)
    }
}

/// Creates `out_dir` if needed and writes a new key pair for `vendor` to
/// `<out_dir>/<vendor>.key` (secret, mode 0600) and `<out_dir>/<vendor>.pub`. Refuses to
/// replace either file. Returns the secret and public paths.
pub fn keygen(vendor: &str, out_dir: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    let key = VendorSigningKey::generate(vendor)?;
    fs::create_dir_all(out_dir).map_err(|source| KeyError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let secret = out_dir.join(format!("{vendor}.key"));
    let public = out_dir.join(format!("{vendor}.pub"));
    // Check both before writing either, so a refusal leaves nothing half-written.
    for path in [&secret, &public] {
        if path.exists() {
            return Err(KeyError::Exists(path.clone()));
        }
    }
    key.write_to(&secret, WriteMode::CreateNew)?;
    key.public_key().write_to(&public, WriteMode::CreateNew)?;
    Ok((secret, public))
}

/// Splits a key file into the vendor named in its comment header and its PEM block,
/// checking the PEM label so that swapped files get a clear message.
fn split_key_file<'a>(
    text: &'a str,
    expected: &'static str,
    label: &str,
) -> Result<(String, &'a str), KeyError> {
    let begin = text.find("-----BEGIN ").ok_or(KeyError::Malformed {
        kind: expected,
        reason: "no PEM block (-----BEGIN ...) found".to_string(),
    })?;
    let (header, pem) = text.split_at(begin);
    if !pem.starts_with(&format!("-----BEGIN {label}-----")) {
        let found = if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
            "secret"
        } else if pem.starts_with("-----BEGIN PUBLIC KEY-----") {
            "public"
        } else {
            "unrecognised"
        };
        return Err(KeyError::WrongKind { expected, found });
    }
    let vendor = header
        .lines()
        .find_map(|line| line.trim().strip_prefix(VENDOR_PREFIX))
        .map(str::trim)
        .ok_or(KeyError::MissingVendor)?;
    check_vendor(vendor)?;
    Ok((vendor.to_string(), pem.trim_end()))
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    crate::input::read_text_file(path, crate::input::MAX_KEY_FILE).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_key_file(path: &Path, text: &str, perm: u32, mode: WriteMode) -> Result<(), KeyError> {
    let io_error = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if mode == WriteMode::Overwrite {
        // The permission bits of `OpenOptions::mode` only apply to a new file, so an old
        // world-readable file is removed rather than truncated and reused.
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(perm)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
            _ => io_error(e),
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_text_roundtrip() {
        let key = VendorSigningKey::from_seed("acme", [9; 32]).unwrap();
        let text = key.to_file_text();
        assert!(text.starts_with(
            "# usher vendor secret key\n# vendor: acme\n-----BEGIN PRIVATE KEY-----\n"
        ));
        let back = VendorSigningKey::from_file_text(&text).unwrap();
        assert_eq!(back.vendor(), "acme");
        assert_eq!(back.signing_key().to_bytes(), [9; 32]);

        let public = key.public_key();
        let text = public.to_file_text();
        assert!(text.starts_with(
            "# usher vendor public key\n# vendor: acme\n-----BEGIN PUBLIC KEY-----\n"
        ));
        assert_eq!(VendorPublicKey::from_file_text(&text).unwrap(), public);
    }

    #[test]
    fn swapped_and_damaged_files() {
        let key = VendorSigningKey::from_seed("acme", [1; 32]).unwrap();
        let public = key.public_key().to_file_text();
        assert!(matches!(
            VendorSigningKey::from_file_text(&public),
            Err(KeyError::WrongKind {
                expected: "secret",
                found: "public"
            })
        ));
        assert!(matches!(
            VendorPublicKey::from_file_text(&key.to_file_text()),
            Err(KeyError::WrongKind {
                expected: "public",
                found: "secret"
            })
        ));
        let nameless = public.replace("# vendor: acme\n", "");
        assert!(matches!(
            VendorPublicKey::from_file_text(&nameless),
            Err(KeyError::MissingVendor)
        ));
        let damaged = public.replacen("MCow", "MCox", 1);
        assert!(matches!(
            VendorPublicKey::from_file_text(&damaged),
            Err(KeyError::Malformed { .. })
        ));
        assert!(matches!(
            VendorSigningKey::from_seed("a b", [0; 32]),
            Err(KeyError::InvalidVendor(_))
        ));
    }

    #[test]
    fn fingerprint_shape() {
        let fp = VendorSigningKey::from_seed("acme", [2; 32])
            .unwrap()
            .public_key()
            .fingerprint();
        assert_eq!(fp.len(), 8 * 4 + 7);
        assert!(
            fp.split('-')
                .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = VendorSigningKey::from_seed("acme", [0xab; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("acme") && !shown.contains("171") && !shown.contains("ab, ab"));
    }
}
