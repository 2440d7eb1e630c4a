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
    chain::{ANCHOR_KEY, ChainBreak, HEAD_KEY, Head, Verifier, record_hash},
    error::{Context, sqlite},
    schema,
    usage::{Entry, LogEvent, UsageEvent, UsageRecord, describe},
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
    pub(crate) conn: Connection,
    path: PathBuf,
    /// Where the next usage record chains from. Read once when the store is opened and
    /// advanced only after a commit succeeds, so a rolled-back batch leaves it alone.
    head: Head,
    /// With [`SqliteStore::hide_identities`]: the key that turns user, host and display
    /// names into pseudonyms in the usage log.
    pseudonym_key: Option<[u8; 32]>,
}

/// The `meta` key under which earlier versions kept the pseudonym key (see
/// [`SqliteStore::take_legacy_pseudonym_key`]).
pub const LEGACY_PSEUDONYM_KEY: &str = "pseudonym_key";

/// Creates the store file, mode 0600 and never through a symbolic link, if it does not
/// exist. SQLite gives the `-wal` and `-shm` files it makes later the mode of the database
/// file, so they are private too: another user who could lock a byte of `-shm` could make
/// every commit fail, and one who could read the file would see every holder.
pub(crate) fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map(drop)
}

/// The pseudonym of a name under `key`: `anon-` and 16 hex digits of SHA-256 over the key
/// and the name. The same name always gets the same pseudonym in one store, so reports
/// still group by person, but the name cannot be read back by whoever lacks the key
/// (names are too many to try without it).
pub fn pseudonym(key: &[u8; 32], name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(key)
        .chain_update(name.as_bytes())
        .finalize();
    format!("anon-{}", hex::encode(&digest[..8]))
}

/// What [`SqliteStore::verify_usage_log`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Records checked and found intact (all of them if `broken` is `None`, else those
    /// before the break).
    pub records: u64,
    /// The head stored with the log, if any.
    pub head: Option<Head>,
    /// The first thing wrong, if anything is.
    pub broken: Option<ChainBreak>,
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
        create_private(path).map_err(|source| StoreError::CreateFile {
            path: path.to_owned(),
            source,
        })?;
        // No SQLITE_OPEN_URI: a path is a path, even if it starts with "file:".
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
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
        let head = current_head(&conn)
            .context(|| format!("reading the usage log head of store at {}", path.display()))?;
        Ok(SqliteStore {
            conn,
            path: path.to_owned(),
            head,
            pseudonym_key: None,
        })
    }

    /// Opens the store at `path` for reading only: for reports and `usher log verify`
    /// beside a running server (WAL lets readers and the writer work at once). Neither
    /// creates nor migrates anything and takes no write lock; the write methods fail.
    ///
    /// Refuses a file that does not exist, is not an usher store, or whose schema is
    /// older ([`StoreError::SchemaTooOld`]) or newer than this build's.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let what = || format!("opening store at {} read-only", path.display());
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).context(what)?;
        conn.busy_timeout(BUSY_TIMEOUT).context(what)?;
        let found = schema::check(&conn, path)?;
        if found < schema::SCHEMA_VERSION {
            return Err(StoreError::SchemaTooOld {
                path: path.to_owned(),
                found,
                needed: schema::SCHEMA_VERSION,
            });
        }
        let head = current_head(&conn).context(what)?;
        Ok(SqliteStore {
            conn,
            path: path.to_owned(),
            head,
            pseudonym_key: None,
        })
    }

    /// Walks the whole usage log in `seq` order, in one read transaction, checking the
    /// hash chain and comparing its end with the stored head (see `chain`). Reads in
    /// pages, so memory stays small however long the log.
    pub fn verify_usage_log(&self) -> Result<ChainReport, StoreError> {
        const PAGE: i64 = 10_000;
        let what = || "verifying the usage log".to_string();
        let tx = self.conn.unchecked_transaction().context(what)?;
        let head = read_head(&tx).context(what)?;
        let anchor = read_meta_head(&tx, ANCHOR_KEY)
            .context(what)?
            .ok()
            .flatten()
            .unwrap_or(Head::EMPTY);
        let mut verifier = Verifier::from_anchor(anchor);
        let mut checked = 0;
        let mut after = 0;
        let mut st = tx.prepare_cached(SELECT_USAGE).context(what)?;
        loop {
            let page: Vec<(UsageRecord, Option<Vec<u8>>)> = st
                .query_map(params![after, PAGE], |r| {
                    Ok((schema::usage_columns(r)?, r.get::<_, Option<Vec<u8>>>(13)?))
                })
                .and_then(|rows| rows.collect())
                .context(what)?;
            let Some(last) = page.last() else { break };
            after = last.0.seq;
            for (record, hash) in &page {
                let stored = hash.as_deref().and_then(|h| <[u8; 32]>::try_from(h).ok());
                if let Err(broken) = verifier.next(record, stored) {
                    return Ok(ChainReport {
                        records: checked,
                        head: head.ok().flatten(),
                        broken: Some(broken),
                    });
                }
                checked += 1;
            }
        }
        let (records, broken) = match head {
            Err(()) => (checked, Some(ChainBreak::NoHead)),
            Ok(h) => match verifier.finish(h) {
                Ok(n) => (n, None),
                Err(b) => (checked, Some(b)),
            },
        };
        Ok(ChainReport {
            records,
            head: head.ok().flatten(),
            broken,
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
        let leases = self.load_leases(&tx).context(|| "loading leases".into())?;
        Ok(Snapshot { sessions, leases })
    }

    /// Every lease in ascending u64 id order, read in `tx`.
    ///
    /// A restart waits for this, and with a million leases it is most of the wait: the
    /// rows are decoded one by one. So when there are many, the upper half of the id range
    /// is read at the same time on a second core, by a read-only connection of its own.
    /// That connection's read transaction is used only if it sees the same usage-log head
    /// as `tx`: every commit that changes a lease also appends a usage record, so the same
    /// head means the same leases. Otherwise (a commit landed in between) or if it fails,
    /// `tx` reads that half too.
    fn load_leases(&self, tx: &Connection) -> rusqlite::Result<Vec<Lease>> {
        /// Fewer ids than this are read on one thread: the second connection costs more
        /// than it saves.
        const SPLIT_AT: i64 = 100_000;
        let (lo, hi): (Option<i64>, Option<i64>) = tx.query_row(
            "SELECT min(id), max(id) FROM leases WHERE id >= 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return by_u64_id(tx, SELECT_LEASES, lease_from_row);
        };
        if hi - lo < SPLIT_AT {
            return by_u64_id(tx, SELECT_LEASES, lease_from_row);
        }
        let mid = lo + (hi - lo) / 2;
        let head = read_head(tx)?;
        let path = self.path.as_path();
        let (lower, upper) = std::thread::scope(|scope| {
            let helper = scope.spawn(move || {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                let tx = conn.unchecked_transaction()?;
                if read_head(&tx)? != head {
                    return Ok(None);
                }
                in_range(&tx, mid + 1, i64::MAX).map(Some)
            });
            let lower = in_range(tx, 0, mid);
            let upper: rusqlite::Result<Option<Vec<Lease>>> = helper.join().unwrap_or(Ok(None));
            (lower, upper)
        });
        let upper = match upper {
            Ok(Some(upper)) => upper,
            Ok(None) | Err(_) => in_range(tx, mid + 1, i64::MAX)?,
        };
        let mut leases = lower?;
        leases.extend(upper);
        leases.extend(in_range(tx, i64::MIN, -1)?);
        Ok(leases)
    }

    /// See [`Store::commit`].
    pub fn commit(&mut self, at: Millis, changes: &[Change]) -> Result<(), StoreError> {
        self.commit_batch(at, changes, &[])
    }

    /// See [`Store::commit_batch`]. One `BEGIN IMMEDIATE` … `COMMIT` per non-empty batch.
    pub fn commit_batch(
        &mut self,
        at: Millis,
        changes: &[Change],
        events: &[LogEvent],
    ) -> Result<(), StoreError> {
        if changes.is_empty() && events.is_empty() {
            return Ok(());
        }
        let n = changes.len();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| format!("starting batch of {n} changes"))?;
        let head = {
            let mut batch = Batch::prepare(&tx, self.head, self.pseudonym_key)
                .context(|| format!("preparing batch of {n} changes"))?;
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
            for event in events {
                let record = event.record(batch.head.seq + 1, at);
                batch.append(record).context(|| {
                    format!("committing batch of {n} changes: event {}", event.event)
                })?;
            }
            batch
                .store_head()
                .context(|| format!("committing batch of {n} changes: storing the head"))?;
            batch.head
        };
        tx.commit()
            .context(|| format!("committing batch of {n} changes"))?;
        self.head = head;
        Ok(())
    }

    /// See [`Store::log_event`]. Written and fsynced at once, in its own transaction.
    pub fn log_event(
        &mut self,
        at: Millis,
        event: UsageEvent,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let what = || format!("logging event {event}");
        let entry = LogEvent::server(event.clone(), detail);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(what)?;
        let head = {
            let mut batch = Batch::prepare(&tx, self.head, self.pseudonym_key).context(what)?;
            batch
                .append(entry.record(self.head.seq + 1, at))
                .context(what)?;
            batch.store_head().context(what)?;
            batch.head
        };
        tx.commit().context(what)?;
        self.head = head;
        Ok(())
    }

    /// Retention: removes the usage records written before `before`, except the newest
    /// record, and records the removal as a `prune` event. The last removed record's
    /// `(seq, hash)` becomes the chain's anchor (see [`ANCHOR_KEY`]), all in one
    /// transaction, so the log that remains still verifies. Returns how many records went.
    pub fn prune_usage_log(&mut self, at: Millis, before: Millis) -> Result<u64, StoreError> {
        let what = || "pruning the usage log".to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(what)?;
        let last: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, hash FROM usage_log WHERE at < ?1 AND seq < ?2 \
                 ORDER BY seq DESC LIMIT 1",
                params![before as i64, self.head.seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .context(what)?;
        let Some((seq, hash)) = last else {
            return Ok(0);
        };
        let anchor = Head {
            seq,
            hash: <[u8; 32]>::try_from(hash.as_slice()).unwrap_or_default(),
        };
        let removed = tx
            .execute("DELETE FROM usage_log WHERE seq <= ?1", [seq])
            .context(what)?;
        let head = {
            let mut batch = Batch::prepare(&tx, self.head, self.pseudonym_key).context(what)?;
            batch
                .upsert_meta
                .execute(params![ANCHOR_KEY, &anchor.to_bytes()[..]])
                .context(what)?;
            let detail = format!("{removed} records up to seq {seq} removed by retention");
            let event = LogEvent::server(UsageEvent::Other("prune".into()), Some(&detail));
            batch
                .append(event.record(self.head.seq + 1, at))
                .context(what)?;
            batch.store_head().context(what)?;
            batch.head
        };
        tx.commit().context(what)?;
        self.head = head;
        Ok(removed as u64)
    }

    /// From now on, write user, host and display names into the usage log as pseudonyms
    /// under `key` (see [`pseudonym`]), as FlexLM's `HIDE_USER` does. The caller keeps the
    /// key outside the store (the server: a 0600 file beside it), so that whoever may read
    /// the usage log cannot reverse the pseudonyms, and passes the same key at every start
    /// so that they stay the same. Records already written keep their names. (Live
    /// sessions keep theirs: administrators need them to act.)
    pub fn hide_identities(&mut self, key: [u8; 32]) {
        self.pseudonym_key = Some(key);
    }

    /// Removes the pseudonym key that earlier versions kept in `meta` and returns it, so
    /// the caller can move it out of the store. The row is deleted with `secure_delete`,
    /// so its bytes are overwritten in the file, not left in a free page.
    pub fn take_legacy_pseudonym_key(&mut self) -> Result<Option<[u8; 32]>, StoreError> {
        let Some(bytes) = self.get_meta(LEGACY_PSEUDONYM_KEY)? else {
            return Ok(None);
        };
        let what = || "removing the pseudonym key from meta".to_string();
        self.conn
            .pragma_update(None, "secure_delete", true)
            .context(what)?;
        self.conn
            .execute("DELETE FROM meta WHERE key = ?1", [LEGACY_PSEUDONYM_KEY])
            .context(what)?;
        self.conn
            .pragma_update(None, "secure_delete", false)
            .context(what)?;
        // The WAL still holds the page as it was until a checkpoint copies the overwrite
        // into the file and the WAL is reset.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .context(what)?;
        Ok(<[u8; 32]>::try_from(bytes.as_slice()).ok())
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

    /// The latest time anything was written at (0 if nothing was): the newer of the
    /// newest usage record and the newest held lease's grant. A server whose ledger time
    /// starts here never stamps a change earlier than one already stored, even if it
    /// restarts on a clock that is behind.
    pub fn newest_write_at(&self) -> Result<Millis, StoreError> {
        let logged: Option<i64> = self
            .conn
            .query_row(
                "SELECT at FROM usage_log ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .context(|| "reading the newest usage record".into())?;
        let granted: Option<i64> = self
            .conn
            .query_row("SELECT max(granted_at) FROM leases", [], |r| r.get(0))
            .context(|| "reading the newest grant".into())?;
        Ok([logged, granted]
            .into_iter()
            .flatten()
            .map(|at| at.max(0) as Millis)
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

    fn commit_batch(
        &mut self,
        at: Millis,
        changes: &[Change],
        events: &[LogEvent],
    ) -> Result<(), StoreError> {
        SqliteStore::commit_batch(self, at, changes, events)
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
    (id, session, feature, vendor, requested_version, pool_version, count, granted_at, client_ref,
     overdraft, lingering_until, borrowed_until, token_for)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (id) DO UPDATE SET
    session = excluded.session, feature = excluded.feature, vendor = excluded.vendor,
    requested_version = excluded.requested_version, pool_version = excluded.pool_version,
    count = excluded.count, granted_at = excluded.granted_at, client_ref = excluded.client_ref,
    overdraft = excluded.overdraft, lingering_until = excluded.lingering_until,
    borrowed_until = excluded.borrowed_until, token_for = excluded.token_for";

const DELETE_LEASE: &str = "DELETE FROM leases WHERE id = ?1";
const DELETE_SESSION_LEASES: &str = "DELETE FROM leases WHERE session = ?1";
const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id = ?1";

/// Appends one usage record with its seq and hash, both computed by the caller (the hash
/// covers the seq, so the seq cannot be left to SQLite).
const APPEND_USAGE: &str = "
INSERT INTO usage_log
    (seq, at, event, session, lease, feature, vendor, version, count, user, host, display,
     detail, hash)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// The user, host and display a usage record copies from its session, so it outlives it.
const SESSION_IDENTITY: &str = "SELECT user, host, display FROM sessions WHERE id = ?1";

const UPSERT_META: &str = "
INSERT INTO meta (key, value) VALUES (?1, ?2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value";

const SELECT_USAGE: &str = "
SELECT seq, at, event, session, lease, feature, vendor, version, count, user, host, display,
       detail, hash
FROM usage_log WHERE seq > ?1 ORDER BY seq LIMIT ?2";

/// ?1..?2 is an id range, so the same statement reads the two halves of the u64 space.
const SELECT_SESSIONS: &str = "
SELECT id, secret_hash, user, host, display, pid, program, program_version, address, opened_at
FROM sessions WHERE id BETWEEN ?1 AND ?2 ORDER BY id";

const SELECT_LEASES: &str = "
SELECT id, session, feature, vendor, requested_version, pool_version, count, granted_at, client_ref,
       overdraft, lingering_until, borrowed_until, token_for
FROM leases WHERE id BETWEEN ?1 AND ?2 ORDER BY id";

/// The statements of one batch, prepared (or fetched from the connection's cache) once.
struct Batch<'conn> {
    upsert_session: CachedStatement<'conn>,
    upsert_lease: CachedStatement<'conn>,
    delete_lease: CachedStatement<'conn>,
    delete_session_leases: CachedStatement<'conn>,
    delete_session: CachedStatement<'conn>,
    append_usage: CachedStatement<'conn>,
    session_identity: CachedStatement<'conn>,
    upsert_meta: CachedStatement<'conn>,
    /// The newest record written so far in this transaction.
    head: Head,
    /// See [`SqliteStore::hide_identities`].
    pseudonym_key: Option<[u8; 32]>,
}

impl<'conn> Batch<'conn> {
    fn prepare(
        conn: &'conn Connection,
        head: Head,
        pseudonym_key: Option<[u8; 32]>,
    ) -> rusqlite::Result<Self> {
        Ok(Batch {
            upsert_session: conn.prepare_cached(UPSERT_SESSION)?,
            upsert_lease: conn.prepare_cached(UPSERT_LEASE)?,
            delete_lease: conn.prepare_cached(DELETE_LEASE)?,
            delete_session_leases: conn.prepare_cached(DELETE_SESSION_LEASES)?,
            delete_session: conn.prepare_cached(DELETE_SESSION)?,
            append_usage: conn.prepare_cached(APPEND_USAGE)?,
            session_identity: conn.prepare_cached(SESSION_IDENTITY)?,
            upsert_meta: conn.prepare_cached(UPSERT_META)?,
            head,
            pseudonym_key,
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
                    c.user.as_str(),
                    c.host.as_str(),
                    c.display.as_str(),
                    c.pid,
                    c.program.as_str(),
                    c.program_version.as_str(),
                    c.address.as_str(),
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
            Change::LeaseGranted(l) | Change::LeaseLingering(l) => {
                self.upsert_lease.execute(params![
                    l.id.0 as i64,
                    l.session.0 as i64,
                    l.feature.as_str(),
                    l.vendor.as_str(),
                    l.requested_version.as_str(),
                    l.pool_version.as_str(),
                    l.count,
                    l.granted_at as i64,
                    l.client_ref as i64,
                    l.overdraft,
                    l.lingering_until.map(|t| t as i64),
                    l.borrowed_until.map(|t| t as i64),
                    l.token_for.as_deref(),
                ])?;
                self.log(at, change)
            }
            Change::LeaseReleased { lease, .. } => {
                self.delete_lease.execute([lease.id.0 as i64])?;
                self.log(at, change)
            }
            // The queue is soft state: only its log records are kept.
            Change::Queued(_) | Change::Dequeued { .. } => self.log(at, change),
        }
    }

    fn log(&mut self, at: Millis, change: &Change) -> rusqlite::Result<()> {
        let entry = Entry::for_change(change);
        let who = match entry.session {
            Some(id) => self
                .session_identity
                .query_row([id.0 as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?,
            None => None,
        };
        let record = entry.record(self.head.seq + 1, at, who);
        self.append(record)
    }

    /// Chains `record` (whose seq must be the head's + 1) after the head and appends it.
    fn append(&mut self, mut record: UsageRecord) -> rusqlite::Result<()> {
        debug_assert_eq!(record.seq, self.head.seq + 1);
        if let Some(key) = &self.pseudonym_key {
            for name in [
                &mut record.columns.user,
                &mut record.columns.host,
                &mut record.columns.display,
            ]
            .into_iter()
            .flatten()
            {
                if !name.is_empty() {
                    *name = pseudonym(key, name);
                }
            }
        }
        record.hash = record_hash(&self.head.hash, &record);
        let r = &record;
        self.append_usage.execute(params![
            r.seq,
            r.at as i64,
            r.event.as_str(),
            r.session.map(|s| s.0 as i64),
            r.lease.map(|l| l.0 as i64),
            r.feature,
            r.vendor,
            r.version,
            r.count,
            r.user,
            r.host,
            r.display,
            r.detail,
            &r.hash[..],
        ])?;
        self.head = Head {
            seq: r.seq,
            hash: r.hash,
        };
        Ok(())
    }

    /// Stores the head in `meta`, in the batch's transaction, so that a log cut short
    /// afterwards no longer matches it.
    fn store_head(&mut self) -> rusqlite::Result<()> {
        self.upsert_meta
            .execute(params![HEAD_KEY, &self.head.to_bytes()[..]])?;
        Ok(())
    }
}

/// The head stored in `meta`: `Ok(None)` if none, `Err(())` if it is malformed.
fn read_head(conn: &Connection) -> rusqlite::Result<Result<Option<Head>, ()>> {
    read_meta_head(conn, HEAD_KEY)
}

/// A `(seq, hash)` stored in `meta` under `key`: `Ok(None)` if none, `Err(())` if it is
/// malformed.
fn read_meta_head(conn: &Connection, key: &str) -> rusqlite::Result<Result<Option<Head>, ()>> {
    let bytes: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    Ok(match bytes {
        None => Ok(None),
        Some(b) => Head::from_bytes(&b).map(Some).ok_or(()),
    })
}

/// Where the next record chains from: the stored head, or the newest record if that is
/// further on (rows added behind the server's back). Never the newest record if it is
/// behind the head: continuing from the head leaves a gap where records were cut off, so
/// `verify` still sees it.
fn current_head(conn: &Connection) -> rusqlite::Result<Head> {
    let stored = read_head(conn)?.ok().flatten().unwrap_or(Head::EMPTY);
    let last: Option<(i64, Option<Vec<u8>>)> = conn
        .query_row(
            "SELECT seq, hash FROM usage_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match last {
        Some((seq, hash)) if seq > stored.seq => {
            tracing::warn!(
                head = stored.seq,
                last = seq,
                "the usage log goes on past its stored head; run `usher log verify`"
            );
            Head {
                seq,
                hash: hash
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .unwrap_or_default(),
            }
        }
        _ => stored,
    })
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

/// The leases whose ids (as stored, i64) lie in `lo..=hi`, in id order.
fn in_range(conn: &Connection, lo: i64, hi: i64) -> rusqlite::Result<Vec<Lease>> {
    let mut st = conn.prepare_cached(SELECT_LEASES)?;
    st.query_map([lo, hi], lease_from_row)?.collect()
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: SessionId(r.get::<_, i64>(0)? as u64),
        secret_hash: r.get(1)?,
        client: ClientInfo {
            user: r.get::<_, String>(2)?.into(),
            host: r.get::<_, String>(3)?.into(),
            display: r.get::<_, String>(4)?.into(),
            pid: r.get(5)?,
            program: r.get::<_, String>(6)?.into(),
            program_version: r.get::<_, String>(7)?.into(),
            address: r.get::<_, String>(8)?.into(),
        },
        opened_at: r.get::<_, i64>(9)? as u64,
        // Soft state: the ledger gives every recovered session a fresh TTL.
        expires_at: 0,
        connected: false,
        detached: false,
    })
}

fn lease_from_row(r: &Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        id: LeaseId(r.get::<_, i64>(0)? as u64),
        session: SessionId(r.get::<_, i64>(1)? as u64),
        feature: r.get::<_, String>(2)?.into(),
        vendor: r.get::<_, String>(3)?.into(),
        requested_version: r.get::<_, String>(4)?.into(),
        pool_version: r.get::<_, String>(5)?.into(),
        count: r.get(6)?,
        granted_at: r.get::<_, i64>(7)? as u64,
        client_ref: r.get::<_, i64>(8)? as u64,
        overdraft: r.get(9)?,
        lingering_until: r.get::<_, Option<i64>>(10)?.map(|t| t as u64),
        borrowed_until: r.get::<_, Option<i64>>(11)?.map(|t| t as u64),
        token_for: r.get::<_, Option<String>>(12)?.map(Into::into),
    })
}

fn usage_from_row(r: &Row<'_>) -> rusqlite::Result<UsageRecord> {
    Ok(UsageRecord {
        hash: r.get(13)?,
        ..schema::usage_columns(r)?
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
