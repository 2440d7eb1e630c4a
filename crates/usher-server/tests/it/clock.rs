//! Ledger time across restarts: a server never stamps a change earlier than one already
//! in its store, even when the store holds times its clock has not reached (as after a
//! restart on a clock that was stepped back).

use std::time::Duration;

use usher_client::QueueWait;
use usher_core::{Change, ClientInfo, Lease, LeaseId, ReleaseReason, Session, SessionId};
use usher_server::Config;
use usher_server::clock::wall_clock_ms;
use usher_store::{SqliteStore, UsageRecord};

use crate::util::{LICENSE, Licensed, TestServer};

const DAY_MS: u64 = 86_400_000;

/// A session of someone else's, opened at `at`.
fn session(at: u64) -> Session {
    Session {
        id: SessionId(1),
        secret_hash: [1; 32],
        client: ClientInfo {
            user: "ada".into(),
            host: "ws1".into(),
            display: "/dev/pts/1".into(),
            pid: 7,
            program: "cad".into(),
            program_version: "1".into(),
            address: "10.0.0.1:5000".into(),
        },
        opened_at: at,
        expires_at: 0,
        connected: false,
        detached: false,
    }
}

/// One `cad` seat held by `session`, granted at `granted_at`.
fn lease(granted_at: u64) -> Lease {
    Lease {
        id: LeaseId(1_000_000),
        session: SessionId(1),
        feature: "cad".into(),
        vendor: "acme".into(),
        requested_version: "2025".into(),
        pool_version: "2025".into(),
        count: 1,
        granted_at,
        client_ref: 0,
        overdraft: false,
        lingering_until: None,
        borrowed_until: None,
        token_for: None,
    }
}

/// Starts a server with `config`, checks a `cad` seat out and drops it, stops it, and
/// returns the usage records it wrote (those after `after_seq`) and the newest seq.
async fn one_run(config: Config, after_seq: i64) -> (Vec<UsageRecord>, i64) {
    let path = config.store_path();
    let server = TestServer::start(config).await;
    let client = server.client().await;
    let seat = client.checkout("cad").await.expect("a cad seat");
    drop(seat);
    client.close().await;
    server.shutdown().await.expect("a clean stop");
    let store = SqliteStore::open_read_only(&path).unwrap();
    let records = store.usage_log(after_seq, 10_000).unwrap();
    (records, newest_seq(&store, after_seq))
}

/// [`one_run`] on `lic`'s store, returning the times of the records.
async fn records_of_one_run(lic: &Licensed, after_seq: i64) -> (Vec<u64>, i64) {
    let (records, seq) = one_run(lic.config(), after_seq).await;
    (records.iter().map(|r| r.at).collect(), seq)
}

/// The seq of the newest usage record (`after` if none is newer).
fn newest_seq(store: &SqliteStore, after: i64) -> i64 {
    let records = store.usage_log(after, 10_000).unwrap();
    records.last().map_or(after, |r| r.seq)
}

/// Both halves of the floor: the newest grant among the stored leases (written in a batch
/// of an earlier time), then the newest usage record once no lease is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_never_stamps_a_time_before_its_newest_durable_write() {
    let lic = Licensed::new(LICENSE);
    let (_, seq) = records_of_one_run(&lic, 0).await;

    // A held seat granted two days ahead, in a batch stamped one day ahead.
    let granted_at = wall_clock_ms() + 2 * DAY_MS;
    let mut store = SqliteStore::open(&lic.config().store_path()).unwrap();
    let batch_at = granted_at - DAY_MS;
    let changes = [
        Change::SessionOpened(session(batch_at)),
        Change::LeaseGranted(lease(granted_at)),
    ];
    store.commit(batch_at, &changes).unwrap();
    let seq = newest_seq(&store, seq);
    drop(store);
    let (ats, seq) = records_of_one_run(&lic, seq).await;
    assert!(!ats.is_empty(), "the run wrote its checkout");
    assert!(
        ats.iter().all(|&at| at >= granted_at),
        "stamped before the newest grant {granted_at}: {ats:?}"
    );

    // The seat released and its session closed three days ahead: no lease is left, and
    // the newest usage record is the floor.
    let released_at = wall_clock_ms() + 3 * DAY_MS;
    let mut store = SqliteStore::open(&lic.config().store_path()).unwrap();
    let changes = [
        Change::LeaseReleased {
            lease: lease(granted_at),
            reason: ReleaseReason::Checkin,
        },
        Change::SessionClosed(SessionId(1)),
    ];
    store.commit(released_at, &changes).unwrap();
    assert!(store.load().unwrap().leases.is_empty(), "no lease is left");
    let seq = newest_seq(&store, seq);
    drop(store);
    let (ats, _) = records_of_one_run(&lic, seq).await;
    assert!(!ats.is_empty(), "the run wrote its checkout");
    assert!(
        ats.iter().all(|&at| at >= released_at),
        "stamped before the newest record {released_at}: {ats:?}"
    );
}

/// The usage log's retention, applied as the server starts, writes a record of what it
/// removed; it too is stamped no earlier than the newest durable write. Stamped by the
/// clock, it would be the newest record and pull the server's time back to the clock.
#[tokio::test(flavor = "multi_thread")]
async fn retention_at_start_never_stamps_a_time_before_the_newest_durable_write() {
    let lic = Licensed::new(LICENSE);
    // A record long past the retention, then one a day ahead.
    let old = wall_clock_ms() - 400 * DAY_MS;
    let mut store = SqliteStore::open(&lic.config().store_path()).unwrap();
    let changes = [
        Change::SessionOpened(session(old)),
        Change::SessionClosed(SessionId(1)),
    ];
    store.commit(old, &changes).unwrap();
    drop(store);
    let ahead = store_ahead(&lic, DAY_MS);
    let seq = newest_seq(
        &SqliteStore::open_read_only(&lic.config().store_path()).unwrap(),
        0,
    );

    let mut config = lic.config();
    config.log_retention_days = 30;
    let (records, _) = one_run(config, seq).await;
    assert!(
        records
            .iter()
            .any(|r| r.detail.as_deref().is_some_and(|d| d.contains("retention"))),
        "the retention removed the old record and said so: {records:?}"
    );
    let ats: Vec<_> = records.iter().map(|r| r.at).collect();
    assert!(
        ats.iter().all(|&at| at >= ahead),
        "stamped before the newest record {ahead}: {ats:?}"
    );
}

/// Writes a record `by` ms ahead of the clock into `lic`'s store, as a server whose clock
/// was stepped back after it wrote it finds on its next start; returns its time, which is
/// the time of a server started on that store (until the clock catches up).
fn store_ahead(lic: &Licensed, by: u64) -> u64 {
    let ahead = wall_clock_ms() + by;
    let mut store = SqliteStore::open(&lic.config().store_path()).unwrap();
    let changes = [
        Change::SessionOpened(session(ahead)),
        Change::SessionClosed(SessionId(1)),
    ];
    store.commit(ahead, &changes).unwrap();
    ahead
}

/// A waiting checkout waits as long as it asked, counted in the ledger's time, also when
/// that time is ahead of the clock (the store holds a record a day ahead, as after a
/// restart on a clock that was stepped back): a deadline taken from the clock would
/// already have passed, and the checkout would be refused at once instead of queued.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_checkout_waits_on_a_server_whose_time_is_ahead_of_its_clock() {
    let lic = Licensed::new("FEATURE cad acme 2025 permanent 1 HOSTID=ANY\n");
    store_ahead(&lic, DAY_MS);

    let server = TestServer::start(lic.config()).await;
    let holder = server.client().await;
    let held = holder.checkout("cad").await.expect("the only seat");
    let waiter = server.client().await;
    let waiting = tokio::spawn(async move {
        let wait = QueueWait::For(Duration::from_secs(20));
        let granted = waiter.checkout("cad").wait(wait).await;
        (granted, waiter)
    });
    // Queued, not refused: it shows in status, then gets the seat when it frees.
    let mut queued = false;
    for _ in 0..200 {
        if !server.status().await.queue.is_empty() || waiting.is_finished() {
            queued = !waiting.is_finished();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        queued,
        "the waiting checkout was answered at once instead of queued"
    );
    drop(held);
    let (granted, _waiter) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("answered")
        .unwrap();
    granted.expect("the freed seat goes to the waiting checkout");
    server.shutdown().await.expect("a clean stop");
}

/// A borrow lasts as long as it asked, counted in the ledger's time, also when that time
/// is ahead of the clock: an end taken from the clock would be cut short by the
/// difference (an hour ahead), or would already have passed and the borrow be refused (a
/// day ahead).
#[tokio::test(flavor = "multi_thread")]
async fn a_borrow_lasts_its_duration_on_a_server_whose_time_is_ahead_of_its_clock() {
    const HOUR_MS: u64 = 3_600_000;
    for by in [HOUR_MS, DAY_MS] {
        let lic = Licensed::new("FEATURE cad acme 2025 permanent 1 HOSTID=ANY BORROW=24\n");
        let ahead = store_ahead(&lic, by);

        let server = TestServer::start(lic.config()).await;
        let client = server.client().await;
        let token = client
            .borrow("cad", Duration::from_secs(2 * 3600))
            .await
            .unwrap_or_else(|e| panic!("{by} ms ahead: a two-hour borrow was refused: {e}"));
        let until = token.statement.valid_until_ms;
        // The server's time stays `ahead` until the clock catches up with it.
        assert_eq!(
            until,
            ahead + 2 * HOUR_MS,
            "{by} ms ahead: the borrow ends two hours after the server's time {ahead}, \
             not after its clock's"
        );
        let status = server.status().await;
        let borrowed: Vec<_> = status
            .features
            .iter()
            .flat_map(|f| &f.holders)
            .map(|h| h.borrowed_until_ms)
            .collect();
        assert_eq!(
            borrowed,
            [until],
            "{by} ms ahead: the server holds the seat as long as the token says"
        );
        client.close().await;
        server.shutdown().await.expect("a clean stop");
    }
}

/// The admin API's usage series ends at the server's time, not its clock's: on a server
/// whose time is a day ahead, its last point (the level now) is the series' end and no
/// point of the window lies after it.
#[tokio::test(flavor = "multi_thread")]
async fn the_usage_series_ends_at_the_servers_time_when_it_is_ahead_of_its_clock() {
    let lic = Licensed::new(LICENSE);
    let ahead = store_ahead(&lic, DAY_MS);
    let server = TestServer::start(lic.config()).await;
    let client = server.client().await;
    let _lease = client.checkout("cad").await.expect("a seat");
    let usage = crate::http::http(
        server.admin.unwrap(),
        "GET",
        "/api/v1/usage?feature=cad&window_s=600",
        Some(&server.token),
        None,
    )
    .await;
    assert_eq!(usage.status, 200, "{usage:?}");
    let usage = usage.json();
    let to = usage["to"].as_u64().unwrap();
    assert!(
        to >= ahead,
        "the series ends at {to}, before the server's time {ahead}"
    );
    let points = usage["points"].as_array().unwrap();
    let times: Vec<u64> = points.iter().map(|p| p[0].as_u64().unwrap()).collect();
    assert!(
        times.iter().all(|t| *t <= to),
        "points after the series' end {to}: {times:?}"
    );
    assert_eq!(points.last().unwrap()[1], 1, "the level now: {usage}");
    assert_eq!(usage["peak"][1], 1, "{usage}");
    client.close().await;
    server.shutdown().await.expect("a clean stop");
}
