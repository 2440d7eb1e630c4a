//! The peer transport's authentication: a member whose key is not the one pinned for it
//! never joins, one that presents a pinned key without its private half is refused, and
//! plaintext on the peer port is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use usher_cluster::{Node, NodeId, PeerTls};
use usher_core::Entry;

use crate::cluster::{PATIENCE, TIMING};
use crate::util::{T0, identity, ledger, open, peer_tls};

/// Members 1, 2 and 3 on loopback, each started with the TLS configuration `tls` gives it.
async fn start(
    tls: impl Fn(NodeId) -> PeerTls,
) -> (
    BTreeMap<NodeId, Node>,
    BTreeMap<NodeId, SocketAddr>,
    Vec<TempDir>,
) {
    let mut nodes = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    let mut dirs = Vec::new();
    for id in 1..=3 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        addrs.insert(id, listener.local_addr().expect("bound address"));
        let dir = TempDir::new().expect("temporary directory");
        let node = Node::start(id, TIMING, dir.path(), ledger(), listener, tls(id))
            .await
            .expect("member starts");
        nodes.insert(id, node);
        dirs.push(dir);
    }
    nodes[&1].initialize(&addrs).await.expect("cluster forms");
    (nodes, addrs, dirs)
}

#[tokio::test]
async fn a_member_with_an_unpinned_key_never_joins_and_the_others_serve() {
    // Member 3 runs with a key that is not the one 1 and 2 pin for it (it does know
    // theirs): each side refuses the other, in both directions.
    let (nodes, _addrs, _dirs) = start(|id| {
        let mut tls = peer_tls(id, 1..=3);
        if id == 3 {
            tls.identity = identity(99);
        }
        tls
    })
    .await;
    let leader = nodes[&1]
        .wait_until(PATIENCE, |s| s.leader.is_some())
        .await
        .and_then(|s| s.leader)
        .expect("1 and 2 elect a leader");
    assert_ne!(leader, 3, "the unpinned member cannot win a vote");
    let applied = nodes[&leader]
        .write(Entry {
            at: T0,
            commands: vec![open(1, "ann")],
        })
        .await
        .expect("a majority of pinned members commits");
    assert_eq!(applied.outcomes.len(), 1);
    for id in [1, 2] {
        nodes[&id]
            .wait_until(PATIENCE, |s| s.leader == Some(leader))
            .await
            .expect("both pinned members follow the leader");
    }
    // Many heartbeats long: were it let in, member 3 would have learnt of the leader.
    let joined = nodes[&3]
        .wait_until(Duration::from_secs(3), |s| {
            s.leader.is_some() || s.applied.is_some()
        })
        .await;
    assert_eq!(joined, None, "the unpinned member received an append");
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn plaintext_on_the_peer_port_is_refused() {
    let (nodes, addrs, _dirs) = start(|id| peer_tls(id, 1..=3)).await;
    let mut stream = TcpStream::connect(addrs[&1])
        .await
        .expect("connect on loopback");
    // A frame as the plaintext transport sent it: a length prefix, then JSON.
    let body = br#"{"Vote":{}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream
        .write_all(&frame)
        .await
        .expect("send a plaintext frame");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the member closes the connection")
        .ok();
    // Nothing but, at most, a TLS alert record (content type 21).
    assert!(
        answer.first().is_none_or(|&b| b == 21),
        "a plaintext peer got an answer: {answer:?}"
    );
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

/// A test client's verifier: any raw Ed25519 key, its handshake signature checked.
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &rustls::pki_types::SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.0,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Connects to `addr` presenting member `claimed`'s public key but signing the handshake
/// with member `signer`'s private key, sends an oversized frame header, and returns how
/// the first read ends.
async fn handshake_as(addr: SocketAddr, claimed: NodeId, signer: NodeId) -> std::io::Error {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let pkcs8 = identity(signer).to_pkcs8_der().expect("encode a key");
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            pkcs8.as_bytes().to_vec(),
        )))
        .expect("load a key");
    let spki = usher_license::ed25519_spki(&identity(claimed).verifying_key().to_bytes());
    let certified = rustls::sign::CertifiedKey::new(vec![CertificateDer::from(spki)], key);
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer(
            provider.signature_verification_algorithms,
        )))
        .with_client_cert_resolver(std::sync::Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(std::sync::Arc::new(certified)),
        ));
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect on loopback");
    let name = rustls::pki_types::ServerName::try_from("usher-peer").expect("a name");
    let exchange = async {
        let mut tls = connector.connect(name, tcp).await?;
        // A length prefix over the largest frame: a member that let us in hangs up.
        tls.write_all(&u32::MAX.to_be_bytes()).await?;
        tls.flush().await?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(PATIENCE, exchange).await {
        Ok(Ok(())) => std::io::Error::other("closed cleanly"),
        Ok(Err(e)) => e,
        Err(_) => panic!("the member neither refused nor hung up"),
    }
}

#[tokio::test]
async fn a_pinned_key_with_a_bad_handshake_signature_is_refused() {
    let (nodes, addrs, _dirs) = start(|id| peer_tls(id, 1..=3)).await;
    // Member 3's own key, properly signed: let in, then dropped for the bad frame
    // (the connection just ends, no TLS alert).
    let admitted = handshake_as(addrs[&1], 3, 3).await;
    assert!(
        !admitted.to_string().contains("alert"),
        "a pinned member was refused: {admitted}"
    );
    // Member 3's public key, signed with another key: the signature check fails
    // (a decrypt_error alert, RFC 8446 section 4.4.3).
    let forged = handshake_as(addrs[&1], 3, 99).await;
    assert!(
        forged.to_string().contains("DecryptError"),
        "a forged handshake was not refused with an alert: {forged}"
    );
    for (_, node) in nodes {
        node.shutdown().await;
    }
}
