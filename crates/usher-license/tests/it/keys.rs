//! Key files on disk.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use usher_license::{KeyError, VendorPublicKey, VendorSigningKey, WriteMode, keygen, sign_text};

use crate::util::{SAMPLE, parse_ok, today};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_a_usable_pair_with_a_private_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys/acme");
    let (secret, public) = keygen("acme", &out).unwrap();
    assert_eq!(secret, out.join("acme.key"));
    assert_eq!(public, out.join("acme.pub"));
    assert_eq!(mode(&secret), 0o600);

    let key = VendorSigningKey::read_from(&secret).unwrap();
    let public = VendorPublicKey::read_from(&public).unwrap();
    assert_eq!(key.vendor(), "acme");
    assert_eq!(key.public_key(), public);

    let text = sign_text("t", SAMPLE, &key).unwrap().text;
    let results = usher_license::check(&parse_ok(&text), &[public], today());
    assert!(
        results.iter().all(|c| c.status.is_valid_now()),
        "{results:?}"
    );
}

#[test]
fn keygen_never_replaces_keys() {
    let dir = tempfile::tempdir().unwrap();
    keygen("acme", dir.path()).unwrap();
    let before = fs::read_to_string(dir.path().join("acme.key")).unwrap();
    assert!(matches!(
        keygen("acme", dir.path()),
        Err(KeyError::Exists(_))
    ));
    assert_eq!(
        fs::read_to_string(dir.path().join("acme.key")).unwrap(),
        before
    );

    // Only the public half left behind is still enough to refuse.
    fs::remove_file(dir.path().join("acme.key")).unwrap();
    assert!(matches!(
        keygen("acme", dir.path()),
        Err(KeyError::Exists(_))
    ));
    assert!(!dir.path().join("acme.key").exists());
}

#[test]
fn overwriting_makes_the_secret_private_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.key");
    fs::write(&path, "old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let key = VendorSigningKey::generate("acme").unwrap();
    assert!(matches!(
        key.write_to(&path, WriteMode::CreateNew),
        Err(KeyError::Exists(_))
    ));
    key.write_to(&path, WriteMode::Overwrite).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        VendorSigningKey::read_from(&path).unwrap().public_key(),
        key.public_key()
    );
}

#[test]
fn generated_keys_differ() {
    let a = VendorSigningKey::generate("acme").unwrap().public_key();
    let b = VendorSigningKey::generate("acme").unwrap().public_key();
    assert_ne!(a, b);
    assert_ne!(a.fingerprint(), b.fingerprint());
}

/// A key made by `openssl genpkey -algorithm ed25519` and its `openssl pkey -pubout`.
#[test]
fn reads_openssl_keys() {
    let secret = "# usher vendor secret key\n# vendor: acme\n\
        -----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIANH+36vaEALwHjotmrr+5lyWyFOQiw+0a8u9jhihv+F\n\
        -----END PRIVATE KEY-----\n";
    let public = "# vendor: acme\n\
        -----BEGIN PUBLIC KEY-----\n\
        MCowBQYDK2VwAyEAxW+gc3y5rAfktD6lZEpY804hpYq5qpA3pBLAq++TlHo=\n\
        -----END PUBLIC KEY-----\n";
    let key = VendorSigningKey::from_file_text(secret).unwrap();
    let public = VendorPublicKey::from_file_text(public).unwrap();
    assert_eq!(key.public_key(), public);
    // What we write is what openssl writes (PKCS#8 v1, no public half).
    assert_eq!(key.to_file_text(), secret);
}

#[test]
fn missing_file_names_the_path() {
    let err =
        VendorPublicKey::read_from(std::path::Path::new("/nonexistent/acme.pub")).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/acme.pub: "),
        "{err}"
    );
}
