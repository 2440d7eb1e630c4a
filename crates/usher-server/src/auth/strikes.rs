//! Failed admin logins, counted per client address: after [`MAX_STRIKES`] wrong tokens
//! within [`STRIKE_WINDOW`], the address's wrong tokens are refused for [`LOCKOUT`]
//! (counted, not logged one by one), so the log stays readable. The right token is never
//! refused (see [`super::AdminAuth::check`]): a 256-bit token cannot be guessed, while a
//! lockout of the right one would let anyone who shares an address lock the
//! administrator out. IPv6 addresses
//! count by their /64, which one host can fill with addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens one address may send within [`STRIKE_WINDOW`].
pub const MAX_STRIKES: u32 = 10;
/// The window strikes are counted in.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(60);
/// How long an address that used up its strikes has its wrong tokens refused.
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Most addresses tracked at once; beyond that, new addresses are not tracked until old
/// entries lapse (the token itself still stands in the way).
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    strikes: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

/// Strikes per address.
#[derive(Debug, Default)]
pub struct Strikes {
    by_address: Mutex<HashMap<IpAddr, Record>>,
}

/// The address strikes are counted under: IPv4 as is, IPv6 by its /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
        v4 => v4,
    }
}

impl Strikes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How much longer `ip` is locked out, if it is.
    pub fn locked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.lock().get(&bucket(ip))?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a wrong token from `ip`; returns the lockout if this strike began one.
    pub fn strike(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, r| {
                r.locked_until.is_some_and(|u| u > now) || now - r.since < STRIKE_WINDOW
            });
        }
        let key = bucket(ip);
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            return None;
        }
        let r = map.entry(key).or_insert(Record {
            strikes: 0,
            since: now,
            locked_until: None,
        });
        if now - r.since >= STRIKE_WINDOW || r.locked_until.is_some_and(|u| u <= now) {
            *r = Record {
                strikes: 0,
                since: now,
                locked_until: None,
            };
        }
        r.strikes += 1;
        if r.strikes >= MAX_STRIKES {
            r.locked_until = Some(now + LOCKOUT);
            return Some(LOCKOUT);
        }
        None
    }

    /// The right token from `ip`: its strikes are forgiven.
    pub fn forgive(&self, ip: IpAddr) {
        let mut map = self.lock();
        if !map.is_empty() {
            map.remove(&bucket(ip));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn an_address_is_locked_out_after_its_strikes_and_only_for_the_lockout() {
        let s = Strikes::default();
        let t = Instant::now();
        for _ in 1..MAX_STRIKES {
            assert_eq!(s.strike(A, t), None);
            assert_eq!(s.locked(A, t), None);
        }
        assert_eq!(s.strike(A, t), Some(LOCKOUT));
        assert_eq!(s.locked(A, t), Some(LOCKOUT));
        assert_eq!(s.locked(B, t), None, "other addresses are not affected");
        let later = t + LOCKOUT;
        assert_eq!(s.locked(A, later), None);
        assert_eq!(s.strike(A, later), None, "the count starts again");
    }

    #[test]
    fn strikes_lapse_with_the_window_and_a_good_token_forgives_them() {
        let s = Strikes::default();
        let t = Instant::now();
        for _ in 1..MAX_STRIKES {
            s.strike(A, t);
        }
        assert_eq!(s.strike(A, t + STRIKE_WINDOW), None);
        for _ in 2..MAX_STRIKES {
            s.strike(A, t + STRIKE_WINDOW);
        }
        s.forgive(A);
        assert_eq!(s.strike(A, t + STRIKE_WINDOW), None);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let s = Strikes::default();
        let t = Instant::now();
        for i in 0..MAX_STRIKES {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            s.strike(ip, t);
        }
        let neighbour: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert!(s.locked(neighbour, t).is_some());
        let elsewhere: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert_eq!(s.locked(elsewhere, t), None);
    }
}
