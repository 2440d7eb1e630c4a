//! Seats going back: checkin, return, remove, expiry, and lingering seats.

use super::Ledger;
use crate::{
    Change, DequeueReason, Lease, LeaseId, LedgerError, Millis, Outcome, ReleaseReason, SessionId,
};

impl Ledger {
    /// `Checkin`: the client gives a lease back (its seats may linger).
    pub(super) fn checkin(
        &mut self,
        now: Millis,
        session: SessionId,
        lease_id: LeaseId,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, LedgerError> {
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

    /// `Return`: the borrower (the same user on the same host, in any session) brings
    /// borrowed seats back early.
    pub(super) fn return_borrowed(
        &mut self,
        now: Millis,
        session: SessionId,
        feature: &str,
        lease_id: Option<LeaseId>,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, LedgerError> {
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

    /// `Remove`: an administrator takes a lease away, unless it is borrowed or too young.
    pub(super) fn remove(
        &mut self,
        now: Millis,
        lease_id: LeaseId,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, LedgerError> {
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

    /// `Expire`: every deadline up to `now` takes effect (queued waits, idle timeouts,
    /// session expiries, lingers, borrows), then the queue is served.
    pub(super) fn expire(&mut self, now: Millis, changes: &mut Vec<Change>) -> Outcome {
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
        Outcome::Expired { sessions: lapsed }
    }

    /// How long the seats of `lease`, given back at `now`, stay held: until
    /// `max(now + linger, granted_at + min_checkout)`, where the linger is the longer of the
    /// license's `LINGER=` and the policy's `LINGER` (policy can lengthen, never shorten).
    fn held_until(&self, lease: &Lease, now: Millis) -> Millis {
        let Some(pool) = self.catalog.pool(lease.pool_key()) else {
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
    pub(super) fn give_back(
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
}
