//! Starting servers and talking to them.

use std::path::PathBuf;
use std::time::Duration;

use usher_client::{Client, ClientConfig, ServerAddr};
use usher_proto::{FrameReader, Hello, Request, Response, request};
use usher_server::{Config, Server};

/// Default test license: 3 seats of `cad`, 2 of `sim`.
/// A pool of six `units` and `sample`, a token-based feature whose seat costs five of them.
pub const TOKEN_LICENSE: &str = "FEATURE units acme 2 permanent 6 HOSTID=ANY\n\
     FEATURE sample acme 1 permanent token HOSTID=ANY TOKEN=\"<units 2 5>\"\n";

pub const LICENSE: &str = "\
FEATURE cad acme 2025 permanent 3 HOSTID=ANY
FEATURE sim acme 1.0 permanent 2 HOSTID=ANY
";

/// A vendor key pair and a signed license in a temporary directory.
pub struct Licensed {
    pub tmp: tempfile::TempDir,
    pub key: PathBuf,
    pub public: PathBuf,
    pub license: PathBuf,
}

impl Licensed {
    pub fn new(text: &str) -> Licensed {
        let tmp = tempfile::tempdir().unwrap();
        let (key, public) = usher_license::keygen("acme", &tmp.path().join("keys")).unwrap();
        let license = tmp.path().join("acme.lic");
        let l = Licensed {
            tmp,
            key,
            public,
            license,
        };
        l.write(text);
        l
    }

    /// Signs `text` and writes it as the license file.
    pub fn write(&self, text: &str) {
        let key = usher_license::VendorSigningKey::read_from(&self.key).unwrap();
        let signed = usher_license::sign_text("acme.lic", text, &key).unwrap();
        std::fs::write(&self.license, signed.text).unwrap();
    }

    /// Signs every line of `text` (one physical line per entitlement) the way a signing
    /// tool that does not judge attribute values would, and writes it as the license file:
    /// how a line `usher vendor sign` refuses could still reach a server.
    pub fn write_signed_unchecked(&self, text: &str) {
        use ed25519_dalek::Signer as _;
        let key = usher_license::VendorSigningKey::read_from(&self.key).unwrap();
        let file = usher_license::parse("acme.lic", text).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for e in &file.entitlements {
            let signature = key.signing_key().sign(&e.canonical_bytes());
            let sign = hex::encode(signature.to_bytes());
            lines[e.line - 1].push_str(&format!(" SIGN={sign}"));
        }
        std::fs::write(&self.license, lines.join("\n") + "\n").unwrap();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// A config serving this license on 127.0.0.1:0 with short, test-friendly timings.
    pub fn config(&self) -> Config {
        let mut config = Config::new(self.data_dir());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.license_files = vec![self.license.clone()];
        config.vendor_keys = vec![self.public.clone()];
        config.heartbeat_interval = Duration::from_millis(200);
        config.session_ttl = Duration::from_secs(2);
        config.reconnect_grace = Duration::from_millis(500);
        config.handshake_timeout = Duration::from_millis(500);
        config.min_remove = Duration::ZERO;
        config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        // The client library speaks TLS (as by default); raw-frame tests speak plaintext.
        config.insecure_plaintext = true;
        // The tests read holders from the client port's status.
        config.status_detail = usher_server::config::StatusDetail::Full;
        config
    }
}

/// An in-process server.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    /// The admin HTTP address (the tests' configs bind it on port 0).
    pub admin: Option<std::net::SocketAddr>,
    /// The admin API's bearer token.
    pub token: String,
    /// The configuration it runs with, `listen` set to the address actually bound, so a
    /// restart comes back on the same port and data directory.
    pub config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), usher_server::ServerError>>>,
}

/// The first panic on a runtime worker thread (a server or client task), if any. A task
/// that panics only loses its connection, which a test might not notice, so every
/// `TestServer` checks this when it is dropped.
static TASK_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn watch_task_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            // The fail-loudly tests inject their panics on purpose.
            let injected = info.to_string().contains("injected fault");
            if thread.name().is_some_and(|n| n.starts_with("tokio-")) && !injected {
                let mut first = TASK_PANIC.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| info.to_string());
            }
            default(info);
        }));
    });
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let panic = TASK_PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(what) = panic
            && !std::thread::panicking()
        {
            panic!("a task panicked while tests ran (servers must never panic): {what}");
        }
    }
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        watch_task_panics();
        let server = bind(config.clone()).await;
        let addr = server.local_addr();
        let admin = server.admin_addr();
        let token = server.admin_token().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            admin,
            token,
            config: Config {
                listen: addr,
                ..config
            },
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Whether `run` has returned.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits (at most 30 s) for `run` to return by itself, e.g. after an admin's down.
    pub async fn stopped(mut self) -> Result<(), usher_server::ServerError> {
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the server stops within 30 s")
            .unwrap()
    }

    /// Stops gracefully and returns what `run` returned.
    pub async fn shutdown(mut self) -> Result<(), usher_server::ServerError> {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the server stops within 30 s of being asked")
            .unwrap()
    }

    /// Stops gracefully (asserting that `run` returned `Ok`) and starts again with the same
    /// configuration: same port, same data directory.
    pub async fn restart(self) -> TestServer {
        let config = self.config.clone();
        self.shutdown()
            .await
            .expect("run returns Ok after a graceful stop");
        TestServer::start(config).await
    }

    pub async fn client(&self) -> Client {
        client_for(self.addr.port()).await
    }

    pub async fn status(&self) -> usher_client::StatusReport {
        status_of(self.addr.port()).await
    }
}

/// Binds a server. A fixed port just given up by a previous server may take a moment to
/// become free again, so a bind that finds the address in use is retried (for at most 20 s).
async fn bind(config: Config) -> Server {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Server::bind(config.clone()).await {
            Ok(server) => return server,
            Err(usher_server::ServerError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && config.listen.port() != 0
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // A process spawned by another test at the moment the last server stopped holds
            // a copy of its lock file's descriptor until it execs; that passes at once.
            Err(usher_server::ServerError::DataDirInUse(_))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the server does not bind {}: {e}", config.listen),
        }
    }
}

/// A connected client of the server on `port`.
pub async fn client_for(port: u16) -> Client {
    let mut config = ClientConfig::new(vec![ServerAddr {
        host: "127.0.0.1".into(),
        port,
    }]);
    config.request_timeout = Duration::from_secs(20);
    config.connect_timeout = Duration::from_secs(20);
    Client::connect(config).await.expect("client connects")
}

/// The status report of the server on `port`, from a query-only connection.
pub async fn status_of(port: u16) -> usher_client::StatusReport {
    let mut config = ClientConfig::new(vec![ServerAddr {
        host: "127.0.0.1".into(),
        port,
    }]);
    config.query_only = true;
    config.connect_timeout = Duration::from_secs(20);
    let client = Client::connect(config)
        .await
        .expect("status client connects");
    let report = client.status("").await.expect("status");
    client.close().await;
    report
}

/// A status report as the tests read it: the client's (`Client::status`) or the wire's
/// (from a raw or admin connection), which have the same pools and holders.
pub trait Report {
    /// The report's holder type.
    type Holder;
    /// Seats in use of `feature` (summed over its pools).
    fn in_use(&self, feature: &str) -> u32;
    /// Every holder, over all features.
    fn holders(&self) -> Vec<&Self::Holder>;
}

macro_rules! report {
    ($report:ty, $holder:ty) => {
        impl Report for $report {
            type Holder = $holder;
            fn in_use(&self, feature: &str) -> u32 {
                self.features
                    .iter()
                    .filter(|f| f.feature == feature)
                    .map(|f| f.in_use)
                    .sum()
            }
            fn holders(&self) -> Vec<&$holder> {
                self.features.iter().flat_map(|f| &f.holders).collect()
            }
        }
    };
}
report!(usher_client::StatusReport, usher_client::status::Holder);
report!(usher_proto::StatusReport, usher_proto::Holder);

/// Seats in use of `feature` (summed over its pools).
pub fn in_use(report: &impl Report, feature: &str) -> u32 {
    report.in_use(feature)
}

/// Every holder in a report, over all features.
pub fn holders<R: Report>(report: &R) -> Vec<&R::Holder> {
    report.holders()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A raw protocol connection, for peers the client library would never be.
pub struct RawConn {
    pub reader: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    pub writer: tokio::net::tcp::OwnedWriteHalf,
}

impl RawConn {
    pub async fn connect(addr: std::net::SocketAddr) -> RawConn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (rd, writer) = stream.into_split();
        RawConn {
            reader: FrameReader::new(rd),
            writer,
        }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.writer.write_all(bytes).await
    }

    pub async fn send(&mut self, id: u64, kind: request::Kind) {
        let req = Request {
            id,
            kind: Some(kind),
        };
        usher_proto::write_frame(&mut self.writer, &req)
            .await
            .unwrap();
    }

    /// The next response, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Response> {
        tokio::time::timeout(Duration::from_secs(20), self.reader.read::<Response>())
            .await
            .expect("an answer or a close within 20 s")
            .ok()
            .flatten()
    }

    /// Says hello and returns the Welcome's session id.
    pub async fn hello(&mut self, user: &str) -> u64 {
        self.welcome(hello(user)).await.session_id
    }

    /// Sends `hello` and returns the Welcome it must earn.
    pub async fn welcome(&mut self, hello: Hello) -> usher_proto::Welcome {
        self.send(1, request::Kind::Hello(hello)).await;
        match self.recv().await.and_then(|r| r.kind) {
            Some(usher_proto::response::Kind::Welcome(w)) => w,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Sends one request and returns the kind of the response, which must carry its id.
    pub async fn call(&mut self, id: u64, kind: request::Kind) -> usher_proto::response::Kind {
        let what = format!("{kind:?}");
        self.send(id, kind).await;
        match self.recv().await {
            Some(Response {
                id: got,
                kind: Some(kind),
            }) if got == id => kind,
            other => panic!("expected the answer to request {id} ({what}), got {other:?}"),
        }
    }
}

/// A Hello that resumes the session a Welcome opened.
pub fn resume(user: &str, welcome: &usher_proto::Welcome) -> Hello {
    Hello {
        resume_session: welcome.session_id,
        resume_secret: welcome.session_secret.clone(),
        ..hello(user)
    }
}

/// A well-formed Hello.
pub fn hello(user: &str) -> Hello {
    Hello {
        magic: usher_proto::MAGIC.into(),
        protocol_version: usher_proto::PROTOCOL_VERSION,
        user: user.into(),
        host: "testhost".into(),
        display: ":0".into(),
        pid: 4242,
        program: "test".into(),
        ..Hello::default()
    }
}

/// A checkout request.
pub fn checkout(feature: &str, count: u32, client_ref: u64) -> request::Kind {
    request::Kind::Checkout(usher_proto::Checkout {
        feature: feature.into(),
        version: String::new(),
        count,
        client_ref,
        ..usher_proto::Checkout::default()
    })
}
