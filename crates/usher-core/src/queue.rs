//! The checkout queue: requests waiting for seats, per feature, in the order they will be
//! served.
//!
//! **Order:** priority first (the policy's `PRIORITY` rank, lower first, unranked last),
//! then arrival. Within a feature the queue is
//! strict: a request is granted only when every request ahead of it for the same feature
//! has been granted or has left. So a request for many seats is never starved by a stream
//! of small ones that would each fit; the price is that seats may stay free while the head
//! of the queue waits for enough of them. (RLM's EXPRESS, where a request that fits jumps
//! ahead, is deliberately not offered: policy priorities are the way to let some users go
//! first.) A new checkout for a feature that has a queue joins it, or is refused if it does
//! not want to wait, unless its priority puts it at the head.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{Denial, Lease, LeaseId, Millis, SessionId};

/// How long a checkout is willing to wait for a seat when none is free.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Not at all: refuse at once (the default).
    #[default]
    No,
    /// This long (ms) from the moment the ledger applies the checkout, then give up. The
    /// deadline is the ledger's time plus this, never the caller's clock plus this: the
    /// ledger's time never runs backwards and may be ahead of a clock that was stepped
    /// back, and a deadline taken from that clock would already have passed.
    For(Millis),
    /// Until a seat frees or the client leaves.
    Forever,
}

/// A checkout waiting in the queue.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRequest {
    /// The lease id the grant will carry; also names the request while it waits.
    pub lease_id: LeaseId,
    /// Waiting session.
    pub session: SessionId,
    /// Feature wanted.
    pub feature: String,
    /// Minimum version wanted (as the client wrote it).
    pub version: String,
    /// Seats wanted.
    pub count: u32,
    /// The client's idempotency key.
    pub client_ref: u64,
    /// When it joined the queue.
    pub queued_at: Millis,
    /// When it gives up (`None`: never).
    pub deadline: Option<Millis>,
    /// Rank from the policy's `PRIORITY` rules: lower is served first, and requests
    /// without one come after every ranked request.
    pub priority: Option<u32>,
    /// Arrival order among every request ever queued, for ties in priority.
    pub seq: u64,
}

/// Why a request left the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DequeueReason {
    /// Seats freed and it was granted this lease.
    Granted(Lease),
    /// Its wait ran out.
    TimedOut,
    /// The client withdrew it.
    Cancelled,
    /// Its session ended (goodbye or expiry).
    SessionEnded,
    /// It can no longer be served at all (its licenses were removed or expired).
    Refused(Denial),
}

/// Where a request sits in its feature's queue: (rank, unranked last; arrival).
type Slot = (u64, u64);

fn rank(priority: Option<u32>) -> u64 {
    priority.map_or(u64::MAX, u64::from)
}

/// Every waiting request, indexed for the ledger's needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Queue {
    by_feature: BTreeMap<String, BTreeMap<Slot, QueuedRequest>>,
    by_lease: HashMap<LeaseId, (String, Slot)>,
    /// Each session's waiting requests, so that a retried checkout and a session's end
    /// look at that session's requests only, not at the whole queue.
    by_session: HashMap<SessionId, Vec<LeaseId>>,
    deadlines: BTreeSet<(Millis, LeaseId)>,
    next_seq: u64,
}

impl Queue {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_lease.is_empty()
    }

    /// The slot a request of `priority` arriving now would take.
    pub(crate) fn next_slot(&self, priority: Option<u32>) -> Slot {
        (rank(priority), self.next_seq)
    }

    /// How many requests for `feature` are ahead of `slot`.
    pub(crate) fn ahead_of(&self, feature: &str, slot: Slot) -> usize {
        self.by_feature
            .get(feature)
            .map_or(0, |q| q.range(..slot).count())
    }

    /// Adds a request; returns its 1-based position and the request as stored (with its
    /// arrival number).
    pub(crate) fn push(&mut self, mut request: QueuedRequest) -> (u32, QueuedRequest) {
        request.seq = self.next_seq;
        self.next_seq += 1;
        let slot = (rank(request.priority), request.seq);
        if let Some(at) = request.deadline {
            self.deadlines.insert((at, request.lease_id));
        }
        self.by_lease
            .insert(request.lease_id, (request.feature.clone(), slot));
        self.by_session
            .entry(request.session)
            .or_default()
            .push(request.lease_id);
        let stored = request.clone();
        self.by_feature
            .entry(request.feature.clone())
            .or_default()
            .insert(slot, request);
        (self.ahead_of(&stored.feature, slot) as u32 + 1, stored)
    }

    /// Removes a request known by its lease id.
    pub(crate) fn remove(&mut self, id: LeaseId) -> Option<QueuedRequest> {
        let (feature, slot) = self.by_lease.remove(&id)?;
        let queue = self.by_feature.get_mut(&feature)?;
        let request = queue.remove(&slot)?;
        if queue.is_empty() {
            self.by_feature.remove(&feature);
        }
        if let Some(at) = request.deadline {
            self.deadlines.remove(&(at, id));
        }
        if let Some(ids) = self.by_session.get_mut(&request.session) {
            ids.retain(|&l| l != id);
            if ids.is_empty() {
                self.by_session.remove(&request.session);
            }
        }
        Some(request)
    }

    /// The 1-based position of a waiting request.
    pub(crate) fn position(&self, id: LeaseId) -> Option<u32> {
        let (feature, slot) = self.by_lease.get(&id)?;
        Some(self.ahead_of(feature, *slot) as u32 + 1)
    }

    /// The request a session queued under `client_ref`, if it still waits.
    pub(crate) fn find(&self, session: SessionId, client_ref: u64) -> Option<&QueuedRequest> {
        self.by_session
            .get(&session)?
            .iter()
            .filter_map(|id| self.get(*id))
            .find(|r| r.client_ref == client_ref)
    }

    /// Lease ids of a session's waiting requests, in the order they were queued.
    pub(crate) fn of_session(&self, session: SessionId) -> Vec<LeaseId> {
        self.by_session.get(&session).cloned().unwrap_or_default()
    }

    /// A waiting request by its lease id.
    fn get(&self, id: LeaseId) -> Option<&QueuedRequest> {
        let (feature, slot) = self.by_lease.get(&id)?;
        self.by_feature.get(feature)?.get(slot)
    }

    /// The earliest wait that runs out.
    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Lease ids of requests whose wait has run out by `now`, earliest first.
    pub(crate) fn lapsed(&self, now: Millis) -> Vec<LeaseId> {
        self.deadlines
            .iter()
            .take_while(|&&(at, _)| at <= now)
            .map(|&(_, id)| id)
            .collect()
    }

    /// Features with a queue.
    pub(crate) fn features(&self) -> Vec<String> {
        self.by_feature.keys().cloned().collect()
    }

    /// A feature's waiting requests, in serving order.
    pub(crate) fn waiting_for(&self, feature: &str) -> Vec<QueuedRequest> {
        self.by_feature
            .get(feature)
            .map(|q| q.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every waiting request: features in name order, each in serving order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &QueuedRequest> {
        self.by_feature.values().flat_map(|q| q.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lease: u64, session: u64, feature: &str, client_ref: u64) -> QueuedRequest {
        QueuedRequest {
            lease_id: LeaseId(lease),
            session: SessionId(session),
            feature: feature.into(),
            version: String::new(),
            count: 1,
            client_ref,
            queued_at: 0,
            deadline: None,
            priority: None,
            seq: 0,
        }
    }

    /// The per-session index answers exactly what a scan of the whole queue would, as
    /// requests come and go.
    #[test]
    fn a_sessions_requests_are_found_without_scanning_the_queue() {
        let mut queue = Queue::default();
        let scan = |q: &Queue, session: u64| -> Vec<LeaseId> {
            let mut ids: Vec<_> = q
                .iter()
                .filter(|r| r.session == SessionId(session))
                .map(|r| r.lease_id)
                .collect();
            ids.sort();
            ids
        };
        for (lease, session, feature, client_ref) in [
            (1, 7, "cad", 11),
            (2, 8, "cad", 11),
            (3, 7, "sim", 12),
            (4, 7, "cad", 13),
            (5, 9, "sim", 11),
        ] {
            queue.push(request(lease, session, feature, client_ref));
        }
        assert_eq!(queue.of_session(SessionId(7)), scan(&queue, 7));
        assert_eq!(
            queue.find(SessionId(7), 12).map(|r| r.lease_id),
            Some(LeaseId(3))
        );
        assert_eq!(
            queue.find(SessionId(8), 11).map(|r| r.lease_id),
            Some(LeaseId(2))
        );
        assert!(
            queue.find(SessionId(8), 12).is_none(),
            "another session's ref"
        );

        queue.remove(LeaseId(3));
        assert!(
            queue.find(SessionId(7), 12).is_none(),
            "gone with its request"
        );
        assert_eq!(queue.of_session(SessionId(7)), scan(&queue, 7));
        for id in [1, 4] {
            queue.remove(LeaseId(id));
        }
        assert!(queue.of_session(SessionId(7)).is_empty());
        assert!(
            !queue.by_session.contains_key(&SessionId(7)),
            "no empty entries"
        );
        assert_eq!(queue.of_session(SessionId(9)), scan(&queue, 9));
    }
}
