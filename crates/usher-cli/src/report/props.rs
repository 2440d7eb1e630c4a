//! Property test: the report's figures are the ledger's own counts.
//!
//! Random histories (sessions of a few users on a few hosts and displays, checkouts that
//! may wait, checkins, goodbyes, dropped connections, lapses, administrators' removes)
//! run against the real ledger, one pool grouping duplicates under a random `DUP_GROUP=`
//! and one that does not. Every batch of changes goes through the store into the usage
//! log, as the server writes it (the `seats` records first); the log is then replayed by
//! the report. For each feature, the report's series of seats in use must be the ledger's
//! count after every step, and its peak and seat-time the ledger's.

use std::collections::BTreeMap;

use proptest::prelude::*;
use usher_core::{
    Ask, Catalog, ClientInfo, Command, LeaseId, Ledger, LedgerConfig, Millis, SessionId, Wait,
};
use usher_license::{Entitlement, Expiry, HostId, LineKind, SeatCount, Version};
use usher_store::{MemoryStore, Store};

use super::{Bucket, Replay, Request};

/// 2026-01-01T00:00:00Z.
const T0: Millis = 1_767_225_600_000;
const USERS: [&str; 2] = ["alice", "bob"];
const HOSTS: [&str; 2] = ["ws1", "ws2"];
const DISPLAYS: [&str; 2] = [":0", ":1"];
/// `cad` groups duplicates under one of these; `sim` never does.
const RULES: [&str; 7] = ["NONE", "SITE", "U", "H", "D", "UH", "UHD"];
const FEATURES: [&str; 2] = ["cad", "sim"];
const CONFIG: LedgerConfig = LedgerConfig {
    session_ttl: 120_000,
    reconnect_grace: 10_000,
    min_remove: 5_000,
};

#[derive(Debug, Clone)]
enum Op {
    Open {
        user: usize,
        host: usize,
        display: usize,
    },
    Checkout {
        session: usize,
        feature: usize,
        count: u32,
        wait: bool,
    },
    Checkin {
        lease: usize,
    },
    Close {
        session: usize,
    },
    Disconnect {
        session: usize,
    },
    Heartbeat {
        session: usize,
    },
    Remove {
        lease: usize,
    },
    /// Time passes (ms), then the ledger expires what lapsed.
    Wait(Millis),
}

fn op() -> impl Strategy<Value = Op> {
    let ix = 0usize..8;
    prop_oneof![
        2 => (0..USERS.len(), 0..HOSTS.len(), 0..DISPLAYS.len())
            .prop_map(|(user, host, display)| Op::Open { user, host, display }),
        5 => (ix.clone(), 0..FEATURES.len(), 1u32..=3, prop::bool::weighted(0.3))
            .prop_map(|(session, feature, count, wait)| Op::Checkout { session, feature, count, wait }),
        3 => ix.clone().prop_map(|lease| Op::Checkin { lease }),
        1 => ix.clone().prop_map(|session| Op::Close { session }),
        1 => ix.clone().prop_map(|session| Op::Disconnect { session }),
        1 => ix.clone().prop_map(|session| Op::Heartbeat { session }),
        1 => ix.prop_map(|lease| Op::Remove { lease }),
        2 => prop::sample::select(vec![1_000, 6_000, 11_000, 60_000, 125_000]).prop_map(Op::Wait),
    ]
}

fn line(feature: &str, seats: u32, dup: Option<&str>) -> Entitlement {
    Entitlement {
        kind: LineKind::Feature,
        feature: feature.into(),
        vendor: "acme".into(),
        version: "2025".parse::<Version>().unwrap(),
        expiry: Expiry::Permanent,
        count: SeatCount::Counted(seats),
        start: None,
        issued: None,
        notice: None,
        hostid: HostId::Any,
        attrs: dup
            .map(|d| vec![("DUP_GROUP".to_string(), d.to_string())])
            .unwrap_or_default(),
        signature: None,
        line: 1,
    }
}

/// Seats in use per feature, as the ledger counts them.
fn ledger_counts(ledger: &Ledger) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = FEATURES.iter().map(|f| (f.to_string(), 0)).collect();
    for (pool, n) in ledger.pools_in_use() {
        *out.entry(pool.feature.clone()).or_default() += n;
    }
    out
}

/// The ledger's seats in use per feature after each step, and when.
type Counts = Vec<(Millis, BTreeMap<String, u32>)>;

/// Runs `ops`; returns the usage log and the ledger's counts after every step.
fn run(rule: &str, seats: (u32, u32), ops: &[Op]) -> (MemoryStore, Counts) {
    let lines = [line("cad", seats.0, Some(rule)), line("sim", seats.1, None)];
    let catalog = Catalog::from_entitlements(&lines);
    let mut ledger = Ledger::new(catalog, CONFIG);
    let mut store = MemoryStore::new();
    let seat_events = usher_server::ledger_task::seat_events(ledger.catalog(), T0);
    store.commit_batch(T0, &[], &seat_events).unwrap();
    let mut counts = vec![(T0, ledger_counts(&ledger))];
    let (mut sessions, mut leases): (Vec<SessionId>, Vec<(SessionId, LeaseId)>) = (vec![], vec![]);
    let mut now = T0;
    for (next_id, op) in (1u64..).zip(ops) {
        now += 1;
        let pick = |v: &[SessionId], i: usize| (!v.is_empty()).then(|| v[i % v.len()]);
        let command = match *op {
            Op::Open {
                user,
                host,
                display,
            } => {
                let id = SessionId(next_id);
                sessions.push(id);
                Some(Command::OpenSession {
                    id,
                    secret_hash: [next_id as u8; 32],
                    client: ClientInfo {
                        user: USERS[user].into(),
                        host: HOSTS[host].into(),
                        display: DISPLAYS[display].into(),
                        pid: 1,
                        program: "tool".into(),
                        program_version: "1".into(),
                        address: "127.0.0.1:1".into(),
                    },
                })
            }
            Op::Checkout {
                session,
                feature,
                count,
                wait,
            } => pick(&sessions, session).map(|s| {
                leases.push((s, LeaseId(next_id)));
                Command::Checkout {
                    ask: Ask {
                        session: s,
                        lease_id: LeaseId(next_id),
                        feature: FEATURES[feature].into(),
                        version: String::new(),
                        count,
                        client_ref: next_id,
                    },
                    wait: if wait { Wait::For(30_000) } else { Wait::No },
                }
            }),
            Op::Checkin { lease } => (!leases.is_empty()).then(|| {
                let (session, lease_id) = leases[lease % leases.len()];
                Command::Checkin { session, lease_id }
            }),
            Op::Close { session } => {
                pick(&sessions, session).map(|id| Command::CloseSession { id })
            }
            Op::Disconnect { session } => {
                pick(&sessions, session).map(|id| Command::Disconnected { id })
            }
            Op::Heartbeat { session } => {
                pick(&sessions, session).map(|id| Command::Heartbeat { id })
            }
            Op::Remove { lease } => (!leases.is_empty()).then(|| Command::Remove {
                lease_id: leases[lease % leases.len()].1,
            }),
            Op::Wait(ms) => {
                now += ms;
                Some(Command::Expire)
            }
        };
        let mut changes = Vec::new();
        // The server brings the ledger up to date before every batch.
        let _ = ledger.apply(now, Command::Expire, &mut changes);
        if let Some(command) = command {
            let _ = ledger.apply(now, command, &mut changes);
        }
        store.commit_batch(now, &changes, &[]).unwrap();
        counts.push((now, ledger_counts(&ledger)));
    }
    (store, counts)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_report_counts_seats_as_the_ledger_does(
        rule in prop::sample::select(RULES.to_vec()),
        seats in (1u32..=3, 1u32..=3),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let (store, counts) = run(rule, seats, &ops);
        let records = store.usage_log(0, usize::MAX).unwrap();
        let end = counts.last().unwrap().0 + 1_000;
        let req = Request { from: T0 as i64, to: end as i64, by: Bucket::Whole, feature: None };
        let mut replay = Replay::new(req);
        for r in &records {
            replay.feed(r);
        }
        let reports: BTreeMap<String, _> =
            replay.finish().into_iter().map(|r| (r.feature.clone(), r)).collect();
        for feature in FEATURES {
            let report = &reports[feature];
            // The ledger's count from each step to the next (the last to the end).
            let mut used = 0u128;
            let mut peak = 0;
            for (i, (at, c)) in counts.iter().enumerate() {
                let until = counts.get(i + 1).map_or(end, |(t, _)| *t);
                used += u128::from(c[feature]) * u128::from(until - at);
                peak = peak.max(c[feature]);
                let shown = report
                    .series
                    .iter()
                    .rev()
                    .find(|(t, _)| *t <= *at as i64)
                    .map_or(0, |(_, n)| *n);
                prop_assert_eq!(
                    shown, c[feature],
                    "{} at step {} (+{} ms): report {:?}", feature, i, at - T0, report.series
                );
            }
            prop_assert_eq!(report.total.peak, peak, "{} peak", feature);
            prop_assert_eq!(report.total.used_ms, used, "{} seat-time", feature);
        }
    }
}
