//! The administrator's policy (options) file: who may use what, reservations, limits,
//! queue priorities and timeouts, in FlexLM's vocabulary.
//!
//! ```text
//! GROUP eng alice bob "John Smith"
//! HOST_GROUP lab ws1 ws2
//! EXCLUDE cad USER mallory
//! INCLUDE sim GROUP eng
//! RESERVE 2 cad GROUP eng
//! MAX 1 cad HOST_GROUP lab
//! PRIORITY 1 cad USER alice
//! TIMEOUT cad 3600
//! ```
//!
//! Parsing is pure: `Policy::parse` turns text into rules or names the line and column of
//! the first mistake; an unknown keyword is a mistake, never ignored. What the rules mean
//! for a checkout is decided by the ledger, which asks the questions below
//! ([`Policy::excluded`], [`Policy::reservations`], ...). See docs/policy.md.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use crate::{ClientInfo, Millis};

/// A mistake in a policy file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct PolicyError {
    /// The file name given to [`Policy::parse`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What was expected and what was found.
    pub message: String,
}

/// Whom a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A login name.
    User(String),
    /// A client host name.
    Host(String),
    /// A display (X display or terminal).
    Display(String),
    /// A `GROUP` of users.
    Group(String),
    /// A `HOST_GROUP` of hosts.
    HostGroup(String),
    /// Client network addresses (`INTERNET`): an address, a CIDR block or a dotted
    /// pattern with `*` octets.
    Internet(AddressPattern),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::User(n) => write!(f, "USER {n}"),
            Target::Host(n) => write!(f, "HOST {n}"),
            Target::Display(n) => write!(f, "DISPLAY {n}"),
            Target::Group(n) => write!(f, "GROUP {n}"),
            Target::HostGroup(n) => write!(f, "HOST_GROUP {n}"),
            Target::Internet(p) => write!(f, "INTERNET {}", p.text),
        }
    }
}

/// An `INTERNET` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPattern {
    /// As written.
    pub text: String,
    /// The network and prefix length it stands for.
    network: IpAddr,
    prefix: u8,
}

impl AddressPattern {
    /// Parses `10.1.2.3`, `10.1.0.0/16`, `10.1.*.*` (FlexLM's form) or an IPv6 address or
    /// block.
    pub fn parse(text: &str) -> Option<AddressPattern> {
        let (network, prefix) = if let Some((addr, bits)) = text.split_once('/') {
            let network: IpAddr = addr.parse().ok()?;
            let prefix: u8 = bits.parse().ok()?;
            let max = if network.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return None;
            }
            (network, prefix)
        } else if text.contains('*') {
            // Trailing `*` octets only, as in `192.168.*.*`.
            let octets: Vec<&str> = text.split('.').collect();
            if octets.len() != 4 {
                return None;
            }
            let fixed = octets.iter().take_while(|o| **o != "*").count();
            if octets[fixed..].iter().any(|o| *o != "*") {
                return None;
            }
            let mut bytes = [0u8; 4];
            for (b, o) in bytes.iter_mut().zip(&octets[..fixed]) {
                *b = o.parse().ok()?;
            }
            (IpAddr::from(bytes), (fixed * 8) as u8)
        } else {
            let network: IpAddr = text.parse().ok()?;
            (network, if network.is_ipv4() { 32 } else { 128 })
        };
        Some(AddressPattern {
            text: text.to_string(),
            network,
            prefix,
        })
    }

    /// Whether `addr` is in the pattern.
    pub fn contains(&self, addr: IpAddr) -> bool {
        fn bits(a: IpAddr) -> (u128, u8) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => (u128::from(u32::from(v4)), 32),
                    None => (u128::from(v6), 128),
                },
            }
        }
        let (net, width) = bits(self.network);
        let (a, a_width) = bits(addr);
        if width != a_width {
            return false;
        }
        let prefix = u32::from(self.prefix.min(width));
        if prefix == 0 {
            return true;
        }
        let shift = u32::from(width) - prefix;
        (net >> shift) == (a >> shift)
    }
}

/// Which features a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One feature.
    Feature(String),
    /// Every feature (`INCLUDEALL`, `EXCLUDEALL`, `TIMEOUTALL`).
    All,
}

impl Scope {
    fn covers(&self, feature: &str) -> bool {
        match self {
            Scope::Feature(f) => f == feature,
            Scope::All => true,
        }
    }
}

/// A rule giving a number of seats (or a rank) to a target for a feature: `RESERVE`,
/// `MAX` and `PRIORITY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// Seats, or for `PRIORITY` the rank (lower is served first).
    pub number: u32,
    /// Feature.
    pub feature: String,
    /// Whom.
    pub target: Target,
    /// Line in the file, for messages.
    pub line: usize,
}

/// A feature name a policy rule names, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFeature {
    /// The feature.
    pub feature: String,
    /// The rule's keyword (`MAX`, `TIMEOUT`, ...).
    pub keyword: String,
    /// 1-based line of the name.
    pub line: usize,
    /// 1-based column of the name.
    pub column: usize,
}

/// The parsed policy. `Policy::default()` allows everything and changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    groups: HashMap<String, Vec<String>>,
    host_groups: HashMap<String, Vec<String>>,
    groups_case_insensitive: bool,
    includes: Vec<(Scope, Target)>,
    excludes: Vec<(Scope, Target)>,
    reserves: Vec<Counted>,
    maxes: Vec<Counted>,
    priorities: Vec<Counted>,
    /// Each `TIMEOUT`/`TIMEOUTALL` with its line, for messages.
    timeouts: Vec<(Scope, Millis, usize)>,
    /// Every feature name a rule names, in file order, for warning about names no license
    /// serves.
    named_features: Vec<NamedFeature>,
    lingers: HashMap<String, Millis>,
    max_borrow_hours: HashMap<String, u32>,
    borrow_lowwater: HashMap<String, u32>,
    max_overdraft: HashMap<String, u32>,
}

/// Who asks, as the policy sees a client.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// Login name.
    pub user: &'a str,
    /// Host name.
    pub host: &'a str,
    /// Display.
    pub display: &'a str,
    /// Network address (`ip:port` or `[ip]:port`, as the server saw it), if known.
    pub address: &'a str,
}

impl<'a> From<&'a ClientInfo> for Who<'a> {
    fn from(c: &'a ClientInfo) -> Self {
        Who {
            user: &c.user,
            host: &c.host,
            display: &c.display,
            address: &c.address,
        }
    }
}

impl Who<'_> {
    fn ip(&self) -> Option<IpAddr> {
        if let Ok(sa) = self.address.parse::<std::net::SocketAddr>() {
            return Some(sa.ip());
        }
        self.address.parse().ok()
    }
}

mod parse;

impl Policy {
    /// Whether the policy says anything at all.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Whether `target` names `who`.
    pub fn matches(&self, target: &Target, who: &Who<'_>) -> bool {
        let same = |a: &str, b: &str| {
            if self.groups_case_insensitive {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match target {
            Target::User(u) => u == who.user,
            Target::Host(h) => h.eq_ignore_ascii_case(who.host),
            Target::Display(d) => d == who.display,
            Target::Group(g) => self
                .groups
                .get(g)
                .is_some_and(|m| m.iter().any(|u| same(u, who.user))),
            Target::HostGroup(g) => self
                .host_groups
                .get(g)
                .is_some_and(|m| m.iter().any(|h| h.eq_ignore_ascii_case(who.host))),
            Target::Internet(p) => who.ip().is_some_and(|ip| p.contains(ip)),
        }
    }

    /// Whether `who` is kept from `feature`: named by an `EXCLUDE`/`EXCLUDEALL`, or not
    /// named by any `INCLUDE`/`INCLUDEALL` where such lists exist for the feature.
    /// Membership of a reservation for the feature counts as inclusion (see
    /// docs/policy.md for the precedence).
    pub fn excluded(&self, feature: &str, who: &Who<'_>) -> bool {
        if self
            .excludes
            .iter()
            .any(|(s, t)| s.covers(feature) && self.matches(t, who))
        {
            return true;
        }
        let mut includes = self
            .includes
            .iter()
            .filter(|(s, _)| s.covers(feature))
            .peekable();
        if includes.peek().is_none() {
            return false;
        }
        let included = includes.any(|(_, t)| self.matches(t, who));
        let reserved = self
            .reserves
            .iter()
            .any(|r| r.feature == feature && self.matches(&r.target, who));
        !(included || reserved)
    }

    /// The users the policy names for a feature, in file order and without repeats: the
    /// `USER`s of its `INCLUDE` and `INCLUDEALL` lines and the members of their `GROUP`s.
    /// These are the named users of a `USER_BASED` license.
    pub fn named_users(&self, feature: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (scope, target) in &self.includes {
            if !scope.covers(feature) {
                continue;
            }
            let names: Vec<&str> = match target {
                Target::User(u) => vec![u.as_str()],
                Target::Group(g) => self
                    .groups
                    .get(g)
                    .map(|m| m.iter().map(String::as_str).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            for n in names {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// The `RESERVE` rules for a feature, in file order.
    pub fn reservations<'s>(&'s self, feature: &'s str) -> impl Iterator<Item = &'s Counted> {
        self.reserves.iter().filter(move |r| r.feature == feature)
    }

    /// The `MAX` rules for a feature, in file order.
    pub fn limits<'s>(&'s self, feature: &'s str) -> impl Iterator<Item = &'s Counted> {
        self.maxes.iter().filter(move |r| r.feature == feature)
    }

    /// `who`'s queue rank for `feature` from the first matching `PRIORITY` rule (lower is
    /// served first), or `None`.
    pub fn priority(&self, feature: &str, who: &Who<'_>) -> Option<u32> {
        self.priorities
            .iter()
            .find(|r| r.feature == feature && self.matches(&r.target, who))
            .map(|r| r.number)
    }

    /// How long a client may stay idle before its seats of `feature` are reclaimed
    /// (`TIMEOUT`, else `TIMEOUTALL`; the last line of each wins).
    pub fn timeout(&self, feature: &str) -> Option<Millis> {
        let specific = self
            .timeouts
            .iter()
            .rev()
            .find(|(s, _, _)| *s == Scope::Feature(feature.to_string()));
        specific
            .or_else(|| {
                self.timeouts
                    .iter()
                    .rev()
                    .find(|(s, _, _)| *s == Scope::All)
            })
            .map(|&(_, ms, _)| ms)
    }

    /// Every timeout in the file with the line it is on, for clamping to the server's
    /// minimum.
    pub fn timeouts_mut(&mut self) -> impl Iterator<Item = (usize, &mut Millis)> {
        self.timeouts.iter_mut().map(|(_, ms, line)| (*line, ms))
    }

    /// Every feature name the rules name, in file order, with where (for the server to
    /// warn about a name no license has: such a rule has no effect).
    pub fn named_features(&self) -> &[NamedFeature] {
        &self.named_features
    }

    /// `LINGER` for a feature: lengthens (never shortens) the license's linger.
    pub fn linger(&self, feature: &str) -> Option<Millis> {
        self.lingers.get(feature).copied()
    }

    /// The features whose checkouts count who holds what (`RESERVE`, `MAX`,
    /// `MAX_OVERDRAFT`).
    pub fn counted_features(&self) -> std::collections::BTreeSet<&str> {
        self.reserves
            .iter()
            .chain(&self.maxes)
            .map(|r| r.feature.as_str())
            .chain(self.max_overdraft.keys().map(String::as_str))
            .collect()
    }

    /// `MAX_OVERDRAFT` for a feature: caps the seats drawn beyond the count.
    pub fn max_overdraft(&self, feature: &str) -> Option<u32> {
        self.max_overdraft.get(feature).copied()
    }

    /// `MAX_BORROW_HOURS` for a feature.
    pub fn max_borrow_hours(&self, feature: &str) -> Option<u32> {
        self.max_borrow_hours.get(feature).copied()
    }

    /// `BORROW_LOWWATER` for a feature.
    pub fn borrow_lowwater(&self, feature: &str) -> Option<u32> {
        self.borrow_lowwater.get(feature).copied()
    }
}
