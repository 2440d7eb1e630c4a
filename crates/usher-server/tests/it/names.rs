//! Bounded input: every name a client sends has a maximum length and a character set
//! (`usher_proto::names`), checked before the request goes further; a name that breaks its
//! rule is refused with `BAD_REQUEST` naming the field, and reaches neither the ledger nor
//! the usage log.

use usher_proto::{ErrorCode, request, response};
use usher_store::{SqliteStore, UsageEvent};

use crate::util::*;

fn refused(kind: &response::Kind, field: &str) {
    match kind {
        response::Kind::Error(e) => {
            assert_eq!(e.code(), ErrorCode::BadRequest, "{e:?}");
            assert!(e.message.contains(&format!("the {field} ")), "{e:?}");
            assert!(e.message.contains("at most"), "names the rule: {e:?}");
        }
        other => panic!("expected a refusal of the {field}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn names_over_their_rule_are_refused_and_never_logged() {
    let lic = Licensed::new(LICENSE);
    let config = lic.config();
    let server = TestServer::start(config.clone()).await;
    let mut conn = RawConn::connect(server.addr).await;
    conn.hello("alice").await;

    let huge = "x".repeat(60_000);
    refused(&conn.call(2, checkout(&huge, 1, 1)).await, "feature");
    refused(&conn.call(3, checkout("cad;rm", 1, 2)).await, "feature");
    let mut long_version = checkout("cad", 1, 3);
    if let request::Kind::Checkout(c) = &mut long_version {
        c.version = "1.".repeat(5_000);
    }
    refused(&conn.call(4, long_version).await, "version");
    let borrow = request::Kind::Borrow(usher_proto::Borrow {
        feature: "cad".into(),
        count: 1,
        duration_ms: 60_000,
        host_ids: vec!["ID=1".into(); 17],
        ..usher_proto::Borrow::default()
    });
    refused(&conn.call(5, borrow).await, "host id");
    let ret = request::Kind::Return(usher_proto::Return {
        feature: huge.clone(),
        lease_id: 0,
    });
    refused(&conn.call(6, ret).await, "feature");
    // The connection goes on: a refusal ends only the request.
    let granted = conn.call(7, checkout("cad", 1, 7)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");

    // A Hello with a forged log line in the user name, or an endless host name.
    for (field, bad) in [
        ("user", hello("bob\nsession 1 granted")),
        ("host", {
            let mut h = hello("carol");
            h.host = huge.clone();
            h
        }),
    ] {
        let mut c = RawConn::connect(server.addr).await;
        refused(&c.call(1, request::Kind::Hello(bad)).await, field);
        assert!(
            c.recv().await.is_none(),
            "a refused Hello ends the connection"
        );
    }
    drop(conn);
    server.shutdown().await.unwrap();

    let store = SqliteStore::open_read_only(&config.store_path()).unwrap();
    let log = store.usage_log(0, 10_000).unwrap();
    let denied = log.iter().filter(|r| r.event == UsageEvent::Denied).count();
    assert_eq!(denied, 0, "refused names never reach the ledger: {log:#?}");
    let longest = log
        .iter()
        .flat_map(|r| [&r.feature, &r.version, &r.user, &r.host, &r.detail])
        .flatten()
        .map(String::len)
        .max();
    assert!(longest.unwrap_or(0) <= 256, "{log:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_clips_its_own_identity_to_the_rules() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let mut config = usher_client::ClientConfig::new(vec![usher_client::ServerAddr {
        host: "127.0.0.1".into(),
        port: server.addr.port(),
    }]);
    config.identity.user = "é".repeat(1_000);
    config.identity.program = "tab\there".into();
    let client = usher_client::Client::connect(config).await.expect("served");
    let _seat = client.checkout("cad").await.unwrap();
    let report = server.status().await;
    let holder = holders(&report)[0];
    assert_eq!(holder.user.len(), 256, "{holder:?}");
    assert_eq!(holder.program, "tab?here");
}
