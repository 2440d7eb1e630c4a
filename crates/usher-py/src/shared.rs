//! What a `Client` and its licenses share: the runtime and the async client, waiting on
//! it without the GIL, and the end of the session.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use usher::codes::{self as c, Failure};
use usher_client::ClientError;

use crate::errors::{client_error, to_py};

/// The longest stretch a waiting call stays in Rust before it checks for signals.
const SLICE: Duration = Duration::from_millis(100);

/// How long a client dropped without `close()` waits for the server to confirm its goodbye.
const DROP_GOODBYE: Duration = Duration::from_secs(2);

/// The runtime and the async client every clone of a [`Client`] and each of its
/// licenses share.
pub(crate) struct Shared {
    pub(crate) runtime: Option<tokio::runtime::Runtime>,
    /// `None` once closed.
    pub(crate) client: Mutex<Option<usher_client::Client>>,
}

impl Shared {
    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("present until drop")
    }

    /// The async client, or `ClientClosed`.
    pub(crate) fn client(&self, py: Python<'_>) -> PyResult<usher_client::Client> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                to_py(
                    py,
                    Failure::new(c::USHER_E_CLOSED, "the usher client is closed"),
                )
            })
    }

    /// Runs `work` on the runtime and waits for it without the GIL, in slices of at most
    /// [`SLICE`], checking for signals between them. A signal handler's exception
    /// (`KeyboardInterrupt` for Ctrl-C) drops the work, so a queued checkout is withdrawn.
    pub(crate) fn wait<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ClientError>> + Send + 'static,
    {
        let runtime = self.runtime();
        let mut task = runtime.spawn(work);
        loop {
            let done = py.detach(|| {
                runtime.block_on(async { tokio::time::timeout(SLICE, &mut task).await.ok() })
            });
            match done {
                Some(Ok(result)) => return result.map_err(|e| client_error(py, e)),
                Some(Err(join)) => {
                    return Err(to_py(
                        py,
                        Failure::new(
                            c::USHER_E_INTERNAL,
                            format!("the usher client task failed: {join}"),
                        ),
                    ));
                }
                None => {
                    if let Err(interrupted) = py.check_signals() {
                        task.abort();
                        return Err(interrupted);
                    }
                }
            }
        }
    }

    /// Ends the session (releasing every seat it holds), waiting for the server's answer
    /// without the GIL (bounded by the request timeout). Idempotent.
    pub(crate) fn close(&self, py: Python<'_>) {
        let client = self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(client) = client {
            let runtime = self.runtime();
            py.detach(|| runtime.block_on(client.close()));
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(runtime) = self.runtime.take() {
            if let Some(client) = client {
                // Garbage collection may run this with the GIL held, so the goodbye gets a
                // short bound; a session not closed here ends at the server's TTL.
                runtime.block_on(async {
                    let _ = tokio::time::timeout(DROP_GOODBYE, client.close()).await;
                });
            }
            // Do not wait for background tasks beyond the goodbye.
            runtime.shutdown_background();
        }
    }
}

/// Seconds (a Python float) as a duration; refuses negative, NaN and infinite values.
pub(crate) fn seconds(py: Python<'_>, what: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        to_py(
            py,
            Failure::new(
                c::USHER_E_INVALID_ARGUMENT,
                format!("{what} must be a finite number of seconds >= 0, not {secs}"),
            ),
        )
    })
}
