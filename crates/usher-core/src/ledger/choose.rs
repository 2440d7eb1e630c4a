//! Choosing where a request's seats come from: the pool, under the licenses and the
//! policy (`EXCLUDE`/`INCLUDE`, `MAX`, `RESERVE`, `MAX_OVERDRAFT`, `PRIORITY`).

use usher_license::Version;

use super::{Ledger, MAX_SEATS_PER_REQUEST};
use crate::{Ask, ClientInfo, Denial, Lease, Millis, PoolKey, SessionId, Who};

/// The pool chosen for a checkout.
pub(super) struct Choice {
    pub(super) pool: PoolKey,
    /// Seats taken from the pool: the seats asked for, or for a token-based feature the
    /// tokens they cost.
    pub(super) seats: u32,
    /// The token-based feature asked for, when the seats are tokens of another pool.
    pub(super) token_for: Option<String>,
    /// The seats are beyond the pool's count.
    pub(super) overdraft: bool,
    /// The seats are covered by free seats reserved for the client, so they may be granted
    /// even while others wait in the queue.
    pub(super) reserved: bool,
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
    /// Picks the pool to serve a checkout by `who`: the lowest licensed version that is at
    /// least the requested one and has room, so that newer-version seats stay free for the
    /// clients that need them. The policy is applied first, in this order (see
    /// docs/policy.md): `EXCLUDE`/`INCLUDE`, then `MAX`, then the seats `RESERVE`d for
    /// others, which are not free for `who`.
    pub(super) fn choose_pool(
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
        let wanted = wanted_version(version, count)?;
        let pools = self.catalog.pools(feature).ok_or_else(|| {
            match self.catalog.bound_elsewhere(feature) {
                Some(hostid) => Denial::BoundToOtherHost {
                    hostid: hostid.to_string(),
                },
                None => Denial::UnknownFeature,
            }
        })?;
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
                .all(|p| self.extra_seats(p.key.as_pool_ref(), who, count) > capacity(p))
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
            let extra = self.extra_seats(pool.key.as_pool_ref(), who, count);
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
                let extra = self.extra_seats(pool.key.as_pool_ref(), who, count);
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

    /// Where a borrow of `ask.count` seats of `ask.feature` for `duration` from `now` comes
    /// from, and until when it really lasts: `now + duration`, or the license's end if that
    /// comes first. The seats must be free for an ordinary checkout that does not wait
    /// (policy, queue and reservations included), the borrow no longer than the license's
    /// `BORROW=` and the policy's `MAX_BORROW_HOURS`, and at least `BORROW_LOWWATER` seats
    /// must stay unborrowed.
    pub(super) fn borrow_source(
        &self,
        now: Millis,
        ask: &Ask,
        duration: Millis,
    ) -> Result<(Choice, Millis), Denial> {
        let (session, feature, count) = (ask.session, ask.feature.as_str(), ask.count);
        if duration == 0 {
            return Err(Denial::BadRequest(
                "a borrow must last longer than 0 ms".into(),
            ));
        }
        let who = self.client_of(session);
        let choice = self.resolve(now, feature, &ask.version, count, who, true)?;
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
        if duration > max {
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
        let until = now.saturating_add(duration);
        let until = pool.expires_at(now).map_or(until, |end| until.min(end));
        Ok((choice, until))
    }

    /// Picks where a checkout of `feature` is served from: its own pools
    /// ([`Ledger::choose_pool`]), or for a token-based feature (`count` = `token`) the
    /// first of its `TOKEN=` alternatives, in file order, whose pool can pay `count` times
    /// its tokens. The policy's `EXCLUDE`/`INCLUDE` may name the token-based feature; `MAX`
    /// and `RESERVE` count the tokens, on their pool. Token-based features cannot be
    /// borrowed.
    pub(super) fn resolve(
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
        let wanted = wanted_version(version, count)?;
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
                Err(Denial::AllInUse { in_use, total }) => {
                    short.get_or_insert(Denial::TokensInUse {
                        pool: alt.feature.clone(),
                        cost: tokens,
                        in_use,
                        total,
                    });
                }
                Err(d @ (Denial::Reserved { .. } | Denial::MaxReached { .. })) => {
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
    pub(super) fn pool_queue_ahead(&self, choice: &Choice, priority: Option<u32>) -> usize {
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
    pub(super) fn priority(&self, session: SessionId, feature: &str) -> Option<u32> {
        let client = &self.sessions.get(&session)?.client;
        self.policy.priority(feature, &Who::from(client))
    }
}

/// Checks the seat count a request asks for, and parses the least version it accepts
/// (any, when empty).
fn wanted_version(version: &str, count: u32) -> Result<Version, Denial> {
    if count == 0 || count > MAX_SEATS_PER_REQUEST {
        return Err(Denial::BadRequest(format!(
            "seat count must be between 1 and {MAX_SEATS_PER_REQUEST}, not {count}"
        )));
    }
    if version.is_empty() { "0" } else { version }
        .parse()
        .map_err(|e: usher_license::VersionError| Denial::BadRequest(e.to_string()))
}
