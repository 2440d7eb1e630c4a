//! `usher status`: the server's usage for people (an aligned table) and for programs (JSON).
//!
//! Unlike [`crate::lmstat`], nothing here imitates another product; the table is free to
//! change. The JSON shape is a contract, documented on [`render_json`]: fields may be
//! added, never renamed or retyped.
//!
//! Handles are shown as [`crate::show::format_handle`] writes them, so the handle an
//! administrator copies from either output is the one `usher remove` accepts.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Timelike, Utc};
use serde_json::{Value, json};
use usher_proto::{FeatureStatus, Holder, QueueEntry, StatusReport, TokenFeatureStatus};

use crate::show::{clean, expiry_date, format_handle, instant, not_shown, start_date};

/// The column titles of a holder row.
const COLUMNS: [&str; 8] = [
    "USER", "HOST", "DISPLAY", "PID", "VERSION", "SINCE", "SEATS", "HANDLE",
];

/// Columns whose values are numbers, aligned to the right.
const NUMERIC: [bool; 8] = [false, false, false, true, false, false, true, false];

/// Renders the report as text: a line about the server, then for each pool a header such
/// as `cad v2025 (demo)  1 of 3 seats in use  expires 2027-12-31` followed by its holders
/// in aligned columns (widths from the content), or `(no holders)` (`(holders hidden:
/// status_detail is totals)` when seats are in use but the server lists nobody). Times are shown in
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
    if report.features.is_empty() && report.token_features.is_empty() {
        out.push_str("\n(no features)\n");
    }
    for pool in &report.features {
        out.push('\n');
        pool_header(&mut out, pool);
        if pool.holders.is_empty() && pool.in_use > 0 {
            // Seats in use and nobody listed: the server shows this query counts only.
            out.push_str("  (holders hidden: status_detail is totals)\n");
        } else if pool.holders.is_empty() {
            out.push_str("  (no holders)\n");
        } else {
            let rows: Vec<[String; 8]> = pool.holders.iter().map(|h| holder_row(h, tz)).collect();
            holder_table(&mut out, &COLUMNS, &NUMERIC, &rows);
        }
    }
    for feature in &report.token_features {
        out.push('\n');
        token_header(&mut out, feature);
    }
    if !report.queue.is_empty() {
        out.push_str("\nwaiting for seats\n");
        let rows: Vec<[String; 8]> = report.queue.iter().map(|q| queue_row(q, tz)).collect();
        holder_table(&mut out, &QUEUE_HEADERS, &QUEUE_NUMERIC, &rows);
    }
    out.push_str(&not_shown(report));
    out
}

/// Column headings of the queue table.
const QUEUE_HEADERS: [&str; 8] = [
    "FEATURE", "POS", "USER", "HOST", "DISPLAY", "SEATS", "SINCE", "GIVES UP",
];

/// Columns of the queue table whose values are numbers.
const QUEUE_NUMERIC: [bool; 8] = [false, true, false, false, false, true, false, false];

fn queue_row<Tz: TimeZone>(q: &QueueEntry, tz: &Tz) -> [String; 8] {
    [
        clean(&q.feature, "?").into_owned(),
        q.position.to_string(),
        clean(&q.user, "?").into_owned(),
        clean(&q.host, "?").into_owned(),
        clean(&q.display, "-").into_owned(),
        q.count.to_string(),
        minutes(&instant(q.since_ms, tz)),
        if q.deadline_ms == 0 {
            "never".to_string()
        } else {
            minutes(&instant(q.deadline_ms, tz))
        },
    ]
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

/// `YYYY-MM-DD HH:MM:SS`: a linger lasts seconds to minutes, so its end is shown to the
/// second.
fn seconds<Tz: TimeZone>(t: &DateTime<Tz>) -> String {
    format!("{}:{:02}", minutes(t), t.second())
}

/// `expires 2027-12-31`, or `permanent`.
fn expiry_text(expires_at_ms: u64) -> String {
    match expiry_date(expires_at_ms) {
        Some(date) => format!("expires {}", date.format("%Y-%m-%d")),
        None => "permanent".to_owned(),
    }
}

/// `cad v2025 (demo)  1 of 3 seats in use  expires 2027-12-31`; for a pool with no seats
/// valid now, `expired 2025-01-31 (5 seats)` or `starts 2027-01-01 (5 seats, permanent)`.
fn pool_header(out: &mut String, pool: &FeatureStatus) {
    let seats = usher_license::words::plural_noun(pool.total.into(), "seat");
    let expiry = expiry_text(pool.expires_at_ms);
    let licensed = usher_license::words::plural(pool.licensed.into(), "seat|seats");
    let expiry = if let Some(date) = expiry_date(pool.ended_at_ms) {
        format!("expired {} ({licensed})", date.format("%Y-%m-%d"))
    } else if let Some(date) = start_date(pool.starts_at_ms) {
        format!("starts {} ({licensed}, {expiry})", date.format("%Y-%m-%d"))
    } else {
        expiry
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

/// `solver v1 (demo)  1 seat in use (4 tokens)  a seat costs 4 tokens of "tokens"  permanent`:
/// a token-based feature has no seats of its own; its tokens' holders are listed under
/// the pools they draw from (`tokens for solver`).
fn token_header(out: &mut String, feature: &TokenFeatureStatus) {
    use usher_license::words::plural;
    let costs: Vec<String> = feature
        .costs
        .iter()
        .map(|c| {
            format!(
                "{} of \"{}\" v{}",
                plural(c.tokens.into(), "token"),
                clean(&c.pool, "?"),
                clean(&c.version, "?")
            )
        })
        .collect();
    let expiry = expiry_text(feature.expires_at_ms);
    let _ = writeln!(
        out,
        "{} v{} ({})  {} in use ({})  a seat costs {}  {expiry}",
        clean(&feature.feature, "?"),
        clean(&feature.version, "?"),
        clean(&feature.vendor, "?"),
        plural(feature.in_use.into(), "seat"),
        plural(feature.tokens_in_use.into(), "token"),
        costs.join(" or "),
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
        seats_cell(holder, tz),
        format_handle(holder.lease_id),
    ]
}

/// The SEATS cell: the count, and in brackets what is special about these seats (tokens,
/// borrowed, lingering, overdraft) and about their holder's link (`detached`: kept alive by
/// UDP keepalives; `disconnected`: the connection dropped and the seats go back unless the
/// client resumes within the reconnect grace).
fn seats_cell<Tz: TimeZone>(holder: &Holder, tz: &Tz) -> String {
    let mut notes = Vec::new();
    if !holder.token_for.is_empty() {
        notes.push(format!("tokens for {}", clean(&holder.token_for, "?")));
    }
    if holder.borrowed_until_ms != 0 {
        notes.push(format!(
            "borrowed to {}",
            minutes(&instant(holder.borrowed_until_ms, tz))
        ));
    } else if holder.lingering_until_ms != 0 {
        notes.push(format!(
            "linger to {}",
            seconds(&instant(holder.lingering_until_ms, tz))
        ));
    } else if holder.detached {
        notes.push("detached".to_owned());
    } else if !holder.connected {
        notes.push("disconnected".to_owned());
    }
    if holder.overdraft {
        notes.push("overdraft".to_owned());
    }
    let count = holder.count.max(1);
    if notes.is_empty() {
        count.to_string()
    } else {
        format!("{count} ({})", notes.join(", "))
    }
}

/// The column `titles` and `rows`, indented two spaces, columns two spaces apart and as
/// wide as their widest cell, `numeric` ones aligned to the right.
fn holder_table(out: &mut String, titles: &[&str; 8], numeric: &[bool; 8], rows: &[[String; 8]]) {
    // A numeric cell may carry a note after its number (`1 (detached)`): the numbers are
    // right-aligned under the title and the notes follow, so a long note never moves the
    // numbers of the other rows.
    let digits = |cell: &str| cell.bytes().take_while(u8::is_ascii_digit).count();
    let mut number_widths = titles.map(|title| title.chars().count());
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if numeric[i] {
                number_widths[i] = number_widths[i].max(digits(cell));
            }
        }
    }
    let align = |i: usize, cell: &str| -> String {
        if !numeric[i] {
            return cell.to_owned();
        }
        let (number, note) = cell.split_at(digits(cell));
        let number = if number.is_empty() { note } else { number };
        let note = if number == note { "" } else { note };
        format!("{number:>w$}{note}", w = number_widths[i])
    };
    let titles = titles.map(str::to_owned);
    let aligned: Vec<Vec<String>> = std::iter::once(&titles)
        .chain(rows)
        .map(|row| row.iter().enumerate().map(|(i, c)| align(i, c)).collect())
        .collect();
    let mut widths = [0; 8];
    for row in &aligned {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &aligned {
        let mut line = String::from(" ");
        for (i, cell) in row.iter().enumerate() {
            let width = widths[i];
            let _ = write!(line, " {cell:<width$} ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use chrono::{FixedOffset, NaiveDate};

    use super::*;

    fn tz() -> FixedOffset {
        FixedOffset::east_opt(2 * 3600).unwrap()
    }

    /// Milliseconds since the epoch of a UTC time.
    fn utc_ms(y: i32, m: u32, d: u32, h: u32, min: u32) -> u64 {
        let t = NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap();
        u64::try_from(t.and_utc().timestamp_millis()).unwrap()
    }

    fn holder(user: &str, display: &str, pid: u32, count: u32, lease_id: u64) -> Holder {
        Holder {
            user: user.into(),
            host: "ws1".into(),
            display: display.into(),
            pid,
            program: "cadtool".into(),
            version: "2025".into(),
            since_ms: utc_ms(2026, 3, 1, 7, 39),
            count,
            lease_id,
            session_id: 7,
            connected: true,
            detached: false,
            overdraft: false,
            lingering_until_ms: 0,
            borrowed_until_ms: 0,
            token_for: String::new(),
        }
    }

    fn report() -> StatusReport {
        StatusReport {
            server_name: "lic1".into(),
            server_version: "0.1.0".into(),
            port: 1648,
            queue: vec![],
            next_cursor: String::new(),
            holders_total: 0,
            queue_total: 0,
            truncated: false,
            token_features: vec![],
            features: vec![
                FeatureStatus {
                    feature: "cad".into(),
                    vendor: "demo".into(),
                    version: "2025".into(),
                    // Valid through 2027-12-31.
                    expires_at_ms: utc_ms(2028, 1, 1, 0, 0),
                    total: 3,
                    in_use: 3,
                    holders: vec![
                        holder("alice", "/dev/pts/0", 4242, 1, 7),
                        holder("bartholomew", "", 0, 2, 18446744073709551615),
                    ],
                    ..FeatureStatus::default()
                },
                FeatureStatus {
                    feature: "sim".into(),
                    vendor: "demo".into(),
                    version: "1.0".into(),
                    expires_at_ms: 0,
                    total: 1,
                    in_use: 0,
                    holders: vec![],
                    ..FeatureStatus::default()
                },
            ],
            started_at_ms: utc_ms(2026, 3, 1, 6, 0),
            license_files: vec!["/etc/usher/a.lic".into()],
            vendors: vec!["demo".into()],
            now_ms: utc_ms(2026, 3, 1, 8, 0),
        }
    }

    #[test]
    fn table_aligns_columns_to_their_content() {
        let expected = "\
server lic1:1648  usher 0.1.0  up since 2026-03-01 08:00

cad v2025 (demo)  3 of 3 seats in use  expires 2027-12-31
  USER         HOST  DISPLAY      PID  VERSION  SINCE             SEATS  HANDLE
  alice        ws1   /dev/pts/0  4242  2025     2026-03-01 09:39      1  7
  bartholomew  ws1   -              -  2025     2026-03-01 09:39      2  18446744073709551615

sim v1.0 (demo)  0 of 1 seat in use  permanent
  (no holders)
";
        assert_eq!(render_table(&report(), &tz()), expected);
    }

    #[test]
    fn queue_is_listed_after_the_pools_in_table_and_json() {
        let mut r = report();
        r.queue = vec![QueueEntry {
            feature: "cad".into(),
            version: "2025".into(),
            count: 1,
            position: 1,
            user: "dave".into(),
            host: "ws9".into(),
            since_ms: utc_ms(2026, 3, 1, 9, 50),
            lease_id: 4100,
            ..QueueEntry::default()
        }];
        let text = render_table(&r, &tz());
        let tail = "\nwaiting for seats\n  FEATURE  POS  USER  HOST  DISPLAY  SEATS  SINCE             \
                    GIVES UP\n  cad        1  dave  ws9   -            1  2026-03-01 11:50  never\n";
        assert!(text.ends_with(tail), "{text}");
        let json = render_json(&r);
        assert_eq!(json["queue"][0]["user"], "dave");
        assert_eq!(json["queue"][0]["handle"], "4100");
        assert_eq!(json["queue"][0]["gives_up"], Value::Null);
    }

    /// A report holding less than the whole status (a server's one-frame reply to a client
    /// that does not page) says how much it leaves out; a whole one says nothing.
    #[test]
    fn holders_left_out_are_counted_in_table_and_json() {
        let whole = report();
        assert!(!render_table(&whole, &tz()).contains("not shown"));
        assert!(render_json(&whole).get("holders_not_shown").is_none());
        let mut cut = report();
        cut.holders_total = 1_002;
        cut.queue_total = 5;
        let text = render_table(&cut, &tz());
        assert!(
            text.ends_with("\n1000 more holders not shown\n\n5 more queued requests not shown\n"),
            "{text}"
        );
        let json = render_json(&cut);
        assert_eq!(json["holders_not_shown"], 1_000);
        assert_eq!(json["queue_not_shown"], 5);
    }

    /// The SEATS cell says how a holder is linked, and what else is special about its seats.
    #[test]
    fn seats_show_detached_disconnected_and_combined_notes() {
        let tz = tz();
        let plain = holder("alice", "", 1, 2, 7);
        let detached = Holder {
            detached: true,
            ..plain.clone()
        };
        let dropped = Holder {
            connected: false,
            overdraft: true,
            ..plain.clone()
        };
        let lingering = Holder {
            connected: false,
            lingering_until_ms: utc_ms(2026, 3, 1, 8, 5),
            token_for: "suite".into(),
            ..plain.clone()
        };
        assert_eq!(seats_cell(&plain, &tz), "2");
        assert_eq!(seats_cell(&detached, &tz), "2 (detached)");
        assert_eq!(seats_cell(&dropped, &tz), "2 (disconnected, overdraft)");
        assert_eq!(
            seats_cell(&lingering, &tz),
            "2 (tokens for suite, linger to 2026-03-01 10:05:00)",
            "a lingering seat has no holder to be linked"
        );
    }

    #[test]
    fn a_long_seats_note_keeps_every_number_in_its_column() {
        let mut r = report();
        r.features[0].holders[0].detached = true;
        r.features[0].holders[1].count = 12;
        let text = render_table(&r, &tz());
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("2026-03-01 09:39"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let end_of_number = |line: &str| {
            let at = line.find("09:39").unwrap() + 5;
            let rest = &line[at..];
            let first_digit = rest.find(|c: char| c.is_ascii_digit()).unwrap();
            at + first_digit
                + rest[first_digit..]
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap()
        };
        assert_eq!(end_of_number(lines[0]), end_of_number(lines[1]), "{text}");
        assert!(lines[0].contains(" 1 (detached)"), "{text}");
    }

    #[test]
    fn seats_in_use_without_holders_say_the_holders_are_hidden() {
        let mut r = report();
        r.features[0].holders.clear();
        let text = render_table(&r, &tz());
        assert!(
            text.contains("3 of 3 seats in use  expires 2027-12-31\n  (holders hidden: status_detail is totals)\n"),
            "{text}"
        );
        assert!(
            text.contains("0 of 1 seat in use  permanent\n  (no holders)\n"),
            "{text}"
        );
    }

    #[test]
    fn table_of_an_empty_server_says_so() {
        let mut r = report();
        r.features.clear();
        r.started_at_ms = 0;
        assert_eq!(
            render_table(&r, &tz()),
            "server lic1:1648  usher 0.1.0\n\n(no features)\n"
        );
    }

    #[test]
    fn table_cells_cannot_break_lines() {
        let mut r = report();
        r.features[0].holders[0].user = "eve\nsim v9 (demo)".into();
        let out = render_table(&r, &tz());
        assert!(out.contains("  eve?sim v9 (demo)  "), "{out}");
        assert_eq!(
            out.lines().filter(|l| l.starts_with("sim v")).count(),
            1,
            "{out}"
        );
    }

    #[test]
    fn json_has_the_documented_shape() {
        let expected = json!({
            "server": {
                "name": "lic1",
                "version": "0.1.0",
                "port": 1648,
                "started_at": "2026-03-01T06:00:00Z",
                "now": "2026-03-01T08:00:00Z",
                "license_files": ["/etc/usher/a.lic"],
                "vendors": ["demo"],
            },
            "features": [
                {
                    "feature": "cad",
                    "vendor": "demo",
                    "version": "2025",
                    "expires": "2027-12-31",
                    "expired": null,
                    "starts": null,
                    "licensed": null,
                    "total": 3,
                    "in_use": 3,
                    "holders": [
                        {
                            "user": "alice", "host": "ws1", "display": "/dev/pts/0",
                            "pid": 4242, "program": "cadtool", "version": "2025",
                            "since": "2026-03-01T07:39:00Z", "count": 1, "handle": "7",
                            "connected": true,
                            "detached": false,
                            "overdraft": false,
                            "lingering_until": null,
                            "borrowed_until": null,
                            "token_for": null,
                        },
                        {
                            "user": "bartholomew", "host": "ws1", "display": "",
                            "pid": 0, "program": "cadtool", "version": "2025",
                            "since": "2026-03-01T07:39:00Z", "count": 2,
                            "handle": "18446744073709551615", "connected": true,
                            "detached": false,
                            "overdraft": false,
                            "lingering_until": null,
                            "borrowed_until": null,
                            "token_for": null,
                        },
                    ],
                },
                {
                    "feature": "sim",
                    "vendor": "demo",
                    "version": "1.0",
                    "expires": null,
                    "expired": null,
                    "starts": null,
                    "licensed": null,
                    "total": 1,
                    "in_use": 0,
                    "holders": [],
                },
            ],
            "queue": [],
            "token_features": [],
        });
        assert_eq!(render_json(&report()), expected);
    }

    #[test]
    fn json_handles_are_the_text_lmstat_shows() {
        let json = render_json(&report());
        let handle = &json["features"][0]["holders"][1]["handle"];
        assert_eq!(
            crate::show::parse_handle(handle.as_str().unwrap()),
            Some(u64::MAX)
        );
        let mut r = report();
        r.started_at_ms = 0;
        assert_eq!(render_json(&r)["server"]["started_at"], Value::Null);
    }
}
