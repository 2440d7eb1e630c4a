//! How the core handles what the server says: answers routed to their callers, queue
//! notices, lost leases, and the answers that end the connection (a detach, an expired
//! session).

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};
use usher_proto::{Checkin, ErrorCode, Response, request, response};

use super::{Core, InFlight, Keepalives, Link, Next};
use crate::ClientError;

impl Core {
    /// Handles a response read at `now`, and says what the task does next.
    pub fn response(&mut self, response: Response, now: Instant) -> Next {
        self.last_heard = now;
        match self.route(response) {
            Routed::Done => Next::Send,
            Routed::Detach(d) => self.detach(&d, now),
            Routed::Expired => {
                // Start a new session on the next connection, and retry there.
                self.connection_lost(now);
                Next::Reconnect
            }
        }
    }

    /// Routes a response to its caller (or acts on a notice).
    fn route(&mut self, mut response: Response) -> Routed {
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
                    return Routed::Done;
                }
                Some(id) => response.id = id,
                None => {
                    self.notice(response.kind);
                    return Routed::Done;
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
            return Routed::Done;
        }
        let Some(flight) = self.in_flight.remove(&response.id) else {
            // A heartbeat ack, or an answer to a request resent after a reconnect.
            return Routed::Done;
        };
        let Some(kind) = response.kind else {
            if let Some(reply) = flight.reply {
                let _ = reply.send(Err(ClientError::Protocol(
                    "response of an unknown kind".into(),
                )));
            }
            return Routed::Done;
        };
        let mut routed = Routed::Done;
        if matches!(flight.kind, request::Kind::Detach(_)) {
            match &kind {
                response::Kind::Detached(d) => routed = Routed::Detach(d.clone()),
                _ => self.stay_connected = true,
            }
        }
        if let response::Kind::Error(e) = &kind
            && e.code() == ErrorCode::SessionExpired
        {
            // The server no longer knows our session (we were away too long). Every seat is
            // gone; the request is retried on the next connection, in a new session.
            self.resume_refused();
            self.in_flight.insert(
                response.id,
                InFlight {
                    sent: false,
                    ..flight
                },
            );
            return Routed::Expired;
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
                self.queue(request::Kind::Checkin(Checkin {
                    lease_id: g.lease_id,
                }));
            }
            return routed;
        }
        if let Some(reply) = flight.reply {
            let _ = reply.send(Ok(kind));
        }
        routed
    }

    /// A notice (a response with id 0) about no queued checkout of ours.
    fn notice(&mut self, kind: Option<response::Kind>) {
        match kind {
            Some(response::Kind::LeaseLost(l)) => {
                if let Some(w) = self.leases.remove(&l.lease_id) {
                    // The watch carries the reason's words: a typed cause is put in this
                    // client's own (which read back as that reason); a notice without one
                    // (an older server's) keeps the server's.
                    let reason = if l.cause() == usher_proto::LossCause::Unspecified {
                        l.reason
                    } else {
                        crate::LossReason::from_lease_lost(&l).to_string()
                    };
                    let _ = w.send(Some(reason));
                }
            }
            // A grant for a wait we no longer track (withdrawn just as it was granted):
            // give it back. (Not one we hold: a resent checkout and the grant notice may
            // both bring the same lease.)
            Some(response::Kind::Granted(g))
                if g.client_ref != 0 && !self.leases.contains_key(&g.lease_id) =>
            {
                self.queue(request::Kind::Checkin(Checkin {
                    lease_id: g.lease_id,
                }));
            }
            Some(response::Kind::Error(e)) => warn!("license server reported: {}", e.message),
            _ => {}
        }
    }

    /// The server agreed to detach (and closes the connection next either way): leave
    /// for UDP keepalives, unless requests are still waiting for answers (or the answer
    /// cannot be used): then reconnect, resuming the session at once.
    fn detach(&mut self, d: &usher_proto::Detached, now: Instant) -> Next {
        let (Link::Connected { peer: Some(peer) }, Some(session), Ok(key)) = (
            &self.link,
            self.session.as_ref(),
            <[u8; usher_proto::udp::KEEPALIVE_KEY_LEN]>::try_from(&d.keepalive_key[..]),
        ) else {
            self.connection_lost(now);
            return Next::Reconnect;
        };
        if !self.in_flight.is_empty() {
            self.connection_lost(now);
            return Next::Reconnect;
        }
        let keepalives = Keepalives {
            udp: std::net::SocketAddr::new(peer.ip(), d.udp_port as u16),
            session: session.id,
            key,
            interval: std::time::Duration::from_millis(d.keepalive_interval_ms.max(1)),
        };
        self.set_link(Link::Detached {
            udp: keepalives.udp,
        });
        Next::Detach(keepalives)
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
}

/// What routing a response led to.
enum Routed {
    /// Nothing more.
    Done,
    /// The server agreed to detach.
    Detach(usher_proto::Detached),
    /// The server no longer knows the session.
    Expired,
}
