//! The usage log's part of the contract: a record per change (queue changes too), paging,
//! server events and refusals committed with a batch, and the hash chain.

use usher_core::{Change, DequeueReason, LeaseId, QueuedRequest, ReleaseReason, SessionId};
use usher_store::{
    DETAIL_BORROW_ENDED, DETAIL_IDLE_TIMEOUT, DETAIL_LINGER_OVER, DETAIL_REUSED,
    DETAIL_SESSION_CLOSED, LogEvent, Store, UsageEvent,
    chain::{GENESIS, Head, Verifier, record_hash},
};

use super::{commit, load};
use crate::util::{Backend, closed, granted, lease, ok, opened, released, session, usage};

pub(super) fn queue_changes_are_logged_and_not_stored<B: Backend>(b: &mut B) {
    let mut store = b.create();
    let request = QueuedRequest {
        lease_id: LeaseId(30),
        session: SessionId(1),
        feature: "cad".into(),
        version: "2025".into(),
        count: 2,
        client_ref: 7,
        queued_at: 100,
        deadline: None,
        priority: None,
        seq: 0,
    };
    let mut lease = lease(30, 1);
    lease.count = 2;
    commit(
        &mut store,
        100,
        &[opened(1), Change::Queued(request.clone())],
    );
    let before = load(&store);
    commit(
        &mut store,
        200,
        &[
            Change::Dequeued {
                request: request.clone(),
                reason: DequeueReason::Granted(lease.clone()),
            },
            Change::LeaseGranted(lease.clone()),
        ],
    );
    commit(
        &mut store,
        300,
        &[Change::Dequeued {
            request: request.clone(),
            reason: DequeueReason::TimedOut,
        }],
    );
    assert_eq!(before.leases, vec![], "a queued request holds nothing");
    assert_eq!(load(&store).leases, vec![lease], "only the grant is stored");
    let log = usage(&store);
    let events: Vec<_> = log
        .iter()
        .map(|r| (r.event.clone(), r.lease, r.detail.as_deref()))
        .collect();
    assert_eq!(
        events,
        vec![
            (UsageEvent::SessionOpen, None, None),
            (UsageEvent::Queue, Some(LeaseId(30)), None),
            (UsageEvent::Dequeue, Some(LeaseId(30)), Some("granted")),
            (UsageEvent::Checkout, Some(LeaseId(30)), None),
            (UsageEvent::Dequeue, Some(LeaseId(30)), Some("timed_out")),
        ],
        "{log:#?}"
    );
    let queued = &log[1];
    assert_eq!(queued.feature.as_deref(), Some("cad"));
    assert_eq!(
        queued.version.as_deref(),
        Some("2025"),
        "the version asked for"
    );
    assert_eq!(queued.count, Some(2));
    assert_eq!(
        queued.user.as_deref(),
        Some(session(1).client.user.as_str())
    );
}

/// A lease borrowed for offline use.
fn borrowed(id: u64, session: u64) -> usher_core::Lease {
    usher_core::Lease {
        borrowed_until: Some(1_000_000),
        ..lease(id, session)
    }
}

pub(super) fn usage_log_has_one_record_per_change<B: Backend>(b: &mut B) {
    let mut store = b.create();
    let batches: [(u64, Vec<Change>); 3] = [
        (
            100,
            vec![
                opened(1),
                granted(10, 1),
                granted(11, 1),
                granted(12, 1),
                opened(2),
                granted(20, 2),
                Change::LeaseGranted(borrowed(13, 1)),
                Change::LeaseGranted(borrowed(14, 1)),
            ],
        ),
        (
            200,
            vec![
                released(10, 1, ReleaseReason::Checkin),
                Change::LeaseReleased {
                    lease: borrowed(13, 1),
                    reason: ReleaseReason::Returned,
                },
                Change::LeaseReleased {
                    lease: borrowed(14, 1),
                    reason: ReleaseReason::BorrowEnded,
                },
                released(12, 1, ReleaseReason::IdleTimeout),
                Change::LeaseLingering(usher_core::Lease {
                    lingering_until: Some(250),
                    ..lease(20, 2)
                }),
            ],
        ),
        (
            300,
            vec![
                released(11, 1, ReleaseReason::SessionClosed),
                closed(1),
                released(20, 2, ReleaseReason::Expired),
                closed(2),
            ],
        ),
    ];
    for (at, changes) in &batches {
        commit(&mut store, *at, changes);
    }
    let log = usage(&store);
    let all: Vec<(u64, &Change)> = batches
        .iter()
        .flat_map(|(at, cs)| cs.iter().map(move |c| (*at, c)))
        .collect();
    assert_eq!(log.len(), all.len(), "one record per change: {log:#?}");
    for (i, (record, (at, change))) in log.iter().zip(&all).enumerate() {
        let context = format!("record {i} for {change:?}: {record:#?}");
        assert_eq!(record.seq, i as i64 + 1, "{context}");
        assert_eq!(record.at, *at, "{context}");
        let (event, sid, lease_id, detail) = match change {
            Change::SessionOpened(s) => (UsageEvent::SessionOpen, s.id, None, None),
            Change::SessionClosed(id) => (UsageEvent::SessionClose, *id, None, None),
            Change::LeaseGranted(l) if l.borrowed_until.is_some() => {
                (UsageEvent::Borrow, l.session, Some(l.id), None)
            }
            Change::LeaseGranted(l) => (UsageEvent::Checkout, l.session, Some(l.id), None),
            Change::Queued(_) | Change::Dequeued { .. } => {
                unreachable!("no queue changes in this test")
            }
            Change::LeaseLingering(l) => (UsageEvent::Linger, l.session, Some(l.id), None),
            Change::LeaseReleased { lease, reason } => match reason {
                ReleaseReason::Checkin => {
                    (UsageEvent::Checkin, lease.session, Some(lease.id), None)
                }
                ReleaseReason::SessionClosed => (
                    UsageEvent::Checkin,
                    lease.session,
                    Some(lease.id),
                    Some(DETAIL_SESSION_CLOSED.to_owned()),
                ),
                ReleaseReason::Expired => (UsageEvent::Expire, lease.session, Some(lease.id), None),
                ReleaseReason::Removed => (UsageEvent::Remove, lease.session, Some(lease.id), None),
                ReleaseReason::LingerOver => (
                    UsageEvent::Checkin,
                    lease.session,
                    Some(lease.id),
                    Some(DETAIL_LINGER_OVER.to_owned()),
                ),
                ReleaseReason::Reused => (
                    UsageEvent::Checkin,
                    lease.session,
                    Some(lease.id),
                    Some(DETAIL_REUSED.to_owned()),
                ),
                ReleaseReason::Returned => {
                    (UsageEvent::Return, lease.session, Some(lease.id), None)
                }
                ReleaseReason::BorrowEnded => (
                    UsageEvent::Return,
                    lease.session,
                    Some(lease.id),
                    Some(DETAIL_BORROW_ENDED.to_owned()),
                ),
                ReleaseReason::IdleTimeout => (
                    UsageEvent::Expire,
                    lease.session,
                    Some(lease.id),
                    Some(DETAIL_IDLE_TIMEOUT.to_owned()),
                ),
            },
        };
        assert_eq!(record.event, event, "{context}");
        assert_eq!(record.session, Some(sid), "{context}");
        assert_eq!(record.lease, lease_id, "{context}");
        assert_eq!(record.detail, detail, "{context}");
        // Every change here concerns a stored session, so its identity is copied in.
        let s = session(sid.0);
        assert_eq!(
            record.user.as_deref(),
            Some(s.client.user.as_str()),
            "{context}"
        );
        assert_eq!(
            record.host.as_deref(),
            Some(s.client.host.as_str()),
            "{context}"
        );
        assert_eq!(
            record.display.as_deref(),
            Some(s.client.display.as_str()),
            "{context}"
        );
        match lease_id {
            Some(id) => {
                let l = lease(id.0, sid.0);
                assert_eq!(
                    record.feature.as_deref(),
                    Some(l.feature.as_str()),
                    "{context}"
                );
                assert_eq!(
                    record.vendor.as_deref(),
                    Some(l.vendor.as_str()),
                    "{context}"
                );
                assert_eq!(
                    record.version.as_deref(),
                    Some(l.pool_version.as_str()),
                    "{context}"
                );
                assert_eq!(record.count, Some(l.count), "{context}");
            }
            None => {
                let lease_columns = (
                    &record.feature,
                    &record.vendor,
                    &record.version,
                    &record.count,
                );
                assert_eq!(lease_columns, (&None, &None, &None, &None), "{context}");
            }
        }
    }
}

pub(super) fn usage_log_pages<B: Backend>(b: &mut B) {
    let mut store = b.create();
    let changes: Vec<Change> = (0..10).map(opened).collect();
    commit(&mut store, 1, &changes);
    let seqs = |after, limit| -> Vec<i64> {
        ok(store.usage_log(after, limit), "paging")
            .iter()
            .map(|r| r.seq)
            .collect()
    };
    assert_eq!(seqs(0, 3), vec![1, 2, 3]);
    assert_eq!(seqs(3, 3), vec![4, 5, 6]);
    assert_eq!(seqs(8, 100), vec![9, 10]);
    assert_eq!(seqs(10, 100), Vec::<i64>::new());
    assert_eq!(seqs(0, 0), Vec::<i64>::new());
    assert_eq!(seqs(-5, 1), vec![1]);
}

pub(super) fn log_event_appends_a_server_event<B: Backend>(b: &mut B) {
    let mut store = b.create();
    ok(
        store.log_event(5, UsageEvent::ServerStart, Some("usherd 0.1.0")),
        "logging start",
    );
    commit(&mut store, 6, &[opened(1)]);
    ok(
        store.log_event(7, UsageEvent::Other("license_reload".into()), None),
        "logging reload",
    );
    let store = b.reopen(store);
    let log = usage(&store);
    assert_eq!(log.len(), 3, "{log:#?}");
    let start = &log[0];
    assert_eq!(
        (start.seq, start.at, &start.event),
        (1, 5, &UsageEvent::ServerStart)
    );
    assert_eq!(start.detail.as_deref(), Some("usherd 0.1.0"));
    assert_eq!(
        (start.session, start.lease, &start.user),
        (None, None, &None)
    );
    assert_eq!(log[1].event, UsageEvent::SessionOpen);
    assert_eq!(
        (log[2].seq, &log[2].event),
        (3, &UsageEvent::Other("license_reload".into()))
    );
    assert_eq!(log[2].detail, None);
}

fn denial(session: u64, detail: &str) -> LogEvent {
    LogEvent {
        event: UsageEvent::Denied,
        session: Some(SessionId(session)),
        lease: None,
        feature: Some("cad".into()),
        vendor: None,
        version: Some("3.0".into()),
        count: Some(2),
        user: Some("gone-user".into()),
        host: Some("gone-host".into()),
        display: Some(":0".into()),
        detail: Some(detail.into()),
    }
}

pub(super) fn events_follow_the_changes_of_their_batch<B: Backend>(b: &mut B) {
    let mut store = b.create();
    ok(
        store.commit_batch(
            9,
            &[opened(1), granted(10, 1)],
            &[denial(1, "all_in_use"), denial(1, "unknown_feature")],
        ),
        "committing a batch with events",
    );
    let store = b.reopen(store);
    let log = usage(&store);
    let events: Vec<(i64, &UsageEvent, Option<&str>)> = log
        .iter()
        .map(|r| (r.seq, &r.event, r.detail.as_deref()))
        .collect();
    assert_eq!(
        events,
        vec![
            (1, &UsageEvent::SessionOpen, None),
            (2, &UsageEvent::Checkout, None),
            (3, &UsageEvent::Denied, Some("all_in_use")),
            (4, &UsageEvent::Denied, Some("unknown_feature")),
        ]
    );
    let d = &log[2];
    assert_eq!(d.at, 9);
    // Written as given: not looked up from the (stored) session.
    assert_eq!(
        (d.user.as_deref(), d.host.as_deref(), d.display.as_deref()),
        (Some("gone-user"), Some("gone-host"), Some(":0"))
    );
    assert_eq!(
        (d.feature.as_deref(), d.version.as_deref(), d.count, d.lease),
        (Some("cad"), Some("3.0"), Some(2), None)
    );
    assert_eq!(load(&store).leases.len(), 1, "events change no state");
}

pub(super) fn events_alone_are_a_batch<B: Backend>(b: &mut B) {
    let mut store = b.create();
    ok(
        store.commit_batch(3, &[], &[denial(7, "all_in_use")]),
        "committing only an event",
    );
    let store = b.reopen(store);
    let log = usage(&store);
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0].event, UsageEvent::Denied);
    assert_eq!(log[0].session, Some(SessionId(7)));
}

pub(super) fn usage_log_is_a_hash_chain<B: Backend>(b: &mut B) {
    let mut store = b.create();
    ok(store.log_event(1, UsageEvent::ServerStart, None), "start");
    commit(&mut store, 2, &[opened(1), granted(10, 1)]);
    // The chain carries on across a reopen (the SQLite store caches its head).
    let mut store = b.reopen(store);
    ok(
        store.commit_batch(3, &[], &[denial(1, "all_in_use")]),
        "denial",
    );
    commit(
        &mut store,
        4,
        &[released(10, 1, ReleaseReason::Checkin), closed(1)],
    );
    let log = usage(&store);
    assert_eq!(log.len(), 6);
    let mut prev = GENESIS;
    let mut verifier = Verifier::new();
    for r in &log {
        assert_eq!(r.hash, record_hash(&prev, r), "hash of seq {}", r.seq);
        prev = r.hash;
        ok_chain(verifier.next(r, Some(r.hash)));
    }
    let head = Head { seq: 6, hash: prev };
    assert_eq!(verifier.finish(Some(head)), Ok(6));
}

#[track_caller]
fn ok_chain(r: Result<(), usher_store::chain::ChainBreak>) {
    if let Err(e) = r {
        panic!("chain broken: {e}");
    }
}
