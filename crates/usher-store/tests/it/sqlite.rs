//! What only the SQLite store has: a file, WAL, schema versions, big batches.

use std::path::Path;

use rusqlite::Connection;
use usher_core::{Change, ReleaseReason};
use usher_store::{SCHEMA_VERSION, SqliteStore, StoreError, UsageEvent};

use crate::util::{
    chain, closed, db_path, granted, ok, open, opened, released, session, stored, tempdir, usage,
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
