//! Making a connection: discovery when no server is configured, TCP and TLS, trust on
//! first use, and the handshake that opens or resumes the session.

use std::sync::{Arc, Mutex};

use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{info, warn};
use usher_proto::{ErrorCode, FrameReader, Request, Response, request, response};

use super::state::Core;
use super::{Connection, Writer};
use crate::{ClientConfig, ClientError, ServerAddr, ServerErrorCode, SessionInfo};

/// What a client is told when a server closes the connection without a word, as a server
/// does (so as to tell a stranger nothing) when the peer is outside its allow-list or it is
/// too busy to say why; a server that refuses for a reason it may give says so instead.
const SILENT_CLOSE_CAUSES: &str = "possible causes: this address is not in the server's \
     allow-list, or the server is overloaded (too many connections being refused at once)";

/// Connects to servers on the core's behalf.
pub(super) struct Connector {
    pub config: ClientConfig,
    /// TLS to servers (`None` with `insecure_plaintext`).
    tls: Option<tokio_rustls::TlsConnector>,
    /// The identity key of the server connected to (over TLS), for the API to check
    /// grants' statements against.
    server_key: Arc<Mutex<Option<[u8; 32]>>>,
}

impl Connector {
    /// Sets up TLS as configured.
    pub fn new(
        config: ClientConfig,
        server_key: Arc<Mutex<Option<[u8; 32]>>>,
    ) -> Result<Connector, ClientError> {
        let tls = if config.insecure_plaintext {
            None
        } else {
            Some(
                crate::tls::connector(&config.server_ids)
                    .map_err(|e| ClientError::Protocol(format!("setting up TLS: {e}")))?,
            )
        };
        Ok(Connector {
            config,
            tls,
            server_key,
        })
    }

    /// Connects to the first server that answers and opens or resumes the session.
    pub async fn connect(
        &mut self,
        core: &mut Core,
    ) -> Result<(Connection, SessionInfo), ClientError> {
        if self.config.servers.is_empty() {
            self.discover().await?;
        }
        let servers = self.config.servers.clone();
        let mut last = String::from("no servers configured");
        for server in &servers {
            let attempt =
                tokio::time::timeout(self.config.connect_timeout, self.handshake(server, core));
            match attempt.await {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(ClientError::Unreachable { detail, .. })) => {
                    last = format!("{server}: {detail}")
                }
                // Refused for want of room (or time): another server may have it.
                Ok(Err(ClientError::Server {
                    code: ServerErrorCode::TooManyConnections | ServerErrorCode::HandshakeTimeout,
                    message,
                })) => last = format!("{server}: {message}"),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    last = format!(
                        "{server}: timed out after {:?}",
                        self.config.connect_timeout
                    )
                }
            }
        }
        let list = servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Err(ClientError::Unreachable {
            servers: list,
            detail: last,
        })
    }

    /// With no server configured: asks the network, and keeps the servers that answered
    /// (in the order they did) for this client's life.
    async fn discover(&mut self) -> Result<(), ClientError> {
        let targets = &self.config.discovery_targets;
        let found = crate::udp::discover(targets, self.config.discovery_wait)
            .await
            .unwrap_or_default();
        let targets = targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if found.is_empty() {
            return Err(ClientError::Unreachable {
                servers: format!("discovery via {targets}"),
                detail: format!(
                    "no server configured ({} is unset) and none answered discovery within {:?}",
                    crate::ENV_LICENSE,
                    self.config.discovery_wait
                ),
            });
        }
        info!(
            servers = found.len(),
            first = %found[0].addr,
            "license servers found by discovery"
        );
        self.config.servers = found
            .into_iter()
            .map(|d| ServerAddr {
                host: d.addr.ip().to_string(),
                port: d.addr.port(),
            })
            .collect();
        Ok(())
    }

    /// Without pinned ids, checks the server's id against the one first seen at this
    /// address (see [`crate::known_servers`]), remembering it the first time.
    fn trust_on_first_use(&self, server: &ServerAddr, key: &[u8; 32]) -> Result<(), ClientError> {
        let Some(path) = self
            .config
            .known_servers
            .as_deref()
            .filter(|_| self.config.server_ids.is_empty())
        else {
            return Ok(());
        };
        let (addr, id) = (server.to_string(), usher_license::usher_id(key));
        match crate::known_servers::check_and_remember(path, &addr, &id) {
            Ok(crate::known_servers::Seen::New) => {
                info!(server = %addr, %id, file = %path.display(), "first connection: server id remembered");
                Ok(())
            }
            Ok(crate::known_servers::Seen::Known) => Ok(()),
            Ok(crate::known_servers::Seen::Changed { known }) => Err(ClientError::Unreachable {
                servers: addr.clone(),
                detail: crate::known_servers::changed_message(&addr, &known, &id, path),
            }),
            Err(e) => {
                // An unwritable state directory must not keep applications from running;
                // the channel is still encrypted, as it would be without the file.
                warn!(file = %path.display(), "cannot use the known-servers file: {e}");
                Ok(())
            }
        }
    }

    async fn handshake(
        &self,
        server: &ServerAddr,
        core: &mut Core,
    ) -> Result<(Connection, SessionInfo), ClientError> {
        let unreachable = |e: std::io::Error| ClientError::Unreachable {
            servers: server.to_string(),
            detail: e.to_string(),
        };
        let stream = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(unreachable)?;
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok();
        let (rd, wr): (Box<dyn AsyncRead + Send + Unpin>, Writer) = match &self.tls {
            Some(tls) => {
                let (stream, key) = crate::tls::connect(tls, &server.host, stream)
                    .await
                    .map_err(|e| ClientError::Unreachable {
                        servers: server.to_string(),
                        detail: if closed_silently(&e) {
                            format!("TLS handshake failed: {e}; {SILENT_CLOSE_CAUSES}")
                        } else {
                            format!("TLS handshake failed: {e}")
                        },
                    })?;
                self.trust_on_first_use(server, &key)?;
                *self.server_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
                let (rd, wr) = tokio::io::split(stream);
                (Box::new(rd), Box::new(wr))
            }
            None => {
                let (rd, wr) = stream.into_split();
                (Box::new(rd), Box::new(wr))
            }
        };
        let mut conn = Connection {
            reader: FrameReader::new(rd),
            writer: wr,
        };
        loop {
            let id = core.take_id();
            let hello = core.hello();
            let resuming = hello.resume_session != 0;
            conn.send(&Request {
                id,
                kind: Some(request::Kind::Hello(hello)),
            })
            .await
            .map_err(unreachable)?;
            let response = loop {
                match conn.reader.read::<Response>().await {
                    Ok(Some(r)) if r.id == id => break r,
                    Ok(Some(_)) => continue,
                    // A server that requires TLS closes a plaintext peer without a word.
                    Ok(None) | Err(usher_proto::FrameError::Io(_)) if self.tls.is_none() => {
                        return Err(ClientError::Unreachable {
                            servers: server.to_string(),
                            detail: format!(
                                "the server closed the connection without an answer; \
                                 {SILENT_CLOSE_CAUSES}, or it requires TLS (this client has \
                                 insecure_plaintext on)"
                            ),
                        });
                    }
                    Ok(None) => return Err(unreachable(std::io::ErrorKind::UnexpectedEof.into())),
                    Err(e) => return Err(ClientError::Protocol(e.to_string())),
                }
            };
            match response.kind {
                Some(response::Kind::Welcome(w)) => {
                    let info = core.welcomed(&w, server, peer, Instant::now());
                    return Ok((conn, info));
                }
                Some(response::Kind::Error(e))
                    if resuming && e.code() == ErrorCode::SessionExpired =>
                {
                    info!("session expired on the server; opening a new one");
                    core.resume_refused();
                }
                Some(response::Kind::Error(e)) => {
                    return Err(ClientError::from_server(e));
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected Welcome, got {other:?}"
                    )));
                }
            }
        }
    }
}

/// Whether a connection error means the peer closed or reset the connection (rather
/// than, say, a bad key).
fn closed_silently(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}
