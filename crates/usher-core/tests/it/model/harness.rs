//! The harness that drives the ledger and the model through the same operations and
//! checks their states agree after every step.

use std::collections::BTreeMap;

use usher_core::{
    Ask, Change, Command, Lease, LeaseId, Ledger, Millis, PoolKey, PoolTally, SessionId, Wait,
};

use super::reference::*;
use super::strategies::*;
use crate::util::{Durable, T0, client, pool_of, secret, snapshot};

/// Drives the ledger and the model through the same operations.
pub struct Harness {
    pub(super) ledger: Ledger,
    pub(super) model: Model,
    pub(super) durable: Durable,
    pub(super) now: Millis,
    pub(super) next_lease: u64,
    pub(super) opens: u64,
    /// Whether checkouts may reuse a live lease id (exercising `IdInUse`).
    pub(super) collisions: bool,
    /// Every outcome and its changes, in order (for the determinism test).
    pub trace: Vec<Applied>,
}

impl Harness {
    /// A fresh server at 08:00 on day 0 serving `lines`.
    pub fn new(lines: Vec<Line>, collisions: bool) -> Self {
        let model = Model {
            lines,
            ..Model::default()
        };
        Harness {
            ledger: Ledger::new(model.catalog(), crate::util::CONFIG),
            model,
            durable: Durable::default(),
            now: T0 + 8 * 3_600_000,
            next_lease: 0,
            opens: 0,
            collisions,
            trace: Vec::new(),
        }
    }

    /// Runs `ops`, checking everything after each; the error names the failing step.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), String> {
        for (i, op) in ops.iter().enumerate() {
            let at = self.now - T0;
            self.step(op)
                .map_err(|e| format!("op #{i} {op:?} at day0+{at}ms: {e}"))?;
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Advance(ms) => {
                self.now += ms;
                Ok(())
            }
            Op::Restart => {
                let mut changes = Vec::new();
                self.ledger = self
                    .durable
                    .restore(self.model.catalog(), self.now, &mut changes);
                if !changes.is_empty() {
                    return Err(format!("restoring a consistent store released {changes:?}"));
                }
                self.model.restart(self.now, &self.durable);
                self.check_state()
            }
            Op::Reload(seats) => {
                self.model.reload(seats);
                self.ledger.set_catalog(self.model.catalog());
                self.check_state()
            }
            _ => {
                let cmd = self.command(op);
                self.run_command(cmd)
            }
        }
    }

    /// The command an operation stands for, given the current state.
    fn command(&mut self, op: &Op) -> Command {
        let live_leases: Vec<&Lease> = self.model.leases.values().collect();
        match *op {
            Op::Open(id) => {
                self.opens += 1;
                Command::OpenSession {
                    id: SessionId(id),
                    secret_hash: secret(id * 1_000 + self.opens),
                    client: client(id),
                }
            }
            Op::Resume { id, right_secret } => {
                let id = SessionId(id);
                let mut secret_hash = self
                    .model
                    .sessions
                    .get(&id)
                    .map_or(secret(id.0), |s| s.secret_hash);
                if !right_secret {
                    secret_hash[0] ^= 0xFF;
                }
                Command::Resume {
                    id,
                    secret_hash,
                    address: format!("10.1.0.{}:{}", id.0, self.now % 65_536),
                }
            }
            Op::Heartbeat(id) => Command::Heartbeat { id: SessionId(id) },
            Op::Detach(id) => Command::Detach { id: SessionId(id) },
            Op::Disconnect(id) => Command::Disconnected { id: SessionId(id) },
            Op::Close(id) => Command::CloseSession { id: SessionId(id) },
            Op::Checkout {
                session,
                feature,
                version,
                count,
                client_ref,
                reuse_id,
            } => {
                let lease_id = match reuse_id {
                    Some(n) if self.collisions && !live_leases.is_empty() => {
                        live_leases[n % live_leases.len()].id
                    }
                    _ => {
                        self.next_lease += 1;
                        LeaseId(self.next_lease)
                    }
                };
                Command::Checkout {
                    ask: Ask {
                        session: SessionId(session),
                        lease_id,
                        feature: FEATURES[feature].to_string(),
                        version: REQUEST_VERSIONS[version].to_string(),
                        count,
                        client_ref,
                    },
                    wait: Wait::No,
                }
            }
            Op::Checkin { lease, bogus, by } => {
                let (owner, lease_id) = if bogus || live_leases.is_empty() {
                    (SessionId(1), LeaseId(1_000_000 + lease as u64))
                } else {
                    let l = live_leases[lease % live_leases.len()];
                    (l.session, l.id)
                };
                Command::Checkin {
                    session: by.map_or(owner, SessionId),
                    lease_id,
                }
            }
            Op::Remove { lease, bogus } => {
                let lease_id = if bogus || live_leases.is_empty() {
                    LeaseId(1_000_000 + lease as u64)
                } else {
                    live_leases[lease % live_leases.len()].id
                };
                Command::Remove { lease_id }
            }
            Op::Expire => Command::Expire,
            Op::Extend(by) => Command::ExtendSessions {
                until: self.now + by,
            },
            Op::Advance(_) | Op::Restart | Op::Reload(_) => {
                unreachable!("{op:?} is handled by step, not sent as a command")
            }
        }
    }

    fn run_command(&mut self, cmd: Command) -> Result<(), String> {
        let (expected, expected_changes) = self.model.apply(self.now, &cmd);
        let mut changes = Vec::new();
        let result = self.ledger.apply(self.now, cmd.clone(), &mut changes);
        let normalized_result = normalized(&result);
        if normalized_result != expected {
            return Err(format!(
                "{cmd:?}\n outcome {result:?}\n model   {expected:?}"
            ));
        }
        if changes != expected_changes {
            return Err(format!(
                "{cmd:?}\n changes {changes:?}\n model   {expected_changes:?}"
            ));
        }
        if let Some(Change::LeaseGranted(lease)) = changes.first() {
            // The seats invariant, at the moment of the grant.
            let pool = pool_of(lease);
            let (seats, overdraft) = self
                .ledger
                .catalog()
                .pool(&pool)
                .map_or((0, 0), |p| (p.seats_at(self.now), p.overdraft_at(self.now)));
            let used = self.ledger.in_use(&pool);
            if used > seats + overdraft {
                return Err(format!(
                    "{cmd:?}: granted {pool:?} up to {used} seats of {seats} (+{overdraft} overdraft)"
                ));
            }
            if !lease.overdraft && used > seats {
                return Err(format!("{cmd:?}: a grant beyond the count is not flagged"));
            }
        }
        self.durable
            .record(&changes)
            .map_err(|e| format!("{cmd:?}: changes do not fit: {e}"))?;
        self.trace.push((result, changes));
        self.check_state()
    }

    /// Checks the ledger against the model, the durable view and its own invariants.
    fn check_state(&self) -> Result<(), String> {
        let snap = snapshot(&self.ledger);
        if snap.sessions != self.model.sessions {
            return Err(format!(
                "sessions:\n ledger {:?}\n model  {:?}",
                snap.sessions, self.model.sessions
            ));
        }
        if snap.leases != self.model.leases {
            return Err(format!(
                "leases:\n ledger {:?}\n model  {:?}",
                snap.leases, self.model.leases
            ));
        }
        if snap.next_deadline != self.model.next_deadline() {
            return Err(format!(
                "next deadline: ledger {:?}, model {:?}",
                snap.next_deadline,
                self.model.next_deadline()
            ));
        }
        for (pool, &in_use) in &snap.in_use {
            let held: u32 = snap
                .leases
                .values()
                .filter(|l| &pool_of(l) == pool)
                .map(|l| l.count)
                .sum();
            if held != in_use {
                return Err(format!("{pool:?}: in_use {in_use} but leases hold {held}"));
            }
        }
        // The tallies kept per pool are what a walk over the leases adds up to.
        let mut walked: BTreeMap<PoolKey, PoolTally> = BTreeMap::new();
        for lease in snap.leases.values() {
            let tally = walked.entry(pool_of(lease)).or_default();
            tally.holders += 1;
            tally.overdraft += if lease.overdraft { lease.count } else { 0 };
            tally.borrowed += if lease.borrowed_until.is_some() {
                lease.count
            } else {
                0
            };
        }
        let kept: BTreeMap<PoolKey, PoolTally> = self
            .ledger
            .pool_tallies()
            .map(|(k, t)| (k.clone(), t))
            .collect();
        if kept != walked {
            return Err(format!(
                "pool tallies:\n kept   {kept:?}\n walked {walked:?}"
            ));
        }
        let mut walked_tokens: BTreeMap<(String, String), (u32, u32)> = BTreeMap::new();
        for lease in snap.leases.values() {
            if let Some(f) = &lease.token_for {
                let held = walked_tokens
                    .entry((f.to_string(), lease.feature.to_string()))
                    .or_default();
                held.0 += lease.count;
                held.1 += 1;
            }
        }
        let kept_tokens: BTreeMap<(String, String), (u32, u32)> = self
            .ledger
            .token_use()
            .map(|(f, pool, tokens, leases)| ((f.to_owned(), pool.to_owned()), (tokens, leases)))
            .collect();
        if kept_tokens != walked_tokens {
            return Err(format!(
                "token use:\n kept   {kept_tokens:?}\n walked {walked_tokens:?}"
            ));
        }
        if (self.ledger.session_count(), self.ledger.lease_count())
            != (snap.sessions.len(), snap.leases.len())
        {
            return Err("session or lease count differs from the maps".into());
        }
        for lease in snap.leases.values() {
            if !snap.sessions.contains_key(&lease.session) {
                return Err(format!("lease {lease:?} outlived its session"));
            }
        }
        for id in snap.sessions.keys() {
            let listed: Vec<_> = self.ledger.session_leases(*id).map(|l| l.id).collect();
            let owned: Vec<_> = snap
                .leases
                .values()
                .filter(|l| l.session == *id)
                .map(|l| l.id)
                .collect();
            if listed != owned {
                return Err(format!(
                    "session_leases({id:?}) = {listed:?}, but it owns {owned:?}"
                ));
            }
        }
        self.durable
            .check_matches(&self.ledger)
            .map_err(|e| format!("durable view: {e}"))
    }
}
