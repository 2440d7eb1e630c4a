//! The UDP port beside the TCP listener: session keepalives and discovery.
//!
//! **Keepalives.** A client that has its seats and nothing more to ask may *detach*: it
//! sends `Detach` over TCP, gets a fresh per-session keepalive key, and closes the
//! connection. From then on a 45-byte datagram every heartbeat interval keeps the session
//! (and its seats) alive, so a server holds a million sessions without a million sockets.
//! A keepalive is accepted only if
//!
//! 1. its session has a key here (a map lookup: unknown ids cost nothing more),
//! 2. its sequence number is above every one accepted before (no replay),
//! 3. its "ms since the key was issued" is within [`WINDOW`] of the server's own figure
//!    (no replay of a datagram held back for later), and
//! 4. its HMAC tag verifies under the session's key.
//!
//! Only then is the session touched in the ledger, and only once the ledger has done so is
//! a (smaller) tagged acknowledgement sent back. A session that has ended gets no answer,
//! so its client, missing acknowledgements, comes back over TCP. Every refused datagram is
//! counted by reason (`usher_udp_datagrams_total`), never answered.
//!
//! Keys are not stored: each is an HMAC of the session id and the moment of issue under a
//! secret drawn at start, so a detached session costs 24 bytes here, and after a restart
//! (a new secret) a detached client hears nothing, reconnects over TCP and resumes its
//! session (whose seats were recovered from the store).
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use usher_core::SessionId;
use usher_proto::udp::{self, Inbound, KEEPALIVE_KEY_LEN};

use crate::access::Cidr;
use crate::ledger_task::LedgerHandle;
use crate::metrics::{Metrics, UdpResult};

/// How far a keepalive's "ms since the key was issued" may stray from the server's own
/// figure: room for clock-rate drift and delivery, far less than a session TTL.
pub const WINDOW: Duration = Duration::from_secs(60);

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

/// One detached session's keepalive state: 24 bytes. The key itself is not kept: it is
/// derived again from the table's secret, the session and the moment it was issued.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Highest sequence number accepted.
    last_seq: u64,
    /// When the key was issued, in ms since the table's epoch (part of the key).
    issued_ms: u64,
    /// When the session was last heard, in seconds since the table's epoch.
    heard_s: u32,
    /// A notice could not reach the session: the next acknowledgement calls it back.
    call_back: bool,
}

/// The keepalive keys of detached sessions.
pub struct Keepalives {
    epoch: Instant,
    /// Random at every start; each session's key is an HMAC of its id and issue time
    /// under it, so a million sessions need no million stored keys.
    secret: [u8; 32],
    entries: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for Keepalives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keepalives").finish_non_exhaustive()
    }
}

impl Default for Keepalives {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random number generator is available");
        Keepalives {
            epoch: Instant::now(),
            secret,
            entries: Mutex::default(),
        }
    }
}

impl Keepalives {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn seconds(ms: u64) -> u32 {
        u32::try_from(ms / 1000).unwrap_or(u32::MAX)
    }

    /// The key of `session` issued at `issued_ms`.
    fn key(&self, session: u64, issued_ms: u64) -> [u8; KEEPALIVE_KEY_LEN] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes keys of any length");
        mac.update(b"usher keepalive key 1");
        mac.update(&session.to_be_bytes());
        mac.update(&issued_ms.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a fresh key for `session`, replacing any earlier one.
    pub fn issue(&self, session: SessionId) -> [u8; KEEPALIVE_KEY_LEN] {
        let now = self.now_ms();
        let entry = Entry {
            last_seq: 0,
            issued_ms: now,
            heard_s: Self::seconds(now),
            call_back: false,
        };
        self.lock().insert(session.0, entry);
        self.key(session.0, now)
    }

    /// Asks a detached session to come back over TCP (a notice for it had no connection to
    /// go to). Does nothing for a session that is not detached.
    pub fn call_back(&self, session: SessionId) {
        if let Some(e) = self.lock().get_mut(&session.0) {
            e.call_back = true;
        }
    }

    /// Forgets `session`'s key (its session ended).
    pub fn forget(&self, session: u64) {
        self.lock().remove(&session);
    }

    /// Detached sessions with a key.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is detached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks a keepalive and, if it is good, records its sequence number. Returns the
    /// key to tag the acknowledgement with and the acknowledgement's flags.
    fn accept(
        &self,
        k: &udp::Keepalive,
        whole: &[u8; udp::KEEPALIVE_LEN],
    ) -> Result<([u8; KEEPALIVE_KEY_LEN], u8), UdpResult> {
        let now = self.now_ms();
        let mut entries = self.lock();
        let entry = entries
            .get_mut(&k.session)
            .ok_or(UdpResult::UnknownSession)?;
        if k.seq <= entry.last_seq {
            return Err(UdpResult::Replayed);
        }
        let ours = now.saturating_sub(entry.issued_ms);
        if ours.abs_diff(k.elapsed_ms) > WINDOW.as_millis() as u64 {
            return Err(UdpResult::Stale);
        }
        let key = self.key(k.session, entry.issued_ms);
        if !udp::verify_keepalive(whole, &key) {
            return Err(UdpResult::Forged);
        }
        entry.last_seq = k.seq;
        entry.heard_s = Self::seconds(now);
        let flags = if entry.call_back {
            udp::ACK_CALL_BACK
        } else {
            0
        };
        Ok((key, flags))
    }

    /// Drops the keys of sessions not heard from for `ttl`: their sessions have lapsed.
    pub fn sweep(&self, ttl: Duration) {
        let now = Self::seconds(self.now_ms());
        // Whole seconds, rounded up: never a key whose session may still live.
        let ttl = u32::try_from(ttl.as_secs() + 1).unwrap_or(u32::MAX);
        self.lock()
            .retain(|_, e| now.saturating_sub(e.heard_s) <= ttl);
    }
}

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

    fn keepalive(
        table: &Keepalives,
        session: u64,
        seq: u64,
        key: &[u8; 32],
    ) -> Result<(), UdpResult> {
        let k = udp::Keepalive {
            session,
            seq,
            elapsed_ms: 0,
        };
        let b = udp::encode_keepalive(&k, key);
        table.accept(&k, &b).map(|_| ())
    }

    #[test]
    fn a_keepalive_is_accepted_once_and_only_with_the_sessions_key() {
        let table = Keepalives::default();
        let key = table.issue(SessionId(5));
        assert_eq!(
            keepalive(&table, 6, 1, &key),
            Err(UdpResult::UnknownSession)
        );
        assert_eq!(keepalive(&table, 5, 1, &[0; 32]), Err(UdpResult::Forged));
        assert_eq!(keepalive(&table, 5, 1, &key), Ok(()));
        assert_eq!(keepalive(&table, 5, 1, &key), Err(UdpResult::Replayed));
        assert_eq!(keepalive(&table, 5, 3, &key), Ok(()));
        assert_eq!(keepalive(&table, 5, 2, &key), Err(UdpResult::Replayed));
        // A forged datagram does not move the sequence on.
        assert_eq!(keepalive(&table, 5, 9, &[1; 32]), Err(UdpResult::Forged));
        assert_eq!(keepalive(&table, 5, 4, &key), Ok(()));
    }

    #[test]
    fn a_keepalive_far_from_the_servers_clock_is_stale() {
        let table = Keepalives::default();
        let key = table.issue(SessionId(5));
        let k = udp::Keepalive {
            session: 5,
            seq: 1,
            elapsed_ms: WINDOW.as_millis() as u64 + 5_000,
        };
        let b = udp::encode_keepalive(&k, &key);
        assert_eq!(table.accept(&k, &b).map(|_| ()), Err(UdpResult::Stale));
    }

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

    #[test]
    fn the_entry_is_small() {
        assert!(std::mem::size_of::<Entry>() <= 24);
    }
}
