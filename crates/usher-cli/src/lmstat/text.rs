//! The pieces of FlexLM text that every part of the output shares: the FlexLM version
//! usher claims, the copyright notice, the two header lines, and how versions and expiry
//! dates are written.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, TimeZone, Timelike};

use crate::show::{clean, expiry_date};

/// The FlexLM version usher claims in `lmstat -v`, in `license server UP ... v…` and in
/// vendor daemon lines.
///
/// Parsers key on FlexLM-style versions (`v[\d.]+`), and some of them (or the people
/// reading dashboards) gate behaviour on the version, e.g. expecting the
/// `Users of` layout of 11.x. 11.19 is the current FlexLM line, whose output format usher
/// reproduces; usher's own version is in the `StatusReport`.
pub const LMSTAT_COMPAT_VERSION: &str = "11.19.0";

/// The build number in `lmstat -v`. Parsers require `build \d+`; usher bumps this when the
/// rendered text changes.
pub const LMSTAT_COMPAT_BUILD: u32 = 1;

/// The copyright notice, in FlexLM's place and form, naming who actually wrote this.
pub(super) const COPYRIGHT: &str = "Copyright (c) 2026 The usher authors. All Rights Reserved.";

/// Parsers need a version token (`v[\w.]+`, `[\d.]+`); an empty one reads as `0`.
pub(super) fn version_or_zero(version: &str) -> Cow<'_, str> {
    clean(version, "0")
}

/// The two lines every lmstat output starts with, and the blank line after them.
pub(super) fn header<Tz: TimeZone>(now_local: &DateTime<Tz>) -> String {
    // `Sun 8/20/2023 12:25`: no leading zeros except on the minutes, 24-hour clock. Built
    // from numbers rather than a strftime pattern so that no locale can change it.
    format!(
        "lmstat - {COPYRIGHT}\nFlexible License Manager status on {} {}/{}/{} {}:{:02}\n\n",
        now_local.weekday(),
        now_local.month(),
        now_local.day(),
        now_local.year(),
        now_local.hour(),
        now_local.minute(),
    )
}

/// `31-dec-2027` (day zero-padded, month lower case, as FlexLM writes dates) or `permanent`.
pub(super) fn flexlm_expiry(expires_at_ms: u64) -> String {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    match expiry_date(expires_at_ms) {
        None => "permanent".to_owned(),
        Some(date) => {
            format!(
                "{:02}-{}-{}",
                date.day(),
                MONTHS[date.month0() as usize],
                date.year()
            )
        }
    }
}
