//! The usher client library: check out, keep and check in license seats.
//!
//! ```no_run
//! # async fn demo() -> Result<(), usher_client::ClientError> {
//! let client = usher_client::Client::connect(usher_client::ClientConfig::from_env()?).await?;
//! let license = client.checkout("cad").version("2025").await?;
//! // ... run the licensed work; heartbeats and reconnects happen in the background ...
//! drop(license); // checks the seat back in
//! # Ok(()) }
//! ```
//!
//! A background task owns the connection. It sends heartbeats at the interval the server
//! announces, reconnects and resumes the session after a network blip (so the seats held
//! stay the same seats: checkouts carry an idempotency key and are simply resent), and
//! tells the application through [`License::lost`] if a seat is taken away.
//!
//! # A stable surface
//!
//! Vendors embed this crate in applications they ship for years, so its public API is a
//! contract. It speaks its own types ([`DenyReason`], [`ServerErrorCode`], [`LossReason`],
//! [`LossWatch`], [`ConnectionWatch`], [`QueuePosition`], [`StatusReport`]), never the
//! wire's messages or tokio's channels; requests are builders ([`Client::checkout`],
//! [`Client::borrow`]), so a new option is a new method, not a new argument; and errors,
//! configuration, the status structs and enums that may grow are `#[non_exhaustive]`
//! (match them with a `_` arm, make a [`ClientConfig`] with [`ClientConfig::new`] or
//! [`ClientConfig::from_env`]).
//!
//! `tests/public_api.rs` names every public item with its exact signature and is built in
//! CI: a change that could break an application fails there first, so changing the
//! surface is always deliberate — make the change in that file too, in the same commit,
//! and say it in the release notes.

pub mod admin;
pub mod blocking;
pub mod borrow;
mod builder;
mod driver;
mod error;
pub mod known_servers;
mod license;
mod loss;
pub mod node_locked;
mod servers;
pub mod status;
/// TLS plumbing for usher's own tools (the benchmark opens raw connections with it): not
/// part of the application-facing surface, and not covered by its stability promise.
#[doc(hidden)]
pub mod tls;
mod udp;

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

pub use builder::{BorrowRequest, CheckoutRequest, QueuePosition};
pub use error::{ClientError, Denial, DenyReason, ServerErrorCode};
pub use license::License;
pub use loss::{ConnectionWatch, LossReason, LossWatch};
pub use servers::{
    ClientConfig, ENV_LICENSE, ENV_SETTINGS, Identity, ServerAddr, ServerListError,
    check_env_setting, parse_server_ids, parse_servers, servers_from_env,
};
pub use status::StatusReport;
use tokio::sync::{mpsc, oneshot, watch};
use usher_proto::{Checkout, StatusRequest, request, response};

use crate::driver::Call;
pub use crate::udp::{Discovered, default_discovery_targets, discover};

/// Holders and queue entries asked for per status page (the server may send fewer, to
/// stay within a frame).
const STATUS_PAGE_SIZE: u32 = 10_000;

/// Most status pages one walk reads.
const MAX_STATUS_PAGES: usize = 100_000;

/// A connection (with its session) to a license server.
///
/// Cloning is cheap; all clones share one session. The session ends (and every seat it
/// still holds is released) when the client and all its [`License`]s are dropped, or at
/// [`Client::close`].
///
/// ```no_run
/// # async fn demo() -> Result<(), usher_client::ClientError> {
/// use usher_client::{Client, ClientConfig};
///
/// let client = Client::connect(ClientConfig::from_env()?).await?;
/// let license = client.checkout("cad").version("2025").await?;
/// // ... the licensed work ...
/// drop(license);
/// client.close().await; // ends the session now rather than when the last clone goes
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    calls: mpsc::UnboundedSender<Call>,
    info: SessionInfo,
    request_timeout: Duration,
    /// Vendor keys grants are verified against (none: not verified).
    vendor_keys: Arc<[usher_license::VendorPublicKey]>,
    /// The identity key the server connected to proved over TLS (none in plaintext).
    server_key: Arc<Mutex<Option<[u8; 32]>>>,
    /// Every server the client may talk to is on this host, so a secret sent in
    /// plaintext never crosses a network.
    all_servers_local: bool,
    /// Whether the connection is up (see [`Client::connection`]).
    connected: watch::Receiver<bool>,
}

/// How long a checkout waits in the queue when every seat is taken (see
/// [`CheckoutRequest::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueWait {
    /// Not at all: a checkout that finds no free seat is refused.
    No,
    /// At most this long, then it is refused (`DenyReason::WaitTimedOut`).
    For(Duration),
    /// Until seats are granted (or the request is dropped).
    Indefinitely,
}

/// Facts learned in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Server software version.
    pub server_version: String,
    /// Server host name.
    pub server_name: String,
    /// The server that answered.
    pub server: ServerAddr,
    /// Heartbeat interval the server asked for.
    pub heartbeat_interval: Duration,
    /// Session TTL.
    pub session_ttl: Duration,
}

impl Client {
    /// Connects to the first reachable server and opens a session. Fails within the
    /// configured connect timeout per server if none answers.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), usher_client::ClientError> {
    /// use usher_client::{Client, ClientConfig, parse_servers};
    ///
    /// let config = ClientConfig::new(parse_servers("1648@license1")?);
    /// let client = Client::connect(config).await?;
    /// println!("connected to {}", client.session_info().server_name);
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let request_timeout = config.request_timeout;
        let vendor_keys = config.vendor_keys.clone().into();
        let server_key = Arc::default();
        let all_servers_local =
            !config.servers.is_empty() && config.servers.iter().all(|s| is_local_host(&s.host));
        let (calls, info, connected) = driver::start(config, Arc::clone(&server_key)).await?;
        Ok(Client {
            calls,
            info,
            request_timeout,
            vendor_keys,
            server_key,
            all_servers_local,
            connected,
        })
    }

    /// Whether the client is connected: `true` while a connection is up (or the session
    /// is detached and held by UDP keepalives), `false` from a lost connection until the
    /// session is resumed on a new one.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// A follower of [`Client::is_connected`]'s changes (see [`ConnectionWatch`]).
    pub fn connection_watch(&self) -> ConnectionWatch {
        ConnectionWatch::new(self.connected.clone())
    }

    /// Sends a heartbeat now and waits for the server's acknowledgement (bounded by the
    /// request timeout). The background task sends heartbeats by itself; this is for an
    /// application that drives the client's runtime itself (a current-thread runtime it
    /// runs only now and then) and must be sure the session was kept alive. Requests
    /// queued before it (a checkin, say) have reached the server when it returns.
    pub async fn heartbeat(&self) -> Result<(), ClientError> {
        match self
            .call(request::Kind::Heartbeat(usher_proto::Heartbeat {}), None)
            .await?
        {
            response::Kind::HeartbeatAck(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// What the handshake established.
    pub fn session_info(&self) -> &SessionInfo {
        &self.info
    }

    /// Starts a checkout of `feature`: set its options on the returned builder, then
    /// `.await` it for the [`License`]. By default it asks for one seat of any version and
    /// is refused at once if no seat is free.
    ///
    /// ```no_run
    /// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
    /// use usher_client::{ClientError, DenyReason, QueueWait};
    ///
    /// match client.checkout("cad").version("2025").count(2).await {
    ///     Ok(license) => println!("{} seats of cad until {:?}", license.count(), license.expires()),
    ///     Err(ClientError::Denied(d)) if d.reason == DenyReason::AllInUse => {
    ///         // Every seat is taken: wait in the queue for one instead.
    ///         let license = client.checkout("cad").wait(QueueWait::Indefinitely).await?;
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn checkout(&self, feature: &str) -> CheckoutRequest<'_> {
        CheckoutRequest::new(self, feature)
    }

    /// Sends a checkout built by [`Client::checkout`] and waits for its answer.
    async fn send_checkout(&self, request: CheckoutRequest<'_>) -> Result<License, ClientError> {
        let CheckoutRequest {
            feature,
            version,
            count,
            wait,
            position,
            ..
        } = request;
        let (lost_tx, lost_rx) = watch::channel(None);
        let (wait, wait_ms, timeout) = match wait {
            QueueWait::No => (false, 0, Some(self.request_timeout)),
            QueueWait::For(d) => (
                true,
                (d.as_millis() as u64).max(1),
                Some(d + self.request_timeout),
            ),
            QueueWait::Indefinitely => (true, 0, None),
        };
        no_seats_refused(count)?;
        let nonce = self.nonce();
        let kind = request::Kind::Checkout(Checkout {
            feature,
            version,
            count,
            client_ref: 0, // assigned by the driver
            wait,
            wait_ms,
            nonce: nonce.clone(),
        });
        let g = match self
            .call_for(kind, Some(lost_tx), position, timeout)
            .await?
        {
            response::Kind::Granted(g) => g,
            response::Kind::Denied(d) => return Err(denial(d)),
            other => return Err(unexpected(other)),
        };
        // A verified grant keeps its statement: the application may hand it on (`usher
        // run` exports it to its command) for another party to check.
        let statement = if nonce.is_empty() {
            None
        } else if let Err(why) = self.verify(&g, &nonce) {
            // Whoever answered gets the seat back; the application gets no license.
            let _ = self.calls.send(Call::Release {
                lease_id: g.lease_id,
            });
            return Err(ClientError::Untrusted(why));
        } else {
            Some(g.statement)
        };
        Ok(License {
            lease_id: g.lease_id,
            feature: g.feature,
            version: g.version,
            vendor: g.vendor,
            count: g.count,
            expires: (g.expires_at_ms != 0)
                .then(|| UNIX_EPOCH + Duration::from_millis(g.expires_at_ms)),
            overdraft: g.overdraft,
            statement,
            lost: lost_rx,
            calls: self.calls.clone(),
        })
    }

    /// Starts a borrow of seats of `feature` for `duration`, for use on this host with no
    /// server: set its options on the returned builder, then `.await` it for the signed
    /// [`borrow::BorrowToken`]. The server holds the seats until the borrow ends (or
    /// [`Client::return_borrow`]) whatever becomes of this session, and binds the token to
    /// this machine's host ids. Keep it with [`borrow::BorrowStore::save`];
    /// [`borrow::check`] then grants the feature offline.
    ///
    /// Refused (as a checkout is) if no seat is free, or if the license does not allow
    /// borrowing (`BORROW`) for that long.
    ///
    /// ```no_run
    /// # async fn demo(client: &usher_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let token = client.borrow("cad", std::time::Duration::from_secs(3 * 86_400)).await?;
    /// usher_client::borrow::BorrowStore::user_default().save(&token)?;
    /// # Ok(()) }
    /// ```
    pub fn borrow(&self, feature: &str, duration: Duration) -> BorrowRequest<'_> {
        BorrowRequest::new(self, feature, duration)
    }

    /// Sends a borrow built by [`Client::borrow`] and waits for its token.
    async fn send_borrow(
        &self,
        request: BorrowRequest<'_>,
    ) -> Result<borrow::BorrowToken, ClientError> {
        let BorrowRequest {
            feature,
            version,
            count,
            duration,
            ..
        } = request;
        no_seats_refused(count)?;
        let kind = request::Kind::Borrow(usher_proto::Borrow {
            feature: feature.clone(),
            version: version.clone(),
            count,
            client_ref: 0, // assigned by the driver
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            host_ids: usher_license::host_ids(),
        });
        match self.call(kind, None).await? {
            response::Kind::Granted(g) if g.borrowed_until_ms != 0 => {
                let token = borrow::BorrowToken::from_text(&g.borrow_token).map_err(|e| {
                    ClientError::Protocol(format!("the server sent a bad borrow token: {e}"))
                })?;
                if !self.vendor_keys.is_empty()
                    && let Err(why) = token.verify(
                        &self.vendor_keys,
                        &feature,
                        &version,
                        &usher_license::host_ids(),
                        borrow::now_ms(),
                    )
                {
                    // A token this host would refuse offline is no borrow: give it back.
                    let _ = self.return_borrow(&feature, Some(g.lease_id)).await;
                    return Err(ClientError::Untrusted(why));
                }
                Ok(token)
            }
            response::Kind::Denied(d) => Err(denial(d)),
            other => Err(unexpected(other)),
        }
    }

    /// Returns seats of `feature` borrowed by this user on this host before the borrow
    /// ends: the borrow with handle `lease_id` (from its token) if given, else any. Returns
    /// the seats given back, or `None` if there was no such borrow.
    pub async fn return_borrow(
        &self,
        feature: &str,
        lease_id: Option<u64>,
    ) -> Result<Option<u32>, ClientError> {
        let kind = request::Kind::Return(usher_proto::Return {
            feature: feature.to_string(),
            lease_id: lease_id.unwrap_or(0),
        });
        match self.call(kind, None).await? {
            response::Kind::Returned(r) => Ok(r.was_borrowed.then_some(r.count)),
            other => Err(unexpected(other)),
        }
    }

    /// A fresh nonce for a checkout whose grant is to be verified, or none.
    fn nonce(&self) -> Vec<u8> {
        if self.vendor_keys.is_empty() {
            return Vec::new();
        }
        let mut nonce = vec![0u8; 16];
        // Without randomness a fixed nonce still binds the answer to this server's key
        // and license; only replays within this process would go unnoticed.
        let _ = getrandom::fill(&mut nonce);
        nonce
    }

    /// Checks a grant's signed statement against the trusted vendor keys and `nonce`.
    fn verify(
        &self,
        g: &usher_proto::Granted,
        nonce: &[u8],
    ) -> Result<usher_license::VerifiedGrant, usher_license::TokenError> {
        let statement = usher_license::SignedStatement::from_text(&g.statement)?;
        let pool = if g.token_pool.is_empty() {
            &g.feature
        } else {
            &g.token_pool
        };
        let verified = statement.verify_grant(
            &self.vendor_keys,
            nonce,
            g.lease_id,
            pool,
            g.count,
            borrow::now_ms(),
        )?;
        // The statement must come from the server at the other end of the TLS channel,
        // so that the license binding the signer authenticates the channel too.
        let channel = *self.server_key.lock().unwrap_or_else(|p| p.into_inner());
        match channel {
            Some(key) if key != statement.statement.server_key => {
                Err(usher_license::TokenError::NotTheConnectedServer {
                    connected: usher_license::usher_id(&key),
                    signer: verified.server,
                })
            }
            _ => Ok(verified),
        }
    }

    /// Tells the server whether the application's user is idle (`true`) or active again
    /// (`false`). While idle, seats of features for which the server's policy sets a
    /// `TIMEOUT` are reclaimed once it passes, and the [`License`] reports them lost. The
    /// client repeats the last state after a reconnect.
    pub async fn set_idle(&self, idle: bool) -> Result<(), ClientError> {
        let kind = request::Kind::Activity(usher_proto::Activity { idle });
        match self.call(kind, None).await? {
            response::Kind::HeartbeatAck(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Detaches now instead of after [`ClientConfig::detach_after`]: the connection closes
    /// and UDP keepalives hold the session's seats until the next request (which resumes
    /// the session over TCP). Refused by a server without a UDP port.
    pub async fn detach(&self) -> Result<(), ClientError> {
        match self
            .call(request::Kind::Detach(usher_proto::Detach {}), None)
            .await?
        {
            response::Kind::Detached(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Usage per feature (all features when `feature` is empty), as much of it as the
    /// server shows to anyone (its `status_detail`: by default seat counts, no holders).
    /// [`admin::status_as_admin`] shows holders and queue. A server pages a large status;
    /// this reads every page and returns the whole (its types are in [`mod@status`]).
    ///
    /// ```no_run
    /// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
    /// let status = client.status("cad").await?;
    /// let free: u32 = status.features.iter().map(|p| p.total.saturating_sub(p.in_use)).sum();
    /// println!("{free} seats of cad free on {}", status.server_name);
    /// # Ok(()) }
    /// ```
    pub async fn status(&self, feature: &str) -> Result<StatusReport, ClientError> {
        self.status_request(StatusRequest {
            feature: feature.to_string(),
            admin_token: String::new(),
            ..StatusRequest::default()
        })
        .await
    }

    /// Reads every page of the status (a server pages a status larger than one frame; an
    /// older one sends it whole, with no cursor) and returns them as one report.
    pub(crate) async fn status_request(
        &self,
        request: StatusRequest,
    ) -> Result<StatusReport, ClientError> {
        let mut report: Option<usher_proto::StatusReport> = None;
        // A walk ends when the cursor does; the bound only stops a server that never ends
        // it (a million holders take some 10,000 pages).
        for _ in 0..MAX_STATUS_PAGES {
            let cursor = report
                .as_ref()
                .map(|r| r.next_cursor.clone())
                .unwrap_or_default();
            let page = StatusRequest {
                page_size: STATUS_PAGE_SIZE,
                cursor,
                ..request.clone()
            };
            let page = match self.call(request::Kind::Status(page), None).await? {
                response::Kind::Status(page) => page,
                other => return Err(unexpected(other)),
            };
            match &mut report {
                Some(r) => r.absorb(page),
                None => report = Some(page),
            }
            if let Some(r) = &report
                && r.next_cursor.is_empty()
            {
                return Ok(StatusReport::from_proto(report.unwrap_or_default()));
            }
        }
        Err(ClientError::Protocol(format!(
            "the status did not end after {MAX_STATUS_PAGES} pages"
        )))
    }

    /// Ends the session, releasing every seat it holds, and waits for the server to
    /// confirm (bounded by the request timeout).
    pub async fn close(self) {
        let (reply, rx) = oneshot::channel();
        if self.calls.send(Call::Close { reply }).is_ok() {
            let _ = tokio::time::timeout(self.request_timeout, rx).await;
        }
    }

    async fn call(
        &self,
        kind: request::Kind,
        lease_watch: Option<watch::Sender<Option<String>>>,
    ) -> Result<response::Kind, ClientError> {
        self.call_for(kind, lease_watch, None, Some(self.request_timeout))
            .await
    }

    /// Sends a request and waits for its answer for at most `timeout` (`None`: for as
    /// long as it takes, for a checkout waiting in the queue indefinitely).
    async fn call_for(
        &self,
        kind: request::Kind,
        lease_watch: Option<watch::Sender<Option<String>>>,
        position: Option<watch::Sender<u32>>,
        timeout: Option<Duration>,
    ) -> Result<response::Kind, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.calls
            .send(Call::Request {
                kind: Box::new(kind),
                reply,
                lease_watch,
                position,
            })
            .map_err(|_| ClientError::Closed)?;
        let answer = match timeout {
            Some(limit) => tokio::time::timeout(limit, rx)
                .await
                .map_err(|_| ClientError::Timeout)?,
            None => rx.await,
        };
        answer.map_err(|_| ClientError::Closed)?
    }
}

fn unexpected(kind: response::Kind) -> ClientError {
    match kind {
        response::Kind::Error(e) => ClientError::from_server(e),
        other => ClientError::Protocol(format!("unexpected response {other:?}")),
    }
}

fn denial(d: usher_proto::Denied) -> ClientError {
    ClientError::Denied(Denial {
        reason: DenyReason::from_proto(d.reason()),
        message: d.message,
        in_use: d.in_use,
        total: d.total,
    })
}

/// Whether `host` names this host: `localhost` or a loopback address.
fn is_local_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A request for no seats is refused here, never sent: on the wire a count of 0 reads as
/// 1, so sending it would silently take a seat.
fn no_seats_refused(count: u32) -> Result<(), ClientError> {
    if count > 0 {
        return Ok(());
    }
    Err(ClientError::Denied(Denial {
        reason: DenyReason::BadRequest,
        message: "a request must ask for at least 1 seat".into(),
        in_use: 0,
        total: 0,
    }))
}
