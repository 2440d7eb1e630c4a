//! Entry points for the fuzz targets in `fuzz/` (`config`, `admin_api`) and for the
//! ordinary tests that replay their committed corpora, so that both run the same code.
//! Not a stable API.
//!
//! - [`config_file`] is usherd's configuration loader on arbitrary text: TOML parsing,
//!   applying over the defaults, validation.
//! - [`AdminServer`] is a real server (store, ledger task, admin HTTP listener on
//!   loopback) with holders and a queued request, and [`AdminServer::send`] sends it one
//!   request made of arbitrary bytes by [`admin_request`]: a route, a query string and a
//!   body. The answer must be well-formed HTTP with a status below 500 and, when it says
//!   JSON, valid JSON; anything else is a finding.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, ConfigError, FileConfig};

/// usherd's configuration loader on `data`, as the content of `/etc/usher/usherd.toml`:
/// parsed, applied over the defaults and validated.
pub fn config_file(data: &[u8]) -> Result<Config, ConfigError> {
    let text = String::from_utf8_lossy(data);
    let file = FileConfig::parse(Path::new("/etc/usher/usherd.toml"), &text)?;
    let mut config = Config::new("/var/lib/usher");
    file.apply(&mut config)?;
    config.validate()?;
    Ok(config)
}

/// The routes fuzz input is sent to, as `(method, path)`. `POST /api/v1/down` is left
/// out: it stops the server, after which every answer is the same.
pub const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/features"),
    ("GET", "/api/v1/holders"),
    ("GET", "/api/v1/sessions"),
    ("GET", "/api/v1/queue"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/usage"),
    ("GET", "/api/v1/health"),
    ("POST", "/api/v1/remove"),
    ("POST", "/api/v1/reload"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    // A path of the fuzzer's own under the API (the query part becomes the path).
    ("GET", "/api/v1/"),
    ("POST", "/api/v1/"),
    ("GET", "/api/v1/holders/groups"),
];

/// One admin HTTP request made from fuzz input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path and query, percent-encoded where a raw byte could not appear in a request
    /// target (`%`, `&`, `=` and `+` stay raw, so malformed escapes reach the server).
    pub target: String,
    /// The body, as given.
    pub body: Vec<u8>,
}

/// The request `data` describes: its first byte picks a route of [`ADMIN_ROUTES`]; the
/// bytes up to the first newline are the query string (or, for the two `/api/v1/`
/// routes, the rest of the path), and the bytes after it the body.
pub fn admin_request(data: &[u8]) -> AdminRequest {
    let (pick, rest) = data.split_first().map_or((0, data), |(p, r)| (*p, r));
    let (method, path) = ADMIN_ROUTES[usize::from(pick) % ADMIN_ROUTES.len()];
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let mut target = path.to_string();
    if !path.ends_with('/') && !query.is_empty() {
        target.push('?');
    }
    for &b in query {
        let raw = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
        if raw {
            target.push(char::from(b));
        } else {
            target.push_str(&format!("%{b:02X}"));
        }
    }
    AdminRequest {
        method,
        target,
        body: body.to_vec(),
    }
}

impl AdminRequest {
    /// The request as HTTP/1.1 bytes for the listener at `addr`, with the bearer `token`,
    /// on a connection closed after the answer.
    pub fn to_http(&self, addr: SocketAddr, token: &str) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.method,
            self.target,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Checks a raw HTTP answer: a status line, a header block, a status below 500, and valid
/// JSON when the content type says JSON. Returns the status.
pub fn check_admin_answer(raw: &[u8]) -> Result<u16, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("answer is not UTF-8: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header block in {text:?}"))?;
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    if status >= 500 {
        return Err(format!("server error {status}: {body}"));
    }
    let header = |name: &str| {
        lines.clone().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    if header("content-type").is_some_and(|t| t.starts_with("application/json")) && !chunked {
        serde_json::from_str::<serde_json::Value>(body)
            .map_err(|e| format!("{status} answer says JSON but is not ({e}): {body:?}"))?;
    }
    Ok(status)
}

/// The license the server serves: `sim` has one seat, so a second request for it waits.
const LICENSE: &str = "\
FEATURE cad acme 2025 permanent 10 HOSTID=ANY
FEATURE sim acme 1.0 permanent 1 HOSTID=ANY
";

/// A real server with an admin HTTP listener on loopback, three holders of `cad`, one of
/// `sim` and one queued request for `sim`; stopped and its directory removed when dropped.
pub struct AdminServer {
    admin: SocketAddr,
    token: String,
    dir: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl AdminServer {
    /// Starts the server in a fresh directory under the system's temporary directory.
    pub fn start() -> AdminServer {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "usher-fuzz-admin-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (key, public) = usher_license::keygen("acme", &dir.join("keys")).expect("keygen");
        let key = usher_license::VendorSigningKey::read_from(&key).expect("the vendor key");
        let signed = usher_license::sign_text("acme.lic", LICENSE, &key).expect("signing");
        let license = dir.join("acme.lic");
        std::fs::write(&license, signed.text).expect("writing the license");
        let mut config = Config::new(dir.join("data"));
        config.listen = "127.0.0.1:0".parse().expect("an address");
        config.admin_listen = Some("127.0.0.1:0".parse().expect("an address"));
        config.license_files = vec![license];
        config.vendor_keys = vec![public];
        config.insecure_plaintext = true;
        // The holders send no heartbeats: their sessions must outlive the run.
        config.session_ttl = Duration::from_secs(86_400 * 30);
        config.heartbeat_interval = Duration::from_secs(86_400);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (admin, token, port) = runtime.block_on(async {
            let server = crate::Server::bind(config).await.expect("the server binds");
            let admin = server.admin_addr().expect("the admin listener is on");
            let token = server.admin_token().to_string();
            let port = server.local_addr().port();
            tokio::spawn(server.run(std::future::pending()));
            (admin, token, port)
        });
        runtime.block_on(hold_seats(port));
        AdminServer {
            admin,
            token,
            dir,
            runtime: Some(runtime),
        }
    }

    /// Sends the request `data` describes (see [`admin_request`]) and checks the answer
    /// (see [`check_admin_answer`]).
    pub fn send(&self, data: &[u8]) -> Result<u16, String> {
        let request = admin_request(data).to_http(self.admin, &self.token);
        let mut stream =
            TcpStream::connect(self.admin).map_err(|e| format!("cannot connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        // A server that answers before reading the whole body may close early: what it
        // answered is still read below.
        let _ = stream.write_all(&request);
        let mut raw = Vec::new();
        match stream.read_to_end(&mut raw) {
            Ok(_) => {}
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => return Err(format!("no answer: {e}")),
        }
        check_admin_answer(&raw)
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Opens sessions on the client port that hold seats for the server's lifetime: three
/// users with `cad`, one with `sim`, and one waiting for `sim`.
async fn hold_seats(port: u16) {
    use usher_proto::{Checkout, Hello, Request, Response, request};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let holders = [
        ("alice", "cad", false),
        ("bob", "cad", false),
        ("carol", "cad", false),
        ("dave", "sim", false),
        ("erin", "sim", true),
    ];
    for (user, feature, wait) in holders {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("the client port");
        let (rd, mut wr) = stream.into_split();
        let mut reader = usher_proto::FrameReader::new(rd);
        let hello = Hello {
            magic: usher_proto::MAGIC.into(),
            protocol_version: usher_proto::PROTOCOL_VERSION,
            user: user.into(),
            host: "ws1".into(),
            display: ":0".into(),
            pid: 4242,
            program: "fuzz".into(),
            ..Hello::default()
        };
        let checkout = Checkout {
            feature: feature.into(),
            count: 1,
            client_ref: 1,
            wait,
            ..Checkout::default()
        };
        for (id, kind) in [
            (1, request::Kind::Hello(hello)),
            (2, request::Kind::Checkout(checkout)),
        ] {
            let req = Request {
                id,
                kind: Some(kind),
            };
            usher_proto::write_frame(&mut wr, &req)
                .await
                .expect("a request");
            if !wait || id == 1 {
                let _: Response = reader
                    .read()
                    .await
                    .expect("an answer")
                    .expect("an answer, not a close");
            }
        }
        // The connection stays open (and its session alive) while the runtime runs.
        tokio::spawn(async move {
            let _wr = wr;
            while let Ok(Some(_)) = reader.read::<Response>().await {}
        });
    }
}
