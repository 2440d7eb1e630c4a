//! What other users of the server's machine can reach: the data directory and its files
//! (probed as `nobody` where the test runs as root), symbolic links and planted files in
//! the data directory, and the logs of a whole server run (which must hold no secret).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use usher_proto::udp::{self, Keepalive};
use usher_proto::{request, response};

use crate::http::http;
use crate::util::{LICENSE, Licensed, RawConn, TestServer, checkout, resume};

const WAIT: Duration = Duration::from_secs(30);

/// True when the test runs as root (as CI does), so it can act as `nobody`; otherwise
/// prints why the part that needs it is skipped.
fn root_or_skip(what: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipped ({what}): needs root to act as another user (CI runs as root)");
    }
    root
}

/// Runs `sh -c script` as `nobody` (uid and gid 65534, no supplementary groups) and
/// returns whether it succeeded, with its output.
fn as_nobody(script: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(script)
        .output()
        .expect("setpriv runs (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A real `usherd` writing its log (without colour) to a file; killed and reaped on drop.
struct Usherd {
    child: Child,
    log: PathBuf,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

impl Usherd {
    /// Starts usherd on free ports under `sh -c "PRELUDE; exec usherd ..."` (a umask, a
    /// ulimit), and waits for its "serving" line.
    fn start(lic: &Licensed, prelude: &str, extra: &[&str]) -> Usherd {
        let log = lic.tmp.path().join("usherd.log");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{prelude}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_usherd"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(lic.data_dir())
            .arg("--license")
            .arg(&lic.license)
            .arg("--vendor-key")
            .arg(&lic.public)
            .args(["--log", "debug", "--min-remove", "0s"])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = command.spawn().expect("usherd starts");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let field = |line: &str, name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .and_then(|v| v.parse().ok())
            };
            let serving = text
                .lines()
                .find(|l| l.contains(" serving"))
                .and_then(|l| field(l, "addr="));
            let admin = text
                .lines()
                .find(|l| l.contains("admin HTTP API"))
                .and_then(|l| field(l, "addr="));
            if let (Some(addr), Some(admin)) = (serving, admin) {
                return Usherd {
                    child,
                    log,
                    addr,
                    admin,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("usherd exited ({status}) before serving:\n{text}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "usherd did not serve in time:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait for it to exit, and return its whole log.
    fn stop(mut self) -> String {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(status.success(), "usherd stopped with {status}:\n{log}");
        log
    }
}

impl Drop for Usherd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mode bits of every entry below `dir` (not following links), by path.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.mode() & 0o777));
        if meta.is_dir() {
            out.extend(modes(&path));
        }
    }
    out
}

/// A Licensed whose temporary directory others may enter (as /var/lib is), so that only
/// the data directory's own modes keep them out.
fn licensed_open_parent() -> Licensed {
    let lic = Licensed::new(LICENSE);
    std::fs::set_permissions(lic.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    lic
}

/// Under `umask 000` the data directory is still 0700 and every file in it 0600 (store,
/// `-wal`, `-shm`, lock, identity, token, pseudonym key); `nobody` can neither read the
/// holders from the store nor lock the store or the data directory.
#[tokio::test(flavor = "multi_thread")]
async fn the_data_directory_is_private_whatever_the_umask_and_nobody_cannot_touch_it() {
    let lic = licensed_open_parent();
    let server = Usherd::start(&lic, "umask 000", &["--hide-users", "--insecure-plaintext"]);
    // A holder, so the store has something to hide and its -wal and -shm exist.
    let mut conn = RawConn::connect(server.addr).await;
    conn.hello("alice").await;
    let granted = conn.call(2, checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");

    let dir = lic.data_dir();
    let found = modes(&dir);
    for name in [
        "usher.db",
        "usher.db-wal",
        "usher.db-shm",
        "usherd.lock",
        "identity.key",
        "identity.id",
        "pseudonym.key",
        "admin/token",
    ] {
        assert!(
            found.iter().any(|(p, _)| *p == dir.join(name)),
            "{name} is in the data directory: {found:?}"
        );
    }
    let dir_mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "the data directory's mode");
    for (path, mode) in &found {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} has mode {mode:o}", path.display());
    }

    if root_or_skip("probing the data directory as nobody") {
        let shm = dir.join("usher.db-shm");
        for (what, script) in [
            (
                "read the store",
                format!("cat '{}'", dir.join("usher.db").display()),
            ),
            ("open the -shm file", format!("exec 3<'{}'", shm.display())),
            (
                "lock the data directory",
                format!("flock -n -x '{}' true", dir.join("usherd.lock").display()),
            ),
            ("list the data directory", format!("ls '{}'", dir.display())),
        ] {
            let (ok, out) = as_nobody(&script);
            assert!(!ok, "nobody could {what}: {out}");
            assert!(!out.contains("alice"), "nobody read a holder: {out}");
        }
        // And with the directory's modes opened up by mistake, the files still hold.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (ok, out) = as_nobody(&format!("cat '{}'", dir.join("usher.db").display()));
        assert!(!ok, "nobody could read the store file itself: {out}");
        let (ok, out) = as_nobody(&format!("exec 3<'{}'", shm.display()));
        assert!(!ok, "nobody could open the -shm file itself: {out}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    drop(conn);
    server.stop();
}

/// The pseudonym key of `--hide-users` lives in its own 0600 file, not in the store that
/// usage-log readers may read; a key that an earlier version left in the store's `meta`
/// table is moved out of it, and pseudonyms stay the same.
#[tokio::test(flavor = "multi_thread")]
async fn the_pseudonym_key_is_kept_out_of_the_store_and_moved_out_of_an_old_one() {
    let lic = Licensed::new(LICENSE);
    let dir = lic.data_dir();
    let mut config = lic.config();
    config.hide_users = true;
    // An old store with the key in meta.
    {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut store = usher_store::SqliteStore::open(&config.store_path()).unwrap();
        store
            .set_meta(usher_store::LEGACY_PSEUDONYM_KEY, &[5; 32])
            .unwrap();
    }
    let server = TestServer::start(config.clone()).await;
    server.shutdown().await.unwrap();
    let key_file = dir.join(usher_server::server::PSEUDONYM_KEY_FILE);
    assert_eq!(std::fs::read(&key_file).unwrap(), [5; 32]);
    assert_eq!(std::fs::metadata(&key_file).unwrap().mode() & 0o777, 0o600);
    let store = usher_store::SqliteStore::open_read_only(&config.store_path()).unwrap();
    assert_eq!(
        store.get_meta(usher_store::LEGACY_PSEUDONYM_KEY).unwrap(),
        None,
        "the key is gone from the store"
    );
    let bytes = std::fs::read(config.store_path()).unwrap();
    assert!(
        !bytes.windows(32).any(|w| w == [5; 32]),
        "the key's bytes are overwritten in the store file"
    );
}

/// What a server start must refuse in its data directory, each with the fix in the
/// message, leaving the target of a planted link untouched.
#[tokio::test(flavor = "multi_thread")]
async fn links_planted_files_and_writable_directories_in_the_data_directory_are_refused() {
    async fn refusal(config: &usher_server::Config) -> String {
        match usher_server::Server::bind(config.clone()).await {
            Ok(_) => panic!("the server started on an unsafe data directory"),
            Err(e) => e.to_string(),
        }
    }
    let lic = Licensed::new(LICENSE);
    let config = lic.config();
    let dir = lic.data_dir();
    // A first start makes the directory; stop and tamper with it.
    TestServer::start(config.clone())
        .await
        .shutdown()
        .await
        .unwrap();
    let victim = lic.tmp.path().join("victim");
    std::fs::write(&victim, "keep me\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();

    // identity.id linked to a file elsewhere.
    std::fs::remove_file(dir.join("identity.id")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("identity.id")).unwrap();
    let err = refusal(&config).await;
    assert!(
        err.contains("symbolic link") && err.contains("identity.id"),
        "{err}"
    );
    std::fs::remove_file(dir.join("identity.id")).unwrap();

    // admin/ linked to a directory elsewhere.
    let elsewhere = lic.tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(dir.join("admin"), lic.tmp.path().join("admin.saved")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("admin")).unwrap();
    let err = refusal(&config).await;
    assert!(
        err.contains("symbolic link") && err.contains("admin"),
        "{err}"
    );
    std::fs::remove_file(dir.join("admin")).unwrap();
    std::fs::rename(lic.tmp.path().join("admin.saved"), dir.join("admin")).unwrap();

    // A data directory others may write.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = refusal(&config).await;
    assert!(
        err.contains(&format!("chmod 700 {}", dir.display())),
        "{err}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A token file others may write.
    let token = dir.join("admin").join("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = refusal(&config).await;
    assert!(
        err.contains(&format!("chmod 600 {}", token.display())),
        "{err}"
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();

    if root_or_skip("a token planted by another user") {
        std::os::unix::fs::chown(&token, Some(65534), Some(65534)).unwrap();
        let err = refusal(&config).await;
        assert!(
            err.contains("owned by uid 65534") && err.contains("chown 0"),
            "{err}"
        );
        std::os::unix::fs::chown(&token, Some(0), Some(0)).unwrap();
    }

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().mode() & 0o777,
        0o644,
        "the link's target was not chmodded"
    );
    assert_eq!(
        std::fs::metadata(&elsewhere).unwrap().mode() & 0o777,
        0o755,
        "the linked directory was not chmodded"
    );
    // Put right, it starts again.
    TestServer::start(config).await.shutdown().await.unwrap();
}

/// A whole run of a real usherd at `--log debug`: start, checkouts, a resume, admin
/// actions (some with a wrong token), a detach and UDP keepalives, a stop. Neither its
/// log nor its metrics hold the admin token, a session secret, a keepalive key or a
/// private key; the log says where the token file is.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_log_or_the_metrics_of_a_whole_run() {
    let lic = Licensed::new(LICENSE);
    let server = Usherd::start(
        &lic,
        "022",
        &["--insecure-plaintext", "--session-ttl", "120s"],
    );
    let token_file = lic.data_dir().join("admin").join("token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();

    let mut secrets: Vec<Vec<u8>> = vec![token.as_bytes().to_vec()];
    // Sessions: opened, checked out, resumed on a new connection.
    let mut conn = RawConn::connect(server.addr).await;
    let welcome = conn.welcome(crate::util::hello("alice")).await;
    secrets.push(welcome.session_secret.clone());
    let granted = conn.call(2, checkout("cad", 1, 1)).await;
    let response::Kind::Granted(granted) = granted else {
        panic!("{granted:?}")
    };
    drop(conn);
    let mut again = RawConn::connect(server.addr).await;
    let resumed = again.welcome(resume("alice", &welcome)).await;
    assert!(resumed.resumed, "{resumed:?}");
    // A wrong secret on resume (logged as refused, never echoed).
    let mut wrong = RawConn::connect(server.addr).await;
    let mut bad = resume("alice", &welcome);
    bad.resume_secret = vec![0xAB; welcome.session_secret.len()];
    secrets.push(bad.resume_secret.clone());
    wrong.send(1, request::Kind::Hello(bad)).await;
    let _ = wrong.recv().await;

    // Detach and keep the session alive over UDP.
    let mut detacher = RawConn::connect(server.addr).await;
    let session = detacher.hello("bob").await;
    let _ = detacher.call(2, checkout("sim", 1, 1)).await;
    let response::Kind::Detached(d) = detacher
        .call(3, request::Kind::Detach(usher_proto::Detach {}))
        .await
    else {
        panic!("not detached")
    };
    secrets.push(d.keepalive_key.clone());
    let key: [u8; 32] = d.keepalive_key[..].try_into().unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.addr).await.unwrap();
    for seq in 1..=3 {
        let datagram = udp::encode_keepalive(
            &Keepalive {
                session,
                seq,
                elapsed_ms: 0,
            },
            &key,
        );
        socket.send(&datagram).await.unwrap();
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(WAIT, socket.recv(&mut buf)).await;
    }

    // Admin actions, with the right token and with wrong ones.
    for _ in 0..3 {
        let r = http(
            server.admin,
            "GET",
            "/api/v1/holders",
            Some("not-the-token"),
            None,
        )
        .await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    let near_miss = format!("{}x", &token[..token.len() - 1]);
    secrets.push(near_miss.as_bytes().to_vec());
    let _ = http(
        server.admin,
        "GET",
        "/api/v1/holders",
        Some(&near_miss),
        None,
    )
    .await;
    let holders = http(server.admin, "GET", "/api/v1/holders", Some(&token), None).await;
    assert_eq!(holders.status, 200, "{holders:?}");
    let body = format!("{{\"lease_id\": {}}}", granted.lease_id);
    let removed = http(
        server.admin,
        "POST",
        "/api/v1/remove",
        Some(&token),
        Some(&body),
    )
    .await;
    assert_eq!(removed.status, 200, "{removed:?}");
    let reloaded = http(
        server.admin,
        "POST",
        "/api/v1/reload",
        Some(&token),
        Some("{}"),
    )
    .await;
    assert_eq!(reloaded.status, 200, "{reloaded:?}");
    let metrics = http(server.admin, "GET", "/metrics", None, None).await.body;
    drop((again, wrong));

    let log = server.stop();
    let key_pem = std::fs::read_to_string(lic.data_dir().join("identity.key")).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!key_body.is_empty());
    let vendor_key = std::fs::read_to_string(&lic.key).unwrap();
    for (what, text) in [("log", &log), ("metrics", &metrics)] {
        for secret in &secrets {
            for form in [
                String::from_utf8_lossy(secret).into_owned(),
                hex::encode(secret),
                hex::encode_upper(secret),
                base64_std(secret),
                format!("{secret:?}"),
            ] {
                if form.len() >= 16 {
                    assert!(
                        !text.contains(&form),
                        "the {what} holds a secret ({form}):\n{text}"
                    );
                }
            }
        }
        assert!(
            !text.contains(&key_body),
            "the {what} holds the identity key"
        );
        for line in vendor_key.lines().filter(|l| l.len() >= 16) {
            assert!(!text.contains(line), "the {what} holds the vendor key");
        }
    }
    assert!(
        log.contains(&format!("token_file={}", token_file.display())),
        "the log says where the token file is:\n{log}"
    );
    assert!(
        log.contains("wrong admin token"),
        "wrong tokens are logged:\n{log}"
    );
}

/// Standard base64 with padding (the form a secret would take in JSON bytes).
fn base64_std(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Out of file descriptors, with a connection waiting on the admin socket and more on the
/// client port, the accept loops back off instead of spinning: a handful of log lines in
/// three seconds, not a million. When descriptors are free again, both are served.
#[tokio::test(flavor = "multi_thread")]
async fn accept_errors_back_off_instead_of_flooding_the_log() {
    let lic = Licensed::new(LICENSE);
    let server = Usherd::start(&lic, "ulimit -n 64", &["--insecure-plaintext"]);
    // Use up the server's descriptors with idle admin HTTP connections it accepts (and
    // holds for the header-read timeout), with more waiting, as a local user can; then
    // one more waits on the admin socket.
    let mut held = Vec::new();
    for _ in 0..80 {
        if let Ok(s) = std::net::TcpStream::connect(server.admin) {
            held.push(s);
        }
    }
    let socket = lic.data_dir().join("admin").join("usherd.sock");
    let waiting = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let failures = || {
        let log = std::fs::read_to_string(&server.log).unwrap();
        let n = log.lines().filter(|l| l.contains("accept failed")).count();
        (n, log)
    };
    // The descriptors run out, and that is logged ...
    let deadline = std::time::Instant::now() + WAIT;
    while failures().0 == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the descriptors ran out, and that is logged:\n{}",
            failures().1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... and then, over three seconds in which a spinning loop would log thousands of
    // lines, at most a line per listener (one each per ten seconds).
    std::thread::sleep(Duration::from_secs(3));
    let (failures, _) = failures();
    assert!(
        failures <= 4,
        "{failures} accept failures logged in 3 s: the loop spins"
    );
    // Descriptors back: the admin socket's waiting connection is served.
    drop(held);
    let mut admin = usher_client::admin::AdminConnection::connect(&socket, WAIT)
        .await
        .expect("the admin socket answers again");
    drop(waiting);
    let status = admin
        .call(request::Kind::Status(usher_proto::StatusRequest::default()))
        .await
        .expect("status over the admin socket");
    assert!(matches!(status, response::Kind::Status(_)), "{status:?}");
    server.stop();
}
