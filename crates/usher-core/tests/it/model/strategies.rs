//! The generators: license lines, operations, and the tables they draw on.

use proptest::prelude::*;
use usher_core::Millis;
use usher_license::{Entitlement, SeatCount};

use crate::util::{DAY, GRACE, TTL, ent, expiring, from_vendor, starting};

/// Features requests name; only the first three are ever licensed.
pub const FEATURES: [&str; 4] = ["cad", "sim", "eda", "unlicensed"];
/// Versions licenses carry (numerically distinct, so each has one spelling).
pub(super) const POOL_VERSIONS: [&str; 4] = ["2024", "2025.9", "2025.10", "2026"];
/// Versions requests ask for, malformed ones included.
pub const REQUEST_VERSIONS: [&str; 10] = [
    "",
    "2024",
    "2025",
    "2025.9",
    "2025.10",
    "2025.10.0",
    "2026",
    "2027",
    "v1",
    "2025..1",
];
pub(super) const VENDORS: [&str; 2] = ["acme", "globex"];
/// Session ids are drawn from `1..=SESSION_IDS`, so ids are reused and collide.
pub const SESSION_IDS: u64 = 4;
/// How many license lines a reload can re-count.
pub(super) const MAX_LINES: usize = 8;
/// Largest seat count a request may ask for.
pub(super) const MAX_SEATS_PER_REQUEST: u32 = 1_000_000;

/// One license line, as indexes into the tables above and day offsets from day 0.
#[derive(Debug, Clone)]
pub struct Line {
    pub(super) feature: usize,
    pub(super) vendor: usize,
    pub(super) version: usize,
    /// `None`: uncounted.
    pub(super) seats: Option<u32>,
    /// `START=` day.
    pub(super) start: Option<i64>,
    /// Expiry day (valid through its end); `None`: permanent.
    pub(super) last_day: Option<i64>,
    /// `OVERDRAFT=` seats.
    pub(super) overdraft: Option<u32>,
}

impl Line {
    /// The entitlement this line stands for.
    pub fn entitlement(&self) -> Entitlement {
        let mut e = ent(FEATURES[self.feature], POOL_VERSIONS[self.version], 0);
        e.count = self.seats.map_or(SeatCount::Uncounted, SeatCount::Counted);
        e = from_vendor(e, VENDORS[self.vendor]);
        if let Some(day) = self.start {
            e = starting(e, day);
        }
        if let Some(day) = self.last_day {
            e = expiring(e, day);
        }
        if let Some(n) = self.overdraft {
            e.attrs.push(("OVERDRAFT".into(), n.to_string()));
        }
        e
    }
}

/// The license lines the model serves.
pub fn lines() -> impl Strategy<Value = Vec<Line>> {
    let line = (
        0..3usize,
        prop_oneof![3 => Just(0usize), 1 => Just(1usize)],
        0..POOL_VERSIONS.len(),
        prop_oneof![12 => (0u32..=4).prop_map(Some), 1 => Just(None)],
        prop::option::weighted(0.2, -2i64..=3),
        prop::option::weighted(0.2, -1i64..=4),
        prop::option::weighted(0.2, 0u32..=2),
    )
        .prop_map(
            |(feature, vendor, version, seats, start, last_day, overdraft)| Line {
                feature,
                vendor,
                version,
                seats,
                start,
                last_day,
                overdraft,
            },
        );
    prop::collection::vec(line, 1..=MAX_LINES)
}

/// One step of a test run.
#[derive(Debug, Clone)]
pub enum Op {
    /// Open session `id` (fails if it is live).
    Open(u64),
    /// Resume session `id` with its secret or a wrong one.
    Resume { id: u64, right_secret: bool },
    /// Heartbeat from session `id`.
    Heartbeat(u64),
    /// Session `id` detaches (keepalives over UDP from now on).
    Detach(u64),
    /// Session `id`'s connection dropped.
    Disconnect(u64),
    /// Session `id` says goodbye.
    Close(u64),
    /// Checkout by session `session` of `FEATURES[feature]` at `REQUEST_VERSIONS[version]`.
    Checkout {
        session: u64,
        feature: usize,
        version: usize,
        count: u32,
        client_ref: u64,
        /// Reuse the id of the n-th live lease instead of a fresh one (only when the run
        /// allows lease id collisions).
        reuse_id: Option<usize>,
    },
    /// Check in the n-th live lease (or a lease that never existed), by its owner or by
    /// session `by`.
    Checkin {
        lease: usize,
        bogus: bool,
        by: Option<u64>,
    },
    /// An administrator removes the n-th live lease (or a lease that never existed).
    Remove { lease: usize, bogus: bool },
    /// Let time pass.
    Advance(Millis),
    /// Expire lapsed sessions.
    Expire,
    /// No live session lapses within the next `Millis` (a cluster's new leader).
    Extend(Millis),
    /// Restart the server: rebuild the ledger from the durable state.
    Restart,
    /// Reload the license with line `i` re-counted to `seats[i]` (uncounted lines stay so).
    Reload(Vec<u32>),
}

/// Random operations, weighted towards checkouts and checkins.
pub fn ops(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    let sid = 1..=SESSION_IDS;
    let op = prop_oneof![
        3 => sid.clone().prop_map(Op::Open),
        1 => (sid.clone(), prop::bool::weighted(0.8))
            .prop_map(|(id, right_secret)| Op::Resume { id, right_secret }),
        2 => sid.clone().prop_map(Op::Heartbeat),
        1 => sid.clone().prop_map(Op::Detach),
        1 => sid.clone().prop_map(Op::Disconnect),
        1 => sid.clone().prop_map(Op::Close),
        10 => (
            sid.clone(),
            0..FEATURES.len(),
            0..REQUEST_VERSIONS.len(),
            prop_oneof![20 => 1u32..=3, 1 => Just(0u32), 1 => Just(MAX_SEATS_PER_REQUEST + 1)],
            0u64..4,
            prop::option::weighted(0.1, 0usize..8),
        )
            .prop_map(|(session, feature, version, count, client_ref, reuse_id)| {
                Op::Checkout { session, feature, version, count, client_ref, reuse_id }
            }),
        5 => (0usize..8, prop::bool::weighted(0.1), prop::option::weighted(0.15, sid))
            .prop_map(|(lease, bogus, by)| Op::Checkin { lease, bogus, by }),
        1 => (0usize..8, prop::bool::weighted(0.1))
            .prop_map(|(lease, bogus)| Op::Remove { lease, bogus }),
        4 => prop_oneof![
            4 => 0..30_000u64,
            2 => 0..(TTL + GRACE),
            1 => 0..(2 * DAY),
        ]
        .prop_map(Op::Advance),
        2 => Just(Op::Expire),
        1 => (0..(2 * TTL)).prop_map(Op::Extend),
        1 => Just(Op::Restart),
        1 => prop::collection::vec(0u32..=5, MAX_LINES).prop_map(Op::Reload),
    ];
    prop::collection::vec(op, 0..=max_len)
}
