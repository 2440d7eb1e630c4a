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

/// The most of what a new connection already sent that [`judge`] looks at: a Hello with
/// short names fits; a longer one is left to the handshake.
const JUDGED_BYTES: usize = 2048;

/// Judges a new connection by what its peer has already sent, without waiting for more
/// (one `recv` with `MSG_PEEK | MSG_DONTWAIT`, which leaves the bytes to be read): `Err`
/// for a peer that [`accept`] or the handshake would refuse anyway, told nothing (one
/// that already left, plaintext on a server that requires TLS, or, where plaintext is
/// allowed, a first frame over `max_frame` bytes, undecodable, or a Hello without the
/// usher magic); `Ok` for the rest, to go through [`accept`]: TLS, a beginning that may
/// still be a Hello, or nothing sent yet.
pub fn judge(stream: &TcpStream, plaintext: bool, max_frame: usize) -> Result<(), Refused> {
    use rustix::net::RecvFlags;
    let mut first = [0u8; JUDGED_BYTES];
    let n = match rustix::net::recv(stream, &mut first, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((n, _)) => n,
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(()),
        Err(e) => return Err(Refused::Handshake(e.into())),
    };
    match first[..n].first() {
        None => Err(Refused::Handshake(std::io::ErrorKind::UnexpectedEof.into())),
        Some(&TLS_HANDSHAKE) => Ok(()),
        Some(_) if !plaintext => Err(Refused::Plaintext),
        Some(_) => usher_proto::check_opening(&first[..n], max_frame).map_err(Refused::NotHello),
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
