//! Sessions: opening, resuming, heartbeats, disconnects, expiry and closing.

use usher_core::{
    Change, Command, Lease, LeaseId, Ledger, LedgerError, Name, Outcome, ReleaseReason, SessionId,
};

use crate::util::{
    GRACE, T0, TTL, VENDOR, apply, catalog, checkout_cmd, client, ent, grant, key, ledger,
    open_cmd, secret, session, snapshot,
};

#[test]
fn opening_a_live_session_id_again_is_an_error() {
    let mut ledger = ledger(&[]);
    session(&mut ledger, 1, T0);
    let before = snapshot(&ledger);
    let (result, changes) = apply(&mut ledger, T0 + 5, open_cmd(1));
    assert_eq!(result, Err(LedgerError::IdInUse));
    assert_eq!(changes, vec![]);
    assert_eq!(
        snapshot(&ledger),
        before,
        "the first session must be untouched"
    );
}

#[test]
fn a_closed_session_id_may_be_reused() {
    let mut ledger = ledger(&[]);
    let s = session(&mut ledger, 1, T0);
    let (result, _) = apply(&mut ledger, T0, Command::CloseSession { id: s });
    assert_eq!(result, Ok(Outcome::Done));
    session(&mut ledger, 1, T0 + 1);
}

#[test]
fn commands_on_an_unknown_session_fail_and_change_nothing() {
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    let s = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, s, 1, "cad", "2025", 1);
    let ghost = SessionId(2);
    let cmds = [
        Command::Resume {
            id: ghost,
            secret_hash: secret(2),
            address: "10.0.0.9:1".into(),
        },
        Command::Heartbeat { id: ghost },
        Command::Disconnected { id: ghost },
        Command::CloseSession { id: ghost },
        checkout_cmd(ghost, 2, "cad", "2025", 1),
        Command::Checkin {
            session: ghost,
            lease_id: LeaseId(1),
        },
    ];
    for cmd in cmds {
        let before = snapshot(&ledger);
        let (result, changes) = apply(&mut ledger, T0 + 1_000, cmd.clone());
        assert_eq!(result, Err(LedgerError::UnknownSession), "{cmd:?}");
        assert_eq!(changes, vec![], "{cmd:?}");
        assert_eq!(
            snapshot(&ledger),
            before,
            "{cmd:?}: an error must change nothing"
        );
    }
}

#[test]
fn resume_with_the_wrong_secret_is_refused() {
    let mut ledger = ledger(&[]);
    let s = session(&mut ledger, 1, T0);
    apply(&mut ledger, T0 + 1_000, Command::Disconnected { id: s })
        .0
        .unwrap();
    let before = snapshot(&ledger);
    let mut wrong = secret(1);
    wrong[31] ^= 1;
    for bad in [wrong, secret(2), [0; 32]] {
        let cmd = Command::Resume {
            id: s,
            secret_hash: bad,
            address: "evil:1".into(),
        };
        let (result, changes) = apply(&mut ledger, T0 + 2_000, cmd.clone());
        assert_eq!(result, Err(LedgerError::BadSecret), "{cmd:?}");
        assert_eq!(changes, vec![], "{cmd:?}");
        assert_eq!(
            snapshot(&ledger),
            before,
            "{cmd:?}: a bad secret must change nothing"
        );
    }
}

#[test]
fn resume_returns_the_sessions_leases_and_reconnects_it() {
    let mut ledger = ledger(&[ent("cad", "2025", 5), ent("sim", "1.0", 5)]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    let l3 = grant(&mut ledger, T0, a, 3, "sim", "1", 2);
    let l1 = grant(&mut ledger, T0, a, 1, "cad", "2025", 1);
    grant(&mut ledger, T0, b, 2, "cad", "2025", 1);
    let l4 = grant(&mut ledger, T0, a, 4, "cad", "2025", 1);
    let (result, _) = apply(
        &mut ledger,
        T0,
        Command::Checkin {
            session: a,
            lease_id: l4.id,
        },
    );
    assert_eq!(result, Ok(Outcome::Released(l4)));
    apply(&mut ledger, T0 + 1_000, Command::Disconnected { id: a })
        .0
        .unwrap();
    assert!(!ledger.session(a).unwrap().connected);

    let now = T0 + 5_000;
    let cmd = Command::Resume {
        id: a,
        secret_hash: secret(1),
        address: "10.9.9.9:5".into(),
    };
    let (result, changes) = apply(&mut ledger, now, cmd);
    assert_eq!(
        result,
        Ok(Outcome::Resumed {
            leases: vec![l1, l3]
        }),
        "leases in id order"
    );
    assert_eq!(changes, vec![], "resume records nothing durable");
    let s = ledger.session(a).unwrap();
    assert!(s.connected);
    assert_eq!(s.expires_at, now + TTL, "resume is activity: a full TTL");
    assert_eq!(s.client.address, "10.9.9.9:5");
    assert_eq!(s.client.user, client(1).user);

    // A session with no leases resumes with none.
    let c = session(&mut ledger, 3, T0);
    let cmd = Command::Resume {
        id: c,
        secret_hash: secret(3),
        address: "x:1".into(),
    };
    assert_eq!(
        apply(&mut ledger, now, cmd).0,
        Ok(Outcome::Resumed { leases: vec![] })
    );
}

#[test]
fn activity_pushes_expiry_out_by_one_ttl() {
    let mut ledger = ledger(&[ent("cad", "2025", 5)]);
    let s = session(&mut ledger, 1, T0);
    assert_eq!(ledger.session(s).unwrap().expires_at, T0 + TTL);
    let lease = grant(&mut ledger, T0, s, 1, "cad", "2025", 1);
    let steps = [
        (T0 + 30_000, Command::Heartbeat { id: s }),
        (T0 + 61_000, checkout_cmd(s, 2, "cad", "2025", 1)),
        (T0 + 62_000, checkout_cmd(s, 3, "cad", "2099", 1)),
        (
            T0 + 90_000,
            Command::Checkin {
                session: s,
                lease_id: lease.id,
            },
        ),
        (
            T0 + 95_000,
            Command::Checkin {
                session: s,
                lease_id: LeaseId(999),
            },
        ),
        (T0 + 200_000, Command::Heartbeat { id: s }),
    ];
    for (now, cmd) in steps {
        let (result, changes) = apply(&mut ledger, now, cmd.clone());
        assert!(result.is_ok(), "{cmd:?}: {result:?}");
        let expires_at = ledger.session(s).unwrap().expires_at;
        assert_eq!(expires_at, now + TTL, "{cmd:?} at {now}");
        assert_eq!(ledger.next_deadline(), Some(now + TTL), "{cmd:?} at {now}");
        if matches!(cmd, Command::Heartbeat { .. }) {
            assert_eq!(changes, vec![], "heartbeats are soft state");
        }
    }
}

#[test]
fn heartbeat_after_a_disconnect_reconnects() {
    let mut ledger = ledger(&[]);
    let s = session(&mut ledger, 1, T0);
    apply(&mut ledger, T0, Command::Disconnected { id: s })
        .0
        .unwrap();
    assert!(!ledger.session(s).unwrap().connected);
    apply(&mut ledger, T0 + 1_000, Command::Heartbeat { id: s })
        .0
        .unwrap();
    let session = ledger.session(s).unwrap();
    assert!(session.connected);
    assert_eq!(session.expires_at, T0 + 1_000 + TTL);
}

#[test]
fn disconnect_shortens_expiry_to_the_grace_but_never_lengthens_it() {
    // (time of the last heartbeat, times of Disconnected, expected expiry afterwards)
    let cases: [(u64, &[u64], u64); 5] = [
        (T0, &[T0 + 1_000], T0 + 1_000 + GRACE),
        (T0, &[T0], T0 + GRACE),
        (T0, &[T0 + TTL - GRACE], T0 + TTL),
        (T0, &[T0 + TTL - 5_000], T0 + TTL),
        (T0, &[T0 + 1_000, T0 + 6_000], T0 + 1_000 + GRACE),
    ];
    for (heard, disconnects, expected) in cases {
        let mut ledger = ledger(&[]);
        let s = session(&mut ledger, 1, heard);
        for &at in disconnects {
            let (result, changes) = apply(&mut ledger, at, Command::Disconnected { id: s });
            assert_eq!(result, Ok(Outcome::Done), "disconnect at {at}");
            assert_eq!(changes, vec![], "disconnect at {at}");
        }
        let session = ledger.session(s).unwrap();
        assert!(!session.connected, "{disconnects:?}");
        assert_eq!(
            session.expires_at, expected,
            "disconnects at {disconnects:?}"
        );
        assert_eq!(
            ledger.next_deadline(),
            Some(expected),
            "disconnects at {disconnects:?}"
        );
    }
}

#[test]
fn expire_releases_only_lapsed_sessions() {
    let mut ledger = ledger(&[ent("cad", "2025", 5)]);
    let pool = key("cad", VENDOR, "2025");
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    let c = session(&mut ledger, 3, T0);
    let b2 = grant(&mut ledger, T0, b, 2, "cad", "2025", 1);
    let b1 = grant(&mut ledger, T0, b, 1, "cad", "2025", 2);
    let a3 = grant(&mut ledger, T0, a, 3, "cad", "2025", 1);
    // a keeps talking; b goes quiet; c drops its connection and does not come back.
    apply(&mut ledger, T0 + 60_000, Command::Heartbeat { id: a })
        .0
        .unwrap();
    apply(&mut ledger, T0 + 60_000, Command::Disconnected { id: c })
        .0
        .unwrap();
    assert_eq!(ledger.next_deadline(), Some(T0 + 60_000 + GRACE));

    // Nothing has lapsed a millisecond before c's grace ends.
    let (result, changes) = apply(&mut ledger, T0 + 60_000 + GRACE - 1, Command::Expire);
    assert_eq!(result, Ok(Outcome::Expired { sessions: vec![] }));
    assert_eq!(changes, vec![]);

    // c lapses exactly at its deadline.
    let (result, changes) = apply(&mut ledger, T0 + 60_000 + GRACE, Command::Expire);
    assert_eq!(result, Ok(Outcome::Expired { sessions: vec![c] }));
    assert_eq!(changes, vec![Change::SessionClosed(c)]);
    assert_eq!(ledger.next_deadline(), Some(T0 + TTL));

    // b lapses at the end of its TTL; its leases go back in id order, then it closes.
    let (result, changes) = apply(&mut ledger, T0 + TTL, Command::Expire);
    assert_eq!(result, Ok(Outcome::Expired { sessions: vec![b] }));
    assert_eq!(
        changes,
        vec![
            Change::LeaseReleased {
                lease: b1,
                reason: ReleaseReason::Expired
            },
            Change::LeaseReleased {
                lease: b2,
                reason: ReleaseReason::Expired
            },
            Change::SessionClosed(b),
        ]
    );
    assert_eq!(ledger.session(b), None);
    assert_eq!(ledger.session_leases(b).count(), 0);
    assert_eq!(ledger.in_use(&pool), 1, "only a's seat is still held");
    assert_eq!(ledger.lease(a3.id), Some(&a3));
    assert!(ledger.session(a).is_some());
    assert_eq!(ledger.next_deadline(), Some(T0 + 60_000 + TTL));

    // The lapsed session is gone for good: it cannot resume or check in.
    let cmd = Command::Resume {
        id: b,
        secret_hash: secret(2),
        address: "x:1".into(),
    };
    assert_eq!(
        apply(&mut ledger, T0 + TTL, cmd).0,
        Err(LedgerError::UnknownSession)
    );
}

#[test]
fn expire_ends_sessions_in_deadline_order() {
    let mut ledger = ledger(&[ent("cad", "2025", 5)]);
    // Opened in one order, lapsing in another; 4 and 2 share a deadline (ties by id).
    for (id, opened) in [(1, T0 + 30), (4, T0 + 10), (2, T0 + 10), (3, T0 + 20)] {
        let s = session(&mut ledger, id, opened);
        grant(&mut ledger, opened, s, id * 10, "cad", "2025", 1);
    }
    let (result, changes) = apply(&mut ledger, T0 + 10 * TTL, Command::Expire);
    let order = [2, 4, 3, 1].map(SessionId);
    assert_eq!(
        result,
        Ok(Outcome::Expired {
            sessions: order.to_vec()
        })
    );
    let closed: Vec<_> = changes
        .iter()
        .map(|c| match c {
            Change::LeaseReleased {
                lease,
                reason: ReleaseReason::Expired,
            } => lease.session,
            Change::SessionClosed(id) => *id,
            other => panic!("unexpected change {other:?}"),
        })
        .collect();
    let expected: Vec<_> = order.iter().flat_map(|&s| [s, s]).collect();
    assert_eq!(closed, expected, "{changes:?}");
    assert_eq!(ledger.next_deadline(), None);
    assert_eq!(ledger.in_use(&key("cad", VENDOR, "2025")), 0);
}

#[test]
fn close_session_releases_everything() {
    let mut ledger = ledger(&[ent("cad", "2025", 5), ent("sim", "2", 5)]);
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0);
    let l2 = grant(&mut ledger, T0, a, 2, "cad", "2025", 2);
    let l1 = grant(&mut ledger, T0, a, 1, "sim", "2", 1);
    let other = grant(&mut ledger, T0, b, 3, "cad", "2025", 1);

    let (result, changes) = apply(&mut ledger, T0 + 1, Command::CloseSession { id: a });
    assert_eq!(result, Ok(Outcome::Done));
    assert_eq!(
        changes,
        vec![
            Change::LeaseReleased {
                lease: l1,
                reason: ReleaseReason::SessionClosed
            },
            Change::LeaseReleased {
                lease: l2,
                reason: ReleaseReason::SessionClosed
            },
            Change::SessionClosed(a),
        ]
    );
    assert_eq!(ledger.session(a), None);
    assert_eq!(ledger.in_use(&key("cad", VENDOR, "2025")), 1);
    assert_eq!(ledger.in_use(&key("sim", VENDOR, "2")), 0);
    assert_eq!(
        ledger.leases().cloned().collect::<Vec<_>>(),
        vec![other.clone()]
    );
    assert_eq!(ledger.next_deadline(), Some(T0 + TTL), "b is still live");

    let (result, changes) = apply(&mut ledger, T0 + 2, Command::CloseSession { id: b });
    assert_eq!(result, Ok(Outcome::Done));
    assert_eq!(
        changes,
        vec![
            Change::LeaseReleased {
                lease: other,
                reason: ReleaseReason::SessionClosed
            },
            Change::SessionClosed(b),
        ]
    );
    assert_eq!(ledger.next_deadline(), None);
    assert_eq!(ledger.leases().count(), 0);
    let again = apply(&mut ledger, T0 + 3, Command::CloseSession { id: b });
    assert_eq!(again, (Err(LedgerError::UnknownSession), vec![]));
}

#[test]
fn close_of_a_session_without_leases_records_only_the_close() {
    let mut ledger = ledger(&[]);
    let s = session(&mut ledger, 1, T0);
    let (result, changes) = apply(&mut ledger, T0, Command::CloseSession { id: s });
    assert_eq!(result, Ok(Outcome::Done));
    assert_eq!(changes, vec![Change::SessionClosed(s)]);
    assert_eq!(ledger.sessions().count(), 0);
}

#[test]
fn next_deadline_is_the_earliest_expiry() {
    let mut ledger = ledger(&[]);
    assert_eq!(
        ledger.next_deadline(),
        None,
        "an empty ledger has nothing to expire"
    );
    let a = session(&mut ledger, 1, T0 + 500);
    assert_eq!(ledger.next_deadline(), Some(T0 + 500 + TTL));
    let b = session(&mut ledger, 2, T0 + 100);
    assert_eq!(ledger.next_deadline(), Some(T0 + 100 + TTL));
    apply(&mut ledger, T0 + 1_000, Command::Heartbeat { id: b })
        .0
        .unwrap();
    assert_eq!(ledger.next_deadline(), Some(T0 + 500 + TTL));
    apply(&mut ledger, T0 + 2_000, Command::Disconnected { id: b })
        .0
        .unwrap();
    assert_eq!(ledger.next_deadline(), Some(T0 + 2_000 + GRACE));
    apply(&mut ledger, T0 + 3_000, Command::CloseSession { id: b })
        .0
        .unwrap();
    assert_eq!(ledger.next_deadline(), Some(T0 + 500 + TTL));
    apply(&mut ledger, T0 + 500 + TTL, Command::Expire)
        .0
        .unwrap();
    assert_eq!(ledger.session(a), None);
    assert_eq!(ledger.next_deadline(), None);
}

#[test]
fn sessions_and_leases_share_one_copy_of_each_name() {
    let mut ledger = ledger(&[ent("cad", "1.0", 10)]);
    let (a, b) = (session(&mut ledger, 1, T0), session(&mut ledger, 2, T0));
    let (one, two) = (ledger.session(a).unwrap(), ledger.session(b).unwrap());
    // Different users and hosts, the same program and display.
    assert_ne!(one.client.user, two.client.user);
    assert!(one.client.program.shares_with(&two.client.program));
    assert!(one.client.display.shares_with(&two.client.display));

    let first = grant(&mut ledger, T0, a, 1, "cad", "1.0", 1);
    let second = grant(&mut ledger, T0, b, 2, "cad", "1.0", 1);
    let (first, second) = (
        ledger.lease(first.id).unwrap(),
        ledger.lease(second.id).unwrap(),
    );
    assert!(first.feature.shares_with(&second.feature));
    assert!(first.vendor.shares_with(&second.vendor));
    assert!(first.pool_version.shares_with(&second.pool_version));

    // A ledger restored from stored rows (a fresh copy of every name) shares them too.
    let fresh = |n: &Name| Name::from(n.as_str());
    let sessions = ledger.sessions().map(|s| {
        let mut s = s.clone();
        s.client.program = fresh(&s.client.program);
        s
    });
    let leases = ledger.leases().map(|l| Lease {
        feature: fresh(&l.feature),
        ..l.clone()
    });
    let mut changes = Vec::new();
    let restored = Ledger::restore(
        catalog(&[ent("cad", "1.0", 10)]),
        ledger.config(),
        sessions.collect::<Vec<_>>(),
        leases.collect::<Vec<_>>(),
        T0,
        &mut changes,
    );
    assert_eq!(changes, vec![]);
    let leases: Vec<_> = restored.leases().collect();
    assert_eq!(leases.len(), 2);
    assert!(leases[0].feature.shares_with(&leases[1].feature));
    let (one, two) = (restored.session(a), restored.session(b));
    let (one, two) = (one.unwrap(), two.unwrap());
    assert!(one.client.program.shares_with(&two.client.program));
}

/// A detached session is heard from (by keepalives) without a connection: `Detach` marks
/// it so and pushes its expiry out like a heartbeat, records nothing durable, and a resume
/// over TCP, a dropped connection or a restart ends it.
#[test]
fn detaching_marks_the_session_until_it_resumes() {
    let mut ledger = ledger(&[]);
    let s = session(&mut ledger, 1, T0);
    let state = |l: &Ledger| {
        let s = l.session(s).unwrap();
        (s.connected, s.detached, s.expires_at)
    };
    assert_eq!(state(&ledger), (true, false, T0 + TTL));

    let (result, changes) = apply(&mut ledger, T0 + 1_000, Command::Detach { id: s });
    assert_eq!((result, changes), (Ok(Outcome::Done), vec![]));
    assert_eq!(state(&ledger), (true, true, T0 + 1_000 + TTL));
    // Keepalives arrive as heartbeats: still detached.
    apply(&mut ledger, T0 + 2_000, Command::Heartbeat { id: s })
        .0
        .unwrap();
    assert_eq!(state(&ledger), (true, true, T0 + 2_000 + TTL));

    // A restart forgets it: the keepalive keys are gone, the client comes back over TCP.
    let mut changes = Vec::new();
    let restored = Ledger::restore(
        catalog(&[]),
        ledger.config(),
        ledger.sessions().cloned().collect::<Vec<_>>(),
        Vec::new(),
        T0 + 3_000,
        &mut changes,
    );
    assert!(!restored.session(s).unwrap().detached);

    let resume = Command::Resume {
        id: s,
        secret_hash: secret(1),
        address: "10.0.0.7:2".into(),
    };
    apply(&mut ledger, T0 + 3_000, resume).0.unwrap();
    assert_eq!(state(&ledger), (true, false, T0 + 3_000 + TTL));

    apply(&mut ledger, T0 + 4_000, Command::Detach { id: s })
        .0
        .unwrap();
    apply(&mut ledger, T0 + 5_000, Command::Disconnected { id: s })
        .0
        .unwrap();
    assert_eq!(state(&ledger), (false, false, T0 + 5_000 + GRACE));

    let ghost = Command::Detach { id: SessionId(9) };
    assert_eq!(
        apply(&mut ledger, T0, ghost).0,
        Err(LedgerError::UnknownSession)
    );
}

/// A million idle sessions, each with a lease, must fit in 600 bytes apiece (BENCHMARKS.md);
/// these two records are most of it. A field that grows them shows up here first, before
/// the `sessions` benchmark.
#[test]
fn sessions_and_leases_stay_small() {
    assert!(
        std::mem::size_of::<usher_core::Session>() <= 120,
        "Session is {} bytes",
        std::mem::size_of::<usher_core::Session>()
    );
    assert!(
        std::mem::size_of::<Lease>() <= 112,
        "Lease is {} bytes",
        std::mem::size_of::<Lease>()
    );
}
