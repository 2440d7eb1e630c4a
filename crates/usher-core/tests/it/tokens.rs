//! Token-based features (count `token`, `TOKEN="<pool version tokens> ..."`): each
//! checkout draws tokens from another pool, trying the alternatives in file order.

use usher_core::{Ask, Catalog, Change, Command, Denial, LeaseId, Ledger, Outcome, Policy};
use usher_license::{Entitlement, SeatCount};

use crate::util::*;

/// A token-based line for `feature` (version `version`) paid for as `token` says.
fn token_line(feature: &str, version: &str, token: &str) -> Entitlement {
    let mut e = ent(feature, version, 0);
    e.count = SeatCount::Token;
    e.attrs.push(("TOKEN".into(), token.into()));
    e
}

fn units(ledger: &Ledger) -> u32 {
    ledger.in_use(&key("units", VENDOR, "2"))
}

fn denied(ledger: &mut Ledger, now: u64, cmd: Command) -> Denial {
    match apply(ledger, now, cmd) {
        (Ok(Outcome::Denied(d)), changes) if changes.is_empty() => d,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn granted(ledger: &mut Ledger, now: u64, cmd: Command) -> usher_core::Lease {
    match apply(ledger, now, cmd) {
        (Ok(Outcome::Granted(l)), _) => l,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn a_token_checkout_draws_its_tokens_from_the_pool_and_a_checkin_returns_them() {
    let mut ledger = ledger(&[
        ent("units", "2", 12),
        token_line("sample", "1.0", "<units 2.0 5>"),
    ]);
    let a = session(&mut ledger, 1, T0);
    let lease = granted(&mut ledger, T0, checkout_cmd(a, 10, "sample", "1.0", 1));
    assert_eq!(
        (
            lease.feature.as_str(),
            lease.count,
            lease.token_for.as_deref()
        ),
        ("units", 5, Some("sample"))
    );
    assert_eq!(units(&ledger), 5);
    // Two seats cost ten tokens; only two are left now.
    let two = granted(&mut ledger, T0, checkout_cmd(a, 11, "sample", "", 1));
    assert_eq!(two.count, 5);
    let denial = denied(&mut ledger, T0, checkout_cmd(a, 12, "sample", "", 1));
    assert_eq!(
        denial,
        Denial::TokensInUse {
            pool: "units".into(),
            cost: 5,
            in_use: 10,
            total: 12
        }
    );
    // The ledger keeps what token status shows: tokens and leases per feature and pool.
    assert_eq!(
        ledger.token_use().collect::<Vec<_>>(),
        [("sample", "units", 10, 2)]
    );
    // The pool's own seats are still there for direct checkouts.
    grant(&mut ledger, T0, a, 13, "units", "", 2);
    let (result, changes) = apply(&mut ledger, T0, checkin_cmd(a, 10));
    assert!(matches!(result, Ok(Outcome::Released(_))), "{result:?}");
    assert!(matches!(&changes[..], [Change::LeaseReleased { .. }]));
    assert_eq!(units(&ledger), 7);
    assert_eq!(
        ledger.token_use().collect::<Vec<_>>(),
        [("sample", "units", 5, 1)]
    );
}

#[test]
fn several_seats_cost_that_many_times_the_tokens() {
    let mut ledger = ledger(&[
        ent("units", "2", 12),
        token_line("sample", "1.0", "<units 2 3>"),
    ]);
    let a = session(&mut ledger, 1, T0);
    let lease = granted(&mut ledger, T0, checkout_cmd(a, 10, "sample", "", 4));
    assert_eq!(lease.count, 12);
    assert_eq!(units(&ledger), 12);
}

#[test]
fn alternatives_are_tried_in_file_order() {
    // RLM's "use office if no write is left".
    let mut ledger = ledger(&[
        ent("write", "1", 1),
        ent("office", "1", 1),
        token_line("editor", "1", "<write 1 1> <office 1 1>"),
    ]);
    let a = session(&mut ledger, 1, T0);
    let first = granted(&mut ledger, T0, checkout_cmd(a, 10, "editor", "", 1));
    let second = granted(&mut ledger, T0, checkout_cmd(a, 11, "editor", "", 1));
    assert_eq!(
        (first.feature.as_str(), second.feature.as_str()),
        ("write", "office")
    );
    let denial = denied(&mut ledger, T0, checkout_cmd(a, 12, "editor", "", 1));
    assert!(matches!(denial, Denial::TokensInUse { .. }), "{denial:?}");
}

#[test]
fn versions_dates_and_pools_are_checked() {
    let mut ledger = ledger(&[
        ent("units", "2", 10),
        token_line("sample", "1.0", "<units 3.0 1>"),
        expiring(token_line("old", "1", "<units 1 1>"), -1),
        starting(token_line("new", "1", "<units 1 1>"), 1),
        token_line("typo", "1", "<unist 1 1>"),
    ]);
    let a = session(&mut ledger, 1, T0);
    let d = denied(&mut ledger, T0, checkout_cmd(a, 10, "sample", "2", 1));
    assert_eq!(
        d,
        Denial::VersionTooNew {
            highest: "1.0".into()
        }
    );
    // The pool is older than the alternative needs.
    let d = denied(&mut ledger, T0, checkout_cmd(a, 11, "sample", "", 1));
    assert_eq!(
        d,
        Denial::VersionTooNew {
            highest: "2".into()
        }
    );
    let d = denied(&mut ledger, T0, checkout_cmd(a, 12, "old", "", 1));
    assert_eq!(d, Denial::Expired { at: day_ms(0) });
    let d = denied(&mut ledger, T0, checkout_cmd(a, 13, "new", "", 1));
    assert_eq!(d, Denial::NotYetStarted { at: day_ms(1) });
    let d = denied(&mut ledger, T0, checkout_cmd(a, 14, "typo", "", 1));
    assert_eq!(d, Denial::UnknownFeature);
}

#[test]
fn policy_names_the_token_feature_or_counts_the_tokens() {
    let ents = [
        ent("units", "2", 20),
        token_line("sample", "1", "<units 2 5>"),
    ];
    let mut ledger = ledger(&ents);
    ledger.set_policy(Policy::parse("opts", "EXCLUDE sample USER user1\n").unwrap());
    let a = session(&mut ledger, 1, T0);
    let d = denied(&mut ledger, T0, checkout_cmd(a, 10, "sample", "", 1));
    assert_eq!(d, Denial::Excluded);

    let mut ledger = ledger_of(&ents);
    ledger.set_policy(Policy::parse("opts", "MAX 6 units USER user1\n").unwrap());
    let a = session(&mut ledger, 1, T0);
    granted(&mut ledger, T0, checkout_cmd(a, 10, "sample", "", 1));
    let d = denied(&mut ledger, T0, checkout_cmd(a, 11, "sample", "", 1));
    assert!(matches!(d, Denial::MaxReached { limit: 6, .. }), "{d:?}");
}

fn ledger_of(ents: &[Entitlement]) -> Ledger {
    ledger(ents)
}

fn waiting(session: usher_core::SessionId, lease: u64, feature: &str, count: u32) -> Command {
    waiting_cmd(session, lease, feature, count, lease)
}

#[test]
fn a_token_checkout_queues_and_waits_behind_the_pools_own_queue() {
    let mut ledger = ledger(&[
        ent("units", "2", 5),
        token_line("sample", "1", "<units 2 5>"),
    ]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    grant(&mut ledger, T0, a, 10, "units", "", 1);
    // Five tokens are needed, four are free: the token checkout waits.
    let (result, _) = apply(&mut ledger, T0, waiting(b, 20, "sample", 1));
    assert!(matches!(result, Ok(Outcome::Queued { .. })), "{result:?}");
    let (_, changes) = apply(&mut ledger, T0 + 1, checkin_cmd(a, 10));
    let lease = changes
        .iter()
        .find_map(|c| match c {
            Change::LeaseGranted(l) => Some(l.clone()),
            _ => None,
        })
        .expect("the queued token checkout is granted");
    assert_eq!((lease.id, lease.count), (LeaseId(20), 5));
    assert_eq!(lease.token_for.as_deref(), Some("sample"));

    // With a checkout queued for the pool itself, tokens do not overtake it.
    let mut ledger = ledger_of(&[
        ent("units", "2", 2),
        token_line("sample", "1", "<units 2 1>"),
    ]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    let c = session(&mut ledger, 3, T0);
    grant(&mut ledger, T0, a, 10, "units", "", 1);
    grant(&mut ledger, T0, a, 11, "units", "", 1);
    let (result, _) = apply(&mut ledger, T0, waiting(b, 20, "units", 2));
    assert!(matches!(result, Ok(Outcome::Queued { .. })), "{result:?}");
    let (result, _) = apply(&mut ledger, T0, checkin_cmd(a, 10));
    assert!(matches!(result, Ok(Outcome::Released(_))), "{result:?}");
    // One unit is free, but it waits for the queued checkout of two.
    let d = denied(&mut ledger, T0, checkout_cmd(c, 30, "sample", "", 1));
    assert_eq!(d, Denial::QueuedAhead { waiting: 1 });
    let (result, _) = apply(&mut ledger, T0, waiting(c, 31, "sample", 1));
    assert!(matches!(result, Ok(Outcome::Queued { .. })), "{result:?}");
    let (_, changes) = apply(&mut ledger, T0, checkin_cmd(a, 11));
    let granted: Vec<LeaseId> = changes
        .iter()
        .filter_map(|c| match c {
            Change::LeaseGranted(l) => Some(l.id),
            _ => None,
        })
        .collect();
    assert_eq!(granted, vec![LeaseId(20)], "the pool's own checkout first");
    assert_eq!(units(&ledger), 2);
}

#[test]
fn token_features_cannot_be_borrowed_and_counted_names_win() {
    let mut e = ent("units", "2", 5);
    e.attrs.push(("BORROW".into(), String::new()));
    let mut ledger = ledger(&[e, token_line("sample", "1", "<units 2 1>")]);
    let a = session(&mut ledger, 1, T0);
    let borrow = Command::Borrow {
        ask: Ask {
            session: a,
            lease_id: LeaseId(10),
            feature: "sample".into(),
            version: String::new(),
            count: 1,
            client_ref: 1,
        },
        duration: 3_600_000,
    };
    assert_eq!(denied(&mut ledger, T0, borrow), Denial::NotBorrowable);

    let catalog =
        Catalog::from_entitlements(&[ent("cad", "1", 2), token_line("cad", "1", "<units 2 1>")]);
    assert!(catalog.token_feature("cad").is_none());
    assert_eq!(catalog.problems().len(), 1, "{:?}", catalog.problems());
}
