//! TLS for the client protocol.
//!
//! The server authenticates with its identity key (the key behind `usher hostid`), which
//! the TLS 1.3 handshake presents as a raw public key (RFC 7250) rather than in an X.509
//! certificate: there is no certificate authority to trust, a client checks the key
//! itself against the `USHER_ID=` it pins or the vendor-signed license binds. The client
//! protocol runs inside the TLS stream unchanged.
//!
//! A server may also accept plaintext connections, but only when its configuration says
//! `insecure_plaintext`; it tells them apart by their first byte (a TLS record starts
//! with `0x16`, a usher frame's length prefix with `0x00`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::pkcs8::EncodePrivateKey;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::AlwaysResolvesServerRawPublicKeys;
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::identity::Identity;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// The acceptor for TLS connections authenticated by `identity`.
pub fn acceptor(identity: &Identity) -> Result<TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pkcs8 = identity
        .signing_key()
        .to_pkcs8_der()
        .map_err(|e| rustls::Error::General(format!("encoding the identity key: {e}")))?;
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            pkcs8.as_bytes().to_vec(),
        )))?;
    let spki = usher_license::ed25519_spki(&identity.public_key());
    let certified = CertifiedKey::new(vec![CertificateDer::from(spki)], key);
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(Arc::new(
            certified,
        ))));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client connection, as it arrived.
pub enum Accepted {
    /// Over TLS, handshake done.
    Tls(Box<TlsStream<TcpStream>>),
    /// In plaintext (only when the server allows it).
    Plain(TcpStream),
}

/// Why a connection was dropped before the client protocol began.
#[derive(Debug)]
pub enum Refused {
    /// Plaintext on a server that requires TLS.
    Plaintext,
    /// The TLS handshake failed (or the peer left).
    Handshake(std::io::Error),
    /// Plaintext whose first frame cannot begin a usher handshake (see [`judge`]).
    NotHello(usher_proto::NotHello),
}

impl Refused {
    /// Counts and logs (rate-limited) this refusal of `peer`.
    pub fn count(&self, metrics: &crate::metrics::Metrics, peer: &dyn std::fmt::Display) {
        use crate::metrics::RejectReason;
        match self {
            Refused::Plaintext => metrics.connection_rejected(
                RejectReason::Plaintext,
                peer,
                "plaintext on a server that requires TLS (told nothing)",
            ),
            Refused::Handshake(e) => {
                let detail = format!("TLS handshake failed: {e}");
                metrics.connection_rejected(RejectReason::Handshake, peer, &detail);
            }
            // Counted as the handshake counts a bad first frame.
            Refused::NotHello(why) => {
                if matches!(why, usher_proto::NotHello::Frame(_)) {
                    metrics.frame_rejected();
                }
                let detail = format!("handshake failed: {why} (in its first bytes; told nothing)");
                metrics.connection_rejected(RejectReason::Handshake, peer, &detail);
            }
        }
    }
}

/// Reads how the peer begins and completes the TLS handshake if it is one. `plaintext`
/// says whether a connection that is not TLS may go on unencrypted.
pub async fn accept(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    plaintext: bool,
) -> Result<Accepted, Refused> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await.map_err(Refused::Handshake)?;
    if n == 1 && first[0] == TLS_HANDSHAKE {
        let tls = acceptor.accept(stream).await.map_err(Refused::Handshake)?;
        return Ok(Accepted::Tls(Box::new(tls)));
    }
    if plaintext && n == 1 {
        return Ok(Accepted::Plain(stream));
    }
    if n == 0 {
        return Err(Refused::Handshake(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Err(Refused::Plaintext)
}

/// The most of what a new connection already sent that [`judge`] and [`opening`] look
/// at: a Hello with short names fits; a longer one is left to the handshake.
const JUDGED_BYTES: usize = 2048;

/// What the bytes a new connection has sent so far say about it.
enum Verdict {
    /// Refused: [`accept`] or the handshake would refuse it anyway.
    Refuse(Refused),
    /// Nothing yet, or a beginning that is not yet a whole TLS record or frame.
    Wait,
    /// A whole first TLS record, a whole first frame that may be a Hello, or
    /// [`JUDGED_BYTES`] of either.
    Go,
}

fn verdict(first: &[u8], plaintext: bool, max_frame: usize) -> Verdict {
    // A whole first record or frame: `header` bytes and the length they announce.
    let whole = |header: usize, len: Option<usize>| match len {
        _ if first.len() >= JUDGED_BYTES => Verdict::Go,
        Some(len) if first.len() >= header + len => Verdict::Go,
        _ => Verdict::Wait,
    };
    match first.first() {
        None => Verdict::Refuse(Refused::Handshake(std::io::ErrorKind::UnexpectedEof.into())),
        Some(&TLS_HANDSHAKE) => {
            let len = first
                .get(3..5)
                .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])));
            whole(5, len)
        }
        Some(_) if !plaintext => Verdict::Refuse(Refused::Plaintext),
        Some(_) => match usher_proto::check_opening(first, max_frame) {
            Err(why) => Verdict::Refuse(Refused::NotHello(why)),
            Ok(()) => {
                let len = first
                    .get(..4)
                    .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
                whole(4, len)
            }
        },
    }
}

/// Peeks at what `stream`'s peer has sent so far, without waiting (`MSG_PEEK |
/// MSG_DONTWAIT`, which leaves the bytes to be read); `None` when nothing is there yet.
fn peek(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    use rustix::net::RecvFlags;
    match rustix::net::recv(stream, buf, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((n, _)) => Ok(Some(n)),
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether `stream`'s peer has begun to speak the client protocol in plaintext (it sent
/// something, and not the beginning of a TLS handshake), for a peer to be told why it is
/// dropped.
pub fn began_in_plaintext(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(peek(stream, &mut first), Ok(Some(1))) && first[0] != TLS_HANDSHAKE
}

/// Judges a new connection by what its peer has already sent, without waiting for more
/// (one `recv` with `MSG_PEEK | MSG_DONTWAIT`): `Err` for a peer that [`accept`] or the
/// handshake would refuse anyway, told nothing (one that already left, plaintext on a
/// server that requires TLS, or, where plaintext is allowed, a first frame over
/// `max_frame` bytes, undecodable, or a Hello without the usher magic); `Ok` for the rest:
/// TLS, a beginning that may still be a Hello, or nothing sent yet.
pub fn judge(stream: &TcpStream, plaintext: bool, max_frame: usize) -> Result<(), Refused> {
    let mut first = [0u8; JUDGED_BYTES];
    match peek(stream, &mut first).map_err(Refused::Handshake)? {
        None => Ok(()),
        Some(n) => match verdict(&first[..n], plaintext, max_frame) {
            Verdict::Refuse(why) => Err(why),
            Verdict::Wait | Verdict::Go => Ok(()),
        },
    }
}

/// Waits until the peer has sent its whole opening (the first TLS record, or where
/// plaintext is allowed the first frame, or [`JUDGED_BYTES`] of either) and judges it as
/// [`judge`] does. The bytes stay unread, for [`accept`] and the handshake. A connection
/// that says nothing, or trickles its opening, waits here, costing nothing but a wake-up
/// per segment, until its caller's deadline.
pub async fn opening(stream: &TcpStream, plaintext: bool, max_frame: usize) -> Result<(), Refused> {
    use tokio::io::Interest;
    let mut first = [0u8; JUDGED_BYTES];
    loop {
        let ready = stream
            .ready(Interest::READABLE)
            .await
            .map_err(Refused::Handshake)?;
        // Inside `try_io`, so that a beginning that is not yet whole clears the readiness
        // (as a `WouldBlock` does) and the next `readable` waits for the next segment.
        let judged = stream.try_io(Interest::READABLE, || match peek(stream, &mut first)? {
            None => Err(std::io::ErrorKind::WouldBlock.into()),
            Some(n) => match verdict(&first[..n], plaintext, max_frame) {
                Verdict::Wait => Err(std::io::ErrorKind::WouldBlock.into()),
                Verdict::Refuse(why) => Ok(Err(why)),
                Verdict::Go => Ok(Ok(())),
            },
        });
        match judged {
            Ok(judged) => return judged,
            // A peer that stopped sending before its opening was whole never completes
            // it (and the end it sent keeps the socket readable).
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && ready.is_read_closed() => {
                return Err(Refused::Handshake(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(Refused::Handshake(e)),
        }
    }
}

/// Logs a warning when plaintext is used, at most once per `every_ms` milliseconds.
#[derive(Debug, Default)]
pub struct PlaintextWarning {
    last_ms: AtomicU64,
}

impl PlaintextWarning {
    /// Warns about a plaintext connection from `peer`, unless one was reported lately.
    pub fn used(&self, peer: &str, now_ms: u64) {
        const EVERY_MS: u64 = 10 * 60 * 1000;
        let last = self.last_ms.load(Ordering::Relaxed);
        if (last == 0 || now_ms.saturating_sub(last) >= EVERY_MS)
            && self
                .last_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                %peer,
                "a client connected in plaintext (insecure_plaintext is on): its traffic \
                 can be read and changed on the network; move such clients to TLS and turn \
                 insecure_plaintext off (further plaintext connections are not reported \
                 for 10 minutes)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(first: &[u8], plaintext: bool) -> &'static str {
        match verdict(first, plaintext, 1024) {
            Verdict::Refuse(_) => "refuse",
            Verdict::Wait => "wait",
            Verdict::Go => "go",
        }
    }

    #[test]
    fn a_tls_opening_goes_on_once_its_first_record_is_whole() {
        let mut record = vec![TLS_HANDSHAKE, 3, 1, 0, 4, 1, 2, 3];
        for plaintext in [true, false] {
            for end in 1..record.len() {
                assert_eq!(go(&record[..end], plaintext), "wait", "prefix of {end}");
            }
            record.push(4);
            assert_eq!(go(&record, plaintext), "go");
            record.pop();
        }
        // A record longer than what is judged goes on at JUDGED_BYTES.
        let mut long = vec![TLS_HANDSHAKE, 3, 1, 0x40, 0];
        long.resize(JUDGED_BYTES - 1, 0);
        assert_eq!(go(&long, false), "wait");
        long.push(0);
        assert_eq!(go(&long, false), "go");
    }

    #[test]
    fn a_plaintext_opening_goes_on_once_its_first_frame_is_whole() {
        let frame = usher_proto::encode_frame(&usher_proto::Request {
            id: 1,
            kind: Some(usher_proto::request::Kind::Hello(usher_proto::Hello {
                magic: usher_proto::MAGIC.into(),
                ..Default::default()
            })),
        });
        for end in 1..frame.len() {
            assert_eq!(go(&frame[..end], true), "wait", "prefix of {end}");
        }
        assert_eq!(go(&frame, true), "go");
        assert_eq!(
            go(&frame, false),
            "refuse",
            "plaintext where TLS is required"
        );
        assert_eq!(
            go(&u32::MAX.to_be_bytes(), true),
            "refuse",
            "over the frame limit"
        );
        assert_eq!(go(&[], true), "refuse", "the peer left");
    }
}
