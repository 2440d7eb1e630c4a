//! `usher status`: the server's usage for people (an aligned table) and for programs (JSON).
//!
//! Unlike [`crate::lmstat`], nothing here imitates another product; the table is free to
//! change. The JSON shape is a contract, documented on [`render_json`]: fields may be
//! added, never renamed or retyped.
//!
//! Handles are shown as [`crate::show::format_handle`] writes them, so the handle an
//! administrator copies from either output is the one `usher remove` accepts.

mod json;

#[cfg(test)]
mod tests;

pub use json::render_json;

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, TimeZone, Timelike};
use usher_client::status::{FeatureStatus, Holder, QueueEntry, StatusReport, TokenFeatureStatus};

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
