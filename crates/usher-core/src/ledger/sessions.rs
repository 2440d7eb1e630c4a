//! Sessions: the commands that open, keep, resume and close them, and how a session ends.

use super::Ledger;
use crate::{
    Change, ClientInfo, DequeueReason, LeaseId, LedgerError, Millis, Outcome, ReleaseReason,
    Session, SessionId,
};

impl Ledger {
    /// `OpenSession`: a new session, live for one TTL from `now`.
    pub(super) fn open_session(
        &mut self,
        now: Millis,
        id: SessionId,
        secret_hash: [u8; 32],
        client: ClientInfo,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, LedgerError> {
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

    /// `Resume`: the session's client is back, on a connection from `address`; it gets the
    /// leases it still holds.
    pub(super) fn resume(
        &mut self,
        now: Millis,
        id: SessionId,
        secret_hash: &[u8; 32],
        address: String,
    ) -> Result<Outcome, LedgerError> {
        let session = self
            .sessions
            .get_mut(&id)
            .ok_or(LedgerError::UnknownSession)?;
        if !constant_time_eq(&session.secret_hash, secret_hash) {
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

    /// `Heartbeat`: the session was heard from.
    pub(super) fn heartbeat(&mut self, now: Millis, id: SessionId) -> Result<Outcome, LedgerError> {
        self.require_session(id)?;
        if let Some(s) = self.sessions.get_mut(&id) {
            s.connected = true;
        }
        self.touch(id, now);
        Ok(Outcome::Done)
    }

    /// `Detach`: the session lives on without its connection, on keepalives.
    pub(super) fn detach(&mut self, now: Millis, id: SessionId) -> Result<Outcome, LedgerError> {
        let session = self
            .sessions
            .get_mut(&id)
            .ok_or(LedgerError::UnknownSession)?;
        session.connected = true;
        session.detached = true;
        self.touch(id, now);
        Ok(Outcome::Done)
    }

    /// `Disconnected`: the connection closed without a goodbye; the session lapses after
    /// the reconnect grace unless it resumes (or would lapse sooner anyway).
    pub(super) fn disconnected(
        &mut self,
        now: Millis,
        id: SessionId,
    ) -> Result<Outcome, LedgerError> {
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

    /// `ExtendSessions`: no live session lapses before `until`. Nothing stored changes
    /// (expiries are soft state, as heartbeats are).
    pub(super) fn extend_sessions(&mut self, until: Millis) -> Outcome {
        let short: Vec<SessionId> = self
            .expiries
            .range(..(until, SessionId(0)))
            .map(|&(_, id)| id)
            .collect();
        for id in short {
            self.set_expiry(id, until);
        }
        Outcome::Done
    }

    /// `Activity`: the session's user went idle or came back; the idle deadlines of its
    /// leases are armed or disarmed accordingly.
    pub(super) fn activity(
        &mut self,
        now: Millis,
        id: SessionId,
        idle: bool,
    ) -> Result<Outcome, LedgerError> {
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

    /// `CloseSession`: the client said goodbye.
    pub(super) fn close_session(
        &mut self,
        now: Millis,
        id: SessionId,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, LedgerError> {
        self.require_session(id)?;
        self.end_session(id, now, ReleaseReason::SessionClosed, changes);
        self.serve_queue(now, changes);
        Ok(Outcome::Done)
    }

    pub(super) fn require_session(&self, id: SessionId) -> Result<(), LedgerError> {
        if self.sessions.contains_key(&id) {
            Ok(())
        } else {
            Err(LedgerError::UnknownSession)
        }
    }

    /// Activity from a session: it lives another full TTL.
    pub(super) fn touch(&mut self, id: SessionId, now: Millis) {
        self.set_expiry(id, now.saturating_add(self.config.session_ttl));
    }

    fn set_expiry(&mut self, id: SessionId, at: Millis) {
        if let Some(s) = self.sessions.get_mut(&id) {
            self.expiries.remove(&(s.expires_at, id));
            s.expires_at = at;
            self.expiries.insert((at, id));
        }
    }

    pub(super) fn insert_session(&mut self, mut session: Session) {
        self.names.session(&mut session);
        self.expiries.insert((session.expires_at, session.id));
        self.sessions.insert(session.id, Box::new(session));
    }

    /// The identity behind a session, for the policy.
    pub(super) fn client_of(&self, session: SessionId) -> Option<&ClientInfo> {
        self.holder(session).map(|s| &s.client)
    }

    /// A session's seats are given back: at a goodbye they linger where their pools say
    /// so; when it lapses (its client died or vanished) they go back at once, except those
    /// already lingering. A session left with lingering seats departs: it can no longer be
    /// used or resumed, and is closed with its last lingering seat.
    pub(super) fn end_session(
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

    /// Closes a departed session once its last lingering lease is gone.
    pub(super) fn close_if_departed(&mut self, id: SessionId, changes: &mut Vec<Change>) {
        if self.departed.contains_key(&id) && !self.session_leases.contains_key(&id) {
            self.departed.remove(&id);
            changes.push(Change::SessionClosed(id));
        }
    }
}

/// Compares secrets without an early exit, so timing does not reveal how much matched.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
