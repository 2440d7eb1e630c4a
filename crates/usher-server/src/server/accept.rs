//! The accept loop: client connections admitted (the allow-list, the caps, the
//! handshake slots) or refused, the admin socket, reload signals and the stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::clock::wall_clock_ms;
use crate::config::Config;
use crate::connection;
use crate::metrics::{Metrics, RejectReason};
use crate::shared::Shared;

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

/// What the accept loop serves with.
pub(super) struct Accepting<'a> {
    pub(super) config: &'a Config,
    pub(super) ctx: &'a Arc<Shared>,
    pub(super) metrics: &'a Metrics,
    pub(super) listener: &'a TcpListener,
    pub(super) admin: &'a tokio::net::UnixListener,
    pub(super) tls: &'a tokio_rustls::TlsAcceptor,
    /// Cancelled to end the connections (when the server stops).
    pub(super) stop: &'a CancellationToken,
    /// Cancelled when a part of the server failed.
    pub(super) failed: &'a CancellationToken,
    /// Cancelled by `usher down`.
    pub(super) down: &'a CancellationToken,
}

/// Accepts client and admin connections into `connections`, and reloads on
/// `reload_signal`, until `shutdown` completes, a part of the server fails or `usher down`
/// asks the server to stop.
pub(super) async fn accept_loop(
    accepting: Accepting<'_>,
    shutdown: impl Future<Output = ()>,
    mut reload_signal: Option<tokio::signal::unix::Signal>,
    connections: &mut tokio::task::JoinSet<()>,
) {
    let Accepting {
        config,
        ctx,
        metrics,
        listener,
        admin,
        tls,
        stop,
        failed,
        down,
    } = accepting;
    let plaintext_warning = Arc::new(crate::tls::PlaintextWarning::default());
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
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set stays the size of the live ones.
        while connections.try_join_next().is_some() {}
        // Established connections first: their tasks that are ready run before the next
        // connection is accepted, however fast new ones arrive. At the top of the turn, so
        // that a turn cut short (a refusal's `continue`) yields too.
        tokio::task::yield_now().await;
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
                    let refusal = Refusing {
                        slots: &refusing,
                        tls,
                        config,
                        metrics,
                    };
                    let contended = contended(&handshaking, config.max_handshakes);
                    let admitted = match &permit {
                        Some(_) => gate.admit(peer.ip(), contended),
                        None => Err(crate::access::Refusal::ServerFull),
                    };
                    let admitted = match admitted {
                        Ok(a) => a,
                        Err(why) => {
                            refusal.refuse(stream, peer, why, connections);
                            continue;
                        }
                    };
                    // Junk already sent is refused here, for the price of one `recv`, not of
                    // a task, and before it can take a handshake slot; what may still be a
                    // client goes on to TLS and the handshake.
                    let (plaintext, max_frame) =
                        (config.insecure_plaintext, config.max_frame_bytes);
                    if let Err(refused) = crate::tls::judge(&stream, plaintext, max_frame) {
                        refused.count(metrics, &peer);
                        continue;
                    }
                    let Ok(handshake) = handshaking.clone().try_acquire_owned() else {
                        drop(admitted);
                        let why = crate::access::Refusal::Handshakes;
                        refusal.refuse(stream, peer, why, connections);
                        continue;
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
    }
}

/// The next delivery of `signal`, or never without one.
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
