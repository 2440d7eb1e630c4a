//! A blocking wrapper for applications without an async runtime.
//!
//! It runs the async client on a small private runtime whose single worker thread also
//! carries the heartbeats, so seats stay alive while the application does blocking work.
//! When the last [`Client`] clone and the last [`License`] are dropped, the session is
//! closed with a goodbye (bounded by the request timeout), so its seats come back at once.
//!
//! Do not use these types from inside an async runtime: blocking there stalls it. Use
//! [`crate::Client`] instead.

use std::sync::Arc;

use crate::{ClientConfig, ClientError, QueueWait, SessionInfo, StatusReport};

/// What every clone of a blocking client and each of its licenses share.
#[derive(Debug)]
struct Shared {
    client: Option<crate::Client>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Shared {
    fn client(&self) -> &crate::Client {
        self.client.as_ref().expect("present until drop")
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("present until drop")
            .block_on(f)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let (Some(client), Some(runtime)) = (self.client.take(), self.runtime.take()) {
            runtime.block_on(client.close());
            // Do not wait for background tasks beyond the goodbye.
            runtime.shutdown_background();
        }
    }
}

/// Blocking counterpart of [`crate::Client`]; clones share one session.
///
/// ```no_run
/// # fn demo() -> Result<(), usher_client::ClientError> {
/// let config = usher_client::ClientConfig::from_env()?;
/// let client = usher_client::blocking::Client::connect(config)?;
/// println!("connected to {}", client.session_info().server_name);
/// let license = client.checkout("cad").call()?;
/// println!("lease {}", license.get().lease_id());
/// if let Some(reason) = license.lost_reason() {
///     eprintln!("license lost: {reason}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// Blocking counterpart of [`crate::License`]; dropping it checks the seats in.
/// (Example on [`Client`].)
#[derive(Debug)]
pub struct License {
    // Declared first so it is dropped (and its checkin queued) before the shared client
    // can close the session.
    inner: crate::License,
    _shared: Arc<Shared>,
}

impl Client {
    /// Connects and opens a session (example on [`Client`]).
    pub fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("usher-client")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot start the client runtime: {e}")))?;
        let client = runtime.block_on(crate::Client::connect(config))?;
        let shared = Shared {
            client: Some(client),
            runtime: Some(runtime),
        };
        Ok(Client {
            shared: Arc::new(shared),
        })
    }

    /// See [`crate::Client::session_info`].
    pub fn session_info(&self) -> &SessionInfo {
        self.shared.client().session_info()
    }

    /// Starts a checkout of `feature`: options are set on the returned
    /// [`CheckoutRequest`] (as on [`crate::Client::checkout`]), and
    /// [`CheckoutRequest::call`] sends it and blocks for the seats. By default it asks
    /// for one seat of any version, refused at once if no seat is free.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), usher_client::ClientError> {
    /// let client = usher_client::blocking::Client::connect(usher_client::ClientConfig::from_env()?)?;
    /// let license = client.checkout("cad").version("2025").call()?;
    /// // ... the licensed work; heartbeats go on in the client's own thread ...
    /// drop(license); // checks the seat back in
    /// # Ok(()) }
    /// ```
    pub fn checkout(&self, feature: &str) -> CheckoutRequest<'_> {
        CheckoutRequest {
            client: self,
            feature: feature.to_string(),
            version: String::new(),
            count: 1,
            wait: QueueWait::No,
        }
    }

    /// Usage per feature (all features when `feature` is empty): [`crate::Client::status`].
    ///
    /// ```no_run
    /// # fn demo(client: &usher_client::blocking::Client) -> Result<(), usher_client::ClientError> {
    /// for pool in client.status("cad")?.features {
    ///     println!("{} {}: {} of {} in use", pool.feature, pool.version, pool.in_use, pool.total);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn status(&self, feature: &str) -> Result<StatusReport, ClientError> {
        self.shared.block_on(self.shared.client().status(feature))
    }
}

/// A blocking checkout being built: made by [`Client::checkout`], sent by
/// [`CheckoutRequest::call`], which blocks the calling thread until the seats are granted
/// or refused.
///
/// ```no_run
/// # fn demo(client: &usher_client::blocking::Client) -> Result<(), usher_client::ClientError> {
/// use std::time::Duration;
/// use usher_client::QueueWait;
///
/// let license = client
///     .checkout("cad")
///     .version("2025")
///     .count(2)
///     .wait(QueueWait::For(Duration::from_secs(300)))
///     .call()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a checkout does nothing until it is called"]
pub struct CheckoutRequest<'c> {
    client: &'c Client,
    feature: String,
    version: String,
    count: u32,
    wait: QueueWait,
}

impl CheckoutRequest<'_> {
    /// Asks for version `version` or newer (default: any version).
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_string();
        self
    }

    /// Asks for `count` seats (default 1). A count of 0 is refused without asking the
    /// server.
    pub fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// How long to wait in the server's queue if every seat is taken (default
    /// [`QueueWait::No`]: refused at once). The calling thread blocks for the wait.
    pub fn wait(mut self, wait: QueueWait) -> Self {
        self.wait = wait;
        self
    }

    /// Sends the checkout and blocks until the seats are granted (or refused).
    pub fn call(self) -> Result<License, ClientError> {
        let shared = &self.client.shared;
        let request = shared
            .client()
            .checkout(&self.feature)
            .version(&self.version)
            .count(self.count)
            .wait(self.wait);
        let inner = shared.block_on(request.send())?;
        Ok(License {
            inner,
            _shared: shared.clone(),
        })
    }
}

impl License {
    /// The async license inside, for its accessors.
    pub fn get(&self) -> &crate::License {
        &self.inner
    }

    /// Why the license was lost, if it was.
    pub fn lost_reason(&self) -> Option<crate::LossReason> {
        self.inner.lost_reason()
    }
}
