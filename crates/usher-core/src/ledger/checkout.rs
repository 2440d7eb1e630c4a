//! Checkouts and borrows: granting seats, queueing for them, and serving the queue.

use super::Ledger;
use super::choose::Choice;
use crate::{
    Ask, Change, Denial, DequeueReason, Lease, LeaseId, LedgerError, Millis, Outcome,
    QueuedRequest, ReleaseReason, SessionId, Wait,
};

impl Ledger {
    /// `Checkout`: grants the seats asked for, queues the request when it may wait and
    /// no seat is free, or refuses it. A retry (same `client_ref`) gets the earlier grant
    /// or queue place back.
    pub(super) fn checkout(
        &mut self,
        now: Millis,
        ask: Ask,
        wait: Wait,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, LedgerError> {
        let session = ask.session;
        self.require_session(session)?;
        if let Some(existing) = self.earlier_grant(&ask, |l| !l.detached()) {
            self.touch(session, now);
            return Ok(Outcome::Granted(existing));
        }
        if ask.client_ref != 0
            && let Some(waiting) = self.queue.find(session, ask.client_ref).cloned()
        {
            self.touch(session, now);
            let position = self.queue.position(waiting.lease_id).unwrap_or(1);
            return Ok(Outcome::Queued {
                request: waiting,
                position,
            });
        }
        // Checked before the session is touched: on `Err` nothing may change.
        self.require_fresh_lease_id(ask.lease_id)?;
        self.touch(session, now);
        let deadline = match wait {
            Wait::No => None,
            Wait::For(0) => None,
            Wait::For(ms) => Some(Some(now.saturating_add(ms))),
            Wait::Forever => Some(None),
        };
        if let Some(lease) = self.reuse_lingering(now, &ask, changes) {
            return Ok(Outcome::Granted(lease));
        }
        let priority = self.priority(session, &ask.feature);
        let ahead = self
            .queue
            .ahead_of(&ask.feature, self.queue.next_slot(priority));
        let who = self.client_of(session);
        let chosen = match self.resolve(now, &ask.feature, &ask.version, ask.count, who, false) {
            // Others wait ahead: the seats that are free are theirs (unless these are
            // reserved for this client).
            Ok(choice) if ahead > 0 && !choice.reserved => Err(Denial::QueuedAhead {
                waiting: ahead as u32,
            }),
            // Tokens are seats of their pool: checkouts waiting for the pool itself come
            // first.
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
                | Denial::TokensInUse { .. }
                | Denial::QueuedAhead { .. }
                | Denial::Reserved { .. },
            ) if let Some(deadline) = deadline => {
                let request = QueuedRequest {
                    lease_id: ask.lease_id,
                    session,
                    feature: ask.feature,
                    version: ask.version,
                    count: ask.count,
                    client_ref: ask.client_ref,
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
                let lease = new_lease(
                    ask.lease_id,
                    session,
                    ask.version,
                    ask.client_ref,
                    now,
                    choice,
                );
                Ok(Outcome::Granted(self.grant(lease, changes)))
            }
        }
    }

    /// `Borrow`: grants the seats asked for until `now + duration` (or sooner, see
    /// [`Ledger::borrow_source`]), or refuses them. A retry gets the earlier borrow back.
    pub(super) fn borrow(
        &mut self,
        now: Millis,
        ask: Ask,
        duration: Millis,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, LedgerError> {
        let session = ask.session;
        self.require_session(session)?;
        if let Some(existing) = self.earlier_grant(&ask, |l| l.borrowed_until.is_some()) {
            self.touch(session, now);
            return Ok(Outcome::Granted(existing));
        }
        self.require_fresh_lease_id(ask.lease_id)?;
        self.touch(session, now);
        match self.borrow_source(now, &ask, duration) {
            Err(denial) => Ok(Outcome::Denied(denial)),
            // A borrow's choice is never overdraft nor tokens (neither can be borrowed).
            Ok((choice, until)) => {
                let lease = Lease {
                    borrowed_until: Some(until),
                    ..new_lease(
                        ask.lease_id,
                        session,
                        ask.version,
                        ask.client_ref,
                        now,
                        choice,
                    )
                };
                Ok(Outcome::Granted(self.grant(lease, changes)))
            }
        }
    }

    /// `Dequeue`: the client gave up waiting.
    pub(super) fn withdraw(
        &mut self,
        now: Millis,
        session: SessionId,
        client_ref: u64,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, LedgerError> {
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

    /// The lease an earlier request with the same idempotency key was granted, if `ask`
    /// has a key (not 0) and its session holds such a lease of the right kind.
    fn earlier_grant(&self, ask: &Ask, kind: impl Fn(&Lease) -> bool) -> Option<Lease> {
        if ask.client_ref == 0 {
            return None;
        }
        self.session_leases(ask.session)
            .find(|l| l.client_ref == ask.client_ref && kind(l))
            .cloned()
    }

    /// Refuses a lease id that a lease or a waiting request already has.
    fn require_fresh_lease_id(&self, id: LeaseId) -> Result<(), LedgerError> {
        if self.leases.contains_key(&id) || self.queue.position(id).is_some() {
            return Err(LedgerError::IdInUse);
        }
        Ok(())
    }

    /// Records and holds a new lease; returns it.
    fn grant(&mut self, lease: Lease, changes: &mut Vec<Change>) -> Lease {
        changes.push(Change::LeaseGranted(lease.clone()));
        self.insert_lease(lease.clone());
        lease
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
        request: &Ask,
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
                &request.feature,
                &request.version,
                request.count,
                self.client_of(request.session),
                false,
            );
            match choice {
                Ok(choice) if choice.pool.as_pool_ref() == old.pool_key() => {
                    let owner = old.session;
                    changes.push(Change::LeaseReleased {
                        lease: old,
                        reason: ReleaseReason::Reused,
                    });
                    self.close_if_departed(owner, changes);
                    let lease = new_lease(
                        request.lease_id,
                        request.session,
                        request.version.clone(),
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

    /// Grants queued checkouts, in order, while their heads can be served. A head that
    /// can no longer be served at all (its licenses went away) leaves the queue refused;
    /// a head that only lacks free seats blocks the requests behind it, except from seats
    /// reserved for them.
    pub(super) fn serve_queue(&mut self, now: Millis, changes: &mut Vec<Change>) {
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
                    Err(
                        Denial::AllInUse { .. }
                        | Denial::TokensInUse { .. }
                        | Denial::Reserved { .. },
                    ) => blocked = true,
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
    pub(super) fn dequeue(
        &mut self,
        id: LeaseId,
        reason: DequeueReason,
        changes: &mut Vec<Change>,
    ) {
        if let Some(request) = self.queue.remove(id) {
            changes.push(Change::Dequeued { request, reason });
        }
    }
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
