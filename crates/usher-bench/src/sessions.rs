//! The `sessions` scenario: hold S idle sessions, each with one seat, kept alive the way
//! a million sessions are meant to be: detached from TCP, one UDP keepalive per session
//! per heartbeat interval. Reports the server's resident memory per session and the CPU
//! it spends on keepalives.
//!
//! Each session is opened on its own connection (hello, checkout, detach, pipelined), and
//! the server closes the connection after `Detached`, so the sessions hold no sockets and
//! their memory is the server's own (kernel buffers are not in RSS). While sessions are
//! being opened, a sender already cycles through those opened so far, one keepalive each
//! per interval, so none lapses however long opening takes. Once all are open and one
//! full cycle has passed, the harness measures over one more interval: the server's CPU
//! time (utime + stime from `/proc`), keepalives sent and acknowledgements received. It
//! then checks that every seat is still held (a checkout of one seat more than are free is
//! refused), so the figures are about live sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::UdpSocket;
use usher_proto::udp::{self, KEEPALIVE_KEY_LEN};
use usher_proto::{Hello, Request, request, response};

use crate::usher::{Conn, Usherd, checkout_seats};

/// Connections opening sessions at once.
const OPENERS: usize = 64;

/// UDP sockets the keepalives are spread over.
const SOCKETS: usize = 16;

/// How often the sender wakes to send the keepalives due.
const TICK: Duration = Duration::from_millis(5);

/// One detached session as the harness keeps it.
struct Held {
    session: u64,
    key: [u8; KEEPALIVE_KEY_LEN],
    issued: Instant,
    seq: u64,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Sessions {
    /// Sessions asked for.
    pub target: usize,
    /// Sessions opened (fewer only if opening hit its time limit).
    pub sessions: usize,
    /// Time to open them.
    pub open: Duration,
    /// The heartbeat interval they were kept alive at.
    pub interval: Duration,
    /// Server RSS before the first session and with all of them held.
    pub rss_before: u64,
    /// See `rss_before`.
    pub rss_held: u64,
    /// Keepalives sent, and acknowledged, during the measured interval.
    pub keepalives: u64,
    /// See `keepalives`.
    pub acks: u64,
    /// Server CPU time (user + system) during the measured interval.
    pub cpu: Duration,
    /// Length of the measured interval.
    pub window: Duration,
    /// Seats still held at the end (all `sessions` of them, unless some lapsed).
    pub held: usize,
}

impl Sessions {
    /// Server memory per held session, in bytes.
    pub fn rss_per_session(&self) -> f64 {
        self.rss_held.saturating_sub(self.rss_before) as f64 / self.sessions.max(1) as f64
    }

    /// Share of one core the server spent keeping the sessions alive.
    pub fn cpu_share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.window.as_secs_f64().max(1e-9)
    }

    /// Server CPU per acknowledged keepalive, in µs.
    pub fn cpu_us_per_keepalive(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.acks.max(1) as f64
    }
}

/// Runs the scenario with `target` sessions at the heartbeat `interval` (`None`: the
/// server's default); opening stops at `open_limit`.
pub async fn run(
    target: usize,
    interval: Option<Duration>,
    open_limit: Duration,
) -> anyhow::Result<Sessions> {
    let seats = u32::try_from(target + 1).context("too many sessions for one license")?;
    let mut extra = Vec::new();
    if let Some(i) = interval {
        extra.extend([
            "--heartbeat-interval".to_string(),
            format!("{}ms", i.as_millis()),
            "--session-ttl".to_string(),
            format!("{}ms", i.as_millis() * 4),
        ]);
    }
    let server = Usherd::start_with(seats, &extra).await?;
    let pid = server.pid().context("usherd is not running")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_bytes(pid)?;

    let held: Arc<std::sync::Mutex<Vec<Held>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let acks = Arc::new(AtomicU64::new(0));

    // Open the first session by hand to learn the keepalive interval and UDP port.
    let (first, udp_port, interval) = open_one(server.addr).await?;
    let udp_addr = SocketAddr::new(server.addr.ip(), udp_port);
    held.lock().unwrap().push(first);
    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(udp_addr).await?;
        sockets.push(Arc::new(s));
    }
    let receivers: Vec<_> = sockets
        .iter()
        .map(|s| tokio::spawn(count_acks(s.clone(), acks.clone(), stop.clone())))
        .collect();
    let sender = tokio::spawn(send_keepalives(
        held.clone(),
        sockets,
        interval,
        sent.clone(),
        stop.clone(),
    ));

    let start = Instant::now();
    let deadline = start + open_limit;
    let openers: Vec<_> = (0..OPENERS)
        .map(|i| {
            let share = (target - 1) / OPENERS + usize::from(i < (target - 1) % OPENERS);
            let (held, addr) = (held.clone(), server.addr);
            tokio::spawn(async move {
                for _ in 0..share {
                    if Instant::now() > deadline {
                        break;
                    }
                    let (h, _, _) = open_one(addr).await?;
                    held.lock().unwrap().push(h);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for o in openers {
        o.await??;
    }
    let open = start.elapsed();
    let sessions = held.lock().unwrap().len();

    // One full cycle so every session has had a keepalive since opening, then measure one.
    tokio::time::sleep(interval).await;
    let (cpu0, sent0, acks0, t0) = (
        cpu_time(pid)?,
        sent.load(Ordering::Relaxed),
        acks.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(interval).await;
    let (cpu1, sent1, acks1, window) = (
        cpu_time(pid)?,
        sent.load(Ordering::Relaxed),
        acks.load(Ordering::Relaxed),
        t0.elapsed(),
    );
    let rss_held = rss_bytes(pid)?;

    // Honesty check: how many seats are still held by their (detached) sessions.
    let free = free_seats(server.addr, seats).await?;
    let held = seats as usize - free;

    stop.store(true, Ordering::Relaxed);
    sender.abort();
    for r in receivers {
        r.abort();
    }
    Ok(Sessions {
        target,
        sessions,
        open,
        interval,
        rss_before,
        rss_held,
        keepalives: sent1 - sent0,
        acks: acks1 - acks0,
        cpu: cpu1.saturating_sub(cpu0),
        window,
        held,
    })
}

/// How many of the `seats` are free: the largest checkout that is granted (each granted
/// probe is checked in again at once).
async fn free_seats(addr: SocketAddr, seats: u32) -> anyhow::Result<usize> {
    let mut conn = Conn::open(addr).await?;
    conn.hello().await?;
    let (mut lo, mut hi) = (0u32, seats);
    let mut id = 0;
    // Invariant: `lo` seats could be had, `hi + 1` could not.
    while lo < hi {
        let probe = lo + (hi - lo).div_ceil(2);
        id += 2;
        match conn.call(id, checkout_seats(probe, id)).await?.kind {
            Some(response::Kind::Granted(g)) => {
                let checkin = request::Kind::Checkin(usher_proto::Checkin {
                    lease_id: g.lease_id,
                });
                conn.call(id + 1, checkin).await?;
                lo = probe;
            }
            Some(response::Kind::Denied(_)) => hi = probe - 1,
            other => bail!("unexpected answer to a checkout: {other:?}"),
        }
    }
    Ok(lo as usize)
}

/// Opens one session holding one seat and detaches it. Returns it with the server's UDP
/// port and keepalive interval.
async fn open_one(addr: SocketAddr) -> anyhow::Result<(Held, u16, Duration)> {
    let mut conn = Conn::open(addr).await?;
    let hello = Hello {
        magic: usher_proto::MAGIC.into(),
        protocol_version: usher_proto::PROTOCOL_VERSION,
        user: "bench".into(),
        host: "bench-host".into(),
        program: "usher-bench".into(),
        ..Hello::default()
    };
    let requests = [
        Request {
            id: 1,
            kind: Some(request::Kind::Hello(hello)),
        },
        Request {
            id: 2,
            kind: Some(checkout_seats(1, 1)),
        },
        Request {
            id: 3,
            kind: Some(request::Kind::Detach(usher_proto::Detach {})),
        },
    ];
    conn.send(&requests).await?;
    let session = match conn.recv().await?.kind {
        Some(response::Kind::Welcome(w)) => w.session_id,
        other => bail!("hello not welcome: {other:?}"),
    };
    match conn.recv().await?.kind {
        Some(response::Kind::Granted(_)) => {}
        other => bail!("checkout not granted: {other:?}"),
    }
    let d = match conn.recv().await?.kind {
        Some(response::Kind::Detached(d)) => d,
        other => bail!("not detached: {other:?}"),
    };
    let key = d.keepalive_key[..]
        .try_into()
        .context("a keepalive key of the wrong length")?;
    let held = Held {
        session,
        key,
        issued: Instant::now(),
        seq: 0,
    };
    let interval = Duration::from_millis(d.keepalive_interval_ms.max(1));
    Ok((held, d.udp_port as u16, interval))
}

/// Cycles through the held sessions, one keepalive each per `interval`, spread evenly.
async fn send_keepalives(
    held: Arc<std::sync::Mutex<Vec<Held>>>,
    sockets: Vec<Arc<UdpSocket>>,
    interval: Duration,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut cursor = 0usize;
    let mut owed = 0.0f64;
    let mut tick = tokio::time::interval(TICK);
    let mut batch: Vec<(usize, [u8; udp::KEEPALIVE_LEN])> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        batch.clear();
        {
            let mut held = held.lock().unwrap();
            let n = held.len();
            if n == 0 {
                continue;
            }
            owed += n as f64 * TICK.as_secs_f64() / interval.as_secs_f64();
            while owed >= 1.0 {
                owed -= 1.0;
                cursor %= n;
                let h = &mut held[cursor];
                h.seq += 1;
                let k = udp::Keepalive {
                    session: h.session,
                    seq: h.seq,
                    elapsed_ms: h.issued.elapsed().as_millis() as u64,
                };
                batch.push((cursor, udp::encode_keepalive(&k, &h.key)));
                cursor += 1;
            }
        }
        for (i, datagram) in &batch {
            if sockets[i % sockets.len()].send(datagram).await.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Counts acknowledgements arriving on `socket`. (Refused keepalives are never answered,
/// so every ack is a keepalive the server accepted.)
async fn count_acks(socket: Arc<UdpSocket>, acks: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if let Ok(n) = socket.recv(&mut buf).await
            && n == udp::ACK_LEN
            && buf[..4] == udp::UDP_MAGIC
        {
            acks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS in /proc/PID/status")?
        .parse()?;
    Ok(kib * 1024)
}

/// CPU time (user + system) process `pid` has used.
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc/PID/stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux almost everywhere).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
