//! The ledger proper: sessions, leases and seat counts, changed only by `apply`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use usher_license::Version;

use crate::names::Names;
use crate::queue::Queue;
use crate::{
    Catalog, Change, ClientInfo, Command, Denial, DequeueReason, Lease, LeaseId, LedgerError,
    Millis, Name, Outcome, Policy, PoolKey, QueuedRequest, ReleaseReason, Session, SessionId, Wait,
    Who,
};

/// Upper bound on seats in one request; larger requests are malformed, not merely
/// unsatisfiable, and are refused before any arithmetic can overflow.
pub const MAX_SEATS_PER_REQUEST: u32 = 1_000_000;

/// Timing rules the ledger enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    /// How long a session lives without being heard from.
    pub session_ttl: Millis,
    /// How long a session whose connection closed without a goodbye may take to resume.
    pub reconnect_grace: Millis,
    /// How old a lease must be before an administrator may remove it.
    pub min_remove: Millis,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            session_ttl: 120_000,
            reconnect_grace: 10_000,
            min_remove: 120_000,
        }
    }
}

/// The seat-accounting state machine. See the crate docs for its invariants.
#[derive(Debug, Clone)]
pub struct Ledger {
    config: LedgerConfig,
    catalog: Catalog,
    // Sessions and leases are boxed: a map of a million entries keeps spare room (a hash
    // map up to half empty after growing, a B-tree's nodes about half full when filled in
    // order), and spare room costs 16 bytes per slot boxed instead of 200 unboxed.
    sessions: HashMap<SessionId, Box<Session>>,
    /// Every live session by expiry time, so `Expire` and `next_deadline` need not scan.
    expiries: BTreeSet<(Millis, SessionId)>,
    leases: BTreeMap<LeaseId, Box<Lease>>,
    /// Each session's leases, in id order. Usually one, kept inline in the map's slot;
    /// more spill to the heap.
    session_leases: HashMap<SessionId, LeaseIds>,
    /// Seats held per pool. A pool that left the catalog (license removed on reload) keeps
    /// its count until its holders let go.
    in_use: HashMap<PoolKey, u32>,
    /// Checkouts waiting for seats. Soft state: not stored, empty after a restart.
    queue: Queue,
    /// The administrator's rules.
    policy: Policy,
    /// The leases of each feature whose checkouts the policy counts holders for
    /// (`RESERVE`, `MAX`, `MAX_OVERDRAFT`), in id order, so such a checkout looks at its
    /// feature's leases rather than at every lease. Other features have no entry and cost
    /// nothing. Rebuilt by `set_policy`.
    policy_leases: HashMap<Name, BTreeSet<LeaseId>>,
    /// Sessions whose application reported its user idle, and since when. Soft state.
    idle_since: HashMap<SessionId, Millis>,
    /// When each lease of an idle session is reclaimed under the policy's `TIMEOUT`.
    idle_deadlines: BTreeSet<(Millis, LeaseId)>,
    /// The same deadlines by lease, to disarm them.
    idle_deadline_of: HashMap<LeaseId, Millis>,
    /// Leases grouped as duplicates under their pool's `DUP_GROUP`, with their seats.
    dup_groups: HashMap<DupKey, BTreeMap<LeaseId, u32>>,
    /// The group of each grouped lease.
    lease_dup: HashMap<LeaseId, DupKey>,
    /// Sessions that ended (goodbye or expiry) while some of their seats linger. They
    /// cannot be resumed or used; each is closed when its last lingering lease ends.
    departed: HashMap<SessionId, Box<Session>>,
    /// Every lingering lease by the end of its linger.
    lingering: BTreeSet<(Millis, LeaseId)>,
    /// Every borrowed lease by the end of its borrow.
    borrowed: BTreeSet<(Millis, LeaseId)>,
    /// One shared copy of each name the sessions and leases use.
    names: Names,
}

/// A session's lease ids, sorted.
type LeaseIds = smallvec::SmallVec<[LeaseId; 1]>;

/// A group of duplicate checkouts: the pool, and the user, host and display where the
/// pool's `DUP_GROUP` compares them.
type DupKey = (PoolKey, Option<String>, Option<String>, Option<String>);

/// The pool a lease's seats come from.
fn pool_key(lease: &Lease) -> PoolKey {
    PoolKey {
        feature: lease.feature.to_string(),
        vendor: lease.vendor.to_string(),
        version: lease.pool_version.to_string(),
    }
}

/// The pool chosen for a checkout.
struct Choice {
    pool: PoolKey,
    /// Seats taken from the pool: the seats asked for, or for a token-based feature the
    /// tokens they cost.
    seats: u32,
    /// The token-based feature asked for, when the seats are tokens of another pool.
    token_for: Option<String>,
    /// The seats are beyond the pool's count.
    overdraft: bool,
    /// The seats are covered by free seats reserved for the client, so they may be granted
    /// even while others wait in the queue.
    reserved: bool,
}

/// A checkout that may take over lingering seats (see [`Ledger::reuse_lingering`]).
struct Reuse<'a> {
    session: SessionId,
    lease_id: LeaseId,
    feature: &'a str,
    version: &'a str,
    count: u32,
    client_ref: u64,
}

/// What the policy leaves a client for one checkout.
struct PolicySeats {
    /// The seats fit within the feature's count once the seats reserved for others are
    /// set aside.
    fits_in_count: bool,
    /// The seats fit in free seats reserved for the client.
    reserved: bool,
    /// Free seats reserved for others.
    held_for_others: u32,
    /// Overdraft seats the policy still allows (`MAX_OVERDRAFT`).
    overdraft_left: u32,
}

impl Ledger {
    /// An empty ledger serving `catalog`.
    pub fn new(catalog: Catalog, config: LedgerConfig) -> Self {
        Ledger {
            config,
            catalog,
            sessions: HashMap::new(),
            expiries: BTreeSet::new(),
            leases: BTreeMap::new(),
            session_leases: HashMap::new(),
            in_use: HashMap::new(),
            queue: Queue::default(),
            policy: Policy::default(),
            policy_leases: HashMap::new(),
            idle_since: HashMap::new(),
            idle_deadlines: BTreeSet::new(),
            idle_deadline_of: HashMap::new(),
            dup_groups: HashMap::new(),
            lease_dup: HashMap::new(),
            departed: HashMap::new(),
            lingering: BTreeSet::new(),
            borrowed: BTreeSet::new(),
            names: Names::default(),
        }
    }

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
        let mut seats: HashMap<(&str, &str, &str), u32> = HashMap::new();
        for lease in &kept {
            *seats
                .entry((&lease.feature, &lease.vendor, &lease.pool_version))
                .or_default() += lease.count;
        }
        let mut grouped = Vec::new();
        for ((feature, vendor, version), sum) in seats {
            let key = PoolKey {
                feature: feature.to_owned(),
                vendor: vendor.to_owned(),
                version: version.to_owned(),
            };
            if self
                .catalog
                .pool(&key)
                .is_some_and(|p| p.dup_group.is_some())
            {
                grouped.push(key);
            } else {
                *self.in_use.entry(key).or_default() += sum;
            }
        }
        if !grouped.is_empty() {
            for lease in &kept {
                if grouped.iter().any(|k| {
                    k.feature == lease.feature
                        && k.vendor == lease.vendor
                        && k.version == lease.pool_version
                }) {
                    self.account_add(lease);
                }
            }
        }

        // Ids arrive ascending, so each session's ids do too: sets built from sorted runs.
        let mut by_session: HashMap<SessionId, LeaseIds> = HashMap::new();
        for lease in &kept {
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

    /// The timing rules.
    pub fn config(&self) -> LedgerConfig {
        self.config
    }

    /// What the licenses offer.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Replaces the catalog (license reload). Leases are never revoked by a reload: if a
    /// pool shrinks below its usage, holders keep their seats and new checkouts are refused
    /// until usage falls below the new count. Queued checkouts that the new catalog can
    /// serve are granted by the next `Expire`.
    pub fn set_catalog(&mut self, catalog: Catalog) {
        self.catalog = catalog;
        // `DUP_GROUP` may have changed: count every pool's seats again.
        self.in_use.clear();
        self.dup_groups.clear();
        self.lease_dup.clear();
        let leases: Vec<Lease> = self.leases.values().map(|l| Lease::clone(l)).collect();
        for lease in &leases {
            self.account_add(lease);
        }
    }

    /// The administrator's policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
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

    /// Seats held from a pool.
    pub fn in_use(&self, pool: &PoolKey) -> u32 {
        self.in_use.get(pool).copied().unwrap_or(0)
    }

    /// Seats in use per pool, for every pool with any (including pools that left the
    /// catalog on a reload but still have holders).
    pub fn pools_in_use(&self) -> impl Iterator<Item = (&PoolKey, u32)> {
        self.in_use
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k, *n))
    }

    /// All live sessions.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().map(|s| &**s)
    }

    /// A session by id.
    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id).map(|s| &**s)
    }

    /// Whoever holds a lease: a live session, or one that departed while its seats linger.
    pub fn holder(&self, id: SessionId) -> Option<&Session> {
        self.sessions
            .get(&id)
            .or_else(|| self.departed.get(&id))
            .map(|s| &**s)
    }

    /// Sessions that ended while some of their seats linger.
    pub fn departed_sessions(&self) -> impl Iterator<Item = &Session> {
        self.departed.values().map(|s| &**s)
    }

    /// All leases, by id.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values().map(|l| &**l)
    }

    /// A lease by id.
    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id).map(|l| &**l)
    }

    /// The leases of one session.
    pub fn session_leases(&self, id: SessionId) -> impl Iterator<Item = &Lease> {
        self.session_leases
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|l| self.leases.get(l).map(|l| &**l))
    }

    /// Waiting checkouts: features in name order, each feature's in serving order, with
    /// their 1-based positions.
    pub fn queued(&self) -> impl Iterator<Item = (&QueuedRequest, u32)> {
        let mut last: Option<(&str, u32)> = None;
        self.queue.iter().map(move |r| {
            let position = match last {
                Some((f, n)) if f == r.feature => n + 1,
                _ => 1,
            };
            last = Some((r.feature.as_str(), position));
            (r, position)
        })
    }

    /// The earliest moment at which `Expire` would change something, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            self.expiries.first().map(|&(at, _)| at),
            self.queue.next_deadline(),
            self.idle_deadlines.first().map(|&(at, _)| at),
            self.lingering.first().map(|&(at, _)| at),
            self.borrowed.first().map(|&(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a session's application has reported its user idle, and since when.
    pub fn idle_since(&self, id: SessionId) -> Option<Millis> {
        self.idle_since.get(&id).copied()
    }

    /// Applies one command at time `now`, appending its durable effects to `changes`.
    ///
    /// On `Err`, nothing changed and nothing was appended.
    pub fn apply(
        &mut self,
        now: Millis,
        command: Command,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, LedgerError> {
        match command {
            Command::OpenSession {
                id,
                secret_hash,
                client,
            } => {
                if self.sessions.contains_key(&id) || self.departed.contains_key(&id) {
                    return Err(LedgerError::IdInUse);
                }
                let session = Session {
                    id,
                    secret_hash,
                    client,
                    opened_at: now,
                    expires_at: now.saturating_add(self.config.session_ttl),
                    connected: true,
                    detached: false,
                };
                changes.push(Change::SessionOpened(session.clone()));
                self.insert_session(session);
                Ok(Outcome::Done)
            }
            Command::Resume {
                id,
                secret_hash,
                address,
            } => {
                let session = self
                    .sessions
                    .get_mut(&id)
                    .ok_or(LedgerError::UnknownSession)?;
                if !constant_time_eq(&session.secret_hash, &secret_hash) {
                    return Err(LedgerError::BadSecret);
                }
                session.connected = true;
                session.detached = false;
                session.client.address = address.into();
                self.names.intern(&mut session.client.address);
                self.touch(id, now);
                // Lingering seats are no longer the client's.
                let leases = self
                    .session_leases(id)
                    .filter(|l| !l.detached())
                    .cloned()
                    .collect();
                Ok(Outcome::Resumed { leases })
            }
            Command::Heartbeat { id } => {
                self.require_session(id)?;
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.connected = true;
                }
                self.touch(id, now);
                Ok(Outcome::Done)
            }
            Command::Detach { id } => {
                let session = self
                    .sessions
                    .get_mut(&id)
                    .ok_or(LedgerError::UnknownSession)?;
                session.connected = true;
                session.detached = true;
                self.touch(id, now);
                Ok(Outcome::Done)
            }
            Command::Disconnected { id } => {
                let session = self
                    .sessions
                    .get_mut(&id)
                    .ok_or(LedgerError::UnknownSession)?;
                session.connected = false;
                session.detached = false;
                let deadline = now.saturating_add(self.config.reconnect_grace);
                if deadline < session.expires_at {
                    self.set_expiry(id, deadline);
                }
                Ok(Outcome::Done)
            }
            Command::Activity { id, idle } => {
                self.require_session(id)?;
                self.touch(id, now);
                let was_idle = self.idle_since.contains_key(&id);
                if idle && !was_idle {
                    self.idle_since.insert(id, now);
                } else if !idle && was_idle {
                    self.idle_since.remove(&id);
                }
                if idle != was_idle {
                    let leases: Vec<LeaseId> = self.session_leases(id).map(|l| l.id).collect();
                    for lease in leases {
                        self.disarm_idle(lease);
                        self.arm_idle(lease);
                    }
                }
                Ok(Outcome::Done)
            }
            Command::CloseSession { id } => {
                self.require_session(id)?;
                self.end_session(id, now, ReleaseReason::SessionClosed, changes);
                self.serve_queue(now, changes);
                Ok(Outcome::Done)
            }
            Command::Checkout {
                session,
                lease_id,
                feature,
                version,
                count,
                client_ref,
                wait,
            } => {
                self.require_session(session)?;
                if client_ref != 0 {
                    let retried = self
                        .session_leases(session)
                        .find(|l| l.client_ref == client_ref && !l.detached())
                        .cloned();
                    if let Some(existing) = retried {
                        self.touch(session, now);
                        return Ok(Outcome::Granted(existing));
                    }
                    if let Some(waiting) = self.queue.find(session, client_ref).cloned() {
                        self.touch(session, now);
                        let position = self.queue.position(waiting.lease_id).unwrap_or(1);
                        return Ok(Outcome::Queued {
                            request: waiting,
                            position,
                        });
                    }
                }
                // Checked before the session is touched: on `Err` nothing may change.
                if self.leases.contains_key(&lease_id) || self.queue.position(lease_id).is_some() {
                    return Err(LedgerError::IdInUse);
                }
                self.touch(session, now);
                let deadline = match wait {
                    Wait::No => None,
                    Wait::Until(at) if at <= now => None,
                    Wait::Until(at) => Some(Some(at)),
                    Wait::Forever => Some(None),
                };
                let request = Reuse {
                    session,
                    lease_id,
                    feature: &feature,
                    version: &version,
                    count,
                    client_ref,
                };
                if let Some(lease) = self.reuse_lingering(now, request, changes) {
                    return Ok(Outcome::Granted(lease));
                }
                let priority = self.priority(session, &feature);
                let ahead = self
                    .queue
                    .ahead_of(&feature, self.queue.next_slot(priority));
                let who = self.client_of(session);
                let chosen = match self.resolve(now, &feature, &version, count, who, false) {
                    // Others wait ahead: the seats that are free are theirs (unless these
                    // are reserved for this client).
                    Ok(choice) if ahead > 0 && !choice.reserved => Err(Denial::QueuedAhead {
                        waiting: ahead as u32,
                    }),
                    // Tokens are seats of their pool: checkouts waiting for the pool
                    // itself come first.
                    Ok(choice) if self.pool_queue_ahead(&choice, priority) > 0 => {
                        Err(Denial::QueuedAhead {
                            waiting: self.pool_queue_ahead(&choice, priority) as u32,
                        })
                    }
                    chosen => chosen,
                };
                match chosen {
                    Err(
                        Denial::AllInUse { .. }
                        | Denial::QueuedAhead { .. }
                        | Denial::Reserved { .. },
                    ) if let Some(deadline) = deadline => {
                        let request = QueuedRequest {
                            lease_id,
                            session,
                            feature,
                            version,
                            count,
                            client_ref,
                            queued_at: now,
                            deadline,
                            priority,
                            seq: 0,
                        };
                        let (position, request) = self.queue.push(request);
                        changes.push(Change::Queued(request.clone()));
                        Ok(Outcome::Queued { request, position })
                    }
                    Err(denial) => Ok(Outcome::Denied(denial)),
                    Ok(choice) => {
                        let lease = new_lease(lease_id, session, version, client_ref, now, choice);
                        changes.push(Change::LeaseGranted(lease.clone()));
                        self.insert_lease(lease.clone());
                        Ok(Outcome::Granted(lease))
                    }
                }
            }
            Command::Borrow {
                session,
                lease_id,
                feature,
                version,
                count,
                client_ref,
                until,
            } => {
                self.require_session(session)?;
                if client_ref != 0 {
                    let retried = self
                        .session_leases(session)
                        .find(|l| l.client_ref == client_ref && l.borrowed_until.is_some())
                        .cloned();
                    if let Some(existing) = retried {
                        self.touch(session, now);
                        return Ok(Outcome::Granted(existing));
                    }
                }
                if self.leases.contains_key(&lease_id) || self.queue.position(lease_id).is_some() {
                    return Err(LedgerError::IdInUse);
                }
                self.touch(session, now);
                match self.borrow(now, session, &feature, &version, count, until) {
                    Err(denial) => Ok(Outcome::Denied(denial)),
                    Ok((pool, until)) => {
                        let lease = Lease {
                            id: lease_id,
                            session,
                            feature: feature.into(),
                            vendor: pool.vendor.into(),
                            requested_version: version.into(),
                            pool_version: pool.version.into(),
                            count,
                            granted_at: now,
                            client_ref,
                            overdraft: false,
                            lingering_until: None,
                            borrowed_until: Some(until),
                            token_for: None,
                        };
                        changes.push(Change::LeaseGranted(lease.clone()));
                        self.insert_lease(lease.clone());
                        Ok(Outcome::Granted(lease))
                    }
                }
            }
            Command::Return {
                session,
                feature,
                lease_id,
            } => {
                self.require_session(session)?;
                self.touch(session, now);
                let me = self.client_of(session).cloned().unwrap_or_default();
                let found = self
                    .borrowed
                    .iter()
                    .map(|&(_, id)| &self.leases[&id])
                    .find(|l| {
                        l.feature == feature
                            && lease_id.is_none_or(|id| id == l.id)
                            && self
                                .client_of(l.session)
                                .is_some_and(|c| c.user == me.user && c.host == me.host)
                    })
                    .map(|l| l.id);
                let Some(id) = found else {
                    return Ok(Outcome::NotHeld);
                };
                let lease = self.release(id, ReleaseReason::Returned, changes);
                self.serve_queue(now, changes);
                Ok(Outcome::Released(lease))
            }
            Command::Checkin { session, lease_id } => {
                self.require_session(session)?;
                self.touch(session, now);
                match self.leases.get(&lease_id) {
                    Some(l) if l.session == session && !l.detached() => {
                        let lease = self.give_back(lease_id, now, ReleaseReason::Checkin, changes);
                        self.serve_queue(now, changes);
                        Ok(Outcome::Released(lease))
                    }
                    _ => Ok(Outcome::NotHeld),
                }
            }
            Command::Dequeue {
                session,
                client_ref,
            } => {
                self.require_session(session)?;
                self.touch(session, now);
                let Some(id) = self.queue.find(session, client_ref).map(|r| r.lease_id) else {
                    return Ok(Outcome::NotHeld);
                };
                self.dequeue(id, DequeueReason::Cancelled, changes);
                // The head leaving may let the requests behind it through.
                self.serve_queue(now, changes);
                Ok(Outcome::Done)
            }
            Command::Remove { lease_id } => {
                let Some(lease) = self.leases.get(&lease_id) else {
                    return Ok(Outcome::NotHeld);
                };
                if let Some(until) = lease.borrowed_until {
                    return Err(LedgerError::Borrowed { until });
                }
                let ready_at = lease.granted_at.saturating_add(self.config.min_remove);
                if now < ready_at {
                    return Err(LedgerError::TooSoonToRemove {
                        wait_ms: ready_at - now,
                    });
                }
                let lease = self.release(lease_id, ReleaseReason::Removed, changes);
                self.serve_queue(now, changes);
                Ok(Outcome::Released(lease))
            }
            Command::Expire => {
                for id in self.queue.lapsed(now) {
                    self.dequeue(id, DequeueReason::TimedOut, changes);
                }
                while let Some(&(at, id)) = self.idle_deadlines.first() {
                    if at > now {
                        break;
                    }
                    let lease = self.remove_lease(id);
                    changes.push(Change::LeaseReleased {
                        lease,
                        reason: ReleaseReason::IdleTimeout,
                    });
                }
                let mut lapsed = Vec::new();
                while let Some(&(at, id)) = self.expiries.first() {
                    if at > now {
                        break;
                    }
                    self.end_session(id, now, ReleaseReason::Expired, changes);
                    lapsed.push(id);
                }
                while let Some(&(at, id)) = self.lingering.first() {
                    if at > now {
                        break;
                    }
                    self.release(id, ReleaseReason::LingerOver, changes);
                }
                while let Some(&(at, id)) = self.borrowed.first() {
                    if at > now {
                        break;
                    }
                    self.release(id, ReleaseReason::BorrowEnded, changes);
                }
                self.serve_queue(now, changes);
                Ok(Outcome::Expired { sessions: lapsed })
            }
        }
    }

    /// Picks the pool to serve a checkout by `who`: the lowest licensed version that is at
    /// least the requested one and has room, so that newer-version seats stay free for the
    /// clients that need them. The policy is applied first, in this order (see
    /// docs/policy.md): `EXCLUDE`/`INCLUDE`, then `MAX`, then the seats `RESERVE`d for
    /// others, which are not free for `who`.
    fn choose_pool(
        &self,
        now: Millis,
        feature: &str,
        version: &str,
        count: u32,
        who: Option<&ClientInfo>,
        borrowing: bool,
    ) -> Result<Choice, Denial> {
        if feature.is_empty() {
            return Err(Denial::BadRequest("empty feature name".into()));
        }
        if count == 0 || count > MAX_SEATS_PER_REQUEST {
            return Err(Denial::BadRequest(format!(
                "seat count must be between 1 and {MAX_SEATS_PER_REQUEST}, not {count}"
            )));
        }
        let wanted: Version = if version.is_empty() {
            "0".parse()
                .map_err(|_| Denial::BadRequest("bad version".into()))?
        } else {
            version
                .parse()
                .map_err(|e: usher_license::VersionError| Denial::BadRequest(e.to_string()))?
        };
        let pools = self.catalog.pools(feature).ok_or(Denial::UnknownFeature)?;
        let mut candidates: Vec<_> = pools.iter().filter(|p| p.version >= wanted).collect();
        if candidates.is_empty() {
            let highest = pools
                .last()
                .map(|p| p.key.version.clone())
                .unwrap_or_default();
            return Err(Denial::VersionTooNew { highest });
        }
        if borrowing {
            candidates.retain(|p| p.borrow.is_some());
            if candidates.is_empty() {
                return Err(Denial::NotBorrowable);
            }
        }
        if let Some(named) = candidates.iter().find_map(|p| p.user_based) {
            let limit = named.unwrap_or_else(|| candidates.iter().map(|p| p.seats_at(now)).sum());
            let user = who.map(|c| c.user.as_str());
            let listed = self.policy.named_users(feature);
            if !listed.iter().take(limit as usize).any(|n| Some(*n) == user) {
                return Err(Denial::NotNamedUser { limit });
            }
        }
        // A request no pool could ever hold (even empty, even with its overdraft) is
        // refused at once rather than left waiting forever.
        let capacity =
            |p: &&crate::catalog::Pool| p.seats_at(now).saturating_add(p.overdraft_at(now));
        let licensed = candidates.iter().map(capacity).max().unwrap_or(0);
        if licensed > 0
            && candidates
                .iter()
                .all(|p| self.extra_seats(&p.key, who, count) > capacity(p))
        {
            return Err(Denial::MoreThanLicensed {
                asked: count,
                licensed,
            });
        }
        let seats = self.policy_seats(now, feature, count, who)?;
        let (mut in_use, mut total) = (0u32, 0u32);
        for pool in &candidates {
            let pool_seats = pool.seats_at(now);
            let used = self.in_use(&pool.key);
            let extra = self.extra_seats(&pool.key, who, count);
            // A duplicate that needs no seat of its own shares one already held.
            if extra == 0 && pool_seats > 0
                || used.saturating_add(extra) <= pool_seats && seats.fits_in_count
            {
                return Ok(Choice {
                    pool: pool.key.clone(),
                    seats: count,
                    token_for: None,
                    overdraft: false,
                    reserved: seats.reserved,
                });
            }
            in_use = in_use.saturating_add(used);
            total = total.saturating_add(pool_seats);
        }
        // Only when no pool has room within its count does an OVERDRAFT allowance serve,
        // so overdraft seats are used last and each one is flagged.
        // Overdraft seats are never lent out: each must stay visible and reclaimable.
        if seats.overdraft_left >= count && !borrowing {
            for pool in &candidates {
                // Seats reserved for others are not free for this client, overdraft or not.
                let limit = pool.seats_at(now).saturating_add(pool.overdraft_at(now));
                let extra = self.extra_seats(&pool.key, who, count);
                let wanted = self.in_use(&pool.key).saturating_add(extra);
                if wanted.saturating_add(seats.held_for_others) <= limit {
                    return Ok(Choice {
                        pool: pool.key.clone(),
                        seats: count,
                        token_for: None,
                        overdraft: true,
                        reserved: false,
                    });
                }
            }
        }
        if total == 0 {
            if let Some(at) = candidates.iter().filter_map(|p| p.next_start(now)).min() {
                return Err(Denial::NotYetStarted { at });
            }
            if let Some(at) = candidates.iter().filter_map(|p| p.last_end(now)).max() {
                return Err(Denial::Expired { at });
            }
        }
        if seats.held_for_others > 0 && in_use < total {
            return Err(Denial::Reserved {
                free: total - in_use,
            });
        }
        Err(Denial::AllInUse { in_use, total })
    }

    /// Where a borrow of `count` seats of `feature` until `until` comes from, and until when
    /// it really lasts: the license's end, if that comes first. The seats must be free for
    /// an ordinary checkout that does not wait (policy, queue and reservations included),
    /// the borrow no longer than the license's `BORROW=` and the policy's
    /// `MAX_BORROW_HOURS`, and at least `BORROW_LOWWATER` seats must stay unborrowed.
    fn borrow(
        &self,
        now: Millis,
        session: SessionId,
        feature: &str,
        version: &str,
        count: u32,
        until: Millis,
    ) -> Result<(PoolKey, Millis), Denial> {
        if until <= now {
            return Err(Denial::BadRequest("a borrow must end in the future".into()));
        }
        let who = self.client_of(session);
        let choice = self.resolve(now, feature, version, count, who, true)?;
        let ahead = self.queue.ahead_of(
            feature,
            self.queue.next_slot(self.priority(session, feature)),
        );
        if ahead > 0 && !choice.reserved {
            return Err(Denial::QueuedAhead {
                waiting: ahead as u32,
            });
        }
        let pool = self
            .catalog
            .pool(&choice.pool)
            .expect("chosen from the catalog");
        let hours = |h: u32| Millis::from(h).saturating_mul(3_600_000);
        let max = pool.borrow.unwrap_or(0).min(
            self.policy
                .max_borrow_hours(feature)
                .map_or(Millis::MAX, hours),
        );
        if until - now > max {
            return Err(Denial::BorrowTooLong { max });
        }
        if let Some(keep) = self.policy.borrow_lowwater(feature) {
            let total: u32 = self
                .catalog
                .pools(feature)
                .into_iter()
                .flatten()
                .map(|p| p.seats_at(now))
                .fold(0, u32::saturating_add);
            let borrowed: u32 = self
                .borrowed
                .iter()
                .map(|&(_, id)| &self.leases[&id])
                .filter(|l| l.feature == feature)
                .map(|l| l.count)
                .fold(0, u32::saturating_add);
            if borrowed.saturating_add(count).saturating_add(keep) > total {
                return Err(Denial::BorrowLowWater { keep });
            }
        }
        let until = pool.expires_at(now).map_or(until, |end| until.min(end));
        Ok((choice.pool, until))
    }

    /// Picks where a checkout of `feature` is served from: its own pools
    /// ([`Ledger::choose_pool`]), or for a token-based feature (`count` = `token`) the
    /// first of its `TOKEN=` alternatives, in file order, whose pool can pay `count` times
    /// its tokens. The policy's `EXCLUDE`/`INCLUDE` may name the token-based feature; `MAX`
    /// and `RESERVE` count the tokens, on their pool. Token-based features cannot be
    /// borrowed.
    fn resolve(
        &self,
        now: Millis,
        feature: &str,
        version: &str,
        count: u32,
        who: Option<&ClientInfo>,
        borrowing: bool,
    ) -> Result<Choice, Denial> {
        let Some(defs) = self.catalog.token_feature(feature) else {
            return self.choose_pool(now, feature, version, count, who, borrowing);
        };
        if count == 0 || count > MAX_SEATS_PER_REQUEST {
            return Err(Denial::BadRequest(format!(
                "seat count must be between 1 and {MAX_SEATS_PER_REQUEST}, not {count}"
            )));
        }
        let wanted: Version = if version.is_empty() { "0" } else { version }
            .parse()
            .map_err(|e: usher_license::VersionError| Denial::BadRequest(e.to_string()))?;
        let candidates: Vec<_> = defs.iter().filter(|d| d.version >= wanted).collect();
        if candidates.is_empty() {
            let highest = defs.iter().map(|d| &d.version).max();
            return Err(Denial::VersionTooNew {
                highest: highest.map(|v| v.to_string()).unwrap_or_default(),
            });
        }
        if borrowing {
            return Err(Denial::NotBorrowable);
        }
        let valid: Vec<_> = candidates.iter().filter(|d| d.is_valid_at(now)).collect();
        if valid.is_empty() {
            let starts = candidates.iter().map(|d| d.validity.valid_from);
            if let Some(at) = starts.filter(|&s| s > now).min() {
                return Err(Denial::NotYetStarted { at });
            }
            let end = candidates
                .iter()
                .filter_map(|d| d.validity.valid_until)
                .max();
            return Err(Denial::Expired {
                at: end.unwrap_or(now),
            });
        }
        if let Some(client) = who
            && self.policy.excluded(feature, &Who::from(client))
        {
            return Err(Denial::Excluded);
        }
        // The first alternative that can pay wins; otherwise the first refusal for want of
        // seats (so the checkout may queue), else the first refusal.
        let (mut short, mut other) = (None, None);
        for alt in valid.iter().flat_map(|d| &d.alternatives) {
            let tokens = count.saturating_mul(alt.tokens);
            match self.choose_pool(now, &alt.feature, alt.version.as_str(), tokens, who, false) {
                Ok(choice) => {
                    return Ok(Choice {
                        seats: tokens,
                        token_for: Some(feature.to_owned()),
                        ..choice
                    });
                }
                Err(
                    d @ (Denial::AllInUse { .. }
                    | Denial::Reserved { .. }
                    | Denial::MaxReached { .. }),
                ) => {
                    short.get_or_insert(d);
                }
                Err(d) => {
                    other.get_or_insert(d);
                }
            }
        }
        Err(short.or(other).unwrap_or(Denial::UnknownFeature))
    }

    /// For tokens of another pool: how many checkouts queued for that pool itself are
    /// ahead of a request of rank `priority` (0 for ordinary checkouts).
    fn pool_queue_ahead(&self, choice: &Choice, priority: Option<u32>) -> usize {
        if choice.token_for.is_none() || choice.reserved {
            return 0;
        }
        self.queue
            .ahead_of(&choice.pool.feature, self.queue.next_slot(priority))
    }

    /// What the policy allows `who` for a checkout of `count` seats of `feature`.
    fn policy_seats(
        &self,
        now: Millis,
        feature: &str,
        count: u32,
        who: Option<&ClientInfo>,
    ) -> Result<PolicySeats, Denial> {
        let unlimited = PolicySeats {
            fits_in_count: true,
            reserved: false,
            held_for_others: 0,
            overdraft_left: u32::MAX,
        };
        let Some(client) = who else {
            return Ok(unlimited);
        };
        let me = Who::from(client);
        let policy = &self.policy;
        if policy.excluded(feature, &me) {
            return Err(Denial::Excluded);
        }
        let has_reservations = policy.reservations(feature).next().is_some();
        let has_limits = policy.limits(feature).next().is_some();
        let overdraft_cap = policy.max_overdraft(feature);
        if !has_reservations && !has_limits && overdraft_cap.is_none() {
            return Ok(unlimited);
        }
        // Who holds how many seats of the feature (and how many of them are overdraft).
        let mut holders: Vec<(&ClientInfo, u32)> = Vec::new();
        let mut overdraft_held = 0u32;
        let of_feature: Vec<&Lease> = match self.policy_leases.get(feature) {
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.leases.get(id))
                .map(|l| &**l)
                .collect(),
            None => self.feature_leases_by_scan(feature),
        };
        debug_assert_eq!(
            of_feature.iter().map(|l| l.id).collect::<Vec<_>>(),
            self.feature_leases_by_scan(feature)
                .iter()
                .map(|l| l.id)
                .collect::<Vec<_>>(),
            "the policy's lease index of {feature} is out of step"
        );
        for lease in of_feature {
            if lease.overdraft {
                overdraft_held = overdraft_held.saturating_add(lease.count);
            }
            // Lingering seats count for whoever gave them back, departed or not.
            if let Some(s) = self.holder(lease.session) {
                holders.push((&s.client, lease.count));
            }
        }
        for limit in policy.limits(feature) {
            if !policy.matches(&limit.target, &me) {
                continue;
            }
            let held: u32 = holders
                .iter()
                .filter(|(c, _)| policy.matches(&limit.target, &Who::from(*c)))
                .map(|(_, n)| *n)
                .sum();
            if count > limit.number {
                return Err(Denial::MoreThanAllowed {
                    limit: limit.number,
                    rule: format!("MAX {} {feature} {}", limit.number, limit.target),
                });
            }
            if held.saturating_add(count) > limit.number {
                return Err(Denial::MaxReached {
                    limit: limit.number,
                    rule: format!("MAX {} {feature} {}", limit.number, limit.target),
                });
            }
        }
        // Reserved seats still free, per reservation: each holder's seats count against
        // the first reservations (in file order) that name them, up to their size.
        let mut unattributed: Vec<u32> = holders.iter().map(|(_, n)| *n).collect();
        let (mut mine, mut others) = (0u32, 0u32);
        for r in policy.reservations(feature) {
            let mut taken = 0u32;
            for (i, (c, _)) in holders.iter().enumerate() {
                if taken == r.number {
                    break;
                }
                if unattributed[i] > 0 && policy.matches(&r.target, &Who::from(*c)) {
                    let t = unattributed[i].min(r.number - taken);
                    unattributed[i] -= t;
                    taken += t;
                }
            }
            let free = r.number - taken;
            if policy.matches(&r.target, &me) {
                mine = mine.saturating_add(free);
            } else {
                others = others.saturating_add(free);
            }
        }
        let total: u32 = self
            .catalog
            .pools(feature)
            .into_iter()
            .flatten()
            .map(|p| p.seats_at(now))
            .fold(0, u32::saturating_add);
        let in_use: u32 = holders.iter().map(|(_, n)| *n).fold(0, u32::saturating_add);
        let fits_in_count = in_use.saturating_add(count).saturating_add(others) <= total;
        let overdraft_left =
            overdraft_cap.map_or(u32::MAX, |cap| cap.saturating_sub(overdraft_held));
        Ok(PolicySeats {
            fits_in_count,
            reserved: count <= mine,
            held_for_others: others,
            overdraft_left,
        })
    }

    /// Every lease of `feature`, in id order, by looking at every lease.
    fn feature_leases_by_scan(&self, feature: &str) -> Vec<&Lease> {
        self.leases
            .values()
            .filter(|l| l.feature == feature)
            .map(|l| &**l)
            .collect()
    }

    /// The queue rank of a session's checkouts of `feature` from the policy's `PRIORITY`
    /// rules (lower is served first; `None` after every ranked request).
    fn priority(&self, session: SessionId, feature: &str) -> Option<u32> {
        let client = &self.sessions.get(&session)?.client;
        self.policy.priority(feature, &Who::from(client))
    }

    /// FlexLM's linger reuse: the same user on the same host checks out again while seats
    /// of theirs linger. A lingering lease of the feature, of at least as many seats, is
    /// set aside; if the checkout would then be granted from that lease's pool, it takes
    /// the seats over: the lingering lease is released (`Reused`) and the new one granted
    /// in the same command, so the count never rises. Every rule of an ordinary grant
    /// applies (a valid request, dates, named users, policy), except that the queue does
    /// not come first: the seats were never free. Otherwise the lease is put back as it
    /// was and `None` returned.
    fn reuse_lingering(
        &mut self,
        now: Millis,
        request: Reuse<'_>,
        changes: &mut Vec<Change>,
    ) -> Option<Lease> {
        if self.lingering.is_empty() {
            return None;
        }
        let me = self.client_of(request.session)?;
        let candidates: Vec<LeaseId> = self
            .lingering
            .iter()
            .map(|&(_, id)| &self.leases[&id])
            .filter(|l| {
                l.feature == request.feature
                    && l.count >= request.count
                    && self
                        .client_of(l.session)
                        .is_some_and(|c| c.user == me.user && c.host == me.host)
            })
            .map(|l| l.id)
            .collect();
        for id in candidates {
            let old = self.remove_lease(id);
            let choice = self.choose_pool(
                now,
                request.feature,
                request.version,
                request.count,
                self.client_of(request.session),
                false,
            );
            match choice {
                Ok(choice) if choice.pool == pool_key(&old) => {
                    let owner = old.session;
                    changes.push(Change::LeaseReleased {
                        lease: old,
                        reason: ReleaseReason::Reused,
                    });
                    self.close_if_departed(owner, changes);
                    let lease = new_lease(
                        request.lease_id,
                        request.session,
                        request.version.to_owned(),
                        request.client_ref,
                        now,
                        choice,
                    );
                    changes.push(Change::LeaseGranted(lease.clone()));
                    self.insert_lease(lease.clone());
                    return Some(lease);
                }
                _ => self.insert_lease(old),
            }
        }
        None
    }

    /// The identity behind a session, for the policy.
    fn client_of(&self, session: SessionId) -> Option<&ClientInfo> {
        self.holder(session).map(|s| &s.client)
    }

    /// Grants queued checkouts, in order, while their heads can be served. A head that
    /// can no longer be served at all (its licenses went away) leaves the queue refused;
    /// a head that only lacks free seats blocks the requests behind it, except from seats
    /// reserved for them.
    fn serve_queue(&mut self, now: Millis, changes: &mut Vec<Change>) {
        if self.queue.is_empty() {
            return;
        }
        for feature in self.queue.features() {
            // Once a request cannot be served, the ones behind it may only take seats
            // reserved for them: nothing else may overtake it.
            let mut blocked = false;
            for request in self.queue.waiting_for(&feature) {
                let who = self.client_of(request.session).cloned();
                let id = request.lease_id;
                let (version, count) = (&request.version, request.count);
                match self.resolve(now, &feature, version, count, who.as_ref(), false) {
                    Err(Denial::AllInUse { .. } | Denial::Reserved { .. }) => blocked = true,
                    Err(denial) => self.dequeue(id, DequeueReason::Refused(denial), changes),
                    Ok(choice) if blocked && !choice.reserved => {}
                    // Tokens wait behind the checkouts queued for their pool itself.
                    Ok(choice) if self.pool_queue_ahead(&choice, request.priority) > 0 => {
                        blocked = true;
                    }
                    Ok(choice) => {
                        let request = self.queue.remove(id).expect("listed as waiting");
                        let lease = new_lease(
                            id,
                            request.session,
                            request.version.clone(),
                            request.client_ref,
                            now,
                            choice,
                        );
                        changes.push(Change::Dequeued {
                            request,
                            reason: DequeueReason::Granted(lease.clone()),
                        });
                        changes.push(Change::LeaseGranted(lease.clone()));
                        self.insert_lease(lease);
                    }
                }
            }
        }
    }

    /// Takes a request known to wait out of the queue, recording why.
    fn dequeue(&mut self, id: LeaseId, reason: DequeueReason, changes: &mut Vec<Change>) {
        if let Some(request) = self.queue.remove(id) {
            changes.push(Change::Dequeued { request, reason });
        }
    }

    fn require_session(&self, id: SessionId) -> Result<(), LedgerError> {
        if self.sessions.contains_key(&id) {
            Ok(())
        } else {
            Err(LedgerError::UnknownSession)
        }
    }

    /// Activity from a session: it lives another full TTL.
    fn touch(&mut self, id: SessionId, now: Millis) {
        self.set_expiry(id, now.saturating_add(self.config.session_ttl));
    }

    fn set_expiry(&mut self, id: SessionId, at: Millis) {
        if let Some(s) = self.sessions.get_mut(&id) {
            self.expiries.remove(&(s.expires_at, id));
            s.expires_at = at;
            self.expiries.insert((at, id));
        }
    }

    fn insert_session(&mut self, mut session: Session) {
        self.names.session(&mut session);
        self.expiries.insert((session.expires_at, session.id));
        self.sessions.insert(session.id, Box::new(session));
    }

    /// Sets the idle deadline of a lease known to exist, if its session is idle and the
    /// policy has a `TIMEOUT` for its feature.
    fn arm_idle(&mut self, id: LeaseId) {
        let lease = &self.leases[&id];
        let Some(&since) = self.idle_since.get(&lease.session) else {
            return;
        };
        if lease.detached() {
            return;
        }
        if let Some(timeout) = self.policy.timeout(&lease.feature) {
            let at = since.saturating_add(timeout);
            self.idle_deadlines.insert((at, id));
            self.idle_deadline_of.insert(id, at);
        }
    }

    fn disarm_idle(&mut self, id: LeaseId) {
        if let Some(at) = self.idle_deadline_of.remove(&id) {
            self.idle_deadlines.remove(&(at, id));
        }
    }

    /// The `DUP_GROUP` a lease belongs to, if its pool groups duplicates.
    fn dup_key(&self, pool: &PoolKey, client: Option<&ClientInfo>) -> Option<DupKey> {
        let group = self.catalog.pool(pool)?.dup_group?;
        let client = client?;
        Some((
            pool.clone(),
            group.user.then(|| client.user.to_string()),
            group.host.then(|| client.host.to_string()),
            group.display.then(|| client.display.to_string()),
        ))
    }

    /// Counts a lease's seats into its pool. Under `DUP_GROUP`, a group of duplicates
    /// holds as many seats as its largest lease.
    fn account_add(&mut self, lease: &Lease) {
        let key = pool_key(lease);
        let added = match self.dup_key(&key, self.client_of(lease.session)) {
            Some(dk) => {
                let group = self.dup_groups.entry(dk.clone()).or_default();
                let before = group.values().copied().max().unwrap_or(0);
                group.insert(lease.id, lease.count);
                self.lease_dup.insert(lease.id, dk);
                lease.count.saturating_sub(before)
            }
            None => lease.count,
        };
        *self.in_use.entry(key).or_default() += added;
    }

    /// Takes a lease's seats out of its pool (see [`Ledger::account_add`]).
    fn account_remove(&mut self, lease: &Lease) {
        let removed = match self.lease_dup.remove(&lease.id) {
            Some(dk) => {
                let group = self.dup_groups.entry(dk.clone()).or_default();
                let before = group.values().copied().max().unwrap_or(0);
                group.remove(&lease.id);
                let after = group.values().copied().max().unwrap_or(0);
                if group.is_empty() {
                    self.dup_groups.remove(&dk);
                }
                before - after
            }
            None => lease.count,
        };
        let key = pool_key(lease);
        if let Some(n) = self.in_use.get_mut(&key) {
            *n -= removed;
            if *n == 0 {
                self.in_use.remove(&key);
            }
        }
    }

    /// Seats a checkout of `count` by `who` would add to `pool`: fewer (or none) when it
    /// duplicates a group already holding seats there (`DUP_GROUP=`).
    fn extra_seats(&self, pool: &PoolKey, who: Option<&ClientInfo>, count: u32) -> u32 {
        let held = self
            .dup_key(pool, who)
            .and_then(|dk| self.dup_groups.get(&dk))
            .and_then(|g| g.values().copied().max())
            .unwrap_or(0);
        count.saturating_sub(held)
    }

    fn insert_lease(&mut self, mut lease: Lease) {
        self.names.lease(&mut lease);
        self.account_add(&lease);
        let ids = self.session_leases.entry(lease.session).or_default();
        if let Err(at) = ids.binary_search(&lease.id) {
            ids.insert(at, lease.id);
        }
        let id = lease.id;
        if let Some(until) = lease.lingering_until {
            self.lingering.insert((until, id));
        }
        if let Some(until) = lease.borrowed_until {
            self.borrowed.insert((until, id));
        }
        if let Some(ids) = self.policy_leases.get_mut(&*lease.feature) {
            ids.insert(id);
        }
        self.leases.insert(id, Box::new(lease));
        self.arm_idle(id);
    }

    /// Removes a lease known to exist.
    fn remove_lease(&mut self, id: LeaseId) -> Lease {
        let lease = *self
            .leases
            .remove(&id)
            .expect("caller checked the lease exists");
        self.disarm_idle(id);
        if let Some(ids) = self.policy_leases.get_mut(&*lease.feature) {
            ids.remove(&id);
        }
        if let Some(until) = lease.lingering_until {
            self.lingering.remove(&(until, id));
        }
        if let Some(until) = lease.borrowed_until {
            self.borrowed.remove(&(until, id));
        }
        self.account_remove(&lease);
        if let Some(set) = self.session_leases.get_mut(&lease.session) {
            if let Ok(at) = set.binary_search(&id) {
                set.remove(at);
            }
            if set.is_empty() {
                self.session_leases.remove(&lease.session);
            }
        }
        lease
    }

    /// How long the seats of `lease`, given back at `now`, stay held: until
    /// `max(now + linger, granted_at + min_checkout)`, where the linger is the longer of the
    /// license's `LINGER=` and the policy's `LINGER` (policy can lengthen, never shorten).
    fn held_until(&self, lease: &Lease, now: Millis) -> Millis {
        let Some(pool) = self.catalog.pool(&pool_key(lease)) else {
            return now;
        };
        let linger = pool
            .linger
            .max(self.policy.linger(&lease.feature).unwrap_or(0));
        now.saturating_add(linger)
            .max(lease.granted_at.saturating_add(pool.min_checkout))
    }

    /// A lease known to exist and not lingering is given back by its client at `now`: it
    /// lingers if its pool says so (the seats stay held), and is released otherwise.
    fn give_back(
        &mut self,
        id: LeaseId,
        now: Millis,
        reason: ReleaseReason,
        changes: &mut Vec<Change>,
    ) -> Lease {
        let until = self.held_until(&self.leases[&id], now);
        if until <= now {
            return self.release(id, reason, changes);
        }
        self.disarm_idle(id);
        self.lingering.insert((until, id));
        let lease = self
            .leases
            .get_mut(&id)
            .expect("caller checked the lease exists");
        lease.lingering_until = Some(until);
        let lease = Lease::clone(lease);
        changes.push(Change::LeaseLingering(lease.clone()));
        lease
    }

    /// Releases a lease known to exist, recording why; closes its session if that had
    /// departed and this was its last lease.
    fn release(&mut self, id: LeaseId, reason: ReleaseReason, changes: &mut Vec<Change>) -> Lease {
        let lease = self.remove_lease(id);
        changes.push(Change::LeaseReleased {
            lease: lease.clone(),
            reason,
        });
        self.close_if_departed(lease.session, changes);
        lease
    }

    /// Closes a departed session once its last lingering lease is gone.
    fn close_if_departed(&mut self, id: SessionId, changes: &mut Vec<Change>) {
        if self.departed.contains_key(&id) && !self.session_leases.contains_key(&id) {
            self.departed.remove(&id);
            changes.push(Change::SessionClosed(id));
        }
    }

    /// A session's seats are given back: at a goodbye they linger where their pools say
    /// so; when it lapses (its client died or vanished) they go back at once, except those
    /// already lingering. A session left with lingering seats departs: it can no longer be
    /// used or resumed, and is closed with its last lingering seat.
    fn end_session(
        &mut self,
        id: SessionId,
        now: Millis,
        reason: ReleaseReason,
        changes: &mut Vec<Change>,
    ) {
        if !self.queue.is_empty() {
            for waiting in self.queue.of_session(id) {
                self.dequeue(waiting, DequeueReason::SessionEnded, changes);
            }
        }
        let held: Vec<LeaseId> = self
            .session_leases
            .get(&id)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        for lease_id in held {
            if self.leases[&lease_id].detached() {
                continue;
            }
            if reason == ReleaseReason::SessionClosed {
                self.give_back(lease_id, now, reason, changes);
            } else {
                let lease = self.remove_lease(lease_id);
                changes.push(Change::LeaseReleased { lease, reason });
            }
        }
        self.idle_since.remove(&id);
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        self.expiries.remove(&(session.expires_at, id));
        if self.session_leases.contains_key(&id) {
            self.departed.insert(id, session);
        } else {
            changes.push(Change::SessionClosed(id));
        }
    }
}

/// Compares secrets without an early exit, so timing does not reveal how much matched.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The lease a grant of `choice` makes: `choice.seats` seats of its pool, named after the
/// pool's feature (for tokens, the token-based feature asked for is kept beside it).
fn new_lease(
    id: LeaseId,
    session: SessionId,
    requested_version: String,
    client_ref: u64,
    now: Millis,
    choice: Choice,
) -> Lease {
    Lease {
        id,
        session,
        feature: choice.pool.feature.into(),
        vendor: choice.pool.vendor.into(),
        requested_version: requested_version.into(),
        pool_version: choice.pool.version.into(),
        count: choice.seats,
        granted_at: now,
        client_ref,
        overdraft: choice.overdraft,
        lingering_until: None,
        borrowed_until: None,
        token_for: choice.token_for.map(Into::into),
    }
}
