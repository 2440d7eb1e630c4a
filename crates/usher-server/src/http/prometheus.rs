//! `/metrics`: the Prometheus text exposition.
//!
//! Seat gauges come from one ledger query, so a scrape sees one consistent moment; the
//! hot-path histograms and counters come from [`crate::metrics::Metrics`]. The `flexlm_*`
//! families repeat the seat counts under the names and labels of flexlm_exporter
//! (`flexlm_feature_issued{app,name}`, `flexlm_feature_used{app,name}`,
//! `flexlm_server_status{app,fqdn,master,port,version}`, `flexlm_vendor_status{app,name,version}`),
//! with `app` set to the vendor, so dashboards and alerts built for it keep working.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::metrics::{family, label};

/// What one scrape needs from the ledger.
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

pub(super) async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let seats = s
        .ctx
        .ledger
        .query(|v| {
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
                sessions: v.ledger.sessions().count(),
                denials: v.denials.iter().map(|(k, n)| (k.clone(), *n)).collect(),
                server_name: v.info.server_name.clone(),
                port: v.info.port,
                vendors: v.info.vendors.clone(),
            }
        })
        .await?;
    let mut out = String::with_capacity(8 * 1024);
    render_seats(&mut out, &seats);
    s.metrics.render(&mut out);
    family(
        &mut out,
        "usher_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(out, "usher_uptime_seconds {}", s.metrics.uptime().as_secs());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

fn render_seats(out: &mut String, seats: &Seats) {
    let pool_labels = |(f, v, ver): &(String, String, String)| {
        format!(
            "feature=\"{}\",vendor=\"{}\",version=\"{}\"",
            label(f),
            label(v),
            label(ver)
        )
    };
    type Pick = fn(&(u32, u32, u32)) -> u32;
    let gauges: [(&str, &str, Pick); 3] = [
        ("usher_seats_total", "Seats licensed now, per pool.", |p| {
            p.0
        }),
        ("usher_seats_in_use", "Seats held now, per pool.", |p| p.1),
        (
            "usher_seats_borrowed",
            "Seats borrowed for offline use (part of usher_seats_in_use).",
            |p| p.2,
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        for (key, p) in &seats.pools {
            let _ = writeln!(out, "{name}{{{}}} {}", pool_labels(key), value(p));
        }
    }
    // The queue is per feature (a waiting checkout may be served by any pool of it).
    family(
        out,
        "usher_seats_queued",
        "gauge",
        "Seats asked for by checkouts waiting in the queue, per feature.",
    );
    let features: std::collections::BTreeSet<&String> =
        seats.pools.keys().map(|(f, _, _)| f).collect();
    for f in features {
        let n = seats.queued.get(f).copied().unwrap_or(0);
        let _ = writeln!(out, "usher_seats_queued{{feature=\"{}\"}} {n}", label(f));
    }
    family(
        out,
        "usher_denials_total",
        "counter",
        "Checkouts refused since the server started, by feature (\"?\" for names the catalog does not know) and reason.",
    );
    for ((feature, reason), n) in &seats.denials {
        let _ = writeln!(
            out,
            "usher_denials_total{{feature=\"{}\",reason=\"{reason}\"}} {n}",
            label(feature)
        );
    }
    family(out, "usher_sessions", "gauge", "Client sessions alive now.");
    let _ = writeln!(out, "usher_sessions {}", seats.sessions);

    // flexlm_exporter compatibility: per vendor (`app`) and feature (`name`), summed over
    // versions, as lmstat's "Users of FEATURE: (Total of N licenses issued; ...)" line.
    let mut per_feature: BTreeMap<(&str, &str), (u32, u32)> = BTreeMap::new();
    for ((f, v, _), p) in &seats.pools {
        let e = per_feature.entry((v, f)).or_default();
        e.0 += p.0;
        e.1 += p.1;
    }
    family(
        out,
        "flexlm_feature_issued",
        "gauge",
        "License feature issued labeled by app and feature name of the license.",
    );
    for ((app, name), p) in &per_feature {
        let _ = writeln!(
            out,
            "flexlm_feature_issued{{app=\"{}\",name=\"{}\"}} {}",
            label(app),
            label(name),
            p.0
        );
    }
    family(
        out,
        "flexlm_feature_used",
        "gauge",
        "License feature used labeled by app and feature name of the license.",
    );
    for ((app, name), p) in &per_feature {
        let _ = writeln!(
            out,
            "flexlm_feature_used{{app=\"{}\",name=\"{}\"}} {}",
            label(app),
            label(name),
            p.1
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    family(
        out,
        "flexlm_server_status",
        "gauge",
        "License server status labeled by app, fqdn, master, port and version of the license.",
    );
    for vendor in &seats.vendors {
        let _ = writeln!(
            out,
            "flexlm_server_status{{app=\"{}\",fqdn=\"{}\",master=\"true\",port=\"{}\",version=\"{version}\"}} 1",
            label(vendor),
            label(&seats.server_name),
            seats.port
        );
    }
    family(
        out,
        "flexlm_vendor_status",
        "gauge",
        "License vendor status labeled by app, name and version of the license.",
    );
    for vendor in &seats.vendors {
        let _ = writeln!(
            out,
            "flexlm_vendor_status{{app=\"{}\",name=\"{}\",version=\"{version}\"}} 1",
            label(vendor),
            label(vendor)
        );
    }
}
