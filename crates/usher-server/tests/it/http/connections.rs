//! Connection limits: the `Host` check, and idle connections capped and closed.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::start;
use crate::util::{Licensed, TestServer};

/// Sends `head` (a raw request head, `\r\n\r\n` included) on a fresh connection and
/// returns the status code of the answer.
async fn raw_status(addr: SocketAddr, head: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"))
}

/// The admin API answers only requests that name it: its own address, `localhost` on
/// loopback, or a configured name. A page whose DNS name is rebound to the listener
/// sends its own name and is refused (421); a request without `Host` gets 400.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_naming_another_host_is_refused() {
    let lic = Licensed::new(crate::util::LICENSE);
    let mut config = lic.config();
    config.admin_hosts = vec!["licserver.example.com".into()];
    let server = TestServer::start(config).await;
    let admin = server.admin.unwrap();
    let port = admin.port();
    let get = |host: Option<String>| {
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        format!("GET /healthz HTTP/1.1\r\n{host}Connection: close\r\n\r\n")
    };
    for (host, want) in [
        (Some(format!("127.0.0.1:{port}")), 200),
        (Some(format!("localhost:{port}")), 200),
        (Some(format!("licserver.example.com:{port}")), 200),
        (Some(format!("rebound.attacker.example:{port}")), 421),
        (Some(format!("127.0.0.1:{}", port + 1)), 421),
        (None, 400),
    ] {
        assert_eq!(
            raw_status(admin, &get(host.clone())).await,
            want,
            "Host {host:?}"
        );
    }
    // The API too, with the right token: the Host check comes first.
    let api = format!(
        "GET /api/v1/features HTTP/1.1\r\nHost: rebound.attacker.example:{port}\r\n\
         Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
        server.token
    );
    assert_eq!(raw_status(admin, &api).await, 421);
}

/// Raises this process's open-file limit to hold `n` more descriptors, if the hard limit
/// allows; returns whether it does.
fn room_for_descriptors(n: u64) -> bool {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let want = n + 512;
    if limit.current.is_some_and(|c| c >= want) {
        return true;
    }
    if limit.maximum.is_some_and(|m| m < want) {
        eprintln!("skipped: the hard open-file limit is below {want}");
        return false;
    }
    limit.current = Some(want);
    setrlimit(Resource::Nofile, limit).is_ok()
}

/// 1,000 idle connections to the admin listener: those beyond its cap are closed at
/// once, the rest when their header-read timeout passes, and then the API answers again.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_connections_are_capped_and_closed() {
    use usher_server::http::listener::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
    const IDLE: usize = 1_000;
    if !room_for_descriptors(2 * IDLE as u64) {
        return;
    }
    let (_lic, server) = start().await;
    let admin = server.admin.unwrap();
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    let started = std::time::Instant::now();
    let first = closed_within(idle, Duration::from_secs(3)).await;
    let closed_at_once = first.iter().filter(|(c, _)| *c).count();
    assert!(
        closed_at_once >= IDLE - MAX_CONNECTIONS,
        "only {closed_at_once} of {IDLE} idle connections were closed at once (cap {MAX_CONNECTIONS})"
    );
    let idle: Vec<_> = first
        .into_iter()
        .filter(|(c, _)| !c)
        .map(|(_, s)| s)
        .collect();
    let rest = idle.len();
    let second = closed_within(idle, HEADER_READ_TIMEOUT + Duration::from_secs(10)).await;
    let still_open = second.iter().filter(|(c, _)| !c).count();
    assert_eq!(
        still_open,
        0,
        "{still_open} of {rest} idle connections were still open {:?} after connecting",
        started.elapsed()
    );
    assert_eq!(
        server.get("/api/v1/features").await.status,
        200,
        "the API answers again"
    );
}

/// Reads each stream concurrently for at most `limit`: whether the server closed it (a
/// read returned end of stream or failed), with the stream.
async fn closed_within(
    streams: Vec<tokio::net::TcpStream>,
    limit: Duration,
) -> Vec<(bool, tokio::net::TcpStream)> {
    let handles: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let read = tokio::time::timeout(limit, s.read(&mut buf)).await;
                (matches!(read, Ok(Ok(0)) | Ok(Err(_))), s)
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
