//! LINGER= and MIN_CHECKOUT=: seats stay held after they are given back.

use usher_core::{Change, Command, LeaseId, Ledger, Outcome, Policy, ReleaseReason, SessionId};

use crate::util::*;

fn with(seats: u32, attrs: &[(&str, &str)]) -> usher_license::Entitlement {
    let mut e = ent("cad", "2025", seats);
    for (k, v) in attrs {
        e.attrs.push(((*k).into(), (*v).into()));
    }
    e
}

fn checkin(ledger: &mut Ledger, now: u64, session: SessionId, lease: u64) -> Vec<Change> {
    let (result, changes) = apply(
        ledger,
        now,
        Command::Checkin {
            session,
            lease_id: LeaseId(lease),
        },
    );
    assert!(matches!(result, Ok(Outcome::Released(_))), "{result:?}");
    changes
}

fn in_use(ledger: &Ledger) -> u32 {
    ledger.in_use(&key("cad", VENDOR, "2025"))
}

#[test]
fn a_checked_in_seat_lingers_then_goes_back() {
    let mut ledger = ledger(&[with(1, &[("LINGER", "60")])]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    let changes = checkin(&mut ledger, T0 + 1_000, a, 10);
    let lingering = ledger.lease(LeaseId(10)).unwrap().clone();
    assert_eq!(lingering.lingering_until, Some(T0 + 61_000));
    assert_eq!(changes, vec![Change::LeaseLingering(lingering)]);
    assert_eq!(in_use(&ledger), 1, "the seat is still held");
    assert_eq!(ledger.next_deadline(), Some(T0 + 61_000));
    let (result, _) = apply(&mut ledger, T0 + 2_000, checkout_cmd(b, 20, "cad", "", 1));
    assert!(matches!(result, Ok(Outcome::Denied(_))), "{result:?}");
    // Checking it in again, or resuming, does not give it back to the client.
    let (result, _) = apply(
        &mut ledger,
        T0 + 2_000,
        Command::Checkin {
            session: a,
            lease_id: LeaseId(10),
        },
    );
    assert_eq!(result, Ok(Outcome::NotHeld));
    let (_, changes) = apply(&mut ledger, T0 + 61_000, Command::Expire);
    assert!(
        matches!(
            &changes[..],
            [Change::LeaseReleased {
                reason: ReleaseReason::LingerOver,
                ..
            }]
        ),
        "{changes:?}"
    );
    assert_eq!(in_use(&ledger), 0);
    grant(&mut ledger, T0 + 61_000, b, 21, "cad", "", 1);
}

#[test]
fn min_checkout_holds_from_the_grant_and_the_longer_hold_wins() {
    // (LINGER, MIN_CHECKOUT, checked in after, held until after the grant)
    let cases = [
        ("0", "300", 10, 300),
        ("60", "300", 10, 300),
        ("60", "30", 10, 70),
        ("0", "30", 40, 0),
    ];
    for (linger, min, after, until) in cases {
        let mut ledger = ledger(&[with(1, &[("LINGER", linger), ("MIN_CHECKOUT", min)])]);
        let a = session(&mut ledger, 1, T0);
        grant(&mut ledger, T0, a, 10, "cad", "", 1);
        checkin(&mut ledger, T0 + after * 1000, a, 10);
        let held = ledger.lease(LeaseId(10)).and_then(|l| l.lingering_until);
        let expected = (until > 0).then_some(T0 + until * 1000);
        assert_eq!(
            held, expected,
            "LINGER={linger} MIN_CHECKOUT={min} after {after}s"
        );
    }
}

#[test]
fn the_same_user_and_host_take_their_lingering_seat_back_and_others_do_not() {
    let mut ledger = ledger(&[with(1, &[("LINGER", "600")])]);
    let a = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    checkin(&mut ledger, T0 + 1_000, a, 10);
    // Another user is refused: the seat is still held.
    let other = session(&mut ledger, 2, T0);
    let (result, _) = apply(
        &mut ledger,
        T0 + 2_000,
        checkout_cmd(other, 20, "cad", "", 1),
    );
    assert!(matches!(result, Ok(Outcome::Denied(_))), "{result:?}");
    // The same client identity (a new run of the program: new session) takes it over.
    let (result, _) = apply(
        &mut ledger,
        T0 + 3_000,
        Command::OpenSession {
            id: SessionId(3),
            secret_hash: secret(3),
            client: client(1),
        },
    );
    assert_eq!(result, Ok(Outcome::Done));
    let (result, changes) = apply(
        &mut ledger,
        T0 + 3_000,
        checkout_cmd(SessionId(3), 30, "cad", "", 1),
    );
    assert!(matches!(result, Ok(Outcome::Granted(_))), "{result:?}");
    assert!(
        matches!(
            &changes[..],
            [
                Change::LeaseReleased {
                    reason: ReleaseReason::Reused,
                    ..
                },
                Change::LeaseGranted(_)
            ]
        ),
        "{changes:?}"
    );
    assert_eq!(in_use(&ledger), 1);
}

#[test]
fn a_goodbye_lingers_but_a_crash_or_a_removal_gives_the_seat_back_at_once() {
    let mut ledger = ledger(&[with(3, &[("LINGER", "600")])]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    grant(&mut ledger, T0, b, 20, "cad", "", 1);
    grant(&mut ledger, T0, b, 21, "cad", "", 1);
    // a says goodbye: its seat lingers, and the session departs rather than closing.
    let (_, changes) = apply(&mut ledger, T0, Command::CloseSession { id: a });
    assert!(
        matches!(&changes[..], [Change::LeaseLingering(_)]),
        "{changes:?}"
    );
    assert!(ledger.session(a).is_none());
    assert!(
        ledger.holder(a).is_some(),
        "departed, still naming the holder"
    );
    // b's session lapses (its client died): seats back at once.
    let (_, changes) = apply(&mut ledger, T0 + TTL, Command::Expire);
    let reasons: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            Change::LeaseReleased { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![ReleaseReason::Expired, ReleaseReason::Expired]
    );
    assert!(changes.contains(&Change::SessionClosed(b)));
    // The departed session closes with its last lingering seat.
    let (_, changes) = apply(&mut ledger, T0 + 600_000, Command::Expire);
    assert_eq!(
        changes.last(),
        Some(&Change::SessionClosed(a)),
        "{changes:?}"
    );
    assert_eq!(in_use(&ledger), 0);
}

#[test]
fn a_restart_keeps_the_linger_and_policy_can_only_lengthen_it() {
    let mut ledger = ledger(&[with(1, &[("LINGER", "60")])]);
    ledger.set_policy(Policy::parse("opts", "LINGER cad 30\n").unwrap());
    let a = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    checkin(&mut ledger, T0, a, 10);
    assert_eq!(
        ledger.lease(LeaseId(10)).unwrap().lingering_until,
        Some(T0 + 60_000),
        "policy cannot shorten"
    );
    let mut orphans = Vec::new();
    let restored = Ledger::restore(
        ledger.catalog().clone(),
        CONFIG,
        ledger.sessions().cloned(),
        ledger.leases().cloned(),
        T0 + 1,
        &mut orphans,
    );
    assert_eq!(
        restored.lease(LeaseId(10)).unwrap().lingering_until,
        Some(T0 + 60_000)
    );
    assert_eq!(restored.next_deadline(), Some(T0 + 60_000));

    let mut longer = crate::util::ledger(&[with(1, &[("LINGER", "60")])]);
    longer.set_policy(Policy::parse("opts", "LINGER cad 600\n").unwrap());
    let a = session(&mut longer, 1, T0);
    grant(&mut longer, T0, a, 10, "cad", "", 1);
    checkin(&mut longer, T0, a, 10);
    assert_eq!(
        longer.lease(LeaseId(10)).unwrap().lingering_until,
        Some(T0 + 600_000)
    );
    assert_eq!(
        catalog(&[with(1, &[("LINGER", "soon")])]).problems().len(),
        1
    );
}
