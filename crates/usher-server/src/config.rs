//! Server configuration: one validated struct built from defaults, a TOML file, the
//! environment and the command line, in rising precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The name of the store file inside the data directory.
pub const STORE_FILE: &str = "usher.db";

/// The lock file inside the data directory: held (`flock`) by the server using it, so two
/// servers never share a store and a restore never replaces a store in use.
pub const LOCK_FILE: &str = "usherd.lock";

/// The data directory used when none is configured: `/var/lib/usher` for root (or when
/// there is no `$HOME`), else `$XDG_DATA_HOME/usher`, else `~/.local/share/usher`. Shared by
/// `usherd` and the `usher log` and admin commands, so all look in the same place by default.
pub fn default_data_dir() -> PathBuf {
    if std::env::var_os("USER").is_some_and(|u| u == "root") || std::env::var_os("HOME").is_none() {
        return PathBuf::from("/var/lib/usher");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share")
        });
    base.join("usher")
}

/// Everything `usherd` needs to run. Built from the flags and a [`FileConfig`], or directly by tests.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP address for the client protocol.
    pub listen: SocketAddr,
    /// Directory holding the store (and, in demo mode, the demo vendor key and license).
    pub data_dir: PathBuf,
    /// License files to serve.
    pub license_files: Vec<PathBuf>,
    /// Public keys of the vendors whose licenses this server trusts.
    pub vendor_keys: Vec<PathBuf>,
    /// The administrator's policy (options) file, if any; see docs/policy.md.
    pub policy_file: Option<PathBuf>,
    /// Write user, host and display names into the usage log as pseudonyms (like
    /// FlexLM's `HIDE_USER`).
    pub hide_users: bool,
    /// Usage records older than this many days are removed (at start, then daily); 0 keeps
    /// them forever.
    pub log_retention_days: u32,
    /// Most requests per second one client connection may send, with a burst of as many;
    /// faster senders are read more slowly (0: no limit).
    pub max_request_rate: u32,
    /// How much an unauthenticated status query on the client port shows: seat counts by
    /// default (the admin socket and API always show everything).
    pub status_detail: StatusDetail,
    /// Heartbeat interval announced to clients.
    pub heartbeat_interval: Duration,
    /// How long a session lives without being heard from.
    pub session_ttl: Duration,
    /// How long a session whose connection closed without a goodbye may take to resume.
    pub reconnect_grace: Duration,
    /// How long a new connection may take to send its handshake.
    pub handshake_timeout: Duration,
    /// How long one answer may wait to be written to a client connection: a client that
    /// does not read its answers (its socket does not drain) for this long is
    /// disconnected, and its seats come back as for any connection closed without a
    /// goodbye.
    pub send_timeout: Duration,
    /// Most connections served at once; further connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a graceful shutdown waits for connections to finish in-flight requests.
    pub shutdown_timeout: Duration,
    /// How old a lease must be before an administrator may remove it.
    pub min_remove: Duration,
    /// The shortest `TIMEOUT` a policy may set; shorter ones are raised to it, with a
    /// warning (FlexLM's minimum is 15 minutes too).
    pub min_timeout: Duration,
    /// Client address ranges allowed to connect; empty allows everyone. Others are
    /// disconnected before a byte is exchanged.
    pub allow: Vec<crate::access::Cidr>,
    /// Most connections one client address may hold open at once.
    pub max_connections_per_ip: usize,
    /// Most new connections one client address may open per second (with a burst as
    /// large) while handshake slots are contended (half of [`Config::max_handshakes`] or
    /// more in use); faster ones are then closed at once, before TLS. 0: no limit.
    pub max_connection_rate_per_ip: u32,
    /// Most client connections still in their handshake (TLS and Hello) at once; further
    /// new connections are closed at once, before TLS, so a flood of connections that
    /// never finish their handshake costs bounded work beside the established ones.
    pub max_handshakes: usize,
    /// Address ranges from which a status request on the client port may present the
    /// admin token for the full status (holders and queue). Loopback only by default;
    /// add a monitoring host's address so that it can read holders without making them
    /// public with [`Config::status_detail`].
    pub admin_from: Vec<crate::access::Cidr>,
    /// Address of the admin HTTP listener (API, `/metrics`, dashboard); `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    /// Host names (optionally `name:port`) the admin HTTP listener answers to besides its
    /// own address (and `localhost` on loopback). Any other `Host` header is refused with
    /// 421, so a web page whose name is rebound to this address (DNS rebinding) cannot
    /// talk to the API. Add the name a Prometheus server or a browser uses.
    pub admin_hosts: Vec<String>,
    /// Also accept client connections without TLS. Their traffic can be read and changed
    /// on the network, so this is off unless asked for, and the server warns when it is
    /// used. TLS connections are accepted either way.
    pub insecure_plaintext: bool,
    /// Largest request frame accepted, in bytes (at most the protocol's 64 KiB); a frame
    /// announcing more closes its connection before any of it is buffered.
    pub max_frame_bytes: usize,
    /// Most requests one connection may have waiting for answers; beyond that the
    /// connection is not read (TCP flow control pushes back), which bounds its memory.
    pub max_requests_in_flight: usize,
    /// Answer discovery requests on the UDP port (with the TCP port and the vendors
    /// served, nothing more). Keepalives on the UDP port work either way.
    pub discovery: bool,
}

/// The admin HTTP port used by default (one above the client port), on loopback only.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1649);

impl Config {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], usher_proto::DEFAULT_PORT)),
            data_dir: data_dir.into(),
            license_files: Vec::new(),
            vendor_keys: Vec::new(),
            policy_file: None,
            hide_users: false,
            log_retention_days: 0,
            max_request_rate: 1_000,
            status_detail: StatusDetail::Totals,
            heartbeat_interval: Duration::from_secs(30),
            session_ttl: Duration::from_secs(120),
            reconnect_grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            max_connections: 100_000,
            shutdown_timeout: Duration::from_secs(10),
            min_remove: Duration::from_secs(120),
            min_timeout: Duration::from_secs(900),
            allow: Vec::new(),
            max_connections_per_ip: 1_000,
            max_connection_rate_per_ip: 20,
            max_handshakes: 4_096,
            admin_from: crate::access::Cidr::loopback(),
            admin_listen: Some(DEFAULT_ADMIN_LISTEN),
            admin_hosts: Vec::new(),
            insecure_plaintext: false,
            discovery: true,
            max_frame_bytes: usher_proto::MAX_FRAME_LEN,
            max_requests_in_flight: 64,
        }
    }

    /// Path of the administration socket: `DATA_DIR/admin/usherd.sock`. The directory is
    /// created with mode 0700 and the socket with 0600, so only the server's own user (and
    /// root) can administer it.
    pub fn admin_socket(&self) -> PathBuf {
        admin_socket_in(&self.data_dir)
    }

    /// Path of the admin API token: `DATA_DIR/admin/token`, beside the admin socket.
    pub fn admin_token(&self) -> PathBuf {
        self.data_dir.join("admin").join("token")
    }

    /// Path of the SQLite store inside the data directory.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join(STORE_FILE)
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: &str| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                reason: why.to_string(),
            })
        };
        if self.heartbeat_interval.is_zero() {
            return invalid("heartbeat_interval", "must be greater than zero");
        }
        if self.session_ttl <= self.heartbeat_interval {
            return invalid("session_ttl", "must be longer than heartbeat_interval");
        }
        if !(1024..=usher_proto::MAX_FRAME_LEN).contains(&self.max_frame_bytes) {
            return invalid(
                "max_frame_bytes",
                "must be between 1024 and 65536 (the protocol's limit)",
            );
        }
        if !(1..=4096).contains(&self.max_requests_in_flight) {
            return invalid("max_requests_in_flight", "must be between 1 and 4096");
        }
        if self.reconnect_grace.is_zero() {
            return invalid("reconnect_grace", "must be greater than zero");
        }
        if self.send_timeout.is_zero() {
            return invalid("send_timeout", "must be greater than zero");
        }
        if self.max_connections_per_ip == 0 {
            return invalid("max_connections_per_ip", "must be at least 1");
        }
        if self.max_handshakes == 0 {
            return invalid("max_handshakes", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        Ok(())
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {key} {reason}")]
    Invalid {
        /// Offending key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// The TOML file's schema. Every key is optional; unknown keys are errors, so a typo
/// never silently leaves a default in force.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Config::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`Config::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`Config::license_files`]. Relative paths are relative to the config file.
    pub license_files: Option<Vec<PathBuf>>,
    /// See [`Config::vendor_keys`]. Relative paths are relative to the config file.
    pub vendor_keys: Option<Vec<PathBuf>>,
    /// See [`Config::policy_file`]. Relative to the config file.
    pub policy_file: Option<PathBuf>,
    /// See [`Config::hide_users`].
    pub hide_users: Option<bool>,
    /// See [`Config::log_retention_days`].
    pub log_retention_days: Option<u32>,
    /// See [`Config::max_request_rate`].
    pub max_request_rate: Option<u32>,
    /// See [`Config::status_detail`]: `"full"`, `"totals"` or `"none"`.
    pub status_detail: Option<String>,
    /// See [`Config::heartbeat_interval`], e.g. `"30s"`.
    pub heartbeat_interval: Option<String>,
    /// See [`Config::session_ttl`], e.g. `"2m"`.
    pub session_ttl: Option<String>,
    /// See [`Config::reconnect_grace`], e.g. `"10s"`.
    pub reconnect_grace: Option<String>,
    /// See [`Config::handshake_timeout`].
    pub handshake_timeout: Option<String>,
    /// See [`Config::send_timeout`].
    pub send_timeout: Option<String>,
    /// See [`Config::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`Config::shutdown_timeout`].
    pub shutdown_timeout: Option<String>,
    /// See [`Config::min_remove`].
    pub min_remove: Option<String>,
    /// See [`Config::min_timeout`].
    pub min_timeout: Option<String>,
    /// See [`Config::allow`], e.g. `["10.0.0.0/8", "192.168.1.7"]`.
    pub allow: Option<Vec<String>>,
    /// See [`Config::max_connections_per_ip`].
    pub max_connections_per_ip: Option<usize>,
    /// See [`Config::max_connection_rate_per_ip`].
    pub max_connection_rate_per_ip: Option<u32>,
    /// See [`Config::max_handshakes`].
    pub max_handshakes: Option<usize>,
    /// See [`Config::admin_from`], e.g. `["127.0.0.0/8", "::1", "10.1.2.3"]`.
    pub admin_from: Option<Vec<String>>,
    /// See [`Config::admin_listen`]: an address such as `"127.0.0.1:1649"`, or `"off"`.
    pub admin_listen: Option<String>,
    /// See [`Config::admin_hosts`], e.g. `["licserver.example.com"]`.
    pub admin_hosts: Option<Vec<String>>,
    /// See [`Config::insecure_plaintext`].
    pub insecure_plaintext: Option<bool>,
    /// See [`Config::discovery`].
    pub discovery: Option<bool>,
    /// See [`Config::max_frame_bytes`].
    pub max_frame_bytes: Option<usize>,
    /// See [`Config::max_requests_in_flight`].
    pub max_requests_in_flight: Option<usize>,
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text =
            usher_license::input::read_text_file(path, usher_license::input::MAX_CONFIG_FILE)
                .map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
        Self::parse(path, &text)
    }

    /// Parses `text`, the content of the config file at `path` (relative paths in it are
    /// made relative to the file's directory), as [`FileConfig::read`] does after reading.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for list in [&mut file.license_files, &mut file.vendor_keys]
            .into_iter()
            .flatten()
        {
            for p in list.iter_mut() {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        for d in [&mut file.data_dir, &mut file.policy_file]
            .into_iter()
            .flatten()
        {
            if d.is_relative() {
                *d = base.join(&*d);
            }
        }
        Ok(file)
    }

    /// Applies the file's values over `config`.
    pub fn apply(self, config: &mut Config) -> Result<(), ConfigError> {
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.license_files {
            config.license_files = v;
        }
        if let Some(v) = self.vendor_keys {
            config.vendor_keys = v;
        }
        if let Some(v) = self.policy_file {
            config.policy_file = Some(v);
        }
        if let Some(v) = self.hide_users {
            config.hide_users = v;
        }
        if let Some(v) = self.insecure_plaintext {
            config.insecure_plaintext = v;
        }
        if let Some(v) = self.discovery {
            config.discovery = v;
        }
        if let Some(v) = self.max_frame_bytes {
            config.max_frame_bytes = v;
        }
        if let Some(v) = self.max_requests_in_flight {
            config.max_requests_in_flight = v;
        }
        if let Some(v) = self.log_retention_days {
            config.log_retention_days = v;
        }
        if let Some(v) = self.max_request_rate {
            config.max_request_rate = v;
        }
        if let Some(text) = self.status_detail {
            config.status_detail = text.parse().map_err(|reason| ConfigError::Invalid {
                key: "status_detail".into(),
                reason,
            })?;
        }
        let durations = [
            (
                "heartbeat_interval",
                self.heartbeat_interval,
                &mut config.heartbeat_interval,
            ),
            ("session_ttl", self.session_ttl, &mut config.session_ttl),
            (
                "reconnect_grace",
                self.reconnect_grace,
                &mut config.reconnect_grace,
            ),
            (
                "handshake_timeout",
                self.handshake_timeout,
                &mut config.handshake_timeout,
            ),
            ("send_timeout", self.send_timeout, &mut config.send_timeout),
            (
                "shutdown_timeout",
                self.shutdown_timeout,
                &mut config.shutdown_timeout,
            ),
            ("min_remove", self.min_remove, &mut config.min_remove),
            ("min_timeout", self.min_timeout, &mut config.min_timeout),
        ];
        for (key, value, slot) in durations {
            if let Some(text) = value {
                *slot = parse_duration(&text).map_err(|reason| ConfigError::Invalid {
                    key: key.to_string(),
                    reason,
                })?;
            }
        }
        if let Some(v) = self.max_connections {
            config.max_connections = v;
        }
        if let Some(v) = self.max_connection_rate_per_ip {
            config.max_connection_rate_per_ip = v;
        }
        if let Some(v) = self.max_handshakes {
            config.max_handshakes = v;
        }
        if let Some(v) = self.max_connections_per_ip {
            config.max_connections_per_ip = v;
        }
        if let Some(text) = self.admin_listen {
            config.admin_listen =
                parse_admin_listen(&text).map_err(|reason| ConfigError::Invalid {
                    key: "admin_listen".into(),
                    reason,
                })?;
        }
        if let Some(hosts) = self.admin_hosts {
            config.admin_hosts = hosts;
        }
        if let Some(ranges) = self.allow {
            config.allow = cidrs("allow", &ranges)?;
        }
        if let Some(ranges) = self.admin_from {
            config.admin_from = cidrs("admin_from", &ranges)?;
        }
        Ok(())
    }
}

/// Address ranges from the configuration file's `key`.
fn cidrs(key: &str, ranges: &[String]) -> Result<Vec<crate::access::Cidr>, ConfigError> {
    ranges
        .iter()
        .map(|r| r.parse())
        .collect::<Result<_, crate::access::CidrError>>()
        .map_err(|e| ConfigError::Invalid {
            key: key.into(),
            reason: e.to_string(),
        })
}

/// The administration socket of a data directory.
pub fn admin_socket_in(data_dir: &Path) -> PathBuf {
    data_dir.join("admin").join("usherd.sock")
}

/// How much a status query on the client port shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusDetail {
    /// Everything, holders included, as `lmstat -a` expects (the default).
    Full,
    /// Seat totals per feature, without who holds or waits for them.
    Totals,
    /// Nothing: status is for administrators (the admin socket and API) only.
    None,
}

impl std::str::FromStr for StatusDetail {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(StatusDetail::Full),
            "totals" => Ok(StatusDetail::Totals),
            "none" => Ok(StatusDetail::None),
            _ => Err(format!("must be full, totals or none, not {s:?}")),
        }
    }
}

/// Parses an admin listen address: `HOST:PORT`, or `off` to disable the listener.
pub fn parse_admin_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    t.parse()
        .map(Some)
        .map_err(|_| format!("must be an address such as 127.0.0.1:1649, or off, not {text:?}"))
}

/// Parses `"250ms"`, `"30s"`, `"2m"`, `"1h"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("must be a duration such as 500ms, 30s, 2m or 1h, not {text:?}"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("unknown unit in {text:?}: use ms, s, m or h")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn admin_listen_is_an_address_or_off() {
        assert_eq!(parse_admin_listen("off").unwrap(), None);
        assert_eq!(
            parse_admin_listen("127.0.0.1:9").unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert!(parse_admin_listen("loopback").is_err());
        let mut c = Config::new("/tmp");
        let file: FileConfig = toml::from_str("admin_listen = \"off\"").unwrap();
        file.apply(&mut c).unwrap();
        assert_eq!(c.admin_listen, None);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = toml::from_str::<FileConfig>("sesion_ttl = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("sesion_ttl"), "{err}");
    }

    #[test]
    fn validate_names_the_key() {
        let mut c = Config::new("/tmp");
        c.session_ttl = Duration::from_secs(1);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("session_ttl"), "{err}");
    }
}
