//! Property test for seats held apart from their client, lingering (`LINGER=`,
//! `MIN_CHECKOUT=`) or borrowed (`BORROW=`): random sessions, checkouts (waiting ones
//! included, and checkouts of a token-based feature that costs two of the pool's seats),
//! checkins, borrows, returns, goodbyes, dropped connections, removals and
//! restarts against one pool whose license lines hold seats back, driven through time the
//! way the server drives the ledger (an `Expire` at every deadline it reports).
//!
//! After every step it checks that
//! - the seats in use equal the leases' seats and never exceed the pool's count plus its
//!   overdraft;
//! - a seat given back lingers until exactly `max(checkin + LINGER, grant + MIN_CHECKOUT)`
//!   (the largest of the lines' values), or goes back at once when that is not later;
//! - a lingering seat is released exactly at its deadline, by the `Expire` at that moment,
//!   unless it was taken over first (which never raises the count) or removed; a lapsed
//!   session never releases one;
//! - a borrowed seat is held until exactly the end of its borrow, which is no later than the
//!   license's `BORROW=` allows, unless its borrower returns it; nothing else (a goodbye, a
//!   lapse, an administrator's remove) gives it back, and it is never an overdraft seat;
//! - the next deadline is no later than any linger's or borrow's end;
//! - the durable state rebuilt from nothing but the changes matches the ledger, so a
//!   restart (which rebuilds the ledger from it) keeps every linger to the millisecond.

use proptest::prelude::*;
use usher_core::{
    Ask, Catalog, Change, Command, Lease, LeaseId, Ledger, Millis, Outcome, ReleaseReason,
    SessionId, Wait,
};
use usher_license::Entitlement;

use crate::model::config;
use crate::util::{CONFIG, Durable, T0, VENDOR, catalog, client, increment, key, secret};

/// Hold values, in seconds, the lines draw from: none, shorter than the reconnect grace,
/// shorter than the session TTL, and longer than it.
const HOLDS: [u64; 4] = [0, 1, 30, 200];

/// One license line of the pool: seats, overdraft, `LINGER=`/`MIN_CHECKOUT=` seconds and
/// `BORROW=` hours (`None`: absent).
#[derive(Debug, Clone)]
struct Line {
    seats: u32,
    overdraft: Option<u32>,
    linger: Option<u64>,
    min_checkout: Option<u64>,
    borrow: Option<u64>,
}

impl Line {
    fn entitlement(&self) -> Entitlement {
        let mut e = increment("cad", "2025", self.seats);
        let attrs = [
            ("OVERDRAFT", self.overdraft.map(u64::from)),
            ("LINGER", self.linger),
            ("MIN_CHECKOUT", self.min_checkout),
            ("BORROW", self.borrow),
        ];
        for (name, value) in attrs {
            if let Some(v) = value {
                e.attrs.push((name.into(), v.to_string()));
            }
        }
        e
    }
}

fn lines() -> impl Strategy<Value = Vec<Line>> {
    let hold = prop::option::weighted(0.7, prop::sample::select(HOLDS.to_vec()));
    let line = (
        0u32..=3,
        prop::option::weighted(0.3, 0u32..=1),
        hold.clone(),
        hold,
        prop::option::weighted(0.6, 1u64..=2),
    )
        .prop_map(|(seats, overdraft, linger, min_checkout, borrow)| Line {
            seats,
            overdraft,
            linger,
            min_checkout,
            borrow,
        });
    prop::collection::vec(line, 1..=2)
}

/// One step. Sessions are `1..=4`; each opens as one of two users on one of two hosts, so
/// later sessions often share an identity with earlier ones and may take their seats over.
#[derive(Debug, Clone)]
enum Op {
    Open {
        id: u64,
        who: u64,
    },
    Checkout {
        session: u64,
        count: u32,
        wait: bool,
        /// Of the token-based feature `tok` (two tokens of the pool per seat).
        token: bool,
    },
    /// Checks in the session's `pick`-th lease it still holds (or one it does not).
    Checkin {
        session: u64,
        pick: usize,
    },
    /// Borrows for `minutes` (a borrow of up to two hours may exceed the license's limit).
    Borrow {
        session: u64,
        count: u32,
        minutes: u64,
    },
    /// Returns the session's user's borrow, on its host.
    Return(u64),
    Close(u64),
    Disconnect(u64),
    Heartbeat(u64),
    /// Removes the `pick`-th lease of all (lingering ones included).
    Remove {
        pick: usize,
    },
    Advance(Millis),
    Restart,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let session = 1u64..=4;
    let op = prop_oneof![
        3 => (session.clone(), 1u64..=2).prop_map(|(id, who)| Op::Open { id, who }),
        5 => (session.clone(), 1u32..=2, prop::bool::weighted(0.3), prop::bool::weighted(0.25))
            .prop_map(|(session, count, wait, token)| Op::Checkout { session, count, wait, token }),
        4 => (session.clone(), 0usize..3).prop_map(|(session, pick)| Op::Checkin { session, pick }),
        3 => (session.clone(), 1u32..=2, 1u64..=150)
            .prop_map(|(session, count, minutes)| Op::Borrow { session, count, minutes }),
        1 => session.clone().prop_map(Op::Return),
        1 => session.clone().prop_map(Op::Close),
        1 => session.clone().prop_map(Op::Disconnect),
        1 => session.prop_map(Op::Heartbeat),
        1 => (0usize..4).prop_map(|pick| Op::Remove { pick }),
        3 => prop_oneof![4 => 0u64..=2_000, 4 => 0u64..=250_000, 1 => 0u64..=7_200_000]
            .prop_map(Op::Advance),
        1 => Just(Op::Restart),
    ];
    prop::collection::vec(op, 1..=60)
}

struct Harness {
    catalog: Catalog,
    ledger: Ledger,
    durable: Durable,
    now: Millis,
    next_lease: u64,
    /// The pool's seats plus its overdraft.
    limit: u32,
    /// The largest `LINGER=` and `MIN_CHECKOUT=`, in milliseconds.
    linger: Millis,
    min_checkout: Millis,
    /// The longest borrow any line allows (0: none may be borrowed).
    borrow: Millis,
}

impl Harness {
    fn new(lines: &[Line]) -> Self {
        let mut ents: Vec<Entitlement> = lines.iter().map(Line::entitlement).collect();
        let mut tok = increment("tok", "1", 0);
        tok.count = usher_license::SeatCount::Token;
        tok.attrs.push(("TOKEN".into(), "<cad 2025 2>".into()));
        ents.push(tok);
        let catalog = catalog(&ents);
        let most =
            |f: fn(&Line) -> Option<u64>| lines.iter().filter_map(f).max().unwrap_or(0) * 1000;
        Harness {
            ledger: Ledger::new(catalog.clone(), CONFIG),
            catalog,
            durable: Durable::default(),
            now: T0,
            next_lease: 1,
            limit: lines
                .iter()
                .map(|l| l.seats + l.overdraft.unwrap_or(0))
                .sum(),
            linger: most(|l| l.linger),
            min_checkout: most(|l| l.min_checkout),
            borrow: most(|l| l.borrow) * 3600,
        }
    }

    fn run(&mut self, ops: &[Op]) -> Result<(), String> {
        for (i, op) in ops.iter().enumerate() {
            self.step(op)
                .map_err(|e| format!("step {i} ({op:?}) at T0+{}: {e}", self.now - T0))?;
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), String> {
        let command = match *op {
            Op::Open { id, who } => Command::OpenSession {
                id: SessionId(id),
                secret_hash: secret(id),
                client: client(who),
            },
            Op::Checkout {
                session,
                count,
                wait,
                token,
            } => {
                self.next_lease += 1;
                Command::Checkout {
                    ask: Ask {
                        session: SessionId(session),
                        lease_id: LeaseId(self.next_lease),
                        feature: if token { "tok" } else { "cad" }.into(),
                        version: String::new(),
                        count,
                        client_ref: 0,
                    },
                    wait: if wait { Wait::Forever } else { Wait::No },
                }
            }
            Op::Checkin { session, pick } => {
                let held: Vec<LeaseId> = self
                    .ledger
                    .session_leases(SessionId(session))
                    .filter(|l| !l.detached())
                    .map(|l| l.id)
                    .collect();
                Command::Checkin {
                    session: SessionId(session),
                    lease_id: held.get(pick).copied().unwrap_or(LeaseId(u64::MAX)),
                }
            }
            Op::Borrow {
                session,
                count,
                minutes,
            } => {
                self.next_lease += 1;
                Command::Borrow {
                    ask: Ask {
                        session: SessionId(session),
                        lease_id: LeaseId(self.next_lease),
                        feature: "cad".into(),
                        version: String::new(),
                        count,
                        client_ref: 0,
                    },
                    duration: minutes * 60_000,
                }
            }
            Op::Return(session) => Command::Return {
                session: SessionId(session),
                feature: "cad".into(),
                lease_id: None,
            },
            Op::Close(id) => Command::CloseSession { id: SessionId(id) },
            Op::Disconnect(id) => Command::Disconnected { id: SessionId(id) },
            Op::Heartbeat(id) => Command::Heartbeat { id: SessionId(id) },
            Op::Remove { pick } => {
                let mut all: Vec<LeaseId> = self.ledger.leases().map(|l| l.id).collect();
                all.sort();
                Command::Remove {
                    lease_id: all.get(pick).copied().unwrap_or(LeaseId(u64::MAX)),
                }
            }
            Op::Advance(ms) => return self.advance(ms),
            Op::Restart => {
                let mut changes = Vec::new();
                self.ledger = self
                    .durable
                    .restore(self.catalog.clone(), self.now, &mut changes);
                return self.check(&changes, None);
            }
        };
        self.apply(command)
    }

    /// Moves time on by `ms`, applying an `Expire` at every deadline on the way (as the
    /// ledger task does) and at the end.
    fn advance(&mut self, ms: Millis) -> Result<(), String> {
        let target = self.now + ms;
        let mut expired_at = None;
        while let Some(at) = self.ledger.next_deadline().filter(|&at| at <= target) {
            // An `Expire` handles everything due by its moment: the next deadline is later.
            if at < self.now || expired_at == Some(at) {
                return Err(format!("deadline T0+{} already handled", at - T0));
            }
            self.now = at;
            self.apply(Command::Expire)?;
            expired_at = Some(at);
        }
        self.now = target;
        self.apply(Command::Expire)
    }

    fn apply(&mut self, command: Command) -> Result<(), String> {
        let before = self.in_use();
        let mut changes = Vec::new();
        let borrowed = match &command {
            Command::Remove { lease_id } => {
                self.ledger.lease(*lease_id).and_then(|l| l.borrowed_until)
            }
            _ => None,
        };
        let outcome = self.ledger.apply(self.now, command.clone(), &mut changes);
        if let Some(until) = borrowed
            && outcome != Err(usher_core::LedgerError::Borrowed { until })
        {
            return Err(format!(
                "{command:?}: removing a borrowed seat gave {outcome:?}"
            ));
        }
        if let (Command::Borrow { duration, .. }, Ok(Outcome::Granted(lease))) =
            (&command, &outcome)
        {
            let ok = lease.borrowed_until == Some(self.now + *duration)
                && *duration <= self.borrow
                && !lease.overdraft;
            if !ok {
                return Err(format!("{command:?}: granted {lease:?}"));
            }
        }
        let reused = changes.iter().any(|c| {
            matches!(
                c,
                Change::LeaseReleased {
                    reason: ReleaseReason::Reused,
                    ..
                }
            )
        });
        if reused {
            if !matches!(outcome, Ok(Outcome::Granted(_))) {
                return Err(format!("{command:?}: reuse without a grant: {outcome:?}"));
            }
            if self.in_use() > before {
                return Err(format!(
                    "{command:?}: a reuse raised the count from {before} to {}",
                    self.in_use()
                ));
            }
        }
        self.check(&changes, Some(&command))
    }

    fn in_use(&self) -> u32 {
        self.ledger.in_use(&key("cad", VENDOR, "2025"))
    }

    /// When seats given back at `now` go back.
    fn held_until(&self, lease: &Lease) -> Millis {
        (self.now + self.linger).max(lease.granted_at + self.min_checkout)
    }

    fn check(&mut self, changes: &[Change], command: Option<&Command>) -> Result<(), String> {
        let now = self.now;
        for change in changes {
            match change {
                Change::LeaseLingering(lease) => {
                    let expected = self.held_until(lease);
                    if expected <= now || lease.lingering_until != Some(expected) {
                        return Err(format!(
                            "{change:?}: expected to linger until T0+{}",
                            expected - T0
                        ));
                    }
                }
                Change::LeaseReleased { lease, reason } => match reason {
                    ReleaseReason::Checkin | ReleaseReason::SessionClosed
                        if self.held_until(lease) > now =>
                    {
                        return Err(format!("{change:?}: given back but should linger"));
                    }
                    ReleaseReason::LingerOver if lease.lingering_until != Some(now) => {
                        return Err(format!("{change:?}: released at T0+{}", now - T0));
                    }
                    ReleaseReason::Reused if lease.lingering_until.is_none() => {
                        return Err(format!("{change:?}: not lingering"));
                    }
                    ReleaseReason::Expired | ReleaseReason::Checkin
                        if lease.lingering_until.is_some() =>
                    {
                        return Err(format!("{change:?}: a lingering seat went back early"));
                    }
                    ReleaseReason::BorrowEnded if lease.borrowed_until != Some(now) => {
                        return Err(format!("{change:?}: borrow ended at T0+{}", now - T0));
                    }
                    ReleaseReason::Returned | ReleaseReason::BorrowEnded => {}
                    _ if lease.borrowed_until.is_some() => {
                        return Err(format!("{change:?}: a borrowed seat went back early"));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        self.durable
            .record(changes)
            .and_then(|()| self.durable.check_matches(&self.ledger))
            .map_err(|e| format!("after {command:?}: {e}"))?;
        let leases: Vec<&Lease> = self.ledger.leases().collect();
        let held: u32 = leases.iter().map(|l| l.count).sum();
        if self.in_use() != held || held > self.limit {
            return Err(format!(
                "in use {} for leases of {held} seats, limit {}: {leases:?}",
                self.in_use(),
                self.limit
            ));
        }
        let lingering_end = leases
            .iter()
            .filter_map(|l| l.lingering_until.or(l.borrowed_until))
            .min();
        if let Some(end) = lingering_end {
            if end <= now {
                return Err(format!(
                    "a linger that ended at T0+{} is still held",
                    end - T0
                ));
            }
            if self.ledger.next_deadline().is_none_or(|d| d > end) {
                return Err(format!(
                    "next deadline {:?} is after a linger's end T0+{}",
                    self.ledger.next_deadline(),
                    end - T0
                ));
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn lingering_seats_are_held_exactly_as_long_as_the_license_says(
        lines in lines(),
        ops in ops(),
    ) {
        let mut harness = Harness::new(&lines);
        if let Err(e) = harness.run(&ops) {
            prop_assert!(false, "{}", e);
        }
    }
}
