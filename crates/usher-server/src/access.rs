//! Who may connect: the client allow-list, the per-address rate of new connections and the
//! per-address connection cap.
//!
//! All are checked right after `accept`, before a single byte is read or written. A peer
//! outside the allow-list learns nothing (no feature names, counts, versions or vendors):
//! its connection is simply closed. So is, while the handshake slots are contended (half
//! of `max_handshakes` or more in use), a peer opening connections faster than its share
//! (`max_connection_rate_per_ip`): refusing it costs no TLS handshake and no task, so a
//! few busy addresses cannot take every slot, and on a quiet server a burst from one
//! address (a NAT, a node starting many jobs) is still served. A peer over
//! the per-address cap is told so in answer to its Hello, and nothing else (see
//! `connection::refuse`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most addresses whose connection rate is tracked at once; when the table is full,
/// addresses whose budget has refilled are forgotten (they are no different from new
/// ones), and if none has, the table starts afresh. Bounds the memory a flood from many
/// addresses can cost.
const RATE_TABLE: usize = 65_536;

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
    /// New connections per second one address may open (with a burst as large); 0: no
    /// limit.
    rate: u32,
    /// Each recently seen address's budget of new connections: tokens left, and when.
    budgets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Why a connection was turned away. A peer outside the allow-list is told nothing; the
/// others are told why in answer to their Hello (`TOO_MANY_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is outside the allow-list.
    NotAllowed,
    /// The peer already has the most connections one address may have.
    TooManyFromAddress,
    /// The peer opens new connections faster than one address may (closed at once, told
    /// nothing).
    AddressRate,
    /// The server already has the most connections still in their handshake (closed at
    /// once, told nothing).
    Handshakes,
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
            rate: 0,
            budgets: Mutex::default(),
        }
    }

    /// The same gate, letting one address open at most `per_second` new connections a
    /// second (with a burst as large); 0: no limit.
    pub fn with_rate(mut self, per_second: u32) -> Self {
        self.rate = per_second;
        self
    }

    /// Admits or refuses a new connection from `ip`; `contended`: whether new connections
    /// are competing for handshake slots, when an address over its rate is refused.
    pub fn admit(&self, ip: IpAddr, contended: bool) -> Result<Admitted, Refusal> {
        self.admit_at(ip, contended, Instant::now())
    }

    fn admit_at(&self, ip: IpAddr, contended: bool, now: Instant) -> Result<Admitted, Refusal> {
        if !self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(ip)) {
            return Err(Refusal::NotAllowed);
        }
        // The budget is spent either way, so an address flooding a quiet server is held
        // to its share as soon as the slots become contended.
        if !self.take_token(ip, now) && contended {
            return Err(Refusal::AddressRate);
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

    /// Spends one of `ip`'s new-connection tokens, if it has one left.
    fn take_token(&self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = f64::from(self.rate);
        let refill = |(tokens, at): (f64, Instant)| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(rate)
        };
        let mut budgets = self
            .budgets
            .lock()
            .expect("no panics while the lock is held");
        if budgets.len() >= RATE_TABLE && !budgets.contains_key(&ip) {
            budgets.retain(|_, b| refill(*b) < rate);
            if budgets.len() >= RATE_TABLE {
                budgets.clear();
            }
        }
        let budget = budgets.entry(ip).or_insert((rate, now));
        let tokens = refill(*budget);
        if tokens < 1.0 {
            *budget = (tokens, now);
            return false;
        }
        *budget = (tokens - 1.0, now);
        true
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
        let a = gate.admit(ip("127.0.0.1"), false).unwrap();
        let _b = gate.admit(ip("127.0.0.1"), false).unwrap();
        assert_eq!(
            gate.admit(ip("127.0.0.1"), false).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        let _other = gate
            .admit(ip("127.0.0.2"), false)
            .expect("a different address has its own count");
        drop(a);
        gate.admit(ip("127.0.0.1"), false)
            .expect("a slot freed by a closed connection");
        assert_eq!(
            gate.admit(ip("192.0.2.1"), false).unwrap_err(),
            Refusal::NotAllowed
        );
    }

    #[test]
    fn each_address_gets_its_share_of_new_connections_when_contended() {
        let gate = Gate::new(Vec::new(), 1_000).with_rate(5);
        let t0 = Instant::now();
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(gate.admit_at(ip("10.0.0.1"), true, t0).expect("the burst"));
        }
        assert_eq!(
            gate.admit_at(ip("10.0.0.1"), true, t0).unwrap_err(),
            Refusal::AddressRate
        );
        held.push(
            gate.admit_at(ip("10.0.0.1"), false, t0)
                .expect("uncontended, the rate does not refuse"),
        );
        held.push(
            gate.admit_at(ip("10.0.0.2"), true, t0)
                .expect("another address has its own share"),
        );
        // A fifth of a second later, one more.
        let later = t0 + std::time::Duration::from_millis(200);
        held.push(
            gate.admit_at(ip("10.0.0.1"), true, later)
                .expect("refilled"),
        );
        assert_eq!(
            gate.admit_at(ip("10.0.0.1"), true, later).unwrap_err(),
            Refusal::AddressRate
        );
        let gate = Gate::new(Vec::new(), 1_000);
        for _ in 0..100 {
            held.push(gate.admit_at(ip("10.0.0.1"), true, t0).expect("no limit"));
        }
    }
}
