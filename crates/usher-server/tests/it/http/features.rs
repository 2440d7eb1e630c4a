//! `/features`: token-based features, overdraft, pools that left the catalog, expired and
//! not-yet-started pools.

use serde_json::{Value, json};

use crate::util::{Licensed, TestServer};

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
