//! `usher status --json`: the report as JSON, in the shape documented on [`render_json`],
//! which is a contract.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use usher_client::status::{FeatureStatus, Holder, QueueEntry, StatusReport, TokenFeatureStatus};

use crate::show::{expiry_date, format_handle, instant, start_date};

/// Renders the report as JSON, in this shape (times RFC 3339 in UTC, `null` when unknown):
///
/// ```json
/// {
///   "server": { "name": "lic1", "version": "0.1.0", "port": 1648,
///               "started_at": "2026-03-01T08:00:00Z", "now": "2026-03-01T10:00:00Z",
///               "license_files": ["/etc/usher/a.lic"], "vendors": ["demo"] },
///   "features": [
///     { "feature": "cad", "vendor": "demo", "version": "2025",
///       "expires": "2027-12-31",            // last valid day; null when permanent
///       "expired": null,                    // every line expired: the last valid day
///       "starts": null,                     // no line valid yet: the first valid day
///       "licensed": null,                   // for those two: the seats of the lines
///       "total": 3, "in_use": 1,
///       "holders": [
///         { "user": "alice", "host": "ws1", "display": "/dev/pts/0", "pid": 4242,
///           "program": "cad", "version": "2025", "since": "2026-03-01T09:39:00Z",
///           "count": 1, "handle": "1234", "connected": true, "detached": false,
///           "overdraft": false,
///           "lingering_until": null, "borrowed_until": null, "token_for": null } ] } ],
///   "token_features": [
///     { "feature": "solver", "vendor": "demo", "version": "1",
///       "expires": null, "in_use": 1, "tokens_in_use": 4,
///       "costs": [ { "pool": "tokens", "version": "1", "tokens": 4 } ] } ],
///   "queue": [
///     { "feature": "cad", "version": "2025", "position": 1, "priority": 0, "count": 1,
///       "user": "bob", "host": "ws2", "display": ":0", "pid": 77, "program": "cad",
///       "since": "2026-03-01T09:50:00Z", "gives_up": null, "handle": "1240" } ]
/// }
/// ```
///
/// One `features` entry per pool, in report order. A token-based feature has no pool: it
/// is a `token_features` entry, whose `costs` say what one seat costs in which pool (tried
/// in order), and whose tokens are held by the pools' holders marked `token_for`. `handle` is a string of decimal digits
/// (the text `usher remove` takes) rather than a number, because lease ids use all 64 bits
/// and JSON readers that hold numbers as doubles would round them. `pid` 0 means unknown.
/// `connected` is false while a holder's session is disconnected but still holds seats;
/// `detached` is true while it has no connection by agreement and keeps its seats with UDP
/// keepalives (it stays `connected`).
pub fn render_json(report: &StatusReport) -> Value {
    let mut value = json!({
        "server": {
            "name": report.server_name,
            "version": report.server_version,
            "port": report.port,
            "started_at": rfc3339(report.started_at_ms),
            "now": rfc3339(report.now_ms),
            "license_files": report.license_files,
            "vendors": report.vendors,
        },
        "features": report.features.iter().map(pool_json).collect::<Vec<_>>(),
        "token_features": report.token_features.iter().map(token_json).collect::<Vec<_>>(),
        "queue": report.queue.iter().map(queue_json).collect::<Vec<_>>(),
    });
    // Only when the report is short of the whole status, so the usual shape is unchanged.
    for (key, n) in [
        ("holders_not_shown", report.holders_not_shown()),
        ("queue_not_shown", report.queue_not_shown()),
    ] {
        if n > 0 {
            value[key] = json!(n);
        }
    }
    value
}

fn queue_json(q: &QueueEntry) -> Value {
    json!({
        "feature": q.feature,
        "version": q.version,
        "position": q.position,
        "priority": (q.priority >= 0).then_some(q.priority),
        "count": q.count,
        "user": q.user,
        "host": q.host,
        "display": q.display,
        "pid": q.pid,
        "program": q.program,
        "since": rfc3339(q.since_ms),
        "gives_up": rfc3339(q.deadline_ms),
        "handle": format_handle(q.lease_id),
    })
}

fn pool_json(pool: &FeatureStatus) -> Value {
    let day = |d: Option<chrono::NaiveDate>| d.map(|d| d.format("%Y-%m-%d").to_string());
    json!({
        "feature": pool.feature,
        "vendor": pool.vendor,
        "version": pool.version,
        "expires": day(expiry_date(pool.expires_at_ms)),
        "expired": day(expiry_date(pool.ended_at_ms)),
        "starts": day(start_date(pool.starts_at_ms)),
        "licensed": (pool.licensed > 0).then_some(pool.licensed),
        "total": pool.total,
        "in_use": pool.in_use,
        "holders": pool.holders.iter().map(holder_json).collect::<Vec<_>>(),
    })
}

fn token_json(feature: &TokenFeatureStatus) -> Value {
    let costs: Vec<Value> = feature
        .costs
        .iter()
        .map(|c| json!({ "pool": c.pool, "version": c.version, "tokens": c.tokens }))
        .collect();
    json!({
        "feature": feature.feature,
        "vendor": feature.vendor,
        "version": feature.version,
        "expires": expiry_date(feature.expires_at_ms).map(|d| d.format("%Y-%m-%d").to_string()),
        "in_use": feature.in_use,
        "tokens_in_use": feature.tokens_in_use,
        "costs": costs,
    })
}

fn holder_json(holder: &Holder) -> Value {
    json!({
        "user": holder.user,
        "host": holder.host,
        "display": holder.display,
        "pid": holder.pid,
        "program": holder.program,
        "version": holder.version,
        "since": rfc3339(holder.since_ms),
        "count": holder.count,
        "handle": format_handle(holder.lease_id),
        "connected": holder.connected,
        "detached": holder.detached,
        "overdraft": holder.overdraft,
        "lingering_until": rfc3339(holder.lingering_until_ms),
        "borrowed_until": rfc3339(holder.borrowed_until_ms),
        "token_for": (!holder.token_for.is_empty()).then_some(&holder.token_for),
    })
}

/// `ms` since the epoch as RFC 3339 in UTC, or `None` (JSON `null`) for 0, "not known".
fn rfc3339(ms: u64) -> Option<String> {
    (ms != 0).then(|| instant(ms, &Utc).to_rfc3339_opts(SecondsFormat::Secs, true))
}
