//! Mutual TLS 1.3 between members, each authenticated by its pinned identity key.
//!
//! Every member presents its Ed25519 identity key (the key behind its `USHER_ID=`) as a
//! raw public key (RFC 7250), as usherd does to its clients; there is no certificate
//! authority. The listening side accepts a peer only if its key is pinned for some
//! member of the cluster configuration; the dialling side accepts only the key pinned
//! for the member it dials. Either way the handshake signature is verified with that
//! key, so presenting a pinned public key without its private half fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use rustls::client::AlwaysResolvesClientRawPublicKeys;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::AlwaysResolvesServerRawPublicKeys;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::NodeId;

/// A member's TLS configuration: its own identity key and the public identity key pinned
/// for every member of the cluster (itself included).
#[derive(Clone)]
pub struct PeerTls {
    /// This member's identity key.
    pub identity: SigningKey,
    /// Every member's public identity key, by member id.
    pub members: BTreeMap<NodeId, [u8; 32]>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is never printed.
        f.debug_struct("PeerTls")
            .field(
                "identity",
                &usher_license::usher_id(&self.identity.verifying_key().to_bytes()),
            )
            .field("members", &self.members.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The TLS side of a member's peer transport, built once from a [`PeerTls`].
#[derive(Clone)]
pub(crate) struct PeerTlsConfig {
    /// Accepts connections from any pinned member.
    pub(crate) acceptor: TlsAcceptor,
    /// Per member, a connector that accepts only that member's key.
    connectors: Arc<BTreeMap<NodeId, TlsConnector>>,
    /// When a refusal was last logged.
    refusals: Arc<RefusalLog>,
}

impl std::fmt::Debug for PeerTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTlsConfig")
            .field("members", &self.connectors.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PeerTlsConfig {
    /// Builds the acceptor and the per-member connectors of `tls`.
    pub(crate) fn new(tls: &PeerTls) -> Result<PeerTlsConfig, Error> {
        let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
        let pkcs8 = tls
            .identity
            .to_pkcs8_der()
            .map_err(|e| Error::General(format!("encoding the identity key: {e}")))?;
        let key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                pkcs8.as_bytes().to_vec(),
            )))?;
        let spki = usher_license::ed25519_spki(&tls.identity.verifying_key().to_bytes());
        let certified = Arc::new(CertifiedKey::new(vec![CertificateDer::from(spki)], key));
        let algorithms = provider.signature_verification_algorithms;

        let verifier = PinnedKeys {
            pinned: tls.members.values().copied().collect(),
            algorithms,
        };
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(
                certified.clone(),
            )));

        let mut connectors = BTreeMap::new();
        for (&id, key) in &tls.members {
            let verifier = PinnedKeys {
                pinned: vec![*key],
                algorithms,
            };
            let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(
                    certified.clone(),
                )));
            connectors.insert(id, TlsConnector::from(Arc::new(client)));
        }
        Ok(PeerTlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connectors: Arc::new(connectors),
            refusals: Arc::default(),
        })
    }

    /// The connector for member `id`, if it is pinned.
    pub(crate) fn connector(&self, id: NodeId) -> Option<&TlsConnector> {
        self.connectors.get(&id)
    }

    /// Logs (at most once a minute, with a count of those not logged) that a peer was
    /// refused.
    pub(crate) fn refused(&self, peer: &dyn std::fmt::Display, why: &dyn std::fmt::Display) {
        self.refusals
            .refused(peer, why, crate::clock::system_clock_ms());
    }
}

/// The name a connector sends as SNI: the key is checked, never the name.
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from("usher-peer").expect("a valid DNS name")
}

/// Accepts a raw public key that is an Ed25519 key among `pinned`, and checks the
/// handshake signature with it. Serves both as the client's verifier of the server it
/// dials (one key pinned) and as the server's verifier of its clients (every member's).
#[derive(Debug)]
struct PinnedKeys {
    pinned: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedKeys {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let key = usher_license::ed25519_from_spki(end_entity)
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.pinned.contains(&key) {
            Ok(())
        } else {
            Err(Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(NotPinned(usher_license::usher_id(&key)))),
            )))
        }
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.algorithms,
        )
    }
}

/// A peer key that is not pinned for any (or the expected) member.
#[derive(Debug)]
struct NotPinned(String);

impl std::fmt::Display for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the peer is {}, which is not a pinned member", self.0)
    }
}

impl std::error::Error for NotPinned {}

impl ServerCertVerifier for PinnedKeys {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Only TLS 1.3 is offered.
        Err(Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for PinnedKeys {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Only TLS 1.3 is offered.
        Err(Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Rate-limits the warnings about refused peers: one a minute, with how many were not
/// logged since.
#[derive(Debug, Default)]
struct RefusalLog {
    last_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl RefusalLog {
    fn refused(&self, peer: &dyn std::fmt::Display, why: &dyn std::fmt::Display, now_ms: u64) {
        const EVERY_MS: u64 = 60 * 1000;
        let last = self.last_ms.load(Ordering::Relaxed);
        if (last == 0 || now_ms.saturating_sub(last) >= EVERY_MS)
            && self
                .last_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                %peer,
                %why,
                unlogged,
                "refused a peer connection (not a pinned member over TLS 1.3); further \
                 refusals are not logged for a minute"
            );
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }
}
