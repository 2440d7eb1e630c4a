//! Where the servers are and who this client is.

use std::time::Duration;

/// Environment variable naming the servers, like FlexLM's `LM_LICENSE_FILE`.
pub const ENV_LICENSE: &str = "USHER_LICENSE";

/// One server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.port, self.host)
    }
}

/// A server list that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server list {text:?}: {reason} (expected e.g. 1648@host1,1648@host2)")]
pub struct ServerListError {
    /// The text given.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// Parses a server list: `port@host` entries separated by commas (or colons, as in
/// FlexLM's `LM_LICENSE_FILE`). `@host` and a bare `host` use the default port 1648;
/// `host:port` is accepted too, and IPv6 addresses go in brackets (`1648@[::1]`).
pub fn parse_servers(text: &str) -> Result<Vec<ServerAddr>, ServerListError> {
    let err = |reason: &str| ServerListError {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let mut out = Vec::new();
    let entries: Vec<&str> = if text.contains('@') && !text.contains(',') && !text.contains('[') {
        // FlexLM style `1648@a:1648@b`.
        text.split(':').collect()
    } else {
        text.split(',').collect()
    };
    for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let (port, host) = match entry.split_once('@') {
            Some((p, h)) => {
                let port = if p.is_empty() {
                    usher_proto::DEFAULT_PORT
                } else {
                    p.parse().map_err(|_| err(&format!("bad port {p:?}")))?
                };
                (port, h.to_string())
            }
            None => match entry.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
                    p.parse().map_err(|_| err(&format!("bad port {p:?}")))?,
                    h.to_string(),
                ),
                _ => (usher_proto::DEFAULT_PORT, entry.to_string()),
            },
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(err("empty host name"));
        }
        if port == 0 {
            return Err(err("port 0"));
        }
        out.push(ServerAddr { host, port });
    }
    if out.is_empty() {
        return Err(err("no servers"));
    }
    Ok(out)
}

/// The servers from `USHER_LICENSE`; none when it is unset (the client then finds them by
/// discovery, see [`ClientConfig::discovery_targets`]).
pub fn servers_from_env() -> Result<Vec<ServerAddr>, ServerListError> {
    match std::env::var(ENV_LICENSE) {
        Ok(v) if !v.trim().is_empty() => parse_servers(&v),
        _ => Ok(Vec::new()),
    }
}

/// Who the client is, as shown to administrators. Start from [`Identity::current`] and
/// change the fields to present another.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// Login name.
    pub user: String,
    /// Host name.
    pub host: String,
    /// X display or terminal.
    pub display: String,
    /// Process id.
    pub pid: u32,
    /// Program name.
    pub program: String,
    /// Program version.
    pub program_version: String,
}

impl Identity {
    /// This process's identity, from the environment and /proc.
    pub fn current() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let user = env("USER")
            .or_else(|| env("LOGNAME"))
            .or_else(login_name_from_passwd)
            .unwrap_or_else(|| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let display = env("DISPLAY")
            .or_else(|| {
                std::fs::read_link("/proc/self/fd/0")
                    .ok()
                    .map(|p| p.display().to_string())
                    .filter(|p| p.starts_with("/dev/") && p != "/dev/null")
            })
            .unwrap_or_else(|| host.clone());
        let program = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "unknown".into());
        Identity {
            user,
            host,
            display,
            pid: std::process::id(),
            program,
            program_version: String::new(),
        }
    }
}

/// The login name of this process's user, from /etc/passwd (for processes started
/// without `USER` in their environment, such as services).
fn login_name_from_passwd() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// How a client connects. Made by [`ClientConfig::new`] or [`ClientConfig::from_env`]
/// (new settings come with defaults, so a configuration cannot be written out field by
/// field); change the fields after.
///
/// ```
/// use std::time::Duration;
/// use usher_client::{ClientConfig, parse_servers};
///
/// let mut config = ClientConfig::new(parse_servers("1648@license1,1648@license2").unwrap());
/// config.connect_timeout = Duration::from_secs(1);
/// config.identity.program = "cad-studio".into();
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Servers to try, in order.
    pub servers: Vec<ServerAddr>,
    /// How long one connection attempt may take. Short, so an application never hangs
    /// at launch when the server is away.
    pub connect_timeout: Duration,
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
    /// Who the client is.
    pub identity: Identity,
    /// Open no session: the client will only read status.
    pub query_only: bool,
    /// The vendor public keys the application trusts (compiled into it). When any are
    /// set, every checkout asks the server for a signed statement about its grant and
    /// accepts the seat only if the statement verifies against these keys: a genuine
    /// license, bound to the server that granted it (when the license names one with
    /// `HOSTID=USHER_ID=`), answering this very checkout. Empty: grants are not verified.
    pub vendor_keys: Vec<usher_license::VendorPublicKey>,
    /// The servers to accept (`USHER_ID=...`, as `usher hostid` prints on the server):
    /// the TLS handshake fails with any other. Empty: any server's key is accepted for the
    /// channel, and only signed grants (with [`ClientConfig::vendor_keys`]) authenticate
    /// it.
    pub server_ids: Vec<String>,
    /// Trust on first use, when no server id is pinned: the file that remembers the
    /// first id seen at each server address (see [`crate::known_servers`]); a later
    /// connection to that address presenting another id is refused. `None` (the default
    /// of [`ClientConfig::new`]): not used. [`ClientConfig::from_env`] and
    /// [`ClientConfig::transport_from_env`] set the user's file.
    pub known_servers: Option<std::path::PathBuf>,
    /// Talk to servers without TLS. Anyone on the network can then read and change the
    /// traffic; the server must allow it too (`insecure_plaintext`).
    pub insecure_plaintext: bool,
    /// After this long without a request from the application (and with nothing waiting
    /// for an answer), detach: close the connection and keep the session's seats alive
    /// with small UDP keepalives, coming back over TCP for the next request or when the
    /// server calls. `None`: stay connected. Default 5 minutes.
    pub detach_after: Option<Duration>,
    /// Where to ask for servers when [`ClientConfig::servers`] is empty: broadcast,
    /// multicast or unicast addresses on the usher port. Default: the local network's
    /// broadcast address and this host.
    pub discovery_targets: Vec<std::net::SocketAddr>,
    /// How long to wait for discovery answers.
    pub discovery_wait: Duration,
}

impl ClientConfig {
    /// Defaults: servers from `USHER_LICENSE` (else found by discovery), 3 s connect
    /// timeout.
    pub fn from_env() -> Result<Self, ServerListError> {
        let mut config = Self::new(servers_from_env()?);
        config.transport_from_env();
        Ok(config)
    }

    /// Defaults for the given servers.
    pub fn new(servers: Vec<ServerAddr>) -> Self {
        ClientConfig {
            servers,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            identity: Identity::current(),
            query_only: false,
            vendor_keys: Vec::new(),
            server_ids: Vec::new(),
            known_servers: None,
            insecure_plaintext: false,
            detach_after: Some(Duration::from_secs(300)),
            discovery_targets: crate::udp::default_discovery_targets(),
            discovery_wait: Duration::from_secs(1),
        }
    }

    /// Applies the transport settings of the environment: `USHER_SERVER_ID` (server ids
    /// to pin, separated by commas or spaces), `USHER_INSECURE_PLAINTEXT` (a boolean as
    /// [`usher_license::words::parse_bool`] reads it: `1`, `true`, `yes`, `on`: no TLS),
    /// `USHER_DETACH_AFTER`, and the known-servers file of trust on first use
    /// (`USHER_KNOWN_SERVERS`, else the user's state directory; see
    /// [`crate::known_servers`]). A value that does not parse is ignored with a warning.
    pub fn transport_from_env(&mut self) {
        self.known_servers = crate::known_servers::default_path();
        if let Ok(ids) = std::env::var("USHER_SERVER_ID") {
            self.server_ids = parse_server_ids(&ids);
        }
        if let Ok(v) = std::env::var("USHER_INSECURE_PLAINTEXT") {
            match usher_license::words::parse_bool(&v) {
                Ok(on) => self.insecure_plaintext = on,
                Err(e) => tracing::warn!("ignoring USHER_INSECURE_PLAINTEXT: {e}"),
            }
        }
        if let Ok(v) = std::env::var("USHER_DETACH_AFTER") {
            match parse_detach_after(&v) {
                Some(after) => self.detach_after = after,
                None => {
                    tracing::warn!("ignoring USHER_DETACH_AFTER={v:?}: expected seconds or off")
                }
            }
        }
    }
}

/// Every `USHER_*` variable the client library reads (and so every command of `usher` that
/// makes a client); [`check_env_setting`] checks a value for one.
pub const ENV_SETTINGS: &[&str] = &[
    ENV_LICENSE,
    "USHER_SERVER_ID",
    "USHER_INSECURE_PLAINTEXT",
    "USHER_DETACH_AFTER",
    crate::borrow::ENV_BORROW_DIR,
];

/// Checks a value for one of [`ENV_SETTINGS`] as the library will read it.
pub fn check_env_setting(name: &str, value: &str) -> Result<(), String> {
    match name {
        ENV_LICENSE => parse_servers(value).map(drop).map_err(|e| e.to_string()),
        "USHER_SERVER_ID" | crate::borrow::ENV_BORROW_DIR => Ok(()),
        "USHER_INSECURE_PLAINTEXT" => usher_license::words::parse_bool(value).map(drop),
        "USHER_DETACH_AFTER" => parse_detach_after(value)
            .map(drop)
            .ok_or_else(|| format!("{value:?}: expected seconds (300, 45s, 5m) or off")),
        _ => Err(format!("{name} is not a client setting")),
    }
}

/// `USHER_DETACH_AFTER`: seconds (`300`, `300s`, `5m`), or `never` or a boolean "no"
/// (`off`, `no`, `false`).
fn parse_detach_after(text: &str) -> Option<Option<Duration>> {
    let t = text.trim();
    let is_number = t.starts_with(|c: char| c.is_ascii_digit());
    if t == "never" || (!is_number && usher_license::words::parse_bool(t) == Ok(false)) {
        return Some(None);
    }
    let (digits, unit) = match t.strip_suffix('m') {
        Some(d) => (d, 60),
        None => (t.strip_suffix('s').unwrap_or(t), 1),
    };
    let n: u64 = digits.parse().ok()?;
    Some(Some(Duration::from_secs(n.checked_mul(unit)?)))
}

/// Server ids from a list separated by commas or spaces; a bare 40-digit id gets its
/// `USHER_ID=` prefix.
pub fn parse_server_ids(text: &str) -> Vec<String> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| {
            if id.contains('=') {
                id.to_string()
            } else {
                format!("USHER_ID={id}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(host: &str, port: u16) -> ServerAddr {
        ServerAddr {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn server_lists() {
        assert_eq!(
            parse_servers("1648@host1,1648@host2").unwrap(),
            [a("host1", 1648), a("host2", 1648)]
        );
        assert_eq!(parse_servers("27000@lic").unwrap(), [a("lic", 27000)]);
        assert_eq!(parse_servers("@lic").unwrap(), [a("lic", 1648)]);
        assert_eq!(parse_servers("lic").unwrap(), [a("lic", 1648)]);
        assert_eq!(parse_servers("lic:1700").unwrap(), [a("lic", 1700)]);
        assert_eq!(
            parse_servers("1648@a:1649@b").unwrap(),
            [a("a", 1648), a("b", 1649)]
        );
        assert_eq!(parse_servers("1648@[::1]").unwrap(), [a("::1", 1648)]);
        assert_eq!(
            parse_servers("1648@127.0.0.1, 1649@127.0.0.2").unwrap(),
            [a("127.0.0.1", 1648), a("127.0.0.2", 1649)]
        );
        for bad in ["", "x@host", "1648@", "0@h", ",,"] {
            assert!(parse_servers(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn detach_after_settings() {
        let secs = |n| Some(Some(Duration::from_secs(n)));
        assert_eq!(parse_detach_after("300"), secs(300));
        assert_eq!(parse_detach_after("45s"), secs(45));
        assert_eq!(parse_detach_after("5m"), secs(300));
        assert_eq!(parse_detach_after("off"), Some(None));
        assert_eq!(parse_detach_after("false"), Some(None));
        assert_eq!(parse_detach_after("0"), secs(0));
        assert_eq!(parse_detach_after("soon"), None);
    }
}
