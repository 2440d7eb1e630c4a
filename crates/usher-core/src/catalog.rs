//! The catalog: what the licenses offer, grouped into pools.

use std::collections::BTreeMap;
use std::sync::Arc;

pub use usher_license::{DEFAULT_BORROW_HOURS, DupGroup, MAX_BORROW_HOURS};
use usher_license::{Entitlement, SeatCount, Terms, TokenAlternative, Version};

use crate::Millis;

/// Names a pool: the seats of one feature, from one vendor, at one version.
///
/// Entitlements that agree on all three add their seats together (INCREMENT lines), and a
/// request for version `v` may be served by any pool whose version is `>= v`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolKey {
    /// Feature name.
    pub feature: String,
    /// Vendor name.
    pub vendor: String,
    /// Pool version in canonical spelling (see [`canonical_version`]), so equal versions
    /// name the same pool however the license lines spell them.
    pub version: String,
}

/// A pool's name borrowed from wherever it is kept (a [`PoolKey`], a
/// [`Lease`](crate::Lease::pool_key)), so that looking a pool up builds no strings.
///
/// Compares, orders and hashes as the [`PoolKey`] it names, so either finds the same
/// entry of a map keyed by [`PoolKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolRef<'a> {
    /// Feature name.
    pub feature: &'a str,
    /// Vendor name.
    pub vendor: &'a str,
    /// Pool version in canonical spelling.
    pub version: &'a str,
}

impl PoolKey {
    /// The key, borrowed.
    pub fn as_pool_ref(&self) -> PoolRef<'_> {
        PoolRef {
            feature: &self.feature,
            vendor: &self.vendor,
            version: &self.version,
        }
    }
}

impl PoolRef<'_> {
    /// The key, owned.
    pub fn to_key(self) -> PoolKey {
        PoolKey {
            feature: self.feature.to_owned(),
            vendor: self.vendor.to_owned(),
            version: self.version.to_owned(),
        }
    }
}

impl<'a> From<&'a PoolKey> for PoolRef<'a> {
    fn from(key: &'a PoolKey) -> Self {
        key.as_pool_ref()
    }
}

// `PoolKey` hashes as its `PoolRef` does, which is what lets a map keyed by `PoolKey` be
// searched with a `PoolRef` (through `PoolName`).
impl std::hash::Hash for PoolKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_pool_ref().hash(state);
    }
}

/// Something that names a pool: the key type a `HashMap<PoolKey, _>` is searched by, so
/// a [`PoolRef`] finds an entry without building a [`PoolKey`] (`Borrow` cannot hand out
/// a `PoolRef` by reference; a trait object can).
pub(crate) trait PoolName {
    fn pool_ref(&self) -> PoolRef<'_>;
}

impl PoolName for PoolKey {
    fn pool_ref(&self) -> PoolRef<'_> {
        self.as_pool_ref()
    }
}

impl PoolName for PoolRef<'_> {
    fn pool_ref(&self) -> PoolRef<'_> {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn PoolName + 'a> for PoolKey {
    fn borrow(&self) -> &(dyn PoolName + 'a) {
        self
    }
}

impl std::hash::Hash for dyn PoolName + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pool_ref().hash(state);
    }
}

impl PartialEq for dyn PoolName + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.pool_ref() == other.pool_ref()
    }
}

impl Eq for dyn PoolName + '_ {}

/// One entitlement's contribution to a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Seats it adds while valid.
    pub seats: u32,
    /// First millisecond of validity.
    pub valid_from: Millis,
    /// First millisecond after validity, or `None` if permanent.
    pub valid_until: Option<Millis>,
    /// Seats it allows beyond `seats` while valid (`OVERDRAFT=`).
    pub overdraft: u32,
}

impl Grant {
    fn is_valid_at(&self, now: Millis) -> bool {
        now >= self.valid_from && self.valid_until.is_none_or(|end| now < end)
    }
}

/// The seats of one feature at one version, summed over its entitlements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Pool identity.
    pub key: PoolKey,
    /// Parsed version, for ordering.
    pub version: Version,
    /// Contributions, one per entitlement.
    pub grants: Vec<Grant>,
    /// Duplicate checkouts that share a seat (`DUP_GROUP=`), if any.
    pub dup_group: Option<DupGroup>,
    /// `LINGER=`: how long seats stay held after they are given back (the largest value
    /// among the pool's entitlements).
    pub linger: Millis,
    /// `MIN_CHECKOUT=`: how long after the grant seats stay held at least, however early
    /// they are given back (the largest value among the pool's entitlements).
    pub min_checkout: Millis,
    /// `USER_BASED[=n]`: only the first n users the policy names (`INCLUDE`) may use the
    /// pool; `Some(None)` for a bare `USER_BASED` (n is the pool's seat count).
    pub user_based: Option<Option<u32>>,
    /// `BORROW[=hours]`: the longest borrow the license allows (the largest among the
    /// pool's entitlements; a bare `BORROW` allows [`DEFAULT_BORROW_HOURS`]). `None`: the
    /// seats cannot be borrowed.
    pub borrow: Option<Millis>,
    /// The vendor-signed entitlements behind `grants`, in the same order: a grant's or
    /// borrow's signed statement carries one, so the client can check it with the
    /// vendor's key.
    pub sources: Vec<Arc<Entitlement>>,
}

impl Pool {
    /// Seats valid at `now` (started and not expired).
    pub fn seats_at(&self, now: Millis) -> u32 {
        self.grants
            .iter()
            .filter(|g| g.is_valid_at(now))
            .fold(0u32, |acc, g| acc.saturating_add(g.seats))
    }

    /// Overdraft seats valid at `now`: how far beyond [`Pool::seats_at`] grants may go.
    pub fn overdraft_at(&self, now: Millis) -> u32 {
        self.grants
            .iter()
            .filter(|g| g.is_valid_at(now))
            .fold(0u32, |acc, g| acc.saturating_add(g.overdraft))
    }

    /// The earliest start among grants not yet started at `now`.
    pub fn next_start(&self, now: Millis) -> Option<Millis> {
        self.grants
            .iter()
            .map(|g| g.valid_from)
            .filter(|&s| s > now)
            .min()
    }

    /// The latest end among grants that have ended by `now`.
    pub fn last_end(&self, now: Millis) -> Option<Millis> {
        self.grants
            .iter()
            .filter_map(|g| g.valid_until)
            .filter(|&e| e <= now)
            .max()
    }

    /// The entitlement a borrow at `now` is drawn from: among those valid at `now`, the
    /// one valid longest.
    pub fn source_at(&self, now: Millis) -> Option<&Arc<Entitlement>> {
        self.grants
            .iter()
            .zip(&self.sources)
            .filter(|(g, _)| g.is_valid_at(now))
            .max_by_key(|(g, _)| g.valid_until.unwrap_or(Millis::MAX))
            .map(|(_, e)| e)
    }

    /// When every entitlement of the pool has ended by `now`: the end of the last (the
    /// first millisecond after it). `None` while any is valid or yet to start.
    pub fn ended_at(&self, now: Millis) -> Option<Millis> {
        let ends: Option<Vec<Millis>> = self
            .grants
            .iter()
            .map(|g| g.valid_until.filter(|end| *end <= now))
            .collect();
        ends?.into_iter().max()
    }

    /// When the pool's first seats start, if none is valid at `now` and some start later.
    pub fn starts_at(&self, now: Millis) -> Option<Millis> {
        if self.grants.iter().any(|g| g.is_valid_at(now)) {
            return None;
        }
        self.grants
            .iter()
            .map(|g| g.valid_from)
            .filter(|from| *from > now)
            .min()
    }

    /// When the pool's current seats run out: the earliest end among grants valid at `now`.
    pub fn expires_at(&self, now: Millis) -> Option<Millis> {
        self.grants
            .iter()
            .filter(|g| g.is_valid_at(now))
            .filter_map(|g| g.valid_until)
            .min()
    }
}

/// A token-based feature (`count` = `token`, RLM's `token=`): it has no seats of its own;
/// each checkout draws tokens from another pool, trying `alternatives` in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFeature {
    /// Vendor.
    pub vendor: String,
    /// Highest version it serves.
    pub version: Version,
    /// When it is valid (`seats` and `overdraft` are 0).
    pub validity: Grant,
    /// How a checkout is paid for, in the order tried.
    pub alternatives: Vec<TokenAlternative>,
}

impl TokenFeature {
    /// Whether the entitlement is valid at `now`.
    pub fn is_valid_at(&self, now: Millis) -> bool {
        self.validity.is_valid_at(now)
    }
}

/// Every pool the server offers, by feature, each feature's pools in ascending version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    features: BTreeMap<String, Vec<Pool>>,
    /// Token-based features, by name, in file order.
    tokens: BTreeMap<String, Vec<TokenFeature>>,
    /// Features served by no line here because their lines are bound to another host:
    /// the `HOSTID=` of the first such line.
    bound_elsewhere: BTreeMap<String, String>,
    problems: Vec<String>,
}

impl Catalog {
    /// Builds the catalog from entitlements whose signatures have already been checked.
    ///
    /// Uncounted (node-locked) entitlements are validated by the client library on its own
    /// host and are not served by the server, so they contribute no pool.
    pub fn from_entitlements<'a>(entitlements: impl IntoIterator<Item = &'a Entitlement>) -> Self {
        let mut features: BTreeMap<String, Vec<Pool>> = BTreeMap::new();
        let mut tokens: BTreeMap<String, Vec<TokenFeature>> = BTreeMap::new();
        let mut problems = Vec::new();
        for e in entitlements {
            if let Some(alternatives) = e.token_alternatives() {
                tokens
                    .entry(e.feature.clone())
                    .or_default()
                    .push(TokenFeature {
                        vendor: e.vendor.clone(),
                        version: e.version.clone(),
                        validity: Grant {
                            seats: 0,
                            valid_from: e.valid_from_ms(),
                            valid_until: e.valid_until_ms(),
                            overdraft: 0,
                        },
                        alternatives,
                    });
                continue;
            }
            let SeatCount::Counted(seats) = e.count else {
                continue;
            };
            // Values the license crate refuses were reported when the file was loaded,
            // with their position; `Terms` serves them as absent.
            let terms = Terms::of(e);
            let grant = Grant {
                seats,
                valid_from: e.valid_from_ms(),
                valid_until: e.valid_until_ms(),
                overdraft: terms.overdraft,
            };
            let user_based = terms.user_based;
            let borrow = terms.borrow_hours.map(|hours| hours * 3_600_000);
            let linger = terms.linger_secs * 1000;
            let min_checkout = terms.min_checkout_secs * 1000;
            let dup_group = terms.dup_group;
            let pools = features.entry(e.feature.clone()).or_default();
            match pools
                .iter_mut()
                .find(|p| p.key.vendor == e.vendor && p.version == e.version)
            {
                Some(pool) => {
                    pool.grants.push(grant);
                    pool.sources.push(Arc::new(e.clone()));
                    pool.borrow = pool.borrow.max(borrow);
                    pool.linger = pool.linger.max(linger);
                    pool.min_checkout = pool.min_checkout.max(min_checkout);
                    pool.user_based = pool.user_based.or(user_based);
                    if e.attr("DUP_GROUP").is_some() && pool.dup_group != dup_group {
                        problems.push(format!(
                            "line {}: feature {:?}: DUP_GROUP differs from an earlier line of \
                             the same pool; the first one applies",
                            e.line, e.feature
                        ));
                    }
                }
                None => pools.push(Pool {
                    borrow,
                    sources: vec![Arc::new(e.clone())],
                    dup_group,
                    linger,
                    min_checkout,
                    user_based,
                    key: PoolKey {
                        feature: e.feature.clone(),
                        vendor: e.vendor.clone(),
                        version: canonical_version(&e.version),
                    },
                    version: e.version.clone(),
                    grants: vec![grant],
                }),
            }
        }
        for pools in features.values_mut() {
            pools.sort_by(|a, b| a.version.cmp(&b.version).then_with(|| a.key.cmp(&b.key)));
        }
        tokens.retain(|name, _| {
            let counted = features.contains_key(name);
            if counted {
                problems.push(format!(
                    "feature {name:?} has both counted and token-based licenses; only the \
                     counted seats are served"
                ));
            }
            !counted
        });
        Catalog {
            features,
            tokens,
            bound_elsewhere: BTreeMap::new(),
            problems,
        }
    }

    /// Conflicts between the lines of one feature that could not all be honoured (one
    /// line each, naming the license line), for the server to log. The entitlements
    /// themselves are still served. A single attribute's refused value is the license
    /// file's problem ([`usher_license::LicenseFile::attribute_problems`]), not listed here.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Records features whose lines were not served because they are bound (`HOSTID=`) to
    /// another host, with that host id, so a checkout of one is refused with that reason
    /// rather than as an unknown feature. Features the catalog serves are left out.
    pub fn with_bound_elsewhere(
        mut self,
        lines: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        for (feature, hostid) in lines {
            if !self.knows(&feature) {
                self.bound_elsewhere.entry(feature).or_insert(hostid);
            }
        }
        self
    }

    /// The host id a feature's lines are bound to, when it is served only elsewhere.
    pub fn bound_elsewhere(&self, feature: &str) -> Option<&str> {
        self.bound_elsewhere.get(feature).map(String::as_str)
    }

    /// The pools of a feature, in ascending version, or `None` if the feature is unknown.
    pub fn pools(&self, feature: &str) -> Option<&[Pool]> {
        self.features.get(feature).map(Vec::as_slice)
    }

    /// The token-based definitions of a feature, in file order, or `None` if it has none.
    pub fn token_feature(&self, feature: &str) -> Option<&[TokenFeature]> {
        self.tokens.get(feature).map(Vec::as_slice)
    }

    /// Every token-based feature with its definitions, by name in lexical order.
    pub fn token_features(&self) -> impl Iterator<Item = (&str, &[TokenFeature])> {
        self.tokens
            .iter()
            .map(|(f, defs)| (f.as_str(), defs.as_slice()))
    }

    /// Whether any license names the feature (counted or token-based).
    pub fn knows(&self, feature: &str) -> bool {
        self.features.contains_key(feature) || self.tokens.contains_key(feature)
    }

    /// Every pool, grouped by feature name in lexical order.
    pub fn all_pools(&self) -> impl Iterator<Item = &Pool> {
        self.features.values().flatten()
    }

    /// Looks a pool up by key (a `&PoolKey` or a [`PoolRef`]).
    pub fn pool<'k>(&self, key: impl Into<PoolRef<'k>>) -> Option<&Pool> {
        let key = key.into();
        self.features
            .get(key.feature)?
            .iter()
            .find(|p| p.key.as_pool_ref() == key)
    }
}

/// The one spelling of a version that names its pool: numeric components without leading
/// zeros or trailing `.0`s, so equal versions make the same `PoolKey` however (and in
/// whichever order) the license lines spell them. Leases record this spelling, so a
/// reload or restart that respells a version still counts them against the same pool.
pub fn canonical_version(v: &Version) -> String {
    let parts = v.parts();
    let end = parts.iter().rposition(|&p| p != 0).map_or(1, |i| i + 1);
    parts[..end]
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::{BuildHasher, RandomState};

    use super::*;

    fn key(feature: &str, vendor: &str, version: &str) -> PoolKey {
        PoolKey {
            feature: feature.into(),
            vendor: vendor.into(),
            version: version.into(),
        }
    }

    #[test]
    fn a_pool_ref_hashes_and_compares_as_its_key() {
        let hasher = RandomState::new();
        for k in [
            key("cad", "acme", "2025"),
            key("", "", ""),
            key("a", "bc", ""),
        ] {
            let r = k.as_pool_ref();
            assert_eq!(hasher.hash_one(&k), hasher.hash_one(r));
            assert_eq!(r.to_key(), k);
        }
        // The field boundaries count: ("ab", "c") is not ("a", "bc").
        let (a, b) = (key("ab", "c", "1"), key("a", "bc", "1"));
        assert_ne!(a.as_pool_ref(), b.as_pool_ref());
    }

    #[test]
    fn a_map_keyed_by_pool_key_is_searched_by_pool_ref() {
        let mut map: HashMap<PoolKey, u32> = HashMap::new();
        map.insert(key("cad", "acme", "2025"), 3);
        map.insert(key("cad", "acme", "2026"), 4);
        let hit = PoolRef {
            feature: "cad",
            vendor: "acme",
            version: "2026",
        };
        assert_eq!(map.get(&hit as &dyn PoolName), Some(&4));
        let miss = PoolRef {
            version: "2027",
            ..hit
        };
        assert_eq!(map.get(&miss as &dyn PoolName), None);
    }
}
