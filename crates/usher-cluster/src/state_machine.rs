//! The Raft state machine: committed batches applied to a ledger, and snapshots of it.

use std::collections::BTreeSet;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use usher_core::{Command, Lease, Ledger, Millis, Session};

use crate::{Applied, Member, NodeId, TypeConfig};

type Result<T, E = StorageError<NodeId>> = std::result::Result<T, E>;

/// The name of the current snapshot's file in the state machine's directory.
const SNAPSHOT_FILE: &str = "snapshot.json";

/// A member's ledger, changed only by applying committed log entries.
///
/// The ledger itself lives in memory; what makes it durable is the Raft log plus the
/// latest snapshot, which is kept in a file: after a restart the ledger is restored from
/// the snapshot and openraft applies the log entries after it again.
///
/// Cheap to clone: clones share one ledger (openraft builds snapshots from a clone while
/// it goes on applying).
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    dir: PathBuf,
}

#[derive(Debug)]
struct Inner {
    ledger: Ledger,
    /// The last entry applied.
    last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    membership: StoredMembership<NodeId, Member>,
    /// The time the last entry was applied at: entries apply at no earlier time.
    time: Millis,
    /// Above every lease id any applied entry used, granted or not: where a new leader's
    /// stamper starts, so no lease id is handed out twice across a failover.
    next_lease_id: u64,
    /// Every member id that was once in the membership and left it: never to be used
    /// again (a removed member restarted with an empty disk under its old id could help
    /// elect a second leader for a term it already voted in).
    retired: BTreeSet<NodeId>,
    /// The latest snapshot, built here or installed from the leader.
    snapshot: Option<StoredSnapshot>,
}

/// A snapshot as kept in memory and in its file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    /// [`LedgerImage`] as JSON.
    data: Vec<u8>,
}

/// The ledger's durable state at one log position: what a snapshot carries.
#[derive(Debug, Serialize, Deserialize)]
struct LedgerImage {
    time: Millis,
    /// See [`Inner::next_lease_id`]; 0 in a snapshot that predates it (then one above the
    /// highest lease it holds).
    #[serde(default)]
    next_lease_id: u64,
    /// See [`Inner::retired`]; empty in a snapshot that predates it.
    #[serde(default)]
    retired: BTreeSet<NodeId>,
    sessions: Vec<Session>,
    leases: Vec<Lease>,
}

impl StateMachine {
    /// The state machine of a member whose ledger starts as `ledger` (empty, with the
    /// licenses, policy and timing rules the member serves), keeping its snapshot in
    /// `dir`. If `dir` holds a snapshot, the ledger is restored from it.
    pub fn open(dir: &Path, ledger: Ledger) -> io::Result<StateMachine> {
        let mut inner = Inner {
            ledger,
            last_applied: None,
            membership: StoredMembership::default(),
            time: 0,
            next_lease_id: 1,
            retired: BTreeSet::new(),
            snapshot: None,
        };
        match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => {
                let snapshot: StoredSnapshot = serde_json::from_slice(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                inner
                    .install(snapshot)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(inner)),
            dir: dir.to_path_buf(),
        })
    }

    /// Reads the ledger as applied so far, with the index of the last entry applied.
    pub fn read<T>(&self, f: impl FnOnce(&Ledger, Option<u64>) -> T) -> T {
        let inner = self.lock();
        f(&inner.ledger, inner.last_applied.map(|id| id.index))
    }

    /// Where a new leader's [`usher_core::Stamper`] starts: the time of the last entry
    /// applied, and the first lease id no applied entry used.
    pub fn stamp_seed(&self) -> (Millis, u64) {
        let inner = self.lock();
        (inner.time, inner.next_lease_id)
    }

    /// The member ids that left the membership, as applied so far: none may be added
    /// again.
    pub fn retired(&self) -> BTreeSet<NodeId> {
        self.lock().retired.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while applying leaves a ledger half changed; nothing can be trusted.
        self.inner
            .lock()
            .expect("the state machine's lock is never poisoned")
    }

    /// Writes `snapshot` to its file, replacing the previous one atomically.
    async fn save(&self, snapshot: StoredSnapshot) -> Result<()> {
        let dir = self.dir.clone();
        let signature = snapshot.meta.signature();
        tokio::task::spawn_blocking(move || write_snapshot_file(&dir, &snapshot))
            .await
            .map_err(io::Error::other)
            .and_then(|written| written)
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
    }
}

impl Inner {
    /// Applies one entry at `max(entry.at, the previous entry's time)`, so ledger time
    /// never runs backwards even if a new leader's clock is behind the old one's.
    fn apply_entry(&mut self, mut entry: usher_core::Entry) -> Applied {
        self.time = self.time.max(entry.at);
        entry.at = self.time;
        for command in &entry.commands {
            if let Command::Checkout { ask, .. } | Command::Borrow { ask, .. } = command {
                self.next_lease_id = self.next_lease_id.max(ask.lease_id.0.saturating_add(1));
            }
        }
        // The changes are what a single server's store persists; here the log and the
        // snapshots are the durable record, so they are not kept.
        let mut changes = Vec::new();
        let outcomes = self.ledger.apply_entry(entry, &mut changes);
        Applied { outcomes }
    }

    /// Applies a membership entry: every member of the previous membership that is not
    /// in this one is retired.
    fn apply_membership(&mut self, log_id: LogId<NodeId>, membership: Membership<NodeId, Member>) {
        let left: Vec<NodeId> = self
            .membership
            .nodes()
            .map(|(&id, _)| id)
            .filter(|id| membership.get_node(id).is_none())
            .collect();
        self.retired.extend(left);
        self.membership = StoredMembership::new(Some(log_id), membership);
    }

    /// A snapshot of the ledger as applied so far.
    fn snapshot(&self, id: &str) -> StoredSnapshot {
        let image = LedgerImage {
            time: self.time,
            next_lease_id: self.next_lease_id,
            retired: self.retired.clone(),
            sessions: self
                .ledger
                .sessions()
                .chain(self.ledger.departed_sessions())
                .cloned()
                .collect(),
            leases: self.ledger.leases().cloned().collect(),
        };
        StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id: id.to_string(),
            },
            data: serde_json::to_vec(&image).expect("sessions and leases serialize to JSON"),
        }
    }

    /// Replaces the ledger's state with the snapshot's.
    fn install(&mut self, snapshot: StoredSnapshot) -> Result<(), serde_json::Error> {
        let image: LedgerImage = serde_json::from_slice(&snapshot.data)?;
        let highest_held = image.leases.iter().map(|l| l.id.0).max().unwrap_or(0);
        let next_lease_id = image.next_lease_id.max(highest_held.saturating_add(1));
        let mut restored = Ledger::restore(
            self.ledger.catalog().clone(),
            self.ledger.config(),
            image.sessions,
            image.leases,
            image.time,
            &mut Vec::new(),
        );
        restored.set_policy(self.ledger.policy().clone());
        self.ledger = restored;
        self.time = image.time;
        self.next_lease_id = next_lease_id;
        self.retired = image.retired;
        self.last_applied = snapshot.meta.last_log_id;
        self.membership = snapshot.meta.last_membership.clone();
        self.snapshot = Some(snapshot);
        Ok(())
    }
}

fn write_snapshot_file(dir: &Path, snapshot: &StoredSnapshot) -> io::Result<()> {
    let temp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(&serde_json::to_vec(snapshot).map_err(io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let snapshot = {
            let inner = self.lock();
            let id = match inner.last_applied {
                Some(last) => format!("{}-{}", last.leader_id, last.index),
                None => "empty".to_string(),
            };
            inner.snapshot(&id)
        };
        self.save(snapshot.clone()).await?;
        let data = snapshot.data.clone();
        let meta = snapshot.meta.clone();
        {
            let mut inner = self.lock();
            // A newer snapshot may have been installed meanwhile; keep the newer one.
            if inner
                .snapshot
                .as_ref()
                .is_none_or(|s| s.meta.last_log_id <= meta.last_log_id)
            {
                inner.snapshot = Some(snapshot);
            }
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>)> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut inner = self.lock();
        let applied = entries
            .into_iter()
            .map(|entry| {
                inner.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => Applied::default(),
                    EntryPayload::Normal(entry) => inner.apply_entry(entry),
                    EntryPayload::Membership(membership) => {
                        inner.apply_membership(entry.log_id, membership);
                        Applied::default()
                    }
                }
            })
            .collect();
        Ok(applied)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let snapshot = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        self.lock()
            .install(snapshot.clone())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.save(snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let inner = self.lock();
        Ok(inner.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
