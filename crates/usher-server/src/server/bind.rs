//! Binding: the data directory's lock, the store and the licenses loaded, the client
//! listener, its UDP socket beside it, the admin socket and the pseudonym key.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{error, info, warn};
use usher_core::{Ledger, LedgerConfig};
use usher_store::SqliteStore;

use super::{Server, ServerError, io, retention_cutoff};
use crate::clock::wall_clock_ms;
use crate::config::Config;
use crate::licenses;

impl Server {
    /// Loads licenses, opens the store, recovers held seats and binds the listener.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        crate::data_dir::prepare(&config.data_dir)?;

        let lock = lock_data_dir(&config.data_dir)?;

        let identity = crate::identity::Identity::load_or_create(&config.data_dir)
            .map_err(io("reading or making the server identity key"))?;
        let server_host_id = identity.host_id();
        info!(host_id = %server_host_id, "server identity");
        let licenses::Loaded {
            licenses,
            policy,
            policy_warnings,
        } = licenses::load_all(
            &config.license_files,
            &config.vendor_keys,
            config.policy_file.as_deref(),
            config.min_timeout,
            &server_host_id,
            chrono::Utc::now().date_naive(),
        )?;
        for line in &licenses.refused {
            error!("entitlement refused: {line}; {}", licenses::REFUSED_ADVICE);
        }
        licenses::warn_not_usable(&licenses.warnings);
        info!(
            files = licenses.files.len(),
            entitlements = licenses.entitlements.len(),
            refused = licenses.refused.len(),
            "licenses loaded"
        );

        let mut store = SqliteStore::open(&config.store_path())?;
        let pseudonym_path = config.data_dir.join(PSEUDONYM_KEY_FILE);
        if let Some(legacy) = store.take_legacy_pseudonym_key()? {
            // Earlier versions kept the key in the store, where whoever may read the usage
            // log could reverse the pseudonyms: move it into its own file.
            if crate::data_dir::read(&pseudonym_path)
                .map_err(io(format!("reading {}", pseudonym_path.display())))?
                .is_none()
            {
                crate::data_dir::create_new(&pseudonym_path, &legacy)
                    .map_err(io(format!("writing {}", pseudonym_path.display())))?;
            }
            info!(path = %pseudonym_path.display(), "moved the pseudonym key out of the store");
        }
        if config.hide_users {
            store.hide_identities(pseudonym_key(&pseudonym_path)?);
        }
        let snapshot = store.load()?;
        let ledger_config = LedgerConfig {
            session_ttl: config.session_ttl.as_millis() as u64,
            reconnect_grace: config.reconnect_grace.as_millis() as u64,
            min_remove: config.min_remove.as_millis() as u64,
        };
        // Never before the newest durable write, even on a clock that is behind: the
        // retention's record and the releases of orphaned leases below are stamped with
        // this time. (Stamped by the clock, the retention's record would be the newest
        // and pull the server's time back to the clock.)
        let newest_grant = snapshot.leases.iter().map(|l| l.granted_at).max();
        let now = wall_clock_ms()
            .max(store.newest_record_at()?)
            .max(newest_grant.unwrap_or(0));
        if let Some(before) = retention_cutoff(&config, wall_clock_ms()) {
            let removed = store.prune_usage_log(now, before)?;
            info!(
                removed,
                days = config.log_retention_days,
                "usage log retention applied"
            );
        }
        let (sessions, leases) = (snapshot.sessions.len(), snapshot.leases.len());
        let first_lease_id = store.max_lease_id(&snapshot)?.saturating_add(1);
        let mut orphans = Vec::new();
        for line in &policy_warnings {
            warn!("{line}");
        }
        if let Some(path) = &config.policy_file {
            info!(policy = %path.display(), "policy loaded");
        }
        let mut ledger = Ledger::restore(
            licenses.catalog.clone(),
            ledger_config,
            snapshot.sessions,
            snapshot.leases,
            now,
            &mut orphans,
        );
        ledger.set_policy(policy);
        store.commit(now, &orphans)?;
        if sessions > 0 {
            info!(
                sessions,
                leases,
                ttl_s = config.session_ttl.as_secs(),
                "recovered held seats; their sessions have one TTL to resume"
            );
        }

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("binding {}", config.listen)))?;
        let udp = bind_udp(&listener).await;
        let admin = bind_admin_socket(&config.admin_socket())?;
        let admin_token = crate::http::load_or_create_token(&config.admin_token()).map_err(io(
            format!("reading or creating {}", config.admin_token().display()),
        ))?;
        let admin_http = match config.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(io(format!("binding the admin HTTP listener {addr}")))?,
            ),
            None => None,
        };
        Ok(Server {
            config,
            listener,
            udp,
            ledger,
            first_lease_id,
            store,
            licenses,
            admin,
            admin_http,
            admin_token,
            identity: Arc::new(identity),
            _lock: lock,
            reload_signal: None,
        })
    }
}

/// Binds the UDP socket on the listener's address and port. A server without it still
/// serves TCP (detached keepalives and discovery are unavailable), so a failure is a
/// warning, not a reason to stop.
async fn bind_udp(listener: &TcpListener) -> Option<tokio::net::UdpSocket> {
    let addr = listener.local_addr().ok()?;
    match udp_socket(addr) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(
                %addr,
                "could not bind the UDP port ({e}): clients cannot detach to UDP keepalives \
                 and discovery will not find this server; free the UDP port (`ss -ulpn`) \
                 and restart"
            );
            None
        }
    }
}

/// A UDP socket on `addr` with a receive buffer of up to [`UDP_RECEIVE_BUFFER`], so a burst
/// of keepalives (a million sessions send 33,000 a second) is queued, not dropped.
fn udp_socket(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel caps this at net.core.rmem_max; whatever it grants is fine.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// The UDP socket's receive buffer, in bytes (asked for; the kernel may grant less).
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// The file in the data directory holding the key of `--hide-users` pseudonyms.
pub const PSEUDONYM_KEY_FILE: &str = "pseudonym.key";

/// Reads the pseudonym key (32 bytes, mode 0600), or makes one if there is none.
fn pseudonym_key(path: &std::path::Path) -> Result<[u8; 32], ServerError> {
    let context = || format!("reading or making {}", path.display());
    match crate::data_dir::read(path).map_err(io(context()))? {
        Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            io(context())(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the key is {} bytes, not 32", bytes.len()),
            ))
        }),
        None => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| io(context())(std::io::Error::other(e)))?;
            crate::data_dir::create_new(path, &key).map_err(io(context()))?;
            Ok(key)
        }
    }
}

/// Takes an exclusive lock on `DIR/usherd.lock`, so that two servers never share a store
/// (each would believe it alone counts the seats). The OS drops the lock when the process
/// exits, however it exits.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    let path = dir.join(crate::config::LOCK_FILE);
    let file = crate::data_dir::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::DataDirInUse(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(format!("locking {}", path.display()))(e)),
    }
}

/// Binds the administration socket so that only the server's user can reach it: the
/// socket lives in a directory of mode 0700 (so there is no window in which it is open to
/// others) and is itself 0600.
fn bind_admin_socket(path: &std::path::Path) -> Result<tokio::net::UnixListener, ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .expect("the admin socket path has a directory");
    crate::data_dir::create_private_dir(dir).map_err(io(format!("creating {}", dir.display())))?;
    // We hold the data directory lock, so a socket file left here is from a dead server.
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(io(format!("binding the admin socket {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("restricting {}", path.display())))?;
    Ok(listener)
}
