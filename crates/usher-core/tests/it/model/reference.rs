//! The reference implementation: pools recomputed from the license lines on every
//! checkout, seats counted by scanning every lease.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use usher_core::{
    Ask, Catalog, Change, Command, Denial, Lease, LeaseId, LedgerError, Millis, Outcome,
    ReleaseReason, Session, SessionId,
};

use super::strategies::*;
use crate::util::{Durable, GRACE, TTL, day_ms};

/// Compares versions numerically per component, a missing component counting as zero.
pub(super) fn cmp_version(a: &[u32], b: &[u32]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Parses a version as the model understands it: dot-separated decimal numbers.
pub(super) fn parse_version(text: &str) -> Option<Vec<u32>> {
    text.split('.')
        .map(|p| {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse().ok()
            } else {
                None
            }
        })
        .collect()
}

/// One entitlement's seats and validity, `[from, until)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ModelGrant {
    pub(super) seats: u32,
    pub(super) overdraft: u32,
    pub(super) from: Millis,
    pub(super) until: Option<Millis>,
}

impl ModelGrant {
    pub(super) fn valid_at(&self, now: Millis) -> bool {
        self.from <= now && self.until.is_none_or(|u| now < u)
    }
}

#[derive(Debug)]
pub(super) struct ModelPool {
    pub(super) vendor: &'static str,
    pub(super) text: &'static str,
    pub(super) parts: Vec<u32>,
    pub(super) grants: Vec<ModelGrant>,
}

impl ModelPool {
    pub(super) fn seats_at(&self, now: Millis) -> u32 {
        self.grants
            .iter()
            .filter(|g| g.valid_at(now))
            .fold(0, |n, g| n.saturating_add(g.seats))
    }

    pub(super) fn overdraft_at(&self, now: Millis) -> u32 {
        self.grants
            .iter()
            .filter(|g| g.valid_at(now))
            .fold(0, |n, g| n.saturating_add(g.overdraft))
    }
}

/// The reference implementation.
#[derive(Debug, Default)]
pub(super) struct Model {
    pub(super) lines: Vec<Line>,
    pub(super) sessions: BTreeMap<SessionId, Session>,
    pub(super) leases: BTreeMap<LeaseId, Lease>,
}

pub type Applied = (Result<Outcome, LedgerError>, Vec<Change>);

impl Model {
    pub(super) fn catalog(&self) -> Catalog {
        let ents: Vec<_> = self.lines.iter().map(Line::entitlement).collect();
        Catalog::from_entitlements(&ents)
    }

    /// The counted pools of `feature`, lowest version first (vendor breaking ties).
    pub(super) fn pools(&self, feature: &str) -> Vec<ModelPool> {
        let mut pools: Vec<ModelPool> = Vec::new();
        for line in self.lines.iter().filter(|l| FEATURES[l.feature] == feature) {
            let Some(seats) = line.seats else { continue };
            let grant = ModelGrant {
                seats,
                overdraft: line.overdraft.unwrap_or(0),
                from: line.start.map_or(0, day_ms),
                until: line.last_day.map(|d| day_ms(d + 1)),
            };
            let (vendor, text) = (VENDORS[line.vendor], POOL_VERSIONS[line.version]);
            match pools
                .iter_mut()
                .find(|p| p.vendor == vendor && p.text == text)
            {
                Some(pool) => pool.grants.push(grant),
                None => pools.push(ModelPool {
                    vendor,
                    text,
                    parts: parse_version(text).expect("pool versions are valid"),
                    grants: vec![grant],
                }),
            }
        }
        pools.sort_by(|a, b| cmp_version(&a.parts, &b.parts).then(a.vendor.cmp(b.vendor)));
        pools
    }

    pub(super) fn in_use(&self, feature: &str, vendor: &str, pool_version: &str) -> u32 {
        self.leases
            .values()
            .filter(|l| {
                l.feature == feature && l.vendor == vendor && l.pool_version == pool_version
            })
            .map(|l| l.count)
            .sum()
    }

    /// Which pool serves a request: (vendor, version text), or why none does.
    pub(super) fn choose(
        &self,
        now: Millis,
        feature: &str,
        version: &str,
        count: u32,
    ) -> Result<(&'static str, &'static str, bool), Denial> {
        let bad = || Denial::BadRequest(String::new());
        if count == 0 || count > MAX_SEATS_PER_REQUEST {
            return Err(bad());
        }
        let wanted = if version.is_empty() {
            vec![0]
        } else {
            parse_version(version).ok_or_else(bad)?
        };
        let pools = self.pools(feature);
        let Some(highest) = pools.last() else {
            return Err(Denial::UnknownFeature);
        };
        let candidates: Vec<_> = pools
            .iter()
            .filter(|p| cmp_version(&p.parts, &wanted).is_ge())
            .collect();
        if candidates.is_empty() {
            return Err(Denial::VersionTooNew {
                highest: highest.text.to_string(),
            });
        }
        // A request no pool could ever hold is refused at once (never queued).
        let capacity = |p: &&ModelPool| u64::from(p.seats_at(now)) + u64::from(p.overdraft_at(now));
        let licensed = candidates.iter().map(capacity).max().unwrap_or(0);
        if licensed > 0 && candidates.iter().all(|p| u64::from(count) > capacity(p)) {
            return Err(Denial::MoreThanLicensed {
                asked: count,
                licensed: u32::try_from(licensed).unwrap_or(u32::MAX),
            });
        }
        let (mut in_use, mut total) = (0u32, 0u32);
        for pool in &candidates {
            let seats = pool.seats_at(now);
            let used = self.in_use(feature, pool.vendor, pool.text);
            if u64::from(used) + u64::from(count) <= u64::from(seats) {
                return Ok((pool.vendor, pool.text, false));
            }
            in_use += used;
            total = total.saturating_add(seats);
        }
        for pool in &candidates {
            let limit = u64::from(pool.seats_at(now)) + u64::from(pool.overdraft_at(now));
            let used = self.in_use(feature, pool.vendor, pool.text);
            if u64::from(used) + u64::from(count) <= limit {
                return Ok((pool.vendor, pool.text, true));
            }
        }
        if total == 0 {
            let grants = || candidates.iter().flat_map(|p| p.grants.iter());
            if let Some(at) = grants().map(|g| g.from).filter(|&f| f > now).min() {
                return Err(Denial::NotYetStarted { at });
            }
            if let Some(at) = grants().filter_map(|g| g.until).filter(|&u| u <= now).max() {
                return Err(Denial::Expired { at });
            }
        }
        Err(Denial::AllInUse { in_use, total })
    }

    pub(super) fn touch(&mut self, id: SessionId, now: Millis) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.expires_at = now + TTL;
        }
    }

    pub(super) fn session_lease_ids(&self, id: SessionId) -> Vec<LeaseId> {
        self.leases
            .values()
            .filter(|l| l.session == id)
            .map(|l| l.id)
            .collect()
    }

    pub(super) fn end_session(
        &mut self,
        id: SessionId,
        reason: ReleaseReason,
        changes: &mut Vec<Change>,
    ) {
        for lease_id in self.session_lease_ids(id) {
            let lease = self.leases.remove(&lease_id).expect("listed just now");
            changes.push(Change::LeaseReleased { lease, reason });
        }
        self.sessions.remove(&id);
        changes.push(Change::SessionClosed(id));
    }

    /// What the ledger must do with `cmd` at `now`.
    pub(super) fn apply(&mut self, now: Millis, cmd: &Command) -> Applied {
        let mut changes = Vec::new();
        let result = self.apply_inner(now, cmd, &mut changes);
        (result, changes)
    }

    pub(super) fn apply_inner(
        &mut self,
        now: Millis,
        cmd: &Command,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, LedgerError> {
        let live = |m: &Self, id: &SessionId| {
            if m.sessions.contains_key(id) {
                Ok(())
            } else {
                Err(LedgerError::UnknownSession)
            }
        };
        match cmd {
            Command::OpenSession {
                id,
                secret_hash,
                client,
            } => {
                if self.sessions.contains_key(id) {
                    return Err(LedgerError::IdInUse);
                }
                let session = Session {
                    id: *id,
                    secret_hash: *secret_hash,
                    client: client.clone(),
                    opened_at: now,
                    expires_at: now + TTL,
                    connected: true,
                    detached: false,
                };
                changes.push(Change::SessionOpened(session.clone()));
                self.sessions.insert(*id, session);
                Ok(Outcome::Done)
            }
            Command::Resume {
                id,
                secret_hash,
                address,
            } => {
                let session = self
                    .sessions
                    .get_mut(id)
                    .ok_or(LedgerError::UnknownSession)?;
                if session.secret_hash != *secret_hash {
                    return Err(LedgerError::BadSecret);
                }
                session.connected = true;
                session.detached = false;
                session.client.address = address.clone().into();
                session.expires_at = now + TTL;
                let leases = self
                    .leases
                    .values()
                    .filter(|l| l.session == *id)
                    .cloned()
                    .collect();
                Ok(Outcome::Resumed { leases })
            }
            Command::Heartbeat { id } => {
                let session = self
                    .sessions
                    .get_mut(id)
                    .ok_or(LedgerError::UnknownSession)?;
                session.connected = true;
                session.expires_at = now + TTL;
                Ok(Outcome::Done)
            }
            Command::Detach { id } => {
                let session = self
                    .sessions
                    .get_mut(id)
                    .ok_or(LedgerError::UnknownSession)?;
                session.connected = true;
                session.detached = true;
                session.expires_at = now + TTL;
                Ok(Outcome::Done)
            }
            Command::Disconnected { id } => {
                let session = self
                    .sessions
                    .get_mut(id)
                    .ok_or(LedgerError::UnknownSession)?;
                session.connected = false;
                session.detached = false;
                session.expires_at = session.expires_at.min(now + GRACE);
                Ok(Outcome::Done)
            }
            Command::CloseSession { id } => {
                live(self, id)?;
                self.end_session(*id, ReleaseReason::SessionClosed, changes);
                Ok(Outcome::Done)
            }
            Command::Checkout {
                ask:
                    Ask {
                        session,
                        lease_id,
                        feature,
                        version,
                        count,
                        client_ref,
                    },
                wait: _,
            } => {
                live(self, session)?;
                if *client_ref != 0
                    && let Some(existing) = self
                        .leases
                        .values()
                        .find(|l| l.session == *session && l.client_ref == *client_ref)
                {
                    let existing = existing.clone();
                    self.touch(*session, now);
                    return Ok(Outcome::Granted(existing));
                }
                if self.leases.contains_key(lease_id) {
                    return Err(LedgerError::IdInUse);
                }
                self.touch(*session, now);
                match self.choose(now, feature, version, *count) {
                    Err(denial) => Ok(Outcome::Denied(denial)),
                    Ok((vendor, pool_version, overdraft)) => {
                        let lease = Lease {
                            id: *lease_id,
                            session: *session,
                            feature: feature.clone().into(),
                            vendor: vendor.to_string().into(),
                            requested_version: version.clone().into(),
                            pool_version: pool_version.to_string().into(),
                            count: *count,
                            granted_at: now,
                            client_ref: *client_ref,
                            overdraft,
                            lingering_until: None,
                            borrowed_until: None,
                            token_for: None,
                        };
                        changes.push(Change::LeaseGranted(lease.clone()));
                        self.leases.insert(*lease_id, lease.clone());
                        Ok(Outcome::Granted(lease))
                    }
                }
            }
            // Nothing ever waits in this model (every checkout is `Wait::No`; the queue
            // has its own properties in `queue.rs`), so there is never anything to withdraw.
            // The model has no policy, so no TIMEOUT: idleness changes nothing observable
            // but the session's expiry.
            Command::Activity { id, .. } => {
                live(self, id)?;
                self.touch(*id, now);
                Ok(Outcome::Done)
            }
            Command::Dequeue { session, .. } => {
                live(self, session)?;
                self.touch(*session, now);
                Ok(Outcome::NotHeld)
            }
            // Borrowing has its own property test (`borrow.rs`); this model's catalogs
            // allow none, so every borrow is refused and nothing is ever returned.
            Command::Borrow { ask, .. } => {
                live(self, &ask.session)?;
                self.touch(ask.session, now);
                Ok(Outcome::Denied(Denial::NotBorrowable))
            }
            Command::Return { session, .. } => {
                live(self, session)?;
                self.touch(*session, now);
                Ok(Outcome::NotHeld)
            }
            Command::Checkin { session, lease_id } => {
                live(self, session)?;
                self.touch(*session, now);
                match self.leases.get(lease_id) {
                    Some(l) if l.session == *session => {
                        let lease = self.leases.remove(lease_id).expect("just found");
                        changes.push(Change::LeaseReleased {
                            lease: lease.clone(),
                            reason: ReleaseReason::Checkin,
                        });
                        Ok(Outcome::Released(lease))
                    }
                    _ => Ok(Outcome::NotHeld),
                }
            }
            Command::Remove { lease_id } => {
                let Some(lease) = self.leases.get(lease_id) else {
                    return Ok(Outcome::NotHeld);
                };
                let ready_at = lease.granted_at + crate::util::MIN_REMOVE;
                if now < ready_at {
                    return Err(LedgerError::TooSoonToRemove {
                        wait_ms: ready_at - now,
                    });
                }
                let lease = self.leases.remove(lease_id).expect("just found");
                changes.push(Change::LeaseReleased {
                    lease: lease.clone(),
                    reason: ReleaseReason::Removed,
                });
                Ok(Outcome::Released(lease))
            }
            Command::ExtendSessions { until } => {
                for s in self.sessions.values_mut() {
                    s.expires_at = s.expires_at.max(*until);
                }
                Ok(Outcome::Done)
            }
            Command::Expire => {
                let mut lapsed: Vec<_> = self
                    .sessions
                    .values()
                    .filter(|s| s.expires_at <= now)
                    .map(|s| (s.expires_at, s.id))
                    .collect();
                lapsed.sort();
                for &(_, id) in &lapsed {
                    self.end_session(id, ReleaseReason::Expired, changes);
                }
                Ok(Outcome::Expired {
                    sessions: lapsed.into_iter().map(|(_, id)| id).collect(),
                })
            }
        }
    }

    /// A restart: every session gets a fresh TTL and is disconnected.
    ///
    /// Its client info is what the store recorded when it opened: `Resume` updates
    /// `client.address` in memory only (it emits no change), so a restart forgets the
    /// address a session resumed from until it resumes again.
    pub(super) fn restart(&mut self, now: Millis, durable: &Durable) {
        for s in self.sessions.values_mut() {
            s.expires_at = now + TTL;
            s.connected = false;
            s.detached = false;
            if let Some(stored) = durable.sessions.get(&s.id) {
                s.client.address = stored.client.address.clone();
            }
        }
    }

    pub(super) fn reload(&mut self, seats: &[u32]) {
        for (line, &n) in self.lines.iter_mut().zip(seats) {
            if line.seats.is_some() {
                line.seats = Some(n);
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Millis> {
        self.sessions.values().map(|s| s.expires_at).min()
    }
}

/// Denial messages are free text; outcomes are compared without them.
pub(super) fn normalized(result: &Result<Outcome, LedgerError>) -> Result<Outcome, LedgerError> {
    match result {
        Ok(Outcome::Denied(Denial::BadRequest(_))) => {
            Ok(Outcome::Denied(Denial::BadRequest(String::new())))
        }
        other => other.clone(),
    }
}
