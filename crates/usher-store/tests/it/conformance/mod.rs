//! The `Store` contract (see the trait docs), as one suite run against every backend.
//!
//! Each case is a generic function over a [`Backend`]; `conformance_tests!` turns the list
//! into one `#[test]` per case per backend, so a failure names both.

mod usage_log;

use usher_core::{Change, LeaseId, ReleaseReason, SessionId};
use usher_store::{Snapshot, Store, StoreError};

use crate::util::{
    Backend, chain, closed, granted, lease, ok, opened, released, session, stored, usage,
};

use usage_log::{
    events_alone_are_a_batch, events_follow_the_changes_of_their_batch,
    log_event_appends_a_server_event, queue_changes_are_logged_and_not_stored,
    usage_log_has_one_record_per_change, usage_log_is_a_hash_chain, usage_log_pages,
};

macro_rules! conformance_tests {
    ($backend:expr) => {
        conformance_tests!(@cases $backend;
            empty_store_loads_empty,
            committed_rows_load_back_exactly,
            commits_survive_reopen,
            load_orders_by_unsigned_id,
            release_forgets_the_lease,
            close_forgets_the_session,
            close_drops_leases_left_behind,
            unknown_releases_and_closes_are_harmless,
            repeating_a_batch_changes_nothing,
            grant_to_unknown_session_refuses_the_whole_batch,
            grant_after_close_in_the_same_batch_is_refused,
            empty_batch_is_a_no_op,
            usage_log_has_one_record_per_change,
            queue_changes_are_logged_and_not_stored,
            usage_log_pages,
            log_event_appends_a_server_event,
            meta_round_trips,
            events_follow_the_changes_of_their_batch,
            events_alone_are_a_batch,
            usage_log_is_a_hash_chain,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                super::$case(&mut $backend);
            }
        )*
    };
}

mod memory {
    conformance_tests!(crate::util::MemoryBackend);
}

mod sqlite {
    conformance_tests!(crate::util::SqliteBackend::new());
}

mod boxed {
    conformance_tests!(crate::util::BoxedBackend(crate::util::SqliteBackend::new()));
}

/// A session id with the top bit set: negative once bit-cast into SQLite.
const HIGH: u64 = 0xF000_0000_0000_0001;

fn load(store: &impl Store) -> Snapshot {
    ok(store.load(), "loading")
}

#[track_caller]
fn commit(store: &mut impl Store, at: u64, changes: &[Change]) {
    ok(
        store.commit(at, changes),
        &format!("committing {changes:#?}"),
    );
}

fn empty_store_loads_empty<B: Backend>(b: &mut B) {
    let store = b.create();
    assert_eq!(load(&store), Snapshot::default());
    assert!(usage(&store).is_empty());
}

fn committed_rows_load_back_exactly<B: Backend>(b: &mut B) {
    let mut store = b.create();
    let mut odd = session(HIGH);
    odd.client.user = Default::default();
    odd.client.pid = u32::MAX;
    odd.opened_at = u64::MAX;
    odd.secret_hash = [0xFF; 32];
    let mut big = lease(u64::MAX, HIGH);
    big.count = u32::MAX;
    big.granted_at = u64::MAX;
    big.client_ref = u64::MAX;
    big.borrowed_until = Some(u64::MAX);
    big.feature = "f\u{0}null-and-ünïcode ✓".into();
    commit(
        &mut store,
        10,
        &[
            Change::SessionOpened(odd.clone()),
            opened(1),
            Change::LeaseGranted(big.clone()),
        ],
    );
    commit(&mut store, 20, &[granted(7, 1)]);
    assert_eq!(
        load(&store),
        Snapshot {
            sessions: vec![stored(&session(1)), stored(&odd)],
            leases: vec![lease(7, 1), big],
        }
    );
}

fn commits_survive_reopen<B: Backend>(b: &mut B) {
    let mut store = b.create();
    commit(
        &mut store,
        10,
        &[opened(1), opened(2), granted(10, 1), granted(11, 2)],
    );
    commit(
        &mut store,
        20,
        &[released(11, 2, ReleaseReason::Checkin), closed(2)],
    );
    ok(store.set_meta("node", b"n1"), "setting meta");
    let before = (load(&store), usage(&store));
    let store = b.reopen(store);
    assert_eq!((load(&store), usage(&store)), before, "after reopening");
    assert_eq!(
        ok(store.get_meta("node"), "reading meta"),
        Some(b"n1".to_vec())
    );
    assert_eq!(before.0.sessions, vec![stored(&session(1))]);
    assert_eq!(before.0.leases, vec![lease(10, 1)]);
}

fn load_orders_by_unsigned_id<B: Backend>(b: &mut B) {
    let mut store = b.create();
    let ids = [u64::MAX, 3, HIGH, 0, 1 << 63, (1 << 63) - 1];
    let mut changes: Vec<Change> = ids.iter().map(|&id| opened(id)).collect();
    changes.extend(ids.iter().map(|&id| granted(id, 3)));
    commit(&mut store, 1, &changes);
    let mut sorted = ids;
    sorted.sort_unstable();
    let got = load(&store);
    assert_eq!(
        got.sessions.iter().map(|s| s.id.0).collect::<Vec<_>>(),
        sorted
    );
    assert_eq!(
        got.leases.iter().map(|l| l.id.0).collect::<Vec<_>>(),
        sorted
    );
}

fn release_forgets_the_lease<B: Backend>(b: &mut B) {
    let mut store = b.create();
    commit(
        &mut store,
        1,
        &[opened(1), granted(10, 1), granted(11, 1), granted(12, 1)],
    );
    commit(
        &mut store,
        2,
        &[
            released(10, 1, ReleaseReason::Checkin),
            released(12, 1, ReleaseReason::Expired),
        ],
    );
    assert_eq!(load(&store).leases, vec![lease(11, 1)]);
}

fn close_forgets_the_session<B: Backend>(b: &mut B) {
    let mut store = b.create();
    commit(
        &mut store,
        1,
        &[opened(1), opened(2), granted(10, 1), granted(20, 2)],
    );
    commit(
        &mut store,
        2,
        &[released(10, 1, ReleaseReason::SessionClosed), closed(1)],
    );
    assert_eq!(
        load(&store),
        Snapshot {
            sessions: vec![stored(&session(2))],
            leases: vec![lease(20, 2)]
        }
    );
}

fn close_drops_leases_left_behind<B: Backend>(b: &mut B) {
    let mut store = b.create();
    commit(
        &mut store,
        1,
        &[
            opened(1),
            opened(2),
            granted(10, 1),
            granted(11, 1),
            granted(20, 2),
        ],
    );
    // The ledger always releases first; a caller that does not still gets a consistent store.
    commit(
        &mut store,
        2,
        &[released(10, 1, ReleaseReason::Expired), closed(1)],
    );
    assert_eq!(
        load(&store),
        Snapshot {
            sessions: vec![stored(&session(2))],
            leases: vec![lease(20, 2)]
        }
    );
}

fn unknown_releases_and_closes_are_harmless<B: Backend>(b: &mut B) {
    let mut store = b.create();
    commit(&mut store, 1, &[opened(1), granted(10, 1)]);
    let before = load(&store);
    commit(
        &mut store,
        2,
        &[
            released(99, 1, ReleaseReason::Checkin),
            released(98, 42, ReleaseReason::Expired),
            closed(42),
        ],
    );
    assert_eq!(load(&store), before);
    assert_eq!(usage(&store).len(), 5, "even no-op changes are logged");
}

fn repeating_a_batch_changes_nothing<B: Backend>(b: &mut B) {
    let mut store = b.create();
    let first = [opened(1), opened(2), granted(10, 1), granted(11, 2)];
    let second = [
        released(10, 1, ReleaseReason::Checkin),
        released(11, 2, ReleaseReason::SessionClosed),
        closed(2),
    ];
    commit(&mut store, 1, &first);
    commit(&mut store, 2, &second);
    let once = load(&store);
    // A replay (say, of a log after a crash) reapplies batches in order.
    commit(&mut store, 1, &first);
    commit(&mut store, 2, &second);
    assert_eq!(load(&store), once);
    // A later write of the same id replaces the row.
    let mut moved = session(1);
    moved.client.address = "10.9.9.9:1".into();
    commit(&mut store, 3, &[Change::SessionOpened(moved.clone())]);
    assert_eq!(load(&store).sessions, vec![stored(&moved)]);
}

fn grant_to_unknown_session_refuses_the_whole_batch<B: Backend>(b: &mut B) {
    let mut store = b.create();
    commit(&mut store, 1, &[opened(1), granted(10, 1)]);
    let before = (load(&store), usage(&store));
    let batch = [
        opened(2),
        granted(20, 2),
        released(10, 1, ReleaseReason::Checkin),
        granted(30, 3),
    ];
    match store.commit(2, &batch) {
        Err(StoreError::UnknownSession { lease, session }) => {
            assert_eq!((lease, session), (LeaseId(30), SessionId(3)));
        }
        other => panic!(
            "expected UnknownSession, got {:?}",
            other.map_err(|e| chain(&e))
        ),
    }
    assert_eq!(
        (load(&store), usage(&store)),
        before,
        "a refused batch must leave no trace"
    );
    // The store is still usable, and seq numbers continue without a gap.
    commit(&mut store, 3, &[opened(3), granted(30, 3)]);
    let seqs: Vec<i64> = usage(&store).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}

fn grant_after_close_in_the_same_batch_is_refused<B: Backend>(b: &mut B) {
    let mut store = b.create();
    commit(
        &mut store,
        1,
        &[
            opened(1),
            granted(10, 1),
            released(10, 1, ReleaseReason::Checkin),
        ],
    );
    let err = store
        .commit(2, &[closed(1), granted(11, 1)])
        .expect_err("grant after close");
    assert!(
        matches!(err, StoreError::UnknownSession { .. }),
        "got {}",
        chain(&err)
    );
    assert_eq!(load(&store).sessions, vec![stored(&session(1))]);
}

fn empty_batch_is_a_no_op<B: Backend>(b: &mut B) {
    let mut store = b.create();
    commit(&mut store, 1, &[opened(1)]);
    let before = (load(&store), usage(&store));
    commit(&mut store, 2, &[]);
    assert_eq!((load(&store), usage(&store)), before);
}

fn meta_round_trips<B: Backend>(b: &mut B) {
    let mut store = b.create();
    assert_eq!(ok(store.get_meta("k"), "reading"), None);
    ok(store.set_meta("k", b"one"), "writing");
    ok(store.set_meta("k", b"two"), "overwriting");
    ok(store.set_meta("empty", b""), "writing empty");
    assert_eq!(ok(store.get_meta("k"), "reading"), Some(b"two".to_vec()));
    assert_eq!(ok(store.get_meta("empty"), "reading"), Some(Vec::new()));
    assert_eq!(
        ok(store.get_meta("K"), "reading"),
        None,
        "keys are case-sensitive"
    );
    assert_eq!(
        load(&store),
        Snapshot::default(),
        "meta is not ledger state"
    );
}
