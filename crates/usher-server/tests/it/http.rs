//! The admin HTTP listener, over real loopback sockets: every endpoint, authentication,
//! error bodies, the OpenAPI document against the router, and `/metrics` parsed after real
//! checkouts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use usher_client::ClientError;
use usher_server::http::{OPENAPI, ROUTES};

use crate::util::{Licensed, TestServer, eventually};

/// A response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// Asserts the status and the `{"error": {"code", "message"}}` body.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{self:?}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    http_from([127, 0, 0, 1], addr, method, path, token, body).await
}

/// [`http`] from the loopback address `from` (each address has its own failed-login
/// count).
pub async fn http_from(
    from: [u8; 4],
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, rest) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

async fn start() -> (Licensed, TestServer) {
    let lic = Licensed::new(crate::util::LICENSE);
    let server = TestServer::start(lic.config()).await;
    (lic, server)
}

impl TestServer {
    async fn get(&self, path: &str) -> HttpResponse {
        http(self.admin.unwrap(), "GET", path, Some(&self.token), None).await
    }

    async fn post(&self, path: &str, body: &str) -> HttpResponse {
        http(
            self.admin.unwrap(),
            "POST",
            path,
            Some(&self.token),
            Some(body),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_file_is_private_and_survives_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let (lic, server) = start().await;
    let path = lic.data_dir().join("admin").join("token");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim(), server.token);
    assert_eq!(server.token.len(), 64, "32 bytes in hex: {}", server.token);
    assert!(server.token.bytes().all(|b| b.is_ascii_hexdigit()));
    let mut config = server.config.clone();
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    server.shutdown().await.unwrap();
    let again = TestServer::start(config).await;
    assert_eq!(again.token, text.trim(), "the token is kept, not redrawn");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_route_refuses_a_missing_or_wrong_token() {
    let (_lic, server) = start().await;
    let admin = server.admin.unwrap();
    let api = ROUTES.iter().filter(|(_, p)| p.starts_with("/api/"));
    for (i, (method, path)) in api.enumerate() {
        // Each route from its own address, so the wrong tokens stay under the lockout.
        let from = [127, 0, 1, i as u8 + 1];
        let method = method.to_ascii_uppercase();
        let body = (method == "POST").then_some("{}");
        let none = http_from(from, admin, &method, path, None, body).await;
        none.assert_error(401, "unauthorized");
        assert!(none.headers.contains_key("www-authenticate"), "{none:?}");
        let wrong = http_from(from, admin, &method, path, Some("0123"), body).await;
        wrong.assert_error(401, "unauthorized");
        // The right token but for its last digit (changed, whatever it was).
        let last = if server.token.ends_with('0') {
            '1'
        } else {
            '0'
        };
        let almost = format!("{}{last}", &server.token[..63]);
        http_from(from, admin, &method, path, Some(&almost), body)
            .await
            .assert_error(401, "unauthorized");
    }
    assert!(
        !server.is_finished(),
        "an unauthenticated down must not stop the server"
    );
    // The open endpoints need no token.
    for path in [
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/",
        "/dashboard.js",
    ] {
        let r = http(admin, "GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
}

/// Guessing is throttled: after too many wrong tokens an address's wrong tokens are
/// answered 429, yet the right token from that very address still works (a guesser
/// behind the same address cannot lock the administrator out); every wrong token is
/// counted in `/metrics`.
#[tokio::test(flavor = "multi_thread")]
async fn ten_wrong_tokens_throttle_the_address_and_the_right_one_still_works() {
    use usher_server::auth::strikes::MAX_STRIKES;
    let (_lic, server) = start().await;
    let admin = server.admin.unwrap();
    let guesser = [127, 0, 2, 1];
    let get = |from, token| http_from(from, admin, "GET", "/api/v1/features", token, None);
    // A missing token is not a guess.
    get(guesser, None).await.assert_error(401, "unauthorized");
    for _ in 0..MAX_STRIKES {
        get(guesser, Some("guess"))
            .await
            .assert_error(401, "unauthorized");
    }
    let locked = get(guesser, Some("guess")).await;
    locked.assert_error(429, "too_many_failures");
    let retry: u64 = locked.headers["retry-after"].parse().unwrap();
    assert!((1..=60).contains(&retry), "{locked:?}");
    assert_eq!(
        get(guesser, Some(server.token.as_str())).await.status,
        200,
        "the right token passes even after ten wrong ones"
    );

    // Another address with the right token is served, and forgiven its own mistakes.
    let admin_host = [127, 0, 2, 2];
    for _ in 1..MAX_STRIKES {
        get(admin_host, Some("typo"))
            .await
            .assert_error(401, "unauthorized");
    }
    assert_eq!(
        get(admin_host, Some(server.token.as_str())).await.status,
        200
    );
    get(admin_host, Some("typo"))
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(
        get(admin_host, Some(server.token.as_str())).await.status,
        200
    );
    assert_eq!(
        http_from(guesser, admin, "GET", "/healthz", None, None)
            .await
            .status,
        200
    );

    let scrape = http(admin, "GET", "/metrics", None, None).await;
    let (_, samples) = parse_exposition(&scrape.body);
    let failures = value(&samples, "usher_admin_auth_failures_total", &[]).unwrap();
    assert_eq!(failures, f64::from(MAX_STRIKES + 1 + MAX_STRIKES - 1 + 1));
}

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

/// A token-based feature is listed after the pools, with no seats of its own, its
/// checkouts in use and what a seat costs in which pool.
#[tokio::test(flavor = "multi_thread")]
async fn features_list_a_token_based_feature_with_its_price() {
    let lic = Licensed::new(crate::util::TOKEN_LICENSE);
    let server = TestServer::start(lic.config()).await;
    let _held = server.client().await.checkout("sample").await.unwrap();
    let features = server.get("/api/v1/features").await.json();
    let names: Vec<_> = features
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["units", "sample"], "{features:#}");
    assert_eq!(features[0]["in_use"], 5, "{features:#}");
    assert!(features[0].get("tokens").is_none(), "{features:#}");
    let sample = &features[1];
    assert_eq!(
        (&sample["total"], &sample["in_use"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(sample["holders"], 1, "{features:#}");
    assert_eq!(
        sample["tokens"],
        json!({
            "costs": [{ "pool": "units", "version": "2", "tokens": 5 }],
            "tokens_in_use": 5
        }),
        "{features:#}"
    );
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

/// The OpenAPI document: valid 3.1 (parsed by `oas3`), every `$ref` resolves, and its
/// paths are exactly the router's routes, each answering with a status it documents.
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_route() {
    let spec = oas3::from_json(OPENAPI).expect("oas3 parses the document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not in the document"))[*method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        assert!(
            op["responses"].is_object(),
            "{method} {path} has no responses"
        );
        assert!(op["summary"].is_string(), "{method} {path} has no summary");
        // Authenticated exactly when it is an /api/ route.
        assert_eq!(
            op.get("security").is_some(),
            path.starts_with("/api/"),
            "{method} {path}"
        );
    }
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "the document describes {method} {path}, which the router does not serve"
            );
        }
    }
    // Every $ref points at a schema that exists.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").expect(&r);
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling {r}"
        );
    }

    // The router serves each documented route (the read-only ones, with the token), with a
    // status the document lists, and the open document itself is this one.
    let (_lic, server) = start().await;
    let served = http(server.admin.unwrap(), "GET", "/openapi.json", None, None).await;
    assert_eq!(served.json(), doc);
    for (method, path) in ROUTES.iter().filter(|(m, _)| *m == "get") {
        let path_q = if *path == "/api/v1/usage" {
            "/api/v1/usage?feature=cad"
        } else {
            path
        };
        let r = server.get(path_q).await;
        let documented = doc["paths"][*path][*method]["responses"]
            .as_object()
            .unwrap();
        assert!(
            documented.contains_key(&r.status.to_string()),
            "{method} {path} answered {} which is not documented: {}",
            r.status,
            r.body
        );
        let _ = method;
    }
}

/// A sample: metric name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text format strictly enough to catch what a scraper would reject:
/// every sample belongs to a family declared (`# TYPE`) just before it, families are not
/// interleaved or repeated, and label values are properly quoted and escaped.
pub fn parse_exposition(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "family {name} declared twice"
            );
            current = Some(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}').expect(line))),
            None => (name_labels, BTreeMap::new()),
        };
        let family = current
            .as_deref()
            .unwrap_or_else(|| panic!("{line:?} before any TYPE"));
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| *b == family))
            .unwrap_or(name);
        assert_eq!(base, family, "sample {line:?} outside its family");
        samples.push((name.to_string(), labels, value));
    }
    (types, samples)
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if name.is_empty() {
            return out;
        }
        assert_eq!(chars.next(), Some('"'), "label {name} not quoted in {s:?}");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated label value") {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?} in {s:?}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(name, value);
        match chars.next() {
            Some(',') | None => {}
            other => panic!("unexpected {other:?} after a label in {s:?}"),
        }
        if chars.peek().is_none() {
            return out;
        }
    }
}

pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_real_checkouts_denials_and_rejections() {
    let (_lic, server) = start().await;
    let ana = server.client().await;
    let bob = server.client().await;
    let _a = ana.checkout("cad").await.unwrap();
    let _b = bob.checkout("cad").await.unwrap();
    assert!(matches!(
        ana.checkout("cad").count(2).await,
        Err(ClientError::Denied(_))
    ));
    assert!(matches!(
        ana.checkout("nosuch").await,
        Err(ClientError::Denied(_))
    ));
    // A frame far over the limit: refused from its prefix, and the connection closed.
    let mut raw = crate::util::RawConn::connect(server.addr).await;
    raw.hello("mallory").await;
    raw.send_bytes(&u32::MAX.to_be_bytes()).await.unwrap();
    while raw.recv().await.is_some() {}

    let scrape = http(server.admin.unwrap(), "GET", "/metrics", None, None).await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape.headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{:?}",
        scrape.headers
    );
    let (types, samples) = parse_exposition(&scrape.body);
    let pool = [("feature", "cad"), ("vendor", "acme")];
    assert_eq!(
        value(&samples, "usher_seats_in_use", &pool),
        Some(2.0),
        "{}",
        scrape.body
    );
    assert_eq!(value(&samples, "usher_seats_total", &pool), Some(3.0));
    assert_eq!(
        value(&samples, "usher_seats_queued", &[("feature", "cad")]),
        Some(0.0)
    );
    assert_eq!(value(&samples, "usher_seats_borrowed", &pool), Some(0.0));
    assert_eq!(
        value(
            &samples,
            "usher_denials_total",
            &[("feature", "cad"), ("reason", "all_in_use")]
        ),
        Some(1.0),
        "{}",
        scrape.body
    );
    assert_eq!(
        value(
            &samples,
            "usher_denials_total",
            &[("feature", "?"), ("reason", "unknown_feature")]
        ),
        Some(1.0),
        "unknown names share one label value: {}",
        scrape.body
    );
    assert_eq!(
        value(&samples, "usher_sessions", &[]),
        Some(3.0),
        "ana, bob, mallory"
    );
    assert!(value(&samples, "usher_frames_rejected_total", &[]).unwrap() >= 1.0);
    let checkouts = value(
        &samples,
        "usher_request_duration_seconds_count",
        &[("kind", "checkout")],
    );
    assert_eq!(checkouts, Some(4.0), "{}", scrape.body);
    assert!(value(&samples, "usher_store_commit_duration_seconds_count", &[]).unwrap() >= 4.0);
    assert!(value(&samples, "usher_store_batch_size_count", &[]).unwrap() >= 4.0);
    assert!(value(&samples, "usher_connections", &[]).unwrap() >= 2.0);
    for (family, kind) in [
        ("usher_request_duration_seconds", "histogram"),
        ("usher_store_commit_duration_seconds", "histogram"),
        ("usher_store_batch_size", "histogram"),
        ("usher_connections_rejected_total", "counter"),
        ("flexlm_feature_issued", "gauge"),
        ("flexlm_feature_used", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    // flexlm_exporter's names and labels, app = vendor, name = feature.
    let flex = [("app", "acme"), ("name", "cad")];
    assert_eq!(value(&samples, "flexlm_feature_issued", &flex), Some(3.0));
    assert_eq!(value(&samples, "flexlm_feature_used", &flex), Some(2.0));
    for (n, l, _) in samples
        .iter()
        .filter(|s| s.0.starts_with("flexlm_feature_"))
    {
        assert_eq!(l.keys().collect::<Vec<_>>(), ["app", "name"], "{n}");
    }

    // Histogram buckets are cumulative and end at the count.
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| n == "usher_request_duration_seconds_bucket" && l["kind"] == "checkout")
        .map(|s| s.2)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&4.0));

    // A refused address is counted by reason.
    let lic = Licensed::new(crate::util::LICENSE);
    let mut config = lic.config();
    config.allow = vec!["10.0.0.0/8".parse().unwrap()];
    let walled = TestServer::start(config).await;
    let mut s = tokio::net::TcpStream::connect(walled.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let _ = s.read(&mut buf).await;
    let rejected = eventually(
        Duration::from_secs(20),
        "the refusal is counted",
        || async {
            let r = http(walled.admin.unwrap(), "GET", "/metrics", None, None).await;
            let (_, samples) = parse_exposition(&r.body);
            value(
                &samples,
                "usher_connections_rejected_total",
                &[("reason", "not_allowed")],
            )
            .filter(|v| *v >= 1.0)
        },
    )
    .await;
    assert_eq!(rejected, 1.0);
}

/// Sends `head` (a raw request head, `\r\n\r\n` included) on a fresh connection and
/// returns the status code of the answer.
async fn raw_status(addr: SocketAddr, head: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"))
}

/// The admin API answers only requests that name it: its own address, `localhost` on
/// loopback, or a configured name. A page whose DNS name is rebound to the listener
/// sends its own name and is refused (421); a request without `Host` gets 400.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_naming_another_host_is_refused() {
    let lic = Licensed::new(crate::util::LICENSE);
    let mut config = lic.config();
    config.admin_hosts = vec!["licserver.example.com".into()];
    let server = TestServer::start(config).await;
    let admin = server.admin.unwrap();
    let port = admin.port();
    let get = |host: Option<String>| {
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        format!("GET /healthz HTTP/1.1\r\n{host}Connection: close\r\n\r\n")
    };
    for (host, want) in [
        (Some(format!("127.0.0.1:{port}")), 200),
        (Some(format!("localhost:{port}")), 200),
        (Some(format!("licserver.example.com:{port}")), 200),
        (Some(format!("rebound.attacker.example:{port}")), 421),
        (Some(format!("127.0.0.1:{}", port + 1)), 421),
        (None, 400),
    ] {
        assert_eq!(
            raw_status(admin, &get(host.clone())).await,
            want,
            "Host {host:?}"
        );
    }
    // The API too, with the right token: the Host check comes first.
    let api = format!(
        "GET /api/v1/features HTTP/1.1\r\nHost: rebound.attacker.example:{port}\r\n\
         Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
        server.token
    );
    assert_eq!(raw_status(admin, &api).await, 421);
}

/// Raises this process's open-file limit to hold `n` more descriptors, if the hard limit
/// allows; returns whether it does.
fn room_for_descriptors(n: u64) -> bool {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let want = n + 512;
    if limit.current.is_some_and(|c| c >= want) {
        return true;
    }
    if limit.maximum.is_some_and(|m| m < want) {
        eprintln!("skipped: the hard open-file limit is below {want}");
        return false;
    }
    limit.current = Some(want);
    setrlimit(Resource::Nofile, limit).is_ok()
}

/// 1,000 idle connections to the admin listener: those beyond its cap are closed at
/// once, the rest when their header-read timeout passes, and then the API answers again.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_connections_are_capped_and_closed() {
    use usher_server::http::listener::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
    const IDLE: usize = 1_000;
    if !room_for_descriptors(2 * IDLE as u64) {
        return;
    }
    let (_lic, server) = start().await;
    let admin = server.admin.unwrap();
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    let started = std::time::Instant::now();
    let first = closed_within(idle, Duration::from_secs(3)).await;
    let closed_at_once = first.iter().filter(|(c, _)| *c).count();
    assert!(
        closed_at_once >= IDLE - MAX_CONNECTIONS,
        "only {closed_at_once} of {IDLE} idle connections were closed at once (cap {MAX_CONNECTIONS})"
    );
    let idle: Vec<_> = first
        .into_iter()
        .filter(|(c, _)| !c)
        .map(|(_, s)| s)
        .collect();
    let rest = idle.len();
    let second = closed_within(idle, HEADER_READ_TIMEOUT + Duration::from_secs(10)).await;
    let still_open = second.iter().filter(|(c, _)| !c).count();
    assert_eq!(
        still_open,
        0,
        "{still_open} of {rest} idle connections were still open {:?} after connecting",
        started.elapsed()
    );
    assert_eq!(
        server.get("/api/v1/features").await.status,
        200,
        "the API answers again"
    );
}

/// Reads each stream concurrently for at most `limit`: whether the server closed it (a
/// read returned end of stream or failed), with the stream.
async fn closed_within(
    streams: Vec<tokio::net::TcpStream>,
    limit: Duration,
) -> Vec<(bool, tokio::net::TcpStream)> {
    let handles: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let read = tokio::time::timeout(limit, s.read(&mut buf)).await;
                (matches!(read, Ok(Ok(0)) | Ok(Err(_))), s)
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// `/features` counts from the published view: the overdraft allowance and the seats held
/// beyond the count, and a pool that left the catalog on a reload but is still held.
#[tokio::test(flavor = "multi_thread")]
async fn features_show_overdraft_and_pools_that_left_the_catalog() {
    let lic = Licensed::new("FEATURE cad acme 1.0 permanent 1 HOSTID=ANY OVERDRAFT=1\n");
    let server = TestServer::start(lic.config()).await;
    let ana = server.client().await;
    let _a = ana.checkout("cad").await.unwrap();
    let _b = ana.checkout("cad").await.unwrap();
    let features = server.get("/api/v1/features").await.json();
    let cad = &features[0];
    assert_eq!(
        (&cad["overdraft"], &cad["overdraft_in_use"], &cad["in_use"]),
        (&Value::from(1), &Value::from(1), &Value::from(2)),
        "{features:#}"
    );
    assert_eq!(cad["holders"], 2, "{features:#}");

    lic.write("FEATURE sim acme 1.0 permanent 4 HOSTID=ANY\n");
    let reloaded = server.post("/api/v1/reload", "").await;
    assert_eq!(reloaded.status, 200, "{reloaded:?}");
    let features = server.get("/api/v1/features").await.json();
    let names: Vec<&str> = features
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sim", "cad"], "{features:#}");
    let cad = &features[1];
    assert_eq!(
        (&cad["total"], &cad["in_use"]),
        (&Value::from(0), &Value::from(2))
    );
    assert!(cad["expires_at"].is_null());
}

/// An expired pool and one not yet started are told apart from a pool of no seats:
/// `expired_at` / `starts_at` with the seats of their lines, and `expires_at` never null
/// for a line that has an expiry.
#[tokio::test(flavor = "multi_thread")]
async fn features_show_expired_and_not_yet_started_pools_with_their_dates() {
    let lic = Licensed::new(
        "FEATURE old acme 1.0 31-jan-2020 5 HOSTID=ANY\n\
         FEATURE new acme 1.0 31-dec-2099 3 START=1-jan-2099 HOSTID=ANY\n\
         FEATURE cad acme 2025 permanent 2 HOSTID=ANY\n",
    );
    let server = TestServer::start(lic.config()).await;
    let features = server.get("/api/v1/features").await.json();
    let of = |name: &str| {
        features
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["feature"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {features}"))
            .clone()
    };
    let day = |y, m, d| {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    let old = of("old");
    assert_eq!(old["total"], 0, "{old}");
    assert_eq!(old["expired_at"], day(2020, 2, 1), "{old}");
    assert_eq!(old["expires_at"], day(2020, 2, 1), "{old}");
    assert_eq!(old["starts_at"], Value::Null, "{old}");
    assert_eq!(old["licensed"], 5, "{old}");
    let new = of("new");
    assert_eq!(new["total"], 0, "{new}");
    assert_eq!(new["starts_at"], day(2099, 1, 1), "{new}");
    assert_eq!(new["expires_at"], day(2100, 1, 1), "{new}");
    assert_eq!(new["expired_at"], Value::Null, "{new}");
    assert_eq!(new["licensed"], 3, "{new}");
    let cad = of("cad");
    assert_eq!(cad["total"], 2);
    for field in ["expired_at", "starts_at", "expires_at"] {
        assert_eq!(cad[field], Value::Null, "{field}: {cad}");
    }
    assert!(cad.get("licensed").is_none(), "{cad}");
}
