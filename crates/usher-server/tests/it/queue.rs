//! Waiting for a seat through the client library: granted when one frees, told its
//! position, withdrawn when the caller gives up, re-queued after a server restart, and
//! visible in status.

use std::time::Duration;

use usher_client::{Client, ClientError, DenyReason, License, QueuePosition, QueueWait};

use crate::proxy::Proxy;
use crate::util::*;

const WAIT: Duration = Duration::from_secs(20);

const ONE_SEAT: &str = "FEATURE cad acme 2025 permanent 1 HOSTID=ANY\n";

type Waiting = tokio::task::JoinHandle<(Client, Result<License, ClientError>)>;

/// Starts a checkout of one `cad` seat that waits indefinitely; returns the task and a
/// follower of its place in the queue.
async fn wait_for_seat(client: Client) -> (Waiting, QueuePosition) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut checkout = client.checkout("cad").wait(QueueWait::Indefinitely);
        let _ = tx.send(checkout.queue_position());
        let license = checkout.await;
        (client, license)
    });
    let position = rx
        .await
        .expect("the checkout task sends its queue position");
    (task, position)
}

/// Waits until the server has put the checkout at `place` in the queue.
async fn at_place(position: &mut QueuePosition, place: u32) {
    while position.get() != place {
        let now = position.changed().await;
        assert!(
            now.is_some(),
            "the checkout ended before reaching place {place}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_client_is_told_its_position_and_granted_when_the_seat_frees() {
    let lic = Licensed::new(ONE_SEAT);
    let server = TestServer::start(lic.config()).await;
    let holder = server.client().await;
    let held = holder.checkout("cad").await.unwrap();

    let (wait1, mut pos1) = wait_for_seat(server.client().await).await;
    at_place(&mut pos1, 1).await;
    let (wait2, mut pos2) = wait_for_seat(server.client().await).await;
    at_place(&mut pos2, 2).await;

    let report = server.status().await;
    let queue: Vec<(u32, u32)> = report.queue.iter().map(|q| (q.position, q.count)).collect();
    assert_eq!(queue, vec![(1, 1), (2, 1)], "{report:#?}");
    assert_eq!(in_use(&report, "cad"), 1);

    // A client that will not wait is refused while others queue, with a clear reason.
    let impatient = server.client().await;
    match impatient.checkout("cad").await {
        Err(ClientError::Denied(d)) => assert_eq!(d.reason, DenyReason::AllInUse, "{d:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    drop(held);
    let (first, license) = tokio::time::timeout(WAIT, wait1).await.unwrap().unwrap();
    let license = license.expect("the first in line is granted the freed seat");
    assert_eq!(license.feature(), "cad");
    // The second moves up.
    at_place(&mut pos2, 1).await;
    drop(license);
    let (_second, license) = tokio::time::timeout(WAIT, wait2).await.unwrap().unwrap();
    license.expect("then the second");
    drop(first);
    drop(holder);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_that_runs_out_is_refused_and_leaves_the_queue() {
    let lic = Licensed::new(ONE_SEAT);
    let server = TestServer::start(lic.config()).await;
    let holder = server.client().await;
    let _held = holder.checkout("cad").await.unwrap();
    let waiter = server.client().await;
    let outcome = waiter
        .checkout("cad")
        .wait(QueueWait::For(Duration::from_millis(600)))
        .await;
    match outcome {
        Err(ClientError::Denied(d)) => {
            assert_eq!(d.reason, DenyReason::WaitTimedOut, "{d:?}");
            assert!(d.message.contains("\"cad\""), "{d:?}");
        }
        other => panic!("expected the wait to run out, got {other:?}"),
    }
    assert!(server.status().await.queue.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_stops_waiting_leaves_the_queue() {
    let lic = Licensed::new(ONE_SEAT);
    let server = TestServer::start(lic.config()).await;
    let holder = server.client().await;
    let held = holder.checkout("cad").await.unwrap();
    let waiter = server.client().await;
    let (waiting, mut pos) = wait_for_seat(waiter.clone()).await;
    at_place(&mut pos, 1).await;
    waiting.abort();
    // Within a heartbeat or so the client withdraws it; the freed seat then stays free.
    eventually(WAIT, "the abandoned request to leave the queue", || async {
        server.status().await.queue.is_empty().then_some(())
    })
    .await;
    drop(held);
    eventually(WAIT, "the seat to be free", || async {
        (in_use(&server.status().await, "cad") == 0).then_some(())
    })
    .await;
    drop(waiter);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_client_waits_through_a_restart_and_a_network_blip() {
    let lic = Licensed::new(ONE_SEAT);
    let server = TestServer::start(lic.config()).await;
    let proxy = Proxy::start(server.addr).await;
    let holder = server.client().await;
    let held = holder.checkout("cad").await.unwrap();
    let (waiting, mut pos) = wait_for_seat(client_for(proxy.port).await).await;
    at_place(&mut pos, 1).await;

    // The queue is soft state: a restart forgets it, and the waiting client queues again
    // when it resumes.
    let server = server.restart().await;
    eventually(
        WAIT,
        "the waiter to queue again after the restart",
        || async { (server.status().await.queue.len() == 1).then_some(()) },
    )
    .await;
    // The holder's session resumes too, and the seat is still held.
    assert_eq!(in_use(&server.status().await, "cad"), 1);
    proxy.cut_all();
    eventually(
        WAIT,
        "the waiter to be queued over a new connection",
        || async {
            (proxy.accepted() >= 3 && server.status().await.queue.len() == 1).then_some(())
        },
    )
    .await;
    drop(held);
    let (_waiter, license) = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    let license = license.expect("granted once the holder lets go");
    let report = server.status().await;
    let h = holders(&report);
    assert_eq!(h.len(), 1, "one seat, held by the waiter: {report:#?}");
    assert_eq!(h[0].lease_id, license.lease_id());
    drop(holder);
}
