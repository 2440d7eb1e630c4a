//! Usage as a server reports it: [`Client::status`](crate::Client::status) and
//! [`admin::status_as_admin`](crate::admin::status_as_admin) return a [`StatusReport`].
//!
//! These are the client's own types, not the wire's: the client reads every page of the
//! server's status and hands over the whole of it. Times are milliseconds since the Unix
//! epoch (`_ms`, 0 where a field says so); [`ms_to_time`] turns one into a `SystemTime`.
//!
//! ```no_run
//! # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
//! let status = client.status("cad").await?;
//! for pool in &status.features {
//!     println!("{} {}: {} of {} seats in use", pool.feature, pool.version, pool.in_use, pool.total);
//! }
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time on the server's clock, as the status gives it (milliseconds since the Unix
/// epoch), or `None` for 0 (the fields' "never", "permanent" or "not given").
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use usher_client::status::ms_to_time;
///
/// assert_eq!(ms_to_time(0), None);
/// assert_eq!(ms_to_time(1_500), Some(UNIX_EPOCH + Duration::from_millis(1_500)));
/// ```
pub fn ms_to_time(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

/// The whole status of a server (of one feature, or of all): the server's facts, each
/// pool with its holders, the token-based features, and the queue.
///
/// The holders and queue entries shown depend on what the server shows the asker (by
/// default seat counts only; an administrator sees everything): compare with
/// [`StatusReport::holders_total`] and [`StatusReport::queue_total`].
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
/// let status = client.status("").await?;
/// println!("{} {} on port {}", status.server_name, status.server_version, status.port);
/// if status.holders_not_shown() > 0 {
///     println!("({} holders not shown)", status.holders_not_shown());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusReport {
    /// Server host name.
    pub server_name: String,
    /// Server software version.
    pub server_version: String,
    /// Port the server listens on.
    pub port: u32,
    /// One entry per pool (a feature's seats of one vendor and version).
    pub features: Vec<FeatureStatus>,
    /// When the server started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// License files served.
    pub license_files: Vec<String>,
    /// Vendors served.
    pub vendors: Vec<String>,
    /// The server's clock when the report was made (ms since the Unix epoch).
    pub now_ms: u64,
    /// Checkouts waiting for seats, each feature's in serving order.
    pub queue: Vec<QueueEntry>,
    /// Holders in the whole status (of the feature asked for), shown or not.
    pub holders_total: u64,
    /// Queue entries in the whole status, shown or not.
    pub queue_total: u64,
    /// The server cut its status short: more holders or queue entries exist than shown.
    pub truncated: bool,
    /// Token-based features: they have no seats of their own (so are not in
    /// [`StatusReport::features`]); each checkout draws tokens from a pool that is.
    pub token_features: Vec<TokenFeatureStatus>,
}

impl StatusReport {
    /// Holders the whole status has beyond those in this report. 0 from a server that
    /// does not say.
    ///
    /// ```
    /// let mut status = usher_client::StatusReport::default();
    /// status.holders_total = 3;
    /// assert_eq!(status.holders_not_shown(), 3);
    /// ```
    pub fn holders_not_shown(&self) -> u64 {
        let shown: usize = self.features.iter().map(|f| f.holders.len()).sum();
        self.holders_total.saturating_sub(shown as u64)
    }

    /// Queue entries the whole status has beyond those in this report.
    ///
    /// ```
    /// let mut status = usher_client::StatusReport::default();
    /// status.queue_total = 2;
    /// assert_eq!(status.queue_not_shown(), 2);
    /// ```
    pub fn queue_not_shown(&self) -> u64 {
        self.queue_total.saturating_sub(self.queue.len() as u64)
    }

    /// The client's report for the wire's (every page of it already absorbed).
    pub(crate) fn from_proto(p: usher_proto::StatusReport) -> Self {
        StatusReport {
            server_name: p.server_name,
            server_version: p.server_version,
            port: p.port,
            features: p
                .features
                .into_iter()
                .map(FeatureStatus::from_proto)
                .collect(),
            started_at_ms: p.started_at_ms,
            license_files: p.license_files,
            vendors: p.vendors,
            now_ms: p.now_ms,
            queue: p.queue.into_iter().map(QueueEntry::from_proto).collect(),
            holders_total: p.holders_total,
            queue_total: p.queue_total,
            truncated: p.truncated,
            token_features: p
                .token_features
                .into_iter()
                .map(TokenFeatureStatus::from_proto)
                .collect(),
        }
    }
}

/// Usage of one pool: the seats of a feature at one vendor and version.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
/// for pool in client.status("cad").await?.features {
///     let free = pool.total.saturating_sub(pool.in_use);
///     println!("{} {}: {free} free, expires {:?}", pool.feature, pool.version,
///              usher_client::status::ms_to_time(pool.expires_at_ms));
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeatureStatus {
    /// Feature.
    pub feature: String,
    /// Vendor.
    pub vendor: String,
    /// Pool version.
    pub version: String,
    /// Earliest expiry among the pool's current entitlements (ms since the Unix epoch,
    /// the first millisecond after the last valid day; 0: permanent). For a pool with none
    /// valid now: the expiry of those that start at `starts_at_ms`, or `ended_at_ms`.
    pub expires_at_ms: u64,
    /// Seats valid now.
    pub total: u32,
    /// Seats held.
    pub in_use: u32,
    /// Who holds them (as far as the server shows the asker).
    pub holders: Vec<Holder>,
    /// Every entitlement of the pool has expired: when the last ended (ms since the Unix
    /// epoch). 0: not expired.
    pub ended_at_ms: u64,
    /// No entitlement of the pool is valid yet: when the first starts (ms since the Unix
    /// epoch). 0: not waiting to start.
    pub starts_at_ms: u64,
    /// For an expired or not yet started pool (`total` 0): the seats its license lines
    /// hold. 0 otherwise.
    pub licensed: u32,
}

impl FeatureStatus {
    fn from_proto(p: usher_proto::FeatureStatus) -> Self {
        FeatureStatus {
            feature: p.feature,
            vendor: p.vendor,
            version: p.version,
            expires_at_ms: p.expires_at_ms,
            total: p.total,
            in_use: p.in_use,
            holders: p.holders.into_iter().map(Holder::from_proto).collect(),
            ended_at_ms: p.ended_at_ms,
            starts_at_ms: p.starts_at_ms,
            licensed: p.licensed,
        }
    }
}

/// One lease: who holds seats of a pool, since when, and how.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
/// for pool in client.status("cad").await?.features {
///     for h in &pool.holders {
///         let how = if h.borrowed_until_ms != 0 { "borrowed" } else { "checked out" };
///         println!("{}@{} ({}): {} seats {how}", h.user, h.host, h.program, h.count);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// User.
    pub user: String,
    /// Client host.
    pub host: String,
    /// Display.
    pub display: String,
    /// Process id.
    pub pid: u32,
    /// Program name.
    pub program: String,
    /// Version the client asked for.
    pub version: String,
    /// When the lease was granted (ms since the Unix epoch).
    pub since_ms: u64,
    /// Seats (for a lease that holds tokens, see `token_for`: the tokens).
    pub count: u32,
    /// Lease handle (as `usher remove` takes it).
    pub lease_id: u64,
    /// Session.
    pub session_id: u64,
    /// Whether the server hears from the session right now: over its connection, or by
    /// UDP keepalives when `detached`. False while a dropped connection's session waits
    /// to resume.
    pub connected: bool,
    /// The seats are beyond the pool's count (`OVERDRAFT=`).
    pub overdraft: bool,
    /// The client gave the seats back, but they stay held until then (ms since the Unix
    /// epoch; `LINGER=`, `MIN_CHECKOUT=`). 0: not lingering.
    pub lingering_until_ms: u64,
    /// The seats are borrowed for offline use until then (ms since the Unix epoch). 0:
    /// not borrowed.
    pub borrowed_until_ms: u64,
    /// The lease holds tokens of this pool for the token-based feature named here.
    /// Empty: an ordinary lease.
    pub token_for: String,
    /// The session is detached: no connection, kept alive by UDP keepalives.
    pub detached: bool,
}

impl Holder {
    fn from_proto(p: usher_proto::Holder) -> Self {
        Holder {
            user: p.user,
            host: p.host,
            display: p.display,
            pid: p.pid,
            program: p.program,
            version: p.version,
            since_ms: p.since_ms,
            count: p.count,
            lease_id: p.lease_id,
            session_id: p.session_id,
            connected: p.connected,
            overdraft: p.overdraft,
            lingering_until_ms: p.lingering_until_ms,
            borrowed_until_ms: p.borrowed_until_ms,
            token_for: p.token_for,
            detached: p.detached,
        }
    }
}

/// A checkout waiting in the queue for seats.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
/// for q in client.status("cad").await?.queue {
///     println!("#{} {}@{} wants {} of {}", q.position, q.user, q.host, q.count, q.feature);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueEntry {
    /// Feature.
    pub feature: String,
    /// Version asked for.
    pub version: String,
    /// Seats wanted.
    pub count: u32,
    /// 1-based place in the feature's queue.
    pub position: u32,
    /// Queue rank from the policy's `PRIORITY` (lower is served first; -1: none, served
    /// after every ranked request).
    pub priority: i32,
    /// User.
    pub user: String,
    /// Client host.
    pub host: String,
    /// Display.
    pub display: String,
    /// Process id.
    pub pid: u32,
    /// Program name.
    pub program: String,
    /// When it joined the queue (ms since the Unix epoch).
    pub since_ms: u64,
    /// When it gives up (ms since the Unix epoch; 0: never).
    pub deadline_ms: u64,
    /// The handle the lease will carry.
    pub lease_id: u64,
    /// Session.
    pub session_id: u64,
}

impl QueueEntry {
    fn from_proto(p: usher_proto::QueueEntry) -> Self {
        QueueEntry {
            feature: p.feature,
            version: p.version,
            count: p.count,
            position: p.position,
            priority: p.priority,
            user: p.user,
            host: p.host,
            display: p.display,
            pid: p.pid,
            program: p.program,
            since_ms: p.since_ms,
            deadline_ms: p.deadline_ms,
            lease_id: p.lease_id,
            session_id: p.session_id,
        }
    }
}

/// A token-based feature (`count` = `token`): what a seat of it costs, and how much of it
/// is checked out.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
/// for t in client.status("").await?.token_features {
///     println!("{}: {} seats hold {} tokens", t.feature, t.in_use, t.tokens_in_use);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenFeatureStatus {
    /// Feature.
    pub feature: String,
    /// Vendor.
    pub vendor: String,
    /// Highest version licensed.
    pub version: String,
    /// What one seat costs, in the order the pools are tried (`TOKEN=`).
    pub costs: Vec<TokenCost>,
    /// Seats of the feature checked out.
    pub in_use: u32,
    /// Tokens those seats hold, across their pools.
    pub tokens_in_use: u32,
    /// Earliest expiry among its license lines valid now (ms since the Unix epoch; 0:
    /// permanent).
    pub expires_at_ms: u64,
}

impl TokenFeatureStatus {
    fn from_proto(p: usher_proto::TokenFeatureStatus) -> Self {
        TokenFeatureStatus {
            feature: p.feature,
            vendor: p.vendor,
            version: p.version,
            costs: p.costs.into_iter().map(TokenCost::from_proto).collect(),
            in_use: p.in_use,
            tokens_in_use: p.tokens_in_use,
            expires_at_ms: p.expires_at_ms,
        }
    }
}

/// One way a seat of a token-based feature is paid for: tokens of a pool.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
/// for t in client.status("").await?.token_features {
///     for c in &t.costs {
///         println!("a seat of {} costs {} tokens of {} {}", t.feature, c.tokens, c.pool, c.version);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenCost {
    /// The pool's feature.
    pub pool: String,
    /// The pool's lowest version that pays.
    pub version: String,
    /// Tokens per seat.
    pub tokens: u32,
}

impl TokenCost {
    fn from_proto(p: usher_proto::TokenCost) -> Self {
        TokenCost {
            pool: p.pool,
            version: p.version,
            tokens: p.tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_the_wire_report_comes_through() {
        let wire = usher_proto::StatusReport {
            server_name: "lic1".into(),
            server_version: "1.2".into(),
            port: 1648,
            started_at_ms: 10,
            license_files: vec!["a.lic".into()],
            vendors: vec!["acme".into()],
            now_ms: 20,
            holders_total: 5,
            queue_total: 2,
            truncated: true,
            next_cursor: String::new(),
            features: vec![usher_proto::FeatureStatus {
                feature: "cad".into(),
                vendor: "acme".into(),
                version: "2025".into(),
                expires_at_ms: 30,
                total: 4,
                in_use: 3,
                ended_at_ms: 31,
                starts_at_ms: 32,
                licensed: 6,
                holders: vec![usher_proto::Holder {
                    user: "ann".into(),
                    host: "ws1".into(),
                    display: ":0".into(),
                    pid: 42,
                    program: "cadtool".into(),
                    version: "2024".into(),
                    since_ms: 40,
                    count: 2,
                    lease_id: 7,
                    session_id: 8,
                    connected: true,
                    overdraft: true,
                    lingering_until_ms: 41,
                    borrowed_until_ms: 43,
                    token_for: "sim".into(),
                    detached: true,
                }],
            }],
            queue: vec![usher_proto::QueueEntry {
                feature: "cad".into(),
                version: "2025".into(),
                count: 1,
                position: 1,
                priority: -1,
                user: "bob".into(),
                host: "ws2".into(),
                display: ":1".into(),
                pid: 43,
                program: "cadtool".into(),
                since_ms: 50,
                deadline_ms: 51,
                lease_id: 9,
                session_id: 10,
            }],
            token_features: vec![usher_proto::TokenFeatureStatus {
                feature: "sim".into(),
                vendor: "acme".into(),
                version: "1".into(),
                costs: vec![usher_proto::TokenCost {
                    pool: "cad".into(),
                    version: "2025".into(),
                    tokens: 2,
                }],
                in_use: 1,
                tokens_in_use: 2,
                expires_at_ms: 60,
            }],
        };
        let r = StatusReport::from_proto(wire.clone());
        assert_eq!(
            (r.server_name.as_str(), r.server_version.as_str(), r.port),
            ("lic1", "1.2", 1648)
        );
        assert_eq!((r.started_at_ms, r.now_ms), (10, 20));
        assert_eq!(
            (r.license_files, r.vendors),
            (wire.license_files, wire.vendors)
        );
        assert_eq!((r.holders_total, r.queue_total, r.truncated), (5, 2, true));

        let p = &r.features[0];
        let w = &wire.features[0];
        assert_eq!(
            (&p.feature, &p.vendor, &p.version),
            (&w.feature, &w.vendor, &w.version)
        );
        assert_eq!(
            (
                p.expires_at_ms,
                p.total,
                p.in_use,
                p.ended_at_ms,
                p.starts_at_ms,
                p.licensed
            ),
            (30, 4, 3, 31, 32, 6)
        );
        let h = &p.holders[0];
        let wh = &w.holders[0];
        assert_eq!(
            (
                &h.user,
                &h.host,
                &h.display,
                &h.program,
                &h.version,
                &h.token_for
            ),
            (
                &wh.user,
                &wh.host,
                &wh.display,
                &wh.program,
                &wh.version,
                &wh.token_for
            )
        );
        assert_eq!(
            (h.pid, h.since_ms, h.count, h.lease_id, h.session_id),
            (42, 40, 2, 7, 8)
        );
        assert_eq!(
            (
                h.connected,
                h.overdraft,
                h.detached,
                h.lingering_until_ms,
                h.borrowed_until_ms
            ),
            (true, true, true, 41, 43)
        );

        let q = &r.queue[0];
        let wq = &wire.queue[0];
        assert_eq!(
            (
                &q.feature, &q.version, &q.user, &q.host, &q.display, &q.program
            ),
            (
                &wq.feature,
                &wq.version,
                &wq.user,
                &wq.host,
                &wq.display,
                &wq.program
            )
        );
        assert_eq!(
            (
                q.count,
                q.position,
                q.priority,
                q.pid,
                q.since_ms,
                q.deadline_ms
            ),
            (1, 1, -1, 43, 50, 51)
        );
        assert_eq!((q.lease_id, q.session_id), (9, 10));

        let t = &r.token_features[0];
        assert_eq!(
            (t.feature.as_str(), t.vendor.as_str(), t.version.as_str()),
            ("sim", "acme", "1")
        );
        assert_eq!((t.in_use, t.tokens_in_use, t.expires_at_ms), (1, 2, 60));
        let c = &t.costs[0];
        assert_eq!(
            (c.pool.as_str(), c.version.as_str(), c.tokens),
            ("cad", "2025", 2)
        );
    }

    #[test]
    fn what_is_not_shown_is_the_total_less_what_is() {
        let mut r = StatusReport {
            holders_total: 3,
            queue_total: 2,
            ..StatusReport::default()
        };
        r.features.push(FeatureStatus {
            holders: vec![Holder::default()],
            ..FeatureStatus::default()
        });
        r.queue.push(QueueEntry::default());
        assert_eq!((r.holders_not_shown(), r.queue_not_shown()), (2, 1));
        r.holders_total = 0; // a server that does not say
        assert_eq!(r.holders_not_shown(), 0);
    }
}
