//! What a report is made of: the request (period, rows, features), the figures of a row,
//! a feature's report, and the rows a period is cut into.

use std::collections::BTreeMap;

use usher_license::words::{plural, plural_noun};
use usher_proto::{DenyReason, RefusalClass};

/// Milliseconds since the epoch.
pub type Ms = i64;

/// How the period is cut into rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// The whole period as one row.
    Whole,
    /// UTC hours.
    Hour,
    /// UTC days.
    Day,
    /// UTC calendar months.
    Month,
}

/// What a report covers.
#[derive(Debug, Clone)]
pub struct Request {
    /// Start (inclusive).
    pub from: Ms,
    /// End (exclusive).
    pub to: Ms,
    /// Rows.
    pub by: Bucket,
    /// Only this feature.
    pub feature: Option<String>,
}

/// Figures for one feature over one stretch of time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Start of the stretch.
    pub from: Ms,
    /// End of the stretch (exclusive).
    pub to: Ms,
    /// Seats licensed at the end of the stretch (the most seen during it).
    pub seats: u32,
    /// Most seats in use at once.
    pub peak: u32,
    /// Seat-milliseconds used.
    pub used_ms: u128,
    /// Seat-milliseconds available.
    pub available_ms: u128,
    /// Milliseconds with every seat in use.
    pub full_ms: u64,
    /// Refused checkouts, by reason.
    pub denials: BTreeMap<String, u64>,
    /// Milliseconds spent waiting in the queue, summed over requests.
    pub queued_ms: u64,
}

impl Figures {
    /// Average utilisation: seat-time used over seat-time available (0 if none).
    pub fn utilisation(&self) -> f64 {
        if self.available_ms == 0 {
            0.0
        } else {
            self.used_ms as f64 / self.available_ms as f64
        }
    }

    /// Refused checkouts, all reasons.
    pub fn denied(&self) -> u64 {
        self.denials.values().sum()
    }

    /// Refused checkouts of one class of reason (as [`DenyReason::class`] sorts them).
    pub fn refused(&self, class: RefusalClass) -> u64 {
        self.denials
            .iter()
            .filter(|(reason, _)| reason_class(reason) == class)
            .map(|(_, n)| n)
            .sum()
    }

    /// Share of the stretch spent with every seat in use.
    pub fn full_share(&self) -> f64 {
        let span = (self.to - self.from).max(1) as f64;
        self.full_ms as f64 / span
    }
}

/// Everything reported about one feature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureReport {
    /// Feature.
    pub feature: String,
    /// One row per bucket, in time order.
    pub rows: Vec<Figures>,
    /// The whole period.
    pub total: Figures,
    /// Seat-hours by user.
    pub by_user: BTreeMap<String, f64>,
    /// Seat-hours by host.
    pub by_host: BTreeMap<String, f64>,
    /// Most seats wanted at once: in use plus waiting in the queue, and one more at each
    /// refusal.
    pub peak_demand: u32,
    /// Seats in use over the period: `(time, seats)` at every change, starting at `from`.
    pub series: Vec<(Ms, u32)>,
    /// When checkouts were refused.
    pub denial_times: Vec<Ms>,
}

impl FeatureReport {
    /// The plain-words answer to "do we need more seats?".
    pub fn verdict(&self) -> String {
        let t = &self.total;
        let f = &self.feature;
        if t.seats == 0 {
            return format!("{f}: the log says nothing about how many seats it has");
        }
        let full = t.full_share() * 100.0;
        // Only a refusal for lack of seats says anything about buying seats; the others
        // are told apart after the verdict.
        let short = t.refused(RefusalClass::Shortage);
        let others = self.other_refusals();
        let verdict = if short > 0 || full >= 10.0 {
            let more = self.peak_demand.saturating_sub(t.seats).max(1);
            format!(
                "{f}: {} were in use {full:.0}% of the time and {} for lack of a seat; \
                 consider {more} more {}",
                all_seats(t.seats),
                plural(short, "checkout was refused|checkouts were refused"),
                plural_noun(more.into(), "seat"),
            )
        } else if t.peak < t.seats {
            format!(
                "{f}: at most {} of {} in use and nobody was refused for lack of a seat; {} \
                 idle even at the peak",
                t.peak,
                plural(t.seats.into(), "seat was|seats were"),
                plural((t.seats - t.peak).into(), "seat stayed|seats stayed"),
            )
        } else {
            format!(
                "{f}: {} were in use {full:.1}% of the time without refusing anyone for lack \
                 of a seat; enough for now",
                all_seats(t.seats)
            )
        };
        if others.is_empty() {
            verdict
        } else {
            format!("{verdict} ({others}: not a seat shortage)")
        }
    }

    /// `2 refused by policy, 1 by borrowing rules`: the refusals that more seats would not
    /// have avoided, by class; empty when there were none.
    pub fn other_refusals(&self) -> String {
        let classes = [
            (RefusalClass::Policy, "by policy"),
            (RefusalClass::Licensing, "by the licenses"),
            (RefusalClass::Borrowing, "by borrowing rules"),
            (RefusalClass::BadRequest, "as bad requests"),
        ];
        let parts: Vec<String> = classes
            .into_iter()
            .filter_map(|(class, how)| {
                let n = self.total.refused(class);
                (n > 0).then(|| format!("{n} refused {how}"))
            })
            .collect();
        parts.join(", ")
    }
}

/// `all 3 seats`, or `the only seat`.
fn all_seats(seats: u32) -> String {
    match seats {
        1 => "the only seat".to_string(),
        n => format!("all {n} seats"),
    }
}

/// The class of a reason as the usage log names it (an unknown name is a bad request).
pub(super) fn reason_class(name: &str) -> RefusalClass {
    DenyReason::from_name(name).map_or(RefusalClass::BadRequest, DenyReason::class)
}

/// The rows of the period.
pub(super) fn buckets(req: &Request) -> Vec<(Ms, Ms)> {
    use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
    let start = |ms: Ms| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    let mut out = Vec::new();
    let mut at = req.from;
    while at < req.to && out.len() < 100_000 {
        let t = start(at);
        let next = match req.by {
            Bucket::Whole => req.to,
            Bucket::Hour => (at.div_euclid(3_600_000) + 1) * 3_600_000,
            Bucket::Day => (at.div_euclid(86_400_000) + 1) * 86_400_000,
            Bucket::Month => {
                let first = NaiveDate::from_ymd_opt(t.year(), t.month(), 1).unwrap_or_default();
                let next = first + Months::new(1);
                Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0).unwrap_or_default())
                    .timestamp_millis()
            }
        };
        let end = next.min(req.to);
        out.push((at, end));
        at = end;
    }
    out
}
