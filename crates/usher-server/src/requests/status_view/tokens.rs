//! Token-based features in status: they have no pool of their own, so status lists them
//! beside the pools, with what a seat costs and how much of them is checked out.

use usher_core::{Catalog, Millis, TokenFeature};
use usher_proto::{TokenCost, TokenFeatureStatus};

/// The token-based features `wanted` accepts, by name, with the seats and tokens of them
/// held: `tokens` gives, for each token-based feature and pool, the tokens held
/// ([`usher_core::Ledger::token_use`], kept by the ledger, so no lease is visited).
pub fn token_statuses<'a>(
    catalog: &Catalog,
    now: Millis,
    wanted: impl Fn(&str) -> bool,
    tokens: impl Iterator<Item = (&'a str, &'a str, u32, u32)>,
) -> Vec<TokenFeatureStatus> {
    let mut statuses: Vec<TokenFeatureStatus> = catalog
        .token_features()
        .filter(|(feature, _)| wanted(feature))
        .map(|(feature, defs)| token_status(feature, defs, now))
        .collect();
    if statuses.is_empty() {
        return statuses;
    }
    for (name, pool, held, leases) in tokens {
        let Some(status) = statuses.iter_mut().find(|s| s.feature == name) else {
            continue;
        };
        status.tokens_in_use = status.tokens_in_use.saturating_add(held);
        // Leases hold tokens of one pool: seats times that pool's price. A pool no longer
        // priced (after a reload) counts each of its leases as one seat.
        let seats = match status.costs.iter().find(|c| c.pool == pool) {
            Some(cost) => held / cost.tokens.max(1),
            None => leases,
        };
        status.in_use = status.in_use.saturating_add(seats);
    }
    statuses
}

/// One token-based feature's line: the definitions valid now (or, if none is, all of
/// them) give its prices, in the order tried, and its expiry.
fn token_status(feature: &str, defs: &[TokenFeature], now: Millis) -> TokenFeatureStatus {
    let valid: Vec<&TokenFeature> = defs.iter().filter(|d| d.is_valid_at(now)).collect();
    let shown: Vec<&TokenFeature> = if valid.is_empty() {
        defs.iter().collect()
    } else {
        valid.clone()
    };
    let mut costs: Vec<TokenCost> = Vec::new();
    for alt in shown.iter().flat_map(|d| &d.alternatives) {
        let cost = TokenCost {
            pool: alt.feature.clone(),
            version: alt.version.to_string(),
            tokens: alt.tokens,
        };
        if !costs.contains(&cost) {
            costs.push(cost);
        }
    }
    TokenFeatureStatus {
        feature: feature.to_owned(),
        vendor: shown.first().map(|d| d.vendor.clone()).unwrap_or_default(),
        version: shown
            .iter()
            .map(|d| &d.version)
            .max()
            .map(|v| v.to_string())
            .unwrap_or_default(),
        costs,
        in_use: 0,
        tokens_in_use: 0,
        expires_at_ms: valid
            .iter()
            .filter_map(|d| d.validity.valid_until)
            .min()
            .unwrap_or(0),
    }
}

/// The pools a status asked for `feature` shows: the feature's own, or, for a token-based
/// feature, the pools its tokens come from. Empty `feature`: every pool.
pub fn shows_pool(feature: &str, tokens: &[TokenFeatureStatus], pool: &str) -> bool {
    feature.is_empty()
        || pool == feature
        || tokens
            .iter()
            .any(|t| t.feature == feature && t.costs.iter().any(|c| c.pool == pool))
}
