//! The durable Raft log: one SQLite file, served by a worker thread of its own.
//!
//! openraft drives storage from its core task, so storage that blocks stalls elections
//! and replication (openraft#185). Every operation here is a job for one dedicated
//! thread that owns the SQLite connection; the async methods only queue a job and await
//! its reply. Jobs run in the order they were queued, which gives the two properties
//! openraft needs from `append`: entries are readable as soon as `append` returns (a
//! later read is queued behind the write), and completions are reported in append order
//! (openraft#1960).
//!
//! The file runs in WAL mode with `synchronous=FULL`: a commit returns once it is on
//! disk, so an append is reported flushed, and a vote saved, only when durable.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::{NodeId, TypeConfig};

/// A job for the worker thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

type Result<T, E = StorageError<NodeId>> = std::result::Result<T, E>;

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
";

/// The key of the vote in the `meta` table.
const VOTE: &str = "vote";
/// The key of the last committed log id.
const COMMITTED: &str = "committed";
/// The key of the last purged log id.
const PURGED: &str = "purged";

/// The Raft log of one member, in SQLite.
///
/// Cheap to clone: every clone queues jobs for the same worker thread, which ends when
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct LogStore {
    jobs: mpsc::Sender<Job>,
}

impl LogStore {
    /// Opens (creating if needed) the log at `path` and starts its worker thread.
    pub fn open(path: &Path) -> io::Result<LogStore> {
        let conn = Connection::open(path).map_err(io::Error::other)?;
        conn.execute_batch(SCHEMA).map_err(io::Error::other)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("usher-raft-log".into())
            .spawn(move || {
                let mut conn = conn;
                for job in queue {
                    job(&mut conn);
                }
            })?;
        Ok(LogStore { jobs })
    }

    /// Runs `job` on the worker thread and waits for its result.
    async fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                // The caller may have given up waiting; then nobody needs the result.
                let _ = reply.send(job(conn));
            }))
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

/// The error when the worker thread is gone (it panicked).
fn stopped() -> StorageError<NodeId> {
    StorageIOError::read_logs(&io::Error::other("the log store's worker thread stopped")).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let (start, end) = sql_range(&range);
        self.call(move |conn| read_entries(conn, start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        self.call(|conn| {
            let last_purged_log_id = read_meta(conn, PURGED)?;
            let last = conn
                .query_row(
                    "SELECT entry FROM log ORDER BY idx DESC LIMIT 1",
                    [],
                    |row| row.get::<_, Vec<u8>>(0),
                )
                .optional()
                .map_err(|e| StorageIOError::read_logs(&e))?;
            let last_log_id = match last {
                Some(bytes) => Some(decode_entry(&bytes)?.log_id),
                None => last_purged_log_id,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        let vote = *vote;
        self.call(move |conn| {
            write_meta(conn, VOTE, &vote).map_err(|e| StorageIOError::write_vote(&e).into())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.call(|conn| read_meta(conn, VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        self.call(move |conn| {
            write_meta(conn, COMMITTED, &committed).map_err(|e| StorageIOError::write(&e).into())
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        self.call(|conn| Ok(read_meta::<Option<LogId<NodeId>>>(conn, COMMITTED)?.flatten()))
            .await
    }

    /// Queues the entries and returns at once; the worker writes them in one transaction
    /// and reports them flushed through `callback` once committed.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        self.jobs
            .send(Box::new(move |conn| {
                callback.log_io_completed(write_entries(conn, &entries).map_err(io::Error::other));
            }))
            .map_err(|_| stopped())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM log WHERE idx >= ?1",
                params![sql_index(log_id.index)],
            )
            .map_err(|e| StorageIOError::write_logs(&e))?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.call(move |conn| {
            purge(conn, log_id).map_err(|e| StorageIOError::write_logs(&e).into())
        })
        .await
    }
}

/// Writes `entries` (replacing any at the same index) in one transaction.
fn write_entries(conn: &mut Connection, entries: &[Entry<TypeConfig>]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert =
            tx.prepare_cached("INSERT OR REPLACE INTO log (idx, entry) VALUES (?1, ?2)")?;
        for entry in entries {
            insert.execute(params![sql_index(entry.log_id.index), encode(entry)])?;
        }
    }
    tx.commit()
}

/// Records `log_id` as purged and deletes the entries up to it, in one transaction.
fn purge(conn: &mut Connection, log_id: LogId<NodeId>) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    write_meta(&tx, PURGED, &log_id)?;
    tx.execute(
        "DELETE FROM log WHERE idx <= ?1",
        params![sql_index(log_id.index)],
    )?;
    tx.commit()
}

/// The entries with indexes in `start..end`, in order.
fn read_entries(conn: &mut Connection, start: i64, end: i64) -> Result<Vec<Entry<TypeConfig>>> {
    let read = |e: rusqlite::Error| StorageError::from(StorageIOError::read_logs(&e));
    let mut query = conn
        .prepare_cached("SELECT entry FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
        .map_err(read)?;
    let rows = query
        .query_map(params![start, end], |row| row.get::<_, Vec<u8>>(0))
        .map_err(read)?;
    rows.map(|bytes| decode_entry(&bytes.map_err(read)?))
        .collect()
}

/// The value stored under `key`, if any.
fn read_meta<T: DeserializeOwned>(conn: &Connection, key: &str) -> Result<Option<T>> {
    let bytes = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get::<_, Vec<u8>>(0)
        })
        .optional()
        .map_err(|e| StorageIOError::read(&e))?;
    bytes
        .map(|b| serde_json::from_slice(&b).map_err(|e| StorageIOError::read(&e).into()))
        .transpose()
}

/// Stores `value` under `key`.
fn write_meta<T: Serialize>(conn: &Connection, key: &str, value: &T) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        params![key, encode(value)],
    )
    .map(drop)
}

fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>> {
    serde_json::from_slice(bytes).map_err(|e| StorageIOError::read_logs(&e).into())
}

/// JSON of a value of ours, which always serializes (no maps with non-string keys).
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("log entries and metadata serialize to JSON")
}

/// A log index as SQLite's signed integer (indexes never come near `i64::MAX`).
fn sql_index(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

/// `range` as the half-open range `start..end` of SQLite integers.
fn sql_range(range: &impl RangeBounds<u64>) -> (i64, i64) {
    let start = match range.start_bound() {
        Bound::Included(&i) => sql_index(i),
        Bound::Excluded(&i) => sql_index(i).saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => sql_index(i).saturating_add(1),
        Bound::Excluded(&i) => sql_index(i),
        Bound::Unbounded => i64::MAX,
    };
    (start, end)
}
