//! License reloads (`set_catalog`): holders are never revoked; counts apply to newcomers.

use usher_core::{Command, Denial, Lease, Ledger, Outcome, SessionId};

use crate::util::{
    T0, VENDOR, apply, catalog, checkout_cmd, ent, grant, increment, key, ledger, session,
};

/// Checks out one seat of cad 2025 with lease id `lease`, returning the outcome.
fn try_checkout(ledger: &mut Ledger, s: SessionId, lease: u64) -> Outcome {
    let (result, changes) = apply(ledger, T0, checkout_cmd(s, lease, "cad", "2025", 1));
    let outcome = result.unwrap_or_else(|e| panic!("checkout {lease}: {e}"));
    if !matches!(outcome, Outcome::Granted(_)) {
        assert_eq!(
            changes,
            vec![],
            "checkout {lease}: a denial records nothing"
        );
    }
    outcome
}

fn checkin(ledger: &mut Ledger, lease: &Lease) {
    let cmd = Command::Checkin {
        session: lease.session,
        lease_id: lease.id,
    };
    let (result, _) = apply(ledger, T0, cmd);
    assert_eq!(result, Ok(Outcome::Released(lease.clone())));
}

#[test]
fn fewer_seats_keep_holders_and_refuse_newcomers_until_usage_falls_below() {
    let mut ledger = ledger(&[ent("cad", "2025", 4)]);
    let pool = key("cad", VENDOR, "2025");
    let s = session(&mut ledger, 1, T0);
    let held: Vec<Lease> = (1..=4)
        .map(|id| grant(&mut ledger, T0, s, id, "cad", "2025", 1))
        .collect();

    ledger.set_catalog(catalog(&[ent("cad", "2025", 2)]));
    assert_eq!(ledger.leases().count(), 4, "a reload revokes nothing");
    assert_eq!(ledger.in_use(&pool), 4);

    // (usage after checking one more lease in, whether a newcomer then gets a seat)
    let steps = [(3, false), (2, false), (1, true)];
    for (i, (usage, grantable)) in steps.into_iter().enumerate() {
        checkin(&mut ledger, &held[i]);
        assert_eq!(ledger.in_use(&pool), usage);
        let lease = 100 + i as u64;
        let outcome = try_checkout(&mut ledger, s, lease);
        if grantable {
            assert!(
                matches!(outcome, Outcome::Granted(_)),
                "usage {usage}: {outcome:?}"
            );
            assert_eq!(ledger.in_use(&pool), 2);
        } else {
            assert_eq!(
                outcome,
                Outcome::Denied(Denial::AllInUse {
                    in_use: usage,
                    total: 2
                }),
                "usage {usage}"
            );
        }
    }
    assert_eq!(
        try_checkout(&mut ledger, s, 200),
        Outcome::Denied(Denial::AllInUse {
            in_use: 2,
            total: 2
        })
    );
}

#[test]
fn more_seats_are_available_at_once() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let s = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, s, 1, "cad", "2025", 1);
    assert_eq!(
        try_checkout(&mut ledger, s, 2),
        Outcome::Denied(Denial::AllInUse {
            in_use: 1,
            total: 1
        })
    );
    ledger.set_catalog(catalog(&[
        ent("cad", "2025", 1),
        increment("cad", "2025", 2),
    ]));
    grant(&mut ledger, T0, s, 3, "cad", "2025", 1);
    grant(&mut ledger, T0, s, 4, "cad", "2025", 1);
    assert_eq!(
        try_checkout(&mut ledger, s, 5),
        Outcome::Denied(Denial::AllInUse {
            in_use: 3,
            total: 3
        })
    );
}

#[test]
fn a_removed_feature_keeps_its_holders_until_they_check_in() {
    let mut ledger = ledger(&[ent("cad", "2025", 2), ent("sim", "1", 1)]);
    let pool = key("cad", VENDOR, "2025");
    let s = session(&mut ledger, 1, T0);
    let lease = grant(&mut ledger, T0, s, 1, "cad", "2025", 2);
    ledger.set_catalog(catalog(&[ent("sim", "1", 1)]));
    assert_eq!(ledger.lease(lease.id), Some(&lease));
    assert_eq!(ledger.in_use(&pool), 2);
    assert_eq!(
        try_checkout(&mut ledger, s, 2),
        Outcome::Denied(Denial::UnknownFeature)
    );
    checkin(&mut ledger, &lease);
    assert_eq!(ledger.in_use(&pool), 0);

    // Re-licensed, the pool starts from what is really held (nothing).
    ledger.set_catalog(catalog(&[ent("cad", "2025", 2)]));
    grant(&mut ledger, T0, s, 3, "cad", "2025", 2);
}

#[test]
fn a_new_version_pool_does_not_inherit_usage() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let s = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, s, 1, "cad", "2025", 1);
    // The customer upgrades: 2026 seats arrive, the 2025 line stays for existing holders.
    ledger.set_catalog(catalog(&[ent("cad", "2025", 1), ent("cad", "2026", 1)]));
    let lease = grant(&mut ledger, T0, s, 2, "cad", "2025", 1);
    assert_eq!(lease.pool_version, "2026");
    assert_eq!(
        try_checkout(&mut ledger, s, 3),
        Outcome::Denied(Denial::AllInUse {
            in_use: 2,
            total: 2
        })
    );
}

#[test]
fn a_respelled_version_is_still_the_same_pool() {
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    let s = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, s, 1, "cad", "2025", 2);
    ledger.set_catalog(catalog(&[ent("cad", "2025.0", 2)]));
    assert_eq!(
        try_checkout(&mut ledger, s, 2),
        Outcome::Denied(Denial::AllInUse {
            in_use: 2,
            total: 2
        })
    );
}
