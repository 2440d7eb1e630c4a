//! The `/api/v1/` read handlers for the catalog and the usage log (`/features`,
//! `/events`). Shapes are described in `openapi.json`; times are Unix milliseconds.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use usher_core::{Lease, Ledger, Millis, PoolRef};
use usher_proto::TokenFeatureStatus;
use usher_store::UsageRecord;

use super::{ApiError, ApiState};
use crate::ledger_task::View;
use crate::requests::status_view::StatusView;

/// One pool: a feature at one version.
#[derive(Debug, Serialize)]
pub struct FeatureJson {
    pub(super) feature: String,
    pub(super) vendor: String,
    pub(super) version: String,
    /// Seats licensed now (0 for a pool that left the catalog on a reload but is still held).
    pub(super) total: u32,
    pub(super) in_use: u32,
    /// Seats that may be granted beyond `total` (`OVERDRAFT=`).
    overdraft: u32,
    /// Seats held beyond `total` now.
    overdraft_in_use: u32,
    /// Seats of `in_use` borrowed for offline use.
    pub(super) borrowed: u32,
    /// When the pool's entitlements expire (for an expired pool: expired; for one yet to
    /// start: those that start); `null` if permanent.
    expires_at: Option<Millis>,
    /// Every entitlement of the pool has expired, at this moment; `null` otherwise.
    expired_at: Option<Millis>,
    /// No entitlement of the pool is valid yet; the first starts at this moment.
    starts_at: Option<Millis>,
    /// For an expired or not yet started pool: the seats of those license lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    licensed: Option<u32>,
    holders: usize,
    /// For a token-based feature (no seats of its own; `in_use` counts its checkouts):
    /// what a seat costs. Absent for a pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<TokensJson>,
}

/// What a token-based feature's seat costs, and the tokens its checkouts hold.
#[derive(Debug, Serialize)]
pub struct TokensJson {
    /// One per pool it may draw from, in the order tried.
    costs: Vec<TokenCostJson>,
    /// Tokens its checkouts hold, across those pools.
    tokens_in_use: u32,
}

/// One pool a token-based feature draws from: `tokens` per seat, from `pool` at `version`
/// or newer.
#[derive(Debug, Serialize)]
pub struct TokenCostJson {
    pool: String,
    version: String,
    tokens: u32,
}

/// One usage-log record.
#[derive(Debug, Serialize)]
pub struct EventJson {
    seq: i64,
    at: Millis,
    event: String,
    session_id: Option<String>,
    lease_id: Option<u64>,
    feature: Option<String>,
    vendor: Option<String>,
    version: Option<String>,
    count: Option<u32>,
    user: Option<String>,
    host: Option<String>,
    display: Option<String>,
    detail: Option<String>,
}

impl From<UsageRecord> for EventJson {
    fn from(record: UsageRecord) -> Self {
        let UsageRecord {
            seq,
            at,
            columns: r,
            ..
        } = record;
        EventJson {
            seq,
            at,
            event: r.event.as_str().to_owned(),
            // Session ids are 64-bit: as strings, so JavaScript does not round them.
            session_id: r.session.map(|s| s.0.to_string()),
            lease_id: r.lease.map(|l| l.0),
            feature: r.feature,
            vendor: r.vendor,
            version: r.version,
            count: r.count,
            user: r.user,
            host: r.host,
            display: r.display,
            detail: r.detail,
        }
    }
}

/// Every pool of the catalog, then pools that left it but are still held.
pub(super) fn features_of(view: &View<'_>) -> Vec<FeatureJson> {
    let ledger: &Ledger = view.ledger;
    // The ledger keeps these per pool: no walk over the leases.
    let mut held: BTreeMap<PoolRef<'_>, (usize, u32, u32)> = ledger
        .pool_tallies()
        .map(|(key, t)| (key.into(), (t.holders as usize, t.overdraft, t.borrowed)))
        .collect();
    let mut out = Vec::new();
    for pool in ledger.catalog().all_pools() {
        let (holders, overdraft_in_use, borrowed) =
            held.remove(&pool.key.as_pool_ref()).unwrap_or_default();
        let status = crate::requests::status_view::pool_status(pool, view.now, 0);
        out.push(FeatureJson {
            feature: pool.key.feature.clone(),
            vendor: pool.key.vendor.clone(),
            version: pool.version.to_string(),
            total: pool.seats_at(view.now),
            in_use: ledger.in_use(&pool.key),
            overdraft: pool.overdraft_at(view.now),
            overdraft_in_use,
            borrowed,
            expires_at: nonzero(status.expires_at_ms),
            expired_at: nonzero(status.ended_at_ms),
            starts_at: nonzero(status.starts_at_ms),
            licensed: (status.licensed > 0).then_some(status.licensed),
            holders,
            tokens: None,
        });
    }
    for (key, (holders, overdraft_in_use, borrowed)) in held {
        out.push(FeatureJson {
            in_use: ledger.in_use(key),
            feature: key.feature.to_owned(),
            vendor: key.vendor.to_owned(),
            version: key.version.to_owned(),
            total: 0,
            overdraft: 0,
            overdraft_in_use,
            borrowed,
            expires_at: None,
            expired_at: None,
            starts_at: None,
            licensed: None,
            holders,
            tokens: None,
        });
    }
    out
}

/// A time in ms, or `None` for 0 ("not set").
fn nonzero(ms: u64) -> Option<Millis> {
    (ms != 0).then_some(ms)
}

/// [`features_of`] from the published status view, off the ledger task.
fn features_of_view(view: &StatusView) -> Vec<FeatureJson> {
    view.pools_with_holders()
        .map(|(pool, overdraft, rows)| {
            let seats = |pick: fn(&Lease) -> bool| -> u32 {
                rows.iter()
                    .filter(|r| pick(&r.lease))
                    .map(|r| r.lease.count)
                    .sum()
            };
            FeatureJson {
                feature: pool.feature.clone(),
                vendor: pool.vendor.clone(),
                version: pool.version.clone(),
                total: pool.total,
                in_use: pool.in_use,
                overdraft,
                overdraft_in_use: seats(|l| l.overdraft),
                borrowed: seats(|l| l.borrowed_until.is_some()),
                expires_at: nonzero(pool.expires_at_ms),
                expired_at: nonzero(pool.ended_at_ms),
                starts_at: nonzero(pool.starts_at_ms),
                licensed: (pool.licensed > 0).then_some(pool.licensed),
                holders: rows.len(),
                tokens: None,
            }
        })
        .chain(
            view.token_features()
                .iter()
                .map(|t| token_feature_json(view, t)),
        )
        .collect()
}

/// A token-based feature as the features list shows it: after the pools, with no seats
/// of its own, its checkouts as `in_use` and their leases as `holders`.
fn token_feature_json(view: &StatusView, t: &TokenFeatureStatus) -> FeatureJson {
    let holders = view
        .pools_with_holders()
        .flat_map(|(_, _, rows)| rows)
        .filter(|r| r.lease.token_for.as_deref() == Some(t.feature.as_str()))
        .count();
    FeatureJson {
        feature: t.feature.clone(),
        vendor: t.vendor.clone(),
        version: t.version.clone(),
        total: 0,
        in_use: t.in_use,
        overdraft: 0,
        overdraft_in_use: 0,
        borrowed: 0,
        expires_at: nonzero(t.expires_at_ms),
        expired_at: None,
        starts_at: None,
        licensed: None,
        holders,
        tokens: Some(TokensJson {
            costs: t
                .costs
                .iter()
                .map(|c| TokenCostJson {
                    pool: c.pool.clone(),
                    version: c.version.clone(),
                    tokens: c.tokens,
                })
                .collect(),
            tokens_in_use: t.tokens_in_use,
        }),
    }
}

pub(super) async fn features(
    State(s): State<ApiState>,
) -> Result<Json<Vec<FeatureJson>>, ApiError> {
    // Every lease is counted: from the view, so 100,000 holders cost the writer nothing.
    Ok(Json(
        super::lists::from_view(&s, |v| Ok(features_of_view(v))).await?,
    ))
}

/// `?since_seq=&limit=` for the usage log.
#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    since_seq: Option<i64>,
    limit: Option<usize>,
}

/// The answer of `/events`: records in `seq` order, and where to continue from.
#[derive(Debug, Serialize)]
pub struct EventsJson {
    events: Vec<EventJson>,
    /// Pass as `since_seq` to get the records after these.
    next_since_seq: i64,
}

/// The highest `seq` in the log (0 if empty). Sequence numbers have no gaps, so an
/// exponential then binary search over "is there a record after s?" finds it in a few
/// dozen primary-key lookups, without reading the log.
pub(super) fn latest_seq(store: &usher_store::SqliteStore) -> Result<i64, usher_store::StoreError> {
    let exists = |seq: i64| -> Result<bool, usher_store::StoreError> {
        Ok(!store.usage_log(seq - 1, 1)?.is_empty())
    };
    if !exists(1)? {
        return Ok(0);
    }
    let mut lo = 1i64; // exists
    let mut hi = 2i64;
    while exists(hi)? {
        lo = hi;
        hi = hi.saturating_mul(2);
    }
    // lo exists, hi does not.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if exists(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

pub(super) async fn events(
    State(s): State<ApiState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventsJson>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request(
            "bad_query",
            "limit must be 1 to 1000",
        ));
    }
    if q.since_seq.is_some_and(|s| s < 0) {
        return Err(ApiError::bad_request(
            "bad_query",
            "since_seq must be 0 or more",
        ));
    }
    let records = s
        .with_store(move |store| {
            // Without since_seq: the newest `limit` records.
            let after = match q.since_seq {
                Some(seq) => seq,
                None => (latest_seq(store)? - limit as i64).max(0),
            };
            store.usage_log(after, limit).map(|r| (after, r))
        })
        .await?;
    let (after, records) = records;
    let next_since_seq = records.last().map_or(after, |r| r.seq);
    Ok(Json(EventsJson {
        events: records.into_iter().map(EventJson::from).collect(),
        next_since_seq,
    }))
}
