//! Grants a client can verify: with its vendor's public key, the client library accepts a
//! seat only from a genuine license, bound to the server that granted it, answering this
//! very checkout. A frame-rewriting proxy plays the server an attacker would put in the
//! real one's place: a rogue with its own vendor key, an emulator serving a copy of the
//! genuine license, a replayer and a tamperer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use usher_client::{Client, ClientConfig, ClientError, QueueWait, ServerAddr};
use usher_license::{SignedStatement, TokenError, VendorPublicKey, VendorSigningKey, sign_text};
use usher_proto::{FrameReader, Response, response};
use usher_server::identity::Identity;

use crate::util::{Licensed, TestServer, eventually, in_use};

/// A license for 2 seats of `cad`, borrowable for a day, bound to the server whose data directory `l` uses.
fn bound_license(l: &Licensed) -> String {
    std::fs::create_dir_all(l.data_dir()).unwrap();
    let id = Identity::load_or_create(&l.data_dir()).unwrap().host_id();
    format!("FEATURE cad acme 2025 permanent 2 HOSTID={id} BORROW=24\n")
}

async fn licensed_server() -> (Licensed, TestServer) {
    let l = Licensed::new("");
    l.write(&bound_license(&l));
    let server = TestServer::start(l.config()).await;
    (l, server)
}

/// A client of `port` that trusts `keys`. Through the proxies below it speaks plaintext
/// (the proxy could not read TLS): the statements alone must expose them.
async fn verifying_client(port: u16, keys: Vec<VendorPublicKey>) -> Client {
    client_with(port, keys, true).await
}

async fn client_with(port: u16, keys: Vec<VendorPublicKey>, plaintext: bool) -> Client {
    let mut config = ClientConfig::new(vec![ServerAddr {
        host: "127.0.0.1".into(),
        port,
    }]);
    config.request_timeout = Duration::from_secs(20);
    config.connect_timeout = Duration::from_secs(20);
    config.vendor_keys = keys;
    config.insecure_plaintext = plaintext;
    Client::connect(config).await.expect("client connects")
}

fn acme(l: &Licensed) -> Vec<VendorPublicKey> {
    vec![VendorPublicKey::read_from(&l.public).unwrap()]
}

type Rewrite = Arc<dyn Fn(&mut response::Kind) + Send + Sync>;

/// A proxy in front of `upstream` that passes requests through and rewrites every answer
/// with `rewrite` on its way back: the server an attacker puts in the real one's place.
async fn rewriting_proxy(upstream: SocketAddr, rewrite: Rewrite) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let rewrite = rewrite.clone();
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut down_rd, mut down_wr) = down.into_split();
                let (up_rd, mut up_wr) = up.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut down_rd, &mut up_wr).await;
                });
                let mut answers = FrameReader::new(up_rd);
                while let Ok(Some(mut r)) = answers.read::<Response>().await {
                    if let Some(kind) = &mut r.kind {
                        rewrite(kind);
                    }
                    if usher_proto::write_frame(&mut down_wr, &r).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Rewrites every grant with `f`.
fn on_grant(f: impl Fn(&mut usher_proto::Granted) + Send + Sync + 'static) -> Rewrite {
    Arc::new(move |kind| {
        if let response::Kind::Granted(g) = kind {
            f(g);
        }
    })
}

/// Rewrites the statement of every grant with `f`.
fn on_statement(f: impl Fn(&mut SignedStatement) + Send + Sync + 'static) -> Rewrite {
    on_grant(move |g| {
        let mut s = SignedStatement::from_text(&g.statement).expect("a statement");
        f(&mut s);
        g.statement = s.to_text();
    })
}

/// Signs `s` again as `signer`, the way a server other than the licensed one would.
fn resign(s: &SignedStatement, signer: &Identity) -> SignedStatement {
    let mut st = s.statement.clone();
    st.server_key = signer.public_key();
    st.sign(signer.signing_key())
}

/// A server identity other than the licensed server's.
fn other_identity() -> (tempfile::TempDir, Identity) {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::load_or_create(dir.path()).unwrap();
    (dir, identity)
}

/// Waits until no seat of `cad` is held on `server`.
async fn all_seats_back(server: &TestServer, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        (in_use(&server.status().await, "cad") == 0).then_some(())
    })
    .await;
}

/// Asserts that a checkout through `port` is refused as untrusted for a reason `expected`
/// accepts, and that the seat went back to the real server.
async fn assert_untrusted(
    server: &TestServer,
    port: u16,
    keys: Vec<VendorPublicKey>,
    expected: impl Fn(&TokenError) -> bool,
) {
    let client = verifying_client(port, keys).await;
    match client.checkout("cad").await {
        Err(ClientError::Untrusted(why)) => assert!(expected(&why), "refused for {why}"),
        Ok(_) => panic!("an unverifiable grant was accepted"),
        Err(other) => panic!("expected Untrusted, got {other}"),
    }
    all_seats_back(server, "the refused seat is given back").await;
    client.close().await;
}

#[tokio::test]
async fn grants_from_the_licensed_server_verify_directly_and_after_queueing() {
    let (l, server) = licensed_server().await;
    // Over TLS: the statements must also be signed by the key the channel authenticated.
    let port = server.addr.port();
    let a = client_with(port, acme(&l), false).await;
    let held = a.checkout("cad").count(2).await.expect("a verified grant");
    assert_eq!(held.count(), 2);

    // A queued checkout is granted by a notice when the seats come back; it is verified
    // as well (the client asks for the grant's statement again).
    let b = client_with(port, acme(&l), false).await;
    let waiting = tokio::spawn(async move {
        let license = b
            .checkout("cad")
            .wait(QueueWait::For(Duration::from_secs(30)))
            .await;
        (b, license)
    });
    eventually(Duration::from_secs(30), "b waits in the queue", || async {
        (server.status().await.queue.len() == 1).then_some(())
    })
    .await;
    drop(held);
    let (b, license) = waiting.await.unwrap();
    assert_eq!(license.expect("a verified queued grant").count(), 1);
    b.close().await;
    a.close().await;
}

#[tokio::test]
async fn a_rogue_server_with_its_own_vendor_key_is_refused() {
    let (l, server) = licensed_server().await;
    // The rogue signs its own "acme" license for itself, and its statements with its own
    // identity.
    let (_dir, rogue) = other_identity();
    let rogue_vendor = VendorSigningKey::from_seed("acme", [99; 32]).unwrap();
    let line = format!(
        "FEATURE cad acme 2025 permanent 2 HOSTID={}\n",
        rogue.host_id()
    );
    let rogue_license = sign_text("rogue.lic", &line, &rogue_vendor).unwrap().text;
    let rogue_line = usher_license::parse("rogue.lic", &rogue_license)
        .unwrap()
        .entitlements[0]
        .to_line();
    let port = rewriting_proxy(
        server.addr,
        on_statement(move |s| {
            s.statement.entitlement = rogue_line.clone();
            *s = resign(s, &rogue);
        }),
    )
    .await;
    assert_untrusted(&server, port, acme(&l), |e| {
        matches!(e, TokenError::BadLicenseSignature(_))
    })
    .await;
}

#[tokio::test]
async fn a_genuine_license_served_by_a_server_it_does_not_bind_is_refused() {
    let (l, server) = licensed_server().await;
    // An emulator holding a copy of the genuine license file: it signs its statements
    // with its own identity, which the license does not name.
    let (_dir, emulator) = other_identity();
    let port = rewriting_proxy(
        server.addr,
        on_statement(move |s| *s = resign(s, &emulator)),
    )
    .await;
    assert_untrusted(&server, port, acme(&l), |e| {
        matches!(e, TokenError::ServerNotBound { .. })
    })
    .await;
}

#[tokio::test]
async fn a_replayed_grant_is_refused() {
    let (l, server) = licensed_server().await;
    // The first grant's statement is recorded and answered to every later checkout.
    let recorded: Arc<Mutex<Option<String>>> = Arc::default();
    let port = rewriting_proxy(
        server.addr,
        on_grant(move |g| {
            let mut first = recorded.lock().unwrap();
            g.statement = first.get_or_insert_with(|| g.statement.clone()).clone();
        }),
    )
    .await;
    let first = verifying_client(port, acme(&l)).await;
    let held = first.checkout("cad").await.expect("the first grant");
    drop(held);
    first.close().await;
    all_seats_back(&server, "the first seat is back").await;
    assert_untrusted(&server, port, acme(&l), |e| {
        matches!(e, TokenError::NotThisCheckout(_))
    })
    .await;
}

#[tokio::test]
async fn a_tampered_or_missing_statement_is_refused() {
    let (l, server) = licensed_server().await;
    // More seats than the server signed for.
    let port = rewriting_proxy(server.addr, on_statement(|s| s.statement.count = 2)).await;
    assert_untrusted(&server, port, acme(&l), |e| {
        matches!(e, TokenError::BadServerSignature)
    })
    .await;
    // The grant itself edited to claim more seats than its statement vouches for.
    let port = rewriting_proxy(server.addr, on_grant(|g| g.count = 2)).await;
    assert_untrusted(&server, port, acme(&l), |e| {
        matches!(e, TokenError::NotThisCheckout(_))
    })
    .await;
    // No statement at all, as from a server that cannot sign one.
    let port = rewriting_proxy(server.addr, on_grant(|g| g.statement.clear())).await;
    assert_untrusted(&server, port, acme(&l), |e| {
        matches!(e, TokenError::Malformed(_))
    })
    .await;
}

#[tokio::test]
async fn a_client_without_vendor_keys_asks_for_no_statement() {
    let (_l, server) = licensed_server().await;
    let mut raw = crate::util::RawConn::connect(server.addr).await;
    raw.hello("alice").await;
    match raw.call(2, crate::util::checkout("cad", 1, 1)).await {
        response::Kind::Granted(g) => assert!(g.statement.is_empty(), "{g:?}"),
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[tokio::test]
async fn a_borrow_token_from_an_emulator_is_refused_and_given_back() {
    let (l, server) = licensed_server().await;
    let (_dir, emulator) = other_identity();
    let port = rewriting_proxy(
        server.addr,
        on_grant(move |g| {
            if let Ok(token) = SignedStatement::from_text(&g.borrow_token) {
                g.borrow_token = resign(&token, &emulator).to_text();
            }
        }),
    )
    .await;
    let client = verifying_client(port, acme(&l)).await;
    match client.borrow("cad", Duration::from_secs(3600)).await {
        Err(ClientError::Untrusted(TokenError::ServerNotBound { .. })) => {}
        other => panic!("expected an untrusted borrow, got {other:?}"),
    }
    all_seats_back(&server, "the borrowed seat is returned").await;
    // Straight from the licensed server, the token verifies.
    let direct = client_with(server.addr.port(), acme(&l), false).await;
    let token = direct
        .borrow("cad", Duration::from_secs(3600))
        .await
        .expect("a verified borrow");
    assert_eq!(token.statement.count, 1);
    client.close().await;
    direct.close().await;
}

#[tokio::test]
async fn an_oversized_nonce_is_a_bad_request() {
    let (_l, server) = licensed_server().await;
    let mut raw = crate::util::RawConn::connect(server.addr).await;
    raw.hello("alice").await;
    let checkout = usher_proto::Checkout {
        feature: "cad".into(),
        count: 1,
        client_ref: 1,
        nonce: vec![7; usher_proto::MAX_NONCE_LEN + 1],
        ..usher_proto::Checkout::default()
    };
    match raw
        .call(2, usher_proto::request::Kind::Checkout(checkout))
        .await
    {
        response::Kind::Error(e) => assert!(e.message.contains("nonce"), "{e:?}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(in_use(&server.status().await, "cad"), 0);
}
