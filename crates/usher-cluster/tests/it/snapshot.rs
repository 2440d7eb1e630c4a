//! Snapshots carry the ledger's sessions and leases to another member and across a
//! restart.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use tempfile::TempDir;
use usher_cluster::StateMachine;
use usher_core::{Denial, Outcome};

use crate::util::{SEATS, T0, checkout, ledger, open};

fn entry(index: u64, batch: usher_core::Entry) -> Entry<usher_cluster::TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(batch),
    }
}

fn leases(state: &StateMachine) -> Vec<u64> {
    state.read(|ledger, _| ledger.leases().map(|l| l.id.0).collect())
}

#[tokio::test]
async fn a_snapshot_restores_the_seats_elsewhere_and_after_a_restart() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = StateMachine::open(dir_a.path(), ledger()).unwrap();
    let commands = vec![
        open(1, "ann"),
        open(2, "bob"),
        checkout(1, 11),
        checkout(2, 12),
    ];
    a.apply([entry(1, usher_core::Entry { at: T0, commands })])
        .await
        .unwrap();
    let snapshot = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let mut b = StateMachine::open(dir_b.path(), ledger()).unwrap();
    b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert_eq!(leases(&b), [11, 12]);
    assert_eq!(b.read(|_, applied| applied), Some(1));

    // Restarted from its snapshot file, the member still counts both seats as held.
    drop(b);
    let mut b = StateMachine::open(dir_b.path(), ledger()).unwrap();
    assert_eq!(leases(&b), [11, 12]);
    let batch = usher_core::Entry {
        at: T0 + 1_000,
        commands: vec![open(3, "cy"), checkout(3, 13)],
    };
    let applied = b.apply([entry(2, batch)]).await.unwrap();
    assert!(
        matches!(
            applied[0].outcomes[1],
            Ok(Outcome::Denied(Denial::AllInUse { in_use: SEATS, .. }))
        ),
        "{applied:?}"
    );
}
