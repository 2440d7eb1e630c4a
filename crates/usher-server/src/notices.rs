//! Messages the server sends a session unasked: a lease taken away, a queued checkout
//! granted or given up.
//!
//! Each connection that carries a session registers its response queue here; a resumed
//! session's new connection replaces the old one's entry. The lock is only ever held for
//! one map operation, never across I/O or an await.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use tokio::sync::mpsc;
use usher_core::SessionId;
use usher_proto::{Response, response};

/// A response still being worked out (for example waiting for its batch to commit).
pub type PendingResponse = Pin<Box<dyn Future<Output = Response> + Send>>;

/// The response queue of every connected session.
#[derive(Default)]
pub struct Notices {
    queues: Mutex<HashMap<SessionId, mpsc::Sender<PendingResponse>>>,
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

    /// Makes `queue` the one that carries notices for `session`.
    pub fn register(&self, session: SessionId, queue: mpsc::Sender<PendingResponse>) {
        self.lock().insert(session, queue);
    }

    /// Forgets `queue` as the carrier of `session`, unless another connection has taken
    /// over since. Returns whether it was still the carrier.
    pub fn unregister(&self, session: SessionId, queue: &mpsc::Sender<PendingResponse>) -> bool {
        let mut queues = self.lock();
        if queues.get(&session).is_some_and(|q| q.same_channel(queue)) {
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
        let queue = self.lock().get(&session).cloned();
        if let Some(queue) = queue {
            let notice = Response {
                id: 0,
                kind: Some(kind),
            };
            let _ = queue.try_send(Box::pin(std::future::ready(notice)));
        } else if let Some(k) = &self.detached {
            k.call_back(session);
        }
    }

    /// Tells a session's connection, if it has one, that a lease was taken away.
    pub fn lease_lost(&self, session: SessionId, lease_id: u64, reason: &str) {
        let notice = response::Kind::LeaseLost(usher_proto::LeaseLost {
            lease_id,
            reason: reason.to_string(),
        });
        self.send(session, notice);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, mpsc::Sender<PendingResponse>>> {
        self.queues
            .lock()
            .expect("no panics while the lock is held")
    }
}
