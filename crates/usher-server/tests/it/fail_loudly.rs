//! Failing loudly: a panic in the ledger task, the store committer or the UDP task stops
//! the server with the reason (usherd exits non-zero), and the next start recovers the
//! held seats. The faults are injected through the `fault-injection` feature, which only
//! these tests enable.

use std::time::Duration;

use usher_proto::response;
use usher_server::ServerError;
use usher_server::fault;

use crate::recovery::Usherd;
use crate::util::*;

/// Holds one seat of `cad`, then asks for `feature` (a fault trigger) on a second
/// connection, and returns the first one (still open) with its lease.
/// Returns both connections with the lease: the trigger must stay open, since a peer that
/// closes with an answer unread resets the connection, and a reset may discard the
/// request before the server reads it.
async fn hold_then_trigger(addr: std::net::SocketAddr, feature: &str) -> ([RawConn; 2], u64) {
    let mut holder = RawConn::connect(addr).await;
    holder.hello("alice").await;
    let lease = match holder.call(2, checkout("cad", 1, 1)).await {
        response::Kind::Granted(g) => g.lease_id,
        other => panic!("expected a grant, got {other:?}"),
    };
    let mut trigger = RawConn::connect(addr).await;
    trigger.hello("mallory").await;
    trigger.send(2, checkout(feature, 1, 1)).await;
    ([holder, trigger], lease)
}

async fn assert_stops_with(server: TestServer, reason: &str) -> usher_server::Config {
    let config = server.config.clone();
    match server.stopped().await {
        Err(ServerError::Failed(why)) => assert!(why.contains(reason), "stopped with: {why}"),
        other => panic!("expected the server to fail with {reason:?}, got {other:?}"),
    }
    config
}

async fn assert_recovers_lease(config: usher_server::Config, lease: u64) {
    let server = TestServer::start(config).await;
    let report = server.status().await;
    assert!(
        holders(&report).iter().any(|h| h.lease_id == lease),
        "the seat held before the failure is recovered: {report:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_task_panic_stops_the_server_and_a_restart_recovers() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let (_conns, lease) = hold_then_trigger(server.addr, fault::LEDGER_PANIC).await;
    let config = assert_stops_with(server, "ledger task panicked").await;
    assert_recovers_lease(config, lease).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_committer_panic_stops_the_server_and_a_restart_recovers() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let (_conns, lease) = hold_then_trigger(server.addr, fault::COMMITTER_PANIC).await;
    // A quiet server commits a one-request batch on the ledger task itself, so the panic
    // may surface there or on the committer thread; either stops the server.
    let config = assert_stops_with(server, "panicked: injected fault: store committer").await;
    assert_recovers_lease(config, lease).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_udp_task_panic_stops_the_server() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(fault::UDP_PANIC, server.addr).await.unwrap();
    assert_stops_with(server, "UDP task panicked").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn usherd_exits_non_zero_with_the_reason_logged_when_its_ledger_task_panics() {
    let lic = Licensed::new(LICENSE);
    let mut usherd =
        Usherd::start_binary(env!("CARGO_BIN_EXE_usherd-with-faults"), &lic, None).await;
    let (_conns, lease) = hold_then_trigger(usherd.addr(), fault::LEDGER_PANIC).await;
    let mut status = None;
    for _ in 0..600 {
        status = usherd.child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = usherd.log_text();
    let status = status.unwrap_or_else(|| panic!("usherd did not exit within 30 s: {log}"));
    assert!(!status.success(), "usherd exits non-zero: {status}; {log}");
    assert!(
        log.contains("fatal: the ledger task panicked: injected fault"),
        "the reason is logged: {log}"
    );
    // A supervisor's restart serves the seat held before the panic.
    let port = usherd.port;
    drop(usherd);
    let usherd = Usherd::start(&lic, Some(port)).await;
    let report = status_of(usherd.port).await;
    assert!(
        holders(&report).iter().any(|h| h.lease_id == lease),
        "the seat held before the panic is recovered: {report:?}"
    );
}
