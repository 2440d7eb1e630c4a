//! TLS to the server.
//!
//! A usher server proves itself with its identity key, presented in the TLS 1.3 handshake
//! as a raw public key (RFC 7250) rather than in a certificate. There is no certificate
//! authority: the client computes the key's `USHER_ID=` and, when its configuration pins
//! server ids ([`crate::ClientConfig::server_ids`]), refuses any other. Without pins, a
//! client with a known-servers file ([`crate::ClientConfig::known_servers`]) trusts on
//! first use: it remembers the first id seen at each address and refuses another one there
//! later (see [`crate::known_servers`]). Either way, a client that trusts vendor keys also
//! checks that every grant's statement is signed by this very key and that the
//! vendor-signed license binds it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use tokio::net::TcpStream;
pub use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Accepts a server whose raw public key is an Ed25519 key with one of the pinned ids
/// (any id when none is pinned), and checks its handshake signature with that key.
#[derive(Debug)]
struct ServerIdentity {
    pinned: Vec<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let key = usher_license::ed25519_from_spki(end_entity)
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let id = usher_license::usher_id(&key);
        if self.pinned.is_empty() || self.pinned.iter().any(|p| p.eq_ignore_ascii_case(&id)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::General(format!(
                "the server is {id}, which is not among the pinned server ids ({})",
                self.pinned.join(", ")
            )))
        }
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
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// A connector for servers with one of the `pinned` ids (any when empty).
pub fn connector(pinned: &[String]) -> Result<TlsConnector, Error> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = ServerIdentity {
        pinned: pinned.to_vec(),
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Completes the TLS handshake on `stream` to `host`, returning the stream and the
/// server's identity public key.
pub async fn connect(
    connector: &TlsConnector,
    host: &str,
    stream: TcpStream,
) -> std::io::Result<(TlsStream<TcpStream>, [u8; 32])> {
    // The name is not checked (the key is); it only fills the SNI field.
    let name = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("usher").expect("a valid DNS name"));
    let tls = connector.connect(name, stream).await?;
    let key = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|spki| usher_license::ed25519_from_spki(spki))
        .ok_or_else(|| std::io::Error::other("the server presented no identity key"))?;
    Ok((tls, key))
}
