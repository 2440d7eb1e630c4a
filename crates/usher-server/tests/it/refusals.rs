//! Every refusal a client can meet is counted by reason and, where the protocol allows,
//! answered with a typed error the client prints; where the server stays silent (the
//! allow-list), the client's message lists the possible causes.

use std::time::Duration;

use usher_client::{Client, ClientConfig, ServerAddr};
use usher_proto::{ErrorCode, request, response};

use crate::http::{http, parse_exposition, value};
use crate::util::*;

fn tls_client(port: u16) -> ClientConfig {
    let mut config = ClientConfig::new(vec![ServerAddr {
        host: "127.0.0.1".into(),
        port,
    }]);
    config.connect_timeout = Duration::from_secs(20);
    config.request_timeout = Duration::from_secs(20);
    config
}

/// What `usher` would print when connecting fails.
async fn connect_error(port: u16) -> String {
    match Client::connect(tls_client(port)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the client was served"),
    }
}

/// The `usher_connections_rejected_total` sample of `reason`, once it reaches `at_least`.
pub(crate) async fn rejected(
    server: &TestServer,
    family: &str,
    reason: Option<&str>,
    at_least: f64,
) -> f64 {
    let admin = server.admin.unwrap();
    eventually(
        Duration::from_secs(20),
        "the refusal is counted",
        || async {
            let scrape = http(admin, "GET", "/metrics", None, None).await;
            let (_, samples) = parse_exposition(&scrape.body);
            let labels: Vec<(&str, &str)> = reason.map(|r| ("reason", r)).into_iter().collect();
            value(&samples, family, &labels).filter(|v| *v >= at_least)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_per_address_cap_a_tls_client_is_told_the_limit() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.max_connections_per_ip = 1;
    let server = TestServer::start(config).await;
    let held = server.client().await;
    let _seat = held.checkout("cad").await.unwrap();
    let message = connect_error(server.addr.port()).await;
    assert!(
        message.contains("too many connections from your address 127.0.0.1 (limit 1"),
        "{message}"
    );
    assert_eq!(
        rejected(
            &server,
            "usher_connections_rejected_total",
            Some("per_address_limit"),
            1.0
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_total_cap_a_client_is_told_the_server_is_full() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.max_connections = 1;
    let server = TestServer::start(config).await;
    let mut held = RawConn::connect(server.addr).await;
    held.hello("first").await;
    let mut second = RawConn::connect(server.addr).await;
    match second.call(1, request::Kind::Hello(hello("second"))).await {
        response::Kind::Error(e) => {
            assert_eq!(e.code(), ErrorCode::TooManyConnections, "{e:?}");
            assert!(
                e.message.contains("at its limit of 1 client connections"),
                "{e:?}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(second.recv().await.is_none(), "then closed");
    let message = connect_error(server.addr.port()).await;
    assert!(message.contains("at its limit of 1"), "{message}");
    assert_eq!(
        rejected(
            &server,
            "usher_connections_rejected_total",
            Some("total_limit"),
            2.0
        )
        .await,
        2.0
    );
    // The connection held is served all along.
    let granted = held.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_the_allow_list_the_client_lists_the_possible_causes() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.allow = vec!["10.0.0.0/8".parse().unwrap()];
    let server = TestServer::start(config).await;
    let message = connect_error(server.addr.port()).await;
    assert!(
        message.contains("not in the server's allow-list") && message.contains("overloaded"),
        "{message}"
    );
    let mut plain = tls_client(server.addr.port());
    plain.insecure_plaintext = true;
    let message = match Client::connect(plain).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("served from outside the allow-list"),
    };
    assert!(
        message.contains("allow-list") && message.contains("requires TLS"),
        "{message}"
    );
    rejected(
        &server,
        "usher_connections_rejected_total",
        Some("not_allowed"),
        2.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_that_does_not_finish_in_time_is_told_so() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let mut slow = RawConn::connect(server.addr).await;
    // The first byte of a frame's length prefix, and nothing more.
    slow.send_bytes(&[0]).await.unwrap();
    match slow.recv().await.and_then(|r| r.kind) {
        Some(response::Kind::Error(e)) => {
            assert_eq!(e.code(), ErrorCode::HandshakeTimeout, "{e:?}");
            assert!(e.message.contains("handshake timeout"), "{e:?}");
        }
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
    // A peer that sends nothing at all (not even a TLS hello) is closed and counted.
    let silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    rejected(
        &server,
        "usher_connections_rejected_total",
        Some("handshake_timeout"),
        2.0,
    )
    .await;
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_over_the_rate_limit_are_held_back_and_counted() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.max_request_rate = 5;
    let server = TestServer::start(config).await;
    let mut conn = RawConn::connect(server.addr).await;
    conn.hello("hasty").await;
    for id in 2..22 {
        conn.send(
            id,
            request::Kind::Heartbeat(usher_proto::Heartbeat::default()),
        )
        .await;
    }
    for _ in 2..22 {
        let answer = conn.recv().await.and_then(|r| r.kind);
        assert!(
            matches!(answer, Some(response::Kind::HeartbeatAck(_))),
            "held back, never refused: {answer:?}"
        );
    }
    rejected(&server, "usher_requests_throttled_total", None, 1.0).await;
}

/// A raw connection from `ip`, which must be on loopback.
async fn connect_from(ip: &str, port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
}

/// Whether the server closed `stream` without a word within a second.
async fn closed_at_once(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Whether a Hello on `stream` is welcomed (rather than the connection closed).
async fn greeted(stream: tokio::net::TcpStream) -> bool {
    let (rd, writer) = stream.into_split();
    let mut conn = RawConn {
        reader: usher_proto::FrameReader::new(rd),
        writer,
    };
    let hello = request::Kind::Hello(hello("burst"));
    let req = usher_proto::Request {
        id: 1,
        kind: Some(hello),
    };
    if usher_proto::write_frame(&mut conn.writer, &req)
        .await
        .is_err()
    {
        return false;
    }
    matches!(
        conn.reader.read::<usher_proto::Response>().await,
        Ok(Some(usher_proto::Response {
            kind: Some(response::Kind::Welcome(_)),
            ..
        }))
    )
}

/// While handshake slots are contended, an address opening connections faster than its
/// share is closed at once, before TLS, and counted; another address is still served, and
/// so is an established client. On a quiet server the same burst is served whole.
#[tokio::test(flavor = "multi_thread")]
async fn an_address_over_its_connection_rate_is_closed_and_others_are_served() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.max_connection_rate_per_ip = 5;
    config.max_handshakes = 8;
    // The idle peers below hold their slots for the test's length.
    config.handshake_timeout = Duration::from_secs(20);
    let server = TestServer::start(config).await;
    let port = server.addr.port();
    let mut established = RawConn::connect(server.addr).await;
    established.hello("steady").await;

    // Quiet: twenty connections from one address, each greeted, all served.
    for n in 0..20 {
        let s = connect_from("127.0.0.6", port).await;
        assert!(greeted(s).await, "connection {n} on a quiet server");
    }
    // Four idle peers hold half of the handshake slots: contended.
    let mut idle = Vec::new();
    for n in 0..4 {
        idle.push(connect_from(&format!("127.0.0.{}", 40 + n), port).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = 0;
    for _ in 0..20 {
        if !greeted(connect_from("127.0.0.7", port).await).await {
            refused += 1;
        }
    }
    assert!(
        (5..=15).contains(&refused),
        "{refused} of 20 closed (a share of 5 a second)"
    );
    let counted = rejected(
        &server,
        "usher_connections_rejected_total",
        Some("address_rate"),
        5.0,
    )
    .await;
    assert_eq!(counted, f64::from(refused));
    assert!(
        greeted(connect_from("127.0.0.8", port).await).await,
        "another address is served"
    );
    let granted = established.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");
    drop(idle);
}

/// With `max_handshakes` connections still in their handshake, the next new connection is
/// closed at once (before TLS) and counted, while established clients are served; once
/// the handshakes end (here by the handshake timeout), new clients are served again.
#[tokio::test(flavor = "multi_thread")]
async fn over_the_handshake_cap_new_connections_are_closed_and_established_ones_served() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.max_handshakes = 4;
    let server = TestServer::start(config).await;
    let port = server.addr.port();
    let mut established = RawConn::connect(server.addr).await;
    established.hello("steady").await;

    // Four peers that never say hello hold every handshake slot ...
    let mut idle = Vec::new();
    for n in 0..4 {
        idle.push(connect_from(&format!("127.0.0.{}", 20 + n), port).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... so a fifth is closed at once.
    let mut fifth = connect_from("127.0.0.30", port).await;
    assert!(
        closed_at_once(&mut fifth).await,
        "over the cap, closed at once"
    );
    assert!(
        rejected(
            &server,
            "usher_connections_rejected_total",
            Some("handshakes_limit"),
            1.0
        )
        .await
            >= 1.0
    );
    let granted = established.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");

    // The idle ones are closed by the handshake timeout (500 ms here): room again.
    for s in &mut idle {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    }
    let mut later = RawConn::connect(server.addr).await;
    later.hello("later").await;
}
