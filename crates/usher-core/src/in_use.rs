//! Seats in use per pool, counted by the rules every grant is checked against.
//!
//! A lease holds its seats, except under `DUP_GROUP=`: duplicate checkouts (same user,
//! host or display, as the pool's rule says) share, and a group of duplicates holds as
//! many seats as its largest lease. The ledger keeps its counts in a [`SeatsInUse`];
//! usage reports replay the usage log into another, so that what a report says was in
//! use is what the ledger counted, by the same code.

use std::collections::{BTreeMap, HashMap};

use crate::catalog::PoolName;
use crate::{DupGroup, Lease, LeaseId, Name, PoolKey, PoolRef};

/// Who checked a lease out, as `DUP_GROUP=` compares checkouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder<'a> {
    /// User name.
    pub user: &'a str,
    /// Host name.
    pub host: &'a str,
    /// Display (terminal or X display).
    pub display: &'a str,
}

/// A group of duplicate checkouts: the pool, and the user, host and display where the
/// pool's `DUP_GROUP` compares them (`None` where it does not).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DupKey {
    pool: PoolKey,
    user: Option<String>,
    host: Option<String>,
    display: Option<String>,
}

impl DupKey {
    /// The group a checkout of `pool` by `who` joins under the pool's rule `dup`; `None`
    /// when the pool does not group duplicates or the holder is unknown (the seats then
    /// count on their own).
    pub fn of(pool: PoolRef<'_>, dup: Option<DupGroup>, who: Option<Holder<'_>>) -> Option<DupKey> {
        let (dup, who) = (dup?, who?);
        Some(DupKey {
            pool: pool.to_key(),
            user: dup.user.then(|| who.user.to_owned()),
            host: dup.host.then(|| who.host.to_owned()),
            display: dup.display.then(|| who.display.to_owned()),
        })
    }
}

/// Seats in use per pool, lease by lease (see the module docs).
///
/// To ensure correctness, every lease counted with [`add`](SeatsInUse::add) is taken out
/// with [`remove`](SeatsInUse::remove) with the same pool and count, once.
#[derive(Debug, Clone, Default)]
pub struct SeatsInUse {
    /// Seats held per pool. A pool's entry stays when its count falls to zero, so seats
    /// coming and going allocate no key ([`clear`](SeatsInUse::clear) starts afresh).
    seats: HashMap<PoolKey, u32>,
    /// Leases grouped as duplicates, with their seats.
    groups: HashMap<DupKey, BTreeMap<LeaseId, u32>>,
    /// The group of each grouped lease.
    grouped: HashMap<LeaseId, DupKey>,
}

impl SeatsInUse {
    /// Seats held from `pool` (named by a `&PoolKey` or a [`PoolRef`]).
    pub fn get<'k>(&self, pool: impl Into<PoolRef<'k>>) -> u32 {
        let pool = pool.into();
        self.seats.get(&pool as &dyn PoolName).copied().unwrap_or(0)
    }

    /// Every pool with seats held, and how many.
    pub fn pools(&self) -> impl Iterator<Item = (&PoolKey, u32)> {
        self.seats
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k, *n))
    }

    /// Seats a checkout of `count` in `group` would add to its pool: fewer (or none) when
    /// the group already holds seats there.
    pub fn extra(&self, group: Option<&DupKey>, count: u32) -> u32 {
        let held = group
            .and_then(|g| self.groups.get(g))
            .and_then(|g| g.values().copied().max())
            .unwrap_or(0);
        count.saturating_sub(held)
    }

    /// Counts lease `id` of `count` seats from `pool`, in `group` if it has one; returns
    /// the seats the pool gained.
    pub fn add(
        &mut self,
        pool: PoolRef<'_>,
        group: Option<DupKey>,
        id: LeaseId,
        count: u32,
    ) -> u32 {
        let added = match group {
            Some(key) => {
                let members = self.groups.entry(key.clone()).or_default();
                let before = members.values().copied().max().unwrap_or(0);
                members.insert(id, count);
                self.grouped.insert(id, key);
                count.saturating_sub(before)
            }
            None => count,
        };
        self.add_ungrouped(pool, added);
        added
    }

    /// Adds `seats` held by leases that share with nobody (a restart's bulk count).
    pub fn add_ungrouped(&mut self, pool: PoolRef<'_>, seats: u32) {
        match self.seats.get_mut(&pool as &dyn PoolName) {
            Some(n) => *n += seats,
            None => {
                self.seats.insert(pool.to_key(), seats);
            }
        }
    }

    /// Takes lease `id` (counted by [`add`](SeatsInUse::add) with `pool` and `count`) out;
    /// returns the seats the pool lost.
    pub fn remove(&mut self, pool: PoolRef<'_>, id: LeaseId, count: u32) -> u32 {
        let removed = match self.grouped.remove(&id) {
            Some(key) => {
                let members = self.groups.entry(key.clone()).or_default();
                let before = members.values().copied().max().unwrap_or(0);
                members.remove(&id);
                let after = members.values().copied().max().unwrap_or(0);
                if members.is_empty() {
                    self.groups.remove(&key);
                }
                before - after
            }
            None => count,
        };
        if let Some(n) = self.seats.get_mut(&pool as &dyn PoolName) {
            *n = n.saturating_sub(removed);
        }
        removed
    }

    /// Forgets every count (before counting again under new rules).
    pub fn clear(&mut self) {
        self.seats.clear();
        self.groups.clear();
        self.grouped.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PoolKey {
        PoolKey {
            feature: "cad".into(),
            vendor: "acme".into(),
            version: "2025".into(),
        }
    }

    const ALICE: Holder<'static> = Holder {
        user: "alice",
        host: "ws1",
        display: ":0",
    };

    #[test]
    fn a_group_holds_as_many_seats_as_its_largest_lease() {
        let dup = DupGroup::parse("UH").unwrap();
        let group = DupKey::of(pool().as_pool_ref(), dup, Some(ALICE));
        let mut seats = SeatsInUse::default();
        assert_eq!(
            seats.add(pool().as_pool_ref(), group.clone(), LeaseId(1), 1),
            1
        );
        assert_eq!(seats.extra(group.as_ref(), 3), 2);
        assert_eq!(
            seats.add(pool().as_pool_ref(), group.clone(), LeaseId(2), 3),
            2
        );
        assert_eq!(
            seats.add(pool().as_pool_ref(), group.clone(), LeaseId(3), 1),
            0
        );
        assert_eq!(seats.get(&pool()), 3);
        assert_eq!(
            seats.remove(pool().as_pool_ref(), LeaseId(2), 3),
            2,
            "back to the 1-seat lease"
        );
        assert_eq!(
            seats.remove(pool().as_pool_ref(), LeaseId(1), 1),
            0,
            "lease 3 still holds one"
        );
        assert_eq!(seats.remove(pool().as_pool_ref(), LeaseId(3), 1), 1);
        assert_eq!(seats.get(&pool()), 0);
        assert_eq!(seats.pools().count(), 0, "no empty entries left behind");
    }

    #[test]
    fn without_a_rule_or_a_holder_seats_add_up() {
        let mut seats = SeatsInUse::default();
        assert_eq!(DupKey::of(pool().as_pool_ref(), None, Some(ALICE)), None);
        let site = DupGroup::parse("SITE").unwrap();
        assert_eq!(DupKey::of(pool().as_pool_ref(), site, None), None);
        seats.add(pool().as_pool_ref(), None, LeaseId(1), 2);
        seats.add(pool().as_pool_ref(), None, LeaseId(2), 2);
        assert_eq!(seats.get(&pool()), 4);
    }
}

/// What the leases drawn from one pool add up to besides its seats in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolTally {
    /// Leases held (a lease of several seats counts once).
    pub holders: u32,
    /// Seats held beyond the pool's count (`OVERDRAFT=`).
    pub overdraft: u32,
    /// Seats borrowed for offline use.
    pub borrowed: u32,
}

/// A [`PoolTally`] per pool, kept as leases come and go, so that totals (status,
/// metrics, health) cost one entry per pool instead of a walk over every lease.
#[derive(Debug, Clone, Default)]
pub struct PoolTallies {
    /// A pool's entry stays when its leases are gone, so leases coming and going allocate
    /// no key.
    pools: HashMap<PoolKey, PoolTally>,
    /// Tokens held for each token-based feature (`token_for`) from each pool (the lease's
    /// feature): the leases' counts added up, and the leases.
    tokens: HashMap<(Name, Name), (u32, u32)>,
}

impl PoolTallies {
    /// The tally of `pool` (named by a `&PoolKey` or a [`PoolRef`]).
    pub fn get<'k>(&self, pool: impl Into<PoolRef<'k>>) -> PoolTally {
        let pool = pool.into();
        self.pools
            .get(&pool as &dyn PoolName)
            .copied()
            .unwrap_or_default()
    }

    /// Every pool with a lease held, and its tally.
    pub fn pools(&self) -> impl Iterator<Item = (&PoolKey, PoolTally)> {
        self.pools
            .iter()
            .filter(|(_, t)| t.holders > 0)
            .map(|(k, t)| (k, *t))
    }

    /// Tokens held for each token-based feature, from each pool: `(token-based feature,
    /// pool feature, tokens, leases)`, for every pair with a lease.
    pub fn tokens(&self) -> impl Iterator<Item = (&str, &str, u32, u32)> {
        self.tokens
            .iter()
            .map(|((f, pool), &(tokens, leases))| (&**f, &**pool, tokens, leases))
    }

    /// Counts `lease` in.
    pub fn add(&mut self, lease: &Lease) {
        if let Some(feature) = &lease.token_for {
            let held = self
                .tokens
                .entry((feature.clone(), lease.feature.clone()))
                .or_default();
            held.0 += lease.count;
            held.1 += 1;
        }
        let pool = lease.pool_key();
        let tally = match self.pools.get_mut(&pool as &dyn PoolName) {
            Some(tally) => tally,
            None => self.pools.entry(pool.to_key()).or_default(),
        };
        tally.holders += 1;
        if lease.overdraft {
            tally.overdraft += lease.count;
        }
        if lease.borrowed_until.is_some() {
            tally.borrowed += lease.count;
        }
    }

    /// Counts `lease` (counted in by [`add`](PoolTallies::add)) out.
    pub fn remove(&mut self, lease: &Lease) {
        if let Some(feature) = &lease.token_for {
            let key = (feature.clone(), lease.feature.clone());
            if let Some(held) = self.tokens.get_mut(&key) {
                held.0 = held.0.saturating_sub(lease.count);
                held.1 = held.1.saturating_sub(1);
                if held.1 == 0 {
                    self.tokens.remove(&key);
                }
            }
        }
        let pool = lease.pool_key();
        if let Some(tally) = self.pools.get_mut(&pool as &dyn PoolName) {
            tally.holders = tally.holders.saturating_sub(1);
            if lease.overdraft {
                tally.overdraft = tally.overdraft.saturating_sub(lease.count);
            }
            if lease.borrowed_until.is_some() {
                tally.borrowed = tally.borrowed.saturating_sub(lease.count);
            }
        }
    }
}
