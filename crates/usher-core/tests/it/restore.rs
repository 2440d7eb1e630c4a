//! Rebuilding the ledger after a restart from the sessions and leases a store kept.

use usher_core::{
    Change, Command, Denial, Lease, LeaseId, Ledger, Outcome, ReleaseReason, SessionId,
};

use crate::util::{
    CONFIG, Durable, T0, TTL, VENDOR, apply, catalog, checkout_cmd, ent, grant, increment, key,
    ledger, secret, session, snapshot,
};

/// A ledger with sessions 1 and 2 holding leases and session 3 holding none, plus the
/// durable state its changes describe. Session 1 is disconnected, 2 heartbeated late.
fn before_restart() -> (Ledger, Durable) {
    let ents = [ent("cad", "2025", 5), ent("sim", "3", 2)];
    let mut ledger = ledger(&ents);
    let mut durable = Durable::default();
    let mut changes = Vec::new();
    let a = session(&mut ledger, 1, T0);
    let b = session(&mut ledger, 2, T0 + 10);
    session(&mut ledger, 3, T0 + 20);
    for id in 1..=3 {
        changes.push(Change::SessionOpened(
            ledger.session(SessionId(id)).unwrap().clone(),
        ));
    }
    for lease in [
        grant(&mut ledger, T0 + 30, a, 1, "cad", "2025", 2),
        grant(&mut ledger, T0 + 30, a, 2, "sim", "3", 1),
        grant(&mut ledger, T0 + 40, b, 3, "cad", "2025", 1),
        grant(&mut ledger, T0 + 40, b, 4, "sim", "3", 1),
    ] {
        changes.push(Change::LeaseGranted(lease));
    }
    let (result, released) = apply(
        &mut ledger,
        T0 + 50,
        Command::Checkin {
            session: b,
            lease_id: LeaseId(4),
        },
    );
    assert!(matches!(result, Ok(Outcome::Released(_))), "{result:?}");
    changes.extend(released);
    apply(&mut ledger, T0 + 60, Command::Disconnected { id: a })
        .0
        .unwrap();
    apply(&mut ledger, T0 + 70, Command::Heartbeat { id: b })
        .0
        .unwrap();
    durable.record(&changes).unwrap();
    durable.check_matches(&ledger).unwrap();
    (ledger, durable)
}

#[test]
fn restore_gives_every_session_a_fresh_ttl_and_counts_its_leases() {
    let (old, durable) = before_restart();
    let now = T0 + 3_600_000;
    let mut changes = Vec::new();
    let restored = durable.restore(old.catalog().clone(), now, &mut changes);
    assert_eq!(changes, vec![], "a consistent store needs no repair");

    let (was, is) = (snapshot(&old), snapshot(&restored));
    assert_eq!(is.leases, was.leases);
    assert_eq!(is.in_use, was.in_use);
    assert_eq!(restored.in_use(&key("cad", VENDOR, "2025")), 3);
    assert_eq!(restored.in_use(&key("sim", VENDOR, "3")), 1);
    assert_eq!(is.sessions.len(), 3);
    for (id, s) in &is.sessions {
        let old = &was.sessions[id];
        assert_eq!(
            s.expires_at,
            now + TTL,
            "{id:?}: a fresh TTL from the restart"
        );
        assert!(!s.connected, "{id:?}: nobody is connected after a restart");
        assert_eq!(
            (s.secret_hash, &s.client, s.opened_at),
            (old.secret_hash, &old.client, old.opened_at),
            "{id:?}"
        );
    }
    assert_eq!(is.next_deadline, Some(now + TTL));
    for id in [1, 2] {
        let held: Vec<_> = restored.session_leases(SessionId(id)).cloned().collect();
        let before: Vec<_> = old.session_leases(SessionId(id)).cloned().collect();
        assert_eq!(held, before, "session {id}");
    }
}

#[test]
fn restore_ignores_the_stored_liveness() {
    let (old, durable) = before_restart();
    // Whatever expiry and connection state the store happened to hold, a restart resets it:
    // even a session stored as long expired gets its TTL to come back.
    let sessions = durable.sessions.values().cloned().map(|mut s| {
        s.expires_at = 0;
        s.connected = true;
        s
    });
    let now = T0 + 7_200_000;
    let mut changes = Vec::new();
    let restored = Ledger::restore(
        old.catalog().clone(),
        CONFIG,
        sessions,
        durable.leases.values().cloned(),
        now,
        &mut changes,
    );
    assert_eq!(changes, vec![]);
    for s in restored.sessions() {
        assert_eq!(
            (s.expires_at, s.connected),
            (now + TTL, false),
            "{:?}",
            s.id
        );
    }
}

#[test]
fn restore_releases_leases_whose_session_is_missing() {
    let (old, mut durable) = before_restart();
    let orphans: Vec<Lease> = durable
        .leases
        .values()
        .filter(|l| l.session == SessionId(1))
        .cloned()
        .collect();
    assert_eq!(orphans.len(), 2);
    durable.sessions.remove(&SessionId(1));

    let now = T0 + 1_000;
    let mut changes = vec![Change::SessionClosed(SessionId(77))];
    let restored = durable.restore(old.catalog().clone(), now, &mut changes);
    let mut expected = vec![Change::SessionClosed(SessionId(77))];
    expected.extend(orphans.iter().map(|l| Change::LeaseReleased {
        lease: l.clone(),
        reason: ReleaseReason::Expired,
    }));
    assert_eq!(
        changes, expected,
        "orphans are released through changes, appended to the buffer"
    );

    for l in &orphans {
        assert_eq!(
            restored.lease(l.id),
            None,
            "orphan {:?} must not be restored",
            l.id
        );
    }
    assert_eq!(
        restored.in_use(&key("cad", VENDOR, "2025")),
        1,
        "only session 2's seat"
    );
    assert_eq!(restored.in_use(&key("sim", VENDOR, "3")), 0);
    assert_eq!(restored.session(SessionId(1)), None);

    // The store, fed those changes, agrees with the rebuilt ledger.
    durable.record(&changes[1..]).unwrap();
    durable.check_matches(&restored).unwrap();
}

/// A store hands leases over in ascending id order, which `restore` builds in bulk; any
/// other order (or a repeated id) goes one lease at a time. Both must give the same ledger
/// and release the same orphans.
#[test]
fn restore_in_bulk_matches_restore_one_by_one() {
    let (old, mut durable) = before_restart();
    durable.sessions.remove(&SessionId(1));
    let now = T0 + 1_000;
    let sessions = || durable.sessions.values().cloned();
    let sorted: Vec<Lease> = durable.leases.values().cloned().collect();
    let mut shuffled = sorted.clone();
    shuffled.reverse();
    let (mut bulk_changes, mut single_changes) = (Vec::new(), Vec::new());
    let bulk = Ledger::restore(
        old.catalog().clone(),
        CONFIG,
        sessions(),
        sorted,
        now,
        &mut bulk_changes,
    );
    let single = Ledger::restore(
        old.catalog().clone(),
        CONFIG,
        sessions(),
        shuffled,
        now,
        &mut single_changes,
    );
    assert_eq!(snapshot(&bulk), snapshot(&single));
    single_changes.reverse();
    assert_eq!(
        bulk_changes, single_changes,
        "the same orphans, each in input order"
    );
    assert_eq!(bulk_changes.len(), 2, "session 1's two leases");
}

#[test]
fn restored_sessions_resume_or_expire() {
    let (old, mut durable) = before_restart();
    let now = T0 + 3_600_000;
    let mut changes = Vec::new();
    let mut restored = durable.restore(old.catalog().clone(), now, &mut changes);

    // Session 1 comes back and gets exactly its leases; session 2 never returns.
    let cmd = Command::Resume {
        id: SessionId(1),
        secret_hash: secret(1),
        address: "a:1".into(),
    };
    let (result, changes) = apply(&mut restored, now + 5_000, cmd);
    let held: Vec<_> = old.session_leases(SessionId(1)).cloned().collect();
    assert_eq!(result, Ok(Outcome::Resumed { leases: held }));
    assert_eq!(changes, vec![]);

    let (result, changes) = apply(&mut restored, now + TTL, Command::Expire);
    assert_eq!(
        result,
        Ok(Outcome::Expired {
            sessions: vec![SessionId(2), SessionId(3)]
        })
    );
    let lease3 = old.lease(LeaseId(3)).unwrap().clone();
    assert_eq!(
        changes,
        vec![
            Change::LeaseReleased {
                lease: lease3,
                reason: ReleaseReason::Expired
            },
            Change::SessionClosed(SessionId(2)),
            Change::SessionClosed(SessionId(3)),
        ]
    );
    durable.record(&changes).unwrap();
    durable.check_matches(&restored).unwrap();
    assert_eq!(restored.in_use(&key("cad", VENDOR, "2025")), 2);
}

#[test]
fn restore_under_a_smaller_license_keeps_holders_and_refuses_newcomers() {
    let (_, durable) = before_restart();
    let now = T0 + 1_000;
    let mut changes = Vec::new();
    let smaller = catalog(&[ent("cad", "2025", 2), ent("sim", "3", 2)]);
    let mut restored = durable.restore(smaller, now, &mut changes);
    assert_eq!(changes, vec![], "a smaller license revokes nothing");
    assert_eq!(restored.in_use(&key("cad", VENDOR, "2025")), 3);
    let s = session(&mut restored, 9, now);
    let (result, _) = apply(&mut restored, now, checkout_cmd(s, 10, "cad", "2025", 1));
    assert_eq!(
        result,
        Ok(Outcome::Denied(Denial::AllInUse {
            in_use: 3,
            total: 2
        }))
    );
}

#[test]
fn restore_keeps_leases_of_pools_no_longer_licensed() {
    let (old, durable) = before_restart();
    let now = T0 + 1_000;
    let mut changes = Vec::new();
    let mut restored = durable.restore(catalog(&[ent("sim", "3", 2)]), now, &mut changes);
    assert_eq!(changes, vec![]);
    let pool = key("cad", VENDOR, "2025");
    assert_eq!(
        restored.in_use(&pool),
        3,
        "held seats are counted even without a pool"
    );
    let (result, _) = apply(
        &mut restored,
        now,
        checkout_cmd(SessionId(2), 10, "cad", "2025", 1),
    );
    assert_eq!(result, Ok(Outcome::Denied(Denial::UnknownFeature)));
    let lease = old.lease(LeaseId(3)).unwrap().clone();
    let (result, changes) = apply(
        &mut restored,
        now,
        Command::Checkin {
            session: SessionId(2),
            lease_id: lease.id,
        },
    );
    assert_eq!(result, Ok(Outcome::Released(lease.clone())));
    assert_eq!(
        changes,
        vec![Change::LeaseReleased {
            lease,
            reason: ReleaseReason::Checkin
        }]
    );
    assert_eq!(restored.in_use(&pool), 2);
}

#[test]
fn restore_counts_leases_against_a_respelled_pool() {
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    let mut durable = Durable::default();
    let s = session(&mut ledger, 1, T0);
    durable
        .record(&[Change::SessionOpened(ledger.session(s).unwrap().clone())])
        .unwrap();
    for id in 1..=2 {
        let lease = grant(&mut ledger, T0, s, id, "cad", "2025", 1);
        durable.record(&[Change::LeaseGranted(lease)]).unwrap();
    }
    // The same license, re-issued with INCREMENT before FEATURE and a trailing ".0".
    let respelled = catalog(&[increment("cad", "2025.0", 1), ent("cad", "2025", 1)]);
    let mut changes = Vec::new();
    let mut restored = durable.restore(respelled, T0 + 1_000, &mut changes);
    let (result, _) = apply(
        &mut restored,
        T0 + 1_000,
        checkout_cmd(s, 3, "cad", "2025", 1),
    );
    assert_eq!(
        result,
        Ok(Outcome::Denied(Denial::AllInUse {
            in_use: 2,
            total: 2
        })),
        "2 seats held of 2: a third must be refused"
    );
}
