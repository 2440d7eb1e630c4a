//! The SQLite store: the [`SqliteStore`] type, opening a file (its mode, pragmas and
//! schema), the usage log's head in `meta`, and hiding identities. What it writes is in
//! `commit`, what it reads in `read`, and the walk that verifies the usage log in `verify`.

mod commit;
mod read;
mod verify;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use usher_core::{Change, Millis};

use crate::{
    Snapshot, Store, StoreError,
    chain::{HEAD_KEY, Head},
    error::Context,
    schema,
    usage::{LogEvent, UsageEvent, UsageRecord},
};

pub use verify::ChainReport;

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

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// From now on, write user, host and display names into the usage log as pseudonyms
    /// under `key` (see `pseudonym`), as FlexLM's `HIDE_USER` does. The caller keeps the
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
