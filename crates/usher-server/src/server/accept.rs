//! The accept loop: client connections from the door (see `door`) taken onto the serving
//! runtime, the admin socket, reload signals and the stop.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::door::{Arrival, Door};
use crate::clock::wall_clock_ms;
use crate::config::Config;
use crate::connection;
use crate::metrics::RejectReason;
use crate::shared::Shared;

/// What the accept loop serves with.
pub(super) struct Accepting<'a> {
    pub(super) config: &'a Config,
    pub(super) ctx: &'a Arc<Shared>,
    /// New client connections, judged and opened.
    pub(super) door: &'a mut Door,
    pub(super) admin: &'a tokio::net::UnixListener,
    pub(super) tls: &'a tokio_rustls::TlsAcceptor,
    /// Cancelled to end the connections (when the server stops).
    pub(super) stop: &'a CancellationToken,
    /// Where a part of the server that failed says so (the door among them).
    pub(super) fatal: &'a crate::fatal::Fatal,
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
        door,
        admin,
        tls,
        stop,
        fatal,
        down,
    } = accepting;
    let failed = fatal.token();
    let plaintext_warning = Arc::new(crate::tls::PlaintextWarning::default());
    // Out of descriptors, the loop would otherwise spin (see accept_backoff).
    let mut admin_backoff = crate::accept_backoff::AcceptBackoff::new("admin socket");
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set stays the size of the live ones.
        while connections.try_join_next().is_some() {}
        // Established connections first: their tasks that are ready run before the next
        // connection is taken.
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
            ended = &mut door.gone => {
                let why = match ended {
                    Ok(Err(why)) => why,
                    Ok(Ok(())) | Err(_) => "the door thread ended".to_string(),
                };
                fatal.fail(format!("no new client connections can be taken: {why}"));
                break;
            }
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
            Some(arrival) = door.arrivals.recv() => {
                let Arrival { stream, peer, deadline, handshake, held } = arrival;
                let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (ctx, stop) = (ctx.clone(), stop.clone());
                let (tls, warning) = (tls.clone(), plaintext_warning.clone());
                let (plaintext, limit) = (config.insecure_plaintext, config.handshake_timeout);
                connections.spawn(async move {
                    let peer = peer.to_string();
                    let accepted =
                        tokio::time::timeout_at(deadline, crate::tls::accept(stream, &tls, plaintext));
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
                                "no TLS handshake within the handshake timeout of {limit:?}"
                            );
                            ctx.metrics.connection_rejected(
                                RejectReason::HandshakeTimeout,
                                &peer,
                                &detail,
                            );
                        }
                    }
                    drop(held);
                });
            }
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
