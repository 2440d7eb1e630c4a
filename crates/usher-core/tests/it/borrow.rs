//! BORROW=: seats held for offline use, and the policy's MAX_BORROW_HOURS and
//! BORROW_LOWWATER.

use usher_core::{
    Ask, Change, Command, Denial, Lease, LeaseId, Ledger, LedgerError, Outcome, Policy,
    ReleaseReason, SessionId,
};
use usher_license::Entitlement;

use crate::util::*;

const HOUR: u64 = 3_600_000;

fn borrowable(seats: u32, borrow: &str) -> Entitlement {
    let mut e = ent("cad", "2025", seats);
    e.attrs.push(("BORROW".into(), borrow.into()));
    e
}

fn borrow_cmd(session: SessionId, lease: u64, count: u32, duration: u64) -> Command {
    Command::Borrow {
        ask: Ask {
            session,
            lease_id: LeaseId(lease),
            feature: "cad".into(),
            version: String::new(),
            count,
            client_ref: lease,
        },
        duration,
    }
}

fn borrow(ledger: &mut Ledger, now: u64, session: SessionId, lease: u64, duration: u64) -> Lease {
    let (result, changes) = apply(ledger, now, borrow_cmd(session, lease, 1, duration));
    let Ok(Outcome::Granted(lease)) = result else {
        panic!("expected a borrow, got {result:?}");
    };
    assert_eq!(changes, vec![Change::LeaseGranted(lease.clone())]);
    lease
}

fn refused(ledger: &mut Ledger, now: u64, cmd: Command) -> Denial {
    let (result, changes) = apply(ledger, now, cmd);
    assert!(changes.is_empty(), "{changes:?}");
    match result {
        Ok(Outcome::Denied(denial)) => denial,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn in_use(ledger: &Ledger) -> u32 {
    ledger.in_use(&key("cad", VENDOR, "2025"))
}

fn policy(text: &str) -> Policy {
    Policy::parse("opts", text).unwrap()
}

#[test]
fn a_borrowed_seat_outlives_its_session_and_comes_back_when_the_borrow_ends() {
    let mut ledger = ledger(&[borrowable(1, "")]);
    let a = session(&mut ledger, 1, T0);
    let lease = borrow(&mut ledger, T0, a, 10, 24 * HOUR);
    assert_eq!(lease.borrowed_until, Some(T0 + 24 * HOUR));
    assert!(lease.detached());
    // The borrowing command says goodbye; the seat stays held, the session departs.
    let (_, changes) = apply(&mut ledger, T0 + 1_000, Command::CloseSession { id: a });
    assert!(changes.is_empty(), "nothing released: {changes:?}");
    assert!(ledger.session(a).is_none());
    assert!(ledger.holder(a).is_some(), "the borrower is still named");
    assert_eq!(in_use(&ledger), 1);
    let b = session(&mut ledger, 2, T0 + 2_000);
    let denial = refused(&mut ledger, T0 + 2_000, checkout_cmd(b, 20, "cad", "", 1));
    assert!(matches!(denial, Denial::AllInUse { .. }), "{denial:?}");
    assert_eq!(ledger.next_deadline(), Some(T0 + 2_000 + TTL));
    let (_, changes) = apply(&mut ledger, T0 + HOUR, Command::Expire);
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, Change::LeaseReleased { .. })),
        "a lapse does not end a borrow: {changes:?}"
    );
    assert_eq!(ledger.next_deadline(), Some(T0 + 24 * HOUR));
    let (_, changes) = apply(&mut ledger, T0 + 24 * HOUR, Command::Expire);
    assert_eq!(
        changes,
        vec![
            Change::LeaseReleased {
                lease,
                reason: ReleaseReason::BorrowEnded,
            },
            Change::SessionClosed(a),
        ]
    );
    assert_eq!(in_use(&ledger), 0);
}

#[test]
fn only_licenses_that_say_borrow_lend_and_for_no_longer_than_they_say() {
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    let a = session(&mut ledger, 1, T0);
    let denial = refused(&mut ledger, T0, borrow_cmd(a, 10, 1, HOUR));
    assert_eq!(denial, Denial::NotBorrowable);

    // A bare BORROW lends for a week; BORROW=n for n hours.
    for (attr, max) in [("", 168 * HOUR), ("24", 24 * HOUR)] {
        let mut ledger = ledger_with(&[borrowable(2, attr)]);
        let a = session(&mut ledger, 1, T0);
        let denial = refused(&mut ledger, T0, borrow_cmd(a, 10, 1, max + 1));
        assert_eq!(denial, Denial::BorrowTooLong { max }, "BORROW={attr}");
        borrow(&mut ledger, T0, a, 11, max);
    }
}

/// [`ledger`], under another name where a local shadows it.
fn ledger_with(ents: &[Entitlement]) -> Ledger {
    ledger(ents)
}

#[test]
fn a_borrow_of_a_newer_version_comes_from_a_pool_that_lends() {
    // The 2025 pool does not lend, the 2026 one does: a borrow of any version takes 2026.
    let mut e = ent("cad", "2026", 1);
    e.attrs.push(("BORROW".into(), "48".into()));
    let mut ledger = ledger(&[ent("cad", "2025", 1), e]);
    let a = session(&mut ledger, 1, T0);
    let lease = borrow(&mut ledger, T0, a, 10, HOUR);
    assert_eq!(lease.pool_version, "2026");
}

#[test]
fn the_policy_can_shorten_borrows_but_not_lengthen_them() {
    let mut ledger = ledger(&[borrowable(3, "24")]);
    ledger.set_policy(policy("MAX_BORROW_HOURS cad 2\n"));
    let a = session(&mut ledger, 1, T0);
    let denial = refused(&mut ledger, T0, borrow_cmd(a, 10, 1, 3 * HOUR));
    assert_eq!(denial, Denial::BorrowTooLong { max: 2 * HOUR });
    borrow(&mut ledger, T0, a, 11, 2 * HOUR);

    ledger.set_policy(policy("MAX_BORROW_HOURS cad 500\n"));
    let denial = refused(&mut ledger, T0, borrow_cmd(a, 12, 1, 25 * HOUR));
    assert_eq!(denial, Denial::BorrowTooLong { max: 24 * HOUR });
}

#[test]
fn borrow_lowwater_keeps_seats_for_the_network() {
    let mut ledger = ledger(&[borrowable(3, "")]);
    ledger.set_policy(policy("BORROW_LOWWATER cad 1\n"));
    let a = session(&mut ledger, 1, T0);
    borrow(&mut ledger, T0, a, 10, HOUR);
    borrow(&mut ledger, T0, a, 11, HOUR);
    let denial = refused(&mut ledger, T0, borrow_cmd(a, 12, 1, HOUR));
    assert_eq!(denial, Denial::BorrowLowWater { keep: 1 });
    // The kept seat is there for an ordinary checkout.
    grant(&mut ledger, T0, a, 13, "cad", "", 1);
}

#[test]
fn borrows_obey_the_policy_and_the_queue() {
    let mut ledger = ledger(&[borrowable(1, "")]);
    ledger.set_policy(policy("EXCLUDE cad USER user1\n"));
    let a = session(&mut ledger, 1, T0);
    let denial = refused(&mut ledger, T0, borrow_cmd(a, 10, 1, HOUR));
    assert_eq!(denial, Denial::Excluded);

    let mut ledger = ledger_with(&[borrowable(1, "")]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    let c = session(&mut ledger, 3, T0);
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    let (result, _) = apply(&mut ledger, T0, waiting_cmd(b, 20, "cad", 1, 7));
    assert!(matches!(result, Ok(Outcome::Queued { .. })), "{result:?}");
    let (result, changes) = apply(&mut ledger, T0, checkin_cmd(a, 10));
    assert!(matches!(result, Ok(Outcome::Released(_))));
    assert!(
        changes
            .iter()
            .any(|ch| matches!(ch, Change::LeaseGranted(l) if l.id == LeaseId(20))),
        "the waiting checkout got the seat, not a later borrow"
    );
    let denial = refused(&mut ledger, T0, borrow_cmd(c, 30, 1, HOUR));
    assert!(matches!(denial, Denial::AllInUse { .. }), "{denial:?}");
}

#[test]
fn overdraft_seats_are_never_lent() {
    let mut e = borrowable(1, "");
    e.attrs.push(("OVERDRAFT".into(), "2".into()));
    let mut ledger = ledger(&[e]);
    let a = session(&mut ledger, 1, T0);
    borrow(&mut ledger, T0, a, 10, HOUR);
    let denial = refused(&mut ledger, T0, borrow_cmd(a, 11, 1, HOUR));
    assert!(matches!(denial, Denial::AllInUse { .. }), "{denial:?}");
    let overdraft = grant(&mut ledger, T0, a, 12, "cad", "", 1);
    assert!(overdraft.overdraft, "checkouts may still overdraw");
}

#[test]
fn a_borrow_ends_no_later_than_its_license() {
    let mut ledger = ledger(&[expiring(borrowable(1, ""), 0)]);
    let a = session(&mut ledger, 1, T0);
    let lease = borrow(&mut ledger, T0, a, 10, 100 * HOUR);
    assert_eq!(lease.borrowed_until, Some(day_ms(1)), "the license's end");
}

/// A borrow's end is the ledger's time when it applies the borrow plus the duration
/// asked, however far that time has come (as when it is ahead of the caller's clock), and
/// the license's limit bounds the duration alone.
#[test]
fn a_borrow_lasts_its_duration_from_the_ledgers_time() {
    let later = T0 + 30 * 24 * HOUR;
    let mut ledger = ledger(&[borrowable(2, "24")]);
    let a = session(&mut ledger, 1, later);
    let lease = borrow(&mut ledger, later, a, 10, 2 * HOUR);
    assert_eq!(
        (lease.granted_at, lease.borrowed_until),
        (later, Some(later + 2 * HOUR))
    );
    let denial = refused(&mut ledger, later, borrow_cmd(a, 11, 1, 24 * HOUR + 1));
    assert_eq!(denial, Denial::BorrowTooLong { max: 24 * HOUR });
    let denial = refused(&mut ledger, later, borrow_cmd(a, 12, 1, 0));
    assert!(
        matches!(denial, Denial::BadRequest(_)),
        "a borrow of no time: {denial:?}"
    );
}

#[test]
fn a_retried_borrow_returns_the_same_lease() {
    let mut ledger = ledger(&[borrowable(2, "")]);
    let a = session(&mut ledger, 1, T0);
    let lease = borrow(&mut ledger, T0, a, 10, HOUR);
    let retry = Command::Borrow {
        ask: Ask {
            session: a,
            lease_id: LeaseId(11),
            feature: "cad".into(),
            version: String::new(),
            count: 1,
            client_ref: 10,
        },
        duration: 2 * HOUR,
    };
    let (result, changes) = apply(&mut ledger, T0 + 5, retry);
    assert_eq!(result, Ok(Outcome::Granted(lease)));
    assert!(changes.is_empty());
    assert_eq!(in_use(&ledger), 1);
}

#[test]
fn the_borrower_returns_early_from_another_session_and_nobody_else_can() {
    let mut ledger = ledger(&[borrowable(1, "")]);
    let a = session(&mut ledger, 1, T0);
    let lease = borrow(&mut ledger, T0, a, 10, 24 * HOUR);
    let (result, _) = apply(&mut ledger, T0, Command::CloseSession { id: a });
    assert_eq!(result, Ok(Outcome::Done));
    let return_cmd = |session, lease_id| Command::Return {
        session,
        feature: "cad".into(),
        lease_id,
    };
    // Someone else (another user on another host) cannot return it.
    let other = session(&mut ledger, 2, T0 + HOUR);
    let (result, changes) = apply(&mut ledger, T0 + HOUR, return_cmd(other, None));
    assert_eq!((result, changes), (Ok(Outcome::NotHeld), vec![]));
    // The borrower, back on the network in a new session, can; by handle or by feature.
    let mut back = open_cmd(3);
    if let Command::OpenSession { client: c, .. } = &mut back {
        *c = client(1);
    }
    let (result, _) = apply(&mut ledger, T0 + HOUR, back);
    assert_eq!(result, Ok(Outcome::Done));
    let (result, _) = apply(
        &mut ledger,
        T0 + HOUR,
        return_cmd(SessionId(3), Some(LeaseId(99))),
    );
    assert_eq!(result, Ok(Outcome::NotHeld), "no borrow with that handle");
    let (result, changes) = apply(&mut ledger, T0 + HOUR, return_cmd(SessionId(3), None));
    assert_eq!(result, Ok(Outcome::Released(lease.clone())));
    assert_eq!(
        changes,
        vec![
            Change::LeaseReleased {
                lease,
                reason: ReleaseReason::Returned,
            },
            Change::SessionClosed(a),
        ]
    );
    assert_eq!(in_use(&ledger), 0);
}

#[test]
fn a_borrowed_seat_cannot_be_removed_or_checked_in() {
    let mut ledger = ledger(&[borrowable(1, "")]);
    let a = session(&mut ledger, 1, T0);
    borrow(&mut ledger, T0, a, 10, 24 * HOUR);
    let (result, _) = apply(
        &mut ledger,
        T0 + HOUR,
        Command::Remove {
            lease_id: LeaseId(10),
        },
    );
    assert_eq!(
        result,
        Err(LedgerError::Borrowed {
            until: T0 + 24 * HOUR
        })
    );
    let (result, _) = apply(&mut ledger, T0 + HOUR, checkin_cmd(a, 10));
    assert_eq!(result, Ok(Outcome::NotHeld));
    assert_eq!(in_use(&ledger), 1);
}

#[test]
fn a_borrow_survives_a_restart_to_the_millisecond() {
    let mut ledger = ledger(&[borrowable(1, "")]);
    let mut durable = Durable::default();
    let a = session(&mut ledger, 1, T0);
    durable
        .record(&[Change::SessionOpened(ledger.session(a).unwrap().clone())])
        .unwrap();
    let lease = borrow(&mut ledger, T0, a, 10, 24 * HOUR);
    durable
        .record(&[Change::LeaseGranted(lease.clone())])
        .unwrap();
    let (_, changes) = apply(&mut ledger, T0, Command::CloseSession { id: a });
    durable.record(&changes).unwrap();

    let mut changes = Vec::new();
    let mut restored = durable.restore(catalog(&[borrowable(1, "")]), T0 + HOUR, &mut changes);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(restored.lease(LeaseId(10)), Some(&lease));
    assert!(restored.session(a).is_none(), "departed: not resumable");
    let (result, _) = apply(
        &mut restored,
        T0 + HOUR,
        Command::Resume {
            id: a,
            secret_hash: secret(1),
            address: String::new(),
        },
    );
    assert_eq!(result, Err(LedgerError::UnknownSession));
    let (_, changes) = apply(&mut restored, T0 + 24 * HOUR, Command::Expire);
    assert!(changes.contains(&Change::LeaseReleased {
        lease,
        reason: ReleaseReason::BorrowEnded,
    }));
}
