//! The admin HTTP listener's connection handling: what `axum::serve` leaves open.
//!
//! - **Header-read and idle timeout.** A connection must send a complete request head
//!   within [`HEADER_READ_TIMEOUT`] of connecting, and again within as long after each
//!   answer (HTTP/1.1 keep-alive), or it is closed: idle and slowloris connections cannot
//!   pile up.
//! - **A connection cap.** At most [`MAX_CONNECTIONS`] at once; a connection beyond it is
//!   closed as soon as it is accepted, so the listener never holds more descriptors than
//!   that (the client port and the store need theirs).
//! - **A `Host` check.** Only the listener's own address (as the connection reached it),
//!   `localhost` on a loopback listener and the configured [`Config::admin_hosts`] are
//!   answered; anything else gets 421 and a missing `Host` 400. A page whose DNS name an
//!   attacker rebinds to this address sends its own name, so it cannot use the API with a
//!   browser's help.
//! - **Accept errors back off** ([`crate::accept_backoff`]).
//!
//! [`Config::admin_hosts`]: crate::config::Config::admin_hosts

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::ApiError;
use crate::accept_backoff::AcceptBackoff;

/// How long a connection may take to send a request head, from connecting or from the
/// previous answer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most admin HTTP connections open at once.
pub const MAX_CONNECTIONS: usize = 256;

/// The `Host` values a connection may name, besides its own local address.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// The configured names (`name` or `name:port`), compared without case.
    pub fn new(names: &[String]) -> Self {
        AllowedHosts {
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether `host` (a `Host` header) names this listener, reached at `local`.
    pub fn allows(&self, host: &str, local: SocketAddr) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let (name, port) = split_host(&host);
        let port_ok = match port {
            Some(p) => p == local.port(),
            None => local.port() == 80,
        };
        if self.names.contains(&host) {
            return true;
        }
        if !port_ok {
            return false;
        }
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        if literal.parse::<std::net::IpAddr>().ok() == Some(local.ip()) {
            return true;
        }
        (name == "localhost" && local.ip().is_loopback()) || self.names.iter().any(|n| n == name)
    }
}

/// `name[:port]` or `[v6][:port]`.
fn split_host(host: &str) -> (&str, Option<u16>) {
    let colon = if host.starts_with('[') {
        host.find(']')
            .and_then(|end| host[end..].find(':').map(|c| end + c))
    } else {
        host.rfind(':').filter(|_| host.matches(':').count() == 1)
    };
    match colon {
        Some(i) => match host[i + 1..].parse() {
            Ok(port) => (&host[..i], Some(port)),
            Err(_) => (host, None),
        },
        None => (host, None),
    }
}

fn misdirected(status: StatusCode, message: &str) -> Response {
    ApiError::new(status, "wrong_host", message).into_response()
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets requests in flight
/// finish (the caller bounds how long).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    hosts: AllowedHosts,
    stop: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let mut backoff = AcceptBackoff::new("admin HTTP");
    let hosts = Arc::new(hosts);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = backoff.pause(&e) => continue,
                }
            }
        };
        backoff.succeeded();
        while connections.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "admin HTTP connection refused: {MAX_CONNECTIONS} already open");
            continue;
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let (app, hosts, stop) = (app.clone(), hosts.clone(), stop.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                let (app, hosts) = (app.clone(), hosts.clone());
                async move {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let host = request
                        .headers()
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                        .or_else(|| request.uri().authority().map(|a| a.to_string()));
                    let response = match host {
                        None => misdirected(StatusCode::BAD_REQUEST, "a Host header is required"),
                        Some(h) if !hosts.allows(&h, local) => misdirected(
                            StatusCode::MISDIRECTED_REQUEST,
                            "this server does not answer to that Host; add the name to \
                             admin_hosts (--admin-host) if it is this server's",
                        ),
                        Some(_) => app
                            .oneshot(request.map(axum::body::Body::new))
                            .await
                            .unwrap_or_else(|never| match never {}),
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_own_address_localhost_and_configured_names_are_answered() {
        let local: SocketAddr = "127.0.0.1:1649".parse().unwrap();
        let hosts = AllowedHosts::new(&["Licserver.example.com".into()]);
        for ok in [
            "127.0.0.1:1649",
            "localhost:1649",
            "LOCALHOST:1649",
            "licserver.example.com:1649",
            "licserver.example.com",
        ] {
            assert!(hosts.allows(ok, local), "{ok}");
        }
        for refused in [
            "evil.example:1649",
            "127.0.0.1:80",
            "127.0.0.2:1649",
            "127.0.0.1",
            "",
            "localhost.evil.example:1649",
        ] {
            assert!(!hosts.allows(refused, local), "{refused}");
        }
        let v6: SocketAddr = "[::1]:1649".parse().unwrap();
        assert!(hosts.allows("[::1]:1649", v6));
        assert!(!hosts.allows("[::2]:1649", v6));
        let lan: SocketAddr = "10.0.0.5:1649".parse().unwrap();
        assert!(!hosts.allows("localhost:1649", lan));
        assert!(hosts.allows("10.0.0.5:1649", lan));
    }
}
