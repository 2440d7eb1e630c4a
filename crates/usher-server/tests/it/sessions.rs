//! Sessions and their failure modes: crashed clients, silent hosts, network blips,
//! half-open connections and server restarts. Every seat comes back exactly when it should,
//! and a client that is still there never loses one.

use std::time::Duration;

use usher_proto::{Heartbeat, request, response};

use crate::proxy::Proxy;
use crate::util::*;

const WAIT: Duration = Duration::from_secs(20);

/// Status shows exactly one seat held, `lease_id`, and its session connected.
fn one_connected_holder(report: &usher_client::StatusReport, lease_id: u64) -> bool {
    let h = holders(report);
    h.len() == 1 && h[0].lease_id == lease_id && h[0].connected
}

/// Samples the status every 100 ms for `period`, asserting each time that `lease_id` is
/// the only seat held and that its session is connected.
async fn stays_held(server: &TestServer, lease_id: u64, period: Duration, what: &str) {
    let until = tokio::time::Instant::now() + period;
    for _ in 0..1_000 {
        let report = server.status().await;
        assert!(
            one_connected_holder(&report, lease_id),
            "{what}: lease {lease_id} must stay held by a connected session: {report:#?}"
        );
        if tokio::time::Instant::now() >= until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_client_frees_its_seat_after_the_grace_and_a_goodbye_at_once() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    // A raw client that checks out and then vanishes without a goodbye (as when its
    // process is killed: the OS closes the socket).
    let mut raw = RawConn::connect(server.addr).await;
    raw.hello("crasher").await;
    let granted = raw.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");
    assert_eq!(in_use(&server.status().await, "cad"), 1);
    drop(raw);
    eventually(WAIT, "the crashed client's seat to come back", || async {
        (in_use(&server.status().await, "cad") == 0).then_some(())
    })
    .await;

    // A client that says goodbye frees its seats before the goodbye is acknowledged.
    let client = server.client().await;
    let license = client.checkout("cad").count(2).await.unwrap();
    assert_eq!(in_use(&server.status().await, "cad"), 2);
    std::mem::forget(license);
    client.close().await;
    let report = server.status().await;
    assert_eq!(in_use(&report, "cad"), 0, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_loses_its_seat_after_the_ttl_and_a_live_one_keeps_it() {
    let lic = Licensed::new(LICENSE);
    let config = lic.config();
    let ttl = config.session_ttl;
    let server = TestServer::start(config).await;
    // Stays connected, never heartbeats: like a host cut off the network.
    let mut silent = RawConn::connect(server.addr).await;
    silent.hello("silent").await;
    let granted = silent.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");
    // A well-behaved client, heartbeating in the background.
    let client = server.client().await;
    let kept = client.checkout("cad").await.unwrap();

    eventually(WAIT, "the silent client's seat to lapse", || async {
        one_connected_holder(&server.status().await, kept.lease_id()).then_some(())
    })
    .await;
    // The server also hangs up on the silent connection, without a word.
    let last = silent.recv().await;
    assert!(last.is_none(), "expected a close, got {last:?}");

    // The live client has held its seat for a TTL already; it keeps it for two more.
    stays_held(&server, kept.lease_id(), 2 * ttl, "a heartbeating client").await;
    assert!(kept.lost_reason().is_none(), "{:?}", kept.lost_reason());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_blip_resumes_the_session_with_the_same_single_seat() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let proxy = Proxy::start(server.addr).await;
    let client = client_for(proxy.port).await;
    let license = client.checkout("cad").await.unwrap();
    let session = holders(&server.status().await)[0].session_id;
    assert_eq!(proxy.accepted(), 1);

    proxy.cut_all();
    // The client notices, reconnects through the proxy and resumes.
    eventually(WAIT, "the client to reconnect", || async {
        (proxy.accepted() >= 2).then_some(())
    })
    .await;
    eventually(WAIT, "the session to be connected again", || async {
        one_connected_holder(&server.status().await, license.lease_id()).then_some(())
    })
    .await;
    // A request after the blip goes over the resumed session.
    client.status("").await.unwrap();
    let report = server.status().await;
    let h = holders(&report);
    assert_eq!(h.len(), 1, "exactly one seat held: {report:#?}");
    assert_eq!(h[0].lease_id, license.lease_id(), "the same lease");
    assert_eq!(h[0].session_id, session, "the same session");
    assert_eq!(in_use(&report, "cad"), 1, "{report:#?}");
    assert!(
        license.lost_reason().is_none(),
        "{:?}",
        license.lost_reason()
    );
}

/// The path dies without either end seeing a close: the client must notice the silence,
/// reconnect and resume; and when the server finally gives up on the old, dead
/// connection, that must not count against the session now carried by the new one.
#[tokio::test(flavor = "multi_thread")]
async fn a_half_open_connection_is_abandoned_and_the_session_resumed_on_a_new_one() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    // The client gives up on a silent connection after about four heartbeats; the TTL
    // leaves room to resume after that. A reconnect grace shorter than the heartbeat
    // means a session wrongly marked disconnected would lapse before it could heal, and a
    // TTL that is no multiple of the heartbeat keeps the server's giving up on the old
    // connection from coinciding with a heartbeat on the new one (which would hide that).
    config.heartbeat_interval = Duration::from_millis(400);
    config.session_ttl = Duration::from_millis(4200);
    config.reconnect_grace = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let proxy = Proxy::start(server.addr).await;
    let client = client_for(proxy.port).await;
    let license = client.checkout("cad").await.unwrap();
    let session = holders(&server.status().await)[0].session_id;

    proxy.freeze_all();
    eventually(
        WAIT,
        "the client to give up on the silent connection",
        || async { (proxy.accepted() >= 2).then_some(()) },
    )
    .await;
    eventually(WAIT, "the session to be resumed", || async {
        one_connected_holder(&server.status().await, license.lease_id()).then_some(())
    })
    .await;
    // The server closes the dead connection once it has been silent for a TTL.
    eventually(WAIT, "the server to drop the dead connection", || async {
        (proxy.closed_by_upstream() >= 1).then_some(())
    })
    .await;
    stays_held(
        &server,
        license.lease_id(),
        Duration::from_millis(1500),
        "after the server dropped the dead connection",
    )
    .await;
    let report = server.status().await;
    assert_eq!(holders(&report)[0].session_id, session, "{report:#?}");
    assert!(
        license.lost_reason().is_none(),
        "{:?}",
        license.lost_reason()
    );
    client
        .status("")
        .await
        .expect("the client works on its new connection");
}

/// With the shipped ratio of heartbeat to TTL (30 s to 120 s), a client whose connection
/// went dead without a close must notice and resume early enough in the TTL that its
/// session is still there to resume.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_connection_is_noticed_in_time_to_resume_with_the_default_ratio() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    let defaults = usher_server::Config::new("unused");
    config.heartbeat_interval = Duration::from_secs(1);
    config.session_ttl = config.heartbeat_interval
        * (defaults.session_ttl.as_secs() / defaults.heartbeat_interval.as_secs()) as u32;
    let server = TestServer::start(config).await;
    let proxy = Proxy::start(server.addr).await;
    let client = client_for(proxy.port).await;
    let license = client.checkout("cad").await.unwrap();

    proxy.freeze_all();
    eventually(
        WAIT,
        "the client to give up on the dead connection",
        || async { (proxy.accepted() >= 2).then_some(()) },
    )
    .await;
    eventually(WAIT, "the client to resume or lose its seat", || async {
        let report = server.status().await;
        (one_connected_holder(&report, license.lease_id()) || license.lost_reason().is_some())
            .then_some(report)
    })
    .await;
    assert!(
        license.lost_reason().is_none(),
        "the client came back too late: {:?}",
        license.lost_reason()
    );
    client.status("").await.expect("the client works again");
    let report = server.status().await;
    assert!(
        one_connected_holder(&report, license.lease_id()),
        "the same single seat: {report:#?}"
    );
}

/// The same as above, step by step with raw connections: a session resumed on a new
/// connection while the old one is still open, then the old one closes without a goodbye.
#[tokio::test(flavor = "multi_thread")]
async fn closing_a_superseded_connection_does_not_end_the_resumed_session() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.heartbeat_interval = Duration::from_secs(1);
    config.session_ttl = Duration::from_secs(20);
    config.reconnect_grace = Duration::from_millis(100);
    let server = TestServer::start(config).await;

    let mut old = RawConn::connect(server.addr).await;
    let welcome = old.welcome(hello("roamer")).await;
    let response::Kind::Granted(granted) = old.call(2, checkout("cad", 1, 1)).await else {
        panic!("the first seat is free");
    };

    let mut new = RawConn::connect(server.addr).await;
    let resumed = new.welcome(resume("roamer", &welcome)).await;
    assert!(resumed.resumed, "{resumed:?}");
    let leases: Vec<u64> = resumed.leases.iter().map(|l| l.lease_id).collect();
    assert_eq!(leases, [granted.lease_id], "the resumed session's leases");

    // The old connection ends without a goodbye. The session lives on the new one: it is
    // neither disconnected nor subject to the reconnect grace.
    drop(old);
    stays_held(
        &server,
        granted.lease_id,
        Duration::from_secs(1),
        "after the superseded connection closed",
    )
    .await;
    let ack = new.call(3, request::Kind::Heartbeat(Heartbeat {})).await;
    assert!(
        matches!(ack, response::Kind::HeartbeatAck(_)),
        "the session must still be alive: {ack:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_restart_keeps_every_seat_and_clients_resume() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let client = server.client().await;
    let license = client.checkout("cad").count(2).await.unwrap();

    // Same data directory, same port, so the client can find it again.
    let server = server.restart().await;
    let report = server.status().await;
    assert_eq!(
        in_use(&report, "cad"),
        2,
        "the seats survived the restart: {report:#?}"
    );
    assert_eq!(
        holders(&report)
            .iter()
            .map(|h| h.lease_id)
            .collect::<Vec<_>>(),
        [license.lease_id()],
        "the same lease: {report:#?}"
    );
    eventually(WAIT, "the client to resume", || async {
        one_connected_holder(&server.status().await, license.lease_id()).then_some(())
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
    server.shutdown().await.expect("a clean stop");
}
