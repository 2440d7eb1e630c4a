//! The names, types and label names of `/metrics`, pinned: dashboards, alerts and the
//! flexlm_exporter-compatible `flexlm_*` families depend on them, so a change to the
//! exposition that renames, retypes or relabels a series fails here.

use std::collections::{BTreeMap, BTreeSet};

use usher_client::ClientError;

use crate::http::{http, parse_exposition};
use crate::util::{Licensed, TestServer};

/// Every series a scrape holds, as `(sample name, family type, label names)`, with the
/// histograms' `le` label left out (it is part of the type).
const PINNED: &[(&str, &str, &[&str])] = &[
    ("flexlm_feature_issued", "gauge", &["app", "name"]),
    ("flexlm_feature_used", "gauge", &["app", "name"]),
    (
        "flexlm_server_status",
        "gauge",
        &["app", "fqdn", "master", "port", "version"],
    ),
    ("flexlm_vendor_status", "gauge", &["app", "name", "version"]),
    ("usher_admin_auth_failures_total", "counter", &[]),
    ("usher_connections", "gauge", &[]),
    ("usher_connections_rejected_total", "counter", &["reason"]),
    ("usher_denials_total", "counter", &["feature", "reason"]),
    ("usher_frames_rejected_total", "counter", &[]),
    (
        "usher_request_duration_seconds_bucket",
        "histogram",
        &["kind"],
    ),
    (
        "usher_request_duration_seconds_count",
        "histogram",
        &["kind"],
    ),
    ("usher_request_duration_seconds_sum", "histogram", &["kind"]),
    ("usher_requests_throttled_total", "counter", &[]),
    (
        "usher_seats_borrowed",
        "gauge",
        &["feature", "vendor", "version"],
    ),
    (
        "usher_seats_in_use",
        "gauge",
        &["feature", "vendor", "version"],
    ),
    ("usher_seats_queued", "gauge", &["feature"]),
    (
        "usher_seats_total",
        "gauge",
        &["feature", "vendor", "version"],
    ),
    ("usher_sessions", "gauge", &[]),
    ("usher_store_available", "gauge", &[]),
    ("usher_store_batch_size_bucket", "histogram", &[]),
    ("usher_store_batch_size_count", "histogram", &[]),
    ("usher_store_batch_size_sum", "histogram", &[]),
    (
        "usher_store_commit_duration_seconds_bucket",
        "histogram",
        &[],
    ),
    (
        "usher_store_commit_duration_seconds_count",
        "histogram",
        &[],
    ),
    ("usher_store_commit_duration_seconds_sum", "histogram", &[]),
    ("usher_udp_datagrams_total", "counter", &["result"]),
    ("usher_uptime_seconds", "gauge", &[]),
];

/// The label values of the bounded label sets, pinned as well: a dashboard filters on them.
const PINNED_VALUES: &[(&str, &str, &[&str])] = &[
    (
        "usher_connections_rejected_total",
        "reason",
        &[
            "address_rate",
            "handshake",
            "handshake_timeout",
            "handshakes_limit",
            "not_allowed",
            "not_reading",
            "per_address_limit",
            "plaintext",
            "total_limit",
        ],
    ),
    (
        "usher_request_duration_seconds_count",
        "kind",
        &[
            "activity",
            "borrow",
            "checkin",
            "checkout",
            "dequeue",
            "detach",
            "down",
            "goodbye",
            "heartbeat",
            "hello",
            "reload",
            "remove",
            "return",
            "status",
        ],
    ),
    (
        "usher_udp_datagrams_total",
        "result",
        &[
            "discovered",
            "discovery_off",
            "forged",
            "garbage",
            "keepalive",
            "not_allowed",
            "over_share",
            "rate_limited",
            "replayed",
            "session_ended",
            "stale",
            "unknown_session",
        ],
    ),
    (
        "usher_denials_total",
        "reason",
        &["all_in_use", "unknown_feature"],
    ),
];

/// The family a sample belongs to: its name without the histogram suffixes.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| {
            name.strip_suffix(s)
                .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
        })
        .unwrap_or(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn metric_names_types_and_labels_are_pinned() {
    let lic = Licensed::new(crate::util::LICENSE);
    let server = TestServer::start(lic.config()).await;
    let ana = server.client().await;
    let _a = ana.checkout("cad").await.unwrap();
    let bob = server.client().await;
    let _b = bob.checkout("cad").count(2).await.unwrap();
    assert!(matches!(
        ana.checkout("cad").await,
        Err(ClientError::Denied(_))
    ));
    assert!(matches!(
        ana.checkout("nosuch").await,
        Err(ClientError::Denied(_))
    ));

    let scrape = http(server.admin.unwrap(), "GET", "/metrics", None, None).await;
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    let (types, samples) = parse_exposition(&scrape.body);
    let mut seen: BTreeMap<&str, (String, BTreeSet<&str>)> = BTreeMap::new();
    let mut values: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for (name, labels, _) in &samples {
        let kind = types[family_of(name, &types)].clone();
        let names: BTreeSet<&str> = labels
            .keys()
            .map(String::as_str)
            .filter(|&l| l != "le")
            .collect();
        let entry = seen.entry(name).or_insert_with(|| (kind, names.clone()));
        assert_eq!(entry.1, names, "{name}: every sample has the same labels");
        for (label, value) in labels {
            values.entry((name, label)).or_default().insert(value);
        }
    }
    let seen: Vec<(&str, &str, Vec<&str>)> = seen
        .iter()
        .map(|(name, (kind, labels))| (*name, kind.as_str(), labels.iter().copied().collect()))
        .collect();
    let pinned: Vec<(&str, &str, Vec<&str>)> = PINNED
        .iter()
        .map(|(name, kind, labels)| (*name, *kind, labels.to_vec()))
        .collect();
    assert_eq!(seen, pinned, "{}", scrape.body);
    for (name, label, want) in PINNED_VALUES {
        let have: Vec<&str> = values[&(*name, *label)].iter().copied().collect();
        assert_eq!(&have, want, "{name}{{{label}}}");
    }
}
