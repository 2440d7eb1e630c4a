//! LINGER= and MIN_CHECKOUT=: seats stay held after they are given back.

use usher_core::{
    Change, Command, Denial, DequeueReason, Lease, LeaseId, Ledger, LedgerError, Outcome, Policy,
    ReleaseReason, SessionId,
};

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
    let soon = catalog(&[with(1, &[("LINGER", "soon")])]);
    assert_eq!(soon.pool(&key("cad", VENDOR, "2025")).unwrap().linger, 0);
}

#[test]
fn a_lapsed_linger_serves_the_queue() {
    let mut ledger = ledger(&[with(1, &[("LINGER", "60")])]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    checkin(&mut ledger, T0, a, 10);
    let (result, _) = apply(&mut ledger, T0 + 1_000, waiting_cmd(b, 20, "cad", 1, 7));
    assert!(matches!(result, Ok(Outcome::Queued { .. })), "{result:?}");
    let (result, _) = apply(&mut ledger, T0 + 30_000, Command::Heartbeat { id: b });
    assert_eq!(result, Ok(Outcome::Done));
    // Nothing is due before the linger ends.
    let (_, changes) = apply(&mut ledger, T0 + 59_999, Command::Expire);
    assert_eq!(changes, vec![], "too early");
    let (_, changes) = apply(&mut ledger, T0 + 60_000, Command::Expire);
    assert!(
        matches!(
            &changes[..],
            [
                Change::LeaseReleased {
                    reason: ReleaseReason::LingerOver,
                    ..
                },
                Change::Dequeued {
                    reason: DequeueReason::Granted(_),
                    ..
                },
                Change::LeaseGranted(Lease {
                    id: LeaseId(20),
                    ..
                }),
            ]
        ),
        "{changes:?}"
    );
    assert_eq!(in_use(&ledger), 1);
}

#[test]
fn malformed_hold_values_count_as_zero() {
    for attr in ["LINGER", "MIN_CHECKOUT"] {
        for value in [
            "soon",
            "-1",
            "1.5",
            "+5",
            "1e3",
            "",
            "31622401",
            "99999999999999999999",
        ] {
            let ents = [with(1, &[(attr, value)])];
            // Reported where the file is parsed (usher_license::attribute_value).
            assert!(
                usher_license::attribute_value(attr, value).is_err(),
                "{attr}={value:?}"
            );
            let mut ledger = ledger(&ents);
            let a = session(&mut ledger, 1, T0);
            grant(&mut ledger, T0, a, 10, "cad", "", 1);
            let changes = checkin(&mut ledger, T0 + 1_000, a, 10);
            assert!(
                matches!(
                    &changes[..],
                    [Change::LeaseReleased {
                        reason: ReleaseReason::Checkin,
                        ..
                    }]
                ),
                "{attr}={value:?} holds nothing: {changes:?}"
            );
        }
    }
    // The largest value allowed, and the largest of disagreeing lines, are served.
    let ents = [
        with(1, &[("LINGER", "31622400")]),
        with(1, &[("LINGER", "5"), ("MIN_CHECKOUT", "0")]),
    ];
    assert_eq!(catalog(&ents).problems(), &[] as &[String]);
    let pool = catalog(&ents)
        .pool(&key("cad", VENDOR, "2025"))
        .cloned()
        .unwrap();
    assert_eq!(pool.linger, 31_622_400_000);
    assert_eq!(pool.min_checkout, 0);
}

/// A checkout that could take over lingering seats gets them only if it would be granted
/// from their pool had they been free: reuse skips the queue, never a rule.
#[test]
fn reuse_is_refused_whenever_an_ordinary_grant_would_be() {
    enum Then {
        Nothing,
        Policy(&'static str),
        Licenses(Vec<usher_license::Entitlement>),
    }
    /// Name, what changes after the linger starts, seats and version asked for, outcome.
    type Case = (&'static str, Then, u32, &'static str, Result<(), Denial>);
    let cases: Vec<Case> = vec![
        ("plain reuse", Then::Nothing, 1, "", Ok(())),
        (
            "another version of the same pool",
            Then::Nothing,
            1,
            "2024",
            Ok(()),
        ),
        ("fewer seats", Then::Nothing, 1, "", Ok(())),
        (
            "no seats",
            Then::Nothing,
            0,
            "",
            Err(Denial::BadRequest(
                "seat count must be between 1 and 1000000, not 0".into(),
            )),
        ),
        (
            "a version the pool does not offer",
            Then::Nothing,
            1,
            "2026",
            Err(Denial::VersionTooNew {
                highest: "2025".into(),
            }),
        ),
        (
            "more seats than linger",
            Then::Nothing,
            3,
            "",
            Err(Denial::MoreThanLicensed {
                asked: 3,
                licensed: 2,
            }),
        ),
        (
            "the user is now excluded",
            Then::Policy("EXCLUDE cad USER user1\n"),
            1,
            "",
            Err(Denial::Excluded),
        ),
        (
            "the feature left the licenses",
            Then::Licenses(vec![ent("sim", "2025", 1)]),
            1,
            "",
            Err(Denial::UnknownFeature),
        ),
    ];
    for (name, then, count, version, expected) in cases {
        let mut ledger = ledger(&[with(2, &[("LINGER", "600")])]);
        let a = session(&mut ledger, 1, T0);
        grant(&mut ledger, T0, a, 10, "cad", "", 2);
        checkin(&mut ledger, T0, a, 10);
        let lingering = ledger.lease(LeaseId(10)).cloned().unwrap();
        match then {
            Then::Nothing => {}
            Then::Policy(text) => ledger.set_policy(Policy::parse("opts", text).unwrap()),
            Then::Licenses(ents) => ledger.set_catalog(catalog(&ents)),
        }
        let (result, changes) = apply(
            &mut ledger,
            T0 + 1_000,
            checkout_cmd(a, 11, "cad", version, count),
        );
        match expected {
            Ok(()) => {
                assert!(
                    matches!(result, Ok(Outcome::Granted(_))),
                    "{name}: {result:?}"
                );
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
                    "{name}: {changes:?}"
                );
                assert_eq!(in_use(&ledger), count, "{name}");
            }
            Err(denial) => {
                assert_eq!(result, Ok(Outcome::Denied(denial)), "{name}");
                assert_eq!(changes, vec![], "{name}");
                assert_eq!(
                    ledger.lease(LeaseId(10)),
                    Some(&lingering),
                    "{name}: the linger is untouched"
                );
            }
        }
    }
}

#[test]
fn a_restart_keeps_a_departed_session_departed_until_its_last_linger_ends() {
    let mut ledger = ledger(&[with(2, &[("LINGER", "60")])]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    grant(&mut ledger, T0, b, 20, "cad", "", 1);
    let (result, _) = apply(&mut ledger, T0 + 1_000, Command::CloseSession { id: a });
    assert_eq!(result, Ok(Outcome::Done));
    let mut released = Vec::new();
    let mut restored = Ledger::restore(
        ledger.catalog().clone(),
        CONFIG,
        ledger.sessions().chain(ledger.departed_sessions()).cloned(),
        ledger.leases().cloned(),
        T0 + 2_000,
        &mut released,
    );
    assert_eq!(released, vec![]);
    assert!(restored.session(a).is_none(), "a departed: not live");
    assert!(
        restored.holder(a).is_some(),
        "but still named as the holder"
    );
    assert!(restored.session(b).is_some(), "b holds a seat: live");
    assert_eq!(in_use(&restored), 2);
    let (result, _) = apply(
        &mut restored,
        T0 + 3_000,
        Command::Resume {
            id: a,
            secret_hash: secret(1),
            address: "10.0.0.1:1".into(),
        },
    );
    assert_eq!(result, Err(LedgerError::UnknownSession));
    assert_eq!(restored.next_deadline(), Some(T0 + 61_000));
    let (_, changes) = apply(&mut restored, T0 + 61_000, Command::Expire);
    assert!(
        matches!(
            &changes[..],
            [
                Change::LeaseReleased {
                    reason: ReleaseReason::LingerOver,
                    ..
                },
                Change::SessionClosed(id),
            ] if *id == a
        ),
        "{changes:?}"
    );
}

/// Lingering seats are still their user's: a `MAX` counts them even after the session
/// that gave them back has departed.
#[test]
fn lingering_seats_count_against_their_users_max() {
    let mut ledger = ledger(&[with(3, &[("LINGER", "600")])]);
    ledger.set_policy(Policy::parse("opts", "MAX 1 cad USER shared\n").unwrap());
    let open = |ledger: &mut Ledger, id: u64, host: &str| {
        let mut who = client(id);
        who.user = "shared".into();
        who.host = host.into();
        let (result, _) = apply(
            ledger,
            T0,
            Command::OpenSession {
                id: SessionId(id),
                secret_hash: secret(id),
                client: who,
            },
        );
        assert_eq!(result, Ok(Outcome::Done));
        SessionId(id)
    };
    let a = open(&mut ledger, 1, "ws1");
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    let (result, _) = apply(&mut ledger, T0, Command::CloseSession { id: a });
    assert_eq!(result, Ok(Outcome::Done));
    // The same user on another host cannot take the seat over, and is at the MAX.
    let b = open(&mut ledger, 2, "ws2");
    let (result, _) = apply(&mut ledger, T0, checkout_cmd(b, 20, "cad", "", 1));
    assert!(
        matches!(result, Ok(Outcome::Denied(Denial::MaxReached { .. }))),
        "{result:?}"
    );
    // On the same host, the seat is taken over: still within the MAX.
    let c = open(&mut ledger, 3, "ws1");
    grant_reused(&mut ledger, c, 30);
}

fn grant_reused(ledger: &mut Ledger, session: SessionId, lease: u64) {
    let (result, changes) = apply(ledger, T0, checkout_cmd(session, lease, "cad", "", 1));
    assert!(matches!(result, Ok(Outcome::Granted(_))), "{result:?}");
    assert!(
        changes.iter().any(|c| matches!(
            c,
            Change::LeaseReleased {
                reason: ReleaseReason::Reused,
                ..
            }
        )),
        "{changes:?}"
    );
}
