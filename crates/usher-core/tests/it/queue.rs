//! The checkout queue: waiting, order, timeouts, withdrawal, and a property test of its
//! invariants under random operations.

use proptest::prelude::*;
use usher_core::{
    Ask, Change, Command, Denial, DequeueReason, LeaseId, Ledger, Millis, Outcome, QueuedRequest,
    SessionId, Wait,
};

use crate::util::*;

/// A checkout that waits as `wait` says, with idempotency key `lease` (unique per test).
fn waiting(session: SessionId, lease: u64, feature: &str, count: u32, wait: Wait) -> Command {
    checkout_wait_cmd(session, lease, feature, "", count, lease, wait)
}

/// Queues a checkout that the test expects to wait; returns its position.
fn queue(ledger: &mut Ledger, now: Millis, cmd: Command) -> u32 {
    let (result, changes) = apply(ledger, now, cmd.clone());
    let Ok(Outcome::Queued { request, position }) = result else {
        panic!("{cmd:?}: expected to be queued, got {result:?}");
    };
    assert_eq!(changes, vec![Change::Queued(request)], "{cmd:?}");
    position
}

/// Checks a lease in, expecting it to be released.
fn released(ledger: &mut Ledger, now: Millis, cmd: Command) -> Vec<Change> {
    let (result, changes) = apply(ledger, now, cmd.clone());
    assert!(
        matches!(result, Ok(Outcome::Released(_))),
        "{cmd:?}: {result:?}"
    );
    changes
}

fn checkin(session: SessionId, lease: u64) -> Command {
    Command::Checkin {
        session,
        lease_id: LeaseId(lease),
    }
}

/// The lease ids granted out of the queue by `changes`, in order.
fn granted_from_queue(changes: &[Change]) -> Vec<u64> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Dequeued {
                reason: DequeueReason::Granted(lease),
                ..
            } => Some(lease.id.0),
            _ => None,
        })
        .collect()
}

/// Why each request left the queue in `changes`, by lease id.
fn dequeued(changes: &[Change]) -> Vec<(u64, DequeueReason)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Dequeued { request, reason } => Some((request.lease_id.0, reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_waiting_checkout_is_granted_when_a_seat_frees() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let (a, b) = (session(&mut ledger, 1, T0), session(&mut ledger, 2, T0));
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    assert_eq!(
        queue(&mut ledger, T0, waiting(b, 20, "cad", 1, Wait::Forever)),
        1
    );
    assert_eq!(
        ledger.in_use(&key("cad", VENDOR, "2025")),
        1,
        "waiting holds nothing"
    );
    assert_eq!(
        ledger.next_deadline(),
        Some(T0 + TTL),
        "no deadline of its own"
    );

    let (result, changes) = apply(&mut ledger, T0 + 5, checkin(a, 10));
    assert!(matches!(result, Ok(Outcome::Released(_))), "{result:?}");
    let lease = ledger.lease(LeaseId(20)).expect("granted").clone();
    assert_eq!(lease.session, b);
    assert_eq!(lease.client_ref, 20);
    assert_eq!(lease.granted_at, T0 + 5);
    let Change::Dequeued { request, reason } = &changes[1] else {
        panic!("{changes:?}");
    };
    assert_eq!(request.lease_id, LeaseId(20));
    assert_eq!(reason, &DequeueReason::Granted(lease.clone()));
    assert_eq!(changes[2], Change::LeaseGranted(lease));
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert_eq!(ledger.queued().count(), 0);
}

#[test]
fn the_queue_is_served_in_arrival_order_and_a_large_request_is_not_starved() {
    let mut ledger = ledger(&[ent("cad", "2025", 3)]);
    let s: Vec<SessionId> = (1..=5).map(|i| session(&mut ledger, i, T0)).collect();
    for (i, lease) in [10, 11, 12].into_iter().enumerate() {
        grant(&mut ledger, T0, s[i], lease, "cad", "", 1);
    }
    // Two seats wanted first, then two single seats.
    assert_eq!(
        queue(&mut ledger, T0, waiting(s[3], 40, "cad", 2, Wait::Forever)),
        1
    );
    assert_eq!(
        queue(&mut ledger, T0, waiting(s[4], 50, "cad", 1, Wait::Forever)),
        2
    );
    assert_eq!(
        queue(&mut ledger, T0, waiting(s[4], 51, "cad", 1, Wait::Forever)),
        3
    );

    // One seat frees: it would fit either single request, but the pair is ahead.
    let (_, changes) = apply(&mut ledger, T0 + 1, checkin(s[0], 10));
    assert_eq!(granted_from_queue(&changes), Vec::<u64>::new());
    // A newcomer that will not wait is refused even though a seat is free.
    let (result, changes) = apply(&mut ledger, T0 + 1, checkout_cmd(s[0], 60, "cad", "", 1));
    assert_eq!(
        result,
        Ok(Outcome::Denied(Denial::QueuedAhead { waiting: 3 }))
    );
    assert!(changes.is_empty(), "{changes:?}");

    // A second seat frees: the pair goes first, then nothing fits.
    let (_, changes) = apply(&mut ledger, T0 + 2, checkin(s[1], 11));
    assert_eq!(granted_from_queue(&changes), vec![40]);
    let (_, changes) = apply(&mut ledger, T0 + 3, checkin(s[2], 12));
    assert_eq!(granted_from_queue(&changes), vec![50]);
    let positions: Vec<(u64, u32)> = ledger.queued().map(|(r, p)| (r.lease_id.0, p)).collect();
    assert_eq!(positions, vec![(51, 1)]);
}

#[test]
fn a_wait_that_runs_out_leaves_the_queue_at_its_deadline() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let (a, b) = (session(&mut ledger, 1, T0), session(&mut ledger, 2, T0));
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    let deadline = T0 + 30_000;
    queue(&mut ledger, T0, waiting(b, 20, "cad", 1, Wait::For(30_000)));
    assert_eq!(ledger.next_deadline(), Some(deadline));

    let (_, changes) = apply(&mut ledger, deadline - 1, Command::Expire);
    assert!(changes.is_empty(), "not yet: {changes:?}");
    let (_, changes) = apply(&mut ledger, deadline, Command::Expire);
    assert_eq!(dequeued(&changes), vec![(20, DequeueReason::TimedOut)]);
    assert_eq!(ledger.queued().count(), 0);
    // The seat that frees later goes to nobody.
    let (_, changes) = apply(&mut ledger, deadline + 1, checkin(a, 10));
    assert_eq!(granted_from_queue(&changes), Vec::<u64>::new());
}

#[test]
fn a_wait_of_nothing_is_no_wait() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let (a, b) = (session(&mut ledger, 1, T0), session(&mut ledger, 2, T0));
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    let (result, changes) = apply(&mut ledger, T0, waiting(b, 20, "cad", 1, Wait::For(0)));
    assert!(
        matches!(result, Ok(Outcome::Denied(Denial::AllInUse { .. }))),
        "{result:?}"
    );
    assert!(changes.is_empty());
}

#[test]
fn only_a_lack_of_seats_is_waited_for() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let s = session(&mut ledger, 1, T0);
    let (result, _) = apply(&mut ledger, T0, waiting(s, 20, "nosuch", 1, Wait::Forever));
    assert_eq!(result, Ok(Outcome::Denied(Denial::UnknownFeature)));
    let (result, _) = apply(&mut ledger, T0, waiting(s, 21, "cad", 0, Wait::Forever));
    assert!(
        matches!(result, Ok(Outcome::Denied(Denial::BadRequest(_)))),
        "{result:?}"
    );
    assert_eq!(ledger.queued().count(), 0);
}

#[test]
fn a_retried_waiting_checkout_keeps_its_place() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let (a, b, c) = (
        session(&mut ledger, 1, T0),
        session(&mut ledger, 2, T0),
        session(&mut ledger, 3, T0),
    );
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    queue(&mut ledger, T0, waiting(b, 20, "cad", 1, Wait::Forever));
    queue(&mut ledger, T0, waiting(c, 30, "cad", 1, Wait::Forever));
    // The same request again (a resend after a reconnect), under a fresh lease id.
    let mut again = waiting(c, 31, "cad", 1, Wait::Forever);
    if let Command::Checkout { ask, .. } = &mut again {
        ask.client_ref = 30;
    }
    let (result, changes) = apply(&mut ledger, T0 + 1, again.clone());
    let Ok(Outcome::Queued { request, position }) = result else {
        panic!("{result:?}");
    };
    assert_eq!((request.lease_id, position), (LeaseId(30), 2));
    assert!(changes.is_empty(), "nothing new: {changes:?}");
    // Once granted, the retry returns the grant.
    released(&mut ledger, T0 + 2, checkin(a, 10));
    released(&mut ledger, T0 + 3, checkin(b, 20));
    let (result, _) = apply(&mut ledger, T0 + 4, again);
    let Ok(Outcome::Granted(lease)) = result else {
        panic!("{result:?}");
    };
    assert_eq!(lease.id, LeaseId(30));
}

#[test]
fn a_withdrawn_or_departed_request_leaves_and_lets_the_next_through() {
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    let (a, b, c, d) = (
        session(&mut ledger, 1, T0),
        session(&mut ledger, 2, T0),
        session(&mut ledger, 3, T0),
        session(&mut ledger, 4, T0),
    );
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    grant(&mut ledger, T0, a, 11, "cad", "", 1);
    queue(&mut ledger, T0, waiting(b, 20, "cad", 2, Wait::Forever));
    queue(&mut ledger, T0, waiting(c, 30, "cad", 2, Wait::Forever));
    queue(&mut ledger, T0, waiting(d, 40, "cad", 1, Wait::Forever));
    released(&mut ledger, T0 + 1, checkin(a, 10));
    // b withdraws; c still needs two seats; d stays behind c.
    let (result, changes) = apply(
        &mut ledger,
        T0 + 2,
        Command::Dequeue {
            session: b,
            client_ref: 20,
        },
    );
    assert_eq!(result, Ok(Outcome::Done));
    assert_eq!(dequeued(&changes), vec![(20, DequeueReason::Cancelled)]);
    let (result, _) = apply(
        &mut ledger,
        T0 + 2,
        Command::Dequeue {
            session: b,
            client_ref: 20,
        },
    );
    assert_eq!(
        result,
        Ok(Outcome::NotHeld),
        "withdrawing twice is harmless"
    );
    // c's session ends: d is served from the free seat at once.
    let (_, changes) = apply(&mut ledger, T0 + 3, Command::CloseSession { id: c });
    assert_eq!(
        dequeued(&changes)
            .into_iter()
            .map(|(id, r)| (id, matches!(r, DequeueReason::Granted(_))))
            .collect::<Vec<_>>(),
        vec![(30, false), (40, true)]
    );
    assert_eq!(dequeued(&changes)[0].1, DequeueReason::SessionEnded);
}

#[test]
fn a_reload_serves_the_queue_or_refuses_what_it_can_no_longer_serve() {
    let mut ledger = ledger(&[ent("cad", "2025", 1), ent("sim", "1", 1)]);
    let (a, b) = (session(&mut ledger, 1, T0), session(&mut ledger, 2, T0));
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    grant(&mut ledger, T0, a, 11, "sim", "", 1);
    queue(&mut ledger, T0, waiting(b, 20, "cad", 1, Wait::Forever));
    queue(&mut ledger, T0, waiting(b, 21, "sim", 1, Wait::Forever));
    // cad grows to two seats; sim is dropped from the licenses.
    ledger.set_catalog(catalog(&[ent("cad", "2025", 2)]));
    let (_, changes) = apply(&mut ledger, T0 + 1, Command::Expire);
    let mut reasons = dequeued(&changes);
    reasons.sort_by_key(|(id, _)| *id);
    assert!(
        matches!(reasons[0], (20, DequeueReason::Granted(_))),
        "{reasons:?}"
    );
    assert_eq!(
        reasons[1],
        (21, DequeueReason::Refused(Denial::UnknownFeature))
    );
}

#[test]
fn a_restart_forgets_the_queue() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let (a, b) = (session(&mut ledger, 1, T0), session(&mut ledger, 2, T0));
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    queue(&mut ledger, T0, waiting(b, 20, "cad", 1, Wait::Forever));
    let snap = snapshot(&ledger);
    let mut changes = Vec::new();
    let restored = Ledger::restore(
        ledger.catalog().clone(),
        CONFIG,
        ledger.sessions().cloned(),
        ledger.leases().cloned(),
        T0 + 1,
        &mut changes,
    );
    assert_eq!(
        restored.queued().count(),
        0,
        "clients queue again when they resume"
    );
    assert_eq!(restored.leases().count(), snap.leases.len());
}

// ----- property test -----

/// One step of the random workload.
#[derive(Debug, Clone)]
enum Op {
    Checkout {
        session: u64,
        feature: usize,
        count: u32,
        /// 0: no wait; 1: forever; n: n seconds.
        wait: u8,
    },
    Checkin {
        pick: usize,
    },
    Dequeue {
        pick: usize,
    },
    Close {
        session: u64,
    },
    Advance {
        secs: u64,
    },
    Reload {
        seats: [u32; 2],
    },
}

const FEATURES: [&str; 2] = ["cad", "sim"];
const SESSIONS: u64 = 5;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..=SESSIONS, 0..FEATURES.len(), 1u32..=3, 0u8..=4)
            .prop_map(|(session, feature, count, wait)| Op::Checkout { session, feature, count, wait }),
        4 => any::<usize>().prop_map(|pick| Op::Checkin { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Dequeue { pick }),
        1 => (1..=SESSIONS).prop_map(|session| Op::Close { session }),
        2 => (1u64..=200).prop_map(|secs| Op::Advance { secs }),
        1 => [0u32..=4, 0u32..=4].prop_map(|seats| Op::Reload { seats }),
    ]
}

fn licenses(seats: [u32; 2]) -> Vec<usher_license::Entitlement> {
    FEATURES
        .iter()
        .zip(seats)
        .map(|(f, n)| ent(f, "2025", n))
        .collect()
}

proptest! {
    #![proptest_config(crate::model::config())]

    /// Under random checkouts (waiting or not), checkins, withdrawals, session ends, time
    /// and reloads:
    /// - seats in use never exceed a pool's count at the moment of a grant;
    /// - a request is granted from the queue only when no request for the same feature is
    ///   ahead of it (priority, then arrival), and new checkouts never overtake the queue;
    /// - every queued request belongs to a live session and leaves the queue exactly once;
    /// - a request waiting with a deadline never waits past it.
    #[test]
    fn queue_invariants_hold(ops in proptest::collection::vec(op(), 1..80)) {
        let mut seats = [2u32, 1u32];
        let mut ledger = ledger(&licenses(seats));
        let mut now = T0;
        let mut next_lease = 100u64;
        let mut open: Vec<SessionId> = Vec::new();
        // Every request that joined the queue and has not left it, in serving order per
        // feature (all priorities are equal, so arrival order).
        let mut waiting_order: Vec<QueuedRequest> = Vec::new();
        for op in ops {
            let mut changes = Vec::new();
            let cmd = match op {
                Op::Checkout { session: id, feature, count, wait } => {
                    let session = SessionId(id);
                    if !open.contains(&session) {
                        ledger.apply(now, open_cmd(id), &mut changes).expect("fresh id");
                        open.push(session);
                    }
                    next_lease += 1;
                    Command::Checkout {
                        ask: Ask {
                            session,
                            lease_id: LeaseId(next_lease),
                            feature: FEATURES[feature].to_string(),
                            version: String::new(),
                            count,
                            client_ref: next_lease,
                        },
                        wait: match wait {
                            0 => Wait::No,
                            1 => Wait::Forever,
                            n => Wait::For(u64::from(n) * 10_000),
                        },
                    }
                }
                Op::Checkin { pick } => {
                    let leases: Vec<_> = ledger.leases().cloned().collect();
                    if leases.is_empty() {
                        continue;
                    }
                    let l = &leases[pick % leases.len()];
                    Command::Checkin { session: l.session, lease_id: l.id }
                }
                Op::Dequeue { pick } => {
                    let queued: Vec<_> = ledger.queued().map(|(r, _)| r.clone()).collect();
                    if queued.is_empty() {
                        continue;
                    }
                    let r = &queued[pick % queued.len()];
                    Command::Dequeue { session: r.session, client_ref: r.client_ref }
                }
                Op::Close { session } => {
                    let session = SessionId(session);
                    if !open.contains(&session) {
                        continue;
                    }
                    open.retain(|s| *s != session);
                    Command::CloseSession { id: session }
                }
                Op::Advance { secs } => {
                    now += secs * 1000;
                    Command::Expire
                }
                Op::Reload { seats: new } => {
                    seats = new;
                    ledger.set_catalog(catalog(&licenses(seats)));
                    Command::Expire
                }
            };
            let before_queue: Vec<QueuedRequest> =
                ledger.queued().map(|(r, _)| r.clone()).collect();
            let result = ledger.apply(now, cmd.clone(), &mut changes);
            prop_assert!(result.is_ok(), "{:?} -> {:?}", cmd, result);
            if let Ok(Outcome::Expired { sessions }) = &result {
                open.retain(|s| !sessions.contains(s));
            }
            // Track the queue through the changes.
            for change in &changes {
                match change {
                    Change::Queued(r) => waiting_order.push(r.clone()),
                    Change::Dequeued { request, reason } => {
                        let at = waiting_order.iter().position(|w| w.lease_id == request.lease_id);
                        prop_assert!(at.is_some(), "{:?} left a queue it was not in", request);
                        let at = at.unwrap_or_default();
                        if matches!(reason, DequeueReason::Granted(_)) {
                            let ahead = waiting_order[..at]
                                .iter()
                                .any(|w| w.feature == request.feature);
                            prop_assert!(!ahead, "{:?} overtook the queue: {:?}", request, waiting_order);
                        }
                        if reason == &DequeueReason::TimedOut {
                            prop_assert_eq!(request.deadline.map(|d| d <= now), Some(true));
                        }
                        waiting_order.remove(at);
                    }
                    Change::LeaseGranted(lease) => {
                        // A direct grant may not overtake a queue that was waiting before.
                        let from_queue = before_queue.iter().any(|r| r.lease_id == lease.id);
                        if !from_queue && matches!(cmd, Command::Checkout { .. }) {
                            prop_assert!(
                                !before_queue.iter().any(|r| r.feature == lease.feature),
                                "{:?} was granted past a waiting queue {:?}", lease, before_queue
                            );
                        }
                    }
                    _ => {}
                }
            }
            // The ledger's queue is exactly the tracked one, in order, per feature.
            let actual: Vec<(u64, u32)> = ledger.queued().map(|(r, p)| (r.lease_id.0, p)).collect();
            let mut expected = Vec::new();
            for f in FEATURES {
                for (i, r) in waiting_order.iter().filter(|r| r.feature == f).enumerate() {
                    expected.push((r.lease_id.0, i as u32 + 1));
                }
            }
            prop_assert_eq!(actual, expected);
            for (r, _) in ledger.queued() {
                prop_assert!(ledger.session(r.session).is_some(), "{:?} outlived its session", r);
                if let Some(d) = r.deadline {
                    prop_assert!(d > now, "{:?} waits past its deadline at {}", r, now);
                }
            }
            for (i, f) in FEATURES.iter().enumerate() {
                let held: u32 = ledger.leases().filter(|l| l.feature == *f).map(|l| l.count).sum();
                let granted_now: u32 = changes
                    .iter()
                    .filter_map(|c| match c {
                        Change::LeaseGranted(l) if l.feature == *f => Some(l.count),
                        _ => None,
                    })
                    .sum();
                if granted_now > 0 {
                    prop_assert!(held <= seats[i], "{} holds {} of {} seats", f, held, seats[i]);
                }
            }
        }
    }
}

/// A request no pool could ever hold, or more than a `MAX` allows the client at all, is
/// refused at once with its own reason even when it asks to wait: it never queues.
#[test]
fn a_request_that_can_never_be_met_is_refused_at_once_and_never_queued() {
    let mut ledger = ledger(&[ent("cad", "2025", 3)]);
    let (a, b) = (session(&mut ledger, 1, T0), session(&mut ledger, 2, T0));
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    for wait in [Wait::No, Wait::Forever, Wait::For(60_000)] {
        let (result, changes) = apply(&mut ledger, T0, waiting(b, 20, "cad", 4, wait));
        assert_eq!(
            result,
            Ok(Outcome::Denied(Denial::MoreThanLicensed {
                asked: 4,
                licensed: 3
            })),
            "{wait:?}"
        );
        assert!(
            !changes.iter().any(|c| matches!(c, Change::Queued(_))),
            "{changes:?}"
        );
    }
    // Three seats fit the pool: that request waits for the one in use.
    queue(&mut ledger, T0, waiting(b, 21, "cad", 3, Wait::Forever));

    let mut ledger = ledger_with_max(&[ent("cad", "2025", 5)], "MAX 2 cad USER user3\n");
    let c = session(&mut ledger, 3, T0);
    let (result, _) = apply(&mut ledger, T0, waiting(c, 30, "cad", 3, Wait::Forever));
    let Ok(Outcome::Denied(Denial::MoreThanAllowed { limit: 2, rule })) = result else {
        panic!("expected MoreThanAllowed, got {result:?}");
    };
    assert!(rule.contains("MAX 2 cad"), "{rule}");
    let (result, _) = apply(&mut ledger, T0, waiting(c, 31, "cad", 0, Wait::Forever));
    assert!(
        matches!(result, Ok(Outcome::Denied(Denial::BadRequest(_)))),
        "{result:?}"
    );
}

fn ledger_with_max(ents: &[usher_license::Entitlement], policy: &str) -> Ledger {
    let mut ledger = ledger(ents);
    ledger.set_policy(usher_core::Policy::parse("opts", policy).expect("parses"));
    ledger
}
