//! Binding, serving and shutting down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use usher_core::{Ledger, LedgerConfig};
use usher_store::{SqliteStore, UsageEvent};

use crate::admin::{Admin, ReloadInputs};
use crate::clock::wall_clock_ms;
use crate::config::{Config, ConfigError};
use crate::connection;
use crate::keepalives::Keepalives;
use crate::ledger_task::{LedgerService, Outlets, ServerInfo};
use crate::licenses::{self, LoadError, LoadedLicenses};
use crate::metrics::{Metrics, RejectReason};
use crate::notices::Notices;
use crate::shared::Shared;

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

/// Most refused connections being told why at once (each costs a TLS handshake); beyond
/// that, refused connections are closed without a word (and counted, and logged).
const REFUSALS_IN_FLIGHT: usize = 64;

/// What refusing a connection needs from the accept loop.
struct Refusing<'a> {
    slots: &'a Arc<Semaphore>,
    tls: &'a tokio_rustls::TlsAcceptor,
    config: &'a Config,
    metrics: &'a Metrics,
}

impl Refusing<'_> {
    /// Counts and logs a refused connection and, unless the peer is outside the allow-list
    /// (which learns nothing), tells it why in answer to its Hello, in a task of its own
    /// (at most [`REFUSALS_IN_FLIGHT`] at once).
    fn refuse(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        why: crate::access::Refusal,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        use crate::access::Refusal;
        let config = self.config;
        let (reason, message) = match why {
            Refusal::NotAllowed => {
                let detail = "the address is not in the allow-list (told nothing)";
                self.metrics
                    .connection_rejected(RejectReason::NotAllowed, &peer, detail);
                return;
            }
            // Closed at once, before TLS: answering would cost what the limit saves.
            Refusal::AddressRate => {
                let detail = format!(
                    "the address opens new connections faster than {} a second \
                     (max_connection_rate_per_ip; closed, told nothing)",
                    config.max_connection_rate_per_ip
                );
                self.metrics
                    .connection_rejected(RejectReason::AddressRate, &peer, &detail);
                return;
            }
            Refusal::Handshakes => {
                let detail = format!(
                    "{} connections are already in their handshake (max_handshakes; \
                     closed, told nothing)",
                    config.max_handshakes
                );
                self.metrics
                    .connection_rejected(RejectReason::HandshakesLimit, &peer, &detail);
                return;
            }
            Refusal::TooManyFromAddress => (
                RejectReason::PerAddressLimit,
                format!(
                    "too many connections from your address {} (limit {}, the server's \
                     max_connections_per_ip)",
                    peer.ip(),
                    config.max_connections_per_ip
                ),
            ),
            Refusal::ServerFull => (
                RejectReason::TotalLimit,
                format!(
                    "the server is at its limit of {} client connections (max_connections); \
                     try again later",
                    config.max_connections
                ),
            ),
        };
        self.metrics.connection_rejected(reason, &peer, &message);
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        let (tls, plaintext, timeout) = (
            self.tls.clone(),
            config.insecure_plaintext,
            config.handshake_timeout,
        );
        tasks.spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let accepted =
                tokio::time::timeout_at(deadline, crate::tls::accept(stream, &tls, plaintext));
            let code = usher_proto::ErrorCode::TooManyConnections;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match accepted.await {
                Ok(Ok(crate::tls::Accepted::Tls(s))) => {
                    connection::refuse(*s, code, message, left).await;
                }
                Ok(Ok(crate::tls::Accepted::Plain(s))) => {
                    connection::refuse(s, code, message, left).await;
                }
                Ok(Err(_)) | Err(_) => {}
            }
            drop(slot);
        });
    }
}

/// Whether new connections compete for handshake slots: half of the `max` or more are in
/// use, so each address is held to its share of new connections.
fn contended(handshaking: &Semaphore, max: usize) -> bool {
    handshaking.available_permits() <= max / 2
}

/// Binds the UDP socket on the listener's address and port. A server without it still
/// serves TCP (detached keepalives and discovery are unavailable), so a failure is a
/// warning, not a reason to stop.
async fn bind_udp(listener: &TcpListener) -> Option<tokio::net::UdpSocket> {
    let addr = listener.local_addr().ok()?;
    match udp_socket(addr) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(
                %addr,
                "could not bind the UDP port ({e}): clients cannot detach to UDP keepalives \
                 and discovery will not find this server; free the UDP port (`ss -ulpn`) \
                 and restart"
            );
            None
        }
    }
}

/// A UDP socket on `addr` with a receive buffer of up to [`UDP_RECEIVE_BUFFER`], so a burst
/// of keepalives (a million sessions send 33,000 a second) is queued, not dropped.
fn udp_socket(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel caps this at net.core.rmem_max; whatever it grants is fine.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// The UDP socket's receive buffer, in bytes (asked for; the kernel may grant less).
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

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
    /// Loads licenses, opens the store, recovers held seats and binds the listener.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        crate::data_dir::prepare(&config.data_dir)?;

        let lock = lock_data_dir(&config.data_dir)?;

        let identity = crate::identity::Identity::load_or_create(&config.data_dir)
            .map_err(io("reading or making the server identity key"))?;
        let server_host_id = identity.host_id();
        info!(host_id = %server_host_id, "server identity");
        let licenses::Loaded {
            licenses,
            policy,
            policy_warnings,
        } = licenses::load_all(
            &config.license_files,
            &config.vendor_keys,
            config.policy_file.as_deref(),
            config.min_timeout,
            &server_host_id,
            chrono::Utc::now().date_naive(),
        )?;
        for line in &licenses.refused {
            error!("entitlement refused: {line}; {}", licenses::REFUSED_ADVICE);
        }
        licenses::warn_not_usable(&licenses.warnings);
        info!(
            files = licenses.files.len(),
            entitlements = licenses.entitlements.len(),
            refused = licenses.refused.len(),
            "licenses loaded"
        );

        let mut store = SqliteStore::open(&config.store_path())?;
        let pseudonym_path = config.data_dir.join(PSEUDONYM_KEY_FILE);
        if let Some(legacy) = store.take_legacy_pseudonym_key()? {
            // Earlier versions kept the key in the store, where whoever may read the usage
            // log could reverse the pseudonyms: move it into its own file.
            if crate::data_dir::read(&pseudonym_path)
                .map_err(io(format!("reading {}", pseudonym_path.display())))?
                .is_none()
            {
                crate::data_dir::create_new(&pseudonym_path, &legacy)
                    .map_err(io(format!("writing {}", pseudonym_path.display())))?;
            }
            info!(path = %pseudonym_path.display(), "moved the pseudonym key out of the store");
        }
        if config.hide_users {
            store.hide_identities(pseudonym_key(&pseudonym_path)?);
        }
        if let Some(before) = retention_cutoff(&config, wall_clock_ms()) {
            let removed = store.prune_usage_log(wall_clock_ms(), before)?;
            info!(
                removed,
                days = config.log_retention_days,
                "usage log retention applied"
            );
        }
        let snapshot = store.load()?;
        let ledger_config = LedgerConfig {
            session_ttl: config.session_ttl.as_millis() as u64,
            reconnect_grace: config.reconnect_grace.as_millis() as u64,
            min_remove: config.min_remove.as_millis() as u64,
        };
        let now = wall_clock_ms();
        let (sessions, leases) = (snapshot.sessions.len(), snapshot.leases.len());
        let first_lease_id = store.max_lease_id()?.saturating_add(1);
        let mut orphans = Vec::new();
        for line in &policy_warnings {
            warn!("{line}");
        }
        if let Some(path) = &config.policy_file {
            info!(policy = %path.display(), "policy loaded");
        }
        let mut ledger = Ledger::restore(
            licenses.catalog.clone(),
            ledger_config,
            snapshot.sessions,
            snapshot.leases,
            now,
            &mut orphans,
        );
        ledger.set_policy(policy);
        store.commit(now, &orphans)?;
        if sessions > 0 {
            info!(
                sessions,
                leases,
                ttl_s = config.session_ttl.as_secs(),
                "recovered held seats; their sessions have one TTL to resume"
            );
        }

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("binding {}", config.listen)))?;
        let udp = bind_udp(&listener).await;
        let admin = bind_admin_socket(&config.admin_socket())?;
        let admin_token = crate::http::load_or_create_token(&config.admin_token()).map_err(io(
            format!("reading or creating {}", config.admin_token().display()),
        ))?;
        let admin_http = match config.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(io(format!("binding the admin HTTP listener {addr}")))?,
            ),
            None => None,
        };
        Ok(Server {
            config,
            listener,
            udp,
            ledger,
            first_lease_id,
            store,
            licenses,
            admin,
            admin_http,
            admin_token,
            identity: Arc::new(identity),
            _lock: lock,
            reload_signal: None,
        })
    }

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
            mut reload_signal,
        } = self;
        let server_host_id = identity.host_id();
        let metrics = Arc::new(Metrics::new());
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        let detail = format!("listening on {addr}");
        let now = wall_clock_ms();
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
        let plaintext_warning = Arc::new(crate::tls::PlaintextWarning::default());
        if config.insecure_plaintext {
            warn!(
                "insecure_plaintext is on: clients may connect without TLS, and their \
                 traffic can then be read and changed on the network; turn it off unless \
                 every client is on a trusted network"
            );
        }
        let mut connections = tokio::task::JoinSet::new();
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let mut permit = None;
        let gate = crate::access::Gate::new(config.allow.clone(), config.max_connections_per_ip)
            .with_rate(config.max_connection_rate_per_ip);
        // Connections still in their handshake (TLS and Hello), all addresses together.
        let handshaking = Arc::new(Semaphore::new(config.max_handshakes));
        let refusing = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
        // Out of descriptors, both accept loops would otherwise spin (see accept_backoff).
        let mut admin_backoff = crate::accept_backoff::AcceptBackoff::new("admin socket");
        let mut client_backoff = crate::accept_backoff::AcceptBackoff::new("client");
        let watchdog = crate::systemd::watchdog_interval().map(|interval| {
            tokio::spawn(crate::systemd::feed_watchdog(
                service.handle.clone(),
                interval,
                stop.clone(),
            ))
        });
        crate::systemd::ready(addr);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = next_signal(&mut reload_signal) => {
                    info!("SIGHUP received: reloading licenses, keys and policy");
                    let ctx = ctx.clone();
                    connections.spawn(async move {
                        crate::systemd::reloading(true);
                        // The outcome is logged by `reload` itself, as for `usher reload`.
                        let _ = ctx.admin.reload("SIGHUP").await;
                        crate::systemd::reloading(false);
                    });
                }
                _ = failed.cancelled() => break,
                _ = down.cancelled() => break,
                // Administration does not count against the client connection limit, so an
                // administrator can still act on a server swamped with clients.
                accepted = admin.accept() => match accepted {
                    Ok((stream, _)) => {
                        admin_backoff.succeeded();
                        let (ctx, stop) = (ctx.clone(), stop.clone());
                        connections.spawn(async move {
                            let admin = connection::Peer::admin_socket();
                            connection::serve(stream, admin, ctx, stop).await;
                        });
                    }
                    Err(e) => admin_backoff.pause(&e).await,
                },
                // Wait for room before accepting, so excess connections queue in the kernel
                // rather than costing memory here; while the server is full, a few are still
                // accepted, to be told so (see `refuse_connection`).
                p = limit.clone().acquire_owned(), if permit.is_none() => {
                    permit = Some(p.expect("the semaphore is never closed"));
                }
                accepted = listener.accept(),
                    if permit.is_some() || refusing.available_permits() > 0 => match accepted {
                    Ok((stream, peer)) => {
                        client_backoff.succeeded();
                        // Room may have come free since the last permit was taken.
                        if permit.is_none() {
                            permit = limit.clone().try_acquire_owned().ok();
                        }
                        let admitted = match &permit {
                            Some(_) => gate.admit(peer.ip(), contended(&handshaking, config.max_handshakes)).and_then(|a| {
                                let handshake = handshaking.clone().try_acquire_owned();
                                let handshake =
                                    handshake.map_err(|_| crate::access::Refusal::Handshakes)?;
                                Ok((a, handshake))
                            }),
                            None => Err(crate::access::Refusal::ServerFull),
                        };
                        let (admitted, handshake) = match admitted {
                            Ok(a) => a,
                            Err(why) => {
                                let refusal = Refusing {
                                    slots: &refusing,
                                    tls: &tls,
                                    config: &config,
                                    metrics: &metrics,
                                };
                                refusal.refuse(stream, peer, why, &mut connections);
                                continue;
                            }
                        };
                        let _ = stream.set_nodelay(true);
                        let (ctx, stop, permit) = (ctx.clone(), stop.clone(), permit.take());
                        let (tls, warning) = (tls.clone(), plaintext_warning.clone());
                        let (plaintext, limit) =
                            (config.insecure_plaintext, config.handshake_timeout);
                        connections.spawn(async move {
                            let peer = peer.to_string();
                            let accepted = tokio::time::timeout(
                                limit,
                                crate::tls::accept(stream, &tls, plaintext),
                            );
                            match accepted.await {
                                Ok(Ok(crate::tls::Accepted::Tls(s))) => {
                                    let client = connection::Peer::client(peer, handshake);
                                    connection::serve(*s, client, ctx, stop).await;
                                }
                                Ok(Ok(crate::tls::Accepted::Plain(s))) => {
                                    warning.used(&peer, wall_clock_ms());
                                    let client = connection::Peer::client(peer, handshake);
                                    connection::serve(s, client, ctx, stop).await;
                                }
                                Ok(Err(refused)) => refused.count(&ctx.metrics, &peer),
                                Err(_) => {
                                    let detail = format!(
                                        "no TLS handshake within the handshake timeout of \
                                         {limit:?}"
                                    );
                                    ctx.metrics.connection_rejected(
                                        RejectReason::HandshakeTimeout,
                                        &peer,
                                        &detail,
                                    );
                                }
                            }
                            drop((permit, admitted));
                        });
                    }
                    Err(e) => client_backoff.pause(&e).await,
                },
            }
            // Reap finished connections so the set stays the size of the live ones.
            while connections.try_join_next().is_some() {}
            // Established connections first: their tasks that are ready run before the
            // next connection is accepted, however fast new ones arrive.
            tokio::task::yield_now().await;
        }
        drop(admin);
        let _ = std::fs::remove_file(config.admin_socket());

        info!("shutting down: no new connections; finishing requests in flight");
        crate::systemd::stopping();
        drop(listener);
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
        store.log_event(
            wall_clock_ms(),
            UsageEvent::ServerStop,
            Some("graceful shutdown"),
        )?;
        drop(store);
        debug!("store closed");
        info!("stopped");
        Ok(())
    }
}

/// The file in the data directory holding the key of `--hide-users` pseudonyms.
pub const PSEUDONYM_KEY_FILE: &str = "pseudonym.key";

/// Reads the pseudonym key (32 bytes, mode 0600), or makes one if there is none.
fn pseudonym_key(path: &std::path::Path) -> Result<[u8; 32], ServerError> {
    let context = || format!("reading or making {}", path.display());
    match crate::data_dir::read(path).map_err(io(context()))? {
        Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            io(context())(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the key is {} bytes, not 32", bytes.len()),
            ))
        }),
        None => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| io(context())(std::io::Error::other(e)))?;
            crate::data_dir::create_new(path, &key).map_err(io(context()))?;
            Ok(key)
        }
    }
}

/// The next delivery of `signal`, or never without one.
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Takes an exclusive lock on `DIR/usherd.lock`, so that two servers never share a store
/// (each would believe it alone counts the seats). The OS drops the lock when the process
/// exits, however it exits.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    let path = dir.join(crate::config::LOCK_FILE);
    let file = crate::data_dir::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::DataDirInUse(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(format!("locking {}", path.display()))(e)),
    }
}

/// Binds the administration socket so that only the server's user can reach it: the
/// socket lives in a directory of mode 0700 (so there is no window in which it is open to
/// others) and is itself 0600.
fn bind_admin_socket(path: &std::path::Path) -> Result<tokio::net::UnixListener, ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .expect("the admin socket path has a directory");
    crate::data_dir::create_private_dir(dir).map_err(io(format!("creating {}", dir.display())))?;
    // We hold the data directory lock, so a socket file left here is from a dead server.
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(io(format!("binding the admin socket {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("restricting {}", path.display())))?;
    Ok(listener)
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
