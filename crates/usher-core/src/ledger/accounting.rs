//! The ledger's indexes and seat accounting: every lease enters and leaves them through
//! [`Ledger::insert_lease`] and [`Ledger::remove_lease`], which keep them in step.

use super::Ledger;
use crate::in_use::{DupKey, Holder};
use crate::{ClientInfo, Lease, LeaseId, PoolRef};

impl Ledger {
    pub(super) fn insert_lease(&mut self, mut lease: Lease) {
        self.names.lease(&mut lease);
        self.account_add(&lease);
        self.tallies.add(&lease);
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
        self.tallies.remove(&lease);
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

    /// Counts a lease's seats into its pool (see [`crate::SeatsInUse::add`]).
    pub(super) fn account_add(&mut self, lease: &Lease) {
        let key = lease.pool_key();
        let group = self.dup_key(key, self.client_of(lease.session));
        self.in_use.add(key, group, lease.id, lease.count);
    }

    /// Takes a lease's seats out of its pool (see [`crate::SeatsInUse::remove`]).
    fn account_remove(&mut self, lease: &Lease) {
        self.in_use.remove(lease.pool_key(), lease.id, lease.count);
    }

    /// The `DUP_GROUP` a checkout of `pool` by `client` joins, if the pool groups
    /// duplicates.
    fn dup_key(&self, pool: PoolRef<'_>, client: Option<&ClientInfo>) -> Option<DupKey> {
        let dup = self.catalog.pool(pool)?.dup_group;
        let who = client.map(|c| Holder {
            user: &c.user,
            host: &c.host,
            display: &c.display,
        });
        DupKey::of(pool, dup, who)
    }

    /// Seats a checkout of `count` by `who` would add to `pool`: fewer (or none) when it
    /// duplicates a group already holding seats there (`DUP_GROUP=`).
    pub(super) fn extra_seats(
        &self,
        pool: PoolRef<'_>,
        who: Option<&ClientInfo>,
        count: u32,
    ) -> u32 {
        self.in_use.extra(self.dup_key(pool, who).as_ref(), count)
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
