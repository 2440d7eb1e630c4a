//! The state every connection and the admin HTTP API share: one per server, made by
//! [`crate::server`] at start and handed out behind an `Arc`.
//!
//! It holds handles (the ledger's queue, the notice table, the keepalive table, the
//! published status views), the limits the configuration sets for each connection, and
//! the administrator's actions ([`Admin`], which keeps what a reload re-reads). Nothing in
//! it is per connection.

use std::sync::Arc;
use std::time::Duration;

use crate::access::Cidr;
use crate::admin::Admin;
use crate::auth::AdminAuth;
use crate::config::StatusDetail;
use crate::identity::Identity;
use crate::keepalives::Keepalives;
use crate::ledger_task::LedgerHandle;
use crate::metrics::Metrics;
use crate::notices::Notices;
use crate::requests::status_view::StatusViews;

/// The server-wide state connections and the admin API are served with.
#[derive(Debug)]
pub struct Shared {
    /// The ledger.
    pub ledger: LedgerHandle,
    /// The administrator's actions (remove, reload, down), with what a reload re-reads.
    pub admin: Admin,
    /// Announced heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Session TTL; also how long a connection may stay silent before it is dropped.
    pub session_ttl: Duration,
    /// How long the handshake may take.
    pub handshake_timeout: Duration,
    /// See [`crate::Config::send_timeout`].
    pub send_timeout: Duration,
    /// Server host name.
    pub server_name: String,
    /// See [`crate::Config::status_detail`].
    pub status_detail: StatusDetail,
    /// The admin token, for status requests that present it (and the admin API).
    pub admin_auth: Arc<AdminAuth>,
    /// See [`crate::Config::admin_from`].
    pub admin_from: Vec<Cidr>,
    /// This server's identity key, which signs borrow tokens.
    pub identity: Arc<Identity>,
    /// Hot-path metrics.
    pub metrics: Arc<Metrics>,
    /// Most requests per second one connection may send (with a burst of as many); 0: no
    /// limit.
    pub max_request_rate: u32,
    /// Where notices the server sends unasked go (a removed lease, a queued grant).
    pub notices: Arc<Notices>,
    /// Keepalive keys of detached sessions (see [`crate::keepalives`]).
    pub keepalives: Arc<Keepalives>,
    /// The UDP port detached sessions send keepalives to; `None` when UDP is unavailable.
    pub udp_port: Option<u16>,
    /// See [`crate::Config::max_frame_bytes`].
    pub max_frame_bytes: usize,
    /// See [`crate::Config::max_requests_in_flight`].
    pub max_in_flight: usize,
    /// The status views the ledger task published, which status requests are served from.
    pub status_views: Arc<StatusViews>,
}
