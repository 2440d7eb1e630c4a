//! The `/api/v1/` handlers. Shapes are described in `openapi.json`; times are Unix
//! milliseconds.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use usher_core::{Lease, Ledger, Millis, PoolRef};
use usher_store::{UsageEvent, UsageRecord};

use super::{ApiError, ApiState, Caller};
use crate::admin::AdminError;
use crate::clock::wall_clock_ms;
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
    let mut held: BTreeMap<PoolRef<'_>, (usize, u32, u32)> = BTreeMap::new();
    for lease in ledger.leases() {
        let entry = held.entry(lease.pool_key()).or_default();
        entry.0 += 1;
        if lease.overdraft {
            entry.1 += lease.count;
        }
        if lease.borrowed_until.is_some() {
            entry.2 += lease.count;
        }
    }
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
            }
        })
        .collect()
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
fn latest_seq(store: &usher_store::SqliteStore) -> Result<i64, usher_store::StoreError> {
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

/// `?feature=&window_s=` for the usage series.
#[derive(Debug, Deserialize)]
pub(super) struct UsageQuery {
    feature: String,
    window_s: Option<u64>,
}

/// Seats in use of one feature over a window, as steps.
#[derive(Debug, Serialize)]
pub struct UsageJson {
    feature: String,
    /// Seats licensed now, summed over the feature's pools.
    total: u32,
    from: Millis,
    to: Millis,
    /// `[at, in_use]` from `from` to `to`: the level changes at each point.
    points: Vec<(Millis, u32)>,
    /// The highest level in the window and when it was first reached.
    peak: (Millis, u32),
    /// When checkouts of the feature were refused.
    denials: Vec<DenialJson>,
    /// Refusals in the window: the sum of the denials' `count`.
    denied: u64,
    /// Whether the log was read back to `from` (false if the window reaches past the
    /// records this endpoint reads, in which case the series starts later).
    complete: bool,
}

/// Refused checkouts: one, or the repeats of one gathered into one record.
#[derive(Debug, Serialize)]
pub struct DenialJson {
    at: Millis,
    user: Option<String>,
    reason: Option<String>,
    /// Refusals this stands for: 1, or for repeats of the same refusal by one session
    /// (a `denied_repeats` record) their number, counted up to `at`.
    count: u32,
}

/// The shortest `window_s` of `/usage` (the OpenAPI document's `minimum`).
const USAGE_MIN_WINDOW_S: u64 = 10;

/// The longest `window_s` of `/usage`, 31 days (the OpenAPI document's `maximum`).
const USAGE_MAX_WINDOW_S: u64 = 31 * 86_400;

/// Most usage records one `/usage` request reads.
const USAGE_MAX_RECORDS: usize = 50_000;

pub(super) async fn usage(
    State(s): State<ApiState>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageJson>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let window = q.window_s.unwrap_or(3600);
    if !(USAGE_MIN_WINDOW_S..=USAGE_MAX_WINDOW_S).contains(&window) {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("window_s must be {USAGE_MIN_WINDOW_S} to {USAGE_MAX_WINDOW_S} (31 days)"),
        ));
    }
    let feature = q.feature.clone();
    let (known, total, level) = s
        .ctx
        .ledger
        .query(move |v| {
            let pools = v.ledger.catalog().pools(&feature);
            let total = pools.map_or(0, |p| p.iter().map(|p| p.seats_at(v.now)).sum());
            // The pools' counts (every lease counts in its pool's), not a walk of the leases:
            // the same with 10 holders or 100,000.
            let level: u32 = v
                .ledger
                .pools_in_use()
                .filter(|(k, _)| k.feature == feature)
                .map(|(_, n)| n)
                .sum();
            (pools.is_some() || level > 0, total, level)
        })
        .await?;
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_feature",
            format!("no feature {:?} is served or held", q.feature),
        ));
    }
    let to = wall_clock_ms();
    let from = to.saturating_sub(window * 1000);
    let feature = q.feature.clone();
    // Walk the log backwards from its end, undoing each change, so the series needs only
    // the records inside the window and ends exactly at the level the ledger reports.
    let (records, complete) = s
        .with_store(move |store| {
            const PAGE: usize = 1000;
            let mut end = latest_seq(store)?;
            let mut mine = Vec::new();
            let mut read = 0;
            while end > 0 && read < USAGE_MAX_RECORDS {
                let start = (end - PAGE as i64).max(0);
                let page = store.usage_log(start, (end - start) as usize)?;
                read += page.len();
                let older = page.first().is_none_or(|r| r.at < from);
                mine.extend(
                    page.into_iter()
                        .rev()
                        .filter(|r| r.at >= from && r.feature.as_deref() == Some(&feature)),
                );
                if older {
                    return Ok((mine, true));
                }
                end = start;
            }
            Ok((mine, end == 0))
        })
        .await?;
    let mut points = vec![(to, level)];
    let mut denials = Vec::new();
    let mut current = level;
    for r in &records {
        // `r` moved the level to `current`; before it, the level was this:
        let count = r.count.unwrap_or(0);
        let before = match r.event {
            UsageEvent::Checkout | UsageEvent::Borrow => current.saturating_sub(count),
            UsageEvent::Checkin | UsageEvent::Expire | UsageEvent::Remove | UsageEvent::Return => {
                current.saturating_add(count)
            }
            UsageEvent::Denied | UsageEvent::DeniedRepeats => {
                denials.push(DenialJson {
                    at: r.at,
                    user: r.user.clone(),
                    reason: r.detail.clone(),
                    count: match r.event {
                        UsageEvent::DeniedRepeats => count,
                        _ => 1,
                    },
                });
                continue;
            }
            _ => continue,
        };
        points.push((r.at, current));
        current = before;
    }
    points.push((from, current));
    points.reverse();
    denials.reverse();
    let peak = points.iter().copied().fold(
        (from, current),
        |best, p| if p.1 > best.1 { p } else { best },
    );
    Ok(Json(UsageJson {
        feature: q.feature,
        total,
        from,
        to,
        points,
        peak,
        denied: denials.iter().map(|d| u64::from(d.count)).sum(),
        denials,
        complete,
    }))
}

/// The answer of `/health`.
#[derive(Debug, Serialize)]
pub struct HealthJson {
    status: &'static str,
    version: &'static str,
    server_name: String,
    uptime_s: u64,
    started_at: Millis,
    store_ok: bool,
    store_error: Option<String>,
    usage_log_seq: i64,
    connections: i64,
    sessions: usize,
    leases: usize,
}

pub(super) async fn health(State(s): State<ApiState>) -> Result<Json<HealthJson>, ApiError> {
    let (server_name, started_at, sessions, leases) = s
        .ctx
        .ledger
        .query(|v| {
            (
                v.info.server_name.clone(),
                v.info.started_at_ms,
                v.ledger.sessions().count(),
                v.ledger.leases().count(),
            )
        })
        .await?;
    let store = s.with_store(latest_seq).await;
    let unavailable = s.metrics.store_unavailable();
    let store_ok = store.is_ok() && !s.failed.is_cancelled() && unavailable.is_none();
    Ok(Json(HealthJson {
        status: if store_ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        server_name,
        uptime_s: s.metrics.uptime().as_secs(),
        started_at,
        store_ok,
        store_error: store
            .as_ref()
            .err()
            .map(|e| e.message.clone())
            .or(unavailable.map(|why| format!("store unavailable: {why}"))),
        usage_log_seq: store.unwrap_or(0),
        connections: s.metrics.connections(),
        sessions,
        leases,
    }))
}

pub(super) async fn healthz(State(s): State<ApiState>) -> Response {
    if s.failed.is_cancelled() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_failed",
            "the store failed; the server is stopping",
        )
        .into_response();
    }
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// The body of `POST /remove`: a lease id, or a holder's identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveBody {
    #[serde(default, deserialize_with = "json_integer")]
    lease_id: Option<u64>,
    feature: Option<String>,
    user: Option<String>,
    host: Option<String>,
    display: Option<String>,
}

/// A removed lease.
#[derive(Debug, Serialize)]
pub struct RemovedJson {
    id: u64,
    feature: String,
    user: String,
    host: String,
    count: u32,
}

/// A JSON integer as JSON Schema defines it: `7` or `7.0` (a number whose fraction is
/// zero), as long as it fits in a `u64`.
fn json_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(n) = n.as_u64() {
        return Ok(Some(n));
    }
    match n.as_f64() {
        // 2^64 as f64 is the first value past u64: below it, the cast is exact.
        Some(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
            Ok(Some(f as u64))
        }
        _ => Err(D::Error::custom(format!(
            "{n} is not an integer from 0 to {}",
            u64::MAX
        ))),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("the body is not valid JSON for this request: {e}"),
        )
    })
}

pub(super) async fn remove(
    State(s): State<ApiState>,
    Caller(by): Caller,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: RemoveBody = parse_json(&body)?;
    // Who held what, looked up before removing (the lease is gone afterwards).
    let targets: Vec<(u64, String, String)> = match (&req.lease_id, &req.user, &req.host) {
        (Some(id), None, None) if req.feature.is_none() && req.display.is_none() => {
            let id = *id;
            s.ctx
                .ledger
                .query(move |v| {
                    v.ledger
                        .lease(usher_core::LeaseId(id))
                        .map(|l| {
                            let c = v.ledger.session(l.session).map(|s| s.client.clone());
                            let c = c.unwrap_or_default();
                            vec![(id, c.user.to_string(), c.host.to_string())]
                        })
                        .unwrap_or_default()
                })
                .await?
        }
        (None, Some(user), Some(host)) => {
            let (user, host) = (user.clone(), host.clone());
            let (feature, display) = (req.feature.clone(), req.display.clone());
            s.ctx
                .ledger
                .query(move |v| {
                    v.ledger
                        .leases()
                        .filter(|l| feature.as_ref().is_none_or(|f| l.feature == f))
                        .filter_map(|l| {
                            let c = &v.ledger.session(l.session)?.client;
                            let matches = c.user == user
                                && c.host == host
                                && display.as_ref().is_none_or(|d| c.display == d);
                            matches.then(|| (l.id.0, c.user.to_string(), c.host.to_string()))
                        })
                        .collect()
                })
                .await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "bad_request",
                "give either lease_id, or user and host (with optional feature and display)",
            ));
        }
    };
    if targets.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_held",
            "no lease matches; it may have been checked in already",
        ));
    }
    let mut removed = Vec::new();
    let mut too_soon: Option<u64> = None;
    let mut borrowed_until: Option<u64> = None;
    for (id, user, host) in targets {
        match s.ctx.admin.remove(id, &by).await {
            Ok(Some(lease)) => removed.push(RemovedJson {
                id,
                feature: lease.feature.to_string(),
                user,
                host,
                count: lease.count,
            }),
            Ok(None) => {}
            Err(AdminError::TooSoonToRemove { wait_ms }) => {
                too_soon = Some(too_soon.map_or(wait_ms, |w| w.min(wait_ms)));
            }
            Err(AdminError::Borrowed { until }) => borrowed_until = Some(until),
            Err(AdminError::Gone(g)) => return Err(g.into()),
            Err(e) => return Err(ApiError::internal(e.to_string())),
        }
    }
    match (removed.is_empty(), too_soon) {
        (true, Some(wait_ms)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_soon",
            format!(
                "the lease is younger than the minimum remove time; try again in {}",
                human_ms(wait_ms)
            ),
        )
        .with("wait_ms", wait_ms)),
        (true, None) if let Some(until) = borrowed_until => Err(ApiError::new(
            StatusCode::CONFLICT,
            "borrowed",
            "the seats are borrowed for offline use; they come back when the borrower \
             returns them or the borrow ends",
        )
        .with("borrowed_until", until)),
        (true, None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_held",
            "no lease matches; it may have been checked in already",
        )),
        (false, _) => Ok(Json(serde_json::json!({
            "removed": removed,
            "too_soon_wait_ms": too_soon,
        }))),
    }
}

fn human_ms(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

pub(super) async fn reload(
    State(s): State<ApiState>,
    Caller(by): Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    match s.ctx.admin.reload(&by).await {
        Ok(done) => Ok(Json(serde_json::json!({
            "entitlements": done.entitlements,
            "refused": done.refused,
            "warnings": done.warnings,
        }))),
        Err(AdminError::ReloadRefused(why)) => Err(ApiError::bad_request(
            "reload_refused",
            format!("reload refused, the licenses in force are unchanged: {why}"),
        )),
        Err(AdminError::Gone(g)) => Err(g.into()),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

pub(super) async fn down(
    State(s): State<ApiState>,
    Caller(by): Caller,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    match s.ctx.admin.down(&by).await {
        Ok(()) | Err(AdminError::Gone(_)) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "status": "stopping" })),
        )),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}
