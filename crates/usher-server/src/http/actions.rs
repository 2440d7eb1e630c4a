//! The `/api/v1/` actions (`POST /remove`, `/reload`, `/down`), through
//! [`crate::admin`], the same code the admin socket uses.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, Caller};
use crate::admin::AdminError;

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
