//! The client's side of the UDP port: discovery, and keepalives for a detached session.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use usher_proto::udp;

/// Where a discovery request goes by default: the local network's broadcast address and
/// this host, on the usher port.
pub fn default_discovery_targets() -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), usher_proto::DEFAULT_PORT),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), usher_proto::DEFAULT_PORT),
    ]
}

/// A server that answered a discovery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Where it takes TCP connections (the answer's source address, its TCP port).
    pub addr: SocketAddr,
    /// Whether it requires TLS.
    pub tls: bool,
    /// The vendors it serves.
    pub vendors: Vec<String>,
    /// Whether it had more vendors than fit in its answer.
    pub truncated: bool,
}

/// Asks `targets` (broadcast, multicast or unicast addresses) which usher servers are
/// there, and gathers the answers: until `wait` has passed, or a short while after the
/// first answer. Servers are listed in the order they answered, each once.
pub async fn discover(targets: &[SocketAddr], wait: Duration) -> std::io::Result<Vec<Discovered>> {
    let nonce = getrandom::u64().map_err(std::io::Error::other)?;
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.set_broadcast(true)?;
    let request = udp::encode_discover(nonce);
    let mut sent = false;
    let mut last_error = None;
    for target in targets {
        match socket.send_to(&request, target).await {
            Ok(_) => sent = true,
            // No broadcast route (a host with loopback only), say: try the others.
            Err(e) => last_error = Some(e),
        }
    }
    if !sent {
        return Err(last_error.unwrap_or_else(|| std::io::Error::other("no discovery targets")));
    }
    let mut found: Vec<Discovered> = Vec::new();
    let mut deadline = Instant::now() + wait;
    let mut buf = [0u8; udp::MAX_ANNOUNCE_LEN + 1];
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        let Ok(received) = received else {
            return Ok(found);
        };
        let Ok((len, from)) = received else {
            // An ICMP error from one target; the others may still answer.
            continue;
        };
        let Ok(a) = udp::decode_announce(&buf[..len]) else {
            continue;
        };
        if a.nonce != nonce {
            continue;
        }
        let addr = SocketAddr::new(from.ip(), a.tcp_port);
        if found.iter().any(|d| d.addr == addr) {
            continue;
        }
        if found.is_empty() {
            // Others on the network answer about as fast; don't wait the whole time.
            deadline = deadline.min(Instant::now() + Duration::from_millis(200));
        }
        found.push(Discovered {
            addr,
            tls: a.flags & udp::ANNOUNCE_TLS != 0,
            vendors: a.vendors,
            truncated: a.flags & udp::ANNOUNCE_TRUNCATED != 0,
        });
    }
}

/// A detached session's keepalive state.
pub(crate) struct Detached {
    pub socket: UdpSocket,
    pub session: u64,
    pub key: [u8; udp::KEEPALIVE_KEY_LEN],
    /// When the key was issued (on this clock).
    pub issued: Instant,
    pub seq: u64,
    pub interval: Duration,
    /// When the last acknowledgement came (at first: when the key was issued).
    pub last_ack: Instant,
    /// Whether any keepalive has been acknowledged (else UDP may be blocked on the path).
    pub acked: bool,
}

/// Why a detached session goes back to TCP.
pub(crate) enum Leave {
    /// The server asked for it: a notice is waiting.
    CalledBack,
    /// No acknowledgement for too long.
    Silent,
}

impl Detached {
    /// Opens a socket towards `server` for the session.
    pub async fn open(
        server: SocketAddr,
        session: u64,
        key: [u8; udp::KEEPALIVE_KEY_LEN],
        interval: Duration,
    ) -> std::io::Result<Detached> {
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        let now = Instant::now();
        Ok(Detached {
            socket,
            session,
            key,
            issued: now,
            seq: 0,
            interval,
            last_ack: now,
            acked: false,
        })
    }

    /// Sends the next keepalive.
    pub async fn send(&mut self) {
        self.seq += 1;
        let k = udp::Keepalive {
            session: self.session,
            seq: self.seq,
            elapsed_ms: self.issued.elapsed().as_millis() as u64,
        };
        // A lost datagram is retried at the next interval; silence brings TCP back.
        let _ = self
            .socket
            .send(&udp::encode_keepalive(&k, &self.key))
            .await;
    }

    /// Keeps the session alive until the server calls it back or goes silent for
    /// `silence` (the caller also leaves when the application asks for something). A
    /// keepalive goes out every interval, and sooner (every second) once an
    /// acknowledgement is overdue, so a lost datagram costs little of the TTL.
    pub async fn run(&mut self, silence: Duration) -> Leave {
        let mut buf = [0u8; 64];
        let mut next = Instant::now() + self.interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    self.send().await;
                    let overdue = self.last_ack.elapsed() > self.interval + Duration::from_secs(1);
                    next = Instant::now()
                        + if overdue { Duration::from_secs(1).min(self.interval) } else { self.interval };
                }
                r = self.socket.recv(&mut buf) => {
                    let Ok(len) = r else { continue };
                    let Some(ack) = udp::decode_ack(&buf[..len], &self.key) else { continue };
                    if ack.session != self.session {
                        continue;
                    }
                    self.last_ack = Instant::now();
                    self.acked = true;
                    if ack.flags & udp::ACK_CALL_BACK != 0 {
                        return Leave::CalledBack;
                    }
                }
                _ = tokio::time::sleep_until(self.last_ack + silence) => return Leave::Silent,
            }
        }
    }
}
