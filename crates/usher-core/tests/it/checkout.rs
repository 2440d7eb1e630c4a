//! Checkout and checkin: which pool serves a request, when it is refused, and what changes
//! each records.

use usher_core::{
    Change, Denial, LeaseId, Ledger, LedgerError, Millis, Outcome, PoolKey, ReleaseReason,
    SessionId,
};
use usher_license::Entitlement;

use crate::util::{
    DAY, T0, VENDOR, apply, checkin_cmd, checkout_cmd, checkout_ref_cmd, day_ms, ent, expiring,
    from_vendor, grant, increment, key, ledger, pool_of, session, snapshot, starting, uncounted,
};

/// What a table case expects of its request.
#[derive(Debug)]
enum Expect {
    /// Granted from the pool of this vendor and version.
    Granted {
        vendor: &'static str,
        pool_version: &'static str,
    },
    /// Refused with exactly this denial.
    Denied(Denial),
    /// Refused as malformed (the message is free text).
    BadRequest,
}

/// One checkout scenario.
struct Case {
    name: &'static str,
    /// The license.
    ents: Vec<Entitlement>,
    /// Checkouts made first (feature, version, count), each of which must be granted.
    held: Vec<(&'static str, &'static str, u32)>,
    /// When everything happens.
    at: Millis,
    /// The request under test: feature, version, count.
    request: (&'static str, &'static str, u32),
    expect: Expect,
}

fn granted(vendor: &'static str, pool_version: &'static str) -> Expect {
    Expect::Granted {
        vendor,
        pool_version,
    }
}

fn all_in_use(in_use: u32, total: u32) -> Expect {
    Expect::Denied(Denial::AllInUse { in_use, total })
}

#[rustfmt::skip] // One case per line reads as a table.
fn cases() -> Vec<Case> {
    let noon = T0 + DAY / 2;
    let c = |name, ents, held, request, expect| Case { name, ents, held, at: noon, request, expect };
    vec![
        c("first seat", vec![ent("cad", "2025", 2)], vec![], ("cad", "2025", 1), granted(VENDOR, "2025")),
        c("every seat at once", vec![ent("cad", "2025", 2)], vec![], ("cad", "2025", 2), granted(VENDOR, "2025")),
        c("last seat", vec![ent("cad", "2025", 2)], vec![("cad", "2025", 1)], ("cad", "2025", 1), granted(VENDOR, "2025")),
        c("all seats taken", vec![ent("cad", "2025", 2)], vec![("cad", "2025", 2)], ("cad", "2025", 1), all_in_use(2, 2)),
        c("more seats than are free", vec![ent("cad", "2025", 2)], vec![("cad", "2025", 1)], ("cad", "2025", 2), all_in_use(1, 2)),
        c("more seats than the pool has", vec![ent("cad", "2025", 2)], vec![], ("cad", "2025", 3), Expect::Denied(Denial::MoreThanLicensed { asked: 3, licensed: 2 })),
        c("zero-seat license", vec![ent("cad", "2025", 0)], vec![], ("cad", "2025", 1), all_in_use(0, 0)),
        c("unknown feature", vec![ent("cad", "2025", 2)], vec![], ("sim", "2025", 1), Expect::Denied(Denial::UnknownFeature)),
        c("other feature's seats do not count", vec![ent("cad", "2025", 1), ent("sim", "2025", 5)], vec![("cad", "2025", 1)], ("cad", "2025", 1), all_in_use(1, 1)),
        c("uncounted lines are not served", vec![uncounted("cad", "2025")], vec![], ("cad", "2025", 1), Expect::Denied(Denial::UnknownFeature)),
        c("uncounted line beside a counted one", vec![uncounted("cad", "2026"), ent("cad", "2025", 1)], vec![], ("cad", "2025", 1), granted(VENDOR, "2025")),
        // Versions.
        c("version too new", vec![ent("cad", "2025", 2)], vec![], ("cad", "2026", 1), Expect::Denied(Denial::VersionTooNew { highest: "2025".into() })),
        c("2025.9 license refuses 2025.10", vec![ent("cad", "2024", 1), ent("cad", "2025.9", 1)], vec![], ("cad", "2025.10", 1), Expect::Denied(Denial::VersionTooNew { highest: "2025.9".into() })),
        c("2025.10 license serves 2025.9", vec![ent("cad", "2025.10", 1)], vec![], ("cad", "2025.9", 1), granted(VENDOR, "2025.10")),
        c("10 is newer than 9", vec![ent("cad", "10", 1)], vec![], ("cad", "9", 1), granted(VENDOR, "10")),
        c("1.10 is newer than 1.2", vec![ent("cad", "1.10", 1)], vec![], ("cad", "1.2", 1), granted(VENDOR, "1.10")),
        c("newer license serves older request", vec![ent("cad", "2026", 1)], vec![], ("cad", "2025.3", 1), granted(VENDOR, "2026")),
        c("missing component counts as zero", vec![ent("cad", "2025", 1)], vec![], ("cad", "2025.0.0", 1), granted(VENDOR, "2025")),
        c("extra component is newer", vec![ent("cad", "2025", 1)], vec![], ("cad", "2025.0.1", 1), Expect::Denied(Denial::VersionTooNew { highest: "2025".into() })),
        c("leading zeros are numeric", vec![ent("cad", "2025.10", 1)], vec![], ("cad", "2025.010", 1), granted(VENDOR, "2025.10")),
        c("empty version takes the lowest pool", vec![ent("cad", "2026", 1), ent("cad", "2024", 1)], vec![], ("cad", "", 1), granted(VENDOR, "2024")),
        c("lowest sufficient pool first", vec![ent("cad", "2026", 1), ent("cad", "2024", 1), ent("cad", "2025", 1)], vec![], ("cad", "2025", 1), granted(VENDOR, "2025")),
        c("lowest sufficient pool first, numerically", vec![ent("cad", "2025.10", 1), ent("cad", "2025.9", 1)], vec![], ("cad", "2025.1", 1), granted(VENDOR, "2025.9")),
        c("next version when the lowest is full", vec![ent("cad", "2025", 1), ent("cad", "2026", 1)], vec![("cad", "2025", 1)], ("cad", "2025", 1), granted(VENDOR, "2026")),
        c("next version when the lowest lacks room", vec![ent("cad", "2025", 2), ent("cad", "2026", 3)], vec![("cad", "2025", 1)], ("cad", "2025", 2), granted(VENDOR, "2026")),
        c("older pools never serve newer requests", vec![ent("cad", "2024", 5), ent("cad", "2025", 1), ent("cad", "2026", 1)], vec![("cad", "2025", 1), ("cad", "2025", 1)], ("cad", "2025", 1), all_in_use(2, 2)),
        c("a request is not split across pools", vec![ent("cad", "2025", 2), ent("cad", "2026", 2)], vec![], ("cad", "2025", 3), Expect::Denied(Denial::MoreThanLicensed { asked: 3, licensed: 2 })),
        // INCREMENT lines and vendors.
        c("INCREMENT adds seats", vec![ent("cad", "2025", 2), increment("cad", "2025", 3)], vec![("cad", "2025", 4)], ("cad", "2025", 1), granted(VENDOR, "2025")),
        c("INCREMENT seats run out too", vec![ent("cad", "2025", 2), increment("cad", "2025", 3)], vec![("cad", "2025", 5)], ("cad", "2025", 1), all_in_use(5, 5)),
        c("INCREMENT spelled 2025.0 adds to 2025", vec![ent("cad", "2025", 1), increment("cad", "2025.0", 1)], vec![], ("cad", "2025", 2), granted(VENDOR, "2025")),
        c("other vendor, same version: separate pools", vec![from_vendor(ent("cad", "2025", 1), "globex"), ent("cad", "2025", 1)], vec![], ("cad", "2025", 2), Expect::Denied(Denial::MoreThanLicensed { asked: 2, licensed: 1 })),
        c("other vendor's pool when the first is full", vec![from_vendor(ent("cad", "2025", 1), "globex"), ent("cad", "2025", 1)], vec![("cad", "2025", 1)], ("cad", "2025", 1), granted("globex", "2025")),
        c("seat counts saturate instead of overflowing", vec![ent("cad", "2025", u32::MAX), increment("cad", "2025", u32::MAX)], vec![("cad", "2025", 1_000_000)], ("cad", "2025", 1_000_000), granted(VENDOR, "2025")),
        // Dates.
        c("expired", vec![expiring(ent("cad", "2025", 2), -1)], vec![], ("cad", "2025", 1), Expect::Denied(Denial::Expired { at: day_ms(0) })),
        c("expired: the latest end is reported", vec![expiring(ent("cad", "2025", 2), -3), expiring(increment("cad", "2025", 1), -1), expiring(ent("cad", "2026", 1), -2)], vec![], ("cad", "2025", 1), Expect::Denied(Denial::Expired { at: day_ms(0) })),
        c("expires at the end of its last day", vec![expiring(ent("cad", "2025", 2), 0)], vec![], ("cad", "2025", 1), granted(VENDOR, "2025")),
        c("not yet started", vec![starting(ent("cad", "2025", 2), 2)], vec![], ("cad", "2025", 1), Expect::Denied(Denial::NotYetStarted { at: day_ms(2) })),
        c("not yet started: the earliest start is reported", vec![starting(ent("cad", "2025", 2), 3), starting(ent("cad", "2026", 2), 2)], vec![], ("cad", "2025", 1), Expect::Denied(Denial::NotYetStarted { at: day_ms(2) })),
        c("started today", vec![starting(ent("cad", "2025", 2), 0)], vec![], ("cad", "2025", 1), granted(VENDOR, "2025")),
        c("expired FEATURE, live INCREMENT", vec![expiring(ent("cad", "2025", 5), -1), increment("cad", "2025", 1)], vec![], ("cad", "2025", 1), granted(VENDOR, "2025")),
        c("expired seats do not count", vec![expiring(ent("cad", "2025", 5), -1), increment("cad", "2025", 1)], vec![], ("cad", "2025", 2), Expect::Denied(Denial::MoreThanLicensed { asked: 2, licensed: 1 })),
        c("future seats do not count", vec![starting(ent("cad", "2025", 5), 1), increment("cad", "2025", 1)], vec![("cad", "2025", 1)], ("cad", "2025", 1), all_in_use(1, 1)),
        c("expired lower pool, live higher pool", vec![expiring(ent("cad", "2025", 5), -1), ent("cad", "2026", 1)], vec![], ("cad", "2025", 1), granted(VENDOR, "2026")),
        c("expired pool beside a full live pool", vec![expiring(ent("cad", "2025", 5), -1), ent("cad", "2026", 1)], vec![("cad", "2026", 1)], ("cad", "2025", 1), all_in_use(1, 1)),
        // Malformed requests.
        c("zero seats", vec![ent("cad", "2025", 2)], vec![], ("cad", "2025", 0), Expect::BadRequest),
        c("a million seats is allowed", vec![ent("cad", "2025", 1_000_000)], vec![], ("cad", "2025", 1_000_000), granted(VENDOR, "2025")),
        c("more than a million seats", vec![ent("cad", "2025", u32::MAX)], vec![], ("cad", "2025", 1_000_001), Expect::BadRequest),
        c("u32::MAX seats", vec![ent("cad", "2025", u32::MAX)], vec![], ("cad", "2025", u32::MAX), Expect::BadRequest),
        c("letters in version", vec![ent("cad", "2025", 2)], vec![], ("cad", "v2025", 1), Expect::BadRequest),
        c("trailing dot in version", vec![ent("cad", "2025", 2)], vec![], ("cad", "2025.", 1), Expect::BadRequest),
        c("empty version component", vec![ent("cad", "2025", 2)], vec![], ("cad", "2025..1", 1), Expect::BadRequest),
        c("negative version", vec![ent("cad", "2025", 2)], vec![], ("cad", "-1", 1), Expect::BadRequest),
        c("version component overflows u32", vec![ent("cad", "2025", 2)], vec![], ("cad", "99999999999", 1), Expect::BadRequest),
    ]
}

#[test]
fn checkout_table() {
    for case in cases() {
        let name = case.name;
        let mut ledger = ledger(&case.ents);
        let s = session(&mut ledger, 1, case.at);
        for (i, &(feature, version, count)) in case.held.iter().enumerate() {
            grant(
                &mut ledger,
                case.at,
                s,
                100 + i as u64,
                feature,
                version,
                count,
            );
        }
        let before = snapshot(&ledger);
        let (feature, version, count) = case.request;
        let cmd = checkout_cmd(s, 1, feature, version, count);
        let (result, changes) = apply(&mut ledger, case.at, cmd.clone());
        let ctx = format!("case {name:?}: {cmd:?} -> {result:?}");
        match case.expect {
            Expect::Granted {
                vendor,
                pool_version,
            } => {
                let Ok(Outcome::Granted(lease)) = &result else {
                    panic!("{ctx}: expected a grant")
                };
                assert_eq!(
                    (lease.vendor.as_str(), lease.pool_version.as_str()),
                    (vendor, pool_version),
                    "{ctx}"
                );
                assert_eq!(lease.id, LeaseId(1), "{ctx}");
                assert_eq!(lease.session, s, "{ctx}");
                assert_eq!(lease.count, count, "{ctx}");
                assert_eq!(lease.requested_version, version, "{ctx}");
                assert_eq!(lease.granted_at, case.at, "{ctx}");
                assert_eq!(changes, vec![Change::LeaseGranted(lease.clone())], "{ctx}");
                let pool = pool_of(lease);
                assert_eq!(ledger.in_use(&pool), before.in_use[&pool] + count, "{ctx}");
                let seats = ledger
                    .catalog()
                    .pool(&pool)
                    .expect("granted from a catalog pool")
                    .seats_at(case.at);
                assert!(
                    ledger.in_use(&pool) <= seats,
                    "{ctx}: over-granted {pool:?}"
                );
            }
            Expect::Denied(ref denial) => {
                assert_eq!(
                    result,
                    Ok(Outcome::Denied(denial.clone())),
                    "case {name:?}: {cmd:?}"
                );
                assert_eq!(changes, vec![], "{ctx}");
                assert_denial_changed_nothing(&ledger, &before, &ctx);
            }
            Expect::BadRequest => {
                assert!(
                    matches!(result, Ok(Outcome::Denied(Denial::BadRequest(_)))),
                    "{ctx}: expected BadRequest"
                );
                assert_eq!(changes, vec![], "{ctx}");
                assert_denial_changed_nothing(&ledger, &before, &ctx);
            }
        }
    }
}

/// A refused checkout holds no seats (it still counts as activity from the session).
fn assert_denial_changed_nothing(ledger: &Ledger, before: &crate::util::Snapshot, ctx: &str) {
    let after = snapshot(ledger);
    assert_eq!(after.leases, before.leases, "{ctx}");
    assert_eq!(after.in_use, before.in_use, "{ctx}");
}

#[test]
fn validity_starts_and_ends_at_midnight_utc() {
    // Valid from the start of day 1 through the end of day 2.
    let ents = [starting(expiring(ent("cad", "2025", 1), 2), 1)];
    let cases = [
        (
            day_ms(1) - 1,
            Expect::Denied(Denial::NotYetStarted { at: day_ms(1) }),
        ),
        (day_ms(1), granted(VENDOR, "2025")),
        (day_ms(3) - 1, granted(VENDOR, "2025")),
        (day_ms(3), Expect::Denied(Denial::Expired { at: day_ms(3) })),
        (
            day_ms(30),
            Expect::Denied(Denial::Expired { at: day_ms(3) }),
        ),
    ];
    for (at, expect) in cases {
        let mut ledger = ledger(&ents);
        let s = session(&mut ledger, 1, at);
        let (result, _) = apply(&mut ledger, at, checkout_cmd(s, 1, "cad", "2025", 1));
        match expect {
            Expect::Granted { .. } => {
                assert!(
                    matches!(result, Ok(Outcome::Granted(_))),
                    "at {at}: {result:?}"
                )
            }
            Expect::Denied(d) => assert_eq!(result, Ok(Outcome::Denied(d)), "at {at}"),
            Expect::BadRequest => unreachable!("no malformed request in this table"),
        }
    }
}

#[test]
fn grants_up_to_n_seats_then_all_in_use() {
    for n in [1u32, 2, 3, 10] {
        let mut ledger = ledger(&[ent("cad", "2025", n)]);
        let pool = key("cad", VENDOR, "2025");
        let s = session(&mut ledger, 1, T0);
        for i in 0..n {
            grant(&mut ledger, T0, s, u64::from(i) + 1, "cad", "2025", 1);
            assert_eq!(ledger.in_use(&pool), i + 1, "n={n}, after grant {i}");
        }
        let (result, changes) = apply(&mut ledger, T0, checkout_cmd(s, 99, "cad", "2025", 1));
        assert_eq!(
            result,
            Ok(Outcome::Denied(Denial::AllInUse {
                in_use: n,
                total: n
            })),
            "n={n}"
        );
        assert_eq!(changes, vec![], "n={n}");
        assert_eq!(ledger.lease(LeaseId(99)), None, "n={n}");
    }
}

#[test]
fn checkin_frees_a_seat() {
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    let pool = key("cad", VENDOR, "2025");
    let s = session(&mut ledger, 1, T0);
    let first = grant(&mut ledger, T0, s, 1, "cad", "2025", 1);
    grant(&mut ledger, T0, s, 2, "cad", "2025", 1);
    let (result, _) = apply(&mut ledger, T0, checkout_cmd(s, 3, "cad", "2025", 1));
    assert_eq!(
        result,
        Ok(Outcome::Denied(Denial::AllInUse {
            in_use: 2,
            total: 2
        }))
    );

    let (result, changes) = apply(
        &mut ledger,
        T0 + 5,
        usher_core::Command::Checkin {
            session: s,
            lease_id: first.id,
        },
    );
    assert_eq!(result, Ok(Outcome::Released(first.clone())));
    assert_eq!(
        changes,
        vec![Change::LeaseReleased {
            lease: first.clone(),
            reason: ReleaseReason::Checkin
        }]
    );
    assert_eq!(ledger.in_use(&pool), 1);
    assert_eq!(ledger.lease(first.id), None);
    assert_eq!(
        ledger.session_leases(s).map(|l| l.id).collect::<Vec<_>>(),
        vec![LeaseId(2)]
    );

    grant(&mut ledger, T0 + 6, s, 3, "cad", "2025", 1);
    assert_eq!(ledger.in_use(&pool), 2);
}

/// A pool whose last seat goes back is listed nowhere as in use, however its count is
/// kept, and the next grant counts from zero again.
#[test]
fn a_pool_back_to_zero_seats_is_not_in_use() {
    let mut ledger = ledger(&[ent("cad", "2025", 2), ent("cam", "2025", 1)]);
    let (cad, cam) = (key("cad", VENDOR, "2025"), key("cam", VENDOR, "2025"));
    let s = session(&mut ledger, 1, T0);
    let lease = grant(&mut ledger, T0, s, 1, "cad", "2025", 2);
    grant(&mut ledger, T0, s, 2, "cam", "2025", 1);
    let in_use = |ledger: &Ledger| {
        let mut pools: Vec<(PoolKey, u32)> =
            ledger.pools_in_use().map(|(k, n)| (k.clone(), n)).collect();
        pools.sort();
        pools
    };
    assert_eq!(in_use(&ledger), vec![(cad.clone(), 2), (cam.clone(), 1)]);
    assert_eq!(ledger.in_use(lease.pool_key()), 2);
    apply(&mut ledger, T0 + 1, checkin_cmd(s, 1)).0.unwrap();
    assert_eq!(in_use(&ledger), vec![(cam.clone(), 1)]);
    assert_eq!(
        (ledger.in_use(&cad), ledger.in_use(lease.pool_key())),
        (0, 0)
    );
    grant(&mut ledger, T0 + 2, s, 3, "cad", "2025", 1);
    assert_eq!(in_use(&ledger), vec![(cad, 1), (cam, 1)]);
}

#[test]
fn multi_seat_checkin_frees_all_its_seats() {
    let mut ledger = ledger(&[ent("cad", "2025", 5)]);
    let pool = key("cad", VENDOR, "2025");
    let s = session(&mut ledger, 1, T0);
    let lease = grant(&mut ledger, T0, s, 1, "cad", "2025", 4);
    assert_eq!(ledger.in_use(&pool), 4);
    let (result, _) = apply(
        &mut ledger,
        T0,
        usher_core::Command::Checkin {
            session: s,
            lease_id: lease.id,
        },
    );
    assert_eq!(result, Ok(Outcome::Released(lease)));
    assert_eq!(ledger.in_use(&pool), 0);
    grant(&mut ledger, T0, s, 2, "cad", "2025", 5);
}

#[test]
fn checkin_of_a_lease_not_held_is_not_held_and_changes_nothing() {
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    let held = grant(&mut ledger, T0, a, 1, "cad", "2025", 1);
    let released = grant(&mut ledger, T0, a, 2, "cad", "2025", 1);
    let (result, _) = apply(
        &mut ledger,
        T0,
        usher_core::Command::Checkin {
            session: a,
            lease_id: released.id,
        },
    );
    assert_eq!(result, Ok(Outcome::Released(released.clone())));

    let cases = [
        ("never granted", a, LeaseId(77)),
        ("already checked in", a, released.id),
        ("held by another session", b, held.id),
    ];
    for (name, session, lease_id) in cases {
        let before = snapshot(&ledger);
        let cmd = usher_core::Command::Checkin { session, lease_id };
        let (result, changes) = apply(&mut ledger, T0 + 1, cmd.clone());
        assert_eq!(result, Ok(Outcome::NotHeld), "{name}: {cmd:?}");
        assert_eq!(changes, vec![], "{name}: {cmd:?}");
        let after = snapshot(&ledger);
        assert_eq!(after.leases, before.leases, "{name}: {cmd:?}");
        assert_eq!(after.in_use, before.in_use, "{name}: {cmd:?}");
    }
    assert_eq!(
        ledger.lease(held.id),
        Some(&held),
        "the other session's lease must survive"
    );
}

#[test]
fn checkout_and_checkin_need_a_live_session() {
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    let a = session(&mut ledger, 1, T0);
    let held = grant(&mut ledger, T0, a, 1, "cad", "2025", 1);
    let ghost = SessionId(404);
    let cmds = [
        checkout_cmd(ghost, 2, "cad", "2025", 1),
        checkout_ref_cmd(ghost, 2, "cad", "2025", 1, 7),
        usher_core::Command::Checkin {
            session: ghost,
            lease_id: held.id,
        },
    ];
    for cmd in cmds {
        let before = snapshot(&ledger);
        let (result, changes) = apply(&mut ledger, T0 + 1, cmd.clone());
        assert_eq!(result, Err(LedgerError::UnknownSession), "{cmd:?}");
        assert_eq!(changes, vec![], "{cmd:?}");
        assert_eq!(
            snapshot(&ledger),
            before,
            "{cmd:?}: an error must change nothing"
        );
    }
}

#[test]
fn client_ref_makes_checkout_idempotent() {
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    let pool = key("cad", VENDOR, "2025");
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);

    let (result, changes) = apply(
        &mut ledger,
        T0,
        checkout_ref_cmd(a, 1, "cad", "2025", 1, 42),
    );
    let Ok(Outcome::Granted(first)) = result else {
        panic!("first checkout: {result:?}")
    };
    assert_eq!(first.client_ref, 42);
    assert_eq!(changes, vec![Change::LeaseGranted(first.clone())]);

    // The retry carries a fresh lease id (the server draws one per request) but must get
    // the original lease back, with no second seat and nothing to persist.
    let (result, changes) = apply(
        &mut ledger,
        T0 + 10,
        checkout_ref_cmd(a, 2, "cad", "2025", 1, 42),
    );
    assert_eq!(
        result,
        Ok(Outcome::Granted(first.clone())),
        "retry with the same ref"
    );
    assert_eq!(changes, vec![], "a retry records nothing");
    assert_eq!(ledger.in_use(&pool), 1);
    assert_eq!(ledger.lease(LeaseId(2)), None);

    // Another ref from the same session is a new lease...
    let (result, _) = apply(
        &mut ledger,
        T0,
        checkout_ref_cmd(a, 3, "cad", "2025", 1, 43),
    );
    assert!(
        matches!(result, Ok(Outcome::Granted(ref l)) if l.id == LeaseId(3)),
        "{result:?}"
    );
    assert_eq!(ledger.in_use(&pool), 2);

    // ...and once the pool is full, a retry of either still gets its lease back.
    let (result, changes) = apply(
        &mut ledger,
        T0,
        checkout_ref_cmd(a, 4, "cad", "2025", 1, 42),
    );
    assert_eq!(
        result,
        Ok(Outcome::Granted(first.clone())),
        "retry when the pool is full"
    );
    assert_eq!(changes, vec![]);

    // The same ref from another session is that session's own request.
    let (result, _) = apply(
        &mut ledger,
        T0,
        checkout_ref_cmd(b, 5, "cad", "2025", 1, 42),
    );
    assert_eq!(
        result,
        Ok(Outcome::Denied(Denial::AllInUse {
            in_use: 2,
            total: 2
        }))
    );

    // After a checkin the ref is free again: the next checkout is a new grant.
    let (result, _) = apply(
        &mut ledger,
        T0,
        usher_core::Command::Checkin {
            session: a,
            lease_id: first.id,
        },
    );
    assert_eq!(result, Ok(Outcome::Released(first)));
    let (result, changes) = apply(
        &mut ledger,
        T0,
        checkout_ref_cmd(a, 6, "cad", "2025", 1, 42),
    );
    let Ok(Outcome::Granted(again)) = result else {
        panic!("checkout after checkin: {result:?}")
    };
    assert_eq!(again.id, LeaseId(6));
    assert_eq!(changes, vec![Change::LeaseGranted(again)]);
    assert_eq!(ledger.in_use(&pool), 2);
}

#[test]
fn client_ref_zero_does_not_dedupe() {
    let mut ledger = ledger(&[ent("cad", "2025", 3)]);
    let pool = key("cad", VENDOR, "2025");
    let s = session(&mut ledger, 1, T0);
    for lease in 1..=3 {
        let (result, changes) = apply(
            &mut ledger,
            T0,
            checkout_ref_cmd(s, lease, "cad", "2025", 1, 0),
        );
        let Ok(Outcome::Granted(l)) = result else {
            panic!("checkout {lease}: {result:?}")
        };
        assert_eq!(l.id, LeaseId(lease));
        assert_eq!(changes, vec![Change::LeaseGranted(l)]);
    }
    assert_eq!(ledger.in_use(&pool), 3);
}

#[test]
fn fresh_lease_id_in_use_is_an_error() {
    let mut ledger = ledger(&[ent("cad", "2025", 3)]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    grant(&mut ledger, T0, a, 1, "cad", "2025", 1);
    for (name, cmd) in [
        ("same session", checkout_cmd(a, 1, "cad", "2025", 1)),
        ("other session", checkout_cmd(b, 1, "cad", "2025", 1)),
        (
            "with a new client_ref",
            checkout_ref_cmd(b, 1, "cad", "2025", 1, 9),
        ),
    ] {
        let before = snapshot(&ledger);
        let (result, changes) = apply(&mut ledger, T0, cmd.clone());
        assert_eq!(result, Err(LedgerError::IdInUse), "{name}: {cmd:?}");
        assert_eq!(changes, vec![], "{name}: {cmd:?}");
        assert_eq!(snapshot(&ledger).leases, before.leases, "{name}: {cmd:?}");
    }
}

#[test]
fn lease_id_in_use_error_changes_nothing() {
    let mut ledger = ledger(&[ent("cad", "2025", 3)]);
    let s = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, s, 1, "cad", "2025", 1);
    let before = snapshot(&ledger);
    let cmd = checkout_cmd(s, 1, "cad", "2025", 1);
    let (result, changes) = apply(&mut ledger, T0 + 60_000, cmd.clone());
    assert_eq!(result, Err(LedgerError::IdInUse), "{cmd:?}");
    assert_eq!(changes, vec![], "{cmd:?}");
    assert_eq!(
        snapshot(&ledger),
        before,
        "{cmd:?}: Err must leave the ledger unchanged"
    );
}

#[test]
fn empty_feature_name_is_a_bad_request() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let s = session(&mut ledger, 1, T0);
    let (result, changes) = apply(&mut ledger, T0, checkout_cmd(s, 1, "", "2025", 1));
    assert!(
        matches!(result, Ok(Outcome::Denied(Denial::BadRequest(_)))),
        "{result:?}"
    );
    assert_eq!(changes, vec![]);
}
