//! TLS on the client port: on by default, authenticated by the server's identity key
//! (pinned, or bound by the license a grant's statement carries), plaintext only when both
//! sides ask for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use usher_client::{Client, ClientConfig, ClientError, ServerAddr};
use usher_license::{TokenError, VendorPublicKey};
use usher_server::identity::Identity;

use crate::util::{LICENSE, Licensed, RawConn, TestServer, hello};

/// A server that requires TLS, as shipped.
async fn tls_only(text: &str) -> (Licensed, TestServer) {
    let l = Licensed::new(text);
    let mut config = l.config();
    config.insecure_plaintext = false;
    let server = TestServer::start(config).await;
    (l, server)
}

fn config_for(port: u16) -> ClientConfig {
    let mut config = ClientConfig::new(vec![ServerAddr {
        host: "127.0.0.1".into(),
        port,
    }]);
    config.connect_timeout = Duration::from_secs(10);
    config.request_timeout = Duration::from_secs(20);
    config.connect_timeout = Duration::from_secs(20);
    config
}

#[tokio::test]
async fn clients_speak_tls_by_default_and_plaintext_is_refused() {
    let (_l, server) = tls_only(LICENSE).await;
    let client = Client::connect(config_for(server.addr.port()))
        .await
        .expect("TLS by default");
    let held = client.checkout("cad").await.unwrap();
    drop(held);
    client.close().await;

    // A plaintext peer is closed without an answer: it learns nothing.
    let mut raw = RawConn::connect(server.addr).await;
    raw.send(1, usher_proto::request::Kind::Hello(hello("mallory")))
        .await;
    assert!(raw.recv().await.is_none(), "plaintext must get no answer");

    // The client library refuses to fall back to plaintext on its own, and a client that
    // asks for plaintext is refused by a server that does not allow it.
    let mut config = config_for(server.addr.port());
    config.insecure_plaintext = true;
    match Client::connect(config).await {
        Err(ClientError::Unreachable { detail, .. }) => {
            assert!(detail.contains("requires TLS"), "{detail}")
        }
        Err(other) => panic!("expected Unreachable, got {other}"),
        Ok(_) => panic!("a plaintext client was served by a TLS-only server"),
    }
}

#[tokio::test]
async fn a_pinned_server_id_admits_that_server_only() {
    let (l, server) = tls_only(LICENSE).await;
    let id = usher_server::identity::host_id_in(&l.data_dir()).expect("the server's id");
    let mut config = config_for(server.addr.port());
    config.server_ids = vec![id];
    let client = Client::connect(config).await.expect("the pinned server");
    client.close().await;

    let mut config = config_for(server.addr.port());
    config.server_ids = vec![format!("USHER_ID={}", "0".repeat(40))];
    match Client::connect(config).await {
        Err(ClientError::Unreachable { detail, .. }) => {
            assert!(detail.contains("not among the pinned"), "{detail}")
        }
        Err(other) => panic!("expected Unreachable, got {other}"),
        Ok(_) => panic!("a server with another id was accepted"),
    }
}

/// A proxy on loopback that forwards both ways and records what the client sent.
async fn recording_proxy(upstream: std::net::SocketAddr) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut down_rd, mut down_wr) = down.into_split();
            let (mut up_rd, mut up_wr) = up.into_split();
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = down_rd.read(&mut buf).await {
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                    if up_wr.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut up_rd, &mut down_wr).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn the_network_sees_no_user_or_feature_name() {
    let (_l, server) = tls_only("FEATURE secretfeature acme 1.0 permanent 2 HOSTID=ANY\n").await;
    let (port, seen) = recording_proxy(server.addr).await;
    let mut config = config_for(port);
    config.identity.user = "secretuser".into();
    let client = Client::connect(config).await.unwrap();
    let held = client.checkout("secretfeature").await.unwrap();
    drop(held);
    client.close().await;
    let bytes = seen.lock().unwrap().clone();
    assert!(bytes.len() > 100, "the proxy saw the traffic");
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("secretfeature") && !text.contains("secretuser"));
    assert_eq!(bytes[0], 0x16, "a TLS handshake record comes first");
}

#[tokio::test]
async fn grants_relayed_by_a_server_with_another_identity_are_refused() {
    // An emulator terminates TLS with its own identity and relays the real server's
    // answers, statements and all: the statements verify, but their signer is not the
    // server the channel reached.
    let l = Licensed::new("");
    std::fs::create_dir_all(l.data_dir()).unwrap();
    let genuine = Identity::load_or_create(&l.data_dir()).unwrap().host_id();
    l.write(&format!(
        "FEATURE cad acme 2025 permanent 2 HOSTID={genuine}\n"
    ));
    // The relay speaks plaintext upstream (the test config allows it).
    let server = TestServer::start(l.config()).await;
    let dir = tempfile::tempdir().unwrap();
    let emulator = Identity::load_or_create(dir.path()).unwrap();
    let acceptor = usher_server::tls::acceptor(&emulator).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = server.addr;
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let (Ok(mut down), Ok(mut up)) = (
                    acceptor.accept(down).await,
                    TcpStream::connect(upstream).await,
                ) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
        }
    });
    let mut config = config_for(port);
    config.vendor_keys = vec![VendorPublicKey::read_from(&l.public).unwrap()];
    let client = Client::connect(config).await.expect("TLS to the relay");
    match client.checkout("cad").await {
        Err(ClientError::Untrusted(TokenError::NotTheConnectedServer { .. })) => {}
        Err(other) => panic!("expected NotTheConnectedServer, got {other}"),
        Ok(_) => panic!("a relayed grant was accepted"),
    }
    client.close().await;
}
