//! Junk refused at the door, judged from its opening (what the peer sent first) before it
//! reaches the runtime that serves clients, and counted by its reason as before; a client
//! that has sent nothing yet goes through the handshake as ever.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use usher_client::{Client, ClientConfig, ServerAddr};
use usher_proto::{FrameReader, Request, Response, request, response};

use crate::http::{http, parse_exposition, value};
use crate::refusals::rejected;
use crate::util::*;

const REJECTED: &str = "usher_connections_rejected_total";
const FRAMES_REJECTED: &str = "usher_frames_rejected_total";

/// A Hello as one frame, with `magic`.
fn hello_frame(magic: &str) -> Vec<u8> {
    let mut h = hello("junk");
    h.magic = magic.into();
    usher_proto::encode_frame(&Request {
        id: 1,
        kind: Some(request::Kind::Hello(h)),
    })
}

/// The junk of the flood that can be judged from its first bytes: a length prefix of
/// 4 GiB, a frame of garbage, and a Hello that is not a usher client's.
fn plaintext_junk() -> [Vec<u8>; 3] {
    let mut garbage = vec![0, 0, 0, 16];
    garbage.extend_from_slice(&[0xff; 16]);
    [
        u32::MAX.to_be_bytes().to_vec(),
        garbage,
        hello_frame("GET / HTTP/1.1"),
    ]
}

/// A connection made and written to at once (the server may take it before or after
/// `bytes` arrive: the door judges them either way).
fn sent_at_once(addr: std::net::SocketAddr, bytes: &[u8]) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).expect("connects (the kernel accepts)");
    s.write_all(bytes).expect("the bytes fit the socket buffer");
    s
}

/// Asserts that the server closed `s` without a word.
fn closed_without_a_word(mut s: std::net::TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected a silent close, got {other:?}"),
    }
}

/// A server with `max_handshakes` 64 (more than the junk of a test), no rate limit, and
/// `plaintext` allowed or not.
async fn judging(plaintext: bool) -> (Licensed, TestServer) {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.insecure_plaintext = plaintext;
    config.max_handshakes = 64;
    config.max_connection_rate_per_ip = 0;
    config.handshake_timeout = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    (lic, server)
}

/// After the junk: none of it was refused for want of a handshake slot or kept one (each
/// was judged by its opening, well within its handshake timeout of a minute), and a
/// client is served.
async fn judged_and_gone(server: &TestServer, plaintext: bool) {
    let admin = server.admin.unwrap();
    let scrape = http(admin, "GET", "/metrics", None, None).await;
    let (_, samples) = parse_exposition(&scrape.body);
    for reason in ["handshakes_limit", "handshake_timeout"] {
        let n = value(&samples, REJECTED, &[("reason", reason)]).unwrap_or(0.0);
        assert_eq!(n, 0.0, "junk refused as {reason}");
    }
    let mut config = ClientConfig::new(vec![ServerAddr {
        host: "127.0.0.1".into(),
        port: server.addr.port(),
    }]);
    config.insecure_plaintext = plaintext;
    let client = Client::connect(config)
        .await
        .expect("a client after the junk");
    client.close().await;
}

/// Plaintext on a server that requires TLS is refused from its first byte at the door,
/// counted as `plaintext`, told nothing.
#[tokio::test]
async fn a_tls_only_server_refuses_plaintext_on_accept() {
    let (_lic, server) = judging(false).await;
    let mut junk = Vec::new();
    for bytes in plaintext_junk()
        .iter()
        .chain([&hello_frame(usher_proto::MAGIC)])
    {
        for _ in 0..5 {
            junk.push(sent_at_once(server.addr, bytes));
        }
    }
    rejected(&server, REJECTED, Some("plaintext"), 20.0).await;
    for s in junk {
        closed_without_a_word(s, "plaintext on a TLS-only server");
    }
    judged_and_gone(&server, false).await;
}

/// Where plaintext is allowed, a first frame that cannot begin a handshake (over the
/// frame limit, undecodable, a Hello without the usher magic) is refused at the door,
/// counted as the handshake counts it (`handshake`, and the bad frames in
/// `usher_frames_rejected_total`).
#[tokio::test]
async fn a_bad_first_frame_is_refused_on_accept() {
    let (_lic, server) = judging(true).await;
    let mut junk = Vec::new();
    for bytes in plaintext_junk() {
        for _ in 0..5 {
            junk.push(sent_at_once(server.addr, &bytes));
        }
    }
    rejected(&server, REJECTED, Some("handshake"), 15.0).await;
    // The oversized and the garbage frames; the foreign Hello is a valid frame.
    rejected(&server, FRAMES_REJECTED, None, 10.0).await;
    for s in junk {
        closed_without_a_word(s, "a bad first frame");
    }
    judged_and_gone(&server, true).await;
}

/// A peer that sends the beginning of an opening and then stops sending (its write side
/// shut, the bytes still unread) is refused as soon as its end arrives, not left to its
/// handshake timeout of a minute, and costs the door nothing while it waits; over TLS and
/// in plaintext, for a frame and for a TLS record.
#[tokio::test]
async fn an_opening_cut_short_is_refused_when_its_peer_stops_sending() {
    for plaintext in [true, false] {
        let (_lic, server) = judging(plaintext).await;
        let mut cut = Vec::new();
        // Half a frame announcing 200 bytes, and half a TLS record announcing 512.
        let beginnings: &[&[u8]] = if plaintext {
            &[&[0, 0, 0, 200, 1, 2, 3], &[0x16, 3, 1, 2, 0, 1]]
        } else {
            &[&[0x16, 3, 1, 2, 0, 1, 2, 3]]
        };
        for bytes in beginnings {
            for _ in 0..3 {
                let s = sent_at_once(server.addr, bytes);
                s.shutdown(std::net::Shutdown::Write).unwrap();
                cut.push(s);
            }
        }
        let expected = 3.0 * beginnings.len() as f64;
        rejected(&server, REJECTED, Some("handshake"), expected).await;
        for s in cut {
            closed_without_a_word(s, "an opening cut short");
        }
        judged_and_gone(&server, plaintext).await;
        server.shutdown().await.unwrap();
    }
}

/// A client that connects and says nothing for a while is not junk: the accept loop
/// hands it to the handshake, and its Hello, late but within the handshake timeout, is
/// answered; in plaintext and over TLS.
#[tokio::test]
async fn a_client_that_sends_nothing_at_first_is_served() {
    for plaintext in [true, false] {
        let lic = Licensed::new(LICENSE);
        let mut config = lic.config();
        config.insecure_plaintext = plaintext;
        config.handshake_timeout = Duration::from_secs(20);
        let server = TestServer::start(config).await;
        let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        // Long enough for the server to accept and judge the silent connection.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let welcome = if plaintext {
            late_hello(stream).await
        } else {
            let connector = usher_client::tls::connector(&[]).unwrap();
            let (tls, _key) = usher_client::tls::connect(&connector, "127.0.0.1", stream)
                .await
                .expect("the TLS handshake, begun late");
            late_hello(tls).await
        };
        assert_ne!(welcome.session_id, 0, "plaintext {plaintext}: {welcome:?}");
        server.shutdown().await.unwrap();
    }
}

/// Says Hello on `stream` and returns the Welcome.
async fn late_hello<S>(stream: S) -> usher_proto::Welcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let req = Request {
        id: 1,
        kind: Some(request::Kind::Hello(hello("late"))),
    };
    usher_proto::write_frame(&mut wr, &req).await.unwrap();
    wr.flush().await.unwrap();
    let mut reader = FrameReader::new(rd);
    let answer = tokio::time::timeout(Duration::from_secs(20), reader.read::<Response>())
        .await
        .expect("an answer within 20 s");
    match answer.unwrap().and_then(|r| r.kind) {
        Some(response::Kind::Welcome(w)) => w,
        other => panic!("expected a Welcome, got {other:?}"),
    }
}

/// A real client connects and checks out while junk pours in from another thread; every
/// junk connection is refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_served_during_a_burst_of_junk() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let addr = server.addr;
    let flooding = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let burst = tokio::task::spawn_blocking({
        let (flooding, sent) = (flooding.clone(), sent.clone());
        move || {
            let junk = plaintext_junk();
            // At least one round, at most 3,000 connections.
            for n in 0..3_000 {
                if n >= 300 && !flooding.load(Ordering::Relaxed) {
                    break;
                }
                drop(sent_at_once(addr, &junk[n % junk.len()]));
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let mut config = ClientConfig::new(vec![ServerAddr {
        host: "127.0.0.1".into(),
        port: addr.port(),
    }]);
    config.connect_timeout = Duration::from_secs(20);
    config.request_timeout = Duration::from_secs(20);
    let client = Client::connect(config)
        .await
        .expect("served during the burst");
    for round in 0..5 {
        let seat = client
            .checkout("cad")
            .await
            .unwrap_or_else(|e| panic!("round {round}: checkout during the burst: {e}"));
        drop(seat);
    }
    client.close().await;
    flooding.store(false, Ordering::Relaxed);
    burst.await.unwrap();
    let sent = sent.load(Ordering::Relaxed) as f64;
    rejected(&server, REJECTED, Some("handshake"), sent).await;
    server.shutdown().await.unwrap();
}
