//! `/api/v1/usage`: seats in use of one feature over a window, rebuilt from the usage log.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use usher_core::Millis;
use usher_store::UsageEvent;

use super::api::latest_seq;
use super::{ApiError, ApiState};

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
    let (known, total, level, now) = s
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
            (pools.is_some() || level > 0, total, level, v.now)
        })
        .await?;
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_feature",
            format!("no feature {:?} is served or held", q.feature),
        ));
    }
    // The server's time, as the level is (never behind its newest durable write, so the
    // records the window holds are never after its end).
    let to = now;
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
