//! The usage log's hash chain in the SQLite file: verification finds every kind of
//! tampering, the chain survives migration from schema version 1 and the rebuild of
//! version 7, and read-only opens.

use std::path::Path;

use rusqlite::Connection;
use usher_core::ReleaseReason;
use usher_store::{
    ChainReport, SCHEMA_VERSION, SqliteStore, StoreError, UsageEvent, chain::ChainBreak,
};

use crate::util::{chain, closed, db_path, granted, ok, open, opened, released, tempdir, usage};

fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap_or_else(|e| panic!("opening {} raw: {e}", path.display()))
}

fn read_only(path: &Path) -> SqliteStore {
    SqliteStore::open_read_only(path)
        .unwrap_or_else(|e| panic!("opening {} read-only: {}", path.display(), chain(&e)))
}

fn verify(path: &Path) -> ChainReport {
    ok(read_only(path).verify_usage_log(), "verifying")
}

/// A store with six records: start, open, grant, release, close, and a second grant
/// cycle's open, each in its own transaction.
fn populated(path: &Path) {
    let mut store = open(path);
    ok(
        store.log_event(1, UsageEvent::ServerStart, Some("test")),
        "start",
    );
    ok(store.commit(2, &[opened(1), granted(10, 1)]), "grant");
    ok(
        store.commit(3, &[released(10, 1, ReleaseReason::Checkin), closed(1)]),
        "close",
    );
    ok(store.commit(4, &[opened(2)]), "open");
}

#[test]
fn an_untouched_log_verifies() {
    let dir = tempdir();
    let path = db_path(&dir);
    populated(&path);
    let report = verify(&path);
    assert_eq!(report.broken, None, "{report:?}");
    assert_eq!(report.records, 6);
    assert_eq!(report.head.map(|h| h.seq), Some(6));
}

#[test]
fn an_empty_store_verifies() {
    let dir = tempdir();
    let path = db_path(&dir);
    drop(open(&path));
    let report = verify(&path);
    assert_eq!((report.records, report.broken.clone()), (0, None));
}

#[test]
fn an_update_of_any_column_is_found() {
    let columns = [
        ("at", "at + 1"),
        ("event", "'checkin'"),
        ("session", "coalesce(session, 0) + 1"),
        ("lease", "coalesce(lease, 0) + 1"),
        ("feature", "coalesce(feature, '') || 'x'"),
        ("vendor", "coalesce(vendor, '') || 'x'"),
        ("version", "coalesce(version, '') || 'x'"),
        ("count", "coalesce(count, 0) + 1"),
        ("user", "coalesce(user, '') || 'x'"),
        ("host", "coalesce(host, '') || 'x'"),
        ("display", "NULL"),
        ("detail", "coalesce(detail, '') || 'x'"),
        ("hash", "zeroblob(32)"),
    ];
    for (column, value) in columns {
        let dir = tempdir();
        let path = db_path(&dir);
        populated(&path);
        raw(&path)
            .execute(
                &format!("UPDATE usage_log SET {column} = {value} WHERE seq = 3"),
                [],
            )
            .unwrap();
        let report = verify(&path);
        assert_eq!(
            report.broken,
            Some(ChainBreak::Mismatch { seq: 3 }),
            "after editing {column}: {report:?}"
        );
        assert_eq!(report.records, 2, "{column}");
    }
}

#[test]
fn an_edit_of_the_newest_record_is_found() {
    let dir = tempdir();
    let path = db_path(&dir);
    populated(&path);
    raw(&path)
        .execute("UPDATE usage_log SET user = 'mallory' WHERE seq = 6", [])
        .unwrap();
    assert_eq!(verify(&path).broken, Some(ChainBreak::Mismatch { seq: 6 }));
}

#[test]
fn a_deleted_record_in_the_middle_is_found() {
    let dir = tempdir();
    let path = db_path(&dir);
    populated(&path);
    raw(&path)
        .execute("DELETE FROM usage_log WHERE seq = 4", [])
        .unwrap();
    let broken = verify(&path).broken.expect("a break");
    assert_eq!(
        broken,
        ChainBreak::Gap {
            expected: 4,
            found: 5
        }
    );
    assert_eq!(broken.seq(), 4);
    assert!(broken.to_string().starts_with("seq 4:"), "{broken}");
}

#[test]
fn renumbering_after_a_delete_is_found() {
    let dir = tempdir();
    let path = db_path(&dir);
    populated(&path);
    let conn = raw(&path);
    conn.execute("DELETE FROM usage_log WHERE seq = 2", [])
        .unwrap();
    for seq in 3..=6 {
        conn.execute("UPDATE usage_log SET seq = seq - 1 WHERE seq = ?1", [seq])
            .unwrap();
    }
    assert_eq!(verify(&path).broken, Some(ChainBreak::Mismatch { seq: 2 }));
}

#[test]
fn swapped_records_are_found() {
    let dir = tempdir();
    let path = db_path(&dir);
    populated(&path);
    let conn = raw(&path);
    conn.execute_batch(
        "UPDATE usage_log SET seq = 100 WHERE seq = 2;
         UPDATE usage_log SET seq = 2 WHERE seq = 3;
         UPDATE usage_log SET seq = 3 WHERE seq = 100;",
    )
    .unwrap();
    assert_eq!(verify(&path).broken, Some(ChainBreak::Mismatch { seq: 2 }));
}

#[test]
fn deleting_the_newest_records_is_found() {
    let dir = tempdir();
    let path = db_path(&dir);
    populated(&path);
    raw(&path)
        .execute("DELETE FROM usage_log WHERE seq >= 5", [])
        .unwrap();
    let report = verify(&path);
    assert_eq!(
        report.broken,
        Some(ChainBreak::Truncated { last: 4, head: 6 }),
        "{report:?}"
    );
    assert_eq!(report.broken.unwrap().seq(), 5);
}

#[test]
fn the_server_continues_from_the_head_so_a_truncation_stays_visible() {
    let dir = tempdir();
    let path = db_path(&dir);
    populated(&path);
    raw(&path)
        .execute("DELETE FROM usage_log WHERE seq = 6", [])
        .unwrap();
    let mut store = open(&path);
    ok(
        store.commit(5, &[opened(3)]),
        "committing after the truncation",
    );
    drop(store);
    assert_eq!(
        verify(&path).broken,
        Some(ChainBreak::Gap {
            expected: 6,
            found: 7
        })
    );
}

#[test]
fn deleting_everything_is_found() {
    let dir = tempdir();
    let path = db_path(&dir);
    populated(&path);
    raw(&path).execute("DELETE FROM usage_log", []).unwrap();
    assert_eq!(
        verify(&path).broken,
        Some(ChainBreak::Truncated { last: 0, head: 6 })
    );
}

/// Turns a current store into what usher with schema version 1 wrote: no hash column, no
/// head.
/// Undoes every migration after version 1, leaving the rows as they were.
fn downgrade_to_v1(path: &Path) {
    raw(path)
        .execute_batch(
            "ALTER TABLE usage_log DROP COLUMN hash;
             ALTER TABLE leases DROP COLUMN overdraft;
             ALTER TABLE leases DROP COLUMN lingering_until;
             ALTER TABLE leases DROP COLUMN borrowed_until;
             ALTER TABLE leases DROP COLUMN token_for;
             DELETE FROM meta WHERE key = 'usage_log_head';
             PRAGMA user_version = 1;",
        )
        .unwrap();
}

/// The store at `path` is at the current schema version and its chain of `records`
/// verifies.
fn assert_migrated_and_whole(path: &Path, records: u64) {
    let version: i64 = raw(path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let report = verify(path);
    assert_eq!(
        (report.records, report.broken.clone()),
        (records, None),
        "{report:?}"
    );
}

#[test]
fn migration_from_version_1_chains_the_existing_records() {
    let dir = tempdir();
    let path = db_path(&dir);
    populated(&path);
    let before = usage(&open(&path));
    downgrade_to_v1(&path);
    match SqliteStore::open_read_only(&path) {
        Err(StoreError::SchemaTooOld { found: 1, .. }) => {}
        other => panic!("a read-only open of a v1 store must refuse, got {other:?}"),
    }
    let mut store = open(&path);
    let after = usage(&store);
    assert_eq!(
        after, before,
        "the same hashes as when written with the chain"
    );
    ok(store.commit(9, &[opened(5)]), "committing after migration");
    drop(store);
    assert_migrated_and_whole(&path, 7);
}

#[test]
fn read_only_open_reads_beside_a_writer_and_cannot_write() {
    let dir = tempdir();
    let path = db_path(&dir);
    let mut writer = open(&path);
    ok(writer.commit(1, &[opened(1)]), "committing");
    let mut reader = read_only(&path);
    assert_eq!(usage(&reader).len(), 1);
    ok(writer.commit(2, &[opened(2)]), "committing beside a reader");
    assert_eq!(ok(reader.verify_usage_log(), "verifying").records, 2);
    assert!(reader.commit(3, &[opened(3)]).is_err(), "read-only");
}

#[test]
fn read_only_open_of_a_missing_file_fails_and_creates_nothing() {
    let dir = tempdir();
    let path = db_path(&dir);
    assert!(SqliteStore::open_read_only(&path).is_err());
    assert!(!path.exists());
}

/// The `CREATE TABLE` text of the usage log, as SQLite keeps it.
fn usage_log_sql(conn: &Connection) -> String {
    conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'usage_log'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn migration_to_version_7_drops_autoincrement_and_keeps_the_chain() {
    let dir = tempdir();
    let path = db_path(&dir);
    populated(&path);
    let before = usage(&open(&path));
    // Rebuild the log as versions 1 to 6 declared it, rows and hashes as they are.
    raw(&path)
        .execute_batch(
            "BEGIN;
             CREATE TABLE old_log (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,
                 event TEXT NOT NULL, session INTEGER, lease INTEGER, feature TEXT,
                 vendor TEXT, version TEXT, count INTEGER, user TEXT, host TEXT,
                 display TEXT, detail TEXT, hash BLOB) STRICT;
             INSERT INTO old_log SELECT * FROM usage_log;
             DROP TABLE usage_log;
             ALTER TABLE old_log RENAME TO usage_log;
             PRAGMA user_version = 6;
             COMMIT;",
        )
        .unwrap();
    let old = raw(&path);
    assert!(usage_log_sql(&old).contains("AUTOINCREMENT"));
    let counted: i64 = old
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'usage_log'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counted, 6, "the old table counts in sqlite_sequence");
    drop(old);

    let mut store = open(&path);
    assert_eq!(usage(&store), before, "the same records, the same hashes");
    ok(store.commit(5, &[opened(3)]), "committing after migration");
    drop(store);
    let conn = raw(&path);
    assert!(!usage_log_sql(&conn).contains("AUTOINCREMENT"));
    let sequences: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_sequence WHERE name = 'usage_log'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sequences, 0, "no commit writes sqlite_sequence any more");
    drop(conn);
    assert_migrated_and_whole(&path, 7);
}
