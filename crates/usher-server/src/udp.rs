//! The UDP port beside the TCP listener: session keepalives and discovery.
//!
//! **Keepalives.** A client that has its seats and nothing more to ask may *detach*: it
//! sends `Detach` over TCP, gets a fresh per-session keepalive key, and closes the
//! connection. From then on a 45-byte datagram every heartbeat interval keeps the session
//! (and its seats) alive, so a server holds a million sessions without a million sockets.
//! A keepalive is checked against the table of [`crate::keepalives`]; only if it passes is
//! the session touched in the ledger, and only once the ledger has done so is a (smaller)
//! tagged acknowledgement sent back. A session that has ended gets no answer,
//! so its client, missing acknowledgements, comes back over TCP. Every refused datagram is
//! counted by reason (`usher_udp_datagrams_total`), never answered.
//!
//! **Discovery.** A client with no server configured broadcasts a (padded) discovery
//! request; the server answers with its TCP port and the vendors it serves, nothing more,
//! to peers on the client allow-list, unless discovery is off. Answers are budgeted per
//! second: each sender (an IP address) gets at most its share, [`ANSWERS_PER_SENDER`], and
//! all senders together at most [`ANSWERS_PER_SECOND`], the last [`FIRST_ANSWER_RESERVE`]
//! of which go only to senders not yet answered in that second. So one sender, or a few,
//! flooding requests cannot silence discovery for everyone else; a sender over its share is
//! dropped and counted (`over_share`), never answered. (A flood of requests with spoofed
//! source addresses can still use up the budget: nothing tells a spoofed UDP sender from a
//! real one. It gains nothing from doing so: answers are never larger than requests.)

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use usher_core::SessionId;
use usher_proto::udp::{self, Inbound, KEEPALIVE_KEY_LEN};

use crate::access::Cidr;
use crate::keepalives::Keepalives;
use crate::ledger_task::LedgerHandle;
use crate::metrics::{Metrics, UdpResult};

/// Most discovery answers per second, all senders together (a spoofed flood of requests
/// cannot turn the server into a firehose). Also the most senders the discovery budget
/// remembers at once: only answered senders are remembered, for the current second.
pub const ANSWERS_PER_SECOND: u32 = 200;

/// Most discovery answers per second to one sender (IP address): a client asks once per
/// discovery, so this leaves room for several starting on one host at once.
pub const ANSWERS_PER_SENDER: u32 = 10;

/// Of [`ANSWERS_PER_SECOND`], how many are kept for senders not yet answered in the
/// current second, so that many flooding senders together cannot take them all.
pub const FIRST_ANSWER_RESERVE: u32 = 50;

/// What discovery answers with.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The TCP port clients connect to.
    pub tcp_port: u16,
    /// Whether that port requires TLS.
    pub tls: bool,
    /// Vendors served.
    pub vendors: Vec<String>,
}

/// What the UDP task needs.
#[derive(Debug)]
pub struct UdpContext {
    /// Keys of detached sessions.
    pub keepalives: Arc<Keepalives>,
    /// The ledger, to touch sessions.
    pub ledger: LedgerHandle,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The client allow-list (everyone when empty).
    pub allow: Vec<Cidr>,
    /// Discovery answers, or `None` when discovery is off.
    pub discovery: Option<Discovery>,
    /// Session TTL (keys of sessions silent this long are dropped).
    pub session_ttl: Duration,
}

impl UdpContext {
    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }
}

/// Most datagrams read in one go (the first awaited, the rest already waiting), whose
/// keepalives then touch the ledger in one message.
const BATCH: usize = 256;

/// Batches of keepalives waiting for the ledger at once; beyond that the socket is not
/// read (and the kernel drops what does not fit its buffer).
const BATCHES_IN_FLIGHT: usize = 16;

/// A keepalive that passed every check, waiting for the ledger to touch its session.
struct Good {
    keepalive: udp::Keepalive,
    key: [u8; KEEPALIVE_KEY_LEN],
    flags: u8,
    peer: SocketAddr,
}

/// Serves the UDP socket until `stop`.
pub async fn serve(socket: UdpSocket, ctx: Arc<UdpContext>, stop: CancellationToken) {
    let socket = Arc::new(socket);
    // Larger datagrams arrive cut to this size and are then refused as garbage.
    let mut buf = [0u8; 512];
    let mut sweep = tokio::time::interval(ctx.session_ttl);
    let mut answers = AnswerBudget::default();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut good = Vec::with_capacity(BATCH);
    loop {
        let (len, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            _ = sweep.tick() => {
                ctx.keepalives.sweep(ctx.session_ttl);
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP port-unreachable from an earlier answer and the like: nothing to do.
                Err(e) => {
                    debug!("UDP receive failed: {e}");
                    continue;
                }
            },
        };
        judge(&ctx, &socket, &buf[..len], peer, &mut answers, &mut good).await;
        // Whatever else has arrived meanwhile joins the batch.
        for _ in 1..BATCH {
            let Ok((len, peer)) = socket.try_recv_from(&mut buf) else {
                break;
            };
            judge(&ctx, &socket, &buf[..len], peer, &mut answers, &mut good).await;
        }
        if good.is_empty() {
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let batch = std::mem::replace(&mut good, Vec::with_capacity(BATCH));
        tokio::spawn(touch(ctx.clone(), socket.clone(), batch, permit));
    }
}

/// Sorts one datagram: a keepalive that passes every check joins `good`, a discovery
/// request is answered, anything else is counted and dropped.
async fn judge(
    ctx: &UdpContext,
    socket: &UdpSocket,
    datagram: &[u8],
    peer: SocketAddr,
    answers: &mut AnswerBudget,
    good: &mut Vec<Good>,
) {
    #[cfg(feature = "fault-injection")]
    crate::fault::on_datagram(datagram);
    if !ctx.allowed(peer.ip()) {
        ctx.metrics.udp(UdpResult::NotAllowed);
        return;
    }
    match udp::decode_inbound(datagram) {
        Err(_) => ctx.metrics.udp(UdpResult::Garbage),
        Ok(Inbound::Keepalive(k, whole)) => match ctx.keepalives.accept(&k, whole) {
            Err(why) => ctx.metrics.udp(why),
            Ok((key, flags)) => good.push(Good {
                keepalive: k,
                key,
                flags,
                peer,
            }),
        },
        Ok(Inbound::Discover(nonce)) => {
            let Some(d) = &ctx.discovery else {
                ctx.metrics.udp(UdpResult::DiscoveryOff);
                return;
            };
            if let Err(why) = answers.take(peer.ip(), Instant::now()) {
                ctx.metrics.udp(why);
                return;
            }
            let announce = udp::Announce {
                nonce,
                tcp_port: d.tcp_port,
                flags: if d.tls { udp::ANNOUNCE_TLS } else { 0 },
                vendors: d.vendors.clone(),
            };
            let _ = socket.send_to(&udp::encode_announce(&announce), peer).await;
            ctx.metrics.udp(UdpResult::Discovered);
        }
    }
}

/// Touches a batch of sessions in the ledger and acknowledges each keepalive whose
/// session is alive; the keys of the others are forgotten, unanswered, so their clients
/// come back over TCP and learn that the session ended.
async fn touch(
    ctx: Arc<UdpContext>,
    socket: Arc<UdpSocket>,
    batch: Vec<Good>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let ids = batch
        .iter()
        .map(|g| SessionId(g.keepalive.session))
        .collect();
    let Ok(alive) = ctx.ledger.touch(ids).await else {
        return;
    };
    for (g, alive) in batch.iter().zip(alive) {
        if !alive {
            ctx.metrics.udp(UdpResult::SessionEnded);
            ctx.keepalives.forget(g.keepalive.session);
            continue;
        }
        ctx.metrics.udp(UdpResult::Keepalive);
        let ack = udp::Ack {
            session: g.keepalive.session,
            seq: g.keepalive.seq,
            flags: g.flags,
        };
        let _ = socket.send_to(&udp::encode_ack(&ack, &g.key), g.peer).await;
    }
}

/// Discovery answers left in the current second, per sender and in all (see the module
/// documentation). Holds one entry per sender answered this second, so at most
/// [`ANSWERS_PER_SECOND`] entries whatever the number of senders.
struct AnswerBudget {
    /// When the current second began.
    since: Instant,
    /// Answers given this second, all senders together.
    total: u32,
    /// Answers given this second, per sender answered.
    by_sender: HashMap<IpAddr, u32>,
}

impl Default for AnswerBudget {
    fn default() -> Self {
        AnswerBudget {
            since: Instant::now(),
            total: 0,
            by_sender: HashMap::new(),
        }
    }
}

impl AnswerBudget {
    /// Takes one answer for `sender` at `now`, or says why there is none.
    fn take(&mut self, sender: IpAddr, now: Instant) -> Result<(), UdpResult> {
        if now.saturating_duration_since(self.since) >= Duration::from_secs(1) {
            self.since = now;
            self.total = 0;
            self.by_sender.clear();
        }
        let given = self.by_sender.get(&sender).copied().unwrap_or(0);
        let room = if given == 0 {
            ANSWERS_PER_SECOND
        } else {
            ANSWERS_PER_SECOND - FIRST_ANSWER_RESERVE
        };
        if given >= ANSWERS_PER_SENDER || (given > 0 && self.total >= room) {
            return Err(UdpResult::OverShare);
        }
        if self.total >= room {
            return Err(UdpResult::RateLimited);
        }
        self.total += 1;
        self.by_sender.insert(sender, given + 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sender_gets_its_share_and_newcomers_keep_a_reserve() {
        let mut budget = AnswerBudget::default();
        let t0 = budget.since;
        let ip = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        for _ in 0..ANSWERS_PER_SENDER {
            assert_eq!(budget.take(ip(1), t0), Ok(()));
        }
        assert_eq!(budget.take(ip(1), t0), Err(UdpResult::OverShare));
        assert_eq!(budget.take(ip(2), t0), Ok(()), "another sender is answered");
        // Flooders fill the budget up to the reserve ...
        let mut n = 3;
        while budget.total < ANSWERS_PER_SECOND - FIRST_ANSWER_RESERVE {
            let _ = budget.take(ip(n / ANSWERS_PER_SENDER + 3), t0);
            n += 1;
        }
        assert_eq!(budget.take(ip(2), t0), Err(UdpResult::OverShare));
        // ... which still answers first-time senders, until it is gone too.
        for k in 0..FIRST_ANSWER_RESERVE {
            assert_eq!(budget.take(ip(10_000 + k), t0), Ok(()));
        }
        assert_eq!(budget.take(ip(20_000), t0), Err(UdpResult::RateLimited));
        assert!(budget.by_sender.len() <= ANSWERS_PER_SECOND as usize);
        // A second later every budget is whole again.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(budget.take(ip(1), t1), Ok(()));
        assert_eq!(budget.by_sender.len(), 1);
    }
}
