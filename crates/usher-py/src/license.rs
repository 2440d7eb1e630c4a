//! The `License` class: seats held, what the grant says, whether they were lost, and
//! their checkin (also as a context manager).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use usher::codes::{self as c, Failure};

use crate::errors::to_py;
use crate::shared::{Shared, seconds};

/// Seats held. `checkin()` (or the end of a `with` block) gives them back.
///
/// `lost` turns true if the seats are taken away while held (an administrator removed
/// them, or the session expired while the server was out of reach); `check()` then
/// raises `LicenseLost`. Heartbeats and reconnects happen in the background.
#[pyclass(frozen, module = "usher")]
pub(crate) struct License {
    lease_id: u64,
    feature: String,
    version: String,
    vendor: String,
    count: u32,
    expires: Option<f64>,
    overdraft: bool,
    statement: Option<String>,
    loss: usher_client::LossWatch,
    /// `None` once checked in.
    inner: Mutex<Option<usher_client::License>>,
    shared: std::sync::Arc<Shared>,
    /// Made by `usher.checkout()`: its client ends with it.
    owns_client: bool,
}

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl License {
    /// The Python object for seats just granted.
    pub(crate) fn granted(
        inner: usher_client::License,
        shared: std::sync::Arc<Shared>,
        owns_client: bool,
    ) -> License {
        License {
            lease_id: inner.lease_id(),
            feature: inner.feature().to_owned(),
            version: inner.version().to_owned(),
            vendor: inner.vendor().to_owned(),
            count: inner.count(),
            expires: inner.expires().map(epoch_seconds),
            overdraft: inner.overdraft(),
            statement: inner.statement().map(str::to_owned),
            loss: inner.loss_watch(),
            inner: Mutex::new(Some(inner)),
            shared,
            owns_client,
        }
    }

    fn checked_in(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    fn lost_reason_now(&self) -> Option<String> {
        self.loss.reason().map(|reason| reason.to_string())
    }
}

#[pymethods]
impl License {
    /// The lease handle, as administrators see it (`usher status`, `usher remove`).
    #[getter]
    fn lease_id(&self) -> u64 {
        self.lease_id
    }

    /// The feature.
    #[getter]
    fn feature(&self) -> &str {
        &self.feature
    }

    /// The version of the pool the seats came from.
    #[getter]
    fn version(&self) -> &str {
        &self.version
    }

    /// The vendor.
    #[getter]
    fn vendor(&self) -> &str {
        &self.vendor
    }

    /// Seats held.
    #[getter]
    fn count(&self) -> u32 {
        self.count
    }

    /// When the entitlement behind the seats expires, in seconds since the epoch
    /// (`None`: permanent).
    #[getter]
    fn expires(&self) -> Option<f64> {
        self.expires
    }

    /// Whether the seats were granted beyond the licensed count (`OVERDRAFT=`).
    #[getter]
    fn overdraft(&self) -> bool {
        self.overdraft
    }

    /// The grant's statement signed by the server, as text, when the client had vendor
    /// keys and it verified against them; `None` otherwise.
    #[getter]
    fn statement(&self) -> Option<&str> {
        self.statement.as_deref()
    }

    /// Whether the seats were lost while held.
    #[getter]
    fn lost(&self) -> bool {
        self.lost_reason_now().is_some()
    }

    /// Why the seats were lost, or `None`.
    #[getter]
    fn lost_reason(&self) -> Option<String> {
        self.lost_reason_now()
    }

    /// `"granted"`, `"lost"` or `"checked_in"`. Never waits.
    #[getter]
    fn status(&self) -> &'static str {
        if self.checked_in() {
            "checked_in"
        } else if self.lost_reason_now().is_some() {
            "lost"
        } else {
            "granted"
        }
    }

    /// Raises `LicenseLost` if the seats were lost, `ClientClosed` if checked in.
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(reason) = self.lost_reason_now() {
            let detail = format!("the license for {:?} was lost: {reason}", self.feature);
            return Err(to_py(py, Failure::new(c::USHER_E_LICENSE_LOST, detail)));
        }
        if self.checked_in() {
            return Err(to_py(
                py,
                Failure::new(c::USHER_E_CLOSED, "the license is checked in"),
            ));
        }
        Ok(())
    }

    /// `wait_lost(timeout=None)`: waits (without the GIL; Ctrl-C interrupts) until the
    /// seats are lost and returns the reason, or returns `None` after `timeout` seconds
    /// (`None`: no limit) or once the license is checked in.
    #[pyo3(signature = (timeout=None))]
    fn wait_lost(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<String>> {
        let limit = timeout.map(|t| seconds(py, "timeout", t)).transpose()?;
        let loss = self.loss.clone();
        self.shared.wait(py, async move {
            // `None`: checked in, so it can no longer be lost.
            let lost = async { loss.lost().await.map(|reason| reason.to_string()) };
            Ok(match limit {
                Some(limit) => tokio::time::timeout(limit, lost).await.ok().flatten(),
                None => lost.await,
            })
        })
    }

    /// Gives the seats back and waits until the server has them (bounded by the request
    /// timeout). Idempotent. A license from `usher.checkout()` also ends its session.
    fn checkin(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(inner) = inner else {
            return Ok(());
        };
        drop(inner); // queues the checkin
        if self.owns_client {
            self.shared.close(py);
            return Ok(());
        }
        // A heartbeat's answer comes after the checkin queued before it has reached the
        // server. A closed client has released the seats already.
        if let Ok(client) = self.shared.client(py) {
            self.shared
                .wait(py, async move { client.heartbeat().await })?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.checkin(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<usher.License {} v{} x{} lease {} {}>",
            self.feature,
            self.version,
            self.count,
            self.lease_id,
            self.status()
        )
    }
}
