//! Serving: grants, refusals with their reasons, versions and dates, idempotent retries.

use std::time::Duration;

use usher_client::{ClientError, DenyReason};
use usher_proto::{request, response};

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
                .checkout("cad")
                .version("2025")
                .await
                .expect("a seat is free"),
        );
    }
    let report = server.status().await;
    let cad = report.features.iter().find(|f| f.feature == "cad").unwrap();
    assert_eq!((cad.in_use, cad.total), (3, 3), "{report:#?}");
    let mut ids: Vec<u64> = cad.holders.iter().map(|h| h.lease_id).collect();
    ids.sort();
    let mut want: Vec<u64> = held.iter().map(|l| l.lease_id()).collect();
    want.sort();
    assert_eq!(ids, want, "{report:#?}");

    let refused = server.client().await.checkout("cad").version("2025").await;
    let Err(ClientError::Denied(d)) = refused else {
        panic!("expected a refusal: {refused:?}")
    };
    assert_eq!(d.reason, DenyReason::AllInUse);
    assert_eq!((d.in_use, d.total), (3, 3));
    assert!(d.message.contains("all 3 seats"), "{}", d.message);

    drop(held.pop());
    let other = server.client().await;
    let _again = eventually(WAIT, "a grant after the checkin", || async {
        other.checkout("cad").version("2025").await.ok()
    })
    .await;
    let report = server.status().await;
    assert_eq!(in_use(&report, "cad"), 3, "{report:#?}");
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
    match client.checkout("cad").await {
        Err(ClientError::Denied(d)) => assert_eq!(d.reason, DenyReason::UnknownFeature),
        other => panic!("the tampered feature must not serve: {other:?}"),
    }
    client
        .checkout("sim")
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
        .checkout("cad")
        .version("2025.9")
        .await
        .expect("2025.10 serves 2025.9");
    assert_eq!(granted.version(), "2025.10");
    let reason = |r: Result<usher_client::License, ClientError>| match r {
        Err(ClientError::Denied(d)) => (d.reason, d.message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (r, msg) = reason(client.checkout("cad").version("2025.11").await);
    assert_eq!(r, DenyReason::VersionTooNew, "{msg}");
    assert_eq!(reason(client.checkout("old").await).0, DenyReason::Expired);
    assert_eq!(
        reason(client.checkout("new").await).0,
        DenyReason::NotYetStarted
    );
    assert_eq!(
        reason(client.checkout("nope").await).0,
        DenyReason::UnknownFeature
    );
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
#[tokio::test(flavor = "multi_thread")]
async fn overdraft_seats_are_granted_beyond_the_count_and_flagged_everywhere() {
    let lic = Licensed::new("FEATURE od acme 1 permanent 1 HOSTID=ANY OVERDRAFT=1\n");
    let server = TestServer::start(lic.config()).await;
    let client = server.client().await;
    let first = client.checkout("od").await.unwrap();
    let second = client.checkout("od").await.expect("the overdraft seat");
    assert!(!first.overdraft() && second.overdraft());
    match client.checkout("od").await {
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

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_all_answered_in_order() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.max_requests_in_flight = 16;
    let server = TestServer::start(config).await;
    let mut raw = RawConn::connect(server.addr).await;
    raw.hello("pipeliner").await;
    // More requests than a connection may have in flight, all written before any answer
    // is read: the server pushes back, then answers every one, in order.
    let n = 3 * 16;
    let kind = |id: u64| match id % 3 {
        0 => checkout("sim", 1, 7),
        1 => request::Kind::Heartbeat(usher_proto::Heartbeat {}),
        _ => request::Kind::Status(usher_proto::StatusRequest::default()),
    };
    for id in 2..2 + n {
        raw.send(id, kind(id)).await;
    }
    let mut leases = std::collections::BTreeSet::new();
    for id in 2..2 + n {
        let r = raw.recv().await.expect("an answer for every request");
        assert_eq!(r.id, id, "answers come in request order: {r:?}");
        match (id % 3, r.kind) {
            (0, Some(response::Kind::Granted(g))) => {
                leases.insert(g.lease_id);
            }
            (1, Some(response::Kind::HeartbeatAck(_))) => {}
            (2, Some(response::Kind::Status(_))) => {}
            (_, other) => panic!("request {id}: unexpected answer {other:?}"),
        }
    }
    assert_eq!(leases.len(), 1, "one client_ref, one lease: {leases:?}");
    let report = server.status().await;
    assert_eq!(in_use(&report, "sim"), 1, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lingering_seat_stays_held_after_checkin_then_comes_back() {
    let lic = Licensed::new("FEATURE cad acme 2025 permanent 1 HOSTID=ANY LINGER=2\n");
    let server = TestServer::start(lic.config()).await;
    let client = server.client().await;
    let license = client.checkout("cad").await.unwrap();
    let lease = license.lease_id();
    drop(license);
    let report = eventually(Duration::from_secs(20), "the seat to linger", || async {
        let report = server.status().await;
        holders(&report)
            .first()
            .is_some_and(|h| h.lingering_until_ms != 0)
            .then_some(report)
    })
    .await;
    assert_eq!(holders(&report)[0].lease_id, lease);
    assert_eq!(in_use(&report, "cad"), 1, "still held: {report:#?}");
    eventually(Duration::from_secs(20), "the linger to end", || async {
        (in_use(&server.status().await, "cad") == 0).then_some(())
    })
    .await;
    client.checkout("cad").await.expect("free again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_based_feature_draws_tokens_from_its_pool_on_a_real_server() {
    let lic = Licensed::new(TOKEN_LICENSE);
    let server = TestServer::start(lic.config()).await;
    let client = server.client().await;
    let license = client.checkout("sample").await.unwrap();
    assert_eq!((license.feature(), license.count()), ("sample", 5));
    let report = server.status().await;
    assert_eq!(in_use(&report, "units"), 5, "{report:?}");
    let holder = holders(&report)[0];
    assert_eq!((holder.count, holder.token_for.as_str()), (5, "sample"));
    let [sample] = report.token_features.as_slice() else {
        panic!("one token-based feature: {report:#?}")
    };
    assert_eq!(
        (sample.feature.as_str(), sample.in_use, sample.tokens_in_use),
        ("sample", 1, 5),
        "{sample:?}"
    );
    let costs: Vec<_> = sample
        .costs
        .iter()
        .map(|c| (c.pool.as_str(), c.version.as_str(), c.tokens))
        .collect();
    assert_eq!(costs, [("units", "2", 5)]);
    // Asked for by name, status shows the feature and the pool it draws from.
    let by_name = client.status("sample").await.unwrap();
    let pools: Vec<_> = by_name
        .features
        .iter()
        .map(|f| f.feature.as_str())
        .collect();
    assert_eq!(pools, ["units"], "{by_name:#?}");
    assert_eq!(by_name.token_features, report.token_features);
    // One unit is left: a second sample is refused, with the pool's figures.
    match client.checkout("sample").await {
        Err(ClientError::Denied(d)) => {
            assert_eq!((d.reason, d.in_use, d.total), (DenyReason::AllInUse, 5, 6));
            assert_eq!(
                d.message,
                "\"sample\" costs 5 tokens of pool \"units\"; 5 of 6 tokens in use"
            );
        }
        other => panic!("expected a refusal: {other:?}"),
    }
    drop(license);
    eventually(WAIT, "the tokens to come back", || async {
        (in_use(&server.status().await, "units") == 0).then_some(())
    })
    .await;
}
