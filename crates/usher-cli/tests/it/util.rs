//! Helpers shared by the process-level tests: the two binaries, a vendor with a signed
//! license, a real `usherd` on a loopback port, seat holders (`usher run`), and bounded
//! polls whose failure messages carry the server's state and log.

use std::fmt;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long any wait may last before the test fails. Generous: it bounds a hang, it is
/// not a performance requirement.
pub const WAIT: Duration = Duration::from_secs(30);

/// The `usher` binary under test.
pub fn usher_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_usher"))
}

/// The `usherd` binary, next to `usher`.
///
/// `usherd` belongs to another package, which this one only depends on as a library, so
/// `cargo test -p usher-cli` neither builds nor refreshes it. Building it here (once per
/// test process) also means the tests never run against a stale server: when the binary is
/// up to date the build is a no-op.
pub fn usherd_bin() -> &'static Path {
    static USHERD: OnceLock<PathBuf> = OnceLock::new();
    USHERD.get_or_init(|| {
        let dir = usher_bin()
            .parent()
            .expect("the usher binary lives in a directory");
        let usherd = dir.join(format!("usherd{}", std::env::consts::EXE_SUFFIX));
        build_usherd(dir);
        assert!(
            usherd.is_file(),
            "building usher-server did not produce {}",
            usherd.display()
        );
        usherd
    })
}

/// Runs `cargo build -p usher-server --bin usherd` into the target directory that holds
/// `bin_dir` (`<target>/<profile>`), with the profile of the running tests.
fn build_usherd(bin_dir: &Path) {
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--quiet", "-p", "usher-server", "--bin", "usherd"]);
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            cargo.env("CARGO_TARGET_DIR", dir);
        }
        None => {
            if let Some(target) = bin_dir.parent() {
                cargo.env("CARGO_TARGET_DIR", target);
            }
        }
    }
    match bin_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(profile) => {
            cargo.args(["--profile", profile]);
        }
    }
    let out = cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo to build usherd");
    assert!(
        out.status.success(),
        "building usherd failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command for `program` with an environment that cannot leak into the test: no
/// `USHER_*`/`USHERD_*` settings from the caller's shell, C locale as lmstat consumers use.
pub fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("USHER_") || key_text.starts_with("USHERD_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LANG", "C").env("LC_ALL", "C").stdin(Stdio::null());
    // Tests start servers with fresh identities on reused ports: each command remembers
    // server ids (trust on first use) in a file of its own, unless the test sets one.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let known = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("known_servers")
        .join(format!("{}-{n}", std::process::id()));
    cmd.env("USHER_KNOWN_SERVERS", known);
    cmd
}

/// A `usher` command with `args`.
pub fn usher(args: &[&str]) -> Command {
    let mut cmd = command(usher_bin());
    cmd.args(args);
    cmd
}

/// What a finished command did, printable as failure context.
pub struct Outcome {
    /// The command line, for messages.
    pub what: String,
    /// Exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// Asserts the exit code and returns `self`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    /// Asserts success and returns `self`.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.expect_code(0)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\nexit: {:?}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion (it must not wait for input: stdin is null).
pub fn output(mut cmd: Command) -> Outcome {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    Outcome {
        what,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `usher args` to completion.
pub fn run_usher(args: &[&str]) -> Outcome {
    output(usher(args))
}

/// Calls `attempt` until it returns `Ok`, for at most `timeout`; panics with `what` and
/// the last `Err` context otherwise.
#[track_caller]
pub fn poll<T>(what: &str, timeout: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(context) if Instant::now() >= deadline => {
                panic!("gave up after {timeout:?} waiting for {what}\nlast state:\n{context}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding a loopback port")
        .port()
}

/// A vendor key pair made with `usher vendor keygen`, and licenses signed with
/// `usher vendor sign`.
pub struct Vendor {
    /// Holds the keys and licenses.
    pub dir: TempDir,
    /// The vendor name.
    pub name: String,
}

impl Vendor {
    /// Creates a key pair for `name` in a fresh temporary directory.
    pub fn new(name: &str) -> Vendor {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let keys = dir.path().join("keys");
        let keys_arg = keys.to_str().expect("temporary paths are UTF-8");
        run_usher(&["vendor", "keygen", "--vendor", name, "--out", keys_arg]).ok();
        Vendor {
            dir,
            name: name.to_owned(),
        }
    }

    /// The secret key file.
    pub fn secret_key(&self) -> PathBuf {
        self.dir
            .path()
            .join("keys")
            .join(format!("{}.key", self.name))
    }

    /// The public key file.
    pub fn public_key(&self) -> PathBuf {
        self.dir
            .path()
            .join("keys")
            .join(format!("{}.pub", self.name))
    }

    /// Writes `text` to `FILE_NAME.unsigned`, signs it into `FILE_NAME` and returns that path.
    pub fn sign(&self, file_name: &str, text: &str) -> PathBuf {
        let input = self.dir.path().join(format!("{file_name}.unsigned"));
        let signed = self.dir.path().join(file_name);
        std::fs::write(&input, text).expect("writing the unsigned license");
        let outcome = output({
            let mut cmd = usher(&["vendor", "sign", "--key"]);
            cmd.arg(self.secret_key())
                .arg("--in")
                .arg(&input)
                .arg("--out")
                .arg(&signed);
            cmd
        })
        .ok();
        assert!(outcome.stdout.contains("signed "), "{outcome}");
        signed
    }
}

/// The session timings of a test server. Short, so that lost seats come back quickly.
#[derive(Clone, Copy)]
pub struct Timings {
    /// `--heartbeat-interval`.
    pub heartbeat: &'static str,
    /// `--session-ttl`.
    pub session_ttl: &'static str,
    /// `--reconnect-grace`.
    pub reconnect_grace: &'static str,
}

impl Timings {
    /// Lost seats come back within a second or two.
    pub const SHORT: Timings = Timings {
        heartbeat: "200ms",
        session_ttl: "2s",
        reconnect_grace: "500ms",
    };
    /// Only an explicit check-in frees a seat within a test's lifetime.
    pub const LONG: Timings = Timings {
        heartbeat: "1s",
        session_ttl: "5m",
        reconnect_grace: "5m",
    };
}

/// A running `usherd` on `127.0.0.1`, killed on drop.
pub struct Server {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Its data directory.
    data_dir: PathBuf,
    /// Its standard output.
    stdout: PathBuf,
    /// Its log (standard error).
    log: PathBuf,
    /// Scratch space of this server: data directory, logs, holders' output.
    pub scratch: TempDir,
}

impl Server {
    /// Serves `license`, trusting `vendor`'s key.
    pub fn start(vendor: &Vendor, license: &Path, timings: Timings) -> Server {
        let scratch = tempfile::tempdir().expect("creating a temporary directory");
        let data_dir = scratch.path().join("data");
        Server::spawn(scratch, data_dir, licensed(vendor, license, timings))
    }

    /// Serves `license` like [`Server::start`], but with usherd's default status detail:
    /// the client port shows seat counts only, holders only to the admin token.
    pub fn start_private(vendor: &Vendor, license: &Path, timings: Timings) -> Server {
        let scratch = tempfile::tempdir().expect("creating a temporary directory");
        let data_dir = scratch.path().join("data");
        Server::spawn(
            scratch,
            data_dir,
            licensed_showing(vendor, license, timings, "totals"),
        )
    }

    /// The `usherd` process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Serves `license` like [`Server::start`], with `extra` flags for usherd.
    pub fn start_with(vendor: &Vendor, license: &Path, timings: Timings, extra: &[&str]) -> Server {
        let scratch = tempfile::tempdir().expect("creating a temporary directory");
        let data_dir = scratch.path().join("data");
        let licensed = licensed(vendor, license, timings);
        Server::spawn(scratch, data_dir, |cmd| {
            licensed(cmd);
            cmd.args(extra);
        })
    }

    /// The server's data directory, as a command-line argument (`--data-dir`).
    pub fn data_dir_arg(&self) -> String {
        self.data_dir
            .to_str()
            .expect("temporary paths are UTF-8")
            .to_owned()
    }

    /// The server's admin token file (`DATA_DIR/admin/token`).
    pub fn admin_token_file(&self) -> PathBuf {
        self.data_dir.join("admin").join("token")
    }

    /// Serves `license`, trusting `vendor`'s key, from `data_dir` (which outlives the
    /// server, so a later server can start where this one stopped).
    pub fn start_in(vendor: &Vendor, license: &Path, timings: Timings, data_dir: &Path) -> Server {
        let scratch = tempfile::tempdir().expect("creating a temporary directory");
        Server::spawn(
            scratch,
            data_dir.to_owned(),
            licensed(vendor, license, timings),
        )
    }

    /// `usherd --demo` on `data_dir`.
    pub fn demo(data_dir: &Path) -> Server {
        let scratch = tempfile::tempdir().expect("creating a temporary directory");
        Server::spawn(scratch, data_dir.to_owned(), |cmd| {
            cmd.arg("--demo");
        })
    }

    /// Starts usherd with `configure`'s flags on a port of its own choosing (the kernel's,
    /// so no other process can take it between a probe and the bind) and waits until it
    /// says where it serves.
    fn spawn(scratch: TempDir, data_dir: PathBuf, configure: impl Fn(&mut Command)) -> Server {
        let stdout = scratch.path().join("usherd.out");
        let log = scratch.path().join("usherd.log");
        let mut cmd = command(usherd_bin());
        cmd.args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--log", "info"])
            // Parallel tests would all want the default admin HTTP port.
            .args(["--admin-listen", "off"]);
        configure(&mut cmd);
        cmd.stdout(File::create(&stdout).expect("creating usherd's stdout file"))
            .stderr(File::create(&log).expect("creating usherd's log file"));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        match wait_ready(&mut child, &log) {
            Ok(port) => Server {
                child,
                port,
                data_dir,
                stdout,
                log,
                scratch,
            },
            Err(failure) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("usherd did not start: {cmd:?}\n{failure}");
            }
        }
    }

    /// `PORT@127.0.0.1`, the form `-c` and `USHER_LICENSE` take.
    pub fn spec(&self) -> String {
        format!("{}@127.0.0.1", self.port)
    }

    /// What usherd printed on its standard output so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// usherd's log so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// `usher status --json` against this server, parsed, or the failure as context.
    pub fn try_status(&self) -> Result<Value, String> {
        let outcome = run_usher(&["status", "--json", "-c", &self.spec()]);
        if outcome.code != Some(0) {
            return Err(format!("{outcome}\n--- usherd log ---\n{}", self.log()));
        }
        serde_json::from_str(&outcome.stdout)
            .map_err(|e| format!("status --json is not JSON: {e}\n{outcome}"))
    }

    /// `usher status --json` against this server, parsed.
    #[track_caller]
    pub fn status(&self) -> Value {
        self.try_status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Polls `usher status --json` until `feature` has `in_use` seats in use.
    #[track_caller]
    pub fn wait_in_use(&self, feature: &str, in_use: u64) {
        poll(
            &format!("{in_use} seat(s) of {feature:?} in use"),
            WAIT,
            || {
                let status = self.try_status()?;
                match feature_of(&status, feature)["in_use"].as_u64() {
                    Some(n) if n == in_use => Ok(()),
                    _ => Err(format!(
                        "{}\n--- usherd log ---\n{}",
                        serde_json::to_string_pretty(&status).unwrap_or_default(),
                        self.log()
                    )),
                }
            },
        );
    }

    /// Stops usherd with SIGTERM, as an init system would, and asserts that it exits
    /// cleanly (after writing its last log records and releasing the data directory).
    #[track_caller]
    pub fn shutdown(&mut self) {
        let outcome = output({
            let mut kill = Command::new("kill");
            kill.args(["-TERM", &self.child.id().to_string()]);
            kill
        });
        assert_eq!(
            outcome.code,
            Some(0),
            "sending SIGTERM to usherd\n{outcome}"
        );
        let status = poll("usherd to exit after SIGTERM", WAIT, || {
            match self.child.try_wait().expect("polling usherd") {
                Some(status) => Ok(status),
                None => Err(self.log()),
            }
        });
        assert!(
            status.success(),
            "usherd exited with {status}\n{}",
            self.log()
        );
    }

    /// Removes the first holder of `feature` as an administrator would (`usher remove
    /// HANDLE`, over the admin socket) and returns the handle. The server must allow it
    /// (`--min-remove 0s`).
    #[track_caller]
    pub fn remove_first_holder(&self, feature: &str) -> String {
        let status = self.status();
        let handle = feature_of(&status, feature)["holders"][0]["handle"]
            .as_str()
            .unwrap_or_else(|| panic!("no holder of {feature:?} to remove: {status:#}"))
            .to_owned();
        let data_dir = self.data_dir.to_str().expect("temporary paths are UTF-8");
        run_usher(&["remove", &handle, "--data-dir", data_dir]).ok();
        handle
    }

    /// Kills usherd (SIGKILL) and reaps it; the data directory is free afterwards.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The flags that make usherd serve `license` with `vendor`'s key and `timings`.
fn licensed<'a>(
    vendor: &'a Vendor,
    license: &'a Path,
    timings: Timings,
) -> impl Fn(&mut Command) + 'a {
    // The tests read holders (`usher status`, `lmstat -a`) from the client port, unless
    // they start the server with `start_private`.
    licensed_showing(vendor, license, timings, "full")
}

/// [`licensed`], with `--status-detail DETAIL`.
fn licensed_showing<'a>(
    vendor: &'a Vendor,
    license: &'a Path,
    timings: Timings,
    detail: &'a str,
) -> impl Fn(&mut Command) + 'a {
    move |cmd| {
        cmd.arg("--license")
            .arg(license)
            .arg("--vendor-key")
            .arg(vendor.public_key())
            .args(["--heartbeat-interval", timings.heartbeat])
            .args(["--session-ttl", timings.session_ttl])
            .args(["--reconnect-grace", timings.reconnect_grace])
            .args(["--status-detail", detail]);
    }
}

/// Polls usherd's log until it says where it serves (it logs that once it is listening)
/// and returns the port; fails if usherd exits first.
fn wait_ready(child: &mut Child, log: &Path) -> Result<u16, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("polling usherd") {
            return Err(format!("usherd exited with {status}\n{}", read_log(log)));
        }
        if let Some(port) = serving_port(&read_log(log)) {
            return Ok(port);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "usherd did not say where it serves within {WAIT:?}\n{}",
                read_log(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The port of the `serving addr=127.0.0.1:PORT` line of a log, once it is there.
fn serving_port(log: &str) -> Option<u16> {
    log.lines()
        .filter(|line| line.contains(" serving"))
        .flat_map(str::split_whitespace)
        .find_map(|word| word.strip_prefix("addr="))
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        .map(|addr| addr.port())
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log at {}: {e})", path.display()))
}

/// The `features[]` entry of `feature` in `usher status --json` output, or `Null`.
pub fn feature_of<'a>(status: &'a Value, feature: &str) -> &'a Value {
    status["features"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["feature"] == feature))
        .unwrap_or(&Value::Null)
}

/// A `usher run FEATURE -- COMMAND...` process holding (or trying to hold) a seat.
///
/// It runs in a process group of its own so that dropping it also ends the command it
/// started, even after the `usher` process itself was killed.
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: PathBuf,
}

impl Holder {
    /// Starts `usher run FEATURE -- COMMAND...` against `server`. Its standard input is a
    /// pipe, inherited by the command; see [`Holder::close_stdin`].
    pub fn spawn(server: &Server, feature: &str, command: &[&str]) -> Holder {
        Holder::spawn_with(server, &[], feature, command)
    }

    /// Like [`Holder::spawn`], with `options` (such as `--wait 0`) before the feature.
    pub fn spawn_with(
        server: &Server,
        options: &[&str],
        feature: &str,
        command: &[&str],
    ) -> Holder {
        Holder::spawn_as(server, None, options, feature, command)
    }

    /// Like [`Holder::spawn_with`], as the user `user` (`USER=`) if given.
    pub fn spawn_as(
        server: &Server,
        user: Option<&str>,
        options: &[&str],
        feature: &str,
        command: &[&str],
    ) -> Holder {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let stderr = server.scratch.path().join(format!("holder-{n}.err"));
        let mut cmd = usher(&["run", "-c", &server.spec()]);
        cmd.args(options)
            .args([feature, "--"])
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("creating a holder's stderr file"))
            .process_group(0);
        if let Some(user) = user {
            cmd.env("USER", user);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        Holder {
            child,
            stdin,
            stderr,
        }
    }

    /// The `usher` process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes the pipe on standard input: a command such as `sh -c 'read x'` then ends.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `signal` (e.g. `STOP`) to the `usher` process only, not to its command.
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        let outcome = output({
            let mut cmd = Command::new("kill");
            cmd.arg(format!("-{signal}")).arg(self.pid().to_string());
            cmd
        });
        assert_eq!(outcome.code, Some(0), "{outcome}");
    }

    /// Kills the `usher` process with SIGKILL and reaps it (the kernel then kills its
    /// command: `usher run` ties the command to its own life).
    pub fn kill_usher(&mut self) {
        self.child.kill().expect("killing usher run");
        self.child.wait().expect("reaping usher run");
    }

    /// Polls until `usher` exits and returns its exit code.
    #[track_caller]
    pub fn wait_exit(&mut self) -> Option<i32> {
        poll("usher run to exit", WAIT, || {
            match self.child.try_wait().expect("polling usher run") {
                Some(status) => Ok(status.code()),
                None => Err(format!("still running; stderr:\n{}", self.stderr())),
            }
        })
    }

    /// What `usher` printed on standard error so far.
    pub fn stderr(&self) -> String {
        read_log(&self.stderr)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // The group id is the usher process id; the group lives while any member does.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The license most tests serve: `cad` with two seats, `sim` with five.
pub const TWO_CAD_SEATS: &str = "\
FEATURE cad acme 2025 permanent 2 HOSTID=ANY NOTICE=\"usher tests\"
FEATURE sim acme 1.0 31-dec-2099 5 HOSTID=ANY
";

/// A server for [`TWO_CAD_SEATS`], and the vendor whose key signed it.
pub struct Licensed {
    /// The server (declared first: it stops before the vendor's files go away).
    pub server: Server,
    /// The vendor: keeps the key and the license file for as long as the server runs.
    pub vendor: Vendor,
}

impl Licensed {
    /// Signs [`TWO_CAD_SEATS`] and serves it with `timings`.
    pub fn start(timings: Timings) -> Licensed {
        Licensed::start_with(timings, &[])
    }

    /// Like [`Licensed::start`], with `extra` flags for usherd.
    pub fn start_with(timings: Timings, extra: &[&str]) -> Licensed {
        let vendor = Vendor::new("acme");
        let license = vendor.sign("cad.lic", TWO_CAD_SEATS);
        let server = Server::start_with(&vendor, &license, timings, extra);
        Licensed { server, vendor }
    }
}
