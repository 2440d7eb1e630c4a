//! Random valid histories, committed in random batches to a SQLite file that is reopened
//! along the way, must load back exactly what a plain model says, and must log exactly
//! what the in-memory reference store logs.

use std::collections::BTreeMap;

use proptest::{prelude::*, sample::Index};
use usher_core::{Change, ClientInfo, Lease, LeaseId, Millis, ReleaseReason, Session, SessionId};
use usher_store::{MemoryStore, Snapshot, SqliteStore, Store};

use crate::util::{chain, db_path, open, tempdir};

/// One step of a history, in terms that are always valid: indexes pick among what is live
/// when the step is interpreted, and steps that cannot apply (nothing live, id taken) are
/// skipped.
#[derive(Debug, Clone)]
enum Step {
    Open {
        id: u64,
        secret_hash: [u8; 32],
        client: ClientInfo,
        at: Millis,
    },
    Grant {
        session: Index,
        id: u64,
        feature: String,
        pool_version: String,
        count: u32,
        client_ref: u64,
        at: Millis,
    },
    Release {
        lease: Index,
        reason: ReleaseReason,
    },
    /// Releases a lease that is not stored: must be harmless.
    ReleaseUnknown {
        id: u64,
        session: u64,
    },
    /// Releases the session's leases (as the ledger does), then closes it.
    Close {
        session: Index,
        reason: ReleaseReason,
    },
    /// Closes a session without releasing its leases first: the store must drop them.
    CloseHolding {
        session: Index,
    },
    /// Grants a live lease again: must change nothing.
    Regrant {
        lease: Index,
    },
}

#[derive(Debug, Clone)]
struct Batch {
    at: Millis,
    steps: Vec<Step>,
    /// Close and reopen the SQLite store after this batch.
    reopen: bool,
}

/// Small ids collide (and get reused after a close); large ones exercise the bit-cast.
fn id() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..8, any::<u64>()]
}

fn text() -> impl Strategy<Value = String> {
    // `.` is any char but a newline, NUL and multi-byte ones included.
    prop_oneof![Just(String::new()), "[a-z]{1,8}", ".{0,6}"]
}

fn reason() -> impl Strategy<Value = ReleaseReason> {
    prop_oneof![
        Just(ReleaseReason::Checkin),
        Just(ReleaseReason::SessionClosed),
        Just(ReleaseReason::Expired)
    ]
}

fn client() -> impl Strategy<Value = ClientInfo> {
    (text(), text(), text(), any::<u32>(), text(), text(), text()).prop_map(
        |(user, host, display, pid, program, program_version, address)| ClientInfo {
            user: user.into(),
            host: host.into(),
            display: display.into(),
            pid,
            program: program.into(),
            program_version: program_version.into(),
            address: address.into(),
        },
    )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (id(), any::<[u8; 32]>(), client(), any::<u64>())
            .prop_map(|(id, secret_hash, client, at)| Step::Open { id, secret_hash, client, at }),
        5 => (any::<Index>(), id(), text(), text(), any::<u32>(), any::<u64>(), any::<u64>())
            .prop_map(|(session, id, feature, pool_version, count, client_ref, at)| {
                Step::Grant { session, id, feature, pool_version, count, client_ref, at }
            }),
        3 => (any::<Index>(), reason()).prop_map(|(lease, reason)| Step::Release { lease, reason }),
        1 => (id(), id()).prop_map(|(id, session)| Step::ReleaseUnknown { id, session }),
        2 => (any::<Index>(), reason()).prop_map(|(session, reason)| Step::Close { session, reason }),
        1 => any::<Index>().prop_map(|session| Step::CloseHolding { session }),
        1 => any::<Index>().prop_map(|lease| Step::Regrant { lease }),
    ]
}

fn history() -> impl Strategy<Value = Vec<Batch>> {
    let batch = (
        any::<u64>(),
        prop::collection::vec(step(), 0..12),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(at, steps, reopen)| Batch { at, steps, reopen });
    prop::collection::vec(batch, 1..8)
}

/// What should be stored: the plainest possible model, independent of both stores.
#[derive(Debug, Default)]
struct Model {
    sessions: BTreeMap<SessionId, Session>,
    leases: BTreeMap<LeaseId, Lease>,
}

impl Model {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            sessions: self.sessions.values().cloned().collect(),
            leases: self.leases.values().cloned().collect(),
        }
    }

    fn pick_session(&self, i: &Index) -> Option<SessionId> {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        (!ids.is_empty()).then(|| *i.get(&ids))
    }

    fn pick_lease(&self, i: &Index) -> Option<Lease> {
        let leases: Vec<&Lease> = self.leases.values().collect();
        (!leases.is_empty()).then(|| (*i.get(&leases)).clone())
    }

    fn release_all(&mut self, session: SessionId, reason: ReleaseReason, out: &mut Vec<Change>) {
        let held: Vec<LeaseId> = self
            .leases
            .values()
            .filter(|l| l.session == session)
            .map(|l| l.id)
            .collect();
        for id in held {
            if let Some(lease) = self.leases.remove(&id) {
                out.push(Change::LeaseReleased { lease, reason });
            }
        }
    }

    /// Turns a step into changes (none if it cannot apply) and updates the model.
    fn interpret(&mut self, step: &Step, out: &mut Vec<Change>) {
        match step.clone() {
            Step::Open {
                id,
                secret_hash,
                client,
                at,
            } => {
                let id = SessionId(id);
                if self.sessions.contains_key(&id) {
                    return;
                }
                // As the ledger hands it over: live soft state, which the store drops.
                let live = Session {
                    id,
                    secret_hash,
                    client,
                    opened_at: at,
                    expires_at: at.wrapping_add(120_000),
                    connected: true,
                    detached: false,
                };
                let stored = Session {
                    expires_at: 0,
                    connected: false,
                    detached: false,
                    ..live.clone()
                };
                self.sessions.insert(id, stored);
                out.push(Change::SessionOpened(live));
            }
            Step::Grant {
                session,
                id,
                feature,
                pool_version,
                count,
                client_ref,
                at,
            } => {
                let Some(session) = self.pick_session(&session) else {
                    return;
                };
                let id = LeaseId(id);
                if self.leases.contains_key(&id) {
                    return;
                }
                let lease = Lease {
                    id,
                    session,
                    feature: feature.into(),
                    vendor: "acme".into(),
                    requested_version: "1".into(),
                    pool_version: pool_version.into(),
                    count,
                    granted_at: at,
                    client_ref,
                    // Some grants are flagged, so the flag's round trip is checked too.
                    overdraft: client_ref % 3 == 0,
                    lingering_until: None,
                    borrowed_until: None,
                    token_for: None,
                };
                self.leases.insert(id, lease.clone());
                out.push(Change::LeaseGranted(lease));
            }
            Step::Release { lease, reason } => {
                let Some(lease) = self.pick_lease(&lease) else {
                    return;
                };
                self.leases.remove(&lease.id);
                out.push(Change::LeaseReleased { lease, reason });
            }
            Step::ReleaseUnknown { id, session } => {
                let id = LeaseId(id);
                if self.leases.contains_key(&id) {
                    return;
                }
                let lease = Lease {
                    id,
                    session: SessionId(session),
                    feature: "gone".into(),
                    vendor: "acme".into(),
                    requested_version: Default::default(),
                    pool_version: "1".into(),
                    count: 1,
                    granted_at: 0,
                    client_ref: 0,
                    overdraft: false,
                    lingering_until: None,
                    borrowed_until: None,
                    token_for: None,
                };
                out.push(Change::LeaseReleased {
                    lease,
                    reason: ReleaseReason::Checkin,
                });
            }
            Step::Close { session, reason } => {
                let Some(session) = self.pick_session(&session) else {
                    return;
                };
                self.release_all(session, reason, out);
                self.sessions.remove(&session);
                out.push(Change::SessionClosed(session));
            }
            Step::CloseHolding { session } => {
                let Some(session) = self.pick_session(&session) else {
                    return;
                };
                self.leases.retain(|_, l| l.session != session);
                self.sessions.remove(&session);
                out.push(Change::SessionClosed(session));
            }
            Step::Regrant { lease } => {
                let Some(lease) = self.pick_lease(&lease) else {
                    return;
                };
                out.push(Change::LeaseGranted(lease));
            }
        }
    }
}

/// Default 64 cases (each commits several fsynced batches); `PROPTEST_CASES` overrides.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn reopen(store: SqliteStore) -> SqliteStore {
    let path = store.path().to_owned();
    drop(store);
    open(&path)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sqlite_store_matches_the_model(history in history()) {
        let dir = tempdir();
        let mut sqlite = open(&db_path(&dir));
        let mut memory = MemoryStore::new();
        let mut model = Model::default();
        let mut committed = 0usize;
        for (b, batch) in history.iter().enumerate() {
            let mut changes = Vec::new();
            for step in &batch.steps {
                model.interpret(step, &mut changes);
            }
            sqlite.commit(batch.at, &changes)
                .map_err(|e| TestCaseError::fail(format!("sqlite batch {b}: {}", chain(&e))))?;
            memory.commit(batch.at, &changes)
                .map_err(|e| TestCaseError::fail(format!("memory batch {b}: {}", chain(&e))))?;
            committed += changes.len();
            if batch.reopen {
                sqlite = reopen(sqlite);
            }
            let expected = model.snapshot();
            prop_assert_eq!(&sqlite.load().unwrap(), &expected, "sqlite after batch {}", b);
            prop_assert_eq!(&memory.load().unwrap(), &expected, "memory after batch {}", b);
        }
        let sqlite = reopen(sqlite);
        prop_assert_eq!(sqlite.load().unwrap(), model.snapshot(), "after the final reopen");
        let log = sqlite.usage_log(0, usize::MAX).unwrap();
        prop_assert_eq!(log.len(), committed, "one usage record per change");
        prop_assert!(log.iter().enumerate().all(|(i, r)| r.seq == i as i64 + 1), "seq runs 1..");
        prop_assert_eq!(log, memory.usage_log(0, usize::MAX).unwrap());
    }
}
