//! The ledger's indexes and seat accounting: every lease enters and leaves them through
//! [`Ledger::insert_lease`] and [`Ledger::remove_lease`], which keep them in step.

use super::{DupKey, Ledger};
use crate::catalog::PoolName;
use crate::{ClientInfo, Lease, LeaseId, PoolRef};

impl Ledger {
    pub(super) fn insert_lease(&mut self, mut lease: Lease) {
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
    pub(super) fn remove_lease(&mut self, id: LeaseId) -> Lease {
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

    /// Counts a lease's seats into its pool. Under `DUP_GROUP`, a group of duplicates
    /// holds as many seats as its largest lease.
    pub(super) fn account_add(&mut self, lease: &Lease) {
        let key = lease.pool_key();
        let added = match self.dup_key(key, self.client_of(lease.session)) {
            Some(dk) => {
                let group = self.dup_groups.entry(dk.clone()).or_default();
                let before = group.values().copied().max().unwrap_or(0);
                group.insert(lease.id, lease.count);
                self.lease_dup.insert(lease.id, dk);
                lease.count.saturating_sub(before)
            }
            None => lease.count,
        };
        match self.in_use.get_mut(&key as &dyn PoolName) {
            Some(n) => *n += added,
            None => {
                self.in_use.insert(key.to_key(), added);
            }
        }
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
        if let Some(n) = self.in_use.get_mut(&lease.pool_key() as &dyn PoolName) {
            *n -= removed;
        }
    }

    /// The `DUP_GROUP` a lease belongs to, if its pool groups duplicates.
    fn dup_key(&self, pool: PoolRef<'_>, client: Option<&ClientInfo>) -> Option<DupKey> {
        let group = self.catalog.pool(pool)?.dup_group?;
        let client = client?;
        Some((
            pool.to_key(),
            group.user.then(|| client.user.to_string()),
            group.host.then(|| client.host.to_string()),
            group.display.then(|| client.display.to_string()),
        ))
    }

    /// Seats a checkout of `count` by `who` would add to `pool`: fewer (or none) when it
    /// duplicates a group already holding seats there (`DUP_GROUP=`).
    pub(super) fn extra_seats(
        &self,
        pool: PoolRef<'_>,
        who: Option<&ClientInfo>,
        count: u32,
    ) -> u32 {
        let held = self
            .dup_key(pool, who)
            .and_then(|dk| self.dup_groups.get(&dk))
            .and_then(|g| g.values().copied().max())
            .unwrap_or(0);
        count.saturating_sub(held)
    }

    /// Sets the idle deadline of a lease known to exist, if its session is idle and the
    /// policy has a `TIMEOUT` for its feature.
    pub(super) fn arm_idle(&mut self, id: LeaseId) {
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

    pub(super) fn disarm_idle(&mut self, id: LeaseId) {
        if let Some(at) = self.idle_deadline_of.remove(&id) {
            self.idle_deadlines.remove(&(at, id));
        }
    }
}
