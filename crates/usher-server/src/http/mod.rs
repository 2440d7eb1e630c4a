//! The admin HTTP listener: the JSON API under `/api/v1/`, Prometheus `/metrics`, the
//! OpenAPI document and the dashboard, on their own address (loopback by default), never
//! on the license port.
//!
//! Reads go to the ledger task as queries (one consistent view, answered after the batch
//! it ran in is durable), to the status view it publishes (the long lists, paged by key:
//! see `lists`) or to the store opened read-only; actions go through [`crate::admin`],
//! the same code the admin socket uses.
//!
//! **Authentication:** every `/api/` route needs `Authorization: Bearer TOKEN`, where the
//! token is the content of `DATA_DIR/admin/token` (created by the server, mode 0600 in
//! the 0700 admin directory), compared in constant time. `/metrics`, `/healthz`,
//! `/openapi.json` and the dashboard's static files are open: they reveal counts, the API's
//! shape and a page that asks for the token, never who holds what. The listener is
//! loopback by default; put it on another address only behind a firewall. An address that
//! sends [`MAX_STRIKES`](crate::auth::strikes::MAX_STRIKES) wrong tokens within a minute
//! (here or in status requests on the client port) has its wrong tokens answered 429 for a
//! minute, counted; the right token always passes (see [`crate::auth`]).

mod actions;
mod api;
mod health;
pub mod listener;
mod lists;
mod paging;
mod prometheus;
mod usage;

pub use listener::{AllowedHosts, serve};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use usher_store::SqliteStore;

use crate::auth::Refused;
use crate::metrics::Metrics;
use crate::shared::Shared;

/// The OpenAPI 3.1 document describing every route below.
pub const OPENAPI: &str = include_str!("openapi.json");

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

/// Every route the router serves, as `(method, path)`; the OpenAPI document must describe
/// each (a test checks both directions).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/dashboard.js"),
    ("get", "/dashboard.css"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/api/v1/features"),
    ("get", "/api/v1/holders"),
    ("get", "/api/v1/holders/groups"),
    ("get", "/api/v1/sessions"),
    ("get", "/api/v1/queue"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/usage"),
    ("get", "/api/v1/health"),
    ("post", "/api/v1/remove"),
    ("post", "/api/v1/reload"),
    ("post", "/api/v1/down"),
];

/// Longest time one request may take before it is answered 408; it also bounds how long a
/// graceful shutdown waits for a slow client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    ctx: Arc<Shared>,
    metrics: Arc<Metrics>,
    store_path: PathBuf,
    /// The store opened read-only, on first use, for the usage log. Used only inside
    /// `spawn_blocking`, and the lock is never held across an await.
    reader: Arc<Mutex<Option<SqliteStore>>>,
    /// Cancelled if the store failed (the server is stopping).
    failed: CancellationToken,
}

impl ApiState {
    /// State for a server whose store is at `store_path`, accepting the admin token of
    /// `ctx`.
    pub fn new(
        ctx: Arc<Shared>,
        metrics: Arc<Metrics>,
        store_path: PathBuf,
        failed: CancellationToken,
    ) -> Self {
        ApiState {
            ctx,
            metrics,
            store_path,
            reader: Arc::new(Mutex::new(None)),
            failed,
        }
    }

    /// Runs `read` on the read-only store, opening it on first use.
    async fn with_store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&SqliteStore) -> Result<T, usher_store::StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reader, path) = (self.reader.clone(), self.store_path.clone());
        tokio::task::spawn_blocking(move || {
            let mut guard = reader.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                *guard = Some(SqliteStore::open_read_only(&path)?);
            }
            read(guard.as_ref().expect("opened just above"))
        })
        .await
        .map_err(|e| ApiError::internal(format!("store reader failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("reading the store: {e}")))
    }
}

/// The admin HTTP application.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/features", get(api::features))
        .route("/holders", get(lists::holders))
        .route("/holders/groups", get(lists::holder_groups))
        .route("/sessions", get(lists::sessions))
        .route("/queue", get(lists::queue))
        .route("/events", get(api::events))
        .route("/usage", get(usage::usage))
        .route("/health", get(health::health))
        .route("/remove", post(actions::remove))
        .route("/reload", post(actions::reload))
        .route("/down", post(actions::down))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route(
            "/",
            get(|| async { static_file(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard.js",
            get(|| async { static_file(DASHBOARD_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard.css",
            get(|| async { static_file(DASHBOARD_CSS, "text/css; charset=utf-8") }),
        )
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(prometheus::metrics))
        .route("/openapi.json", get(openapi))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(no_store))
        .with_state(state)
}

/// Reads the admin token from `path`, creating it (32 random bytes, hex, mode 0600) if it
/// is missing. The directory must exist (it is the 0700 admin directory).
pub fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    if let Some(dir) = path.parent() {
        crate::data_dir::create_private_dir(dir)?;
    }
    match crate::data_dir::read(path)? {
        Some(bytes) if !String::from_utf8_lossy(&bytes).trim().is_empty() => {
            return Ok(String::from_utf8_lossy(&bytes).trim().to_string());
        }
        Some(_) => std::fs::remove_file(path)?,
        None => {}
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    let token = hex::encode(bytes);
    crate::data_dir::create_new(path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = given else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer TOKEN, with the token from DATA_DIR/admin/token",
        )
        .into_response();
    };
    match state.ctx.admin_auth.check(peer, token, "admin API") {
        Ok(()) => next.run(request).await,
        Err(Refused::LockedOut(wait)) => {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                "too many wrong tokens from this address; wait and try again",
            )
            .into_response();
            let secs = wait.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
        Err(Refused::Wrong) => unauthorized_wrong(),
    }
}

fn unauthorized_wrong() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "the bearer token does not match DATA_DIR/admin/token",
    )
    .into_response()
}

/// API answers change from one moment to the next and may name people: never cache them.
async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page loads only its own script and style and talks only to this origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    (headers, body).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

/// An error answer: `{"error": {"code": "...", "message": "...", ...}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Further members of the error object (e.g. `wait_ms`).
    extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Default::default(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

impl From<crate::ledger_task::LedgerGone> for ApiError {
    fn from(_: crate::ledger_task::LedgerGone) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        error.extend(self.extra);
        let body = serde_json::json!({ "error": error });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"usherd\""),
            );
        }
        response
    }
}

/// Who is calling, for the audit trail: the peer address, and how it authenticated.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown address".to_string(), |c| c.0.to_string());
        Ok(Caller(format!("http {peer} (token)")))
    }
}
