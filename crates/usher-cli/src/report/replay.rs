//! The replay of the usage log, record by record, into each feature's report: the leases
//! and queue entries live at each moment, seats counted by the ledger's [`SeatsInUse`],
//! and every figure integrated over the time between two records.

use std::collections::{BTreeMap, HashMap};

use usher_core::{DupGroup, DupKey, Holder, LeaseId, PoolKey, SeatsInUse};
use usher_proto::{DenyReason, RefusalClass};
use usher_store::{UsageEvent, UsageRecord};

use super::model::{FeatureReport, Figures, Ms, Request, buckets, reason_class};

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
