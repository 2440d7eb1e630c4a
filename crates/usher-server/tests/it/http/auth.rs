//! Authentication: the token file, missing and wrong tokens, and the throttle on guessing.

use usher_server::http::ROUTES;

use super::{http, http_from, parse_exposition, start, value};
use crate::util::TestServer;

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
