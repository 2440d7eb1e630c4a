//! The `Client` class (a connection and its session), and `usher.checkout()`, which
//! makes a `License` that owns its client.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use usher::codes::{self as c, Failure};
use usher_client::{ClientConfig, QueueWait};

use crate::errors::{client_error, to_py};
use crate::license::License;
use crate::shared::{Shared, seconds};

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
pub(crate) struct Client {
    shared: std::sync::Arc<Shared>,
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
        Ok(License::granted(
            inner,
            std::sync::Arc::clone(&self.shared),
            owns_client,
        ))
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

/// `checkout(feature, version="", count=1, wait=0, *, servers=None, vendor_keys=())`:
/// connects (see `Client`), checks out (see `Client.checkout`) and returns the `License`,
/// which owns the connection: checking it in (or leaving its `with` block) ends the
/// session.
#[pyfunction]
#[pyo3(signature = (feature, version="", count=1, wait=Some(0.0), *, servers=None, vendor_keys=Vec::new()))]
pub(crate) fn checkout(
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
