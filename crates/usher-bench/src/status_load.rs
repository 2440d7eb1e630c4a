//! The `status-load` scenario: checkout+checkin throughput at C clients while pollers read
//! the full status (every holder, page by page) in a loop, beside the same clients on the
//! same server with nobody polling, in one run. usherd serves status from a view the
//! ledger task publishes, so the ratio shows what the pollers cost the checkout path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use usher_proto::{Request, StatusRequest, request, response};

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
    /// The clients with nobody polling.
    pub quiet: Measured,
    /// The same clients while the pollers poll.
    pub polled: Measured,
    /// Full status reads the pollers finished during the polled run.
    pub walks: u64,
    /// Pages those reads took.
    pub pages: u64,
}

/// Connections that hold the background holders, each this many leases.
const PER_CONNECTION: usize = 5_000;

/// Fills the server with `holders` leases, then measures `clients` checkout clients for
/// `ops` operations quiet and while `pollers` read the full status in a loop, `pause`
/// apart.
pub async fn run(
    holders: usize,
    (clients, pollers, pause): (usize, usize, Duration),
    ops: usize,
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
    let quiet =
        crate::run_clients(clients, ops, limit, move |_, n, d| usher_worker(addr, n, d)).await?;

    let polling = Arc::new(AtomicBool::new(true));
    let (walks, pages) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + limit * 2;
    let poll_tasks: Vec<_> = (0..pollers)
        .map(|_| {
            let (polling, walks, pages) = (polling.clone(), walks.clone(), pages.clone());
            tokio::spawn(poller(
                addr,
                holders,
                (polling, pause),
                walks,
                pages,
                deadline,
            ))
        })
        .collect();
    // Let every poller be reading before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (walks_before, pages_before) =
        (walks.load(Ordering::Relaxed), pages.load(Ordering::Relaxed));
    let polled =
        crate::run_clients(clients, ops, limit, move |_, n, d| usher_worker(addr, n, d)).await;
    let walked = walks.load(Ordering::Relaxed) - walks_before;
    let paged = pages.load(Ordering::Relaxed) - pages_before;
    polling.store(false, Ordering::Relaxed);
    for p in poll_tasks {
        p.await??;
    }
    drop(held);
    Ok(StatusLoad {
        holders,
        clients,
        pollers,
        quiet,
        polled: polled?,
        walks: walked,
        pages: paged,
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
