//! The in-memory store: the reference model of the [`Store`] contract.

use std::collections::BTreeMap;

use usher_core::{Change, Lease, LeaseId, Millis, Session, SessionId};

use crate::{
    Snapshot, Store, StoreError,
    chain::{GENESIS, record_hash},
    usage::{Entry, LogEvent, UsageEvent, UsageRecord},
};

/// A [`Store`] that keeps everything in memory and forgets it when dropped.
///
/// It exists to be obviously right rather than fast: it is the model the SQLite store is
/// checked against, and a quick stand-in for tests of the server. Each commit copies the
/// tables, applies the batch to the copy, and keeps the copy only if the whole batch
/// succeeded, which is atomicity in its plainest form (and costs time proportional to the
/// number of stored rows, so do not use it for a million sessions).
///
/// "Durable" here means "for as long as this value lives".
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    tables: Tables,
    meta: BTreeMap<String, Vec<u8>>,
    usage: Vec<UsageRecord>,
}

#[derive(Debug, Clone, Default)]
struct Tables {
    sessions: BTreeMap<SessionId, Session>,
    leases: BTreeMap<LeaseId, Lease>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn next_seq(&self) -> i64 {
        self.usage.last().map_or(1, |r| r.seq + 1)
    }

    /// Chains `records` (numbered from `next_seq`) after the log and appends them.
    fn append(&mut self, records: Vec<UsageRecord>) {
        let mut prev = self.usage.last().map_or(GENESIS, |r| r.hash);
        for mut record in records {
            record.hash = record_hash(&prev, &record);
            prev = record.hash;
            self.usage.push(record);
        }
    }
}

impl Tables {
    fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        match change {
            Change::SessionOpened(session) => {
                let stored = Session {
                    expires_at: 0,
                    connected: false,
                    detached: false,
                    ..session.clone()
                };
                self.sessions.insert(session.id, stored);
            }
            Change::SessionClosed(id) => {
                self.leases.retain(|_, lease| lease.session != *id);
                self.sessions.remove(id);
            }
            Change::LeaseGranted(lease) => {
                if !self.sessions.contains_key(&lease.session) {
                    return Err(StoreError::UnknownSession {
                        lease: lease.id,
                        session: lease.session,
                    });
                }
                self.leases.insert(lease.id, lease.clone());
            }
            Change::LeaseReleased { lease, .. } => {
                self.leases.remove(&lease.id);
            }
            Change::LeaseLingering(lease) => {
                self.leases.insert(lease.id, lease.clone());
            }
            // The queue is soft state: only its log records are kept.
            Change::Queued(_) | Change::Dequeued { .. } => {}
        }
        Ok(())
    }

    /// The usage record of `change`, with user, host and display taken from the session
    /// as it stands now.
    fn record(&self, seq: i64, at: Millis, change: &Change) -> UsageRecord {
        let entry = Entry::for_change(change);
        let who = entry
            .session
            .and_then(|id| self.sessions.get(&id))
            .map(|s| {
                let c = &s.client;
                (
                    c.user.to_string(),
                    c.host.to_string(),
                    c.display.to_string(),
                )
            });
        entry.record(seq, at, who)
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            sessions: self.tables.sessions.values().cloned().collect(),
            leases: self.tables.leases.values().cloned().collect(),
        })
    }

    fn commit_batch(
        &mut self,
        at: Millis,
        changes: &[Change],
        events: &[LogEvent],
    ) -> Result<(), StoreError> {
        if changes.is_empty() && events.is_empty() {
            return Ok(());
        }
        let mut tables = self.tables.clone();
        let mut records = Vec::with_capacity(changes.len());
        for (seq, change) in (self.next_seq()..).zip(changes) {
            // The session row must still exist when a close is logged (so the record names
            // its user) and must already exist when an open is logged: log closes first,
            // everything else after.
            let close_first = matches!(change, Change::SessionClosed(_));
            if close_first {
                records.push(tables.record(seq, at, change));
            }
            tables.apply(change)?;
            if !close_first {
                records.push(tables.record(seq, at, change));
            }
        }
        let first_event = self.next_seq() + records.len() as i64;
        records.extend(
            (first_event..)
                .zip(events)
                .map(|(seq, event)| event.record(seq, at)),
        );
        self.tables = tables;
        self.append(records);
        Ok(())
    }

    fn log_event(
        &mut self,
        at: Millis,
        event: UsageEvent,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let record = LogEvent::server(event, detail).record(self.next_seq(), at);
        self.append(vec![record]);
        Ok(())
    }

    fn usage_log(&self, after_seq: i64, limit: usize) -> Result<Vec<UsageRecord>, StoreError> {
        // Records are in seq order, so the first one past `after_seq` is found by bisection.
        let start = self.usage.partition_point(|r| r.seq <= after_seq);
        Ok(self.usage[start..].iter().take(limit).cloned().collect())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key).cloned())
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}
