//! The background task that owns the connection.
//!
//! It is the only place that reads or writes the socket. API calls reach it over an
//! unbounded channel (so `License::drop` can send without awaiting). Requests waiting for
//! an answer are kept until answered: after a reconnect they are sent again, which is
//! safe because checkouts carry an idempotency key (`client_ref`) and checkins are
//! idempotent on the server.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use usher_proto::{
    Checkin, ErrorCode, FrameReader, Goodbye, Heartbeat, Hello, Request, Response, Welcome,
    request, response,
};

use crate::{ClientConfig, ClientError, ServerAddr, SessionInfo};

type Reply = oneshot::Sender<Result<response::Kind, ClientError>>;

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
        lease_watch: Option<watch::Sender<Option<String>>>,
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

struct InFlight {
    kind: request::Kind,
    /// Whether it went out on the current connection.
    sent: bool,
    /// Where the answer goes (`None` for checkins sent on behalf of a dropped `License`).
    reply: Option<Reply>,
    lease_watch: Option<watch::Sender<Option<String>>>,
    /// For a checkout that may wait: where its queue position goes.
    position: Option<watch::Sender<u32>>,
    /// A checkout the server has queued: its answer comes as a notice.
    queued: bool,
    /// For a checkout that waits for a limited time: when the wait ends.
    wait_until: Option<Instant>,
}

impl InFlight {
    /// A request sent on nobody's behalf (a checkin for a dropped `License`, a dequeue).
    fn unowned(kind: request::Kind) -> Self {
        InFlight {
            kind,
            sent: false,
            reply: None,
            lease_watch: None,
            position: None,
            queued: false,
            wait_until: None,
        }
    }

    /// Before a waiting checkout is sent again: asks to wait only for what is left of
    /// its wait, so a resend that crosses the server's timeout cannot queue it afresh.
    /// Returns whether any of the wait is left.
    fn remaining_wait(&mut self) -> bool {
        if let (request::Kind::Checkout(c), Some(until)) = (&mut self.kind, self.wait_until) {
            let left = until.saturating_duration_since(Instant::now()).as_millis() as u64;
            c.wait = left > 0;
            c.wait_ms = left;
            return left > 0;
        }
        true
    }

    /// The idempotency key of a checkout.
    fn client_ref(&self) -> Option<u64> {
        match &self.kind {
            request::Kind::Checkout(c) => Some(c.client_ref),
            _ => None,
        }
    }
}

struct Session {
    id: u64,
    secret: Vec<u8>,
}

/// The writing half of a connection, over TLS or (when configured) in plaintext.
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

struct Driver {
    config: ClientConfig,
    /// TLS to servers (`None` with `insecure_plaintext`).
    tls: Option<tokio_rustls::TlsConnector>,
    /// The identity key of the server connected to (over TLS), for the API to check
    /// grants' statements against.
    server_key: std::sync::Arc<std::sync::Mutex<Option<[u8; 32]>>>,
    writer: Option<Writer>,
    session: Option<Session>,
    heartbeat: Duration,
    ttl: Duration,
    next_id: u64,
    next_ref: u64,
    in_flight: BTreeMap<u64, InFlight>,
    /// Leases held, with the channel that reports their loss.
    leases: HashMap<u64, watch::Sender<Option<String>>>,
    last_heard: Instant,
    /// What the application last said about its user's idleness; said again after every
    /// reconnect, since a restarted server has forgotten it.
    idle: bool,
    /// The address of the server connected to (for keepalives after detaching).
    peer: Option<std::net::SocketAddr>,
    /// A `Detached` answer just read: detach once it has been handled.
    detach_to: Option<usher_proto::Detached>,
    /// While detached: the UDP keepalive state.
    detached: Option<crate::udp::Detached>,
    /// When the application last asked for something (for detaching when idle).
    last_activity: Instant,
    /// The server cannot take keepalives (no UDP port, or none ever acknowledged): stay
    /// connected.
    stay_connected: bool,
    /// Whether a connection (or a detached session kept by UDP keepalives) is up: false
    /// from a lost connection until the session is resumed on a new one.
    connected: watch::Sender<bool>,
}

/// Connects, opens a session and starts the driver.
pub async fn start(
    config: ClientConfig,
    server_key: std::sync::Arc<std::sync::Mutex<Option<[u8; 32]>>>,
) -> Result<
    (
        mpsc::UnboundedSender<Call>,
        SessionInfo,
        watch::Receiver<bool>,
    ),
    ClientError,
> {
    let tls = if config.insecure_plaintext {
        None
    } else {
        Some(
            crate::tls::connector(&config.server_ids)
                .map_err(|e| ClientError::Protocol(format!("setting up TLS: {e}")))?,
        )
    };
    let mut driver = Driver {
        heartbeat: Duration::from_secs(30),
        ttl: Duration::from_secs(120),
        config,
        tls,
        server_key,
        writer: None,
        session: None,
        next_id: 1,
        next_ref: 1,
        in_flight: BTreeMap::new(),
        leases: HashMap::new(),
        last_heard: Instant::now(),
        idle: false,
        peer: None,
        detach_to: None,
        detached: None,
        last_activity: Instant::now(),
        stay_connected: false,
        connected: watch::Sender::new(true),
    };
    let (reader, info) = driver.connect().await?;
    let connected = driver.connected.subscribe();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(driver.run(rx, reader));
    Ok((tx, info, connected))
}

type Reader = FrameReader<Box<dyn AsyncRead + Send + Unpin>>;

async fn read_next(
    reader: &mut Option<Reader>,
) -> Result<Option<Response>, usher_proto::FrameError> {
    match reader {
        Some(r) => r.read::<Response>().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(mut self, mut calls: mpsc::UnboundedReceiver<Call>, reader: Reader) {
        let mut reader = Some(reader);
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        let mut disconnected_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Some(mut detached) = self.detached.take() {
                // No connection: UDP keepalives hold the seats until the application asks
                // for something, the server calls us back, or the keepalives go unanswered.
                let silence = self.silence_limit();
                let call = tokio::select! {
                    call = calls.recv() => Some(call),
                    why = detached.run(silence) => {
                        if matches!(why, crate::udp::Leave::Silent) && !detached.acked {
                            warn!("no keepalive was acknowledged over UDP; staying connected over TCP");
                            self.stay_connected = true;
                        }
                        None
                    }
                };
                self.last_activity = Instant::now();
                match call {
                    Some(Some(Call::Close { reply })) => {
                        self.end_detached().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(None) => {
                        self.end_detached().await;
                        return;
                    }
                    Some(Some(call)) => self.queue_call(call),
                    None => {}
                }
                debug!("resuming the detached session over TCP");
                continue;
            }
            if reader.is_none() {
                self.connected
                    .send_if_modified(|up| std::mem::replace(up, false));
                self.writer = None;
                for f in self.in_flight.values_mut() {
                    f.sent = false;
                    f.remaining_wait();
                }
                match self.connect().await {
                    Ok((r, _)) => {
                        reader = Some(r);
                        self.connected
                            .send_if_modified(|up| !std::mem::replace(up, true));
                        disconnected_since = None;
                        let repeats_idle = self
                            .in_flight
                            .values()
                            .any(|f| matches!(f.kind, request::Kind::Activity(_)));
                        if self.idle && !repeats_idle {
                            let id = self.take_id();
                            let kind =
                                request::Kind::Activity(usher_proto::Activity { idle: true });
                            self.in_flight.insert(id, InFlight::unowned(kind));
                        }
                        backoff = Duration::from_millis(100);
                        heartbeat.reset();
                        if self.flush().await.is_err() {
                            reader = None;
                        }
                        continue;
                    }
                    Err(e) => {
                        let since = *disconnected_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > self.ttl {
                            self.lose_all(
                                "the license server has been out of reach for longer than the \
                                 session TTL",
                            );
                        }
                        debug!("reconnect failed: {e}; retrying in {backoff:?}");
                        // Keep taking calls (and noticing a closed client) while waiting.
                        let sleep = tokio::time::sleep(backoff);
                        tokio::pin!(sleep);
                        loop {
                            tokio::select! {
                                _ = &mut sleep => break,
                                call = calls.recv() => match call {
                                    Some(Call::Close { reply }) => {
                                        let _ = reply.send(());
                                        return;
                                    }
                                    Some(call) => self.queue_call(call),
                                    None => return,
                                },
                            }
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            tokio::select! {
                call = calls.recv() => match call {
                    Some(Call::Close { reply }) => {
                        self.goodbye(&mut reader).await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(call) => {
                        self.queue_call(call);
                        if self.flush().await.is_err() {
                            reader = None;
                        }
                    }
                    None => {
                        // Every handle and license is gone: end the session.
                        self.goodbye(&mut reader).await;
                        return;
                    }
                },
                read = read_next(&mut reader) => match read {
                    Ok(Some(response)) => {
                        self.last_heard = Instant::now();
                        self.handle_response(response);
                        if let Some(d) = self.detach_to.take() {
                            // The server closes the connection next either way.
                            reader = None;
                            self.detach(d).await;
                            continue;
                        }
                        if self.flush().await.is_err() {
                            reader = None;
                        }
                    }
                    Ok(None) | Err(_) => {
                        info!("connection to the license server lost; reconnecting");
                        reader = None;
                    }
                },
                _ = heartbeat.tick() => {
                    self.review_queued();
                    if self.flush().await.is_err() {
                        reader = None;
                        continue;
                    }
                    let id = self.take_id();
                    let hb = Request { id, kind: Some(request::Kind::Heartbeat(Heartbeat {})) };
                    if self.send(&hb).await.is_err() {
                        reader = None;
                    }
                }
                // Idle for long enough: keep the seats with UDP keepalives, without a socket.
                _ = tokio::time::sleep_until(self.last_activity + self.config.detach_after.unwrap_or_default()),
                    if self.may_detach() => {
                    let id = self.take_id();
                    let kind = request::Kind::Detach(usher_proto::Detach {});
                    self.in_flight.insert(id, InFlight::unowned(kind));
                    if self.flush().await.is_err() {
                        reader = None;
                    }
                }
                // Silence for several intervals means the path is dead even if no error has
                // surfaced (a half-open connection): reconnect. A deadline of its own (not a
                // check at the next heartbeat tick) and at most half the TTL, so the resume
                // reaches the server while the session still lives.
                _ = tokio::time::sleep_until(self.last_heard + self.silence_limit()) => {
                    warn!("no word from the license server; reconnecting");
                    reader = None;
                }
            }
        }
    }

    /// How long the connection may stay silent before it is presumed dead: three
    /// heartbeats, but never more than half the session TTL.
    fn silence_limit(&self) -> Duration {
        (self.heartbeat * 3).min(self.ttl / 2)
    }

    /// Whether to detach when idle: configured, possible, and nothing in flight.
    fn may_detach(&self) -> bool {
        self.config.detach_after.is_some()
            && !self.stay_connected
            && !self.config.query_only
            && self.session.is_some()
            && self.in_flight.is_empty()
    }

    /// Leaves the connection (already closing) for UDP keepalives, unless requests are
    /// still waiting for answers: then the next connection resumes the session at once.
    async fn detach(&mut self, d: usher_proto::Detached) {
        self.writer = None;
        let (Some(peer), Some(session), Ok(key)) = (
            self.peer,
            self.session.as_ref(),
            <[u8; usher_proto::udp::KEEPALIVE_KEY_LEN]>::try_from(&d.keepalive_key[..]),
        ) else {
            return;
        };
        if !self.in_flight.is_empty() {
            return;
        }
        let udp = std::net::SocketAddr::new(peer.ip(), d.udp_port as u16);
        let interval = Duration::from_millis(d.keepalive_interval_ms.max(1));
        match crate::udp::Detached::open(udp, session.id, key, interval).await {
            Ok(detached) => {
                debug!(%udp, "detached: keeping the session alive over UDP");
                self.detached = Some(detached);
            }
            Err(e) => {
                warn!("cannot send keepalives to {udp}: {e}; staying connected");
                self.stay_connected = true;
            }
        }
    }

    /// Ends a detached session for good: back over TCP to say goodbye (else its seats
    /// would be held until the TTL runs out).
    async fn end_detached(&mut self) {
        if let Ok((reader, _)) = self.connect().await {
            self.goodbye(&mut Some(reader)).await;
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Records a call; `flush` sends it.
    fn queue_call(&mut self, call: Call) {
        match call {
            Call::Request {
                kind,
                reply,
                lease_watch,
                position,
            } => {
                let mut kind = *kind;
                self.last_activity = Instant::now();
                if let request::Kind::Activity(a) = &kind {
                    self.idle = a.idle;
                }
                let mut wait_until = None;
                if let request::Kind::Borrow(b) = &mut kind {
                    b.client_ref = self.next_ref;
                    self.next_ref += 1;
                }
                if let request::Kind::Checkout(c) = &mut kind {
                    c.client_ref = self.next_ref;
                    self.next_ref += 1;
                    if c.wait && c.wait_ms > 0 {
                        wait_until = Some(Instant::now() + Duration::from_millis(c.wait_ms));
                    }
                }
                let id = self.take_id();
                self.in_flight.insert(
                    id,
                    InFlight {
                        kind,
                        sent: false,
                        reply: Some(reply),
                        lease_watch,
                        position,
                        queued: false,
                        wait_until,
                    },
                );
            }
            Call::Release { lease_id } => {
                if self.leases.remove(&lease_id).is_some() {
                    let id = self.take_id();
                    let kind = request::Kind::Checkin(Checkin { lease_id });
                    self.in_flight.insert(id, InFlight::unowned(kind));
                }
            }
            Call::Close { reply } => {
                // Handled by the caller; answering here keeps the contract if it slips through.
                let _ = reply.send(());
            }
        }
    }

    /// Sends every request not yet sent on this connection, in order.
    async fn flush(&mut self) -> Result<(), std::io::Error> {
        let unsent: Vec<(u64, request::Kind)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| !f.sent)
            .map(|(id, f)| (*id, f.kind.clone()))
            .collect();
        for (id, kind) in unsent {
            self.send(&Request {
                id,
                kind: Some(kind),
            })
            .await?;
            if let Some(f) = self.in_flight.get_mut(&id) {
                f.sent = true;
            }
        }
        Ok(())
    }

    async fn send(&mut self, req: &Request) -> Result<(), std::io::Error> {
        match &mut self.writer {
            Some(w) => usher_proto::write_frame(w, req).await,
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "not connected",
            )),
        }
    }

    fn handle_response(&mut self, mut response: Response) {
        if response.id == 0 {
            // The end of a queued checkout's wait: answer it as if it were the reply.
            let waited = match &response.kind {
                Some(response::Kind::Granted(g)) => Some(g.client_ref),
                Some(response::Kind::Denied(d)) if d.client_ref != 0 => Some(d.client_ref),
                _ => None,
            };
            match waited.and_then(|r| self.queued_flight(r)) {
                // A grant notice carries no statement: a checkout that asked for one (with
                // a nonce) asks again, and the idempotent retry answers with the grant
                // and its statement.
                Some(id) if self.wants_statement(id, &response) => {
                    if let Some(f) = self.in_flight.get_mut(&id) {
                        f.queued = false;
                        f.sent = false;
                    }
                    return;
                }
                Some(id) => response.id = id,
                None => {
                    match response.kind {
                        Some(response::Kind::LeaseLost(l)) => {
                            if let Some(w) = self.leases.remove(&l.lease_id) {
                                let _ = w.send(Some(l.reason));
                            }
                        }
                        // A grant for a wait we no longer track (withdrawn just as it was
                        // granted): give it back. (Not one we hold: a resent checkout and the
                        // grant notice may both bring the same lease.)
                        Some(response::Kind::Granted(g))
                            if g.client_ref != 0 && !self.leases.contains_key(&g.lease_id) =>
                        {
                            let id = self.take_id();
                            let kind = request::Kind::Checkin(Checkin {
                                lease_id: g.lease_id,
                            });
                            self.in_flight.insert(id, InFlight::unowned(kind));
                        }
                        Some(response::Kind::Error(e)) => {
                            warn!("license server reported: {}", e.message)
                        }
                        _ => {}
                    }
                    return;
                }
            }
        }
        if let Some(response::Kind::Queued(q)) = &response.kind
            && let Some(flight) = self.in_flight.get_mut(&response.id)
        {
            // Keep waiting: the outcome arrives as a notice.
            flight.queued = true;
            if let Some(p) = &flight.position {
                let _ = p.send(q.position);
            }
            debug!(position = q.position, feature = %q.feature, "checkout queued");
            return;
        }
        let Some(flight) = self.in_flight.remove(&response.id) else {
            // A heartbeat ack, or an answer to a request resent after a reconnect.
            return;
        };
        let Some(kind) = response.kind else {
            if let Some(reply) = flight.reply {
                let _ = reply.send(Err(ClientError::Protocol(
                    "response of an unknown kind".into(),
                )));
            }
            return;
        };
        if matches!(flight.kind, request::Kind::Detach(_)) {
            match &kind {
                response::Kind::Detached(d) => self.detach_to = Some(d.clone()),
                _ => self.stay_connected = true,
            }
        }
        if let response::Kind::Error(e) = &kind
            && e.code() == ErrorCode::SessionExpired
        {
            // The server no longer knows our session (we were away too long). Every seat is
            // gone; start a new session on the next connection and retry this request there.
            self.lose_all("the session expired and its seats were released");
            self.session = None;
            self.in_flight.insert(
                response.id,
                InFlight {
                    sent: false,
                    ..flight
                },
            );
            self.writer = None;
            return;
        }
        if let response::Kind::Granted(g) = &kind
            && g.borrowed_until_ms == 0
        {
            let watch = flight.lease_watch.unwrap_or_else(|| watch::channel(None).0);
            let delivered = match flight.reply {
                Some(reply) => reply.send(Ok(kind.clone())).is_ok(),
                None => false,
            };
            if delivered {
                self.leases.insert(g.lease_id, watch);
            } else {
                // Nobody is waiting for this grant any more (the caller timed out): give the
                // seat straight back rather than hold it unowned.
                let id = self.take_id();
                let kind = request::Kind::Checkin(Checkin {
                    lease_id: g.lease_id,
                });
                self.in_flight.insert(id, InFlight::unowned(kind));
            }
            return;
        }
        if let Some(reply) = flight.reply {
            let _ = reply.send(Ok(kind));
        }
    }

    /// Whether `response` grants the checkout in flight as `id` without the signed
    /// statement its nonce asked for.
    fn wants_statement(&self, id: u64, response: &Response) -> bool {
        let asked = self
            .in_flight
            .get(&id)
            .is_some_and(|f| matches!(&f.kind, request::Kind::Checkout(c) if !c.nonce.is_empty()));
        asked
            && matches!(&response.kind, Some(response::Kind::Granted(g)) if g.statement.is_empty())
    }

    /// The request id of the queued checkout with this idempotency key.
    fn queued_flight(&self, client_ref: u64) -> Option<u64> {
        self.in_flight
            .iter()
            .find(|(_, f)| f.queued && f.client_ref() == Some(client_ref))
            .map(|(id, _)| *id)
    }

    /// Withdraws queued checkouts whose caller has stopped waiting (dropped the future
    /// or timed out), so they do not take a seat nobody will use, and asks again about
    /// the others: the answer is their current position, or their grant if its notice
    /// was lost (the checkout is idempotent by its `client_ref`).
    fn review_queued(&mut self) {
        for f in self.in_flight.values_mut() {
            // (Once its wait has run out, the server's verdict is on its way: no resend.)
            if f.queued && f.reply.as_ref().is_some_and(|r| !r.is_closed()) && f.remaining_wait() {
                f.sent = false;
            }
        }
        let abandoned: Vec<(u64, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.queued && f.reply.as_ref().is_none_or(|r| r.is_closed()))
            .filter_map(|(id, f)| Some((*id, f.client_ref()?)))
            .collect();
        for (id, client_ref) in abandoned {
            self.in_flight.remove(&id);
            let id = self.take_id();
            let kind = request::Kind::Dequeue(usher_proto::Dequeue { client_ref });
            self.in_flight.insert(id, InFlight::unowned(kind));
        }
    }

    fn lose_all(&mut self, reason: &str) {
        for (_, w) in self.leases.drain() {
            let _ = w.send(Some(reason.to_string()));
        }
    }

    async fn goodbye(&mut self, reader: &mut Option<Reader>) {
        let _ = self.flush().await;
        let id = self.take_id();
        let bye = Request {
            id,
            kind: Some(request::Kind::Goodbye(Goodbye {})),
        };
        if self.send(&bye).await.is_err() {
            return;
        }
        // Wait (briefly) for the server to confirm, so the seats are surely released
        // before the process goes on (or exits).
        let wait = async {
            while let Ok(Some(r)) = read_next(reader).await {
                if r.id == id {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(self.config.request_timeout, wait).await;
    }

    /// Connects to the first server that answers and opens or resumes the session.
    async fn connect(&mut self) -> Result<(Reader, SessionInfo), ClientError> {
        if self.config.servers.is_empty() {
            self.discover().await?;
        }
        let servers = self.config.servers.clone();
        let mut last = String::from("no servers configured");
        for server in &servers {
            let attempt = tokio::time::timeout(self.config.connect_timeout, self.handshake(server));
            match attempt.await {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(ClientError::Unreachable { detail, .. })) => {
                    last = format!("{server}: {detail}")
                }
                // Refused for want of room (or time): another server may have it.
                Ok(Err(ClientError::Server {
                    code: ErrorCode::TooManyConnections | ErrorCode::HandshakeTimeout,
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
        &mut self,
        server: &ServerAddr,
    ) -> Result<(Reader, SessionInfo), ClientError> {
        let unreachable = |e: std::io::Error| ClientError::Unreachable {
            servers: server.to_string(),
            detail: e.to_string(),
        };
        let stream = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(unreachable)?;
        let _ = stream.set_nodelay(true);
        self.peer = stream.peer_addr().ok();
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
        let mut reader = FrameReader::new(rd);
        self.writer = Some(wr);
        loop {
            let id = self.take_id();
            let hello = self.hello();
            let resuming = hello.resume_session != 0;
            self.send(&Request {
                id,
                kind: Some(request::Kind::Hello(hello)),
            })
            .await
            .map_err(unreachable)?;
            let response = loop {
                match reader.read::<Response>().await {
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
                    self.last_heard = Instant::now();
                    let info = self.welcomed(&w, server);
                    return Ok((reader, info));
                }
                Some(response::Kind::Error(e))
                    if resuming && e.code() == ErrorCode::SessionExpired =>
                {
                    info!("session expired on the server; opening a new one");
                    self.lose_all("the session expired and its seats were released");
                    self.session = None;
                }
                Some(response::Kind::Error(e)) => {
                    return Err(ClientError::Server {
                        code: e.code(),
                        message: e.message,
                    });
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected Welcome, got {other:?}"
                    )));
                }
            }
        }
    }

    fn hello(&self) -> Hello {
        use usher_proto::names::{Field, fit};
        let id = &self.config.identity;
        Hello {
            magic: usher_proto::MAGIC.to_string(),
            protocol_version: usher_proto::PROTOCOL_VERSION,
            client_version: concat!("usher-client ", env!("CARGO_PKG_VERSION")).to_string(),
            // Clipped to the protocol's rules rather than refused for them.
            user: fit(Field::User, &id.user),
            host: fit(Field::Host, &id.host),
            display: fit(Field::Display, &id.display),
            pid: id.pid,
            program: fit(Field::Program, &id.program),
            program_version: fit(Field::ProgramVersion, &id.program_version),
            resume_session: self.session.as_ref().map_or(0, |s| s.id),
            resume_secret: self
                .session
                .as_ref()
                .map(|s| s.secret.clone())
                .unwrap_or_default(),
            query_only: self.config.query_only,
        }
    }

    fn welcomed(&mut self, w: &Welcome, server: &ServerAddr) -> SessionInfo {
        if w.heartbeat_interval_ms > 0 {
            self.heartbeat = Duration::from_millis(w.heartbeat_interval_ms);
        }
        if w.session_ttl_ms > 0 {
            self.ttl = Duration::from_millis(w.session_ttl_ms);
        }
        if w.resumed {
            // Any lease we hold that the server no longer lists was released while we were
            // away (for example by an administrator).
            let held: std::collections::HashSet<u64> =
                w.leases.iter().map(|l| l.lease_id).collect();
            let gone: Vec<u64> = self
                .leases
                .keys()
                .filter(|id| !held.contains(id))
                .copied()
                .collect();
            for id in gone {
                if let Some(w) = self.leases.remove(&id) {
                    let _ = w.send(Some(
                        "the server released this license while the client was away".into(),
                    ));
                }
            }
            debug!(session = w.session_id, "session resumed");
        } else if w.session_id != 0 {
            self.session = Some(Session {
                id: w.session_id,
                secret: w.session_secret.clone(),
            });
        }
        SessionInfo {
            server_version: w.server_version.clone(),
            server_name: w.server_name.clone(),
            server: server.clone(),
            heartbeat_interval: self.heartbeat,
            session_ttl: self.ttl,
        }
    }
}

/// What a client is told when a server closes the connection without a word, as a server
/// does (so as to tell a stranger nothing) when the peer is outside its allow-list or it is
/// too busy to say why; a server that refuses for a reason it may give says so instead.
const SILENT_CLOSE_CAUSES: &str = "possible causes: this address is not in the server's \
     allow-list, or the server is overloaded (too many connections being refused at once)";

/// Whether a connection error means the peer closed or reset the connection (rather
/// than, say, a bad key).
fn closed_silently(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}
