//! Serving and shutting down: [`Server`] starts every part of the server around the accept
//! loop (`accept`), after binding (`bind`), and stops them in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use usher_core::Ledger;
use usher_store::{SqliteStore, UsageEvent};

use crate::admin::{Admin, ReloadInputs};
use crate::clock::wall_clock_ms;
use crate::config::{Config, ConfigError};
use crate::keepalives::Keepalives;
use crate::ledger_task::{LedgerService, Outlets, ServerInfo};
use crate::licenses::{LoadError, LoadedLicenses};
use crate::metrics::Metrics;
use crate::notices::Notices;
use crate::shared::Shared;

mod accept;
mod bind;
mod door;

pub use bind::PSEUDONYM_KEY_FILE;

/// Depth of the channel into the ledger task. Connections wait (and so push back on their
/// clients) when it is full.
const LEDGER_QUEUE: usize = 16 * 1024;

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The licenses could not be loaded.
    #[error(transparent)]
    Licenses(#[from] LoadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] usher_store::StoreError),
    /// A socket or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The data directory is not fit to use (another user could change it).
    #[error(transparent)]
    DataDir(#[from] crate::data_dir::DataDirError),
    /// Another server is using the data directory.
    #[error("another usherd is already using the data directory {}", .0.display())]
    DataDirInUse(std::path::PathBuf),
    /// A part of the server failed while serving (the store, the ledger task, the store
    /// committer or the UDP task); the server stopped so that a supervisor restarts it.
    #[error("usherd stopped: {0}")]
    Failed(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// A bound, ready-to-run server.
pub struct Server {
    config: Config,
    listener: TcpListener,
    /// The UDP socket beside the listener (keepalives, discovery), if it could be bound.
    udp: Option<tokio::net::UdpSocket>,
    ledger: Ledger,
    first_lease_id: u64,
    store: SqliteStore,
    licenses: LoadedLicenses,
    /// The administration socket (see [`Config::admin_socket`]).
    admin: tokio::net::UnixListener,
    /// The admin HTTP listener, unless disabled (see [`Config::admin_listen`]).
    admin_http: Option<TcpListener>,
    /// The bearer token the admin HTTP API accepts (`DATA_DIR/admin/token`).
    admin_token: String,
    /// This server's identity key (its `USHER_ID=` host id, the key that signs borrow
    /// tokens).
    identity: Arc<crate::identity::Identity>,
    /// Held for the server's lifetime: one server per data directory.
    _lock: std::fs::File,
    /// Each signal received reloads, as `usher reload` does (see [`Server::reload_on`]).
    reload_signal: Option<tokio::signal::unix::Signal>,
}

impl Server {
    /// Reloads licenses, keys and policy each time `signal` is received, through the same
    /// code as `usher reload` (`usherd` passes SIGHUP, installed before it starts so that
    /// a SIGHUP during start-up is not fatal).
    pub fn reload_on(mut self, signal: tokio::signal::unix::Signal) -> Server {
        self.reload_signal = Some(signal);
        self
    }

    /// The admin HTTP address actually bound, if the listener is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bearer token of the admin HTTP API.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has a local address")
    }

    /// The UDP address actually bound (the listener's port), if UDP is available.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then stops accepting, lets connections finish
    /// the requests they have in flight, and closes the store cleanly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            config,
            listener,
            udp,
            ledger,
            first_lease_id,
            mut store,
            licenses,
            admin,
            admin_http,
            admin_token,
            identity,
            _lock,
            reload_signal,
        } = self;
        let server_host_id = identity.host_id();
        let metrics = Arc::new(Metrics::new());
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        let detail = format!("listening on {addr}");
        // Not before the newest durable write, like every time the ledger stamps.
        let now = wall_clock_ms()
            .max(store.newest_record_at()?)
            .max(crate::ledger_task::newest_grant(&ledger));
        store.log_event(now, UsageEvent::ServerStart, Some(&detail))?;
        store.commit_batch(
            now,
            &[],
            &crate::ledger_task::seat_events(ledger.catalog(), now),
        )?;
        let info = ServerInfo {
            server_name: hostname(),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            port: addr.port(),
            started_at_ms: wall_clock_ms(),
            license_files: licenses
                .files
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            vendors: licenses.vendors.clone(),
        };
        let fatal = crate::fatal::Fatal::default();
        let failed = fatal.token();
        let down = CancellationToken::new();
        let keepalives = Arc::new(Keepalives::default());
        let notices = Arc::new(Notices::with_keepalives(keepalives.clone()));
        let service = LedgerService::start(
            ledger,
            first_lease_id,
            store,
            info.clone(),
            LEDGER_QUEUE,
            Outlets {
                notices: notices.clone(),
                metrics: metrics.clone(),
                failed: fatal.clone(),
            },
        )
        .map_err(io("starting the store thread"))?;
        let actions = Admin {
            ledger: service.handle.clone(),
            notices: notices.clone(),
            down: down.clone(),
            reload: ReloadInputs {
                license_files: config.license_files.clone(),
                vendor_keys: config.vendor_keys.clone(),
                policy_file: config.policy_file.clone(),
                min_timeout: config.min_timeout,
                server_host_id,
            },
        };
        let ctx = Arc::new(Shared {
            ledger: service.handle.clone(),
            admin: actions,
            heartbeat_interval: config.heartbeat_interval,
            session_ttl: config.session_ttl,
            handshake_timeout: config.handshake_timeout,
            send_timeout: config.send_timeout,
            server_name: info.server_name.clone(),
            status_detail: config.status_detail,
            admin_auth: Arc::new(crate::auth::AdminAuth::new(&admin_token, metrics.clone())),
            admin_from: config.admin_from.clone(),
            identity,
            metrics: metrics.clone(),
            max_request_rate: config.max_request_rate,
            notices,
            keepalives: keepalives.clone(),
            udp_port: udp
                .as_ref()
                .and_then(|s| s.local_addr().ok())
                .map(|a| a.port()),
            max_frame_bytes: config.max_frame_bytes,
            max_in_flight: config.max_requests_in_flight,
            status_views: Default::default(),
        });
        let udp_stop = CancellationToken::new();
        let udp_task = udp.map(|socket| {
            let ctx = Arc::new(crate::udp::UdpContext {
                keepalives,
                ledger: service.handle.clone(),
                metrics: metrics.clone(),
                allow: config.allow.clone(),
                discovery: config.discovery.then(|| crate::udp::Discovery {
                    tcp_port: addr.port(),
                    tls: !config.insecure_plaintext,
                    vendors: licenses.vendors.clone(),
                }),
                session_ttl: config.session_ttl,
            });
            fatal.watch("UDP task", crate::udp::serve(socket, ctx, udp_stop.clone()))
        });
        let http_stop = CancellationToken::new();
        let http = admin_http.map(|listener| {
            let http_addr = listener.local_addr().ok();
            let state = crate::http::ApiState::new(
                ctx.clone(),
                metrics.clone(),
                config.store_path(),
                failed.clone(),
            );
            let app = crate::http::router(state);
            if let Some(a) = http_addr {
                // Never the token itself: logs are read by more people (the `adm` group,
                // log shippers) than may administer the server.
                info!(
                    addr = %a,
                    token_file = %config.admin_token().display(),
                    "admin HTTP API and dashboard listening: open http://{a}/#token=TOKEN \
                     with the token from the token file"
                );
            }
            tokio::spawn(crate::http::serve(
                listener,
                app,
                crate::http::AllowedHosts::new(&config.admin_hosts),
                http_stop.clone(),
            ))
        });
        drop(admin_token);
        info!(%addr, admin = %config.admin_socket().display(), "serving");

        let stop = CancellationToken::new();
        if config.log_retention_days > 0 {
            // Retention runs daily after the pass at start; the task ends with the ledger.
            let (handle, config) = (service.handle.clone(), config.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let day = std::time::Duration::from_secs(86_400);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(day) => {}
                        _ = stop.cancelled() => return,
                    }
                    let Some(before) = retention_cutoff(&config, wall_clock_ms()) else {
                        return;
                    };
                    if handle.prune(before).await.is_err() {
                        return;
                    }
                }
            });
        }
        let tls = crate::tls::acceptor(&ctx.identity)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .map_err(io("setting up TLS with the identity key"))?;
        if config.insecure_plaintext {
            warn!(
                "insecure_plaintext is on: clients may connect without TLS, and their \
                 traffic can then be read and changed on the network; turn it off unless \
                 every client is on a trusted network"
            );
        }
        let mut connections = tokio::task::JoinSet::new();
        let watchdog = crate::systemd::watchdog_interval().map(|interval| {
            tokio::spawn(crate::systemd::feed_watchdog(
                service.handle.clone(),
                interval,
                stop.clone(),
            ))
        });
        let mut door = door::Door::open(listener, &config, metrics.clone(), tls.clone())
            .map_err(io("starting the thread that takes new connections"))?;
        crate::systemd::ready(addr);
        accept::accept_loop(
            accept::Accepting {
                config: &config,
                ctx: &ctx,
                door: &mut door,
                admin: &admin,
                tls: &tls,
                stop: &stop,
                fatal: &fatal,
                down: &down,
            },
            shutdown,
            reload_signal,
            &mut connections,
        )
        .await;
        drop(admin);
        let _ = std::fs::remove_file(config.admin_socket());

        info!("shutting down: no new connections; finishing requests in flight");
        crate::systemd::stopping();
        door.close().await;
        stop.cancel();
        if let Some(task) = watchdog {
            let _ = task.await;
        }
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(config.shutdown_timeout, drain)
            .await
            .is_err()
        {
            warn!(
                "some connections did not finish within {:?}; closing them (raise \
                 shutdown_timeout to give them longer)",
                config.shutdown_timeout
            );
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        }
        // The UDP task and the HTTP listener hold handles to the ledger too: stop them
        // before the ledger.
        udp_stop.cancel();
        if let Some(task) = udp_task {
            let _ = task.await;
        }
        http_stop.cancel();
        if let Some(mut task) = http
            && tokio::time::timeout(config.shutdown_timeout, &mut task)
                .await
                .is_err()
        {
            warn!("the admin HTTP listener did not stop in time; closing it");
            task.abort();
            let _ = task.await;
        }
        drop(ctx);
        let store = service.join().await;
        if let Some(reason) = fatal.reason() {
            return Err(ServerError::Failed(reason));
        }
        let Some(mut store) = store else {
            return Err(ServerError::Failed(
                "the store could not be closed cleanly".into(),
            ));
        };
        let at = wall_clock_ms().max(store.newest_record_at()?);
        store.log_event(at, UsageEvent::ServerStop, Some("graceful shutdown"))?;
        drop(store);
        debug!("store closed");
        info!("stopped");
        Ok(())
    }
}

/// Binds and serves until `shutdown` completes. The one entry point for `usherd` and tests.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    Server::bind(config).await?.run(shutdown).await
}

/// This machine's host name, for status reports.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The cut-off of usage-log retention at `now`, if retention is on.
fn retention_cutoff(config: &Config, now: u64) -> Option<u64> {
    (config.log_retention_days > 0)
        .then(|| now.saturating_sub(u64::from(config.log_retention_days) * 86_400_000))
}
