//! The `flood` scenario: checkout+checkin latency of legitimate clients while junk peers
//! hammer the port, beside the same clients' latency on a quiet server, in one run.
//!
//! The junk comes from many loopback addresses (`127.0.N.M`), so the per-address cap does
//! not simply turn it away: idle connections that never say hello (closed by the
//! handshake timeout), slowloris senders trickling a frame a byte at a time, frames that
//! announce 4 GiB, and garbage. Every junk peer is bounded in count and time, and stops
//! when the measurement ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::stats::Measured;
use crate::usher::{Usherd, usher_worker};

/// What one flood run measured.
#[derive(Debug, Clone)]
pub struct Flood {
    /// Junk peers running at once.
    pub peers: usize,
    /// Legitimate clients.
    pub clients: usize,
    /// The clients on a quiet server.
    pub quiet: Measured,
    /// The same clients under the flood.
    pub flooded: Measured,
    /// Junk connections made during the flood.
    pub junk_connections: u64,
}

/// Runs `clients` legitimate clients for `ops` operations, first on a quiet server and
/// then while `peers` junk peers flood it.
pub async fn run(
    peers: usize,
    clients: usize,
    ops: usize,
    limit: Duration,
) -> anyhow::Result<Flood> {
    // Short handshake timeout, so idle junk is shed quickly, as a hardened setup would.
    let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(config.path(), "handshake_timeout = \"2s\"\n")?;
    let extra = ["--config".to_string(), config.path().display().to_string()];
    let server = Usherd::start_with(crate::usher::SEATS, &extra).await?;
    let addr = server.addr;
    let quiet =
        crate::run_clients(clients, ops, limit, move |_, n, d| usher_worker(addr, n, d)).await?;

    let flooding = Arc::new(AtomicBool::new(true));
    let connections = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + limit * 3;
    let junk: Vec<_> = (0..peers)
        .map(|n| {
            let (flooding, connections) = (flooding.clone(), connections.clone());
            tokio::spawn(junk_peer(n, addr, flooding, connections, deadline))
        })
        .collect();
    // Let the flood build up before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flooded =
        crate::run_clients(clients, ops, limit, move |_, n, d| usher_worker(addr, n, d)).await;
    flooding.store(false, Ordering::Relaxed);
    for j in junk {
        j.abort();
    }
    Ok(Flood {
        peers,
        clients,
        quiet,
        flooded: flooded?,
        junk_connections: connections.load(Ordering::Relaxed),
    })
}

/// A connection from `127.0.<1 + n / 200>.<n % 200 + 1>`, so no one address reaches the
/// per-address cap.
async fn connect_from(n: usize, addr: SocketAddr) -> Option<TcpStream> {
    let ip = std::net::Ipv4Addr::new(127, 0, 1 + (n / 200) as u8, (n % 200) as u8 + 1);
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind((ip, 0).into()).ok()?;
    socket.connect(addr).await.ok()
}

/// One junk peer: reconnects and misbehaves in its own way until told to stop (at most
/// 1,000 connections, and never past `deadline`).
async fn junk_peer(
    n: usize,
    addr: SocketAddr,
    flooding: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    deadline: Instant,
) {
    for _ in 0..1_000 {
        if !flooding.load(Ordering::Relaxed) || Instant::now() > deadline {
            return;
        }
        let Some(mut s) = connect_from(n, addr).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        connections.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 256];
        let wait = Duration::from_secs(5);
        match n % 4 {
            // Idle: says nothing until the handshake timeout closes it.
            0 => {
                let _ = tokio::time::timeout(wait, s.read(&mut buf)).await;
            }
            // Slowloris: a byte of a frame every 100 ms.
            1 => {
                for b in [0u8, 0, 0, 200, 1, 2, 3] {
                    if s.write_all(&[b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            // A frame announcing 4 GiB, refused from its length prefix.
            2 => {
                let _ = s.write_all(&u32::MAX.to_be_bytes()).await;
                let _ = tokio::time::timeout(wait, s.read(&mut buf)).await;
            }
            // Garbage.
            _ => {
                let _ = s.write_all(&[0, 0, 0, 16]).await;
                let _ = s.write_all(&[0xFF; 16]).await;
                let _ = tokio::time::timeout(wait, s.read(&mut buf)).await;
            }
        }
    }
}
