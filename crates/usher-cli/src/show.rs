//! What both views of a status (`usher status`'s table and `usher lmstat`'s FlexLM text)
//! write the same way: lease handles, dates of expiry and start, instants in a time zone,
//! client-sent text made safe for line-based parsers, and the note of what a partial report
//! leaves out. Both views import this module; neither imports the other.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use usher_client::StatusReport;

pub use usher_license::words::{lease_handle as format_handle, parse_lease_handle as parse_handle};

/// The last day on which an entitlement is valid, or `None` for permanent ones.
///
/// `expires_at_ms` is the first millisecond *after* validity (00:00 UTC of the day after
/// the expiry date, as usher-license computes it; 0 means permanent), so the date shown is
/// the UTC day of the millisecond before: the date written in the license file. A value
/// past chrono's range reads as permanent.
pub fn expiry_date(expires_at_ms: u64) -> Option<NaiveDate> {
    let last_valid_ms = i64::try_from(expires_at_ms.checked_sub(1)?).ok()?;
    DateTime::from_timestamp_millis(last_valid_ms).map(|t| t.date_naive())
}

/// The first day of validity of seats starting at `starts_at_ms` (their first valid
/// millisecond, UTC), or `None` for 0 (not waiting to start).
pub fn start_date(starts_at_ms: u64) -> Option<NaiveDate> {
    let first_valid_ms = i64::try_from(starts_at_ms).ok().filter(|ms| *ms > 0)?;
    DateTime::from_timestamp_millis(first_valid_ms).map(|t| t.date_naive())
}

/// The instant `ms` (since the Unix epoch) in `tz`; clamped to chrono's range.
pub(crate) fn instant<Tz: TimeZone>(ms: u64, tz: &Tz) -> DateTime<Tz> {
    let utc = i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    utc.with_timezone(tz)
}

/// Replaces characters that would break the line structure (newlines, tabs, other control
/// characters) with `?`, and an empty value with `fallback`. Spaces stay: FlexLM prints
/// user names such as `John Smith` as they are. Without this a client could send a user
/// name containing `\nUsers of ...` and forge lines in every monitoring tool.
pub(crate) fn clean<'a>(text: &'a str, fallback: &'a str) -> Cow<'a, str> {
    if text.is_empty() {
        Cow::Borrowed(fallback)
    } else if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// `N more holders not shown` (and the same of the queue), on lines of their own, when the
/// report holds less than the whole status; empty otherwise.
pub fn not_shown(report: &StatusReport) -> String {
    let mut out = String::new();
    for (n, what) in [
        (report.holders_not_shown(), "holders"),
        (report.queue_not_shown(), "queued requests"),
    ] {
        if n > 0 {
            let _ = writeln!(out, "\n{n} more {what} not shown");
        }
    }
    out
}
