//! The SQLite schema and its migrations.
//!
//! The schema version lives in the file header (`PRAGMA user_version`), next to an
//! application id (`PRAGMA application_id`) that marks the file as ours. Migration `n`
//! (counting from 0) takes a file from version `n` to `n + 1`; a new file starts at 0 and
//! runs them all. Migrations are append-only: once released, a migration is never edited,
//! only followed by another.
//!
//! Ids, times and client references are `u64` in Rust but SQLite integers are signed
//! 64-bit, so they are stored bit for bit (`as i64` / `as u64`): values at or above 2^63
//! (half of all random session ids) read as negative in SQL but round-trip exactly.

use std::path::Path;

use rusqlite::{Connection, Row, TransactionBehavior};
use usher_core::{LeaseId, SessionId};

use crate::{
    LogEvent, StoreError, UsageEvent, UsageRecord,
    chain::{HEAD_KEY, Head, record_hash},
    error::{Context, sqlite},
};

/// Marks a SQLite file as an usher store: "USHR" in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x5553_4852;

/// The newest schema version this build reads and writes. A store with a newer version is
/// refused ([`StoreError::SchemaTooNew`]); an older one is migrated when opened.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One step of the schema's history.
enum Migration {
    /// Plain SQL.
    Sql(&'static str),
    /// SQL followed by code that rewrites rows (run in the same transaction).
    SqlThen(&'static str, fn(&Connection) -> rusqlite::Result<()>),
}

/// Migration `n` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(V1),
    Migration::SqlThen(V2, hash_existing_rows),
    Migration::Sql(V3),
    Migration::Sql(V4),
    Migration::Sql(V5),
    Migration::Sql(V6),
    Migration::Sql(V7),
    Migration::Sql(V8),
];

/// Version 1: sessions, leases, the usage log and the meta table.
///
/// `leases.session` is a plain foreign key, not `ON DELETE CASCADE`: releases are explicit
/// changes (each with its usage record), so a session row is deleted only after its
/// leases, and a cascade would hide a caller that forgot one.
const V1: &str = "
CREATE TABLE sessions (
    id              INTEGER PRIMARY KEY,
    secret_hash     BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    user            TEXT    NOT NULL,
    host            TEXT    NOT NULL,
    display         TEXT    NOT NULL,
    pid             INTEGER NOT NULL,
    program         TEXT    NOT NULL,
    program_version TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    opened_at       INTEGER NOT NULL
) STRICT;

CREATE TABLE leases (
    id                INTEGER PRIMARY KEY,
    session           INTEGER NOT NULL REFERENCES sessions (id),
    feature           TEXT    NOT NULL,
    vendor            TEXT    NOT NULL,
    requested_version TEXT    NOT NULL,
    pool_version      TEXT    NOT NULL,
    count             INTEGER NOT NULL,
    granted_at        INTEGER NOT NULL,
    client_ref        INTEGER NOT NULL
) STRICT;

-- Closing a session finds its leases, and deleting a session checks the foreign key,
-- without scanning every lease.
CREATE INDEX leases_by_session ON leases (session);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

-- Append-only. (Version 7 rebuilds it without AUTOINCREMENT: the writer assigns each seq.)
CREATE TABLE usage_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    event   TEXT    NOT NULL,
    session INTEGER,
    lease   INTEGER,
    feature TEXT,
    vendor  TEXT,
    version TEXT,
    count   INTEGER,
    user    TEXT,
    host    TEXT,
    display TEXT,
    detail  TEXT
) STRICT;
";

/// Version 2: the usage log's hash chain (see `chain`). Existing rows are hashed in `seq`
/// order by [`hash_existing_rows`], which also stores the chain's head in `meta`.
const V2: &str = "
ALTER TABLE usage_log ADD COLUMN hash BLOB;
";

/// Version 3: leases granted beyond their pool's count under `OVERDRAFT=` are flagged.
const V3: &str = "
ALTER TABLE leases ADD COLUMN overdraft INTEGER NOT NULL DEFAULT 0 CHECK (overdraft IN (0, 1));
";

/// Version 4: seats given back but still held under `LINGER=`/`MIN_CHECKOUT=` keep their
/// lease row, with the moment they go back (NULL: not lingering).
const V4: &str = "
ALTER TABLE leases ADD COLUMN lingering_until INTEGER;
";

/// Version 5: seats borrowed for offline use carry the end of their borrow (NULL: not
/// borrowed).
const V5: &str = "
ALTER TABLE leases ADD COLUMN borrowed_until INTEGER;
";

/// Version 6: a lease of tokens names the token-based feature it was checked out for
/// (NULL: an ordinary lease).
const V6: &str = "
ALTER TABLE leases ADD COLUMN token_for TEXT;
";

/// Version 7: the usage log without `AUTOINCREMENT`. Its seq was always assigned by the
/// writer (the hash covers it, see `chain`), and continues from the chain's head in
/// `meta` even after retention empties the table, so `AUTOINCREMENT` only cost every
/// commit a write to `sqlite_sequence`: one WAL page of five. The rows are copied as they
/// are, hashes included; the copy is one pass over the log, once.
const V7: &str = "
CREATE TABLE usage_log_v7 (
    seq     INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    event   TEXT    NOT NULL,
    session INTEGER,
    lease   INTEGER,
    feature TEXT,
    vendor  TEXT,
    version TEXT,
    count   INTEGER,
    user    TEXT,
    host    TEXT,
    display TEXT,
    detail  TEXT,
    hash    BLOB
) STRICT;
INSERT INTO usage_log_v7
    (seq, at, event, session, lease, feature, vendor, version, count, user, host, display,
     detail, hash)
SELECT seq, at, event, session, lease, feature, vendor, version, count, user, host, display,
       detail, hash
FROM usage_log;
DROP TABLE usage_log;
ALTER TABLE usage_log_v7 RENAME TO usage_log;
DELETE FROM sqlite_sequence WHERE name = 'usage_log';
";

/// Version 8: the leases in one B-tree keyed by `(session, id)`, `WITHOUT ROWID`, in place
/// of a table keyed by `id` and its index `leases_by_session`. Closing a session finds its
/// leases by the key's prefix, and deleting a session checks the foreign key through it,
/// as the index did; a grant or release now writes one page for the lease instead of two
/// (the table's and the index's), one WAL page of four. Every column, constraint and the
/// foreign key stay; the rows are copied as they are.
///
/// `id` alone is no longer a key, and needs none: lease ids are unique across sessions
/// because the ledger hands out each id once, counting up from above every id ever
/// stored (`Stamper`, started from `max_lease_id`), and a lease never changes session
/// (a lingering or borrowed lease keeps its session row alive until it goes). Every
/// change names the lease with its session, so each statement finds the row by the whole
/// key. A `UNIQUE (id)` would bring back the second B-tree and its page.
const V8: &str = "
CREATE TABLE leases_v8 (
    id                INTEGER NOT NULL,
    session           INTEGER NOT NULL REFERENCES sessions (id),
    feature           TEXT    NOT NULL,
    vendor            TEXT    NOT NULL,
    requested_version TEXT    NOT NULL,
    pool_version      TEXT    NOT NULL,
    count             INTEGER NOT NULL,
    granted_at        INTEGER NOT NULL,
    client_ref        INTEGER NOT NULL,
    overdraft         INTEGER NOT NULL DEFAULT 0 CHECK (overdraft IN (0, 1)),
    lingering_until   INTEGER,
    borrowed_until    INTEGER,
    token_for         TEXT,
    PRIMARY KEY (session, id)
) STRICT, WITHOUT ROWID;
INSERT INTO leases_v8
    (id, session, feature, vendor, requested_version, pool_version, count, granted_at,
     client_ref, overdraft, lingering_until, borrowed_until, token_for)
SELECT id, session, feature, vendor, requested_version, pool_version, count, granted_at,
       client_ref, overdraft, lingering_until, borrowed_until, token_for
FROM leases;
DROP TABLE leases;
ALTER TABLE leases_v8 RENAME TO leases;
";

/// Chains every record already in the log, oldest first, and stores the head.
fn hash_existing_rows(conn: &Connection) -> rusqlite::Result<()> {
    let mut select = conn.prepare(
        "SELECT seq, at, event, session, lease, feature, vendor, version, count, user, host,
                display, detail
         FROM usage_log ORDER BY seq",
    )?;
    let mut update = conn.prepare("UPDATE usage_log SET hash = ?2 WHERE seq = ?1")?;
    let mut head = Head::EMPTY;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let record = usage_columns(row)?;
        let hash = record_hash(&head.hash, &record);
        update.execute(rusqlite::params![record.seq, &hash[..]])?;
        head = Head {
            seq: record.seq,
            hash,
        };
    }
    if head.seq != 0 {
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![HEAD_KEY, &head.to_bytes()[..]],
        )?;
    }
    Ok(())
}

/// Checks that `conn` holds an usher store (or nothing yet) that this build understands,
/// and returns its schema version. Reads only the header and the schema table, so a file
/// that turns out to be somebody else's is left untouched.
pub(crate) fn check(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let what = || format!("reading the header of store at {}", path.display());
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .context(what)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .context(what)?;
    let not_ours = |reason: String| StoreError::NotAStore {
        path: path.to_owned(),
        reason,
    };
    if app_id == 0 {
        if version != 0 {
            return Err(not_ours(format!(
                "no usher application id, schema version {version}"
            )));
        }
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .context(what)?;
        if objects != 0 {
            return Err(not_ours(format!(
                "no usher application id, but {objects} schema objects"
            )));
        }
    } else if app_id != APPLICATION_ID {
        return Err(not_ours(format!("SQLite application id {app_id:#010x}")));
    }
    if version < 0 {
        return Err(not_ours(format!("negative schema version {version}")));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

/// Brings the schema up to [`SCHEMA_VERSION`], in one transaction. Returns the version
/// found before migrating.
///
/// The check is repeated inside the write transaction, so two processes opening a new
/// file at once cannot both create the tables.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<i64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context(|| format!("locking store at {} to migrate it", path.display()))?;
    let found = check(&tx, path)?;
    if found == SCHEMA_VERSION {
        // Nothing written: the transaction ends without an fsync.
        return Ok(found);
    }
    for (from, sql) in (0_i64..)
        .zip(MIGRATIONS)
        .skip_while(|&(from, _)| from < found)
    {
        let what = || {
            format!(
                "migrating store at {} from schema version {from}",
                path.display()
            )
        };
        match sql {
            Migration::Sql(sql) => tx.execute_batch(sql).context(what)?,
            Migration::SqlThen(sql, then) => {
                tx.execute_batch(sql).context(what)?;
                then(&tx).context(what)?;
            }
        }
        tx.pragma_update(None, "user_version", from + 1)
            .context(what)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .context(|| format!("marking {} as an usher store", path.display()))?;
    tx.commit().map_err(|e| {
        sqlite(
            format!("committing migration of store at {}", path.display()),
            e,
        )
    })?;
    Ok(found)
}

/// The first 13 columns of a usage row (`seq` … `detail`), with the hash left zero.
pub(crate) fn usage_columns(r: &Row<'_>) -> rusqlite::Result<UsageRecord> {
    Ok(UsageRecord {
        seq: r.get(0)?,
        at: r.get::<_, i64>(1)? as u64,
        columns: LogEvent {
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
        },
        hash: [0; 32],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_in_a_fresh_database() {
        let conn = Connection::open_in_memory().unwrap();
        for migration in MIGRATIONS {
            match migration {
                Migration::Sql(sql) => conn.execute_batch(sql).unwrap(),
                Migration::SqlThen(sql, then) => {
                    conn.execute_batch(sql).unwrap();
                    then(&conn).unwrap();
                }
            }
        }
    }

    #[test]
    fn application_id_spells_ushr() {
        assert_eq!(APPLICATION_ID.to_be_bytes(), *b"USHR");
    }
}
