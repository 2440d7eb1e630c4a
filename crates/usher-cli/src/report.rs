//! Usage reports: the usage log replayed into seats in use over time, per feature.
//!
//! Pure: records in, figures out. The log is replayed from its first record (seats held
//! when the period starts must be counted), and the state between two records is constant,
//! so every figure is an exact integral over time, not a sample.
//!
//! Seats in use are counted by the ledger's own accounting ([`SeatsInUse`]), under the
//! `DUP_GROUP=` rule each `seats` record gives its pool, so duplicate checkouts that share
//! a seat in the ledger share it in the report too.

use std::collections::{BTreeMap, HashMap};

use usher_core::{DupGroup, DupKey, Holder, LeaseId, PoolKey, SeatsInUse};
use usher_license::words::{plural, plural_noun};
use usher_proto::{DenyReason, RefusalClass};
use usher_store::{UsageEvent, UsageRecord};

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
pub fn reason_class(name: &str) -> RefusalClass {
    DenyReason::from_name(name).map_or(RefusalClass::BadRequest, DenyReason::class)
}

/// One lease being replayed.
struct Held {
    feature: String,
    pool: PoolKey,
    count: u32,
    user: String,
    host: String,
    display: String,
    since: Ms,
}

impl Held {
    fn holder(&self) -> Holder<'_> {
        Holder {
            user: &self.user,
            host: &self.host,
            display: &self.display,
        }
    }
}

/// The ledger's seat counts, rebuilt from the log: the seats of every held lease, shared
/// under each pool's `DUP_GROUP=` as the latest `seats` records say.
#[derive(Default)]
struct Counts {
    seats: SeatsInUse,
    /// Each pool's rule, from the last batch of `seats` records (a pool missing from a
    /// batch left the catalog, and its leases share no more).
    rules: HashMap<PoolKey, DupGroup>,
    /// The rules of a batch of `seats` records being read, put in force when it ends.
    incoming: Option<(Ms, HashMap<PoolKey, DupGroup>)>,
}

impl Counts {
    fn add(&mut self, id: u64, h: &Held) -> u32 {
        let group = DupKey::of(
            h.pool.as_pool_ref(),
            self.rules.get(&h.pool).copied(),
            Some(h.holder()),
        );
        self.seats
            .add(h.pool.as_pool_ref(), group, LeaseId(id), h.count)
    }

    fn remove(&mut self, id: u64, h: &Held) -> u32 {
        self.seats
            .remove(h.pool.as_pool_ref(), LeaseId(id), h.count)
    }

    /// Puts the rules of the `seats` batch just read in force and, if they changed,
    /// counts every held lease again under them (as the ledger does on a reload);
    /// returns whether the counts were redone.
    fn end_batch(&mut self, held: &HashMap<u64, Held>) -> bool {
        let Some((_, rules)) = self.incoming.take() else {
            return false;
        };
        if rules == self.rules {
            return false;
        }
        self.rules = rules;
        self.seats.clear();
        let mut ids: Vec<&u64> = held.keys().collect();
        ids.sort();
        for id in ids {
            self.add(*id, &held[id]);
        }
        true
    }

    /// Seats in use of each feature, from the counts.
    fn per_feature(&self) -> HashMap<&str, u32> {
        let mut out: HashMap<&str, u32> = HashMap::new();
        for (pool, n) in self.seats.pools() {
            *out.entry(pool.feature.as_str()).or_default() += n;
        }
        out
    }
}

/// Per-feature replay state.
#[derive(Default)]
struct Live {
    /// Seats per pool (`vendor`, `version`).
    seats: HashMap<(String, String), u32>,
    in_use: u32,
    queued: u32,
}

impl Live {
    fn total(&self) -> u32 {
        self.seats.values().sum()
    }
}

/// Replays `records` (in `seq` order) and reports on `req`.
#[cfg(test)]
pub fn build(records: &[UsageRecord], req: &Request) -> Vec<FeatureReport> {
    let mut replay = Replay::new(req.clone());
    for r in records {
        replay.feed(r);
    }
    replay.finish()
}

/// The replay of a usage log, fed one record at a time in `seq` order, so a log of any
/// length is reported on in the memory of the seats and queue entries live at once (and
/// of the report itself: its rows and the chart's points within the period), not of the
/// log.
pub struct Replay {
    req: Request,
    live: BTreeMap<String, Live>,
    held: HashMap<u64, Held>,
    counts: Counts,
    waiting: HashMap<u64, (String, Ms, u32)>,
    reports: BTreeMap<String, FeatureReport>,
    /// When the last record happened; `None` before the first.
    last_at: Option<Ms>,
    started: bool,
}

impl Replay {
    /// A replay reporting on `req`.
    pub fn new(req: Request) -> Self {
        Replay {
            req,
            live: BTreeMap::new(),
            held: HashMap::new(),
            counts: Counts::default(),
            waiting: HashMap::new(),
            reports: BTreeMap::new(),
            last_at: None,
            started: false,
        }
    }

    fn wanted(req: &Request, f: &str) -> bool {
        req.feature.as_deref().is_none_or(|w| w == f)
    }

    /// Replays the next record.
    pub fn feed(&mut self, r: &UsageRecord) {
        let at = (r.at as Ms).max(self.last_at.unwrap_or(Ms::MIN));
        let batch_goes_on = r.event == UsageEvent::Seats
            && self.counts.incoming.as_ref().is_some_and(|(t, _)| *t == at);
        if !batch_goes_on {
            self.end_seats_batch();
        }
        let Replay {
            req,
            live,
            held,
            counts,
            waiting,
            reports,
            last_at,
            started,
        } = self;
        let req = &*req;
        let wanted = |f: &str| Self::wanted(req, f);
        let last = *last_at.get_or_insert(req.from.min(r.at as Ms));
        let at = (r.at as Ms).max(last);
        if !*started && at >= req.from {
            start_series(reports, live, req, wanted);
            *started = true;
        }
        // The state was constant from `last` to `at`: account for it.
        for (feature, state) in live.iter() {
            if wanted(feature) {
                let report = report_of(reports, feature, req);
                integrate(report, state, last, at, req);
            }
        }
        *last_at = Some(at);
        let Some(feature) = r.feature.clone() else {
            return;
        };
        let lease = r.lease.map(|l| l.0);
        let count = r.count.unwrap_or(1);
        let state = live.entry(feature.clone()).or_default();
        let mut changed = false;
        match &r.event {
            UsageEvent::Seats => {
                let vendor = r.vendor.clone().unwrap_or_default();
                let version = r.version.clone().unwrap_or_default();
                state.seats.insert((vendor.clone(), version.clone()), count);
                let (_, rules) = counts.incoming.get_or_insert_with(|| (at, HashMap::new()));
                if let Some(rule) = r.dup_group() {
                    let pool = PoolKey {
                        feature: feature.clone(),
                        vendor,
                        version,
                    };
                    rules.insert(pool, rule);
                }
            }
            UsageEvent::Checkout | UsageEvent::Borrow => {
                // A lease granted again (a retry logged twice) is counted once.
                if let Some(id) = lease.filter(|id| !held.contains_key(id)) {
                    let h = Held {
                        feature: feature.clone(),
                        pool: PoolKey {
                            feature: feature.clone(),
                            vendor: r.vendor.clone().unwrap_or_default(),
                            version: r.version.clone().unwrap_or_default(),
                        },
                        count,
                        user: r.user.clone().unwrap_or_default(),
                        host: r.host.clone().unwrap_or_default(),
                        display: r.display.clone().unwrap_or_default(),
                        since: at,
                    };
                    state.in_use += counts.add(id, &h);
                    changed = true;
                    held.insert(id, h);
                }
            }
            UsageEvent::Checkin | UsageEvent::Expire | UsageEvent::Remove | UsageEvent::Return => {
                if let Some((id, h)) = lease.and_then(|id| held.remove_entry(&id)) {
                    state.in_use = state.in_use.saturating_sub(counts.remove(id, &h));
                    changed = true;
                    if wanted(&h.feature) {
                        let report = report_of(reports, &h.feature, req);
                        attribute(report, &h, at, req);
                    }
                }
            }
            UsageEvent::Denied | UsageEvent::DeniedRepeats
                if wanted(&feature) && at >= req.from && at < req.to =>
            {
                // A `denied_repeats` record stands for `count` refusals (see UsageEvent).
                let times = match r.event {
                    UsageEvent::DeniedRepeats => u64::from(count),
                    _ => 1,
                };
                let report = report_of(reports, &feature, req);
                let reason = r.detail.clone().unwrap_or_else(|| "unknown".into());
                *report.total.denials.entry(reason.clone()).or_default() += times;
                if let Some(row) = row_at(report, at) {
                    *row.denials.entry(reason.clone()).or_default() += times;
                }
                report
                    .denial_times
                    .extend(std::iter::repeat_n(at, times as usize));
                if reason_class(&reason) == RefusalClass::Shortage {
                    let demand = state.in_use + state.queued + 1;
                    report.peak_demand = report.peak_demand.max(demand);
                }
            }
            UsageEvent::Queue => {
                if let Some(id) = lease {
                    state.queued += count;
                    waiting.insert(id, (feature.clone(), at, count));
                }
            }
            UsageEvent::Dequeue => {
                if let Some((f, since, n)) = lease.and_then(|id| waiting.remove(&id)) {
                    state.queued = state.queued.saturating_sub(n);
                    if wanted(&f) {
                        let report = report_of(reports, &f, req);
                        add_queued(report, since, at, req);
                        // A wait that ran out is a refusal for lack of seats.
                        if r.detail.as_deref() == Some("timed_out") && at >= req.from && at < req.to
                        {
                            let reason = DenyReason::WaitTimedOut.name().to_string();
                            *report.total.denials.entry(reason.clone()).or_default() += 1;
                            if let Some(row) = row_at(report, at) {
                                *row.denials.entry(reason).or_default() += 1;
                            }
                            report.denial_times.push(at);
                        }
                    }
                }
            }
            _ => {}
        }
        if wanted(&feature) {
            let state = &live[&feature];
            let report = report_of(reports, &feature, req);
            let demand = state.in_use + state.queued;
            if at < req.to {
                report.peak_demand = report.peak_demand.max(demand);
            }
            if changed && at >= req.from && at < req.to {
                report.series.push((at, state.in_use));
            }
            mark_peak(report, state, at, req);
        }
    }

    /// Puts the rules of a batch of `seats` records that ended in force; if that changed
    /// any feature's seats in use, the change is recorded at the time of the batch.
    fn end_seats_batch(&mut self) {
        let Some(batch_at) = self.counts.incoming.as_ref().map(|(t, _)| *t) else {
            return;
        };
        if !self.counts.end_batch(&self.held) {
            return;
        }
        let now = self.counts.per_feature();
        let req = &self.req;
        for (feature, state) in self.live.iter_mut() {
            let in_use = now.get(feature.as_str()).copied().unwrap_or(0);
            if in_use == state.in_use {
                continue;
            }
            state.in_use = in_use;
            if Self::wanted(req, feature) {
                let report = report_of(&mut self.reports, feature, req);
                if batch_at >= req.from && batch_at < req.to {
                    report.series.push((batch_at, in_use));
                }
                mark_peak(report, state, batch_at, req);
            }
        }
    }

    /// Ends the replay at the end of the period and returns the reports.
    pub fn finish(mut self) -> Vec<FeatureReport> {
        self.end_seats_batch();
        let req = &self.req;
        let wanted = |f: &str| Self::wanted(req, f);
        let last_at = self.last_at.unwrap_or(req.from);
        if !self.started {
            start_series(&mut self.reports, &self.live, req, wanted);
        }
        // Up to the end of the period, nothing changes any more.
        let end = req.to.max(last_at);
        for (feature, state) in &self.live {
            if wanted(feature) {
                let report = report_of(&mut self.reports, feature, req);
                integrate(report, state, last_at, end, req);
            }
        }
        for h in self.held.values() {
            if wanted(&h.feature) {
                let report = report_of(&mut self.reports, &h.feature, req);
                attribute(report, h, end, req);
            }
        }
        for (f, since, _) in self.waiting.values() {
            if wanted(f) {
                let report = report_of(&mut self.reports, f, req);
                add_queued(report, *since, end, req);
            }
        }
        self.reports.into_values().collect()
    }
}

/// The level of every feature when the period starts: the first point of its series.
fn start_series(
    reports: &mut BTreeMap<String, FeatureReport>,
    live: &BTreeMap<String, Live>,
    req: &Request,
    wanted: impl Fn(&str) -> bool,
) {
    for (feature, state) in live {
        if wanted(feature) {
            report_of(reports, feature, req)
                .series
                .push((req.from, state.in_use));
        }
    }
}

fn report_of<'a>(
    reports: &'a mut BTreeMap<String, FeatureReport>,
    feature: &str,
    req: &Request,
) -> &'a mut FeatureReport {
    reports.entry(feature.to_string()).or_insert_with(|| {
        let rows = buckets(req)
            .into_iter()
            .map(|(from, to)| Figures {
                from,
                to,
                ..Figures::default()
            })
            .collect();
        FeatureReport {
            feature: feature.to_string(),
            rows,
            total: Figures {
                from: req.from,
                to: req.to,
                ..Figures::default()
            },
            series: Vec::new(),
            ..FeatureReport::default()
        }
    })
}

/// Accounts for `state` holding from `a` to `b` (clipped to the period and split by row).
fn integrate(report: &mut FeatureReport, state: &Live, a: Ms, b: Ms, req: &Request) {
    let (a, b) = (a.max(req.from), b.min(req.to));
    if a >= b {
        return;
    }
    let total = state.total();
    let add = |f: &mut Figures, a: Ms, b: Ms| {
        let span = (b - a) as u128;
        f.used_ms += span * u128::from(state.in_use);
        f.available_ms += span * u128::from(total);
        if total > 0 && state.in_use >= total {
            f.full_ms += span as u64;
        }
        f.peak = f.peak.max(state.in_use);
        f.seats = f.seats.max(total);
    };
    add(&mut report.total, a, b);
    for row in &mut report.rows {
        let (ra, rb) = (a.max(row.from), b.min(row.to));
        if ra < rb {
            add(row, ra, rb);
        }
    }
}

/// A change at `at` may set a new peak even if it lasts no time at all.
fn mark_peak(report: &mut FeatureReport, state: &Live, at: Ms, req: &Request) {
    if at < req.from || at >= req.to {
        return;
    }
    report.total.peak = report.total.peak.max(state.in_use);
    if let Some(row) = row_at(report, at) {
        row.peak = row.peak.max(state.in_use);
    }
}

fn row_at(report: &mut FeatureReport, at: Ms) -> Option<&mut Figures> {
    report.rows.iter_mut().find(|r| r.from <= at && at < r.to)
}

/// Seat-hours of a lease held from `h.since` to `until`, inside the period.
fn attribute(report: &mut FeatureReport, h: &Held, until: Ms, req: &Request) {
    let (a, b) = (h.since.max(req.from), until.min(req.to));
    if a >= b {
        return;
    }
    let hours = (b - a) as f64 / 3_600_000.0 * f64::from(h.count);
    *report.by_user.entry(h.user.clone()).or_default() += hours;
    *report.by_host.entry(h.host.clone()).or_default() += hours;
}

fn add_queued(report: &mut FeatureReport, since: Ms, until: Ms, req: &Request) {
    let (a, b) = (since.max(req.from), until.min(req.to));
    if a >= b {
        return;
    }
    report.total.queued_ms += (b - a) as u64;
    for row in &mut report.rows {
        let (ra, rb) = (a.max(row.from), b.min(row.to));
        if ra < rb {
            row.queued_ms += (rb - ra) as u64;
        }
    }
}

/// The rows of the period.
pub fn buckets(req: &Request) -> Vec<(Ms, Ms)> {
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

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use usher_core::{LeaseId, SessionId};
    use usher_store::{DETAIL_LINGER_OVER, DETAIL_REUSED, LogEvent, UsageEvent, UsageRecord};

    use super::*;

    /// One second, in the store's milliseconds.
    const S: u64 = 1_000;

    fn record(at: u64, event: UsageEvent, lease: u64, detail: Option<&str>) -> UsageRecord {
        let columns = LogEvent {
            event,
            session: Some(SessionId(lease)),
            lease: Some(LeaseId(lease)),
            feature: Some("cad".into()),
            vendor: Some("acme".into()),
            version: Some("2025".into()),
            count: Some(1),
            user: Some("alice".into()),
            host: Some("ws1".into()),
            display: None,
            detail: detail.map(str::to_owned),
        };
        UsageRecord {
            seq: 0,
            at,
            columns,
            hash: [0; 32],
        }
    }

    /// A lingering seat is in use until it really goes back: the `linger` record (the
    /// client's checkin) ends nothing; the `checkin` with detail `linger over` or `reused`
    /// does.
    #[test]
    fn lingering_time_counts_as_use() {
        let mut seats = record(0, UsageEvent::Seats, 0, None);
        (seats.session, seats.lease, seats.user, seats.host) = (None, None, None, None);
        let records = [
            seats,
            record(10 * S, UsageEvent::Checkout, 1, None),
            record(20 * S, UsageEvent::Linger, 1, None),
            record(70 * S, UsageEvent::Checkin, 1, Some(DETAIL_LINGER_OVER)),
            record(80 * S, UsageEvent::Checkout, 2, None),
            record(85 * S, UsageEvent::Linger, 2, None),
            record(90 * S, UsageEvent::Checkin, 2, Some(DETAIL_REUSED)),
            record(90 * S, UsageEvent::Checkout, 3, None),
            record(95 * S, UsageEvent::Checkin, 3, None),
        ];
        let req = Request {
            from: 0,
            to: 100_000,
            by: Bucket::Whole,
            feature: None,
        };
        let reports = build(&records, &req);
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].total.used_ms, u128::from((60 + 10 + 5) * S));
        assert_eq!(reports[0].total.peak, 1, "a takeover never counts twice");
        let hours = reports[0].by_user["alice"];
        assert!((hours - 75.0 / 3600.0).abs() < 1e-9, "{hours} hours");
    }

    /// Under `DUP_GROUP=UH`, alice's second checkout on ws1 shares her seat: live status
    /// says `1 of 1`, and so must the report (peak 1, no seat wanted).
    #[test]
    fn duplicates_share_a_seat_as_in_the_ledger() {
        let mut seats = record(0, UsageEvent::Seats, 0, Some("DUP_GROUP=UH"));
        (seats.session, seats.lease, seats.user, seats.host) = (None, None, None, None);
        let mut other_host = record(30 * S, UsageEvent::Checkout, 3, None);
        other_host.host = Some("ws2".into());
        let records = [
            seats,
            record(10 * S, UsageEvent::Checkout, 1, None),
            record(20 * S, UsageEvent::Checkout, 2, None),
            other_host,
            record(40 * S, UsageEvent::Checkin, 3, None),
            record(50 * S, UsageEvent::Checkin, 1, None),
            record(60 * S, UsageEvent::Checkin, 2, None),
        ];
        let req = Request {
            from: 0,
            to: 100_000,
            by: Bucket::Whole,
            feature: None,
        };
        let r = build(&records, &req).remove(0);
        assert_eq!(
            r.total.peak, 2,
            "only ws2's checkout needs a seat of its own: {r:?}"
        );
        assert_eq!(
            r.series,
            [10, 20, 30, 40, 50, 60]
                .into_iter()
                .zip([1, 1, 2, 1, 1, 0])
                .map(|(t, n)| (t * S as Ms, n))
                .collect::<Vec<_>>()
        );
        assert_eq!(r.total.used_ms, u128::from((50 + 10) * S));
    }

    /// A `denied_repeats` record counts as `count` denials of its reason.
    #[test]
    fn aggregated_denials_count_as_many() {
        let mut repeats = record(30 * S, UsageEvent::DeniedRepeats, 1, Some("all_in_use"));
        repeats.count = Some(41);
        let records = [
            record(10 * S, UsageEvent::Denied, 1, Some("all_in_use")),
            repeats,
            record(40 * S, UsageEvent::Denied, 2, Some("max_reached")),
        ];
        let req = Request {
            from: 0,
            to: 100_000,
            by: Bucket::Whole,
            feature: None,
        };
        let reports = build(&records, &req);
        assert_eq!(reports[0].total.denied(), 43, "{reports:?}");
        assert_eq!(reports[0].total.denials["all_in_use"], 42);
        assert_eq!(reports[0].denial_times.len(), 43);
    }

    /// 2 seats, both held for the whole period, and refusals of every class: only the
    /// shortage ones (and a wait that ran out) make the verdict ask for more seats.
    fn full_pool_with(denials: &[&str], timed_out: bool) -> FeatureReport {
        let mut seats = record(0, UsageEvent::Seats, 0, None);
        seats.count = Some(2);
        let mut records = vec![
            seats,
            record(S, UsageEvent::Checkout, 1, None),
            record(S, UsageEvent::Checkout, 2, None),
        ];
        for (i, d) in denials.iter().enumerate() {
            records.push(record((10 + i as u64) * S, UsageEvent::Denied, 0, Some(d)));
        }
        if timed_out {
            records.push(record(40 * S, UsageEvent::Queue, 9, None));
            records.push(record(50 * S, UsageEvent::Dequeue, 9, Some("timed_out")));
        }
        records.push(record(99 * S, UsageEvent::Checkin, 1, None));
        records.push(record(99 * S, UsageEvent::Checkin, 2, None));
        let req = Request {
            from: 0,
            to: 10_000_000,
            by: Bucket::Whole,
            feature: None,
        };
        build(&records, &req).remove(0)
    }

    #[test]
    fn only_refusals_for_lack_of_seats_ask_for_more_seats() {
        let others = [
            "not_borrowable",
            "borrow_too_long",
            "excluded",
            "max_reached",
            "unknown_feature",
        ];
        let r = full_pool_with(&others, false);
        let verdict = r.verdict();
        assert!(!verdict.contains("consider"), "{verdict}");
        assert!(
            verdict.contains("stayed idle") || verdict.contains("enough"),
            "{verdict}"
        );
        assert!(
            verdict.contains(
                "2 refused by policy, 1 refused by the licenses, 2 refused by borrowing rules"
            ),
            "{verdict}"
        );
        assert_eq!(r.total.denied(), 5);
        assert_eq!(r.total.refused(RefusalClass::Shortage), 0);
        assert!(
            r.peak_demand <= 2,
            "non-shortage refusals add no demand: {r:?}"
        );

        let r = full_pool_with(&["all_in_use", "not_borrowable"], false);
        let verdict = r.verdict();
        assert!(
            verdict.contains("1 checkout was refused for lack of a seat; consider 1 more seat"),
            "{verdict}"
        );
        assert!(
            verdict.contains("1 refused by borrowing rules"),
            "{verdict}"
        );

        let r = full_pool_with(&[], true);
        assert_eq!(
            r.total.refused(RefusalClass::Shortage),
            1,
            "a wait that ran out: {r:?}"
        );
        assert!(r.verdict().contains("consider"), "{}", r.verdict());
    }

    #[test]
    fn every_logged_reason_name_has_its_class() {
        for reason in DenyReason::ALL {
            assert_eq!(reason_class(reason.name()), reason.class(), "{reason:?}");
        }
        assert_eq!(reason_class("all_in_use"), RefusalClass::Shortage);
        assert_eq!(reason_class("max_reached"), RefusalClass::Policy);
        assert_eq!(reason_class("borrow_too_long"), RefusalClass::Borrowing);
        assert_eq!(reason_class("no such reason"), RefusalClass::BadRequest);
    }
}
