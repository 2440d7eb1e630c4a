//! usher's durable store: the sessions and leases the ledger has granted, and the usage log.
//!
//! The ledger (`usher-core`) is pure; this crate is where its effects become durable. The
//! server's ledger task applies commands, collects the resulting [`Change`]s, hands them to
//! [`Store::commit`] as one batch, and only after that returns tells anybody about the
//! grants. After a crash it calls [`Store::load`] and rebuilds the ledger from the
//! [`Snapshot`] (`Ledger::restore`).
//!
//! **Architecture invariant:** a grant or release is durable before the client hears of it.
//! [`Store::commit`] returning `Ok` is the moment it becomes durable.
//!
//! **Architecture invariant:** this is the only crate that knows SQL. Nothing SQLite-shaped
//! appears in its public API (errors carry SQLite's as an opaque source).
//!
//! # Backends
//!
//! - [`SqliteStore`]: the real one. One SQLite file in WAL mode with `synchronous=FULL`,
//!   `foreign_keys=ON`, and a schema versioned by `PRAGMA user_version`.
//! - [`MemoryStore`]: a plain in-memory model with no durability, used as the reference
//!   model in tests and for fast tests of the server. Both pass the same conformance suite
//!   (`tests/it/conformance/`).
//!
//! # Why one writer thread and group commit
//!
//! Durability costs one `fsync` per transaction, and an fsync costs milliseconds on
//! ordinary disks, far more than the SQL around it. If every grant were its own
//! transaction, the server could grant only as many seats per second as the disk can
//! fsync. Instead one writer drains every command that is waiting, applies them all, and
//! commits their changes in **one** transaction: one fsync per batch, whatever its size.
//! Under load, batches grow by themselves and throughput scales with the batch; with one
//! client, latency is one fsync. A rough measurement on the 2-core development VM (ext4,
//! `examples/group_commit.rs`): a commit of 1, 10 or 100 changes took about 4 ms, one of
//! 1,000 changes about 9 ms; that is ~250 changes/s one per transaction against ~100,000/s
//! in batches of a thousand.
//!
//! A single writer is also what SQLite wants: it admits one writer at a time anyway, so
//! several writing connections would only queue on its lock (`SQLITE_BUSY` and busy
//! waits). And a rusqlite `Connection` is `Send` but not `Sync` (it holds `RefCell`s), so
//! the natural owner is one dedicated thread (or `spawn_blocking`), which is why [`Store`]
//! requires only `Send` and takes `&mut self` to write. Readers that want to run beside
//! the writer (reports, admin queries) should open their own connections.

mod backup;
pub mod chain;
mod error;
mod memory;
mod schema;
mod sqlite;
mod usage;

use usher_core::{Change, Lease, Millis, Session};

pub use backup::{CopyCheck, CopyError, check_copy};
pub use error::{Cause, StoreError};
pub use memory::MemoryStore;
pub use schema::SCHEMA_VERSION;
pub use sqlite::{ChainReport, LEGACY_PSEUDONYM_KEY, SqliteStore};
pub use usage::{
    DETAIL_BORROW_ENDED, DETAIL_IDLE_TIMEOUT, DETAIL_LINGER_OVER, DETAIL_OVERDRAFT, DETAIL_REUSED,
    DETAIL_SESSION_CLOSED, LogEvent, UsageEvent, UsageRecord,
};

/// Everything a restarted server needs to rebuild its ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Sessions opened and not closed, in ascending id order. Their soft state is reset:
    /// `expires_at` is 0 and `connected` is false (the ledger gives each a fresh TTL).
    pub sessions: Vec<Session>,
    /// Leases granted and not released, in ascending id order.
    pub leases: Vec<Lease>,
}

/// Durable storage for the ledger's sessions and leases, and the usage log.
///
/// To ensure correctness, an implementation must guarantee:
///
/// 1. **Durability.** A [`commit`](Store::commit) that returns `Ok` is durable (fsynced):
///    every later [`load`](Store::load), in this process or after a crash or power loss,
///    reflects it. The same holds for [`log_event`](Store::log_event) and
///    [`set_meta`](Store::set_meta).
/// 2. **Atomicity.** A commit applies all of its changes or none of them, across crashes
///    too. A batch refused for its content ([`StoreError::UnknownSession`]) leaves the store
///    unchanged. After any other error the batch may or may not have become durable (an
///    fsync that fails may still have written), so the caller must not tell anybody about
///    its effects, and should stop and recover through `load` rather than carry on with a
///    ledger that may disagree with the store.
/// 3. **Load is exact.** `load` returns exactly the sessions opened and not closed, and the
///    leases granted and not released (nor dropped with their session), by committed
///    batches, each as last written, in ascending id order, with the session soft state
///    reset (see [`Snapshot`]).
/// 4. **Changes are applied in order, and are safe to repeat.** `SessionOpened` and
///    `LeaseGranted` store their row, replacing any row with the same id (a lease id
///    names one lease: the ledger grants each id once, and a lease never changes
///    session, so the SQLite store keys a lease by its session and id); releasing a
///    lease that is not stored, or closing a session that is not stored, does nothing.
///    `SessionClosed` also drops any lease of that session still stored (the ledger
///    releases them first, so normally there is none). A `LeaseGranted` whose session is
///    not stored at that point of the batch is refused with [`StoreError::UnknownSession`].
/// 5. **The usage log is append-only.** Each committed change appends exactly one
///    [`UsageRecord`], in change order, with the batch's `at`, followed by one record per
///    [`LogEvent`] of the batch, in order, with its columns as given; `seq` starts at 1
///    and strictly increases with no gaps; records are never changed or removed.
///    (Re-applying a batch therefore duplicates its records; the log is history, not
///    state.)
/// 6. **The usage log is a hash chain.** Each record's `hash` is
///    [`chain::record_hash`] of the previous record's hash (or [`chain::GENESIS`]) and the
///    record, written in the same transaction as the record.
/// 7. **Empty batches are free.** Committing no changes and no events writes nothing and
///    does not fsync.
///
/// A store is `Send` but need not be `Sync`: exactly one writer (the server's ledger task)
/// owns it. See the crate docs for why.
pub trait Store: Send {
    /// Reads every stored session and lease (see rule 3).
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// Durably applies one batch of changes in one transaction, and appends their usage
    /// records; `at` is when the batch was committed, recorded in the usage log.
    fn commit(&mut self, at: Millis, changes: &[Change]) -> Result<(), StoreError> {
        self.commit_batch(at, changes, &[])
    }

    /// [`commit`](Store::commit), and in the same transaction append `events` to the usage
    /// log after the changes' records (see rule 5): what the ledger did without changing
    /// state, such as refusing a checkout.
    fn commit_batch(
        &mut self,
        at: Millis,
        changes: &[Change],
        events: &[LogEvent],
    ) -> Result<(), StoreError>;

    /// Durably appends a server-level event (e.g. [`UsageEvent::ServerStart`]) to the usage
    /// log at once, in its own transaction; it is not held back for the next batch, so an
    /// event logged just before exit (`server_stop`) is not lost. The record has no
    /// session or lease columns.
    fn log_event(
        &mut self,
        at: Millis,
        event: UsageEvent,
        detail: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Reads up to `limit` usage records with `seq > after_seq`, in `seq` order. Start with
    /// `after_seq = 0`, then pass the last `seq` seen to continue.
    fn usage_log(&self, after_seq: i64, limit: usize) -> Result<Vec<UsageRecord>, StoreError>;

    /// Reads a value from the store's key-value side table, for small server state that
    /// must survive restarts (e.g. a node id). `None` if never set.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Durably sets a value in the key-value side table, replacing any previous one.
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn load(&self) -> Result<Snapshot, StoreError> {
        (**self).load()
    }

    fn commit_batch(
        &mut self,
        at: Millis,
        changes: &[Change],
        events: &[LogEvent],
    ) -> Result<(), StoreError> {
        (**self).commit_batch(at, changes, events)
    }

    fn log_event(
        &mut self,
        at: Millis,
        event: UsageEvent,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        (**self).log_event(at, event, detail)
    }

    fn usage_log(&self, after_seq: i64, limit: usize) -> Result<Vec<UsageRecord>, StoreError> {
        (**self).usage_log(after_seq, limit)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get_meta(key)
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        (**self).set_meta(key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server moves its store into the ledger task (or a blocking thread): every
    /// backend, and the boxed trait object, must be `Send`.
    #[test]
    fn stores_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<SqliteStore>();
        assert_send::<MemoryStore>();
        assert_send::<Box<dyn Store>>();
        assert_send::<StoreError>();
    }
}
