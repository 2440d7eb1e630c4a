//! The junk peers of a connection flood, shared by the `flood` benchmark scenario and the
//! server's flood test (which includes this file by path, so both flood alike): idle
//! connections that never say hello, slowloris senders trickling a frame a byte at a
//! time, frames that announce 4 GiB, and garbage, from many loopback addresses
//! (`127.0.N.M`), so the per-address cap does not simply turn them away. Only tokio and
//! the standard library are used, so the file compiles in either crate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `127.0.<1 + n / 200>.<n % 200 + 1>`, so no one address reaches the
/// per-address cap.
pub async fn connect_from(n: usize, addr: SocketAddr) -> Option<TcpStream> {
    let ip = std::net::Ipv4Addr::new(127, 0, 1 + (n / 200) as u8, (n % 200) as u8 + 1);
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind((ip, 0).into()).ok()?;
    socket.connect(addr).await.ok()
}

/// Junk peer `n` (its kind is `n % 4`): reconnects and misbehaves in its own way until
/// `flooding` is cleared, at most `max_connections` times and never past `deadline`,
/// counting its connections in `connections`.
pub async fn junk_peer(
    n: usize,
    addr: SocketAddr,
    flooding: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    (max_connections, deadline): (usize, Instant),
) {
    for _ in 0..max_connections {
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
