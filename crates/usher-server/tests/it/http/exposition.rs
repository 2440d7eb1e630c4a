//! `/metrics`: a strict parser of the Prometheus text format, and the counts after real
//! checkouts, denials and rejections.

use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use usher_client::ClientError;

use super::{http, start};
use crate::util::{Licensed, TestServer, eventually};

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
