//! The background task that owns the connection.
//!
//! It is the only place that reads or writes the socket. API calls reach it over an
//! unbounded channel (so `License::drop` can send without awaiting). The task does the
//! I/O (sockets, timers, channels); every decision is made by its sans-IO core,
//! [`state::Core`], which it tells what happened and asks what to send. The link to the
//! server is in one of three states ([`state::Link`]): connected, reconnecting, or
//! detached (the seats held by UDP keepalives, without a connection).

mod connect;
mod state;

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use usher_proto::{FrameReader, Request, Response, request, response};

use self::connect::Connector;
use self::state::{Core, Keepalives, Link, Next};
use crate::{ClientConfig, ClientError, SessionInfo};

/// Where the answer to a request goes.
type Reply = oneshot::Sender<Result<response::Kind, ClientError>>;

/// How a `License` is told its lease was lost, and why.
type LeaseWatch = watch::Sender<Option<String>>;

/// A message from the API to the driver.
#[derive(Debug)]
pub enum Call {
    /// Send a request and route its answer back.
    Request {
        /// What to send (boxed: requests are much larger than the other calls).
        kind: Box<request::Kind>,
        /// Where the answer goes.
        reply: Reply,
        /// For checkouts: how to tell the `License` it was lost.
        lease_watch: Option<LeaseWatch>,
        /// For checkouts that may wait: where to report the queue position.
        position: Option<watch::Sender<u32>>,
    },
    /// A `License` was dropped: check it in.
    Release {
        /// Lease handle.
        lease_id: u64,
    },
    /// Say goodbye and stop.
    Close {
        /// Completed when done.
        reply: oneshot::Sender<()>,
    },
}

/// The writing half of a connection, over TLS or (when configured) in plaintext.
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The reading half of a connection.
type Reader = FrameReader<Box<dyn AsyncRead + Send + Unpin>>;

/// An open connection, with the session open on it.
struct Connection {
    reader: Reader,
    writer: Writer,
}

impl Connection {
    async fn send(&mut self, req: &Request) -> Result<(), std::io::Error> {
        usher_proto::write_frame(&mut self.writer, req).await
    }

    /// Sends requests in order, stopping at the first failure.
    async fn send_all(&mut self, reqs: &[Request]) -> Result<(), std::io::Error> {
        for req in reqs {
            self.send(req).await?;
        }
        Ok(())
    }
}

/// The task: the core, and the I/O it asks for.
struct Driver {
    core: Core,
    connector: Connector,
    /// While `Connected`: the connection.
    conn: Option<Connection>,
    /// While `Detached`: the keepalive socket.
    keepalives: Option<crate::udp::Detached>,
}

/// Connects, opens a session and starts the driver.
pub async fn start(
    config: ClientConfig,
    server_key: Arc<Mutex<Option<[u8; 32]>>>,
) -> Result<
    (
        mpsc::UnboundedSender<Call>,
        SessionInfo,
        watch::Receiver<bool>,
    ),
    ClientError,
> {
    let mut core = Core::new(&config, Instant::now());
    let mut connector = Connector::new(config, server_key)?;
    let (conn, info) = connector.connect(&mut core).await?;
    let connected = core.subscribe_connected();
    let driver = Driver {
        core,
        connector,
        conn: Some(conn),
        keepalives: None,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(driver.run(rx));
    Ok((tx, info, connected))
}

/// Whether the task goes on after a step.
enum Flow {
    Continue,
    Stop,
}

impl Driver {
    async fn run(mut self, mut calls: mpsc::UnboundedReceiver<Call>) {
        let mut heartbeat = tokio::time::interval(self.core.heartbeat());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        loop {
            let flow = match self.core.link() {
                Link::Detached { .. } => self.detached(&mut calls).await,
                Link::Reconnecting { .. } => {
                    let flow = self.reconnect(&mut calls).await;
                    if matches!(self.core.link(), Link::Connected { .. }) {
                        heartbeat.reset();
                    }
                    flow
                }
                Link::Connected { .. } => self.connected(&mut calls, &mut heartbeat).await,
            };
            if let Flow::Stop = flow {
                return;
            }
        }
    }

    /// One step while connected: a call, a response, or a timer.
    async fn connected(
        &mut self,
        calls: &mut mpsc::UnboundedReceiver<Call>,
        heartbeat: &mut tokio::time::Interval,
    ) -> Flow {
        let Some(conn) = self.conn.as_mut() else {
            // (Cannot happen: the link is `Connected` only with a connection.)
            self.core.connection_lost(Instant::now());
            return Flow::Continue;
        };
        let detach_at = self.core.detach_deadline();
        let silent_at = self.core.silence_deadline();
        tokio::select! {
            call = calls.recv() => match call {
                Some(Call::Close { reply }) => {
                    self.goodbye().await;
                    let _ = reply.send(());
                    return Flow::Stop;
                }
                Some(call) => {
                    self.core.call(call, Instant::now());
                    self.flush().await;
                }
                None => {
                    // Every handle and license is gone: end the session.
                    self.goodbye().await;
                    return Flow::Stop;
                }
            },
            read = conn.reader.read::<Response>() => match read {
                Ok(Some(response)) => match self.core.response(response, Instant::now()) {
                    Next::Send => self.flush().await,
                    Next::Reconnect => self.conn = None,
                    Next::Detach(k) => {
                        // The server closes the connection next either way.
                        self.conn = None;
                        self.detach(k).await;
                    }
                },
                Ok(None) | Err(_) => {
                    info!("connection to the license server lost; reconnecting");
                    self.lost();
                }
            },
            _ = heartbeat.tick() => {
                let reqs = self.core.tick(Instant::now());
                self.send_all(&reqs).await;
            }
            // Idle for long enough: keep the seats with UDP keepalives, without a socket.
            _ = tokio::time::sleep_until(detach_at.unwrap_or(silent_at)), if detach_at.is_some() => {
                self.core.ask_detach();
                self.flush().await;
            }
            // Silence for several intervals means the path is dead even if no error has
            // surfaced (a half-open connection): reconnect.
            _ = tokio::time::sleep_until(silent_at) => {
                warn!("no word from the license server; reconnecting");
                self.lost();
            }
        }
        Flow::Continue
    }

    /// One attempt to reconnect, and on failure the wait before the next (taking calls,
    /// and noticing a closed client, meanwhile).
    async fn reconnect(&mut self, calls: &mut mpsc::UnboundedReceiver<Call>) -> Flow {
        match self.connector.connect(&mut self.core).await {
            Ok((conn, _)) => {
                self.conn = Some(conn);
                self.core.reconnected(Instant::now());
                self.flush().await;
                return Flow::Continue;
            }
            Err(e) => {
                let backoff = self.core.connect_failed(Instant::now());
                debug!("reconnect failed: {e}; retrying in {backoff:?}");
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        call = calls.recv() => match call {
                            Some(Call::Close { reply }) => {
                                let _ = reply.send(());
                                return Flow::Stop;
                            }
                            Some(call) => self.core.call(call, Instant::now()),
                            None => return Flow::Stop,
                        },
                    }
                }
            }
        }
        Flow::Continue
    }

    /// While detached: UDP keepalives hold the seats until the application asks for
    /// something, the server calls us back, or the keepalives go unanswered.
    async fn detached(&mut self, calls: &mut mpsc::UnboundedReceiver<Call>) -> Flow {
        let Some(mut keepalives) = self.keepalives.take() else {
            // (Cannot happen: the link is `Detached` only with a keepalive socket.)
            self.core.keepalives_failed(Instant::now());
            return Flow::Continue;
        };
        let silence = self.core.silence_limit();
        tokio::select! {
            call = calls.recv() => match call {
                Some(Call::Close { reply }) => {
                    self.end_detached().await;
                    let _ = reply.send(());
                    return Flow::Stop;
                }
                None => {
                    self.end_detached().await;
                    return Flow::Stop;
                }
                Some(call) => {
                    self.core.leave_detached(Instant::now(), false);
                    self.core.call(call, Instant::now());
                }
            },
            why = keepalives.run(silence) => {
                let unanswered = matches!(why, crate::udp::Leave::Silent) && !keepalives.acked;
                self.core.leave_detached(Instant::now(), unanswered);
            }
        }
        debug!("resuming the detached session over TCP");
        Flow::Continue
    }

    /// Leaves the connection (already closing) for UDP keepalives.
    async fn detach(&mut self, k: Keepalives) {
        match crate::udp::Detached::open(k.udp, k.session, k.key, k.interval).await {
            Ok(detached) => {
                debug!(udp = %k.udp, "detached: keeping the session alive over UDP");
                self.keepalives = Some(detached);
            }
            Err(e) => {
                warn!(
                    "cannot send keepalives to {}: {e}; staying connected",
                    k.udp
                );
                self.core.keepalives_failed(Instant::now());
            }
        }
    }

    /// Ends a detached session for good: back over TCP to say goodbye (else its seats
    /// would be held until the TTL runs out).
    async fn end_detached(&mut self) {
        if let Ok((conn, _)) = self.connector.connect(&mut self.core).await {
            self.conn = Some(conn);
            self.goodbye().await;
        }
    }

    /// Says goodbye and waits (briefly) for the server to confirm, so the seats are
    /// surely released before the process goes on (or exits).
    async fn goodbye(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let (reqs, id) = self.core.goodbye();
        if conn.send_all(&reqs).await.is_err() {
            return;
        }
        let wait = async {
            while let Ok(Some(r)) = conn.reader.read::<Response>().await {
                if r.id == id {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(self.connector.config.request_timeout, wait).await;
    }

    /// Sends every request not yet sent on this connection.
    async fn flush(&mut self) {
        let reqs = self.core.take_unsent();
        self.send_all(&reqs).await;
    }

    /// Sends requests on the connection; if that fails, it is lost.
    async fn send_all(&mut self, reqs: &[Request]) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if reqs.is_empty() {
            return;
        }
        if conn.send_all(reqs).await.is_err() {
            self.lost();
        }
    }

    /// The connection is gone: drop it and reconnect.
    fn lost(&mut self) {
        self.conn = None;
        self.core.connection_lost(Instant::now());
    }
}
