//! Connections the server closes by itself: one whose session has ended, and one whose
//! client pipelines requests and never reads the answers.

use std::time::Duration;

use tokio::net::TcpSocket;
use usher_proto::{FrameReader, Request, StatusRequest, request, response};

use crate::http::{http, parse_exposition, value};
use crate::util::{LICENSE, Licensed, RawConn, TestServer, checkout, eventually, hello, in_use};

/// A sample of the server's `/metrics`.
async fn metric(server: &TestServer, family: &str, labels: &[(&str, &str)]) -> f64 {
    let scrape = http(server.admin.unwrap(), "GET", "/metrics", None, None).await;
    let (_, samples) = parse_exposition(&scrape.body);
    value(&samples, family, labels).unwrap_or(0.0)
}

/// Waits until the server holds no client connection.
async fn no_connection_left(server: &TestServer, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        (metric(server, "usher_connections", &[]).await == 0.0).then_some(())
    })
    .await;
}

fn status() -> request::Kind {
    request::Kind::Status(StatusRequest::default())
}

/// A client that pipelines requests and never reads its answers is disconnected once an
/// answer has waited `send_timeout` to be written; its seats then come back as for any
/// connection closed without a goodbye (after the reconnect grace).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_its_answers_is_disconnected_and_its_seats_freed() {
    // Many features make every status answer a few kilobytes, so the answers back up
    // after a few hundred requests.
    let mut text = String::from(LICENSE);
    for i in 0..100 {
        text.push_str(&format!(
            "FEATURE extra{i} acme 1.0 permanent 1 HOSTID=ANY\n"
        ));
    }
    let lic = Licensed::new(&text);
    let mut config = lic.config();
    config.send_timeout = Duration::from_millis(500);
    // Heartbeats would not keep the session alive anyway once the server stops reading;
    // a long TTL shows that the connection closes for not reading, not by expiry.
    config.session_ttl = Duration::from_secs(60);
    config.max_request_rate = 0;
    let server = TestServer::start(config).await;

    // A small receive buffer, so the server's answers back up soon.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (rd, writer) = stream.into_split();
    let mut conn = RawConn {
        reader: FrameReader::new(rd),
        writer,
    };
    conn.welcome(hello("hoarder")).await;
    let granted = conn.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");
    assert_eq!(in_use(&server.status().await, "cad"), 1);

    // Pipelined status requests, never read (bounded in count and time): the writes stop
    // going through once the server stops reading, and fail once it has closed.
    let RawConn { reader, mut writer } = conn;
    let flood = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        for id in 3..300_000u64 {
            let req = Request {
                id,
                kind: Some(status()),
            };
            let write = usher_proto::write_frame(&mut writer, &req);
            match tokio::time::timeout(Duration::from_secs(30), write).await {
                Ok(Ok(())) if started.elapsed() < Duration::from_secs(30) => {}
                _ => return id,
            }
        }
        300_000
    });
    no_connection_left(&server, "the connection that does not read is closed").await;
    assert!(
        metric(
            &server,
            "usher_connections_rejected_total",
            &[("reason", "not_reading")]
        )
        .await
            >= 1.0,
        "the closing is counted"
    );
    eventually(Duration::from_secs(30), "its seat is freed", || async {
        (in_use(&server.status().await, "cad") == 0).then_some(())
    })
    .await;
    flood.await.unwrap();
    // What the server wrote before it closed is still there to read, then the end.
    let mut reader = reader;
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(_)) = reader.read::<usher_proto::Response>().await {}
    })
    .await;
    assert!(
        drained.is_ok(),
        "the connection ends after the answers written"
    );
}

/// A connection whose session has ended (here it lapsed: the client sent status requests
/// but no heartbeat for a whole TTL) is closed, with no request of its own to trigger it.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_whose_session_expired_is_closed() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let mut conn = RawConn::connect(server.addr).await;
    conn.hello("forgetful").await;
    let granted = conn.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");
    // Status requests do not keep a session alive; they keep the connection busy, so it
    // is never idle. The TTL is 2 s: within 30 s (a loaded machine's margin) the session
    // must have lapsed and the connection closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut id = 3;
    let closed = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection of the lapsed session is still open"
        );
        conn.send(id, status()).await;
        match conn.recv().await {
            None => break true,
            Some(r) if matches!(r.kind, Some(response::Kind::Status(_))) => {}
            Some(other) => panic!("unexpected answer {other:?}"),
        }
        id += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(closed);
    assert_eq!(in_use(&server.status().await, "cad"), 0);
    no_connection_left(&server, "the connection is closed").await;
}
