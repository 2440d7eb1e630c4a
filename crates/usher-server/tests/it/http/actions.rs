//! The write endpoints: removing seats, reloading licenses, stopping the server, and the
//! listener turned off.

use serde_json::Value;
use std::time::Duration;

use super::{http, parse_exposition, start, value};
use crate::util::{Licensed, TestServer};

#[tokio::test(flavor = "multi_thread")]
async fn remove_by_id_or_holder_frees_seats_and_is_audited() {
    let (_lic, server) = start().await;
    let ana = server.client().await;
    let by_id = ana.checkout("cad").await.unwrap();
    let by_holder = ana.checkout("sim").count(2).await.unwrap();

    let r = server
        .post(
            "/api/v1/remove",
            &format!(r#"{{"lease_id": {}}}"#, by_id.lease_id()),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let removed = &r.json()["removed"];
    assert_eq!(removed[0]["id"], by_id.lease_id());
    assert_eq!(removed[0]["feature"], "cad");
    let reason = tokio::time::timeout(Duration::from_secs(20), by_id.lost())
        .await
        .expect("the holder is told");
    assert_eq!(
        reason,
        usher_client::LossReason::RemovedByAdministrator,
        "{reason}"
    );

    let holder = &server.get("/api/v1/holders?feature=sim").await.json()["holders"];
    let (user, host) = (holder[0]["user"].clone(), holder[0]["host"].clone());
    let body = serde_json::json!({ "feature": "sim", "user": user, "host": host });
    let r = server.post("/api/v1/remove", &body.to_string()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["removed"][0]["count"], 2);
    tokio::time::timeout(Duration::from_secs(20), by_holder.lost())
        .await
        .expect("the holder is told");
    let status = server.status().await;
    assert_eq!(crate::util::holders(&status).len(), 0, "{status:?}");
    // Removing again: nothing is held.
    server
        .post("/api/v1/remove", &body.to_string())
        .await
        .assert_error(404, "not_held");

    let events = server.get("/api/v1/events?limit=100").await.json();
    let audits: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "admin")
        .collect();
    assert_eq!(audits.len(), 2, "{events}");
    for a in audits {
        let detail = a["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("remove lease ")
                && detail.contains("by http 127.0.0.1:")
                && detail.ends_with("(token)"),
            "{detail}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_too_soon_is_a_conflict_with_the_wait() {
    let lic = Licensed::new(crate::util::LICENSE);
    let mut config = lic.config();
    config.min_remove = Duration::from_secs(3600);
    let server = TestServer::start(config).await;
    let ana = server.client().await;
    let lease = ana.checkout("cad").await.unwrap();
    let r = server
        .post(
            "/api/v1/remove",
            &format!(r#"{{"lease_id": {}}}"#, lease.lease_id()),
        )
        .await;
    r.assert_error(409, "too_soon");
    let wait = r.json()["error"]["wait_ms"].as_u64().unwrap();
    assert!(wait > 3_500_000 && wait <= 3_600_000, "{r:?}");
    assert!(lease.lost_reason().is_none());
    assert_eq!(crate::util::in_use(&server.status().await, "cad"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_borrowed_seat_shows_as_borrowed_and_cannot_be_removed() {
    let lic = Licensed::new("FEATURE cad acme 2025 permanent 3 HOSTID=ANY BORROW=24\n");
    let mut config = lic.config();
    config.min_remove = Duration::ZERO;
    let server = TestServer::start(config).await;
    let ana = server.client().await;
    let token = ana
        .borrow("cad", Duration::from_secs(3600))
        .count(2)
        .await
        .unwrap();
    let _held = ana.checkout("cad").await.unwrap();

    let holders = server.get("/api/v1/holders").await.json();
    let borrowed: Vec<_> = holders["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["borrowed_until"].is_u64())
        .collect();
    assert_eq!(borrowed.len(), 1, "{holders:#}");
    assert_eq!(borrowed[0]["id"], token.statement.lease_id);
    assert_eq!(
        borrowed[0]["borrowed_until"].as_u64(),
        Some(token.statement.valid_until_ms)
    );
    let features = server.get("/api/v1/features").await.json();
    assert_eq!(features[0]["borrowed"], 2, "{features:#}");
    assert_eq!(features[0]["in_use"], 3, "{features:#}");

    let scrape = http(server.admin.unwrap(), "GET", "/metrics", None, None).await;
    let (_, samples) = parse_exposition(&scrape.body);
    let pool = [("feature", "cad"), ("vendor", "acme")];
    assert_eq!(value(&samples, "usher_seats_borrowed", &pool), Some(2.0));

    let r = server
        .post(
            "/api/v1/remove",
            &format!(r#"{{"lease_id": {}}}"#, token.statement.lease_id),
        )
        .await;
    r.assert_error(409, "borrowed");
    assert_eq!(crate::util::in_use(&server.status().await, "cad"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_new_licenses_and_refuses_broken_ones() {
    let (lic, server) = start().await;
    lic.write("FEATURE cad acme 2025 permanent 7 HOSTID=ANY\n");
    let r = server.post("/api/v1/reload", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["entitlements"], 1);
    let features = server.get("/api/v1/features").await.json();
    assert_eq!(features[0]["total"], 7, "{features}");

    std::fs::write(&lic.license, "FEATURE cad acme\n").unwrap();
    let r = server.post("/api/v1/reload", "").await;
    r.assert_error(400, "reload_refused");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("acme.lic:1:"),
        "{r:?}"
    );
    let features = server.get("/api/v1/features").await.json();
    assert_eq!(features[0]["total"], 7, "unchanged: {features}");
}

#[tokio::test(flavor = "multi_thread")]
async fn down_stops_the_server_gracefully() {
    let (_lic, server) = start().await;
    let r = server.post("/api/v1/down", "").await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json()["status"], "stopping");
    server.stopped().await.expect("run returns Ok after down");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listener_can_be_turned_off() {
    let lic = Licensed::new(crate::util::LICENSE);
    let mut config = lic.config();
    config.admin_listen = None;
    let server = TestServer::start(config).await;
    assert_eq!(server.admin, None);
    server.client().await.checkout("cad").await.unwrap();
}
