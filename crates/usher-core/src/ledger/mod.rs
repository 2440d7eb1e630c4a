//! The ledger proper: sessions, leases and seat counts, changed only by `apply`.
//!
//! One type in `impl` blocks by concern: this file holds the state, the read accessors
//! and [`Ledger::apply`], which hands each command to its own method in `sessions`,
//! `checkout` or `release`; `choose` decides which pool pays, `accounting` keeps the
//! indexes and seat counts, `restore` rebuilds a ledger (restart, rollback, reload).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::in_use::{PoolTallies, SeatsInUse};
use crate::names::Names;
use crate::queue::Queue;
use crate::{
    Catalog, Change, Command, Lease, LeaseId, LedgerError, Millis, Name, Outcome, Policy, PoolKey,
    PoolRef, QueuedRequest, Session, SessionId,
};

mod accounting;
mod checkout;
mod choose;
mod release;
mod restore;
mod sessions;

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
    /// Seats held per pool, `DUP_GROUP` sharing applied. A pool that left the catalog
    /// (license removed on reload) keeps its count until its holders let go.
    in_use: SeatsInUse,
    /// Holders, overdraft and borrowed seats per pool, kept with `in_use`.
    tallies: PoolTallies,
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
            in_use: SeatsInUse::default(),
            tallies: PoolTallies::default(),
            queue: Queue::default(),
            policy: Policy::default(),
            policy_leases: HashMap::new(),
            idle_since: HashMap::new(),
            idle_deadlines: BTreeSet::new(),
            idle_deadline_of: HashMap::new(),
            departed: HashMap::new(),
            lingering: BTreeSet::new(),
            borrowed: BTreeSet::new(),
            names: Names::default(),
        }
    }

    /// The timing rules.
    pub fn config(&self) -> LedgerConfig {
        self.config
    }

    /// What the licenses offer.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The administrator's policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Seats held from a pool (named by a `&PoolKey` or a [`PoolRef`]).
    pub fn in_use<'k>(&self, pool: impl Into<PoolRef<'k>>) -> u32 {
        self.in_use.get(pool)
    }

    /// Seats in use per pool, for every pool with any (including pools that left the
    /// catalog on a reload but still have holders).
    pub fn pools_in_use(&self) -> impl Iterator<Item = (&PoolKey, u32)> {
        self.in_use.pools()
    }

    /// Holders, overdraft and borrowed seats of a pool (named by a `&PoolKey` or a
    /// [`PoolRef`]), without a walk over the leases.
    pub fn pool_tally<'k>(&self, pool: impl Into<PoolRef<'k>>) -> crate::PoolTally {
        self.tallies.get(pool)
    }

    /// The tally of every pool with a lease held (including pools that left the catalog on
    /// a reload but still have holders).
    pub fn pool_tallies(&self) -> impl Iterator<Item = (&PoolKey, crate::PoolTally)> {
        self.tallies.pools()
    }

    /// Tokens held for each token-based feature from each pool, as `(token-based feature,
    /// pool feature, tokens, leases)`, without a walk over the leases.
    pub fn token_use(&self) -> impl Iterator<Item = (&str, &str, u32, u32)> {
        self.tallies.tokens()
    }

    /// How many sessions are live.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// How many leases are held (lingering and borrowed ones included).
    pub fn lease_count(&self) -> usize {
        self.leases.len()
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
    /// This is the ledger's whole interface for change, and what a replicated log would
    /// carry: in, the command (with every id it uses: session, lease, client reference)
    /// and its time; out, the [`Outcome`] for whoever asked and the [`Change`]s for the
    /// store, in the order they happened.
    ///
    /// To ensure correctness:
    /// - on `Err`, nothing changed and nothing was appended;
    /// - on `Ok`, the appended changes are exactly what a store must apply (and log) to
    ///   hold what [`Ledger::restore`] rebuilds this ledger's sessions and leases from;
    /// - the same ledger given the same commands at the same times gives the same
    ///   outcomes and changes (nothing here reads a clock or draws a random number);
    /// - `now` should not go backwards between calls; a checkout's wait and a borrow's
    ///   length are durations counted from `now`, so no caller's clock decides when they
    ///   end (`ExtendSessions` names a time, which its proposer takes from the entry's).
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
            } => self.open_session(now, id, secret_hash, client, changes),
            Command::Resume {
                id,
                secret_hash,
                address,
            } => self.resume(now, id, &secret_hash, address),
            Command::Heartbeat { id } => self.heartbeat(now, id),
            Command::Detach { id } => self.detach(now, id),
            Command::Disconnected { id } => self.disconnected(now, id),
            Command::Activity { id, idle } => self.activity(now, id, idle),
            Command::CloseSession { id } => self.close_session(now, id, changes),
            Command::Checkout { ask, wait } => self.checkout(now, ask, wait, changes),
            Command::Borrow { ask, duration } => self.borrow(now, ask, duration, changes),
            Command::Return {
                session,
                feature,
                lease_id,
            } => self.return_borrowed(now, session, &feature, lease_id, changes),
            Command::Checkin { session, lease_id } => self.checkin(now, session, lease_id, changes),
            Command::Dequeue {
                session,
                client_ref,
            } => self.withdraw(now, session, client_ref, changes),
            Command::Remove { lease_id } => self.remove(now, lease_id, changes),
            Command::Expire => Ok(self.expire(now, changes)),
            Command::ExtendSessions { until } => Ok(self.extend_sessions(until)),
        }
    }
}
