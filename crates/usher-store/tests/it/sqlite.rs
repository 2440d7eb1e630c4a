//! What only the SQLite store has: a file, WAL, schema versions, big batches.

use std::path::Path;

use rusqlite::Connection;
use usher_core::{Change, ReleaseReason};
use usher_store::{SCHEMA_VERSION, SqliteStore, StoreError, UsageEvent};

use crate::util::{
    chain, closed, db_path, granted, lease, ok, open, opened, released, session, stored, tempdir,
    usage,
};

/// A second, plain connection to look at the file the way an administrator would.
fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap_or_else(|e| panic!("opening {} raw: {e}", path.display()))
}

fn pragma_i64(conn: &Connection, name: &str) -> i64 {
    conn.pragma_query_value(None, name, |r| r.get(0))
        .unwrap_or_else(|e| panic!("reading PRAGMA {name}: {e}"))
}

#[test]
fn open_creates_the_file_and_its_directories() {
    let dir = tempdir();
    let path = dir.path().join("var/lib/usher/usher.db");
    let store = open(&path);
    assert!(path.is_file(), "{} should exist", path.display());
    assert_eq!(store.path(), path);
}

#[test]
fn the_file_is_in_wal_mode_and_versioned() {
    let dir = tempdir();
    let path = db_path(&dir);
    let mut store = open(&path);
    ok(store.commit(1, &[opened(1)]), "committing");
    let wal = path.with_extension("db-wal");
    assert!(
        wal.is_file(),
        "{} should exist while the store is open",
        wal.display()
    );
    let conn = raw(&path);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(pragma_i64(&conn, "user_version"), SCHEMA_VERSION);
    assert_eq!(
        pragma_i64(&conn, "application_id"),
        i64::from(u32::from_be_bytes(*b"USHR"))
    );
}

#[test]
fn reopening_keeps_data_and_schema() {
    let dir = tempdir();
    let path = db_path(&dir);
    let mut store = open(&path);
    ok(store.commit(1, &[opened(1), granted(10, 1)]), "committing");
    drop(store);
    let store = open(&path);
    assert_eq!(
        ok(store.load(), "loading").sessions,
        vec![stored(&session(1))]
    );
    assert_eq!(pragma_i64(&raw(&path), "user_version"), SCHEMA_VERSION);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempdir();
    let path = db_path(&dir);
    drop(open(&path));
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::SchemaTooNew {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!(
            "expected SchemaTooNew, got {:?}",
            other.map_err(|e| chain(&e))
        ),
    }
    let message = SqliteStore::open(&path).expect_err("refused").to_string();
    assert!(
        message.contains("newer usher"),
        "message should say what to do: {message}"
    );
}

#[test]
fn another_applications_database_is_refused_and_untouched() {
    let dir = tempdir();
    let path = db_path(&dir);
    raw(&path)
        .execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
        .unwrap();
    let err = SqliteStore::open(&path).expect_err("a foreign database");
    assert!(
        matches!(err, StoreError::NotAStore { .. }),
        "got {}",
        chain(&err)
    );
    let mode: String = raw(&path)
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(
        mode, "delete",
        "the store must not switch somebody else's file to WAL"
    );

    let other = dir.path().join("other.db");
    raw(&other)
        .pragma_update(None, "application_id", 0x1234)
        .unwrap();
    let err = SqliteStore::open(&other).expect_err("another application id");
    assert!(
        matches!(err, StoreError::NotAStore { .. }),
        "got {}",
        chain(&err)
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_with_context() {
    let dir = tempdir();
    let path = db_path(&dir);
    std::fs::write(&path, vec![0x42; 8192]).unwrap();
    let err = SqliteStore::open(&path).expect_err("garbage");
    let text = chain(&err);
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert!(
        text.contains("not a database"),
        "carries SQLite's reason: {text}"
    );
}

#[test]
fn an_empty_batch_writes_nothing() {
    let dir = tempdir();
    let path = db_path(&dir);
    let mut store = open(&path);
    ok(store.commit(1, &[opened(1)]), "committing");
    let wal = path.with_extension("db-wal");
    let len = std::fs::metadata(&wal).unwrap().len();
    ok(store.commit(2, &[]), "committing nothing");
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), len, "the WAL grew");
}

#[test]
fn a_batch_of_ten_thousand_changes_commits_at_once() {
    let dir = tempdir();
    let mut store = open(&db_path(&dir));
    // 1,000 sessions, 8,000 grants, 1,000 releases: 10,000 changes.
    let mut batch: Vec<Change> = (0..1_000).map(opened).collect();
    batch.extend((0..8_000).map(|l| granted(l, l % 1_000)));
    batch.extend((0..1_000).map(|l| released(l, l % 1_000, ReleaseReason::Checkin)));
    assert_eq!(batch.len(), 10_000);
    ok(store.commit(1, &batch), "committing 10,000 changes");
    let snapshot = ok(store.load(), "loading");
    assert_eq!(
        (snapshot.sessions.len(), snapshot.leases.len()),
        (1_000, 7_000)
    );
    let log = usage(&store);
    assert_eq!(log.len(), 10_000);
    assert!(
        log.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq must increase"
    );
    assert_eq!(log.last().map(|r| &r.event), Some(&UsageEvent::Checkin));

    // And close everything in one more batch, releases first as the ledger does.
    let mut close: Vec<Change> = snapshot
        .leases
        .iter()
        .map(|l| Change::LeaseReleased {
            lease: l.clone(),
            reason: ReleaseReason::Expired,
        })
        .collect();
    close.extend((0..1_000).map(closed));
    ok(store.commit(2, &close), "closing everything");
    let snapshot = ok(store.load(), "loading");
    assert!(
        snapshot.sessions.is_empty() && snapshot.leases.is_empty(),
        "{snapshot:?}"
    );
}

#[test]
fn two_handles_on_one_file_see_each_others_commits() {
    // Not how the server runs (one writer), but a reader on its own connection must see
    // exactly what was committed.
    let dir = tempdir();
    let path = db_path(&dir);
    let mut writer = open(&path);
    let reader = open(&path);
    ok(writer.commit(1, &[opened(1), granted(10, 1)]), "committing");
    assert_eq!(ok(reader.load(), "loading").leases.len(), 1);
    assert_eq!(usage(&reader).len(), 2);
}

#[test]
fn hidden_identities_are_pseudonyms_stable_across_restarts_and_the_chain_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usher.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(1, &[opened(1), granted(10, 1)]).unwrap();
    store.hide_identities([7; 32]);
    store.commit(2, &[opened(2), granted(20, 2)]).unwrap();
    drop(store);
    let mut store = SqliteStore::open(&path).unwrap();
    store.hide_identities([7; 32]);
    store
        .commit(3, &[released(20, 2, ReleaseReason::Checkin)])
        .unwrap();
    let log = store.usage_log(0, 100).unwrap();
    let users: Vec<&str> = log.iter().filter_map(|r| r.user.as_deref()).collect();
    // Written before hiding: the name. After: the same pseudonym for user2 both times,
    // across the restart.
    assert_eq!(users[0], "user1");
    let hidden: Vec<&&str> = users.iter().filter(|u| u.starts_with("anon-")).collect();
    assert_eq!(hidden.len(), 3, "{users:?}");
    assert!(hidden.iter().all(|u| **u == *hidden[0]), "{users:?}");
    assert!(!users[2..].contains(&"user2"), "{users:?}");
    let hosts: Vec<&str> = log.iter().filter_map(|r| r.host.as_deref()).collect();
    assert!(
        hosts[2..].iter().all(|h| h.starts_with("anon-")),
        "{hosts:?}"
    );
    // The live session row keeps the name: administrators need it.
    let name: String = raw(&path)
        .query_row("SELECT user FROM sessions WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "user2");
    assert!(store.verify_usage_log().unwrap().broken.is_none());
    // Another store gets another key, so pseudonyms cannot be compared across sites.
    let other = dir.path().join("other.db");
    let mut second = SqliteStore::open(&other).unwrap();
    second.hide_identities([8; 32]);
    second.commit(1, &[opened(2)]).unwrap();
    let theirs = second.usage_log(0, 10).unwrap()[0].user.clone().unwrap();
    assert_ne!(&theirs, *hidden[0]);
}

#[test]
fn retention_removes_old_records_and_the_rest_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usher.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(100, &[opened(1)]).unwrap();
    store.commit(200, &[granted(10, 1)]).unwrap();
    store
        .commit(300, &[released(10, 1, ReleaseReason::Checkin)])
        .unwrap();
    store.commit(400, &[granted(11, 1)]).unwrap();
    let removed = store.prune_usage_log(500, 300).unwrap();
    assert_eq!(removed, 2, "the records at 100 and 200");
    let log = store.usage_log(0, 100).unwrap();
    let seqs: Vec<i64> = log.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5], "seqs are never reused");
    assert_eq!(log[2].event, UsageEvent::Other("prune".into()));
    assert!(
        log[2].detail.as_deref().unwrap().contains("2 records"),
        "{log:#?}"
    );
    let report = store.verify_usage_log().unwrap();
    assert!(report.broken.is_none(), "{report:?}");
    assert_eq!(report.records, 3);
    // Nothing older than the newest record goes, however far the cut-off.
    assert_eq!(store.prune_usage_log(600, 10_000).unwrap(), 2);
    assert_eq!(
        store.usage_log(0, 100).unwrap().len(),
        2,
        "the newest and the prune event"
    );
    assert!(store.verify_usage_log().unwrap().broken.is_none());
    store.commit(700, &[closed(1)]).unwrap_or(());
    drop(store);
    // An edited kept row is still caught.
    raw(&path)
        .execute(
            "UPDATE usage_log SET user = 'mallory' WHERE seq = (SELECT max(seq) FROM usage_log)",
            [],
        )
        .unwrap();
    let store = SqliteStore::open_read_only(&path).unwrap();
    assert!(store.verify_usage_log().unwrap().broken.is_some());
}

#[test]
fn migrations_to_versions_4_to_6_keep_leases_and_store_lingers_borrows_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usher.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(1, &[opened(1), granted(10, 1)]).unwrap();
    drop(store);
    raw(&path)
        .execute_batch(
            "ALTER TABLE leases DROP COLUMN lingering_until;
             ALTER TABLE leases DROP COLUMN borrowed_until;
             ALTER TABLE leases DROP COLUMN token_for;
             PRAGMA user_version = 3;",
        )
        .unwrap();
    let mut store = SqliteStore::open(&path).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.leases.len(), 1);
    assert_eq!(loaded.leases[0].lingering_until, None);
    let mut lingering = loaded.leases[0].clone();
    lingering.lingering_until = Some(5_000);
    store
        .commit(2, &[Change::LeaseLingering(lingering.clone())])
        .unwrap();
    assert_eq!(store.load().unwrap().leases, vec![lingering.clone()]);
    let mut borrowed = crate::util::lease(11, 1);
    borrowed.borrowed_until = Some(9_000);
    borrowed.token_for = Some("sample".into());
    store
        .commit(3, &[Change::LeaseGranted(borrowed.clone())])
        .unwrap();
    assert_eq!(store.load().unwrap().leases, vec![lingering, borrowed]);
    assert_eq!(pragma_i64(&raw(&path), "user_version"), SCHEMA_VERSION);
    let log = store.usage_log(0, 10).unwrap();
    let events: Vec<_> = log.iter().rev().take(2).map(|r| r.event.clone()).collect();
    assert_eq!(events, [UsageEvent::Borrow, UsageEvent::Linger]);
}

/// Leases spread over a wide id range are loaded on two connections (see
/// `SqliteStore::load`); the halves must join in u64 order with nothing lost or repeated,
/// ids that bit-cast to negative i64 last.
#[test]
fn leases_over_a_wide_id_range_load_whole_and_in_order() {
    let dir = tempdir();
    let mut store = open(&db_path(&dir));
    let ids = [
        1,
        2,
        99_999,
        100_000,
        150_001,
        250_000,
        1 << 40,
        u64::MAX - 1,
        u64::MAX,
    ];
    let mut changes = vec![opened(1)];
    changes.extend(ids.iter().map(|&id| granted(id, 1)));
    ok(store.commit(1, &changes), "committing the leases");
    let loaded = ok(store.load(), "loading");
    let got: Vec<u64> = loaded.leases.iter().map(|l| l.id.0).collect();
    assert_eq!(got, ids, "every lease once, in ascending u64 order");
    assert_eq!(loaded.sessions, vec![stored(&session(1))]);
}

/// The newest record's time is the batch time of the last usage record, whatever the
/// grant times of the leases it carries (the server takes those from the loaded leases),
/// and it survives a reopen.
#[test]
fn the_newest_record_is_the_last_usage_record_whatever_its_grants() {
    let dir = tempdir();
    let path = db_path(&dir);
    let mut store = open(&path);
    assert_eq!(store.newest_record_at().unwrap(), 0, "an empty store");
    // The lease's grant time (1_700_000_001_010) is later than the batch's.
    ok(store.commit(5_000, &[opened(1), granted(10, 1)]), "grant");
    assert_eq!(store.newest_record_at().unwrap(), 5_000);
    let loaded = ok(store.load(), "loading");
    let newest_grant = loaded.leases.iter().map(|l| l.granted_at).max();
    assert_eq!(
        newest_grant,
        Some(1_700_000_001_010),
        "the grant is in the load"
    );
    ok(
        store.commit(
            1_800_000_000_000,
            &[released(10, 1, ReleaseReason::Checkin)],
        ),
        "release",
    );
    drop(store);
    let store = open(&path);
    assert_eq!(store.newest_record_at().unwrap(), 1_800_000_000_000);
}

/// The WAL frames in the file at `wal` (its header holds the page size; each frame is a
/// 24-byte header and a page). The file only grows until a checkpoint resets it, so the
/// difference over a commit is what that commit appended.
fn wal_frames(wal: &Path) -> u64 {
    let bytes = std::fs::read(wal).unwrap_or_else(|e| panic!("reading {}: {e}", wal.display()));
    assert!(bytes.len() >= 32, "a WAL starts with a 32-byte header");
    let page_size = u64::from(u32::from_be_bytes(bytes[8..12].try_into().unwrap()));
    let body = bytes.len() as u64 - 32;
    assert_eq!(body % (24 + page_size), 0, "whole frames only");
    body / (24 + page_size)
}

/// What a durable checkout and a checkin cost in the WAL: one page each for the lease's
/// row (its table is keyed by session and lease id, so no index page), the usage record,
/// and the chain's head in `meta`. A small store, far from the checkpoint at 1,000
/// frames and from a page split, so every frame counted is the commit's own.
#[test]
fn a_checkout_and_a_checkin_each_append_three_wal_frames() {
    let dir = tempdir();
    let path = db_path(&dir);
    let mut store = open(&path);
    let wal = path.with_extension("db-wal");
    ok(store.commit(1, &[opened(1), opened(2)]), "opening sessions");
    ok(
        store.commit(2, &[granted(20, 2)]),
        "a lease of the other session",
    );
    for id in 10..13 {
        let before = wal_frames(&wal);
        ok(store.commit(3, &[granted(id, 1)]), "checkout");
        let after_checkout = wal_frames(&wal);
        ok(
            store.commit(4, &[released(id, 1, ReleaseReason::Checkin)]),
            "checkin",
        );
        let after_checkin = wal_frames(&wal);
        assert_eq!(
            (after_checkout - before, after_checkin - after_checkout),
            (3, 3),
            "WAL frames appended by the checkout and the checkin of lease {id}"
        );
    }
    assert_eq!(ok(store.load(), "loading").leases, vec![lease(20, 2)]);
}

/// The `CREATE` text of a schema object, if it exists.
fn schema_sql(conn: &Connection, name: &str) -> Option<String> {
    conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .ok()
}

/// Every lease row as SQLite holds it, column by column, in id order.
fn lease_rows(conn: &Connection) -> Vec<Vec<rusqlite::types::Value>> {
    let mut st = conn
        .prepare(
            "SELECT id, session, feature, vendor, requested_version, pool_version, count,
                    granted_at, client_ref, overdraft, lingering_until, borrowed_until,
                    token_for
             FROM leases ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| (0..13).map(|i| r.get(i)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The leases table has the shape of schema version 8: one B-tree keyed by (session, id),
/// no index beside it, the foreign key to sessions kept.
fn assert_leases_are_clustered(conn: &Connection) {
    let sql = schema_sql(conn, "leases").expect("a leases table");
    assert!(sql.contains("WITHOUT ROWID"), "{sql}");
    assert!(sql.contains("PRIMARY KEY (session, id)"), "{sql}");
    assert_eq!(schema_sql(conn, "leases_by_session"), None, "no index");
    let origins: Vec<String> = conn
        .prepare("SELECT origin FROM pragma_index_list('leases')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        origins,
        ["pk"],
        "the table is its key's B-tree; no other index"
    );
    let parent: String = conn
        .query_row(
            "SELECT \"table\" FROM pragma_foreign_key_list('leases')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(parent, "sessions");
}

#[test]
fn a_new_store_keeps_leases_in_one_b_tree_keyed_by_session_and_id() {
    let dir = tempdir();
    let path = db_path(&dir);
    drop(open(&path));
    assert_leases_are_clustered(&raw(&path));
}

#[test]
fn migration_to_version_8_keeps_every_lease_as_it_was_and_the_chain() {
    let dir = tempdir();
    let path = db_path(&dir);
    let mut store = open(&path);
    // Sessions on both sides of the i64 sign; leases plain, overdrawn, lingering, borrowed
    // and of tokens, one with an id that bit-casts to negative.
    let high = 0xF000_0000_0000_0001;
    ok(
        store.commit(1, &[opened(1), opened(2), opened(high)]),
        "sessions",
    );
    let mut leases = vec![lease(10, 1), lease(11, 2), lease(u64::MAX - 1, high)];
    leases[1].overdraft = true;
    let mut lingering = lease(12, 1);
    lingering.lingering_until = Some(1_700_000_900_000);
    let mut borrowed = lease(13, high);
    borrowed.borrowed_until = Some(1_700_009_000_000);
    let mut tokens = lease(14, 2);
    tokens.token_for = Some("sample-tokens".into());
    tokens.count = 7;
    leases.extend([lingering.clone(), borrowed, tokens]);
    let mut grants: Vec<Change> = leases.iter().cloned().map(Change::LeaseGranted).collect();
    grants.push(released(15, 1, ReleaseReason::Checkin));
    ok(store.commit(2, &grants), "grants");
    ok(
        store.commit(3, &[Change::LeaseLingering(lingering)]),
        "a linger",
    );
    let before = (ok(store.load(), "loading"), usage(&store));
    drop(store);
    let rows = lease_rows(&raw(&path));
    assert_eq!(rows.len(), 6);

    // Rebuild the leases as versions 1 to 7 declared them, rows as they are.
    raw(&path)
        .execute_batch(
            "BEGIN;
             CREATE TABLE old_leases (
                 id INTEGER PRIMARY KEY,
                 session INTEGER NOT NULL REFERENCES sessions (id),
                 feature TEXT NOT NULL, vendor TEXT NOT NULL,
                 requested_version TEXT NOT NULL, pool_version TEXT NOT NULL,
                 count INTEGER NOT NULL, granted_at INTEGER NOT NULL,
                 client_ref INTEGER NOT NULL,
                 overdraft INTEGER NOT NULL DEFAULT 0 CHECK (overdraft IN (0, 1)),
                 lingering_until INTEGER, borrowed_until INTEGER, token_for TEXT) STRICT;
             INSERT INTO old_leases SELECT id, session, feature, vendor, requested_version,
                 pool_version, count, granted_at, client_ref, overdraft, lingering_until,
                 borrowed_until, token_for FROM leases;
             DROP TABLE leases;
             ALTER TABLE old_leases RENAME TO leases;
             CREATE INDEX leases_by_session ON leases (session);
             PRAGMA user_version = 7;
             COMMIT;",
        )
        .unwrap();
    let old = raw(&path);
    assert!(schema_sql(&old, "leases_by_session").is_some());
    assert_eq!(lease_rows(&old), rows);
    drop(old);
    match SqliteStore::open_read_only(&path) {
        Err(StoreError::SchemaTooOld { found: 7, .. }) => {}
        other => panic!("a read-only open of a v7 store must refuse, got {other:?}"),
    }

    let mut store = open(&path);
    assert_eq!(
        (ok(store.load(), "loading"), usage(&store)),
        before,
        "the same sessions, leases and usage records"
    );
    let report = ok(store.verify_usage_log(), "verifying");
    assert_eq!(
        (report.records, report.broken),
        (before.1.len() as u64, None)
    );
    // Sessions still close through the key, and grants still need their session.
    ok(
        store.commit(
            4,
            &[
                released(10, 1, ReleaseReason::Checkin),
                released(12, 1, ReleaseReason::Expired),
                closed(1),
            ],
        ),
        "closing session 1",
    );
    assert!(matches!(
        store.commit(5, &[granted(16, 1)]),
        Err(StoreError::UnknownSession { .. })
    ));
    drop(store);
    let conn = raw(&path);
    assert_eq!(pragma_i64(&conn, "user_version"), SCHEMA_VERSION);
    assert_leases_are_clustered(&conn);
    let kept: Vec<_> = rows
        .iter()
        .filter(|row| ![10.into(), 12.into()].contains(&row[0]))
        .cloned()
        .collect();
    assert_eq!(
        lease_rows(&conn),
        kept,
        "the released leases went, the rest stayed"
    );
    // The foreign key is checked through the key when a session goes.
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    let err = conn
        .execute("DELETE FROM sessions WHERE id = 2", [])
        .expect_err("session 2 still holds leases");
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation),
        "{err}"
    );
}
