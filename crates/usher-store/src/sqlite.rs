//! The SQLite store.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{
    CachedStatement, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
};
use usher_core::{Change, ClientInfo, Lease, LeaseId, Millis, Session, SessionId};

use crate::{
    Snapshot, Store, StoreError,
    error::{Context, sqlite},
    schema,
    usage::{Entry, UsageEvent, UsageRecord, describe},
};

/// How long a statement waits for a lock held by another connection (a reader running a
/// report, a backup) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Store`] in one SQLite file.
///
/// The file is in WAL mode with `synchronous=FULL`: a commit returns only after its WAL
/// frames are fsynced, and readers on other connections never block the writer. See the
/// crate docs for why one thread should own it.
///
/// The inherent methods are the [`Store`] methods (so callers need not import the trait);
/// the trait documents their contract.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file (and its parent directories) if needed
    /// and bringing its schema up to date.
    ///
    /// Refuses a file written by a newer usher ([`StoreError::SchemaTooNew`]), a database
    /// that is not an usher store ([`StoreError::NotAStore`]), and a file system on which
    /// SQLite cannot use WAL ([`StoreError::NoWal`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let what = || format!("opening store at {}", path.display());
        // No SQLITE_OPEN_URI: a path is a path, even if it starts with "file:".
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).context(what)?;
        conn.busy_timeout(BUSY_TIMEOUT).context(what)?;
        // Look before touching: switching to WAL rewrites the file header, which must not
        // happen to somebody else's database.
        schema::check(&conn, path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .context(what)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .context(what)?;
        conn.pragma_update(None, "foreign_keys", true)
            .context(what)?;
        let found = schema::migrate(&mut conn, path)?;
        if found != schema::SCHEMA_VERSION {
            tracing::info!(
                path = %path.display(),
                from = found,
                to = schema::SCHEMA_VERSION,
                "migrated store schema"
            );
        }
        Ok(SqliteStore {
            conn,
            path: path.to_owned(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// See [`Store::load`].
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        // One read transaction, so sessions and leases come from the same moment.
        let tx = self
            .conn
            .unchecked_transaction()
            .context(|| "starting to load".into())?;
        let sessions = by_u64_id(&tx, SELECT_SESSIONS, session_from_row)
            .context(|| "loading sessions".into())?;
        let leases =
            by_u64_id(&tx, SELECT_LEASES, lease_from_row).context(|| "loading leases".into())?;
        Ok(Snapshot { sessions, leases })
    }

    /// See [`Store::commit`]. One `BEGIN IMMEDIATE` … `COMMIT` per non-empty batch.
    pub fn commit(&mut self, at: Millis, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let n = changes.len();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| format!("starting batch of {n} changes"))?;
        {
            let mut batch =
                Batch::prepare(&tx).context(|| format!("preparing batch of {n} changes"))?;
            for (i, change) in changes.iter().enumerate() {
                if let Err(e) = batch.apply(at, change) {
                    // Dropping `tx` rolls the whole batch back.
                    return Err(match change {
                        Change::LeaseGranted(l) if is_foreign_key_violation(&e) => {
                            StoreError::UnknownSession {
                                lease: l.id,
                                session: l.session,
                            }
                        }
                        _ => sqlite(
                            format!(
                                "committing batch of {n} changes: change {i} ({})",
                                describe(change)
                            ),
                            e,
                        ),
                    });
                }
            }
        }
        tx.commit()
            .context(|| format!("committing batch of {n} changes"))
    }

    /// See [`Store::log_event`]. Written and fsynced at once, in its own transaction.
    pub fn log_event(
        &mut self,
        at: Millis,
        event: UsageEvent,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(APPEND_USAGE)
            .and_then(|mut st| {
                st.execute(params![
                    at as i64,
                    event.as_str(),
                    None::<i64>,
                    None::<i64>,
                    None::<&str>,
                    None::<&str>,
                    None::<&str>,
                    None::<i64>,
                    detail,
                ])
            })
            .map(drop)
            .context(|| format!("logging event {event}"))
    }

    /// See [`Store::usage_log`].
    pub fn usage_log(&self, after_seq: i64, limit: usize) -> Result<Vec<UsageRecord>, StoreError> {
        // A limit beyond i64 is no limit; SQLite reads a negative LIMIT the same way.
        let limit = i64::try_from(limit).unwrap_or(-1);
        self.conn
            .prepare_cached(SELECT_USAGE)
            .and_then(|mut st| {
                st.query_map(params![after_seq, limit], usage_from_row)?
                    .collect()
            })
            .context(|| format!("reading usage log after seq {after_seq}"))
    }

    /// The highest lease id ever granted (0 if none): the larger of the held leases' ids
    /// and the newest checkout in the usage log. Lease ids only grow, so a server that
    /// allocates above this never hands out a handle that was used before, even for leases
    /// long since released.
    pub fn max_lease_id(&self) -> Result<u64, StoreError> {
        let held: Option<i64> = self
            .conn
            .query_row("SELECT max(id) FROM leases", [], |r| r.get(0))
            .context(|| "reading the highest lease id".into())?;
        let logged: Option<i64> = self
            .conn
            .query_row(
                "SELECT lease FROM usage_log WHERE event = 'checkout' ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .context(|| "reading the newest checkout".into())?
            .flatten();
        // Ids are stored bit-cast from u64; cast back the same way.
        Ok([held, logged]
            .into_iter()
            .flatten()
            .map(|v| v as u64)
            .max()
            .unwrap_or(0))
    }

    /// See [`Store::get_meta`].
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .context(|| format!("reading meta key {key:?}"))
    }

    /// See [`Store::set_meta`]. Written and fsynced at once.
    pub fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut st| st.execute(params![key, value]))
            .map(drop)
            .context(|| format!("writing meta key {key:?}"))
    }
}

impl Store for SqliteStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        SqliteStore::load(self)
    }

    fn commit(&mut self, at: Millis, changes: &[Change]) -> Result<(), StoreError> {
        SqliteStore::commit(self, at, changes)
    }

    fn log_event(
        &mut self,
        at: Millis,
        event: UsageEvent,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        SqliteStore::log_event(self, at, event, detail)
    }

    fn usage_log(&self, after_seq: i64, limit: usize) -> Result<Vec<UsageRecord>, StoreError> {
        SqliteStore::usage_log(self, after_seq, limit)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        SqliteStore::get_meta(self, key)
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        SqliteStore::set_meta(self, key, value)
    }
}

// Every statement stores u64 ids, times and client refs bit-cast to i64 (see `schema`).

const UPSERT_SESSION: &str = "
INSERT INTO sessions
    (id, secret_hash, user, host, display, pid, program, program_version, address, opened_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (id) DO UPDATE SET
    secret_hash = excluded.secret_hash, user = excluded.user, host = excluded.host,
    display = excluded.display, pid = excluded.pid, program = excluded.program,
    program_version = excluded.program_version, address = excluded.address,
    opened_at = excluded.opened_at";

const UPSERT_LEASE: &str = "
INSERT INTO leases
    (id, session, feature, vendor, requested_version, pool_version, count, granted_at, client_ref)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (id) DO UPDATE SET
    session = excluded.session, feature = excluded.feature, vendor = excluded.vendor,
    requested_version = excluded.requested_version, pool_version = excluded.pool_version,
    count = excluded.count, granted_at = excluded.granted_at, client_ref = excluded.client_ref";

const DELETE_LEASE: &str = "DELETE FROM leases WHERE id = ?1";
const DELETE_SESSION_LEASES: &str = "DELETE FROM leases WHERE session = ?1";
const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id = ?1";

/// Appends one usage record, copying user, host and display from the session row (if it
/// is stored) so the record outlives the session. ?3 is the session id, or NULL.
const APPEND_USAGE: &str = "
INSERT INTO usage_log
    (at, event, session, lease, feature, vendor, version, count, user, host, display, detail)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, s.user, s.host, s.display, ?9
FROM (SELECT 1) LEFT JOIN sessions AS s ON s.id = ?3";

const SELECT_USAGE: &str = "
SELECT seq, at, event, session, lease, feature, vendor, version, count, user, host, display, detail
FROM usage_log WHERE seq > ?1 ORDER BY seq LIMIT ?2";

/// ?1..?2 is an id range, so the same statement reads the two halves of the u64 space.
const SELECT_SESSIONS: &str = "
SELECT id, secret_hash, user, host, display, pid, program, program_version, address, opened_at
FROM sessions WHERE id BETWEEN ?1 AND ?2 ORDER BY id";

const SELECT_LEASES: &str = "
SELECT id, session, feature, vendor, requested_version, pool_version, count, granted_at, client_ref
FROM leases WHERE id BETWEEN ?1 AND ?2 ORDER BY id";

/// The statements of one batch, prepared (or fetched from the connection's cache) once.
struct Batch<'conn> {
    upsert_session: CachedStatement<'conn>,
    upsert_lease: CachedStatement<'conn>,
    delete_lease: CachedStatement<'conn>,
    delete_session_leases: CachedStatement<'conn>,
    delete_session: CachedStatement<'conn>,
    append_usage: CachedStatement<'conn>,
}

impl<'conn> Batch<'conn> {
    fn prepare(conn: &'conn Connection) -> rusqlite::Result<Self> {
        Ok(Batch {
            upsert_session: conn.prepare_cached(UPSERT_SESSION)?,
            upsert_lease: conn.prepare_cached(UPSERT_LEASE)?,
            delete_lease: conn.prepare_cached(DELETE_LEASE)?,
            delete_session_leases: conn.prepare_cached(DELETE_SESSION_LEASES)?,
            delete_session: conn.prepare_cached(DELETE_SESSION)?,
            append_usage: conn.prepare_cached(APPEND_USAGE)?,
        })
    }

    /// Applies one change and appends its usage record.
    fn apply(&mut self, at: Millis, change: &Change) -> rusqlite::Result<()> {
        match change {
            Change::SessionOpened(s) => {
                let c = &s.client;
                self.upsert_session.execute(params![
                    s.id.0 as i64,
                    &s.secret_hash[..],
                    c.user,
                    c.host,
                    c.display,
                    c.pid,
                    c.program,
                    c.program_version,
                    c.address,
                    s.opened_at as i64,
                ])?;
                self.log(at, change)
            }
            Change::SessionClosed(id) => {
                // Log first, while the session row can still lend its user to the record.
                self.log(at, change)?;
                let orphans = self.delete_session_leases.execute([id.0 as i64])?;
                if orphans > 0 {
                    tracing::warn!(
                        session = %id,
                        leases = orphans,
                        "session closed while still holding leases; dropped them"
                    );
                }
                self.delete_session.execute([id.0 as i64])?;
                Ok(())
            }
            Change::LeaseGranted(l) => {
                self.upsert_lease.execute(params![
                    l.id.0 as i64,
                    l.session.0 as i64,
                    l.feature,
                    l.vendor,
                    l.requested_version,
                    l.pool_version,
                    l.count,
                    l.granted_at as i64,
                    l.client_ref as i64,
                ])?;
                self.log(at, change)
            }
            Change::LeaseReleased { lease, .. } => {
                self.delete_lease.execute([lease.id.0 as i64])?;
                self.log(at, change)
            }
        }
    }

    fn log(&mut self, at: Millis, change: &Change) -> rusqlite::Result<()> {
        let entry = Entry::for_change(change);
        let lease = entry.lease;
        self.append_usage.execute(params![
            at as i64,
            entry.event.as_str(),
            entry.session.map(|s| s.0 as i64),
            lease.map(|l| l.id.0 as i64),
            lease.map(|l| &l.feature),
            lease.map(|l| &l.vendor),
            lease.map(|l| &l.pool_version),
            lease.map(|l| l.count),
            entry.detail,
        ])?;
        Ok(())
    }
}

fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_extended_error_code() == Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// Runs `sql` (which selects rows with ids between ?1 and ?2, in id order) so that the rows
/// come back in ascending **u64** order: ids stored as non-negative i64 first, then those
/// that bit-cast to negative. Two range scans of the primary key; no sort.
fn by_u64_id<T>(
    conn: &Connection,
    sql: &str,
    from_row: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut st = conn.prepare_cached(sql)?;
    let mut out = Vec::new();
    for (lo, hi) in [(0, i64::MAX), (i64::MIN, -1)] {
        for row in st.query_map([lo, hi], from_row)? {
            out.push(row?);
        }
    }
    Ok(out)
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: SessionId(r.get::<_, i64>(0)? as u64),
        secret_hash: r.get(1)?,
        client: ClientInfo {
            user: r.get(2)?,
            host: r.get(3)?,
            display: r.get(4)?,
            pid: r.get(5)?,
            program: r.get(6)?,
            program_version: r.get(7)?,
            address: r.get(8)?,
        },
        opened_at: r.get::<_, i64>(9)? as u64,
        // Soft state: the ledger gives every recovered session a fresh TTL.
        expires_at: 0,
        connected: false,
    })
}

fn lease_from_row(r: &Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        id: LeaseId(r.get::<_, i64>(0)? as u64),
        session: SessionId(r.get::<_, i64>(1)? as u64),
        feature: r.get(2)?,
        vendor: r.get(3)?,
        requested_version: r.get(4)?,
        pool_version: r.get(5)?,
        count: r.get(6)?,
        granted_at: r.get::<_, i64>(7)? as u64,
        client_ref: r.get::<_, i64>(8)? as u64,
    })
}

fn usage_from_row(r: &Row<'_>) -> rusqlite::Result<UsageRecord> {
    Ok(UsageRecord {
        seq: r.get(0)?,
        at: r.get::<_, i64>(1)? as u64,
        event: UsageEvent::from(r.get::<_, String>(2)?.as_str()),
        session: r.get::<_, Option<i64>>(3)?.map(|id| SessionId(id as u64)),
        lease: r.get::<_, Option<i64>>(4)?.map(|id| LeaseId(id as u64)),
        feature: r.get(5)?,
        vendor: r.get(6)?,
        version: r.get(7)?,
        count: r.get(8)?,
        user: r.get(9)?,
        host: r.get(10)?,
        display: r.get(11)?,
        detail: r.get(12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(store: &SqliteStore, name: &str) -> i64 {
        store
            .conn
            .pragma_query_value(None, name, |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_connection_is_durable_and_checks_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(pragma(&store, "synchronous"), 2, "synchronous=FULL");
        assert_eq!(pragma(&store, "foreign_keys"), 1);
        assert_eq!(
            pragma(&store, "busy_timeout"),
            BUSY_TIMEOUT.as_millis() as i64
        );
    }
}
