//! Rebuilding the ledger: after a restart ([`Ledger::restore`]), after the store rolled a
//! batch back ([`Ledger::reloaded`]), and when the licenses or the policy are reloaded.

use std::collections::{BTreeSet, HashMap};

use super::{LeaseIds, Ledger, LedgerConfig};
use crate::{
    Catalog, Change, Lease, LeaseId, Millis, Name, Policy, PoolRef, ReleaseReason, Session,
    SessionId,
};

impl Ledger {
    /// Rebuilds a ledger from stored sessions and leases after a restart.
    ///
    /// Every session gets a fresh TTL from `now` and is marked disconnected: its client has
    /// that long to come back and resume, and if it does not, its seats are released. A
    /// lease whose session is missing cannot be resumed by anyone; it is released at once
    /// and the release is appended to `changes` so the store forgets it too.
    pub fn restore(
        catalog: Catalog,
        config: LedgerConfig,
        sessions: impl IntoIterator<Item = Session>,
        leases: impl IntoIterator<Item = Lease>,
        now: Millis,
        changes: &mut Vec<Change>,
    ) -> Self {
        let mut ledger = Ledger::new(catalog, config);
        for mut session in sessions {
            session.connected = false;
            session.detached = false;
            session.expires_at = now.saturating_add(config.session_ttl);
            ledger.insert_session(session);
        }
        let leases: Vec<Lease> = leases.into_iter().collect();
        if leases.windows(2).all(|w| w[0].id < w[1].id) {
            // What a store gives (ids ascending, each once): build the indexes in bulk.
            ledger.restore_sorted_leases(leases, changes);
        } else {
            for lease in leases {
                if ledger.sessions.contains_key(&lease.session)
                    && !ledger.leases.contains_key(&lease.id)
                {
                    ledger.insert_lease(lease);
                } else {
                    changes.push(Change::LeaseReleased {
                        lease,
                        reason: ReleaseReason::Expired,
                    });
                }
            }
        }
        // A session whose every lease lingers had departed (said goodbye, or lapsed, with
        // seats still held): it stays departed, not resumable, and is closed with its last
        // lingering seat, exactly as without the restart. The store does not say whether
        // such a session had departed or was still live with all its seats given back; a
        // live one is treated as departed too, which costs its client nothing: the resume
        // is refused, the client opens a new session (it held no seat to lose), and the
        // same user and host can still take the lingering seats over.
        let departed: Vec<SessionId> = ledger
            .sessions
            .keys()
            .copied()
            .filter(|&id| {
                let mut leases = ledger.session_leases(id).peekable();
                leases.peek().is_some() && leases.all(Lease::detached)
            })
            .collect();
        for id in departed {
            let session = ledger.sessions.remove(&id).expect("listed just now");
            ledger.expiries.remove(&(session.expires_at, id));
            ledger.departed.insert(id, session);
        }
        ledger
    }

    /// Rebuilds this ledger from the store's sessions and leases after the store rolled
    /// back a batch (a full disk): what is stored is the truth, so changes the store never
    /// kept are gone. Unlike [`Ledger::restore`] (a restart), sessions this ledger knows
    /// keep their liveness (connected, detached, deadline), since their clients are still
    /// here and must not have to resume; the policy is kept too.
    pub fn reloaded(
        &self,
        sessions: impl IntoIterator<Item = Session>,
        leases: impl IntoIterator<Item = Lease>,
        now: Millis,
        changes: &mut Vec<Change>,
    ) -> Ledger {
        let mut ledger = Ledger::restore(
            self.catalog.clone(),
            self.config,
            sessions,
            leases,
            now,
            changes,
        );
        ledger.set_policy(self.policy.clone());
        for (id, session) in ledger.sessions.iter_mut() {
            let Some(live) = self.sessions.get(id) else {
                continue;
            };
            ledger.expiries.remove(&(session.expires_at, *id));
            session.connected = live.connected;
            session.detached = live.detached;
            session.expires_at = live.expires_at;
            ledger.expiries.insert((session.expires_at, *id));
        }
        ledger
    }

    /// [`Ledger::restore`]'s leases when their ids are strictly ascending (so none repeats):
    /// the same result as inserting them one by one with [`Ledger::insert_lease`], in a
    /// fraction of the time, which is what a restart with a million held leases waits for.
    ///
    /// The maps are built from sorted runs in one pass each instead of a million tree
    /// inserts, and seats are summed per pool under borrowed names instead of cloning three
    /// strings per lease into a `PoolKey`. Idle deadlines are not armed: no session is idle
    /// yet in a restored ledger (idleness is soft state).
    fn restore_sorted_leases(&mut self, leases: Vec<Lease>, changes: &mut Vec<Change>) {
        debug_assert!(self.leases.is_empty() && self.idle_since.is_empty());
        // In place: a second vector of a million leases costs as much to fault in as to fill.
        let mut kept = leases;
        let sessions = &self.sessions;
        changes.extend(
            kept.extract_if(.., |l| !sessions.contains_key(&l.session))
                .map(|lease| Change::LeaseReleased {
                    lease,
                    reason: ReleaseReason::Expired,
                }),
        );

        // Seats per pool. A pool that groups duplicates (`DUP_GROUP`) counts lease by
        // lease, as `account_add` does; the others just add up.
        let mut seats: HashMap<PoolRef<'_>, u32> = HashMap::new();
        for lease in &kept {
            *seats.entry(lease.pool_key()).or_default() += lease.count;
        }
        let mut grouped = Vec::new();
        for (key, sum) in seats {
            if self
                .catalog
                .pool(key)
                .is_some_and(|p| p.dup_group.is_some())
            {
                grouped.push(key.to_key());
            } else {
                self.in_use.add_ungrouped(key, sum);
            }
        }
        if !grouped.is_empty() {
            for lease in &kept {
                if grouped.iter().any(|k| k.as_pool_ref() == lease.pool_key()) {
                    self.account_add(lease);
                }
            }
        }

        // Ids arrive ascending, so each session's ids do too: sets built from sorted runs.
        let mut by_session: HashMap<SessionId, LeaseIds> = HashMap::new();
        for lease in &kept {
            self.tallies.add(lease);
            by_session.entry(lease.session).or_default().push(lease.id);
            if let Some(until) = lease.lingering_until {
                self.lingering.insert((until, lease.id));
            }
            if let Some(until) = lease.borrowed_until {
                self.borrowed.insert((until, lease.id));
            }
        }
        self.session_leases = by_session;
        let names = &mut self.names;
        self.leases = kept
            .into_iter()
            .map(|mut l| {
                names.lease(&mut l);
                (l.id, Box::new(l))
            })
            .collect();
    }

    /// Replaces the catalog (license reload). Leases are never revoked by a reload: if a
    /// pool shrinks below its usage, holders keep their seats and new checkouts are refused
    /// until usage falls below the new count. Queued checkouts that the new catalog can
    /// serve are granted by the next `Expire`.
    pub fn set_catalog(&mut self, catalog: Catalog) {
        self.catalog = catalog;
        // `DUP_GROUP` may have changed: count every pool's seats again.
        self.in_use.clear();
        let leases: Vec<Lease> = self.leases.values().map(|l| Lease::clone(l)).collect();
        for lease in &leases {
            self.account_add(lease);
        }
    }

    /// Puts a new policy in force (at start and on reload). Like a license reload it
    /// revokes nothing: a holder now over a `MAX` or outside an `INCLUDE` keeps the seats
    /// held. Queued checkouts it newly allows are granted by the next `Expire`.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        self.policy_leases = self
            .policy
            .counted_features()
            .into_iter()
            .map(|f| (Name::from(f), BTreeSet::new()))
            .collect();
        if !self.policy_leases.is_empty() {
            for (id, lease) in &self.leases {
                if let Some(ids) = self.policy_leases.get_mut(&*lease.feature) {
                    ids.insert(*id);
                }
            }
        }
        // Timeouts may have changed: re-arm every idle session's leases.
        self.idle_deadlines.clear();
        self.idle_deadline_of.clear();
        // Only idle sessions' leases have deadlines (see `arm_idle`): visiting just those
        // keeps a restart with a million leases and no idle session from walking them all.
        let ids: Vec<LeaseId> = self
            .idle_since
            .keys()
            .filter_map(|s| self.session_leases.get(s))
            .flatten()
            .copied()
            .collect();
        for id in ids {
            self.arm_idle(id);
        }
    }
}
