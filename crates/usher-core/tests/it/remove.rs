//! Administrator removal of leases.

use usher_core::{Change, Command, LeaseId, LedgerError, Outcome, PoolKey, ReleaseReason};

use crate::util::*;

fn pool() -> PoolKey {
    key("cad", VENDOR, "2025")
}

#[test]
fn remove_frees_the_seat_for_someone_else() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    let lease = grant(&mut ledger, T0, a, 10, "cad", "2025", 1);
    let now = T0 + MIN_REMOVE;
    let (result, changes) = apply(&mut ledger, now, Command::Remove { lease_id: lease.id });
    assert_eq!(result, Ok(Outcome::Released(lease.clone())));
    assert_eq!(
        changes,
        [Change::LeaseReleased {
            lease,
            reason: ReleaseReason::Removed
        }]
    );
    assert_eq!(ledger.in_use(&pool()), 0);
    // The holder's session lives on; only its seat is gone.
    assert!(ledger.session(a).is_some());
    grant(&mut ledger, now, b, 11, "cad", "2025", 1);
}

#[test]
fn remove_respects_the_minimum_remove_time() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    let a = session(&mut ledger, 1, T0);
    let lease = grant(&mut ledger, T0, a, 10, "cad", "2025", 1);
    let now = T0 + MIN_REMOVE - 1_000;
    let (result, changes) = apply(&mut ledger, now, Command::Remove { lease_id: lease.id });
    assert_eq!(result, Err(LedgerError::TooSoonToRemove { wait_ms: 1_000 }));
    assert!(changes.is_empty());
    assert_eq!(ledger.in_use(&pool()), 1);
}

#[test]
fn removing_an_unknown_lease_changes_nothing() {
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    session(&mut ledger, 1, T0);
    let (result, changes) = apply(
        &mut ledger,
        T0,
        Command::Remove {
            lease_id: LeaseId(99),
        },
    );
    assert_eq!(result, Ok(Outcome::NotHeld));
    assert!(changes.is_empty());
}
