//! What the store reads: the snapshot a restarting server loads, the usage log, the
//! highest lease id and newest write time a new ledger starts from, and `meta`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use usher_core::{ClientInfo, Lease, LeaseId, Millis, Session, SessionId};

use super::{BUSY_TIMEOUT, SqliteStore, read_head};
use crate::{Snapshot, StoreError, error::Context, schema, usage::UsageRecord};

impl SqliteStore {
    /// See [`Store::load`](crate::Store::load).
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
    fn load_leases(&self, tx: &Connection) -> rusqlite::Result<Vec<Lease>> {
        /// Fewer leases than this are read on one thread: the second connection costs
        /// more than it saves.
        const SPLIT_AT: i64 = 100_000;
        load_leases(tx, &self.path, SPLIT_AT)
    }

    /// See [`Store::usage_log`](crate::Store::usage_log).
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
    /// (from `loaded`, the [`load`](Self::load) a server has just made, so the table is
    /// not read twice) and the newest checkout in the usage log. Lease ids only grow, so a
    /// server that allocates above this never hands out a handle that was used before,
    /// even for leases long since released.
    pub fn max_lease_id(&self, loaded: &Snapshot) -> Result<u64, StoreError> {
        let held = loaded.leases.iter().map(|l| l.id.0).max();
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
        Ok([held, logged.map(|v| v as u64)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0))
    }

    /// The time of the newest usage record (0 if there is none). With the newest grant
    /// among the loaded leases (which [`load`](Self::load) has already read) it is the
    /// latest time anything was written at: a server whose ledger time starts at the later
    /// of the two never stamps a change earlier than one already stored, even if it
    /// restarts on a clock that is behind.
    pub fn newest_record_at(&self) -> Result<Millis, StoreError> {
        let logged: Option<i64> = self
            .conn
            .query_row(
                "SELECT at FROM usage_log ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .context(|| "reading the newest usage record".into())?;
        Ok(logged.map_or(0, |at| at.max(0) as Millis))
    }

    /// See [`Store::get_meta`](crate::Store::get_meta).
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .context(|| format!("reading meta key {key:?}"))
    }
}

// Every statement stores u64 ids, times and client refs bit-cast to i64 (see `schema`).

pub(super) const SELECT_USAGE: &str = "
SELECT seq, at, event, session, lease, feature, vendor, version, count, user, host, display,
       detail, hash
FROM usage_log WHERE seq > ?1 ORDER BY seq LIMIT ?2";

/// ?1..?2 is an id range, so the same statement reads the two halves of the u64 space.
const SELECT_SESSIONS: &str = "
SELECT id, secret_hash, user, host, display, pid, program, program_version, address, opened_at
FROM sessions WHERE id BETWEEN ?1 AND ?2 ORDER BY id";

/// ?1..?2 is a range of session ids: a range of the table's key (see schema version 8),
/// which comes back in (session, id) order.
const SELECT_LEASES: &str = "
SELECT id, session, feature, vendor, requested_version, pool_version, count, granted_at, client_ref,
       overdraft, lingering_until, borrowed_until, token_for
FROM leases WHERE session BETWEEN ?1 AND ?2";

/// Every lease in ascending u64 id order, read in `tx` from the store file at `path`.
///
/// A restart waits for this, and with a million leases it is most of the wait: the rows
/// are decoded one by one. So when there are `split_at` or more, the upper half of the
/// session id range is read at the same time on a second core, by a read-only connection
/// of its own. That connection's read transaction is used only if it sees the same
/// usage-log head as `tx`: every commit that changes a lease also appends a usage record,
/// so the same head means the same leases. Otherwise (a commit landed in between) or if
/// it fails, `tx` reads that half too.
///
/// The table is kept in (session, id) order, so each half is sorted by id where it was
/// read, and the two sorted halves are merged.
fn load_leases(tx: &Connection, path: &Path, split_at: i64) -> rusqlite::Result<Vec<Lease>> {
    // Two lookups at the ends of the key (one min-max pair would scan the table).
    let (lo, hi): (Option<i64>, Option<i64>) = tx.query_row(
        "SELECT (SELECT min(session) FROM leases), (SELECT max(session) FROM leases)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(Vec::new());
    };
    // Stops counting at `split_at`: a small store pays for its rows, not for a count of a
    // big one.
    let many: i64 = tx.query_row(
        "SELECT count(*) FROM (SELECT 1 FROM leases LIMIT ?1)",
        [split_at],
        |r| r.get(0),
    )?;
    if lo == hi || many < split_at {
        return sorted_in_range(tx, lo, hi);
    }
    // The midpoint, computed without overflow: lo <= mid < hi.
    let mid = ((i128::from(lo) + i128::from(hi)).div_euclid(2)) as i64;
    let head = read_head(tx)?;
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
            sorted_in_range(&tx, mid + 1, hi).map(Some)
        });
        let lower = sorted_in_range(tx, lo, mid);
        let upper: rusqlite::Result<Option<Vec<Lease>>> = helper.join().unwrap_or(Ok(None));
        (lower, upper)
    });
    let upper = match upper {
        Ok(Some(upper)) => upper,
        Ok(None) | Err(_) => sorted_in_range(tx, mid + 1, hi)?,
    };
    let mut leases = lower?;
    leases.extend(upper);
    // Two sorted runs: the stable sort finds them and merges them in one pass.
    leases.sort_by_key(|l| l.id.0);
    Ok(leases)
}

/// The leases of the sessions whose ids (as stored, i64) lie in `lo..=hi`, in ascending
/// u64 id order.
fn sorted_in_range(conn: &Connection, lo: i64, hi: i64) -> rusqlite::Result<Vec<Lease>> {
    let mut st = conn.prepare_cached(SELECT_LEASES)?;
    let mut leases: Vec<Lease> = st
        .query_map([lo, hi], lease_from_row)?
        .collect::<Result<_, _>>()?;
    leases.sort_by_key(|l| l.id.0);
    Ok(leases)
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
    use usher_core::{Change, ClientInfo};

    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.join("; ")
    }

    /// Closing a session, releasing a lease and loading a range of sessions each search
    /// the leases' key; none scans the table.
    #[test]
    fn lease_statements_search_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        for (sql, expected) in [
            (
                "DELETE FROM leases WHERE session = 1 AND id = 2",
                "SEARCH leases USING PRIMARY KEY (session=? AND id=?)",
            ),
            (
                "DELETE FROM leases WHERE session = 1",
                "SEARCH leases USING PRIMARY KEY (session=?)",
            ),
            (
                "SELECT * FROM leases WHERE session BETWEEN 1 AND 2",
                "SEARCH leases USING PRIMARY KEY (session>? AND session<?)",
            ),
        ] {
            assert_eq!(plan(&store.conn, sql), expected, "{sql}");
        }
        assert!(
            !plan(
                &store.conn,
                "SELECT (SELECT min(session) FROM leases), (SELECT max(session) FROM leases)"
            )
            .contains("SCAN leases")
        );
    }

    fn session(id: u64) -> Session {
        Session {
            id: SessionId(id),
            secret_hash: [1; 32],
            client: ClientInfo {
                user: "u".into(),
                host: "h".into(),
                display: "d".into(),
                pid: 1,
                program: "p".into(),
                program_version: "1".into(),
                address: "a".into(),
            },
            opened_at: 0,
            expires_at: 0,
            connected: false,
            detached: false,
        }
    }

    fn lease(id: u64, session: u64) -> Lease {
        Lease {
            id: LeaseId(id),
            session: SessionId(session),
            feature: "f".into(),
            vendor: "v".into(),
            requested_version: "1".into(),
            pool_version: "1".into(),
            count: 1,
            granted_at: id,
            client_ref: id,
            overdraft: false,
            lingering_until: None,
            borrowed_until: None,
            token_for: None,
        }
    }

    /// Leases of sessions on both sides of the split (and of the i64 sign), whose ids run
    /// against the sessions' order, load whole and in ascending u64 id order whether read
    /// on one connection or two.
    #[test]
    fn leases_load_in_id_order_from_one_or_two_connections() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let sessions = [3, 1 << 62, u64::MAX, 1 << 63, 7];
        let ids = [u64::MAX, 5, 1 << 63, 2, 9, 1, (1 << 63) - 1, 4, 3, 8];
        let mut changes: Vec<Change> = sessions
            .iter()
            .map(|&s| Change::SessionOpened(session(s)))
            .collect();
        changes.extend(
            ids.iter()
                .zip(sessions.iter().cycle())
                .map(|(&id, &s)| Change::LeaseGranted(lease(id, s))),
        );
        store.commit(1, &changes).unwrap();
        let mut sorted = ids;
        sorted.sort_unstable();
        let tx = store.conn.unchecked_transaction().unwrap();
        for split_at in [1_000, 2] {
            let got: Vec<u64> = load_leases(&tx, &store.path, split_at)
                .unwrap()
                .iter()
                .map(|l| l.id.0)
                .collect();
            assert_eq!(got, sorted, "split at {split_at}");
        }
        let loaded = load_leases(&tx, &store.path, 2).unwrap();
        for l in &loaded {
            assert_eq!(*l, lease(l.id.0, l.session.0), "every column round-trips");
        }
    }
}
