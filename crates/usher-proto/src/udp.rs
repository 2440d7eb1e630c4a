//! Datagrams on the UDP port (1648/udp, beside TCP): session keepalives and discovery.
//!
//! UDP carries only what must stay cheap at a million sessions: a fixed-size keepalive
//! that keeps a session's seats while its TCP connection is closed (the client *detached*
//! over TCP and got a per-session key for this), the server's acknowledgement, and a
//! discovery request with the servers' answers. The layout is fixed and binary, not
//! Protocol Buffers, so that a forged or garbage datagram is refused after a length check,
//! a map lookup and one HMAC, and never allocates.
//!
//! Every datagram starts with [`UDP_MAGIC`] and a kind byte. All integers are big-endian.
//!
//! | kind | layout | size |
//! |---|---|---|
//! | keepalive (1) | magic, kind, session id u64, sequence u64, ms since the key was issued u64, tag (16) | 45 |
//! | ack (2) | magic, kind, session id u64, sequence u64, flags u8, tag (16) | 38 |
//! | discover (3) | magic, kind, nonce u64, zero padding | 256 |
//! | announce (4) | magic, kind, nonce u64, TCP port u16, flags u8, vendor count u8, vendors (length u8 + UTF-8) | ≤ 256 |
//!
//! The tag is HMAC-SHA-256 with the session's keepalive key over every byte before it,
//! truncated to 16 bytes. An ack is smaller than the keepalive it answers and a discovery
//! answer is no larger than the (padded) request, so the port cannot amplify a spoofed
//! flood.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// First bytes of every usher datagram.
pub const UDP_MAGIC: [u8; 4] = *b"USHU";

/// Length of a keepalive datagram.
pub const KEEPALIVE_LEN: usize = 45;
/// Length of an acknowledgement datagram.
pub const ACK_LEN: usize = 38;
/// Length of a discovery request (padded, so no answer is larger than its request).
pub const DISCOVER_LEN: usize = 256;
/// Largest discovery answer.
pub const MAX_ANNOUNCE_LEN: usize = DISCOVER_LEN;
/// Length of a keepalive key.
pub const KEEPALIVE_KEY_LEN: usize = 32;

const TAG_LEN: usize = 16;
const KIND_KEEPALIVE: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_DISCOVER: u8 = 3;
const KIND_ANNOUNCE: u8 = 4;

/// Ack flag: something happened to the session that a keepalive cannot carry (a lease
/// was taken away, a queued checkout was decided): come back over TCP and resume.
pub const ACK_CALL_BACK: u8 = 1;

/// Announce flag: the server requires TLS on its TCP port.
pub const ANNOUNCE_TLS: u8 = 1;
/// Announce flag: the vendor list was cut short to fit the datagram.
pub const ANNOUNCE_TRUNCATED: u8 = 2;

/// A session keepalive: "session `session` is alive", sent `elapsed_ms` after its key was
/// issued, numbered `seq` (strictly increasing per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// The session.
    pub session: u64,
    /// Sequence number; the server accepts each number once, in increasing order.
    pub seq: u64,
    /// Milliseconds between the key's issue and this keepalive, on the client's clock.
    /// The server refuses a keepalive whose figure is far from its own (a delayed replay).
    pub elapsed_ms: u64,
}

/// The server's answer to a keepalive it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The session.
    pub session: u64,
    /// The sequence number acknowledged.
    pub seq: u64,
    /// [`ACK_CALL_BACK`].
    pub flags: u8,
}

/// A server's answer to a discovery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The request's nonce, echoed.
    pub nonce: u64,
    /// The server's TCP port (its address is the datagram's source address).
    pub tcp_port: u16,
    /// [`ANNOUNCE_TLS`], [`ANNOUNCE_TRUNCATED`].
    pub flags: u8,
    /// Vendors whose licenses the server serves. No features, counts or versions.
    pub vendors: Vec<String>,
}

/// A datagram as the server receives it, unauthenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A keepalive; check its tag with [`verify_keepalive`].
    Keepalive(Keepalive, &'a [u8; KEEPALIVE_LEN]),
    /// A discovery request with its nonce.
    Discover(u64),
}

/// Why a datagram is not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Wrong length, magic or kind.
    #[error("not a usher datagram")]
    Garbage,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

fn mac(key: &[u8; KEEPALIVE_KEY_LEN]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn tag(key: &[u8; KEEPALIVE_KEY_LEN], body: &[u8]) -> [u8; TAG_LEN] {
    let mut m = mac(key);
    m.update(body);
    let full = m.finalize().into_bytes();
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&full[..TAG_LEN]);
    t
}

fn check(key: &[u8; KEEPALIVE_KEY_LEN], body: &[u8], tag: &[u8]) -> bool {
    let mut m = mac(key);
    m.update(body);
    m.verify_truncated_left(tag).is_ok()
}

/// Reads a datagram arriving at the server. Only the layout is checked here.
pub fn decode_inbound(b: &[u8]) -> Result<Inbound<'_>, DatagramError> {
    if b.len() < 5 || b[..4] != UDP_MAGIC {
        return Err(DatagramError::Garbage);
    }
    match b[4] {
        KIND_KEEPALIVE => {
            let whole: &[u8; KEEPALIVE_LEN] = b.try_into().map_err(|_| DatagramError::Garbage)?;
            Ok(Inbound::Keepalive(
                Keepalive {
                    session: u64_at(b, 5),
                    seq: u64_at(b, 13),
                    elapsed_ms: u64_at(b, 21),
                },
                whole,
            ))
        }
        // Shorter requests are refused: an answer must never be larger than its request.
        KIND_DISCOVER if b.len() == DISCOVER_LEN => Ok(Inbound::Discover(u64_at(b, 5))),
        _ => Err(DatagramError::Garbage),
    }
}

/// Encodes a keepalive signed with `key`.
pub fn encode_keepalive(k: &Keepalive, key: &[u8; KEEPALIVE_KEY_LEN]) -> [u8; KEEPALIVE_LEN] {
    let mut b = [0u8; KEEPALIVE_LEN];
    b[..4].copy_from_slice(&UDP_MAGIC);
    b[4] = KIND_KEEPALIVE;
    b[5..13].copy_from_slice(&k.session.to_be_bytes());
    b[13..21].copy_from_slice(&k.seq.to_be_bytes());
    b[21..29].copy_from_slice(&k.elapsed_ms.to_be_bytes());
    let t = tag(key, &b[..29]);
    b[29..].copy_from_slice(&t);
    b
}

/// Whether a keepalive's tag was made with `key`.
pub fn verify_keepalive(whole: &[u8; KEEPALIVE_LEN], key: &[u8; KEEPALIVE_KEY_LEN]) -> bool {
    check(key, &whole[..29], &whole[29..])
}

/// Encodes the acknowledgement of a keepalive, signed with the session's key.
pub fn encode_ack(a: &Ack, key: &[u8; KEEPALIVE_KEY_LEN]) -> [u8; ACK_LEN] {
    let mut b = [0u8; ACK_LEN];
    b[..4].copy_from_slice(&UDP_MAGIC);
    b[4] = KIND_ACK;
    b[5..13].copy_from_slice(&a.session.to_be_bytes());
    b[13..21].copy_from_slice(&a.seq.to_be_bytes());
    b[21] = a.flags;
    let t = tag(key, &b[..22]);
    b[22..].copy_from_slice(&t);
    b
}

/// Reads an acknowledgement, if `b` is one signed with `key`.
pub fn decode_ack(b: &[u8], key: &[u8; KEEPALIVE_KEY_LEN]) -> Option<Ack> {
    if b.len() != ACK_LEN || b[..4] != UDP_MAGIC || b[4] != KIND_ACK {
        return None;
    }
    check(key, &b[..22], &b[22..]).then(|| Ack {
        session: u64_at(b, 5),
        seq: u64_at(b, 13),
        flags: b[21],
    })
}

/// Encodes a discovery request.
pub fn encode_discover(nonce: u64) -> [u8; DISCOVER_LEN] {
    let mut b = [0u8; DISCOVER_LEN];
    b[..4].copy_from_slice(&UDP_MAGIC);
    b[4] = KIND_DISCOVER;
    b[5..13].copy_from_slice(&nonce.to_be_bytes());
    b
}

/// Encodes a discovery answer, at most [`MAX_ANNOUNCE_LEN`] bytes: vendors that do not
/// fit (or whose names are longer than 255 bytes) are left out and the
/// [`ANNOUNCE_TRUNCATED`] flag is set.
pub fn encode_announce(a: &Announce) -> Vec<u8> {
    let mut b = Vec::with_capacity(MAX_ANNOUNCE_LEN);
    b.extend_from_slice(&UDP_MAGIC);
    b.push(KIND_ANNOUNCE);
    b.extend_from_slice(&a.nonce.to_be_bytes());
    b.extend_from_slice(&a.tcp_port.to_be_bytes());
    let flags_at = b.len();
    b.push(a.flags);
    let count_at = b.len();
    b.push(0);
    let mut count = 0u8;
    for v in &a.vendors {
        let fits = v.len() <= 255 && b.len() + 1 + v.len() <= MAX_ANNOUNCE_LEN && count < 255;
        if !fits {
            b[flags_at] |= ANNOUNCE_TRUNCATED;
            continue;
        }
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
        count += 1;
    }
    b[count_at] = count;
    b
}

/// Reads a discovery answer.
pub fn decode_announce(b: &[u8]) -> Result<Announce, DatagramError> {
    const HEAD: usize = 4 + 1 + 8 + 2 + 1 + 1;
    if b.len() < HEAD || b.len() > MAX_ANNOUNCE_LEN || b[..4] != UDP_MAGIC || b[4] != KIND_ANNOUNCE
    {
        return Err(DatagramError::Garbage);
    }
    let nonce = u64_at(b, 5);
    let tcp_port = u16::from_be_bytes([b[13], b[14]]);
    let flags = b[15];
    let count = b[16];
    let mut vendors = Vec::with_capacity(count.into());
    let mut at = HEAD;
    for _ in 0..count {
        let len = usize::from(*b.get(at).ok_or(DatagramError::Garbage)?);
        let name = b.get(at + 1..at + 1 + len).ok_or(DatagramError::Garbage)?;
        vendors.push(
            std::str::from_utf8(name)
                .map_err(|_| DatagramError::Garbage)?
                .to_string(),
        );
        at += 1 + len;
    }
    if at != b.len() {
        return Err(DatagramError::Garbage);
    }
    Ok(Announce {
        nonce,
        tcp_port,
        flags,
        vendors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn a_keepalive_round_trips_and_verifies_only_with_its_key() {
        let k = Keepalive {
            session: 42,
            seq: 9,
            elapsed_ms: 30_000,
        };
        let b = encode_keepalive(&k, &KEY);
        let Ok(Inbound::Keepalive(read, whole)) = decode_inbound(&b) else {
            panic!("not a keepalive");
        };
        assert_eq!(read, k);
        assert!(verify_keepalive(whole, &KEY));
        assert!(!verify_keepalive(whole, &[8; 32]));
        for i in 0..KEEPALIVE_LEN {
            let mut bad = b;
            bad[i] ^= 1;
            let ok = match decode_inbound(&bad) {
                Ok(Inbound::Keepalive(_, whole)) => verify_keepalive(whole, &KEY),
                _ => false,
            };
            assert!(!ok, "flipping a bit of byte {i} went unnoticed");
        }
    }

    #[test]
    fn an_ack_is_smaller_than_its_keepalive_and_bound_to_the_key() {
        let a = Ack {
            session: 1,
            seq: 2,
            flags: ACK_CALL_BACK,
        };
        let b = encode_ack(&a, &KEY);
        assert!(b.len() < KEEPALIVE_LEN);
        assert_eq!(decode_ack(&b, &KEY), Some(a));
        assert_eq!(decode_ack(&b, &[1; 32]), None);
        // A keepalive is not an ack, even with the right key.
        let k = encode_keepalive(
            &Keepalive {
                session: 1,
                seq: 2,
                elapsed_ms: 0,
            },
            &KEY,
        );
        assert_eq!(decode_ack(&k, &KEY), None);
    }

    #[test]
    fn a_short_discovery_request_is_refused() {
        let b = encode_discover(5);
        assert_eq!(decode_inbound(&b), Ok(Inbound::Discover(5)));
        assert_eq!(decode_inbound(&b[..100]), Err(DatagramError::Garbage));
    }

    #[test]
    fn an_announce_fits_its_request_and_says_when_vendors_were_left_out() {
        let many: Vec<String> = (0..40).map(|i| format!("vendor{i:02}")).collect();
        let a = Announce {
            nonce: 3,
            tcp_port: 1648,
            flags: ANNOUNCE_TLS,
            vendors: many,
        };
        let b = encode_announce(&a);
        assert!(b.len() <= DISCOVER_LEN);
        let read = decode_announce(&b).unwrap();
        assert_eq!(read.flags, ANNOUNCE_TLS | ANNOUNCE_TRUNCATED);
        assert!(read.vendors.len() < 40 && !read.vendors.is_empty());
        assert_eq!(read.vendors[..], a.vendors[..read.vendors.len()]);

        let few = Announce {
            vendors: vec!["acme".into(), "bench".into()],
            flags: 0,
            ..a
        };
        assert_eq!(decode_announce(&encode_announce(&few)).unwrap(), few);
    }

    proptest! {
        #[test]
        fn no_datagram_panics_the_decoders(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_inbound(&b);
            let _ = decode_announce(&b);
            let _ = decode_ack(&b, &KEY);
        }
    }
}
