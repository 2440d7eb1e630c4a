//! Helpers shared by the process-level tests: the two binaries, a vendor with a signed
//! license, a real `usherd` on a loopback port, seat holders (`usher run`), and bounded
//! polls whose failure messages carry the server's state and log.

use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

mod holder;
mod server;
mod vendor;

pub use holder::Holder;
pub use server::{Server, Timings};
pub use vendor::{Licensed, TWO_CAD_SEATS, Vendor};

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

/// The `features[]` entry of `feature` in `usher status --json` output, or `Null`.
pub fn feature_of<'a>(status: &'a Value, feature: &str) -> &'a Value {
    status["features"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["feature"] == feature))
        .unwrap_or(&Value::Null)
}
