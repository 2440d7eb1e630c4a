//! Status at scale: 100,000 holders and a queue, held by many leases over a few
//! connections, read whole by the client library (page by page, each within a frame) and
//! cut to one frame, with a note, for a client that does not ask for pages.

use std::time::{Duration, Instant};

use usher_proto::{Request, StatusRequest, request, response};

use crate::util::*;

pub const HOLDERS: u64 = 100_000;
pub const CONNECTIONS: u64 = 20;
const QUEUED_CONNECTIONS: u64 = 10;
const QUEUED_PER_CONNECTION: u64 = 100;
/// Checkouts waiting in [`hundred_thousand_holders`]'s queue.
pub const QUEUED: u64 = QUEUED_CONNECTIONS * QUEUED_PER_CONNECTION;

/// A raw connection as `user` that sends `count` checkouts of one seat of `feature`
/// (pipelined: a task writes while this one reads), each granted (or, with `wait`, queued).
pub async fn pipelined(
    addr: std::net::SocketAddr,
    user: &str,
    feature: &str,
    count: u64,
    wait: bool,
) -> RawConn {
    let mut conn = RawConn::connect(addr).await;
    conn.hello(user).await;
    let RawConn { mut reader, writer } = conn;
    let feature = feature.to_owned();
    let sender = tokio::spawn(async move {
        let mut writer = writer;
        for n in 0..count {
            let kind = request::Kind::Checkout(usher_proto::Checkout {
                feature: feature.clone(),
                count: 1,
                // No idempotency key for plain grants: a retried checkout is looked up
                // among the session's leases, which thousands of them make slow.
                client_ref: if wait { n + 1 } else { 0 },
                wait,
                ..usher_proto::Checkout::default()
            });
            let req = Request {
                id: n + 2,
                kind: Some(kind),
            };
            usher_proto::write_frame(&mut writer, &req)
                .await
                .expect("sending a checkout");
        }
        writer
    });
    for _ in 0..count {
        let got = tokio::time::timeout(
            Duration::from_secs(60),
            reader.read::<usher_proto::Response>(),
        )
        .await
        .expect("an answer within 60 s")
        .expect("a readable answer")
        .expect("the server keeps the connection");
        match got.kind {
            Some(response::Kind::Granted(_)) if !wait => {}
            Some(response::Kind::Queued(_)) if wait => {}
            other => panic!("{user}: unexpected answer {other:?}"),
        }
    }
    let writer = sender.await.expect("the sender task");
    RawConn { reader, writer }
}

/// A server with [`HOLDERS`] holders of `big` (users `user-00`..., [`CONNECTIONS`]
/// connections of one session each), one holder of `tiny` (user `first`) and a queue of
/// `QUEUED_CONNECTIONS * QUEUED_PER_CONNECTION` checkouts of `tiny` (users `waiter-N`),
/// with the connections that keep them.
pub async fn hundred_thousand_holders() -> (Licensed, TestServer, Vec<RawConn>) {
    let lic = Licensed::new(
        "FEATURE big acme 1.0 permanent 200000 HOSTID=ANY\n\
         FEATURE tiny acme 1.0 permanent 1 HOSTID=ANY\n",
    );
    let mut config = lic.config();
    // The connections pipeline thousands of checkouts each; long timings keep them.
    config.max_request_rate = 0;
    config.session_ttl = Duration::from_secs(300);
    config.heartbeat_interval = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    let started = Instant::now();
    let per = HOLDERS / CONNECTIONS;
    let mut fills = Vec::new();
    for c in 0..CONNECTIONS {
        let addr = server.addr;
        fills.push(tokio::spawn(async move {
            pipelined(addr, &format!("user-{c:02}"), "big", per, false).await
        }));
    }
    let mut conns = Vec::new();
    for f in fills {
        conns.push(f.await.expect("a filling task"));
    }
    // One holder of `tiny`, and a queue behind it.
    conns.push(pipelined(server.addr, "first", "tiny", 1, false).await);
    for c in 0..QUEUED_CONNECTIONS {
        conns.push(
            pipelined(
                server.addr,
                &format!("waiter-{c}"),
                "tiny",
                QUEUED_PER_CONNECTION,
                true,
            )
            .await,
        );
    }
    eprintln!("{HOLDERS} holders in {:?}", started.elapsed());
    (lic, server, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_holders_and_a_queue_are_read_whole_and_old_clients_get_a_page() {
    let (_lic, server, conns) = hundred_thousand_holders().await;

    // The client library walks the pages: every holder, once, and the whole queue.
    let read = Instant::now();
    let report = server.status().await;
    eprintln!("full status read in {:?}", read.elapsed());
    let mut ids: Vec<u64> = holders(&report).iter().map(|h| h.lease_id).collect();
    assert_eq!(ids.len() as u64, HOLDERS + 1);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, HOLDERS + 1, "a holder appears twice");
    assert_eq!(in_use(&report, "big"), HOLDERS as u32);
    let queued = QUEUED_CONNECTIONS * QUEUED_PER_CONNECTION;
    assert_eq!(report.queue.len() as u64, queued);
    assert_eq!(report.holders_total, HOLDERS + 1);
    assert_eq!(report.queue_total, queued);
    assert!(!report.truncated);
    let positions: Vec<u32> = report.queue.iter().map(|q| q.position).collect();
    assert_eq!(positions, (1..=queued as u32).collect::<Vec<_>>());

    // One feature only.
    let client = server.client().await;
    let tiny = client.status("tiny").await.expect("status of tiny");
    assert_eq!(holders(&tiny).len(), 1);
    assert_eq!(tiny.queue.len() as u64, queued);

    // A client that does not page (no page_size, as before paging existed) gets the first
    // page that fits in a frame (its reader would refuse more), and the totals.
    let mut old = RawConn::connect(server.addr).await;
    let mut hello = hello("monitor");
    hello.query_only = true;
    old.welcome(hello).await;
    let answer = old
        .call(
            2,
            request::Kind::Status(StatusRequest {
                feature: String::new(),
                admin_token: String::new(),
                ..StatusRequest::default()
            }),
        )
        .await;
    let response::Kind::Status(first) = answer else {
        panic!("expected a status, got {answer:?}");
    };
    let shown = holders(&first).len() as u64;
    assert!(shown > 100 && shown < HOLDERS, "{shown}");
    assert!(first.truncated);
    assert_eq!(first.holders_total, HOLDERS + 1);
    assert_eq!(first.holders_not_shown(), HOLDERS + 1 - shown);
    assert_eq!(
        in_use(&first, "big"),
        HOLDERS as u32,
        "the totals are whole"
    );
    drop(conns);
}
