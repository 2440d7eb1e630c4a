//! The driver's sans-IO core: every decision the background task makes, and none of
//! its I/O.
//!
//! [`Core`] owns what outlives a connection: the session, the requests waiting for an
//! answer (by request id), the leases held and the channels that report their loss, and
//! the state of the link to the server ([`Link`]). The task feeds it events (a call
//! from the API, a response read, a lost connection, a welcome, a timer) and does what
//! it answers: send these requests, drop the connection and reconnect, detach to UDP
//! keepalives. Time comes in as an argument; the core never reads a clock, opens a
//! socket or awaits, so its tests drive it step by step without a network or a runtime.
//!
//! Requests waiting for an answer are kept until answered: after a reconnect they are
//! sent again, which is safe because checkouts carry an idempotency key (`client_ref`)
//! and checkins are idempotent on the server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;
use usher_proto::{Checkin, Heartbeat, Hello, Request, Welcome, request};

use super::{Call, LeaseWatch, Reply};
use crate::{ClientConfig, ServerAddr, SessionInfo};

mod respond;
#[cfg(test)]
mod tests;

/// The first wait between failed reconnects; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between failed reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why every lease is lost when the server stays out of reach.
const OUT_OF_REACH: &str =
    "the license server has been out of reach for longer than the session TTL";

/// Why every lease is lost when the server no longer knows the session.
const EXPIRED: &str = "the session expired and its seats were released";

/// The state of the link to the server.
///
/// **Invariant:** the task holds an open connection exactly while the link is
/// `Connected`, and a keepalive socket exactly while it is `Detached`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    /// A connection is up and the session is open on it.
    Connected {
        /// The server's address (where keepalives go after detaching).
        peer: Option<SocketAddr>,
    },
    /// No connection: the task connects (again), waiting `backoff` after each failure.
    Reconnecting {
        /// When the link went down (every lease is lost once the server has been out of
        /// reach for longer than the session TTL).
        since: Instant,
        /// How long to wait after the next failed attempt.
        backoff: Duration,
    },
    /// No connection by choice: UDP keepalives hold the session's seats until the
    /// application asks for something, the server calls back, or the keepalives go
    /// unanswered.
    Detached {
        /// Where the keepalives go.
        udp: SocketAddr,
    },
}

/// What the task does after the core has handled a response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Keep the connection and send what [`Core::take_unsent`] gives.
    Send,
    /// Drop the connection and connect again (the link is already `Reconnecting`).
    Reconnect,
    /// Drop the connection and keep the session alive over UDP (the link is already
    /// `Detached`).
    Detach(Keepalives),
}

/// Where and how a detached session sends its keepalives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keepalives {
    /// The server's UDP address.
    pub udp: SocketAddr,
    /// The session kept alive.
    pub session: u64,
    /// The key that authenticates the keepalives.
    pub key: [u8; usher_proto::udp::KEEPALIVE_KEY_LEN],
    /// How often to send one.
    pub interval: Duration,
}

/// A request waiting for its answer.
#[derive(Debug)]
struct InFlight {
    kind: request::Kind,
    /// Whether it went out on the current connection.
    sent: bool,
    /// Where the answer goes (`None` for checkins sent on behalf of a dropped `License`).
    reply: Option<Reply>,
    lease_watch: Option<LeaseWatch>,
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
    /// its wait at `now`, so a resend that crosses the server's timeout cannot queue it
    /// afresh. Returns whether any of the wait is left.
    fn remaining_wait(&mut self, now: Instant) -> bool {
        if let (request::Kind::Checkout(c), Some(until)) = (&mut self.kind, self.wait_until) {
            let left = until.saturating_duration_since(now).as_millis() as u64;
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

    /// Whether the caller still waits for the answer.
    fn awaited(&self) -> bool {
        self.reply.as_ref().is_some_and(|r| !r.is_closed())
    }
}

#[derive(Debug)]
struct Session {
    id: u64,
    secret: Vec<u8>,
}

/// The driver's state and decisions (see the module docs).
#[derive(Debug)]
pub(crate) struct Core {
    link: Link,
    session: Option<Session>,
    heartbeat: Duration,
    ttl: Duration,
    next_id: u64,
    next_ref: u64,
    in_flight: BTreeMap<u64, InFlight>,
    /// Leases held, with the channel that reports their loss.
    leases: HashMap<u64, LeaseWatch>,
    last_heard: Instant,
    /// When the application last asked for something (for detaching when idle).
    last_activity: Instant,
    /// What the application last said about its user's idleness; said again after every
    /// reconnect, since a restarted server has forgotten it.
    idle: bool,
    /// The server cannot take keepalives (no UDP port, or none ever acknowledged): stay
    /// connected.
    stay_connected: bool,
    /// Detach after this long without a call (`None`: never).
    detach_after: Option<Duration>,
    query_only: bool,
    /// The hello sent on every connection, but for the session to resume.
    hello: Hello,
    /// Whether the link is up: `Connected` or `Detached` (a session kept by UDP
    /// keepalives) rather than `Reconnecting`.
    connected: watch::Sender<bool>,
}

impl Core {
    /// A core with no session yet, about to make its first connection at `now`.
    pub fn new(config: &ClientConfig, now: Instant) -> Core {
        use usher_proto::names::{Field, fit};
        let id = &config.identity;
        let hello = Hello {
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
            resume_session: 0,
            resume_secret: Vec::new(),
            query_only: config.query_only,
        };
        Core {
            link: Link::Reconnecting {
                since: now,
                backoff: FIRST_BACKOFF,
            },
            session: None,
            heartbeat: Duration::from_secs(30),
            ttl: Duration::from_secs(120),
            next_id: 1,
            next_ref: 1,
            in_flight: BTreeMap::new(),
            leases: HashMap::new(),
            last_heard: now,
            last_activity: now,
            idle: false,
            stay_connected: false,
            detach_after: config.detach_after,
            query_only: config.query_only,
            hello,
            connected: watch::Sender::new(false),
        }
    }

    /// The state of the link.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Follows whether the link is up (see [`crate::Client::connection`]).
    pub fn subscribe_connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// The heartbeat interval the server asked for.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// How long the connection may stay silent before it is presumed dead: three
    /// heartbeats, but never more than half the session TTL.
    pub fn silence_limit(&self) -> Duration {
        (self.heartbeat * 3).min(self.ttl / 2)
    }

    /// When the connection is presumed dead if nothing is heard before. A deadline of
    /// its own (not a check at the next heartbeat) and at most half the TTL after the
    /// last word, so the resume reaches the server while the session still lives.
    pub fn silence_deadline(&self) -> Instant {
        self.last_heard + self.silence_limit()
    }

    /// When to detach if nothing happens before (`None`: not now).
    pub fn detach_deadline(&self) -> Option<Instant> {
        let after = self.detach_after?;
        let may = !self.stay_connected
            && !self.query_only
            && self.session.is_some()
            && self.in_flight.is_empty();
        may.then(|| self.last_activity + after)
    }

    /// The next request id. Ids only grow, across connections, so an answer to a
    /// request sent on an earlier connection can never be taken for another's.
    pub fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The hello for a new connection: it resumes the session, if there is one.
    pub fn hello(&self) -> Hello {
        Hello {
            resume_session: self.session.as_ref().map_or(0, |s| s.id),
            resume_secret: self
                .session
                .as_ref()
                .map(|s| s.secret.clone())
                .unwrap_or_default(),
            ..self.hello.clone()
        }
    }

    /// The server refused to resume the session (it expired there): every seat is gone,
    /// and the next hello opens a new session.
    pub fn resume_refused(&mut self) {
        self.lose_all(EXPIRED);
        self.session = None;
    }

    /// The server welcomed us on a new connection to `server` (at `peer`) at `now`.
    pub fn welcomed(
        &mut self,
        w: &Welcome,
        server: &ServerAddr,
        peer: Option<SocketAddr>,
        now: Instant,
    ) -> SessionInfo {
        self.last_heard = now;
        if w.heartbeat_interval_ms > 0 {
            self.heartbeat = Duration::from_millis(w.heartbeat_interval_ms);
        }
        if w.session_ttl_ms > 0 {
            self.ttl = Duration::from_millis(w.session_ttl_ms);
        }
        if w.resumed {
            // Any lease we hold that the server no longer lists was released while we were
            // away (for example by an administrator).
            let held: HashSet<u64> = w.leases.iter().map(|l| l.lease_id).collect();
            self.leases.retain(|id, lost| {
                held.contains(id) || {
                    let _ = lost.send(Some(
                        "the server released this license while the client was away".into(),
                    ));
                    false
                }
            });
            debug!(session = w.session_id, "session resumed");
        } else if w.session_id != 0 {
            self.session = Some(Session {
                id: w.session_id,
                secret: w.session_secret.clone(),
            });
        }
        self.set_link(Link::Connected { peer });
        SessionInfo {
            server_version: w.server_version.clone(),
            server_name: w.server_name.clone(),
            server: server.clone(),
            heartbeat_interval: self.heartbeat,
            session_ttl: self.ttl,
        }
    }

    /// After a welcome that ends a `Reconnecting` spell at `now`: waiting checkouts
    /// ask only for what is left of their wait, and the user's idleness is said again.
    /// Everything in flight goes out by [`Core::take_unsent`].
    pub fn reconnected(&mut self, now: Instant) {
        for f in self.in_flight.values_mut() {
            f.remaining_wait(now);
        }
        let repeats_idle = self
            .in_flight
            .values()
            .any(|f| matches!(f.kind, request::Kind::Activity(_)));
        if self.idle && !repeats_idle {
            let kind = request::Kind::Activity(usher_proto::Activity { idle: true });
            self.queue(kind);
        }
    }

    /// The connection was lost (or given up) at `now`: every request in flight is to
    /// be sent again on the next one.
    pub fn connection_lost(&mut self, now: Instant) {
        for f in self.in_flight.values_mut() {
            f.sent = false;
        }
        self.set_link(Link::Reconnecting {
            since: now,
            backoff: FIRST_BACKOFF,
        });
    }

    /// An attempt to reconnect failed at `now`. Returns how long to wait before the
    /// next one. Once the server has been out of reach for longer than the session TTL,
    /// every lease is lost (the server has released them by now).
    pub fn connect_failed(&mut self, now: Instant) -> Duration {
        let Link::Reconnecting { since, backoff } = &mut self.link else {
            return FIRST_BACKOFF;
        };
        let wait = *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        if now.saturating_duration_since(*since) > self.ttl {
            self.lose_all(OUT_OF_REACH);
        }
        wait
    }

    /// Opening the keepalive socket failed: connect again, and stay connected.
    pub fn keepalives_failed(&mut self, now: Instant) {
        self.stay_connected = true;
        self.connection_lost(now);
    }

    /// The detached session goes back to TCP at `now`: the application asked for
    /// something, the server called back, or (`unanswered`) no keepalive was ever
    /// acknowledged, in which case the client stays connected from now on.
    pub fn leave_detached(&mut self, now: Instant, unanswered: bool) {
        if unanswered {
            tracing::warn!("no keepalive was acknowledged over UDP; staying connected over TCP");
            self.stay_connected = true;
        }
        self.last_activity = now;
        self.connection_lost(now);
    }

    /// Records a call from the API at `now`; [`Core::take_unsent`] gives what to send.
    pub fn call(&mut self, call: Call, now: Instant) {
        match call {
            Call::Request {
                kind,
                reply,
                lease_watch,
                position,
            } => {
                let mut kind = *kind;
                self.last_activity = now;
                if let request::Kind::Activity(a) = &kind {
                    self.idle = a.idle;
                }
                let mut wait_until = None;
                if let request::Kind::Borrow(b) = &mut kind {
                    b.client_ref = self.take_ref();
                }
                if let request::Kind::Checkout(c) = &mut kind {
                    c.client_ref = self.take_ref();
                    if c.wait && c.wait_ms > 0 {
                        wait_until = Some(now + Duration::from_millis(c.wait_ms));
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
                    self.queue(request::Kind::Checkin(Checkin { lease_id }));
                }
            }
            Call::Close { reply } => {
                // Handled by the task; answering here keeps the contract if it slips through.
                let _ = reply.send(());
            }
        }
    }

    /// Idle for long enough (see [`Core::detach_deadline`]): ask the server to let the
    /// session go on without a connection.
    pub fn ask_detach(&mut self) {
        self.queue(request::Kind::Detach(usher_proto::Detach {}));
    }

    /// The heartbeat timer fired at `now`: review the queued checkouts, then send what
    /// is unsent and a heartbeat.
    pub fn tick(&mut self, now: Instant) -> Vec<Request> {
        self.review_queued(now);
        let mut out = self.take_unsent();
        out.push(Request {
            id: self.take_id(),
            kind: Some(request::Kind::Heartbeat(Heartbeat {})),
        });
        out
    }

    /// Every request not yet sent on this connection, in order (of id), now counted as
    /// sent. (If writing them fails, the connection is lost and they go out again.)
    pub fn take_unsent(&mut self) -> Vec<Request> {
        self.in_flight
            .iter_mut()
            .filter(|(_, f)| !f.sent)
            .map(|(id, f)| {
                f.sent = true;
                Request {
                    id: *id,
                    kind: Some(f.kind.clone()),
                }
            })
            .collect()
    }

    /// Ending the session: what is unsent, then a goodbye, whose id is returned too (the
    /// task waits for its answer).
    pub fn goodbye(&mut self) -> (Vec<Request>, u64) {
        let mut out = self.take_unsent();
        let id = self.take_id();
        out.push(Request {
            id,
            kind: Some(request::Kind::Goodbye(usher_proto::Goodbye {})),
        });
        (out, id)
    }

    /// Withdraws queued checkouts whose caller has stopped waiting (dropped the future
    /// or timed out), so they do not take a seat nobody will use, and asks again about
    /// the others: the answer is their current position, or their grant if its notice
    /// was lost (the checkout is idempotent by its `client_ref`).
    fn review_queued(&mut self, now: Instant) {
        for f in self.in_flight.values_mut() {
            // (Once its wait has run out, the server's verdict is on its way: no resend.)
            if f.queued && f.awaited() && f.remaining_wait(now) {
                f.sent = false;
            }
        }
        let abandoned: Vec<(u64, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.queued && !f.awaited())
            .filter_map(|(id, f)| Some((*id, f.client_ref()?)))
            .collect();
        for (id, client_ref) in abandoned {
            self.in_flight.remove(&id);
            self.queue(request::Kind::Dequeue(usher_proto::Dequeue { client_ref }));
        }
    }

    /// Puts a request sent on nobody's behalf in flight.
    fn queue(&mut self, kind: request::Kind) {
        let id = self.take_id();
        self.in_flight.insert(id, InFlight::unowned(kind));
    }

    fn take_ref(&mut self) -> u64 {
        let r = self.next_ref;
        self.next_ref += 1;
        r
    }

    fn lose_all(&mut self, reason: &str) {
        for (_, w) in self.leases.drain() {
            let _ = w.send(Some(reason.to_string()));
        }
    }

    fn set_link(&mut self, link: Link) {
        let up = !matches!(link, Link::Reconnecting { .. });
        self.connected
            .send_if_modified(|was| std::mem::replace(was, up) != up);
        self.link = link;
    }
}
