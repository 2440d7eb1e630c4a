//! Hostile and broken peers: each is refused or disconnected, never panics the server,
//! and never disturbs the other clients.

use std::time::Duration;

use usher_proto::{ErrorCode, Response, request, response};

use crate::util::*;

/// Asserts that the connection gets an error (with `code`, if given) and/or is closed.
async fn refused(conn: &mut RawConn, code: Option<ErrorCode>, what: &str) {
    let mut saw_error = false;
    while let Some(Response { kind, .. }) = conn.recv().await {
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

#[tokio::test(flavor = "multi_thread")]
async fn hostile_peers_are_refused_while_everyone_else_is_served() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let addr = server.addr;

    // A legitimate client keeps checking out and in the whole time.
    let legit = tokio::spawn(async move {
        let client = client_for(addr.port()).await;
        for _ in 0..50 {
            let license = client.checkout("sim", "", 1).await.expect("legit checkout");
            drop(license);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        client.close().await;
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
    refused(&mut c, None, "oversized frame before hello").await;
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
    refused(&mut c, None, "wrong magic").await;

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

    // A handshake that never comes (the server's handshake timeout is 500 ms).
    let mut c = RawConn::connect(addr).await;
    refused(&mut c, None, "silent connection").await;

    // Half a frame, then nothing.
    let mut c = RawConn::connect(addr).await;
    c.send_bytes(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    refused(&mut c, None, "half a frame").await;

    legit
        .await
        .expect("the legitimate client was served throughout");
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
