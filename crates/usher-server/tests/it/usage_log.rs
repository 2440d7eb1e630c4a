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
        let now = usher_server::ledger_task::wall_clock_ms();
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
