//! `usher status`: the server's usage for people (an aligned table) and for programs (JSON).
//!
//! Unlike [`crate::lmstat`], nothing here imitates another product; the table is free to
//! change. The JSON shape is a contract, documented on [`render_json`]: fields may be
//! added, never renamed or retyped.
//!
//! Handles are shown as [`crate::lmstat::format_handle`] writes them, so the handle an
//! administrator copies from either output is the one `usher remove` accepts.

// Everything here is reached from `usher status`, which main does not dispatch yet.
// wired into main by the lead
#![cfg_attr(not(test), allow(dead_code))]

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Timelike, Utc};
use serde_json::{Value, json};
use usher_proto::{FeatureStatus, Holder, StatusReport};

use crate::lmstat::{clean, expiry_date, format_handle, instant};

/// The column titles of a holder row.
const COLUMNS: [&str; 8] = [
    "USER", "HOST", "DISPLAY", "PID", "VERSION", "SINCE", "SEATS", "HANDLE",
];

/// Columns whose values are numbers, aligned to the right.
const NUMERIC: [bool; 8] = [false, false, false, true, false, false, true, false];

/// Renders the report as text: a line about the server, then for each pool a header such
/// as `cad v2025 (demo)  1 of 3 seats in use  expires 2027-12-31` followed by its holders
/// in aligned columns (widths from the content), or `(no holders)`. Times are shown in
/// `tz` as `YYYY-MM-DD HH:MM`.
pub fn render_table<Tz: TimeZone>(report: &StatusReport, tz: &Tz) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "server {}:{}  usher {}",
        clean(&report.server_name, "unknown"),
        report.port,
        clean(&report.server_version, "unknown"),
    );
    if report.started_at_ms != 0 {
        let _ = write!(
            out,
            "  up since {}",
            minutes(&instant(report.started_at_ms, tz))
        );
    }
    out.push('\n');
    if report.features.is_empty() {
        out.push_str("\n(no features)\n");
    }
    for pool in &report.features {
        out.push('\n');
        pool_header(&mut out, pool);
        if pool.holders.is_empty() {
            out.push_str("  (no holders)\n");
        } else {
            let rows: Vec<[String; 8]> = pool.holders.iter().map(|h| holder_row(h, tz)).collect();
            holder_table(&mut out, &rows);
        }
    }
    out
}

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
///       "total": 3, "in_use": 1,
///       "holders": [
///         { "user": "alice", "host": "ws1", "display": "/dev/pts/0", "pid": 4242,
///           "program": "cad", "version": "2025", "since": "2026-03-01T09:39:00Z",
///           "count": 1, "handle": "1234", "connected": true } ] } ]
/// }
/// ```
///
/// One `features` entry per pool, in report order. `handle` is a string of decimal digits
/// (the text `usher remove` takes) rather than a number, because lease ids use all 64 bits
/// and JSON readers that hold numbers as doubles would round them. `pid` 0 means unknown.
/// `connected` is false while a holder's session is disconnected but still holds seats.
pub fn render_json(report: &StatusReport) -> Value {
    json!({
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
    })
}

fn pool_json(pool: &FeatureStatus) -> Value {
    json!({
        "feature": pool.feature,
        "vendor": pool.vendor,
        "version": pool.version,
        "expires": expiry_date(pool.expires_at_ms).map(|d| d.format("%Y-%m-%d").to_string()),
        "total": pool.total,
        "in_use": pool.in_use,
        "holders": pool.holders.iter().map(holder_json).collect::<Vec<_>>(),
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
    })
}

/// `ms` since the epoch as RFC 3339 in UTC, or `None` (JSON `null`) for 0, "not known".
fn rfc3339(ms: u64) -> Option<String> {
    (ms != 0).then(|| instant(ms, &Utc).to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// `YYYY-MM-DD HH:MM`, built from numbers so that no locale changes it.
fn minutes<Tz: TimeZone>(t: &DateTime<Tz>) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `cad v2025 (demo)  1 of 3 seats in use  expires 2027-12-31`.
fn pool_header(out: &mut String, pool: &FeatureStatus) {
    let seats = if pool.total == 1 { "seat" } else { "seats" };
    let expiry = match expiry_date(pool.expires_at_ms) {
        Some(date) => format!("expires {}", date.format("%Y-%m-%d")),
        None => "permanent".to_owned(),
    };
    let _ = writeln!(
        out,
        "{} v{} ({})  {} of {} {seats} in use  {expiry}",
        clean(&pool.feature, "?"),
        clean(&pool.version, "?"),
        clean(&pool.vendor, "?"),
        pool.in_use,
        pool.total,
    );
}

/// The cells of one holder row, in [`COLUMNS`] order.
fn holder_row<Tz: TimeZone>(holder: &Holder, tz: &Tz) -> [String; 8] {
    [
        clean(&holder.user, "-").into_owned(),
        clean(&holder.host, "-").into_owned(),
        clean(&holder.display, "-").into_owned(),
        if holder.pid == 0 {
            "-".to_owned()
        } else {
            holder.pid.to_string()
        },
        clean(&holder.version, "-").into_owned(),
        minutes(&instant(holder.since_ms, tz)),
        holder.count.max(1).to_string(),
        format_handle(holder.lease_id),
    ]
}

/// The column titles and `rows`, indented two spaces, columns two spaces apart and as wide
/// as their widest cell.
fn holder_table(out: &mut String, rows: &[[String; 8]]) {
    let mut widths = COLUMNS.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let titles = COLUMNS.map(str::to_owned);
    for row in std::iter::once(&titles).chain(rows) {
        let mut line = String::from(" ");
        for (i, cell) in row.iter().enumerate() {
            let width = widths[i];
            if NUMERIC[i] {
                let _ = write!(line, " {cell:>width$} ");
            } else {
                let _ = write!(line, " {cell:<width$} ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}
