//! The usage log as the server keeps it: retention at start, hidden names.

use usher_proto::response;
use usher_store::{LogEvent, SqliteStore, UsageEvent};

use crate::util::*;

const DAY: u64 = 86_400_000;

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_old_records_at_start_and_the_log_still_verifies() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    // A log with records 40, 20 and 5 days old.
    {
        let mut store = SqliteStore::open(&config.store_path()).unwrap();
        let now = usher_server::clock::wall_clock_ms();
        for days in [40, 20, 5] {
            let event = LogEvent::server(UsageEvent::Other("note".into()), Some("old"));
            store.commit_batch(now - days * DAY, &[], &[event]).unwrap();
        }
    }
    config.log_retention_days = 30;
    let server = TestServer::start(config.clone()).await;
    server.shutdown().await.unwrap();
    let store = SqliteStore::open_read_only(&config.store_path()).unwrap();
    let log = store.usage_log(0, 1000).unwrap();
    assert_eq!(
        log.first().map(|r| r.seq),
        Some(2),
        "the 40-day-old record went: {log:#?}"
    );
    assert!(
        log.iter()
            .any(|r| r.event == UsageEvent::Other("prune".into())),
        "the pruning is itself logged"
    );
    let report = store.verify_usage_log().unwrap();
    assert!(report.broken.is_none(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hidden_users_never_reach_the_log() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.hide_users = true;
    let server = TestServer::start(config.clone()).await;
    let mut raw = RawConn::connect(server.addr).await;
    raw.hello("alice").await;
    let granted = raw.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");
    // Status still names the holder: an administrator needs that.
    assert_eq!(holders(&server.status().await)[0].user, "alice");
    drop(raw);
    server.shutdown().await.unwrap();
    let store = SqliteStore::open_read_only(&config.store_path()).unwrap();
    let log = store.usage_log(0, 1000).unwrap();
    let checkout = log
        .iter()
        .find(|r| r.event == UsageEvent::Checkout)
        .unwrap();
    let user = checkout.user.as_deref().unwrap();
    assert!(user.starts_with("anon-"), "{user}");
    for r in &log {
        for name in [&r.user, &r.host, &r.display].into_iter().flatten() {
            assert!(!name.contains("alice"), "{r:?}");
        }
    }
}

/// Every kind of event the server records, produced by real requests, shows up in the log
/// with what a report needs.
#[tokio::test(flavor = "multi_thread")]
async fn every_event_kind_shows_up_in_the_log() {
    use std::time::Duration;

    use usher_client::admin::AdminConnection;
    use usher_client::{ClientError, QueueWait};
    use usher_proto::{Reload, Remove, request};

    let lic = Licensed::new(
        "FEATURE cad acme 2025 permanent 1 HOSTID=ANY OVERDRAFT=1\n\
         FEATURE sim acme 1.0 permanent 1 HOSTID=ANY LINGER=1\n\
         FEATURE solver acme 3 permanent 1 HOSTID=ANY BORROW=24\n",
    );
    let mut config = lic.config();
    config.min_remove = Duration::ZERO;
    let server = TestServer::start(config.clone()).await;
    let admin_socket = config.admin_socket();

    let a = server.client().await;
    let b = server.client().await;
    let first = a.checkout("cad").await.unwrap(); // checkout
    let over = b.checkout("cad").await.unwrap(); // checkout (overdraft)
    assert!(over.overdraft());
    // denied
    assert!(matches!(
        b.checkout("nosuch").await,
        Err(ClientError::Denied(_))
    ));
    // queue, then dequeue (timed out)
    let waited = b
        .checkout("cad")
        .wait(QueueWait::For(Duration::from_millis(300)))
        .await;
    assert!(matches!(waited, Err(ClientError::Denied(_))), "{waited:?}");
    // linger, then checkin (linger over)
    let lingering = a.checkout("sim").await.unwrap();
    drop(lingering);
    // borrow, then return (early)
    a.borrow("solver", Duration::from_secs(3600)).await.unwrap();
    assert_eq!(a.return_borrow("solver", None).await.unwrap(), Some(1));
    // remove (by the admin) and admin (reload)
    let mut admin = AdminConnection::connect(&admin_socket, Duration::from_secs(10))
        .await
        .unwrap();
    admin
        .call(request::Kind::Remove(Remove {
            lease_id: over.lease_id(),
        }))
        .await
        .unwrap();
    admin.call(request::Kind::Reload(Reload {})).await.unwrap();
    drop(first);
    // expire: a client that vanishes without a goodbye
    let mut raw = RawConn::connect(server.addr).await;
    raw.hello("vanishing").await;
    let granted = raw.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");
    drop(raw);
    eventually(
        Duration::from_secs(20),
        "the vanished client's seat to expire",
        || async {
            (in_use(&server.status().await, "cad") == 0
                && in_use(&server.status().await, "sim") == 0)
                .then_some(())
        },
    )
    .await;
    a.close().await;
    b.close().await;
    server.shutdown().await.unwrap();

    let store = SqliteStore::open_read_only(&config.store_path()).unwrap();
    let log = store.usage_log(0, 10_000).unwrap();
    let has = |event: &str, detail: Option<&str>| {
        log.iter().any(|r| {
            r.event.as_str() == event
                && detail.is_none_or(|d| r.detail.as_deref().is_some_and(|x| x.contains(d)))
        })
    };
    for (event, detail) in [
        ("server_start", None),
        ("seats", None),
        ("session_open", None),
        ("checkout", None),
        ("checkout", Some("overdraft")),
        ("denied", Some("unknown_feature")),
        ("queue", None),
        ("dequeue", Some("timed_out")),
        ("linger", None),
        ("checkin", Some("linger over")),
        ("borrow", None),
        ("return", None),
        ("remove", None),
        ("admin", Some("reload")),
        ("checkin", None),
        ("expire", None),
        ("session_close", None),
        ("server_stop", None),
    ] {
        assert!(has(event, detail), "no {event} {detail:?} in {log:#?}");
    }
    assert!(store.verify_usage_log().unwrap().broken.is_none());
}

/// One client retrying a refused checkout cannot grow the log faster than its legitimate
/// work: its repeats within a minute become one `denied_repeats` record with their count.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_denials_of_one_session_are_one_record_with_a_count() {
    let lic = Licensed::new(LICENSE);
    let config = lic.config();
    let server = TestServer::start(config.clone()).await;
    let mut holder = RawConn::connect(server.addr).await;
    holder.hello("alice").await;
    let granted = holder.call(2, checkout("sim", 2, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");
    let mut retrier = RawConn::connect(server.addr).await;
    retrier.hello("bob").await;
    for id in 2..302 {
        let answer = retrier.call(id, checkout("sim", 1, id)).await;
        assert!(matches!(answer, response::Kind::Denied(_)), "{answer:?}");
    }
    let other = retrier.call(400, checkout("nosuch", 1, 400)).await;
    assert!(matches!(other, response::Kind::Denied(_)), "{other:?}");
    drop((holder, retrier));
    server.shutdown().await.unwrap();

    let store = SqliteStore::open_read_only(&config.store_path()).unwrap();
    let log = store.usage_log(0, 10_000).unwrap();
    let denied: Vec<_> = log
        .iter()
        .filter(|r| matches!(r.event, UsageEvent::Denied | UsageEvent::DeniedRepeats))
        .collect();
    assert_eq!(
        denied.len(),
        3,
        "first, repeats, another feature: {denied:#?}"
    );
    assert_eq!(denied[0].event, UsageEvent::Denied);
    let repeats = denied
        .iter()
        .find(|r| r.event == UsageEvent::DeniedRepeats)
        .expect("the repeats record");
    assert_eq!(repeats.count, Some(299), "{repeats:?}");
    assert_eq!(repeats.detail.as_deref(), Some("all_in_use"));
    assert_eq!(repeats.user.as_deref(), Some("bob"));
    assert!(store.verify_usage_log().unwrap().broken.is_none());
    drop(store);

    // The admin API's usage series counts the repeats too: 300 refusals of sim.
    let server = TestServer::start(config).await;
    let usage = crate::http::http(
        server.admin.unwrap(),
        "GET",
        "/api/v1/usage?feature=sim&window_s=600",
        Some(&server.token),
        None,
    )
    .await
    .json();
    assert_eq!(usage["denied"], 300, "{usage:#}");
    let counts: Vec<u64> = usage["denials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 299], "{usage:#}");
}
