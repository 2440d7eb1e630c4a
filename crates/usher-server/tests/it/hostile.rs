//! Hostile and broken peers: each is refused or disconnected, never panics the server,
//! and never disturbs the other clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usher_proto::{ErrorCode, Response, request, response};

use crate::util::*;

/// Asserts that the connection gets an error (with `code`, if given) and/or is closed.
async fn refused(conn: &mut RawConn, code: Option<ErrorCode>, what: &str) {
    let mut saw_error = false;
    for answers in 0.. {
        let Some(Response { kind, .. }) = conn.recv().await else {
            break;
        };
        assert!(
            answers < 10,
            "{what}: the server keeps answering instead of closing"
        );
        match kind {
            Some(response::Kind::Error(e)) => {
                if let Some(code) = code {
                    assert_eq!(e.code(), code, "{what}: {}", e.message);
                }
                saw_error = true;
            }
            other => panic!("{what}: expected an error or a close, got {other:?}"),
        }
    }
    assert!(
        code.is_none() || saw_error,
        "{what}: expected an error response before the close"
    );
}

/// Asserts that the server closes the connection without sending anything.
async fn closed_silently(conn: &mut RawConn, what: &str) {
    let got = conn.recv().await;
    assert!(
        got.is_none(),
        "{what}: expected a silent close, got {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_peers_are_refused_while_everyone_else_is_served() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let addr = server.addr;

    // A legitimate client keeps checking out and in the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let legit = tokio::spawn({
        let stop = stop.clone();
        async move {
            let client = client_for(addr.port()).await;
            let mut rounds = 0u32;
            while rounds < 10_000 && (rounds < 3 || !stop.load(Ordering::SeqCst)) {
                let license = client
                    .checkout("sim")
                    .await
                    .unwrap_or_else(|e| panic!("legit checkout {rounds} failed: {e}"));
                drop(license);
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            client.close().await;
            rounds
        }
    });

    // Garbage bytes.
    let mut c = RawConn::connect(addr).await;
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = c.send_bytes(&garbage).await;
    refused(&mut c, None, "garbage").await;

    // A length prefix far beyond the limit, before and after the handshake.
    let mut c = RawConn::connect(addr).await;
    c.send_bytes(&u32::MAX.to_be_bytes()).await.unwrap();
    closed_silently(&mut c, "oversized frame before hello").await;
    let mut c = RawConn::connect(addr).await;
    c.hello("big").await;
    let len = (usher_proto::MAX_FRAME_LEN as u32 + 1).to_be_bytes();
    c.send_bytes(&len).await.unwrap();
    refused(&mut c, Some(ErrorCode::BadRequest), "oversized frame").await;

    // A frame that is not a valid message.
    let mut c = RawConn::connect(addr).await;
    c.hello("junk").await;
    c.send_bytes(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    refused(&mut c, Some(ErrorCode::BadRequest), "undecodable frame").await;

    // Wrong magic: closed without an answer.
    let mut c = RawConn::connect(addr).await;
    let mut h = hello("scanner");
    h.magic = "GET / HTTP/1.1".into();
    c.send(1, request::Kind::Hello(h)).await;
    closed_silently(&mut c, "wrong magic").await;

    // A protocol version the server does not serve.
    let mut c = RawConn::connect(addr).await;
    let mut h = hello("ancient");
    h.protocol_version = 0;
    c.send(1, request::Kind::Hello(h)).await;
    refused(
        &mut c,
        Some(ErrorCode::UnsupportedVersion),
        "protocol version 0",
    )
    .await;

    // No handshake first.
    let mut c = RawConn::connect(addr).await;
    c.send(1, checkout("cad", 1, 1)).await;
    refused(
        &mut c,
        Some(ErrorCode::HandshakeRequired),
        "checkout before hello",
    )
    .await;

    // A handshake that never comes: closed after the handshake timeout, without a word.
    let mut c = RawConn::connect(addr).await;
    closed_silently(&mut c, "silent connection").await;

    // Half a frame, then nothing: the handshake timeout covers that too, and a peer that
    // began to speak the protocol is told why it is dropped.
    let mut c = RawConn::connect(addr).await;
    c.send_bytes(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    match c.recv().await.and_then(|r| r.kind) {
        Some(response::Kind::Error(e)) => assert_eq!(e.code(), ErrorCode::HandshakeTimeout),
        other => panic!("half a frame: expected a handshake timeout, got {other:?}"),
    }
    closed_silently(&mut c, "half a frame").await;

    stop.store(true, Ordering::SeqCst);
    let rounds = legit
        .await
        .expect("the legitimate client was served throughout");
    assert!(rounds >= 3, "only {rounds} legitimate rounds");
    let report = server.status().await;
    assert_eq!(
        in_use(&report, "cad"),
        0,
        "no hostile peer got a seat: {report:?}"
    );
    server
        .shutdown()
        .await
        .expect("the server is healthy to the end");
}

/// `max_frame_bytes` lowers the frame limit: a request just over it closes that
/// connection (with a bad-request error) and costs the server nothing else, while a
/// request just under it is served, as is everyone else.
#[tokio::test(flavor = "multi_thread")]
async fn a_frame_over_the_configured_limit_closes_only_its_connection() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.max_frame_bytes = 1024;
    let server = TestServer::start(config).await;
    let checkout_of = |name_len: usize| {
        request::Kind::Checkout(usher_proto::Checkout {
            feature: "x".repeat(name_len),
            count: 1,
            client_ref: 1,
            ..usher_proto::Checkout::default()
        })
    };
    let mut under = RawConn::connect(server.addr).await;
    under.hello("under").await;
    // A 900-byte feature name fits the frame, so it is read and refused by the name rule,
    // and the connection goes on.
    let answer = under.call(2, checkout_of(900)).await;
    assert!(
        matches!(&answer, response::Kind::Error(e) if e.message.contains("feature is 900 bytes")),
        "{answer:?}"
    );
    let answer = under.call(3, checkout_of(10)).await;
    assert!(matches!(answer, response::Kind::Denied(_)), "{answer:?}");

    let mut over = RawConn::connect(server.addr).await;
    over.hello("over").await;
    over.send(2, checkout_of(1100)).await;
    refused(
        &mut over,
        Some(ErrorCode::BadRequest),
        "frame over max_frame_bytes",
    )
    .await;

    let client = server.client().await;
    client.checkout("cad").await.expect("others are served");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_cannot_take_over_or_release_another_sessions_seats() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let mut victim = RawConn::connect(server.addr).await;
    let welcome = victim.welcome(hello("victim")).await;
    let response::Kind::Granted(seat) = victim.call(2, checkout("cad", 1, 1)).await else {
        panic!("the victim gets a seat");
    };

    // Resuming the victim's session with a guessed secret is refused like an unknown
    // session, and the Welcome that may follow opens a fresh, empty session.
    let mut thief = RawConn::connect(server.addr).await;
    let mut guess = resume("thief", &welcome);
    guess.resume_secret = vec![0; 32];
    match thief.call(1, request::Kind::Hello(guess)).await {
        response::Kind::Error(e) => assert_eq!(e.code(), ErrorCode::SessionExpired, "{e:?}"),
        other => panic!("a wrong secret must not resume the session: {other:?}"),
    }
    let mine = thief.welcome(hello("thief")).await;
    assert!(!mine.resumed && mine.leases.is_empty(), "{mine:?}");
    assert_ne!(mine.session_id, welcome.session_id);

    // Checking in someone else's lease does nothing.
    let checkin = usher_proto::Checkin {
        lease_id: seat.lease_id,
    };
    match thief.call(2, request::Kind::Checkin(checkin)).await {
        response::Kind::CheckedIn(c) => assert!(!c.was_held, "{c:?}"),
        other => panic!("expected CheckedIn, got {other:?}"),
    }
    // An absurd seat count is a bad request, not an overflow.
    match thief.call(3, checkout("cad", u32::MAX, 9)).await {
        response::Kind::Denied(d) => {
            assert_eq!(d.reason(), usher_proto::DenyReason::BadRequest, "{d:?}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let report = server.status().await;
    let h = holders(&report);
    assert_eq!(h.len(), 1, "{report:#?}");
    assert_eq!(
        (h[0].lease_id, h[0].session_id),
        (seat.lease_id, welcome.session_id),
        "the victim still holds its seat: {report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_over_its_request_rate_is_slowed_and_loses_nothing() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.max_request_rate = 20;
    let server = TestServer::start(config).await;
    let mut raw = RawConn::connect(server.addr).await;
    raw.hello("busy").await;
    // Sixty pipelined heartbeats: three times the burst.
    for id in 2..62 {
        raw.send(id, request::Kind::Heartbeat(usher_proto::Heartbeat {}))
            .await;
    }
    for id in 2..62 {
        let r = raw.recv().await.expect("every request is answered");
        assert_eq!(r.id, id);
        assert!(
            matches!(r.kind, Some(response::Kind::HeartbeatAck(_))),
            "{r:?}"
        );
    }
    let metrics = crate::http::http(server.admin.unwrap(), "GET", "/metrics", None, None).await;
    let throttled = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("usher_requests_throttled_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("the counter is exported");
    assert!(throttled >= 30, "held back: {throttled}");
}
