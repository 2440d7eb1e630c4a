//! Snapshots carry the ledger's sessions and leases, and the retired member ids, to
//! another member and across a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder,
};
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

/// A new state machine in `dir` that installed a snapshot `from` builds now.
async fn copy_snapshot(from: &mut StateMachine, dir: &Path) -> StateMachine {
    let snapshot = from
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut to = StateMachine::open(dir, ledger()).unwrap();
    to.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    to
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
    let b = copy_snapshot(&mut a, dir_b.path()).await;
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

fn membership(index: u64, voters: &[u64]) -> Entry<usher_cluster::TypeConfig> {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|&id| (id, BasicNode::new(format!("127.0.0.1:{}", 1650 + id))))
        .collect();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    }
}

#[tokio::test]
async fn a_removed_member_stays_retired_in_snapshots_and_after_a_restart() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = StateMachine::open(dir_a.path(), ledger()).unwrap();
    a.apply([membership(1, &[1, 2, 3]), membership(2, &[1, 2, 3, 4])])
        .await
        .unwrap();
    assert!(a.retired().is_empty(), "nobody left yet");
    a.apply([membership(3, &[1, 2, 4])]).await.unwrap();
    assert_eq!(a.retired(), BTreeSet::from([3]));
    let b = copy_snapshot(&mut a, dir_b.path()).await;
    assert_eq!(b.retired(), BTreeSet::from([3]));
    drop(b);
    let b = StateMachine::open(dir_b.path(), ledger()).unwrap();
    assert_eq!(
        b.retired(),
        BTreeSet::from([3]),
        "restarted from its snapshot"
    );
}

#[tokio::test]
async fn a_snapshot_from_before_retired_ids_loads() {
    let dir = TempDir::new().unwrap();
    let mut a = StateMachine::open(dir.path(), ledger()).unwrap();
    let commands = vec![open(1, "ann"), checkout(1, 11)];
    a.apply([
        membership(1, &[1, 2]),
        entry(2, usher_core::Entry { at: T0, commands }),
        membership(3, &[1]),
    ])
    .await
    .unwrap();
    a.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop(a);

    // The snapshot file as a member that did not know of retired ids wrote it.
    let path = dir.path().join("snapshot.json");
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let data: Vec<u8> = serde_json::from_value(file["data"].clone()).unwrap();
    let mut image: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert!(image.as_object_mut().unwrap().remove("retired").is_some());
    file["data"] = serde_json::to_value(serde_json::to_vec(&image).unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();

    let old = StateMachine::open(dir.path(), ledger()).unwrap();
    assert!(old.retired().is_empty());
    assert_eq!(leases(&old), [11]);
}
