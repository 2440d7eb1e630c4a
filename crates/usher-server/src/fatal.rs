//! Failing loudly: a part of the server that cannot go on (the ledger task, the store
//! committer, the UDP task) reports why here, and the server stops with that reason.
//!
//! `run` then returns [`crate::ServerError::Failed`] and `usherd` exits non-zero with the
//! reason logged, so a supervisor restarts it and the store recovers on the next start.
//! Without this, a panicked ledger task would leave the listener up and every client
//! told "the server is shutting down" forever.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::error;

/// Shared by every part of a running server; the first failure reported wins.
#[derive(Debug, Clone, Default)]
pub struct Fatal {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Fatal {
    /// Records and logs `reason` at error (unless a failure is already recorded: what
    /// follows from the first is noise) and stops the server.
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let mut first = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            error!("fatal: {reason}; the server stops");
            *first = Some(reason);
        }
        drop(first);
        self.token.cancel();
    }

    /// Whether a failure has been reported.
    pub fn is_failed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The first failure reported, if any.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Cancelled once a failure is reported (for `select!` and for the health check).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs `task` in its own tokio task and reports it as failed if it panics. The
    /// returned handle completes when `task` does.
    pub fn watch<F>(&self, what: &'static str, task: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let inner = tokio::spawn(task);
        let fatal = self.clone();
        tokio::spawn(async move {
            match inner.await {
                Ok(()) => {}
                Err(e) if e.is_panic() => {
                    fatal.fail(format!(
                        "the {what} panicked: {}",
                        panic_text(&e.into_panic())
                    ));
                }
                // Cancelled: the runtime is shutting down under us.
                Err(_) => {}
            }
        })
    }
}

/// The message of a panic payload (a `&str` or `String` for `panic!` with a message).
pub fn panic_text(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}
