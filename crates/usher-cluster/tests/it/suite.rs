//! openraft's own conformance suite, run against the SQLite log store and the ledger
//! state machine.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use usher_cluster::{LogStore, NodeId, StateMachine, TypeConfig};

use crate::util::ledger;

/// A fresh log and state machine in a directory of their own, removed with the guard.
struct Fresh;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Fresh {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = TempDir::new().expect("temporary directory");
        let log = LogStore::open(&dir.path().join("raft-log.db")).expect("open the log");
        let state = StateMachine::open(dir.path(), ledger()).expect("open the state machine");
        Ok((dir, log, state))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Fresh).expect("every storage conformance test passes");
}
