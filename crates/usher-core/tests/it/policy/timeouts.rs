//! `TIMEOUT` (idle clients lose their seats) and `USER_BASED` licenses.

use usher_core::{Change, Command, Denial, LeaseId, Ledger, Outcome, Policy, SessionId};

use crate::util::*;

// ----- TIMEOUT -----

fn idle(ledger: &mut Ledger, now: u64, id: SessionId, idle: bool) {
    let (result, changes) = apply(ledger, now, Command::Activity { id, idle });
    assert_eq!(result, Ok(Outcome::Done));
    assert!(changes.is_empty(), "idleness is soft state: {changes:?}");
}

#[test]
fn an_idle_client_loses_its_seats_after_the_timeout_and_an_active_one_never() {
    let mut ledger = ledger(&[ent("cad", "2025", 2), ent("sim", "1", 2)]);
    ledger.set_policy(Policy::parse("opts", "TIMEOUT cad 60\n").unwrap());
    let (a, b) = (session(&mut ledger, 1, T0), session(&mut ledger, 2, T0));
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    grant(&mut ledger, T0, a, 11, "sim", "", 1);
    grant(&mut ledger, T0, b, 20, "cad", "", 1);
    idle(&mut ledger, T0 + 1_000, a, true);
    assert_eq!(ledger.idle_since(a), Some(T0 + 1_000));
    assert_eq!(ledger.next_deadline(), Some(T0 + 61_000), "before the TTL");
    // Saying it again does not restart the clock.
    idle(&mut ledger, T0 + 30_000, a, true);
    let (_, changes) = apply(&mut ledger, T0 + 60_999, Command::Expire);
    assert!(changes.is_empty(), "{changes:?}");
    let (_, changes) = apply(&mut ledger, T0 + 61_000, Command::Expire);
    assert_eq!(
        changes,
        vec![Change::LeaseReleased {
            lease: ledger_lease(10, a),
            reason: usher_core::ReleaseReason::IdleTimeout,
        }]
    );
    assert!(ledger.lease(LeaseId(11)).is_some(), "sim has no TIMEOUT");
    assert!(ledger.lease(LeaseId(20)).is_some(), "b is not idle");
    // Active again: a new seat is safe.
    idle(&mut ledger, T0 + 62_000, a, false);
    grant(&mut ledger, T0 + 62_000, a, 12, "cad", "", 1);
    let (_, changes) = apply(&mut ledger, T0 + 119_000, Command::Expire);
    assert!(changes.is_empty(), "{changes:?}");
}

/// The lease `grant` made for `id` in these tests (one `cad` seat at `T0`).
fn ledger_lease(id: u64, session: SessionId) -> usher_core::Lease {
    usher_core::Lease {
        id: LeaseId(id),
        session,
        feature: "cad".into(),
        vendor: VENDOR.into(),
        requested_version: Default::default(),
        pool_version: "2025".into(),
        count: 1,
        granted_at: T0,
        client_ref: 0,
        overdraft: false,
        lingering_until: None,
        borrowed_until: None,
        token_for: None,
    }
}

#[test]
fn a_new_policy_re_arms_the_timeouts_of_idle_clients() {
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    let a = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    idle(&mut ledger, T0, a, true);
    assert_eq!(ledger.next_deadline(), Some(T0 + TTL), "no TIMEOUT yet");
    ledger.set_policy(Policy::parse("opts", "TIMEOUTALL 30\n").unwrap());
    assert_eq!(ledger.next_deadline(), Some(T0 + 30_000), "idle since T0");
    ledger.set_policy(Policy::default());
    assert_eq!(ledger.next_deadline(), Some(T0 + TTL));
}

// ----- USER_BASED -----

#[test]
fn a_user_based_license_serves_only_its_first_named_users() {
    // (USER_BASED value, policy, client, granted?)
    let cases: &[(&str, &str, u64, bool)] = &[
        (
            "2",
            "INCLUDE cad USER user1\nINCLUDE cad USER user2",
            2,
            true,
        ),
        (
            "1",
            "INCLUDE cad USER user1\nINCLUDE cad USER user2",
            2,
            false,
        ),
        (
            "2",
            "GROUP team user3 user1\nINCLUDE cad GROUP team",
            3,
            true,
        ),
        ("2", "", 1, false),
        (
            "",
            "INCLUDE cad USER user1\nINCLUDE cad USER user2\nINCLUDE cad USER user3",
            3,
            true,
        ),
        ("", "INCLUDEALL USER user4", 4, true),
    ];
    for (value, rules, client, granted) in cases {
        let mut e = ent("cad", "2025", 3);
        e.attrs.push(("USER_BASED".into(), (*value).into()));
        let mut ledger = ledger(&[e]);
        ledger.set_policy(Policy::parse("opts", rules).unwrap());
        let s = session(&mut ledger, *client, T0);
        let (result, _) = apply(&mut ledger, T0, checkout_cmd(s, 10, "cad", "", 1));
        let got = matches!(result, Ok(Outcome::Granted(_)));
        assert_eq!(
            got, *granted,
            "USER_BASED={value:?} with {rules:?} for user{client}: {result:?}"
        );
        if !granted {
            assert!(
                matches!(result, Ok(Outcome::Denied(Denial::NotNamedUser { .. }))),
                "{result:?}"
            );
        }
    }
}
