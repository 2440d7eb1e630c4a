//! Serving: grants, refusals, versions, sessions and their failure modes.

use std::time::Duration;

use usher_client::ClientError;
use usher_proto::{DenyReason, response};

use crate::util::*;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn grants_every_seat_then_refuses_with_the_reason_then_grants_after_a_checkin() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let client = server.client().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            client
                .checkout("cad", "2025", 1)
                .await
                .expect("a seat is free"),
        );
    }
    let refused = server.client().await.checkout("cad", "2025", 1).await;
    let Err(ClientError::Denied(d)) = refused else {
        panic!("expected a refusal: {refused:?}")
    };
    assert_eq!(d.reason, DenyReason::AllInUse);
    assert_eq!((d.in_use, d.total), (3, 3));
    assert!(d.message.contains("all 3 seats"), "{}", d.message);

    drop(held.pop());
    let other = server.client().await;
    let _again = eventually(WAIT, "a grant after the checkin", || async {
        other.checkout("cad", "2025", 1).await.ok()
    })
    .await;
    assert_eq!(in_use(&server.status().await, "cad"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_entitlement_is_refused_alone() {
    let lic = Licensed::new(LICENSE);
    // Raise cad's count after signing: its signature no longer verifies.
    let text = std::fs::read_to_string(&lic.license).unwrap();
    std::fs::write(
        &lic.license,
        text.replacen("permanent 3", "permanent 300", 1),
    )
    .unwrap();

    let keys = usher_server::licenses::load_keys(std::slice::from_ref(&lic.public)).unwrap();
    let today = chrono::Utc::now().date_naive();
    let loaded = usher_server::licenses::load(
        std::slice::from_ref(&lic.license),
        &keys,
        &usher_license::host_ids(),
        today,
    )
    .unwrap();
    assert_eq!(loaded.refused.len(), 1, "{:?}", loaded.refused);
    assert!(
        loaded.refused[0].contains("acme.lic:1:"),
        "names the line: {}",
        loaded.refused[0]
    );
    assert!(loaded.refused[0].contains("cad"), "{}", loaded.refused[0]);

    let server = TestServer::start(lic.config()).await;
    let client = server.client().await;
    match client.checkout("cad", "", 1).await {
        Err(ClientError::Denied(d)) => assert_eq!(d.reason, DenyReason::UnknownFeature),
        other => panic!("the tampered feature must not serve: {other:?}"),
    }
    client
        .checkout("sim", "", 1)
        .await
        .expect("the untouched feature still serves");
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_and_dates_are_enforced() {
    let today = chrono::Utc::now().date_naive();
    let fmt = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let lic = Licensed::new(&format!(
        "FEATURE cad acme 2025.10 permanent 2 HOSTID=ANY\n\
         FEATURE old acme 1 {} 2 HOSTID=ANY\n\
         FEATURE new acme 1 permanent 2 HOSTID=ANY START={}\n",
        fmt(today - chrono::Days::new(3)),
        fmt(today + chrono::Days::new(3)),
    ));
    let server = TestServer::start(lic.config()).await;
    let client = server.client().await;
    let granted = client
        .checkout("cad", "2025.9", 1)
        .await
        .expect("2025.10 serves 2025.9");
    assert_eq!(granted.version(), "2025.10");
    let reason = |r: Result<usher_client::License, ClientError>| match r {
        Err(ClientError::Denied(d)) => (d.reason, d.message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (r, msg) = reason(client.checkout("cad", "2025.11", 1).await);
    assert_eq!(r, DenyReason::VersionTooNew, "{msg}");
    assert_eq!(
        reason(client.checkout("old", "", 1).await).0,
        DenyReason::Expired
    );
    assert_eq!(
        reason(client.checkout("new", "", 1).await).0,
        DenyReason::NotYetStarted
    );
    assert_eq!(
        reason(client.checkout("nope", "", 1).await).0,
        DenyReason::UnknownFeature
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_client_frees_its_seat_after_the_grace_and_a_goodbye_at_once() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    // A raw client that checks out and then vanishes without a goodbye (as when its
    // process is killed: the OS closes the socket).
    let mut raw = RawConn::connect(server.addr).await;
    raw.hello("crasher").await;
    raw.send(2, checkout("cad", 1, 1)).await;
    assert!(matches!(
        raw.recv().await.and_then(|r| r.kind),
        Some(response::Kind::Granted(_))
    ));
    assert_eq!(in_use(&server.status().await, "cad"), 1);
    drop(raw);
    eventually(WAIT, "the crashed client's seat to come back", || async {
        (in_use(&server.status().await, "cad") == 0).then_some(())
    })
    .await;

    // A client that says goodbye frees its seat before the goodbye is acknowledged.
    let client = server.client().await;
    let license = client.checkout("cad", "", 2).await.unwrap();
    std::mem::forget(license);
    client.close().await;
    assert_eq!(in_use(&server.status().await, "cad"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_loses_its_seat_after_the_ttl_and_a_live_one_keeps_it() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    // Stays connected, never heartbeats: like a host cut off the network.
    let mut silent = RawConn::connect(server.addr).await;
    silent.hello("silent").await;
    silent.send(2, checkout("cad", 1, 1)).await;
    assert!(silent.recv().await.is_some());
    // A well-behaved client holds its seat through several TTLs.
    let client = server.client().await;
    let kept = client.checkout("cad", "", 1).await.unwrap();

    eventually(WAIT, "the silent client's seat to lapse", || async {
        (in_use(&server.status().await, "cad") == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // more than one 2 s TTL
    let report = server.status().await;
    assert_eq!(
        in_use(&report, "cad"),
        1,
        "the heartbeating client keeps its seat: {report:?}"
    );
    assert!(kept.lost_reason().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_checkout_never_takes_a_second_seat() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let mut raw = RawConn::connect(server.addr).await;
    raw.hello("retry").await;
    let mut leases = Vec::new();
    for id in [2, 3] {
        raw.send(id, checkout("cad", 1, 77)).await;
        match raw.recv().await.and_then(|r| r.kind) {
            Some(response::Kind::Granted(g)) => leases.push(g.lease_id),
            other => panic!("expected a grant, got {other:?}"),
        }
    }
    assert_eq!(leases[0], leases[1], "same client_ref, same lease");
    assert_eq!(in_use(&server.status().await, "cad"), 1);
}

/// A TCP proxy whose connections the test can cut, to simulate a network blip.
struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            accepted,
        }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_blip_resumes_the_session_with_the_same_single_seat() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let proxy = Proxy::start(server.addr).await;
    let client = client_for(proxy.port).await;
    let license = client.checkout("cad", "", 1).await.unwrap();
    let session = server.status().await.features[0].holders[0].session_id;

    let connections = |p: &Proxy| p.accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(connections(&proxy), 1);
    proxy.cut_all();
    // The client notices, reconnects through the proxy and resumes.
    eventually(WAIT, "the client to reconnect", || async {
        (connections(&proxy) >= 2).then_some(())
    })
    .await;
    eventually(WAIT, "the session to be connected again", || async {
        let r = server.status().await;
        r.features
            .iter()
            .flat_map(|f| &f.holders)
            .all(|h| h.connected)
            .then_some(())
    })
    .await;
    // A request after the blip goes over the resumed session.
    client.status("").await.unwrap();
    let report = server.status().await;
    let holders: Vec<_> = report.features.iter().flat_map(|f| &f.holders).collect();
    assert_eq!(holders.len(), 1, "exactly one seat held: {report:?}");
    assert_eq!(holders[0].lease_id, license.lease_id(), "the same lease");
    assert_eq!(holders[0].session_id, session, "the same session");
    assert!(license.lost_reason().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_restart_keeps_every_seat_and_clients_resume() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let port = server.addr.port();
    let client = server.client().await;
    let license = client.checkout("cad", "", 2).await.unwrap();
    server
        .shutdown()
        .await
        .expect("run returns Ok after a graceful stop");

    let mut config = lic.config();
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let server = TestServer::start(config).await;
    let report = server.status().await;
    assert_eq!(
        in_use(&report, "cad"),
        2,
        "the seats survived the restart: {report:?}"
    );
    eventually(WAIT, "the client to resume", || async {
        let r = server.status().await;
        r.features
            .iter()
            .flat_map(|f| &f.holders)
            .all(|h| h.connected)
            .then_some(())
    })
    .await;
    client
        .status("")
        .await
        .expect("the client works after the restart");
    assert!(
        license.lost_reason().is_none(),
        "{:?}",
        license.lost_reason()
    );
    assert_eq!(
        server.status().await.features[0].holders[0].lease_id,
        license.lease_id()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overdraft_seats_are_granted_beyond_the_count_and_flagged_everywhere() {
    let lic = Licensed::new("FEATURE od acme 1 permanent 1 HOSTID=ANY OVERDRAFT=1\n");
    let server = TestServer::start(lic.config()).await;
    let client = server.client().await;
    let first = client.checkout("od", "", 1).await.unwrap();
    let second = client
        .checkout("od", "", 1)
        .await
        .expect("the overdraft seat");
    assert!(!first.overdraft() && second.overdraft());
    match client.checkout("od", "", 1).await {
        Err(ClientError::Denied(d)) => {
            assert_eq!(
                (d.reason, d.in_use, d.total),
                (DenyReason::AllInUse, 2, 1),
                "{d:?}"
            );
        }
        other => panic!("beyond count + overdraft must be refused: {other:?}"),
    }
    let report = server.status().await;
    let flags: Vec<(u64, bool)> = report.features[0]
        .holders
        .iter()
        .map(|h| (h.lease_id, h.overdraft))
        .collect();
    assert!(flags.contains(&(second.lease_id(), true)), "{report:?}");
    assert!(flags.contains(&(first.lease_id(), false)), "{report:?}");
}
