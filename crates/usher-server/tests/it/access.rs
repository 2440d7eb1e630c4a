//! The client allow-list and the per-address connection cap, with real sockets from
//! different loopback source addresses.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use usher_proto::{ErrorCode, request, response};

use crate::util::*;

async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads until the server closes; returns every byte it sent.
async fn bytes_until_close(mut stream: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got))
        .await
        .expect("the server closes the connection")
        .ok();
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_outside_the_allow_list_learns_nothing() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.allow = vec!["127.0.0.2/32".parse().unwrap()];
    let server = TestServer::start(config).await;

    // From 127.0.0.1 (not allowed): closed before a single byte, even after a Hello and
    // a status request.
    let mut stranger = connect_from("127.0.0.1", server.addr).await;
    let hello = usher_proto::Request {
        id: 1,
        kind: Some(usher_proto::request::Kind::Hello(hello("scanner"))),
    };
    let _ = usher_proto::write_frame(&mut stranger, &hello).await;
    assert!(
        bytes_until_close(stranger).await.is_empty(),
        "a refused peer is told nothing"
    );

    // From 127.0.0.2 (allowed): served.
    let allowed = connect_from("127.0.0.2", server.addr).await;
    let (rd, wr) = allowed.into_split();
    let mut conn = RawConn {
        reader: usher_proto::FrameReader::new(rd),
        writer: wr,
    };
    conn.hello("friend").await;
    conn.send(2, checkout("cad", 1, 1)).await;
    let granted = conn.recv().await.and_then(|r| r.kind);
    assert!(
        matches!(granted, Some(response::Kind::Granted(_))),
        "{granted:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_take_every_connection() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.max_connections_per_ip = 2;
    let server = TestServer::start(config).await;

    let mut held = Vec::new();
    for _ in 0..2 {
        let stream = connect_from("127.0.0.3", server.addr).await;
        let (rd, wr) = stream.into_split();
        let mut conn = RawConn {
            reader: usher_proto::FrameReader::new(rd),
            writer: wr,
        };
        conn.hello("greedy").await;
        held.push(conn);
    }
    // The third is refused, and told why in answer to its Hello (nothing else).
    let third = connect_from("127.0.0.3", server.addr).await;
    let (rd, wr) = third.into_split();
    let mut third = RawConn {
        reader: usher_proto::FrameReader::new(rd),
        writer: wr,
    };
    match third.call(1, request::Kind::Hello(hello("greedy"))).await {
        response::Kind::Error(e) => {
            assert_eq!(e.code(), ErrorCode::TooManyConnections, "{e:?}");
            assert!(
                e.message
                    .contains("too many connections from your address 127.0.0.3 (limit 2"),
                "{e:?}"
            );
        }
        other => panic!("the third connection is refused: {other:?}"),
    }
    assert!(third.recv().await.is_none(), "and closed");

    // Other addresses are unaffected, and a closed connection frees its slot.
    let mut other = RawConn::connect(server.addr).await;
    other.hello("someone else").await;
    drop(held.pop());
    let mut again = None;
    for _ in 0..200 {
        let stream = connect_from("127.0.0.3", server.addr).await;
        let (rd, wr) = stream.into_split();
        let mut conn = RawConn {
            reader: usher_proto::FrameReader::new(rd),
            writer: wr,
        };
        conn.send(1, usher_proto::request::Kind::Hello(hello("greedy")))
            .await;
        if conn.recv().await.is_some() {
            again = Some(conn);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the freed slot is usable again");
}

/// Status detail beyond totals is for administrators unless the configuration says
/// otherwise.
#[test]
fn an_unauthenticated_status_shows_totals_by_default() {
    let config = usher_server::Config::new("/nonexistent");
    assert_eq!(
        config.status_detail,
        usher_server::config::StatusDetail::Totals
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_on_the_client_port_shows_only_what_the_administrator_allows() {
    use usher_server::config::StatusDetail;
    for detail in [StatusDetail::Full, StatusDetail::Totals, StatusDetail::None] {
        let lic = Licensed::new(LICENSE);
        let mut config = lic.config();
        config.status_detail = detail;
        let server = TestServer::start(config.clone()).await;
        let mut holder = RawConn::connect(server.addr).await;
        holder.hello("alice").await;
        let granted = holder.call(2, checkout("cad", 1, 1)).await;
        assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");

        let mut peer = RawConn::connect(server.addr).await;
        let mut hello = hello("peer");
        hello.query_only = true;
        peer.welcome(hello).await;
        let answer = peer
            .call(
                2,
                request::Kind::Status(usher_proto::StatusRequest::default()),
            )
            .await;
        match (detail, answer) {
            (StatusDetail::Full, response::Kind::Status(r)) => {
                assert_eq!(holders(&r)[0].user, "alice");
            }
            (StatusDetail::Totals, response::Kind::Status(r)) => {
                assert_eq!(in_use(&r, "cad"), 1, "the totals are there");
                assert!(holders(&r).is_empty(), "but nobody's name: {r:#?}");
            }
            (StatusDetail::None, response::Kind::Error(e)) => {
                assert_eq!(e.code(), ErrorCode::NotPermitted, "{e:?}");
            }
            (detail, other) => panic!("{detail:?}: {other:?}"),
        }
        // The administrator always sees everything.
        let mut admin = usher_client::admin::AdminConnection::connect(
            &config.admin_socket(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let full = admin
            .call(request::Kind::Status(usher_proto::StatusRequest::default()))
            .await
            .unwrap();
        let response::Kind::Status(r) = full else {
            panic!("{full:?}")
        };
        assert_eq!(holders(&r)[0].user, "alice", "{detail:?}");
    }
}

/// A status request from `source` that presents `token`.
async fn token_status(source: &str, server: SocketAddr, token: &str) -> response::Kind {
    let stream = connect_from(source, server).await;
    let (rd, wr) = stream.into_split();
    let mut conn = RawConn {
        reader: usher_proto::FrameReader::new(rd),
        writer: wr,
    };
    let mut hello = hello("monitor");
    hello.query_only = true;
    conn.welcome(hello).await;
    conn.call(
        2,
        request::Kind::Status(usher_proto::StatusRequest {
            feature: String::new(),
            admin_token: token.to_string(),
            ..Default::default()
        }),
    )
    .await
}

/// The admin token opens the full status on the client port, for a monitoring tool that
/// needs holders (lmstat -a) from a server that shows everyone else totals only: from
/// `admin_from` only, with wrong tokens counted against the address on the client port
/// and the admin API alike.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_opens_the_full_status_from_admin_from_only() {
    use usher_server::auth::strikes::MAX_STRIKES;
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.status_detail = usher_server::config::StatusDetail::Totals;
    config.admin_from = vec![
        "127.0.0.4/32".parse().unwrap(),
        "127.0.0.5/32".parse().unwrap(),
    ];
    let server = TestServer::start(config).await;
    let mut holder = RawConn::connect(server.addr).await;
    holder.hello("alice").await;
    let granted = holder.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");

    // From admin_from, with the token: holders.
    match token_status("127.0.0.4", server.addr, &server.token).await {
        response::Kind::Status(r) => assert_eq!(holders(&r)[0].user, "alice", "{r:#?}"),
        other => panic!("{other:?}"),
    }
    // The right token from elsewhere: refused, and nothing about holders.
    match token_status("127.0.0.6", server.addr, &server.token).await {
        response::Kind::Error(e) => {
            assert_eq!(e.code(), ErrorCode::NotPermitted, "{e:?}");
            assert!(e.message.contains("admin_from"), "{e:?}");
        }
        other => panic!("outside admin_from: {other:?}"),
    }
    // A wrong token: refused, counted; enough of them throttle the address's wrong
    // tokens, on the admin API too, but never the right token.
    let wrong = "0".repeat(64);
    for _ in 0..MAX_STRIKES {
        match token_status("127.0.0.5", server.addr, &wrong).await {
            response::Kind::Error(e) => assert_eq!(e.code(), ErrorCode::NotPermitted, "{e:?}"),
            other => panic!("a wrong token: {other:?}"),
        }
    }
    match token_status("127.0.0.5", server.addr, &wrong).await {
        response::Kind::Error(e) => assert!(e.message.contains("too many"), "{e:?}"),
        other => panic!("throttled: {other:?}"),
    }
    let api = |token: String| {
        let admin = server.admin.unwrap();
        async move {
            crate::http::http_from(
                [127, 0, 0, 5],
                admin,
                "GET",
                "/api/v1/features",
                Some(&token),
                None,
            )
            .await
        }
    };
    assert_eq!(
        api(wrong.clone()).await.status,
        429,
        "the same count throttles the admin API"
    );
    match token_status("127.0.0.5", server.addr, &server.token).await {
        response::Kind::Status(r) => assert_eq!(holders(&r)[0].user, "alice", "{r:#?}"),
        other => panic!("the right token after ten wrong ones: {other:?}"),
    }
    assert_eq!(api(server.token.clone()).await.status, 200);
    let metrics = crate::http::http(server.admin.unwrap(), "GET", "/metrics", None, None).await;
    assert!(
        metrics.body.contains(&format!(
            "usher_admin_auth_failures_total {}",
            MAX_STRIKES + 2
        )),
        "{}",
        metrics.body
    );
    // Other admin_from addresses are unaffected.
    match token_status("127.0.0.4", server.addr, &server.token).await {
        response::Kind::Status(r) => assert_eq!(holders(&r).len(), 1),
        other => panic!("{other:?}"),
    }
}

/// By default only loopback may present the token.
#[test]
fn the_admin_token_is_accepted_from_loopback_by_default() {
    let config = usher_server::Config::new("/nonexistent");
    let ranges: Vec<String> = config.admin_from.iter().map(ToString::to_string).collect();
    assert_eq!(ranges, ["127.0.0.0/8", "::1/128"]);
}

/// A status request without the admin token names the license files but never where they
/// are (with `status_detail` totals and full alike); the admin token shows the paths.
#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_status_shows_no_license_file_paths() {
    use usher_server::config::StatusDetail;
    let lic = Licensed::new(LICENSE);
    let dir = lic.license.parent().unwrap().display().to_string();
    for detail in [StatusDetail::Totals, StatusDetail::Full] {
        let mut config = lic.config();
        config.status_detail = detail;
        let server = TestServer::start(config).await;
        let files = |kind: response::Kind| match kind {
            response::Kind::Status(r) => r.license_files,
            other => panic!("{other:?}"),
        };
        let anonymous = files(token_status("127.0.0.1", server.addr, "").await);
        assert_eq!(anonymous, ["acme.lic"], "{detail:?}");
        assert!(!anonymous.iter().any(|f| f.contains(&dir)), "{anonymous:?}");
        let admin = files(token_status("127.0.0.1", server.addr, &server.token).await);
        assert_eq!(admin, [lic.license.display().to_string()], "{detail:?}");
        server.shutdown().await.unwrap();
    }
}
