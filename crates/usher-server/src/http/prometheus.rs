//! `/metrics`: the Prometheus text exposition (0.0.4), encoded by prometheus-client from
//! two collectors.
//!
//! Seat gauges come from one ledger query, so a scrape sees one consistent moment; the
//! hot-path histograms and counters come from [`crate::metrics::Metrics`]. The `flexlm_*`
//! families repeat the seat counts under the names and labels of flexlm_exporter
//! (`flexlm_feature_issued{app,name}`, `flexlm_feature_used{app,name}`,
//! `flexlm_server_status{app,fqdn,master,port,version}`, `flexlm_vendor_status{app,name,version}`),
//! with `app` set to the vendor, so dashboards and alerts built for it keep working.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{ApiError, ApiState};
use crate::ledger_task::View;
use crate::metrics::{Samples, families};

/// What one scrape needs from the ledger.
#[derive(Debug)]
struct Seats {
    /// `(feature, vendor, version) -> (total, in_use, borrowed)`.
    pools: BTreeMap<(String, String, String), (u32, u32, u32)>,
    /// Seats asked for by waiting checkouts, per feature.
    queued: BTreeMap<String, u32>,
    sessions: usize,
    denials: Vec<((String, &'static str), u64)>,
    server_name: String,
    port: u16,
    vendors: Vec<String>,
}

impl Seats {
    /// Copies what a scrape shows, on the ledger task between batches; the formatting is
    /// left to the scrape's own task.
    fn read(v: &View<'_>) -> Seats {
        let mut pools = BTreeMap::new();
        for f in super::api::features_of(v) {
            let e = pools
                .entry((f.feature, f.vendor, f.version))
                .or_insert((0, 0, 0));
            e.0 += f.total;
            e.1 += f.in_use;
            e.2 += f.borrowed;
        }
        let mut queued = BTreeMap::new();
        for (r, _) in v.ledger.queued() {
            *queued.entry(r.feature.clone()).or_insert(0u32) += r.count;
        }
        Seats {
            pools,
            queued,
            sessions: v.ledger.session_count(),
            denials: v.denials.iter().map(|(k, n)| (k.clone(), *n)).collect(),
            server_name: v.info.server_name.clone(),
            port: v.info.port,
            vendors: v.info.vendors.clone(),
        }
    }
}

pub(super) async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let seats = s.ctx.ledger.query(Seats::read).await?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(seats));
    registry.register_collector(Box::new(s.metrics.clone()));
    let mut out = String::with_capacity(8 * 1024);
    // The 0.0.4 text format, as the content type says: no OpenMetrics `# EOF` line.
    encode_registry(&mut out, &registry).expect("writing to a String cannot fail");
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// The seat families and their `flexlm_*` twins, as of the ledger query.
impl Collector for Seats {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let pools = |pick: fn(&(u32, u32, u32)) -> u32| {
            Samples::gauges(self.pools.iter().map(move |((f, v, ver), p)| {
                let labels = [("feature", f), ("vendor", v), ("version", ver)];
                (labels.map(|(k, v)| (k, v.as_str())), pick(p))
            }))
        };
        // The queue is per feature (a waiting checkout may be served by any pool of it).
        let features: BTreeSet<&String> = self.pools.keys().map(|(f, _, _)| f).collect();
        let queued = Samples::gauges(features.into_iter().map(|f| {
            let n = self.queued.get(f).copied().unwrap_or(0);
            ([("feature", f.as_str())], n)
        }));
        let denials = Samples::counters(self.denials.iter().map(|((feature, reason), n)| {
            ([("feature", feature.as_str()), ("reason", reason)], *n)
        }));
        // flexlm_exporter compatibility: per vendor (`app`) and feature (`name`), summed
        // over versions, as lmstat's "Users of FEATURE: (Total of N licenses issued; ...)".
        let mut per_feature: BTreeMap<(&str, &str), (u32, u32)> = BTreeMap::new();
        for ((f, v, _), p) in &self.pools {
            let entry = per_feature.entry((v, f)).or_default();
            entry.0 += p.0;
            entry.1 += p.1;
        }
        let flexlm_features = |pick: fn(&(u32, u32)) -> u32| {
            Samples::gauges(
                per_feature
                    .iter()
                    .map(move |(&(app, name), p)| ([("app", app), ("name", name)], pick(p))),
            )
        };
        let version = env!("CARGO_PKG_VERSION");
        let port = self.port.to_string();
        let servers = Samples::gauges(self.vendors.iter().map(|app| {
            let labels = [
                ("app", app.as_str()),
                ("fqdn", &self.server_name),
                ("master", "true"),
                ("port", &port),
                ("version", version),
            ];
            (labels, 1)
        }));
        let vendors = Samples::gauges(self.vendors.iter().map(|app| {
            (
                [("app", app.as_str()), ("name", app), ("version", version)],
                1,
            )
        }));
        families(
            encoder,
            &[
                (
                    "usher_seats_total",
                    "Seats licensed now, per pool.",
                    &pools(|p| p.0),
                ),
                (
                    "usher_seats_in_use",
                    "Seats held now, per pool.",
                    &pools(|p| p.1),
                ),
                (
                    "usher_seats_borrowed",
                    "Seats borrowed for offline use (part of usher_seats_in_use).",
                    &pools(|p| p.2),
                ),
                (
                    "usher_seats_queued",
                    "Seats asked for by checkouts waiting in the queue, per feature.",
                    &queued,
                ),
                (
                    "usher_denials_total",
                    "Checkouts refused since the server started, by feature (\"?\" for names the catalog does not know) and reason.",
                    &denials,
                ),
                (
                    "usher_sessions",
                    "Client sessions alive now.",
                    &ConstGauge::new(self.sessions),
                ),
                (
                    "flexlm_feature_issued",
                    "License feature issued labeled by app and feature name of the license.",
                    &flexlm_features(|p| p.0),
                ),
                (
                    "flexlm_feature_used",
                    "License feature used labeled by app and feature name of the license.",
                    &flexlm_features(|p| p.1),
                ),
                (
                    "flexlm_server_status",
                    "License server status labeled by app, fqdn, master, port and version of the license.",
                    &servers,
                ),
                (
                    "flexlm_vendor_status",
                    "License vendor status labeled by app, name and version of the license.",
                    &vendors,
                ),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(collector: impl Collector) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector));
        let mut out = String::new();
        encode_registry(&mut out, &registry).unwrap();
        out
    }

    /// The seat families byte for byte as scrapers have always read them (escaped label
    /// values, the `_total` counter family, the flexlm_exporter spellings).
    #[test]
    fn seat_families_are_encoded_as_before() {
        let seats = Seats {
            pools: [
                (("cad".into(), "acme".into(), "2025".into()), (3, 2, 1)),
                (("sim\"x".into(), "acme".into(), "1.0".into()), (10, 0, 0)),
            ]
            .into_iter()
            .collect(),
            queued: [("cad".to_string(), 2)].into_iter().collect(),
            sessions: 4,
            denials: vec![
                (("cad".into(), "all_in_use"), 5),
                (("?".into(), "unknown_feature"), 1),
            ],
            server_name: "lic.example".into(),
            port: 27000,
            vendors: vec!["acme".into()],
        };
        let v = env!("CARGO_PKG_VERSION");
        let want = "# HELP usher_seats_total Seats licensed now, per pool.\n\
         # TYPE usher_seats_total gauge\n\
         usher_seats_total{feature=\"cad\",vendor=\"acme\",version=\"2025\"} 3\n\
         usher_seats_total{feature=\"sim\\\"x\",vendor=\"acme\",version=\"1.0\"} 10\n\
         # HELP usher_seats_in_use Seats held now, per pool.\n\
         # TYPE usher_seats_in_use gauge\n\
         usher_seats_in_use{feature=\"cad\",vendor=\"acme\",version=\"2025\"} 2\n\
         usher_seats_in_use{feature=\"sim\\\"x\",vendor=\"acme\",version=\"1.0\"} 0\n\
         # HELP usher_seats_borrowed Seats borrowed for offline use (part of usher_seats_in_use).\n\
         # TYPE usher_seats_borrowed gauge\n\
         usher_seats_borrowed{feature=\"cad\",vendor=\"acme\",version=\"2025\"} 1\n\
         usher_seats_borrowed{feature=\"sim\\\"x\",vendor=\"acme\",version=\"1.0\"} 0\n\
         # HELP usher_seats_queued Seats asked for by checkouts waiting in the queue, per feature.\n\
         # TYPE usher_seats_queued gauge\n\
         usher_seats_queued{feature=\"cad\"} 2\n\
         usher_seats_queued{feature=\"sim\\\"x\"} 0\n\
         # HELP usher_denials_total Checkouts refused since the server started, by feature (\"?\" for names the catalog does not know) and reason.\n\
         # TYPE usher_denials_total counter\n\
         usher_denials_total{feature=\"cad\",reason=\"all_in_use\"} 5\n\
         usher_denials_total{feature=\"?\",reason=\"unknown_feature\"} 1\n\
         # HELP usher_sessions Client sessions alive now.\n\
         # TYPE usher_sessions gauge\n\
         usher_sessions 4\n\
         # HELP flexlm_feature_issued License feature issued labeled by app and feature name of the license.\n\
         # TYPE flexlm_feature_issued gauge\n\
         flexlm_feature_issued{app=\"acme\",name=\"cad\"} 3\n\
         flexlm_feature_issued{app=\"acme\",name=\"sim\\\"x\"} 10\n\
         # HELP flexlm_feature_used License feature used labeled by app and feature name of the license.\n\
         # TYPE flexlm_feature_used gauge\n\
         flexlm_feature_used{app=\"acme\",name=\"cad\"} 2\n\
         flexlm_feature_used{app=\"acme\",name=\"sim\\\"x\"} 0\n\
         # HELP flexlm_server_status License server status labeled by app, fqdn, master, port and version of the license.\n\
         # TYPE flexlm_server_status gauge\n\
         flexlm_server_status{app=\"acme\",fqdn=\"lic.example\",master=\"true\",port=\"27000\",version=\"{v}\"} 1\n\
         # HELP flexlm_vendor_status License vendor status labeled by app, name and version of the license.\n\
         # TYPE flexlm_vendor_status gauge\n\
         flexlm_vendor_status{app=\"acme\",name=\"acme\",version=\"{v}\"} 1\n"
            .replace("{v}", v);
        assert_eq!(encoded(seats), want);
    }
}
