//! The `usher` Python package: check out license seats from Python.
//!
//! ```python
//! import usher
//!
//! with usher.checkout("cad", "2025", count=1, wait=300) as lic:
//!     ...  # the licensed work; `lic.lost` turns true if the seat is taken away
//! ```
//!
//! Built on the Rust client (`usher-client`) directly. Each [`Client`] runs the async
//! client on a private one-worker runtime, whose thread also sends the heartbeats, so
//! seats stay alive while Python does anything at all.
//!
//! **Architecture Invariant:** no network wait holds the GIL. Every call that waits on the
//! server releases it ([`Python::detach`]) in slices of at most [`SLICE`], checking for
//! signals between slices, so other Python threads run and Ctrl-C interrupts a waiting
//! checkout (which is then withdrawn from the server's queue).
//!
//! Errors are exceptions under `usher.UsherError` whose `code` is the C ABI's status code
//! for the same failure (one mapping: `usher-capi`'s `codes`).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use usher::codes::{self as c, Failure};
use usher_client::{ClientConfig, ClientError, QueueWait};

/// The longest stretch a waiting call stays in Rust before it checks for signals.
const SLICE: Duration = Duration::from_millis(100);

/// How long a client dropped without `close()` waits for the server to confirm its goodbye.
const DROP_GOODBYE: Duration = Duration::from_secs(2);

pyo3::create_exception!(
    usher,
    UsherError,
    PyException,
    "Base of every usher error. `code` is the C ABI's status code (a negative int), `detail` one line for a human, `retryable` whether trying again later may succeed."
);
pyo3::create_exception!(
    usher,
    InvalidArgument,
    UsherError,
    "A bad argument, server list or vendor key."
);
pyo3::create_exception!(
    usher,
    ServerUnreachable,
    UsherError,
    "No license server could be reached, or it did not answer in time."
);
pyo3::create_exception!(
    usher,
    ServerError,
    UsherError,
    "The license server answered with an error, or with something this client cannot read."
);
pyo3::create_exception!(
    usher,
    ClientClosed,
    UsherError,
    "The client (or the license) has been closed."
);
pyo3::create_exception!(
    usher,
    GrantUntrusted,
    UsherError,
    "The grant did not verify against the vendor keys (an emulator, or tampering); no seat is held."
);
pyo3::create_exception!(
    usher,
    LicenseUnavailable,
    UsherError,
    "The checkout was refused: see the subclasses, `code` and `detail`."
);
pyo3::create_exception!(
    usher,
    NoSuchFeature,
    LicenseUnavailable,
    "No license names the feature (or none at the version asked for)."
);
pyo3::create_exception!(
    usher,
    LicenseExpired,
    LicenseUnavailable,
    "The licenses for the feature have expired, or have not started yet."
);
pyo3::create_exception!(
    usher,
    AllInUse,
    LicenseUnavailable,
    "Every seat is in use (or others are queued ahead), and the checkout did not wait."
);
pyo3::create_exception!(
    usher,
    WaitTimedOut,
    LicenseUnavailable,
    "The checkout waited in the queue for as long as it allowed."
);
pyo3::create_exception!(
    usher,
    PolicyDenied,
    LicenseUnavailable,
    "The server's policy refused the checkout (excluded, a maximum reached, seats reserved, not a named user)."
);
pyo3::create_exception!(
    usher,
    LicenseLost,
    UsherError,
    "The license was lost: an administrator removed it, or the session expired."
);

/// The exception for a failure, carrying its code, detail and retryability.
fn to_py(py: Python<'_>, failure: Failure) -> PyErr {
    let detail = failure.detail.clone();
    let err = match failure.code {
        c::USHER_E_INVALID_ARGUMENT
        | c::USHER_E_INVALID_OPTION
        | c::USHER_E_BAD_SERVER_LIST
        | c::USHER_E_BAD_VENDOR_KEY => InvalidArgument::new_err(detail),
        c::USHER_E_UNREACHABLE | c::USHER_E_TIMEOUT | c::USHER_E_SERVER_SHUTTING_DOWN => {
            ServerUnreachable::new_err(detail)
        }
        c::USHER_E_PROTOCOL | c::USHER_E_SERVER => ServerError::new_err(detail),
        c::USHER_E_CLOSED => ClientClosed::new_err(detail),
        c::USHER_E_UNTRUSTED => GrantUntrusted::new_err(detail),
        c::USHER_E_NO_SUCH_FEATURE | c::USHER_E_VERSION_TOO_NEW => NoSuchFeature::new_err(detail),
        c::USHER_E_EXPIRED | c::USHER_E_NOT_YET_STARTED => LicenseExpired::new_err(detail),
        c::USHER_E_ALL_IN_USE | c::USHER_E_QUEUED_AHEAD => AllInUse::new_err(detail),
        c::USHER_E_WAIT_TIMED_OUT => WaitTimedOut::new_err(detail),
        c::USHER_E_EXCLUDED
        | c::USHER_E_MAX_REACHED
        | c::USHER_E_RESERVED
        | c::USHER_E_NOT_NAMED_USER
        | c::USHER_E_MORE_THAN_ALLOWED => PolicyDenied::new_err(detail),
        c::USHER_E_LICENSE_LOST => LicenseLost::new_err(detail),
        code if (c::USHER_E_BOUND_TO_OTHER_HOST..=c::USHER_E_NO_SUCH_FEATURE).contains(&code) => {
            LicenseUnavailable::new_err(detail)
        }
        _ => UsherError::new_err(detail),
    };
    let value = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of memory
    // exhaustion, when the exception without them is still the right answer.
    let _ = value.setattr("code", failure.code);
    let _ = value.setattr("detail", &failure.detail);
    let _ = value.setattr("retryable", c::retryable(failure.code));
    err
}

fn client_error(py: Python<'_>, e: ClientError) -> PyErr {
    to_py(py, Failure::from(e))
}

/// The runtime and the async client every clone of a [`Client`] and each of its
/// licenses share.
struct Shared {
    runtime: Option<tokio::runtime::Runtime>,
    /// `None` once closed.
    client: Mutex<Option<usher_client::Client>>,
}

impl Shared {
    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("present until drop")
    }

    /// The async client, or `ClientClosed`.
    fn client(&self, py: Python<'_>) -> PyResult<usher_client::Client> {
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
    fn wait<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
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
    fn close(&self, py: Python<'_>) {
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

/// A connection (with its session) to a license server.
///
/// `Client(servers=None, *, vendor_keys=(), connect_timeout=3.0, request_timeout=30.0)`
/// connects at once. `servers` is a server list as `USHER_LICENSE` takes it
/// (`port@host,port@host`); `None` reads `USHER_LICENSE`, else finds servers by discovery.
/// `vendor_keys` are paths of vendor public key files: with any, every grant must carry a
/// statement signed under a genuine license of that vendor (`License.statement`), or the
/// checkout fails with `GrantUntrusted`.
///
/// The session ends (and every seat it holds is released) at `close()`, at the end of a
/// `with` block, or when the client and all its licenses are garbage.
#[pyclass(frozen, module = "usher")]
struct Client {
    shared: std::sync::Arc<Shared>,
}

/// Seconds (a Python float) as a duration; refuses negative, NaN and infinite values.
fn seconds(py: Python<'_>, what: &str, secs: f64) -> PyResult<Duration> {
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

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Client {
    fn checkout_license(
        &self,
        py: Python<'_>,
        feature: &str,
        version: &str,
        count: u32,
        wait: Option<f64>,
        owns_client: bool,
    ) -> PyResult<License> {
        let wait = match wait {
            None => QueueWait::Indefinitely,
            Some(0.0) => QueueWait::No,
            Some(w) => QueueWait::For(seconds(py, "wait", w)?),
        };
        let client = self.shared.client(py)?;
        let (feature, version) = (feature.to_owned(), version.to_owned());
        let inner = self.shared.wait(py, async move {
            client
                .checkout(&feature)
                .version(&version)
                .count(count)
                .wait(wait)
                .await
        })?;
        Ok(License {
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
            shared: std::sync::Arc::clone(&self.shared),
            owns_client,
        })
    }
}

/// The running script's name, for administrators (`usher status` shows the program).
fn program_name(py: Python<'_>) -> String {
    let argv0 = py
        .import("sys")
        .and_then(|sys| sys.getattr("argv"))
        .and_then(|argv| argv.get_item(0))
        .and_then(|a| a.extract::<String>());
    match argv0 {
        Ok(path) if !path.is_empty() => std::path::Path::new(&path)
            .file_name()
            .map_or(path.clone(), |n| n.to_string_lossy().into_owned()),
        _ => "python".to_owned(),
    }
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (servers=None, *, vendor_keys=Vec::new(), connect_timeout=3.0, request_timeout=30.0))]
    fn new(
        py: Python<'_>,
        servers: Option<&str>,
        vendor_keys: Vec<std::path::PathBuf>,
        connect_timeout: f64,
        request_timeout: f64,
    ) -> PyResult<Client> {
        let invalid = |code: i32, detail: String| to_py(py, Failure::new(code, detail));
        let mut config = match servers {
            None => ClientConfig::from_env().map_err(|e| client_error(py, e.into()))?,
            Some(list) => {
                let servers =
                    usher_client::parse_servers(list).map_err(|e| client_error(py, e.into()))?;
                let mut config = ClientConfig::new(servers);
                config.transport_from_env();
                config
            }
        };
        config.connect_timeout = seconds(py, "connect_timeout", connect_timeout)?;
        config.request_timeout = seconds(py, "request_timeout", request_timeout)?;
        for path in vendor_keys {
            let key = usher_license::VendorPublicKey::read_from(&path).map_err(|e| {
                invalid(
                    c::USHER_E_BAD_VENDOR_KEY,
                    format!("{}: {e}", path.display()),
                )
            })?;
            config.vendor_keys.push(key);
        }
        config.identity.program = program_name(py);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("usher-client")
            .enable_all()
            .build()
            .map_err(|e| {
                invalid(
                    c::USHER_E_INTERNAL,
                    format!("cannot start the usher client runtime: {e}"),
                )
            })?;
        let shared = Shared {
            runtime: Some(runtime),
            client: Mutex::new(None),
        };
        let client = shared.wait(py, usher_client::Client::connect(config))?;
        *shared.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
        Ok(Client {
            shared: std::sync::Arc::new(shared),
        })
    }

    /// `checkout(feature, version="", count=1, wait=0)`: checks out `count` seats of
    /// `feature` at `version` or newer (empty: any) and returns a `License`.
    ///
    /// `wait`: if every seat is taken, 0 (the default) fails at once with `AllInUse`; a
    /// number of seconds waits in the server's queue that long, then fails with
    /// `WaitTimedOut`; `None` waits as long as it takes. The GIL is released while
    /// waiting, and Ctrl-C (`KeyboardInterrupt`) withdraws the request.
    #[pyo3(signature = (feature, version="", count=1, wait=Some(0.0)))]
    fn checkout(
        &self,
        py: Python<'_>,
        feature: &str,
        version: &str,
        count: u32,
        wait: Option<f64>,
    ) -> PyResult<License> {
        self.checkout_license(py, feature, version, count, wait, false)
    }

    /// `status(feature="")`: usage per pool of `feature` (every feature when empty), as
    /// much as the server shows to anyone: a list of dicts with `feature`, `vendor`,
    /// `version`, `total`, `in_use` and `expires` (seconds since the epoch, `None`:
    /// permanent).
    #[pyo3(signature = (feature=""))]
    fn status<'py>(&self, py: Python<'py>, feature: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let client = self.shared.client(py)?;
        let feature = feature.to_owned();
        let report = self
            .shared
            .wait(py, async move { client.status(&feature).await })?;
        report
            .features
            .iter()
            .map(|f| {
                let d = PyDict::new(py);
                d.set_item("feature", &f.feature)?;
                d.set_item("vendor", &f.vendor)?;
                d.set_item("version", &f.version)?;
                d.set_item("total", f.total)?;
                d.set_item("in_use", f.in_use)?;
                let expires = (f.expires_at_ms != 0).then(|| f.expires_at_ms as f64 / 1000.0);
                d.set_item("expires", expires)?;
                Ok(d)
            })
            .collect()
    }

    /// The server that answered, as `host:port`.
    #[getter]
    fn server(&self, py: Python<'_>) -> PyResult<String> {
        let client = self.shared.client(py)?;
        let info = client.session_info();
        Ok(format!("{}:{}", info.server.host, info.server.port))
    }

    /// The server's software version.
    #[getter]
    fn server_version(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self
            .shared
            .client(py)?
            .session_info()
            .server_version
            .clone())
    }

    /// Ends the session, releasing every seat it holds (its licenses become checked in).
    /// Idempotent.
    fn close(&self, py: Python<'_>) {
        self.shared.close(py);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.shared.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.shared.client(py) {
            Ok(c) => {
                let info = c.session_info();
                format!("<usher.Client {}:{}>", info.server.host, info.server.port)
            }
            Err(_) => "<usher.Client closed>".to_owned(),
        }
    }
}

/// Seats held. `checkin()` (or the end of a `with` block) gives them back.
///
/// `lost` turns true if the seats are taken away while held (an administrator removed
/// them, or the session expired while the server was out of reach); `check()` then
/// raises `LicenseLost`. Heartbeats and reconnects happen in the background.
#[pyclass(frozen, module = "usher")]
struct License {
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

impl License {
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

/// `checkout(feature, version="", count=1, wait=0, *, servers=None, vendor_keys=())`:
/// connects (see `Client`), checks out (see `Client.checkout`) and returns the `License`,
/// which owns the connection: checking it in (or leaving its `with` block) ends the
/// session.
#[pyfunction]
#[pyo3(signature = (feature, version="", count=1, wait=Some(0.0), *, servers=None, vendor_keys=Vec::new()))]
fn checkout(
    py: Python<'_>,
    feature: &str,
    version: &str,
    count: u32,
    wait: Option<f64>,
    servers: Option<&str>,
    vendor_keys: Vec<std::path::PathBuf>,
) -> PyResult<License> {
    let client = Client::new(py, servers, vendor_keys, 3.0, 30.0)?;
    let license = client.checkout_license(py, feature, version, count, wait, true);
    if license.is_err() {
        client.shared.close(py);
    }
    license
}

/// Check out license seats from an usher license server.
#[pymodule]
#[pyo3(name = "usher")]
fn usher_py(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add_class::<License>()?;
    m.add_function(wrap_pyfunction!(checkout, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    macro_rules! add_exceptions {
        ($($name:ident),*) => { $( m.add(stringify!($name), py.get_type::<$name>())?; )* };
    }
    add_exceptions!(
        UsherError,
        InvalidArgument,
        ServerUnreachable,
        ServerError,
        ClientClosed,
        GrantUntrusted,
        LicenseUnavailable,
        NoSuchFeature,
        LicenseExpired,
        AllInUse,
        WaitTimedOut,
        PolicyDenied,
        LicenseLost
    );
    Ok(())
}
