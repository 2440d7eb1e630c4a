//! The server's identity: an Ed25519 key made at first start and kept in the data
//! directory, and the host id derived from it.
//!
//! The id, `USHER_ID=` and 40 hex digits of SHA-256 over the public key, names this server
//! (this data directory) rather than the machine: a vendor who binds a license to it with
//! `HOSTID=USHER_ID=...` binds it to a key that cannot be copied by cloning a VM's MAC
//! address or editing `/etc/machine-id`. `usher hostid --data-dir DIR` prints it.
//!
//! Files: `identity.key` (PKCS#8 PEM, mode 0600, never leaves the server) and
//! `identity.id` (the id, one line), both mode 0600 in the private data directory.

use std::fs;
use std::io;
use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};

/// The secret key file in the data directory.
pub const IDENTITY_KEY: &str = "identity.key";
/// The file holding the server's host id, for `usher hostid --data-dir`.
pub const IDENTITY_ID: &str = "identity.id";

/// The server's identity key.
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Identity")
            .field("id", &self.host_id())
            .finish()
    }
}

impl Identity {
    /// Reads the identity key from `data_dir`, or makes one (mode 0600) if there is none.
    /// Also (re)writes the id file beside it.
    pub fn load_or_create(data_dir: &Path) -> io::Result<Identity> {
        let path = data_dir.join(IDENTITY_KEY);
        let key = match crate::data_dir::read(&path)? {
            Some(pem) => {
                SigningKey::from_pkcs8_pem(&String::from_utf8_lossy(&pem)).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not an Ed25519 PKCS#8 key: {e}", path.display()),
                    )
                })?
            }
            None => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(io::Error::other)?;
                let key = SigningKey::from_bytes(&seed);
                let pem = KeypairBytes {
                    secret_key: key.to_bytes(),
                    public_key: None,
                }
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| io::Error::other(e.to_string()))?;
                crate::data_dir::create_new(&path, pem.as_bytes())?;
                key
            }
        };
        let identity = Identity { key };
        crate::data_dir::write(
            &data_dir.join(IDENTITY_ID),
            format!("{}\n", identity.host_id()).as_bytes(),
        )?;
        Ok(identity)
    }

    /// The signing key, for statements the server signs (borrow tokens).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key, as published in signed statements.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// `USHER_ID=` and 40 hex digits of SHA-256 over the public key.
    pub fn host_id(&self) -> String {
        usher_license::usher_id(self.key.verifying_key().as_bytes())
    }
}

/// The host id of the server whose data directory is `data_dir`, if it has started once.
pub fn host_id_in(data_dir: &Path) -> Option<String> {
    let text = fs::read_to_string(data_dir.join(IDENTITY_ID)).ok()?;
    let id = text.trim();
    id.starts_with("USHER_ID=").then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_identity_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(IDENTITY_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.host_id(), again.host_id());
        assert_eq!(host_id_in(dir.path()), Some(first.host_id()));
        assert_eq!(first.host_id().len(), "USHER_ID=".len() + 40);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            Identity::load_or_create(other.path()).unwrap().host_id(),
            first.host_id()
        );
        assert!(!format!("{first:?}").contains("PRIVATE"), "{first:?}");
    }
}
