//! The `status-load` scenario: checkout+checkin throughput at C clients while pollers read
//! the full status (every holder, page by page) in a loop, beside the same clients on the
//! same server with nobody polling, in one run. usherd serves status from a view the
//! ledger task publishes, and builds its pages on low-priority threads, so the ratio shows
//! what the pollers cost the checkout path. The pollers run in a process of their own,
//! pinned to one core like the flood generator, so that decoding 100,000 holders a walk is
//! not counted as usherd's cost; the walks a second they managed are reported beside it.
//! Quiet and polled runs alternate over several rounds on the same server, and each
//! round's ratio is its polled run over its quiet run, so that a machine whose load drifts
//! during the measurement moves both halves of a ratio alike; the median round is the
//! figure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use usher_proto::{Request, StatusRequest, request, response};

use crate::side::{Side, serve_counters};
use crate::stats::Measured;
use crate::usher::{Conn, Usherd, checkout_seats, usher_worker};

/// What one status-load run measured.
#[derive(Debug, Clone)]
pub struct StatusLoad {
    /// Holders the server had besides the clients' own.
    pub holders: usize,
    /// Checkout clients.
    pub clients: usize,
    /// Pollers reading the full status.
    pub pollers: usize,
    /// Each round, in the order run.
    pub rounds: Vec<Round>,
}

/// One quiet run and the polled run after it.
#[derive(Debug, Clone)]
pub struct Round {
    /// The clients with nobody polling.
    pub quiet: Measured,
    /// The same clients while the pollers poll.
    pub polled: Measured,
    /// Full status reads the pollers finished during the polled run.
    pub walks: u64,
    /// Pages those reads took.
    pub pages: u64,
}

impl Round {
    /// Polled throughput over quiet throughput.
    pub fn ratio(&self) -> f64 {
        self.polled.ops_per_s / self.quiet.ops_per_s.max(1e-9)
    }

    /// Seconds the polled run took.
    pub fn polled_seconds(&self) -> f64 {
        (self.polled.ops as f64 / self.polled.ops_per_s.max(1e-9)).max(1e-9)
    }
}

impl StatusLoad {
    /// The round with the median ratio (the lower middle one of an even number).
    pub fn median(&self) -> &Round {
        let mut order: Vec<&Round> = self.rounds.iter().collect();
        order.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        order[(order.len() - 1) / 2]
    }
}

/// Connections that hold the background holders, each this many leases.
const PER_CONNECTION: usize = 5_000;

/// Status readers polling at once.
pub const POLLERS: usize = 4;

/// Longest the pollers' process runs, whatever happens to the harness.
const POLLER_LIMIT: Duration = Duration::from_secs(600);

/// Fills the server with `holders` leases, then, `rounds` times, measures `clients`
/// checkout clients for `ops` operations quiet and then while [`POLLERS`] pollers (in a
/// process of their own, see [`crate::side`]) read the full status in a loop, `pause`
/// apart.
pub async fn run(
    holders: usize,
    (clients, pause): (usize, Duration),
    (ops, rounds): (usize, usize),
    limit: Duration,
) -> anyhow::Result<StatusLoad> {
    let extra = ["--status-detail".to_string(), "full".to_string()];
    let server = Usherd::start_with(crate::usher::SEATS, &extra).await?;
    let addr = server.addr;
    let mut fills = Vec::new();
    let mut left = holders;
    while left > 0 {
        let n = left.min(PER_CONNECTION);
        left -= n;
        fills.push(tokio::spawn(hold(addr, n)));
    }
    let mut held = Vec::new();
    for f in fills {
        held.push(f.await??);
    }
    let mut measured = Vec::new();
    for _ in 0..rounds.max(1) {
        measured.push(round(addr, holders, (clients, pause), ops, limit).await?);
    }
    drop(held);
    Ok(StatusLoad {
        holders,
        clients,
        pollers: POLLERS,
        rounds: measured,
    })
}

/// One round: the clients quiet, then while the pollers poll.
async fn round(
    addr: SocketAddr,
    holders: usize,
    (clients, pause): (usize, Duration),
    ops: usize,
    limit: Duration,
) -> anyhow::Result<Round> {
    // Whatever the last round's pollers left to the server's background threads (pages
    // being encoded, views being freed) is done before the quiet run starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet =
        crate::run_clients(clients, ops, limit, move |_, n, d| usher_worker(addr, n, d)).await?;
    let args = [
        "--status-pollers".to_string(),
        addr.to_string(),
        "--holders".to_string(),
        holders.to_string(),
        "--poll-interval-ms".to_string(),
        pause.as_millis().to_string(),
    ];
    let mut side = Side::start("status pollers", &args)?;
    // Let every poller be reading before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    side.mark()?;
    let polled =
        crate::run_clients(clients, ops, limit, move |_, n, d| usher_worker(addr, n, d)).await;
    let counts = side.stop()?;
    let (walks, pages) = match counts[..] {
        [walks, pages, 0] => (walks, pages),
        [_, _, failed] => bail!("{failed} status walks failed; see the pollers' messages"),
        _ => bail!("the pollers printed {counts:?}"),
    };
    Ok(Round {
        quiet,
        polled: polled?,
        walks,
        pages,
    })
}

/// A session holding `count` seats, one lease each, checked out in pipelined batches.
async fn hold(addr: SocketAddr, count: usize) -> anyhow::Result<Conn> {
    let mut conn = Conn::open(addr).await?;
    conn.hello().await?;
    let mut id = 1;
    let mut left = count;
    while left > 0 {
        let batch = left.min(500);
        left -= batch;
        // No idempotency key: the server would look each one up among the session's leases.
        let requests: Vec<Request> = (0..batch)
            .map(|_| {
                id += 1;
                Request {
                    id,
                    kind: Some(checkout_seats(1, 0)),
                }
            })
            .collect();
        conn.send(&requests).await?;
        for _ in 0..batch {
            match conn.recv().await?.kind {
                Some(response::Kind::Granted(_)) => {}
                other => bail!("a holder's checkout was not granted: {other:?}"),
            }
        }
    }
    Ok(conn)
}

/// The pollers' process (`--status-pollers`): `pollers` pollers against `addr` until
/// standard input closes (or [`POLLER_LIMIT`] passes), its counters the walks, the pages
/// and the pollers that failed.
pub async fn poll(
    addr: SocketAddr,
    holders: usize,
    pollers: usize,
    pause: Duration,
) -> anyhow::Result<()> {
    let polling = Arc::new(AtomicBool::new(true));
    let (walks, pages) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + POLLER_LIMIT;
    let tasks: Vec<_> = (0..pollers)
        .map(|_| {
            let (polling, walks, pages, failed) = (
                polling.clone(),
                walks.clone(),
                pages.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let polled = poller(addr, holders, (polling, pause), walks, pages, deadline);
                if let Err(e) = polled.await {
                    eprintln!("status poller: {e:#}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    serve_counters(vec![walks, pages, failed]).await;
    polling.store(false, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Reads the full status, every page, until told to stop (or the deadline), counting the
/// walks and pages; each walk must show at least `holders` holders.
async fn poller(
    addr: SocketAddr,
    holders: usize,
    (polling, pause): (Arc<AtomicBool>, Duration),
    walks: Arc<AtomicU64>,
    pages: Arc<AtomicU64>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut conn = Conn::open(addr).await?;
    conn.hello().await?;
    let mut id = 1;
    while polling.load(Ordering::Relaxed) && Instant::now() < deadline {
        let mut cursor = String::new();
        let mut seen = 0;
        loop {
            id += 1;
            let ask = request::Kind::Status(StatusRequest {
                page_size: 10_000,
                cursor,
                ..StatusRequest::default()
            });
            let page = match conn.call(id, ask).await?.kind {
                Some(response::Kind::Status(page)) => page,
                other => bail!("status not answered: {other:?}"),
            };
            pages.fetch_add(1, Ordering::Relaxed);
            seen += page.features.iter().map(|f| f.holders.len()).sum::<usize>();
            cursor = page.next_cursor;
            if cursor.is_empty() {
                break;
            }
        }
        if seen < holders {
            bail!("a status walk showed {seen} holders of at least {holders}");
        }
        walks.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(pause).await;
    }
    Ok(())
}
