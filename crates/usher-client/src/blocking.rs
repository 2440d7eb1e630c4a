//! A blocking wrapper for applications without an async runtime.
//!
//! It runs the async client on a small private runtime whose single worker thread also
//! carries the heartbeats, so seats stay alive while the application does blocking work.

use std::sync::Arc;

use usher_proto::StatusReport;

use crate::{ClientConfig, ClientError, SessionInfo};

/// Blocking counterpart of [`crate::Client`].
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

/// Blocking counterpart of [`crate::License`]; dropping it checks the seats in.
#[derive(Debug)]
pub struct License {
    inner: crate::License,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Client {
    /// Connects and opens a session.
    pub fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("usher-client")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot start the client runtime: {e}")))?;
        let inner = runtime.block_on(crate::Client::connect(config))?;
        Ok(Client {
            inner,
            runtime: Arc::new(runtime),
        })
    }

    /// See [`crate::Client::session_info`].
    pub fn session_info(&self) -> &SessionInfo {
        self.inner.session_info()
    }

    /// See [`crate::Client::checkout`].
    pub fn checkout(
        &self,
        feature: &str,
        version: &str,
        count: u32,
    ) -> Result<License, ClientError> {
        let inner = self
            .runtime
            .block_on(self.inner.checkout(feature, version, count))?;
        Ok(License {
            inner,
            runtime: self.runtime.clone(),
        })
    }

    /// See [`crate::Client::status`].
    pub fn status(&self, feature: &str) -> Result<StatusReport, ClientError> {
        self.runtime.block_on(self.inner.status(feature))
    }

    /// See [`crate::Client::close`].
    pub fn close(self) {
        self.runtime.block_on(self.inner.close());
    }
}

impl License {
    /// The async license inside, for its accessors.
    pub fn get(&self) -> &crate::License {
        &self.inner
    }

    /// Why the license was lost, if it was.
    pub fn lost_reason(&self) -> Option<String> {
        self.inner.lost_reason()
    }

    /// Blocks until the license is lost, returning the reason.
    pub fn wait_lost(&self) -> String {
        self.runtime.block_on(self.inner.lost())
    }
}
