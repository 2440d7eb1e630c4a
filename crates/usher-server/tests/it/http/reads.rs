//! The read endpoints (seats, holders, sessions, events) and JSON error bodies.

use super::{http, start};

#[tokio::test(flavor = "multi_thread")]
async fn read_endpoints_show_seats_holders_sessions_and_events() {
    let (_lic, server) = start().await;
    let ana = server.client().await;
    let _a = ana.checkout("cad").await.unwrap();
    let _b = ana.checkout("cad").await.unwrap();

    let features = server.get("/api/v1/features").await;
    assert_eq!(features.status, 200, "{features:?}");
    let features = features.json();
    let cad = features
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "cad")
        .unwrap_or_else(|| panic!("{features}"));
    assert_eq!(
        (cad["total"].as_u64(), cad["in_use"].as_u64()),
        (Some(3), Some(2)),
        "{cad}"
    );
    assert_eq!(cad["vendor"], "acme");
    assert_eq!(cad["holders"], 2);
    assert!(cad["expires_at"].is_null(), "permanent: {cad}");

    let page = server.get("/api/v1/holders?feature=cad").await.json();
    assert_eq!(page["total"], 2, "{page}");
    assert_eq!(page["seats"], 2, "{page}");
    assert!(page["next_cursor"].is_null(), "one page: {page}");
    let holders = page["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 2, "{holders:?}");
    for h in holders {
        assert_eq!(h["feature"], "cad");
        assert_eq!(h["count"], 1);
        assert_eq!(h["overdraft"], false);
        assert!(
            h["id"].as_u64().unwrap() > 0 && h["since"].as_u64().unwrap() > 0,
            "{h}"
        );
        assert!(h["user"].as_str().is_some() && h["host"].as_str().is_some());
    }
    let none = server.get("/api/v1/holders?feature=sim").await.json();
    assert_eq!(
        none,
        serde_json::json!({"holders": [], "total": 0, "seats": 0, "next_cursor": null})
    );
    let groups = server.get("/api/v1/holders/groups?by=user").await.json();
    assert_eq!(groups["total"], 1, "{groups}");
    assert_eq!(groups["groups"][0]["holders"], 2, "{groups}");
    assert_eq!(groups["groups"][0]["seats"], 2, "{groups}");

    let sessions = server.get("/api/v1/sessions").await.json();
    assert_eq!(sessions["total"], 1, "{sessions}");
    let sessions = sessions["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["leases"], 2);
    assert_eq!(sessions[0]["connected"], true);

    assert_eq!(
        server.get("/api/v1/queue").await.json(),
        serde_json::json!({"queue": [], "total": 0, "next_cursor": null})
    );

    let events = server.get("/api/v1/events").await.json();
    let list = events["events"].as_array().unwrap();
    let kinds: Vec<&str> = list.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "checkout").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(kinds.first(), Some(&"server_start"), "{kinds:?}");
    let last = list.last().unwrap()["seq"].as_i64().unwrap();
    assert_eq!(events["next_since_seq"], last);
    // Paging: after the last record there is nothing; a limit cuts from the oldest.
    let after = server
        .get(&format!("/api/v1/events?since_seq={last}"))
        .await
        .json();
    assert_eq!(after["events"], serde_json::json!([]));
    assert_eq!(after["next_since_seq"], last);
    let first_two = server
        .get("/api/v1/events?since_seq=0&limit=2")
        .await
        .json();
    assert_eq!(first_two["events"].as_array().unwrap().len(), 2);
    assert_eq!(first_two["events"][0]["seq"], 1);
    let newest = server.get("/api/v1/events?limit=1").await.json();
    assert_eq!(newest["events"][0]["seq"], last);

    let usage = server.get("/api/v1/usage?feature=cad&window_s=600").await;
    assert_eq!(usage.status, 200, "{usage:?}");
    let usage = usage.json();
    assert_eq!(usage["total"], 3);
    let points = usage["points"].as_array().unwrap();
    assert_eq!(points.first().unwrap()[1], 0, "{usage}");
    assert_eq!(points.last().unwrap()[1], 2, "{usage}");
    assert_eq!(usage["peak"][1], 2, "{usage}");
    assert_eq!(usage["complete"], true);
    server
        .get("/api/v1/usage?feature=nope")
        .await
        .assert_error(404, "unknown_feature");
    server
        .get("/api/v1/usage")
        .await
        .assert_error(400, "bad_query");

    let health = server.get("/api/v1/health").await.json();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["store_ok"], true);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["sessions"], 1);
    assert_eq!(health["leases"], 2);
    assert!(health["connections"].as_i64().unwrap() >= 1, "{health}");
    assert_eq!(health["usage_log_seq"], last);
    let healthz = http(server.admin.unwrap(), "GET", "/healthz", None, None).await;
    assert_eq!(healthz.json()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_json_with_proper_status_codes() {
    let (_lic, server) = start().await;
    server
        .get("/api/v1/nope")
        .await
        .assert_error(404, "not_found");
    server.get("/nope").await.assert_error(404, "not_found");
    server
        .post("/api/v1/features", "{}")
        .await
        .assert_error(405, "method_not_allowed");
    server
        .get("/api/v1/remove")
        .await
        .assert_error(405, "method_not_allowed");
    server
        .get("/api/v1/events?limit=abc")
        .await
        .assert_error(400, "bad_query");
    server
        .get("/api/v1/events?limit=0")
        .await
        .assert_error(400, "bad_query");
    server
        .get("/api/v1/events?since_seq=-1")
        .await
        .assert_error(400, "bad_query");
    server
        .get("/api/v1/sessions?limit=-5")
        .await
        .assert_error(400, "bad_query");
    // Outside the documented range: refused, as the OpenAPI document says.
    for list in ["sessions", "holders", "queue", "holders/groups?by=host&"] {
        let sep = if list.contains('?') { "" } else { "?" };
        for bad in ["limit=10001", "limit=0", "cursor=nonsense"] {
            server
                .get(&format!("/api/v1/{list}{sep}{bad}"))
                .await
                .assert_error(400, "bad_query");
        }
        let max = server.get(&format!("/api/v1/{list}{sep}limit=10000")).await;
        assert_eq!(max.status, 200, "{list}: {}", max.body);
    }
    // Cursors of the documented form are accepted, whatever they name: empty is the first
    // page, a key past every item an empty last page, any bytes a group name.
    for ok in [
        "holders?cursor=",
        "sessions?cursor=99999999999999999999.0",
        "queue?cursor=1.2.ff00",
        "holders/groups?by=user&cursor=ff",
    ] {
        let r = server.get(&format!("/api/v1/{ok}")).await;
        assert_eq!(r.status, 200, "{ok}: {}", r.body);
    }
    // Found by the API fuzzer: a window the document allows is served, one it does not is
    // refused (an integer too large for the server included).
    for (window, status) in [("10", 200), ("2678400", 200), ("9", 400), ("2678401", 400)] {
        let r = server
            .get(&format!("/api/v1/usage?feature=cad&window_s={window}"))
            .await;
        assert_eq!(r.status, status, "window_s={window}: {}", r.body);
    }
    server
        .get("/api/v1/usage?feature=cad&window_s=6798461677874668265013248")
        .await
        .assert_error(400, "bad_query");
    // JSON Schema's integers include 7.0.
    server
        .post("/api/v1/remove", r#"{"lease_id": 123456.0}"#)
        .await
        .assert_error(404, "not_held");
    server
        .post("/api/v1/remove", r#"{"lease_id": 1.5}"#)
        .await
        .assert_error(400, "bad_json");
    server
        .get("/api/v1/holders/groups")
        .await
        .assert_error(400, "bad_query");
    server
        .get("/api/v1/holders/groups?by=planet")
        .await
        .assert_error(400, "bad_query");
    // The largest since_seq the document allows (i64::MAX) is accepted.
    let max = server
        .get("/api/v1/events?since_seq=9223372036854775807")
        .await;
    assert_eq!(max.status, 200, "{}", max.body);
    server
        .post("/api/v1/remove", "{not json")
        .await
        .assert_error(400, "bad_json");
    server
        .post("/api/v1/remove", "")
        .await
        .assert_error(400, "bad_json");
    server
        .post("/api/v1/remove", "[1,2]")
        .await
        .assert_error(400, "bad_json");
    server
        .post("/api/v1/remove", r#"{"lease_id": "seven"}"#)
        .await
        .assert_error(400, "bad_json");
    server
        .post("/api/v1/remove", r#"{"lease": 7}"#)
        .await
        .assert_error(400, "bad_json");
    server
        .post("/api/v1/remove", "{}")
        .await
        .assert_error(400, "bad_request");
    server
        .post(
            "/api/v1/remove",
            r#"{"lease_id": 7, "user": "ana", "host": "h"}"#,
        )
        .await
        .assert_error(400, "bad_request");
    server
        .post("/api/v1/remove", r#"{"lease_id": 123456}"#)
        .await
        .assert_error(404, "not_held");
    // Still serving after all that.
    assert_eq!(server.get("/api/v1/health").await.status, 200);
    assert!(!server.is_finished());
}
