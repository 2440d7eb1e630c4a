//! Messages the server sends a session unasked: a lease taken away, a queued checkout
//! granted or given up.
//!
//! Each connection that carries a session registers itself here (its response queue, and
//! a token that closes it); a resumed session's new connection replaces the old one's
//! entry. When the ledger ends a session (it lapsed), its connection is closed through
//! [`Notices::end`]. The lock is only ever held for one map operation, never across I/O or
//! an await.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use usher_core::{Change, DequeueReason, Ledger, Millis, ReleaseReason, SessionId};
use usher_proto::{LossCause, Response, response};

use crate::commit::PendingReply;
use crate::requests::lease;

/// A response still being worked out (for example waiting for its batch to commit).
pub type PendingResponse = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// An answer for the connection's writer: a message to encode, or a frame already encoded
/// (a large status page, encoded on a background thread rather than on the runtime's
/// workers, see `crate::background`).
#[derive(Debug)]
// A message is the common case, on the hot path: boxing it would cost every answer an
// allocation to save the rare frame a few bytes.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    /// A message, encoded by the writer.
    Message(Response),
    /// A whole frame, length prefix included, within the frame limit.
    Frame(Vec<u8>),
}

impl From<Response> for Answer {
    fn from(response: Response) -> Answer {
        Answer::Message(response)
    }
}

/// What a lease reclaimed under the policy's `TIMEOUT` is lost for.
const IDLE_RECLAIMED: &str =
    "reclaimed: the application was idle for longer than the server's TIMEOUT for this feature";

/// The connection that carries a session.
#[derive(Debug, Clone)]
pub struct Carrier {
    /// Its response queue, which notices join.
    pub queue: mpsc::Sender<PendingResponse>,
    /// Cancelled when the session ends: the connection then closes.
    pub ended: CancellationToken,
}

/// The carrier of every connected session.
#[derive(Default)]
pub struct Notices {
    queues: Mutex<HashMap<SessionId, Carrier>>,
    /// Detached sessions (kept alive over UDP) are called back over TCP instead.
    detached: Option<std::sync::Arc<crate::keepalives::Keepalives>>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").finish_non_exhaustive()
    }
}

impl Notices {
    /// Notices that call detached sessions back through `keepalives`.
    pub fn with_keepalives(keepalives: std::sync::Arc<crate::keepalives::Keepalives>) -> Self {
        Notices {
            queues: Mutex::default(),
            detached: Some(keepalives),
        }
    }

    /// Makes `carrier` the connection that carries `session` and its notices.
    pub fn register(&self, session: SessionId, carrier: Carrier) {
        self.lock().insert(session, carrier);
    }

    /// Forgets `queue` as the carrier of `session`, unless another connection has taken
    /// over since. Returns whether it was still the carrier.
    pub fn unregister(&self, session: SessionId, queue: &mpsc::Sender<PendingResponse>) -> bool {
        let mut queues = self.lock();
        if queues
            .get(&session)
            .is_some_and(|c| c.queue.same_channel(queue))
        {
            queues.remove(&session);
            true
        } else {
            false
        }
    }

    /// Sends `kind` to the session's connection, if it has one. A full queue means the
    /// client is not reading; it learns what happened when it resumes (its leases are
    /// listed then, and a retried checkout returns its grant). A detached session is told
    /// to resume by its next keepalive acknowledgement.
    pub fn send(&self, session: SessionId, kind: response::Kind) {
        let queue = self.lock().get(&session).map(|c| c.queue.clone());
        if let Some(queue) = queue {
            let notice = Response {
                id: 0,
                kind: Some(kind),
            };
            let _ = queue.try_send(Box::pin(std::future::ready(notice.into())));
        } else if let Some(k) = &self.detached {
            k.call_back(session);
        }
    }

    /// Tells a session's connection, if it has one, that a lease was taken away: `cause`
    /// typed, `reason` for a human (and for clients older than the cause).
    pub fn lease_lost(&self, session: SessionId, lease_id: u64, cause: LossCause, reason: &str) {
        let notice = response::Kind::LeaseLost(usher_proto::LeaseLost {
            lease_id,
            reason: reason.to_string(),
            cause: cause as i32,
        });
        self.send(session, notice);
    }

    /// The notices a batch's `changes` call for, to send once it is durable, like replies: queued checkouts that
    /// left the queue and whose client waits to hear (granted, timed out, refused), and seats
    /// reclaimed from idle clients under the policy's `TIMEOUT`.
    pub fn of_changes(
        self: &Arc<Self>,
        ledger: &Ledger,
        now: Millis,
        changes: &[Change],
        out: &mut Vec<PendingReply>,
    ) {
        for change in changes {
            if let Change::LeaseReleased {
                lease,
                reason: ReleaseReason::IdleTimeout,
            } = change
            {
                let (notices, session, id) = (self.clone(), lease.session, lease.id.0);
                out.push(Box::new(move || {
                    notices.lease_lost(session, id, LossCause::IdleReclaimed, IDLE_RECLAIMED)
                }));
                continue;
            }
            let Change::Dequeued { request, reason } = change else {
                continue;
            };
            let expires_at_ms = match reason {
                DequeueReason::Granted(lease) => pool_expiry(ledger, lease, now),
                _ => 0,
            };
            if let Some(kind) = lease::dequeued(request, reason, expires_at_ms) {
                let (notices, session) = (self.clone(), request.session);
                out.push(Box::new(move || notices.send(session, kind)));
            }
        }
    }

    /// The session has ended: its connection, if it has one, is closed (after the answers
    /// already queued on it), so a client that keeps a connection busy without keeping its
    /// session alive does not keep the connection either. Its client hears that the
    /// session expired when it tries to resume.
    pub fn end(&self, session: SessionId) {
        if let Some(carrier) = self.lock().remove(&session) {
            carrier.ended.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Carrier>> {
        self.queues
            .lock()
            .expect("no panics while the lock is held")
    }
}

/// When the pool a lease's seats come from expires (0: never).
fn pool_expiry(ledger: &Ledger, lease: &usher_core::Lease, now: Millis) -> u64 {
    ledger
        .catalog()
        .pool(lease.pool_key())
        .and_then(|p| p.expires_at(now))
        .unwrap_or(0)
}
