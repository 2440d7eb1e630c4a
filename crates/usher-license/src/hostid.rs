//! This machine's host ids, and matching them against an entitlement's `HOSTID=`.
//!
//! Ids are read from Linux's `/proc`, `/sys` and `/etc`; on a system without them the
//! list is simply shorter. Ids have the form `TYPE=value`: `HOSTNAME=`, `ETHER=` (a MAC
//! address) and `MACHINE_ID=`.

use std::fs;
use std::path::Path;

use crate::HostId;

/// The host ids of this machine, in a stable order: `HOSTNAME=<name>`, then
/// `ETHER=<mac>` for each non-loopback network interface with a non-zero address (twelve
/// lower-case hex digits, no separators, sorted), then `MACHINE_ID=<16 hex digits of a
/// salted SHA-256 of /etc/machine-id>`.
pub fn host_ids() -> Vec<String> {
    host_ids_under(Path::new("/"))
}

/// [`host_ids`] with every path taken relative to `root`, so tests can use a fake tree.
fn host_ids_under(root: &Path) -> Vec<String> {
    let read = |path: &str| fs::read_to_string(root.join(path)).ok();
    let mut ids = Vec::new();

    let hostname = read("proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            read("etc/hostname")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        });
    if let Some(name) = hostname {
        ids.push(format!("HOSTNAME={name}"));
    }

    let mut macs: Vec<String> = fs::read_dir(root.join("sys/class/net"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name() != "lo")
        .filter_map(|entry| fs::read_to_string(entry.path().join("address")).ok())
        .filter_map(|address| mac_hex(address.trim()))
        .collect();
    macs.sort();
    macs.dedup();
    ids.extend(macs.into_iter().map(|mac| format!("ETHER={mac}")));

    if let Some(id) = read("etc/machine-id") {
        let id = id.trim();
        if id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            ids.push(format!("MACHINE_ID={}", machine_id_hash(id)));
        }
    }
    ids
}

/// The machine id as published in host ids: the first 16 hex digits of a SHA-256 over a
/// usher-specific prefix and the id. systemd asks applications not to expose the raw
/// `/etc/machine-id` (it is meant to stay confidential), but a keyed hash of it is stable
/// for the machine and reveals nothing.
fn machine_id_hash(id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("usher-hostid\0{}", id.to_ascii_lowercase()));
    hex::encode(&digest[..8])
}

/// `aa:bb:cc:dd:ee:ff` as `aabbccddeeff`, or `None` for anything that is not a non-zero
/// six-byte address.
fn mac_hex(address: &str) -> Option<String> {
    let hex: String = address
        .chars()
        .filter(|&c| c != ':')
        .collect::<String>()
        .to_lowercase();
    let valid = hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    (valid && hex.bytes().any(|b| b != b'0')).then_some(hex)
}

/// The host id of a usher server: `USHER_ID=` and 40 hex digits of SHA-256 over its
/// identity public key (the key in its certificate and its signed statements). Binding a
/// license with `HOSTID=USHER_ID=...` binds it to whoever holds that key.
pub fn usher_id(public_key: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(public_key);
    format!("USHER_ID={}", hex::encode(&digest[..20]))
}

/// DER of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410) up to the key itself.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A server identity key as the DER `SubjectPublicKeyInfo` its TLS handshake presents (a
/// raw public key, RFC 7250).
pub fn ed25519_spki(public_key: &[u8; 32]) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(public_key);
    der
}

/// The Ed25519 key in a DER `SubjectPublicKeyInfo`, if that is what it holds.
pub fn ed25519_from_spki(der: &[u8]) -> Option<[u8; 32]> {
    der.strip_prefix(&ED25519_SPKI_PREFIX[..])?.try_into().ok()
}

/// Whether `hostid` accepts a machine with host ids `ids` (as from [`host_ids`]).
///
/// `ANY` always matches. Otherwise any one of the space-separated ids in `hostid` must
/// equal one of `ids`, compared case-insensitively; `ETHER=` values also match with or
/// without `:` or `-` separators. An id written without a `TYPE=` matches the value of an
/// id of any type.
pub fn matches_host(hostid: &HostId, ids: &[String]) -> bool {
    match hostid {
        HostId::Any => true,
        HostId::Id(wanted) => wanted
            .split_whitespace()
            .any(|want| ids.iter().any(|have| id_matches(want, have))),
    }
}

fn id_matches(want: &str, have: &str) -> bool {
    let (have_kind, have_value) = match have.split_once('=') {
        Some((kind, value)) => (Some(kind), value),
        None => (None, have),
    };
    let (want_kind, want_value) = match want.split_once('=') {
        Some((kind, value)) => (Some(kind), value),
        None => (None, want),
    };
    if let (Some(w), Some(h)) = (want_kind, have_kind)
        && !w.eq_ignore_ascii_case(h)
    {
        return false;
    }
    let is_ether = [want_kind, have_kind]
        .iter()
        .flatten()
        .any(|k| k.eq_ignore_ascii_case("ETHER"));
    if is_ether {
        let strip = |s: &str| {
            s.chars()
                .filter(|&c| c != ':' && c != '-')
                .collect::<String>()
        };
        strip(want_value).eq_ignore_ascii_case(&strip(have_value))
    } else {
        want_value.eq_ignore_ascii_case(have_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "etc/hostname", "build-01\n");
        write(root, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
        write(root, "sys/class/net/eth1/address", "02:42:AC:11:00:02\n");
        write(root, "sys/class/net/eth0/address", "00:1a:2b:3c:4d:5e\n");
        write(root, "sys/class/net/dummy/address", "00:00:00:00:00:00\n");
        write(
            root,
            "sys/class/net/ib0/address",
            "80:00:02:08:fe:80:00:00:00:00\n",
        );
        write(root, "etc/machine-id", "0123456789ABCDEF0123456789abcdef\n");
        assert_eq!(
            host_ids_under(root),
            [
                "HOSTNAME=build-01",
                "ETHER=001a2b3c4d5e",
                "ETHER=0242ac110002",
                format!(
                    "MACHINE_ID={}",
                    machine_id_hash("0123456789abcdef0123456789abcdef")
                )
                .as_str()
            ]
        );
    }

    #[test]
    fn empty_tree_gives_no_ids() {
        let dir = tempfile::tempdir().unwrap();
        assert!(host_ids_under(dir.path()).is_empty());
    }

    #[test]
    fn this_machine_does_not_panic() {
        let ids = host_ids();
        assert!(ids.iter().all(|id| id.contains('=')));
    }

    #[test]
    fn matching() {
        let ids = vec![
            "HOSTNAME=Build-01".to_string(),
            "ETHER=001a2b3c4d5e".to_string(),
        ];
        let id = |s: &str| HostId::Id(s.to_string());
        assert!(matches_host(&HostId::Any, &[]));
        assert!(matches_host(&id("hostname=build-01"), &ids));
        assert!(matches_host(&id("ETHER=00:1A:2B:3C:4D:5E"), &ids));
        assert!(matches_host(&id("ETHER=00-1a-2b-3c-4d-5e"), &ids));
        assert!(matches_host(
            &id("ETHER=ffffffffffff HOSTNAME=build-01"),
            &ids
        ));
        assert!(matches_host(&id("001a2b3c4d5e"), &ids));
        assert!(!matches_host(&id("HOSTNAME=build01"), &ids));
        assert!(!matches_host(&id("ETHER=build-01"), &ids));
        assert!(!matches_host(&id("MACHINE_ID=001a2b3c4d5e"), &ids));
        assert!(!matches_host(&id("HOSTNAME=build-01"), &[]));
    }
}
