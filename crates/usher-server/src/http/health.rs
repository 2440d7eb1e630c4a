//! `/api/v1/health` and `/healthz`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use usher_core::Millis;

use super::api::latest_seq;
use super::{ApiError, ApiState};

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
                v.ledger.session_count(),
                v.ledger.lease_count(),
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
