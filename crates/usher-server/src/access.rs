//! Who may connect: the client allow-list and the per-address connection cap.
//!
//! Both are checked right after `accept`, before a single byte is read or written. A peer
//! outside the allow-list learns nothing (no feature names, counts, versions or vendors):
//! its connection is simply closed. A peer over the per-address cap is told so in answer
//! to its Hello, and nothing else (see `connection::refuse`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// An address range such as `10.0.0.0/8`, `192.168.1.7` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A range that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address range {0:?}: expected e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/8")]
pub struct CidrError(pub String);

impl Cidr {
    /// The loopback ranges, `127.0.0.0/8` and `::1`.
    pub fn loopback() -> Vec<Cidr> {
        vec![
            Cidr {
                network: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
                prefix: 8,
            },
            Cidr {
                network: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ]
    }

    /// Whether any of `ranges` holds `ip`.
    pub fn any_contains(ranges: &[Cidr], ip: IpAddr) -> bool {
        ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether `ip` is in the range. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`) match IPv4
    /// ranges, since a dual-stack listener reports IPv4 clients that way.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(err)?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Admission control for new connections.
#[derive(Debug)]
pub struct Gate {
    allow: Vec<Cidr>,
    per_ip: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Why a connection was turned away. A peer outside the allow-list is told nothing; the
/// others are told why in answer to their Hello (`TOO_MANY_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is outside the allow-list.
    NotAllowed,
    /// The peer already has the most connections one address may have.
    TooManyFromAddress,
    /// The server already has the most client connections it may have.
    ServerFull,
}

/// Held for a connection's lifetime; releases its slot in the per-address count on drop.
#[derive(Debug)]
pub struct Admitted {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("no panics while the lock is held");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Gate {
    /// A gate admitting `allow` (everyone when empty), at most `per_ip` connections each.
    pub fn new(allow: Vec<Cidr>, per_ip: usize) -> Self {
        Gate {
            allow,
            per_ip,
            open: Arc::default(),
        }
    }

    /// Admits or refuses a new connection from `ip`.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        if !self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(ip)) {
            return Err(Refusal::NotAllowed);
        }
        let mut open = self.open.lock().expect("no panics while the lock is held");
        let n = open.entry(ip).or_default();
        if *n >= self.per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *n += 1;
        Ok(Admitted {
            ip,
            open: self.open.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        assert!(c("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("192.168.1.7").contains(ip("192.168.1.7")));
        assert!(!c("192.168.1.7").contains(ip("192.168.1.8")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(c("fd00::/8").contains(ip("fd12::1")));
        assert!(!c("fd00::/8").contains(ip("fe80::1")));
        assert!(
            c("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")),
            "IPv4-mapped"
        );
        assert!(!c("10.0.0.0/8").contains(ip("::1")));
        for bad in ["", "10.0.0.0/33", "10.0.0/8", "host/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_gate_counts_per_address_and_forgets_closed_connections() {
        let gate = Gate::new(vec![c("127.0.0.0/8")], 2);
        let a = gate.admit(ip("127.0.0.1")).unwrap();
        let _b = gate.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(
            gate.admit(ip("127.0.0.1")).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        let _other = gate
            .admit(ip("127.0.0.2"))
            .expect("a different address has its own count");
        drop(a);
        gate.admit(ip("127.0.0.1"))
            .expect("a slot freed by a closed connection");
        assert_eq!(
            gate.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::NotAllowed
        );
    }
}
