//! The application-facing surface of `usher-client`, pinned at compile time.
//!
//! Every public item a vendor's application may use is named here with its exact
//! signature (a function coerced to a `fn` pointer, an async method awaited into a typed
//! binding, a struct destructured by its fields, an enum matched by its variants). A
//! change to the surface that would break an application breaks this file first, so it
//! has to be made here too, on purpose, in the same commit, and said in the changelog.
//! Adding an item is not a break; add it here when it is added to the crate.
//!
//! The functions below are compiled, never run (most need a server); the tests at the end
//! run the parts that do not.

#![allow(dead_code, clippy::type_complexity)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use usher_client::borrow::{BorrowError, BorrowStore, BorrowToken, Borrowed};
use usher_client::known_servers::Seen;
use usher_client::node_locked::{LocalError, NodeLocked};
use usher_client::status::{FeatureStatus, Holder, QueueEntry, TokenCost, TokenFeatureStatus};
use usher_client::{
    BorrowRequest, CheckoutRequest, Client, ClientConfig, ClientError, ConnectionWatch, Denial,
    DenyReason, Discovered, ENV_LICENSE, ENV_SETTINGS, Identity, License, LossReason, LossWatch,
    QueuePosition, QueueWait, ServerAddr, ServerErrorCode, ServerListError, SessionInfo,
    StatusReport,
};

/// `Client`: connect, the builders, the session calls.
async fn client(config: ClientConfig) -> Result<(), ClientError> {
    let client: Client = Client::connect(config).await?;
    let _: fn(&Client) -> bool = Client::is_connected;
    let _: fn(&Client) -> ConnectionWatch = Client::connection_watch;
    let _: fn(&Client) -> &SessionInfo = Client::session_info;
    let _: for<'c> fn(&'c Client, &str) -> CheckoutRequest<'c> = Client::checkout;
    let _: for<'c> fn(&'c Client, &str, Duration) -> BorrowRequest<'c> = Client::borrow;
    let (): () = client.heartbeat().await?;
    let (): () = client.set_idle(true).await?;
    let (): () = client.detach().await?;
    let _: Option<u32> = client.return_borrow("cad", Some(7)).await?;
    let _: Option<u32> = client.return_borrow("cad", None).await?;
    let _: StatusReport = client.status("cad").await?;
    let _: StatusReport = usher_client::admin::status_as_admin(&client, "cad", "token").await?;
    let (): () = client.clone().close().await;
    Ok(())
}

/// The checkout builder: every option, sent by `.await` or by `send`.
async fn checkout(client: &Client) -> Result<(), ClientError> {
    let _: License = client.checkout("cad").await?;
    let mut request: CheckoutRequest<'_> = client
        .checkout("cad")
        .version("2025")
        .count(2)
        .wait(QueueWait::For(Duration::from_secs(1)));
    let mut position: QueuePosition = request.queue_position();
    let _: License = request.send().await?;
    let _: u32 = position.get();
    let _: Option<u32> = position.changed().await;
    let _: License = IntoFuture::into_future(client.checkout("cad")).await?;
    for wait in [
        QueueWait::No,
        QueueWait::For(Duration::ZERO),
        QueueWait::Indefinitely,
    ] {
        let _: License = client.checkout("cad").wait(wait).await?;
    }
    Ok(())
}

/// The borrow builder.
async fn borrow(client: &Client) -> Result<(), ClientError> {
    let week = Duration::from_secs(7 * 86_400);
    let _: BorrowToken = client.borrow("cad", week).await?;
    let request: BorrowRequest<'_> = client.borrow("cad", week).version("2025").count(2);
    let _: BorrowToken = request.send().await?;
    Ok(())
}

/// `License`: what was granted, and its loss.
async fn license(license: License) {
    let _: fn(&License) -> u64 = License::lease_id;
    let _: fn(&License) -> &str = License::feature;
    let _: fn(&License) -> &str = License::version;
    let _: fn(&License) -> &str = License::vendor;
    let _: fn(&License) -> u32 = License::count;
    let _: fn(&License) -> Option<SystemTime> = License::expires;
    let _: fn(&License) -> bool = License::overdraft;
    let _: fn(&License) -> Option<&str> = License::statement;
    let _: fn(&License) -> Option<LossReason> = License::lost_reason;
    let _: fn(&License) -> LossWatch = License::loss_watch;
    let _: LossReason = license.lost().await;
    let watch: LossWatch = license.loss_watch();
    let _: Option<LossReason> = watch.reason();
    let _: Option<LossReason> = watch.lost().await;
    drop(license);
}

/// `ConnectionWatch`.
async fn connection(mut watch: ConnectionWatch) {
    let _: bool = watch.is_connected();
    let _: Option<bool> = watch.changed().await;
}

/// The errors, by variant and field.
fn errors(e: ClientError) -> String {
    match e {
        ClientError::Unreachable { servers, detail } => servers + &detail,
        ClientError::Denied(Denial {
            reason,
            message,
            in_use,
            total,
            ..
        }) => format!("{reason} {message} {in_use} {total}"),
        ClientError::Server { code, message } => format!("{code:?} {message}"),
        ClientError::Protocol(message) => message,
        ClientError::Timeout | ClientError::Closed | ClientError::TokenNeedsTls => String::new(),
        ClientError::Untrusted(why) => why.to_string(),
        ClientError::Config(ServerListError { text, reason }) => text + &reason,
        _ => String::new(),
    }
}

/// Every reason a checkout is refused, and its stable name.
fn deny_reason(reason: DenyReason) -> &'static str {
    let _: fn(DenyReason) -> &'static str = DenyReason::name;
    match reason {
        DenyReason::Unspecified
        | DenyReason::UnknownFeature
        | DenyReason::VersionTooNew
        | DenyReason::Expired
        | DenyReason::NotYetStarted
        | DenyReason::AllInUse
        | DenyReason::BadRequest
        | DenyReason::QueuedAhead
        | DenyReason::WaitTimedOut
        | DenyReason::Excluded
        | DenyReason::MaxReached
        | DenyReason::Reserved
        | DenyReason::NotNamedUser
        | DenyReason::NotBorrowable
        | DenyReason::BorrowTooLong
        | DenyReason::BorrowLowWater
        | DenyReason::MoreThanLicensed
        | DenyReason::MoreThanAllowed
        | DenyReason::BoundToOtherHost => reason.name(),
        _ => "newer",
    }
}

/// Every reason a license is lost.
fn loss_reason(reason: &LossReason) -> String {
    let _: fn(&str) -> LossReason = LossReason::from_message;
    let _: fn(&usher_proto::LeaseLost) -> LossReason = LossReason::from_lease_lost;
    match reason {
        LossReason::ServerUnreachable
        | LossReason::SessionExpired
        | LossReason::ReleasedWhileAway
        | LossReason::RemovedByAdministrator
        | LossReason::IdleReclaimed => reason.to_string(),
        LossReason::Other(message) => message.clone(),
        _ => "newer".into(),
    }
}

/// The error codes a server answers with: the client's own, growing (`_` arm needed).
fn error_code(code: ServerErrorCode) -> bool {
    match code {
        ServerErrorCode::Unspecified
        | ServerErrorCode::BadRequest
        | ServerErrorCode::UnknownRequest
        | ServerErrorCode::UnsupportedVersion
        | ServerErrorCode::HandshakeRequired
        | ServerErrorCode::SessionExpired
        | ServerErrorCode::Internal
        | ServerErrorCode::NotPermitted
        | ServerErrorCode::HandshakeTimeout
        | ServerErrorCode::StoreUnavailable => false,
        ServerErrorCode::ShuttingDown | ServerErrorCode::TooManyConnections => true,
        _ => false,
    }
}

/// Configuration: made by constructors, changed by field.
fn config(servers: Vec<ServerAddr>) -> Result<ClientConfig, ServerListError> {
    let _: fn() -> Result<ClientConfig, ServerListError> = ClientConfig::from_env;
    let _: fn(&mut ClientConfig) = ClientConfig::transport_from_env;
    let mut config = ClientConfig::new(servers);
    let ClientConfig {
        servers: _,
        connect_timeout: _,
        request_timeout: _,
        identity: _,
        query_only: _,
        vendor_keys: _,
        server_ids: _,
        known_servers: _,
        insecure_plaintext: _,
        detach_after: _,
        discovery_targets: _,
        discovery_wait: _,
        ..
    } = &config;
    config.connect_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(1);
    config.query_only = false;
    config.vendor_keys = Vec::new();
    config.server_ids = vec!["USHER_ID=x".into()];
    config.known_servers = Some(PathBuf::from("known"));
    config.insecure_plaintext = false;
    config.detach_after = None;
    config.discovery_targets = Vec::<SocketAddr>::new();
    config.discovery_wait = Duration::from_secs(1);
    let identity: Identity = Identity::current();
    let Identity {
        user: _,
        host: _,
        display: _,
        pid: _,
        program: _,
        program_version: _,
        ..
    } = &identity;
    config.identity = identity;
    Ok(config)
}

/// Server lists and the environment.
fn servers() {
    let _: fn(&str) -> Result<Vec<ServerAddr>, ServerListError> = usher_client::parse_servers;
    let _: fn() -> Result<Vec<ServerAddr>, ServerListError> = usher_client::servers_from_env;
    let _: fn(&str) -> Vec<String> = usher_client::parse_server_ids;
    let _: fn(&str, &str) -> Result<(), String> = usher_client::check_env_setting;
    let _: &str = ENV_LICENSE;
    let _: &[&str] = ENV_SETTINGS;
    let _: fn() -> Vec<SocketAddr> = usher_client::default_discovery_targets;
    let ServerAddr { host: _, port: _ } = ServerAddr {
        host: "license1".into(),
        port: 1648,
    };
}

/// The handshake's facts.
fn session_info(info: &SessionInfo) {
    let SessionInfo {
        server_version: _,
        server_name: _,
        server: _,
        heartbeat_interval: _,
        session_ttl: _,
        ..
    } = info;
}

/// The status: the client's own types, read by field (made only by `Default`).
fn status(report: &StatusReport) -> u64 {
    let _: fn() -> StatusReport = StatusReport::default;
    let _: fn(&StatusReport) -> u64 = StatusReport::holders_not_shown;
    let _: fn(&StatusReport) -> u64 = StatusReport::queue_not_shown;
    let _: fn(u64) -> Option<SystemTime> = usher_client::status::ms_to_time;
    let StatusReport {
        server_name: _,
        server_version: _,
        port: _,
        features,
        started_at_ms: _,
        license_files: _,
        vendors: _,
        now_ms: _,
        queue,
        holders_total: _,
        queue_total: _,
        truncated: _,
        token_features,
        ..
    } = report;
    let mut sum = 0;
    for FeatureStatus {
        feature: _,
        vendor: _,
        version: _,
        expires_at_ms,
        total: _,
        in_use: _,
        holders,
        ended_at_ms: _,
        starts_at_ms: _,
        licensed: _,
        ..
    } in features
    {
        sum += expires_at_ms;
        for Holder {
            user: _,
            host: _,
            display: _,
            pid: _,
            program: _,
            version: _,
            since_ms,
            count: _,
            lease_id: _,
            session_id: _,
            connected: _,
            overdraft: _,
            lingering_until_ms: _,
            borrowed_until_ms: _,
            token_for: _,
            detached: _,
            ..
        } in holders
        {
            sum += since_ms;
        }
    }
    for QueueEntry {
        feature: _,
        version: _,
        count: _,
        position: _,
        priority: _,
        user: _,
        host: _,
        display: _,
        pid: _,
        program: _,
        since_ms,
        deadline_ms: _,
        lease_id: _,
        session_id: _,
        ..
    } in queue
    {
        sum += since_ms;
    }
    for TokenFeatureStatus {
        feature: _,
        vendor: _,
        version: _,
        costs,
        in_use: _,
        tokens_in_use: _,
        expires_at_ms: _,
        ..
    } in token_features
    {
        for TokenCost {
            pool: _,
            version: _,
            tokens,
            ..
        } in costs
        {
            sum += u64::from(*tokens);
        }
    }
    sum
}

/// Discovery.
async fn discovery() -> std::io::Result<()> {
    let found: Vec<Discovered> =
        usher_client::discover(&usher_client::default_discovery_targets(), Duration::ZERO).await?;
    for Discovered {
        addr: _,
        tls: _,
        vendors: _,
        truncated: _,
        ..
    } in &found
    {}
    Ok(())
}

/// Offline use: borrowed seats and node-locked licenses.
fn offline(keys: &[usher_license::VendorPublicKey]) -> Result<(), BorrowError> {
    let _: fn(&str, &str, &[usher_license::VendorPublicKey]) -> Result<Borrowed, BorrowError> =
        usher_client::borrow::check;
    let _: &str = usher_client::borrow::ENV_BORROW_DIR;
    let store: BorrowStore = BorrowStore::user_default();
    let store = BorrowStore::at(store.dir());
    let _: Result<PathBuf, BorrowError> = store.path("cad");
    let _: Option<BorrowToken> = store.load("cad")?;
    let _: bool = store.remove("cad")?;
    let _: Vec<BorrowToken> = store.list()?;
    let _: Borrowed = store.check("cad", "2025", keys)?;
    let _: fn(&BorrowStore, &BorrowToken) -> Result<PathBuf, BorrowError> = BorrowStore::save;
    let _: fn(
        &str,
        &str,
        &[usher_license::VendorPublicKey],
        &str,
        &str,
    ) -> Result<NodeLocked, LocalError> = usher_client::node_locked::check;
    Ok(())
}

/// The blocking client.
fn blocking(config: ClientConfig) -> Result<(), ClientError> {
    let client = usher_client::blocking::Client::connect(config)?;
    let _: &SessionInfo = client.session_info();
    let request: usher_client::blocking::CheckoutRequest<'_> = client.checkout("cad");
    let request = request
        .version("2025")
        .count(1)
        .wait(QueueWait::For(Duration::from_secs(1)));
    let license: usher_client::blocking::License = request.call()?;
    let _: &License = license.get();
    let _: Option<LossReason> = license.lost_reason();
    let _: StatusReport = client.status("cad")?;
    Ok(())
}

/// Trust on first use (for tools that manage the known-servers file).
fn known_servers(path: &Path) -> std::io::Result<()> {
    let _: Option<PathBuf> = usher_client::known_servers::default_path();
    match usher_client::known_servers::check_and_remember(path, "1648@license1", "USHER_ID=x")? {
        Seen::New | Seen::Known => {}
        Seen::Changed { known: _ } => {}
    }
    Ok(())
}

#[test]
fn deny_reasons_keep_their_stable_names() {
    // The names are what logs, reports and exit-code tables key on: they never change.
    assert_eq!(deny_reason(DenyReason::AllInUse), "all_in_use");
    assert_eq!(deny_reason(DenyReason::WaitTimedOut), "wait_timed_out");
    assert_eq!(DenyReason::UnknownFeature.to_string(), "unknown_feature");
}

#[test]
fn loss_reasons_read_back_and_say_why() {
    let reason = LossReason::from_message("removed by an administrator");
    assert_eq!(reason, LossReason::RemovedByAdministrator);
    assert_eq!(loss_reason(&reason), "removed by an administrator");
    let unknown = LossReason::from_message("a reason from a newer server");
    assert_eq!(loss_reason(&unknown), "a reason from a newer server");
}

#[test]
fn a_config_is_made_by_its_constructor_and_changed_by_field() {
    let servers = usher_client::parse_servers("1648@license1").unwrap();
    let config = config(servers).unwrap();
    assert_eq!(config.servers[0].port, 1648);
    assert_eq!(config.detach_after, None);
}
