//! OVERDRAFT=n: up to n seats beyond the count, each flagged.

use usher_core::{Denial, Outcome};

use crate::util::*;

fn with_overdraft(seats: u32, overdraft: &str) -> usher_license::Entitlement {
    let mut e = ent("cad", "2025", seats);
    e.attrs.push(("OVERDRAFT".into(), overdraft.into()));
    e
}

#[test]
fn overdraft_seats_are_granted_after_the_count_and_flagged() {
    let mut ledger = ledger(&[with_overdraft(2, "1")]);
    let s = session(&mut ledger, 1, T0);
    let a = grant(&mut ledger, T0, s, 10, "cad", "2025", 1);
    let b = grant(&mut ledger, T0, s, 11, "cad", "2025", 1);
    assert!(
        !a.overdraft && !b.overdraft,
        "seats within the count are not overdraft"
    );
    let c = grant(&mut ledger, T0, s, 12, "cad", "2025", 1);
    assert!(c.overdraft, "the third seat is beyond the count of 2");
    let (result, changes) = apply(&mut ledger, T0, checkout_cmd(s, 13, "cad", "2025", 1));
    assert_eq!(
        result,
        Ok(Outcome::Denied(Denial::AllInUse {
            in_use: 3,
            total: 2
        }))
    );
    assert!(changes.is_empty());
}

#[test]
fn a_request_that_fits_only_partly_in_the_count_is_all_overdraft() {
    let mut ledger = ledger(&[with_overdraft(2, "2")]);
    let s = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, s, 10, "cad", "2025", 1);
    let big = grant(&mut ledger, T0, s, 11, "cad", "2025", 2);
    assert!(
        big.overdraft,
        "two seats where one is left: the lease draws on the overdraft"
    );
    assert_eq!(ledger.in_use(&key("cad", VENDOR, "2025")), 3);
}

#[test]
fn without_overdraft_or_with_a_malformed_value_the_count_is_the_limit() {
    for e in [ent("cad", "2025", 1), with_overdraft(1, "lots")] {
        let mut ledger = ledger(&[e]);
        // The malformed value is the license file's problem, reported at load; the
        // catalog serves it as no overdraft.
        assert_eq!(ledger.catalog().problems(), &[] as &[String]);
        let s = session(&mut ledger, 1, T0);
        grant(&mut ledger, T0, s, 10, "cad", "2025", 1);
        let (result, _) = apply(&mut ledger, T0, checkout_cmd(s, 11, "cad", "2025", 1));
        assert!(
            matches!(result, Ok(Outcome::Denied(Denial::AllInUse { .. }))),
            "{result:?}"
        );
    }
}

#[test]
fn a_checkin_frees_an_overdraft_seat_like_any_other() {
    let mut ledger = ledger(&[with_overdraft(1, "1")]);
    let s = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, s, 10, "cad", "2025", 1);
    let over = grant(&mut ledger, T0, s, 11, "cad", "2025", 1);
    let (result, _) = apply(
        &mut ledger,
        T0,
        usher_core::Command::Checkin {
            session: s,
            lease_id: over.id,
        },
    );
    assert!(matches!(result, Ok(Outcome::Released(_))));
    assert!(grant(&mut ledger, T0, s, 12, "cad", "2025", 1).overdraft);
}
