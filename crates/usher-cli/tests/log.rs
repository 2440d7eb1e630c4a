//! `usher log` end to end: a real `usherd` writes the usage log, `usher run` takes a seat
//! and is refused another, then `usher log verify` and `usher log export` read the file,
//! and an edit made with plain SQL is caught.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest wait for the server to start or stop.
const WAIT: Duration = Duration::from_secs(30);

fn usher() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_usher"))
}

/// `usherd` sits next to `usher` once the workspace is built; build it if it is not.
fn usherd() -> PathBuf {
    let path = usher().with_file_name("usherd");
    if !path.is_file() {
        // target/<profile>/usher: the target directory is two levels up.
        let target = usher()
            .parent()
            .and_then(Path::parent)
            .expect("usher lives in target/<profile>/")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "usher-server",
                "--bin",
                "usherd",
                "--target-dir",
            ])
            .arg(&target)
            .status()
            .expect("running cargo build for usherd");
        assert!(status.success(), "building usherd failed");
    }
    path
}

/// A running `usherd --demo` on a free loopback port; stopped with SIGTERM.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(usherd())
            .args([
                "--demo",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
                "--data-dir",
            ])
            .arg(data_dir)
            .env_remove("USHERD_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting usherd");
        // The demo prints "usherd is serving ... on ADDR." once it listens.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(" on ").nth(1)
                    && line.contains("is serving")
                {
                    let _ = tx.send(rest.trim_end_matches('.').to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(WAIT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("usherd did not say where it listens within {WAIT:?}");
            }
        };
        Server { child, addr }
    }

    /// `PORT@HOST`, as `-c` takes it.
    fn license(&self) -> String {
        let (host, port) = self.addr.rsplit_once(':').expect("host:port");
        format!("{port}@{host}")
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            killed.is_ok_and(|s| s.success()),
            "sending SIGTERM to usherd"
        );
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for usherd") {
                assert!(status.success(), "usherd exited with {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("usherd did not stop within {WAIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only if a test failed before `stop`.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_usher(args: &[&str]) -> Output {
    Command::new(usher())
        .args(args)
        .env_remove("USHER_LICENSE")
        .env_remove("USHERD_DATA_DIR")
        .output()
        .expect("running usher")
}

#[track_caller]
fn expect_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn verify_passes_then_catches_an_edited_row() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path();
    let data_arg = data.to_str().expect("UTF-8 temp path");
    let server = Server::start(data);
    let c = server.license();
    let out = run_usher(&["-c", &c, "run", "cad", "--", "true"]);
    expect_code(&out, 0, "usher run cad");
    let out = run_usher(&["-c", &c, "run", "no-such-feature", "--", "true"]);
    expect_code(&out, 5, "usher run of an unlicensed feature");
    server.stop();

    let out = run_usher(&["log", "verify", "--data-dir", data_arg]);
    expect_code(&out, 0, "verify of an untouched log");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("ok: ") && text.contains("records, chain intact"),
        "{text}"
    );

    let out = run_usher(&["log", "export", "--data-dir", data_arg, "--format", "jsonl"]);
    expect_code(&out, 0, "export as JSON lines");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let events: Vec<&str> = rows.iter().filter_map(|r| r["event"].as_str()).collect();
    for event in [
        "server_start",
        "session_open",
        "checkout",
        "checkin",
        "denied",
        "server_stop",
    ] {
        assert!(events.contains(&event), "no {event} in {events:?}");
    }
    let denied = rows
        .iter()
        .find(|r| r["event"] == "denied")
        .expect("a denied row");
    assert_eq!(denied["feature"], "no-such-feature", "{denied}");
    assert_eq!(denied["detail"], "unknown_feature", "{denied}");
    assert!(denied["user"].is_string(), "the session's user: {denied}");
    assert_eq!(denied["hash"].as_str().map(str::len), Some(64), "{denied}");

    let out = run_usher(&["log", "export", "--data-dir", data_arg]);
    expect_code(&out, 0, "export as CSV");
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.starts_with("seq,at,time,event,session,lease,feature,"),
        "{csv}"
    );
    assert_eq!(
        csv.lines().count(),
        rows.len() + 1,
        "a header and one line per row"
    );

    let checkout_seq = rows
        .iter()
        .find(|r| r["event"] == "checkout")
        .and_then(|r| r["seq"].as_i64())
        .expect("a checkout row");
    let conn = rusqlite::Connection::open(data.join("usher.db")).expect("opening the store raw");
    let edited = conn
        .execute(
            "UPDATE usage_log SET user = 'somebody-else' WHERE seq = ?1",
            [checkout_seq],
        )
        .expect("editing a row");
    assert_eq!(edited, 1);
    drop(conn);

    let out = run_usher(&["log", "verify", "--data-dir", data_arg]);
    expect_code(&out, 7, "verify of an edited log");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("seq {checkout_seq}")),
        "names seq {checkout_seq}: {text}"
    );
}

#[test]
fn verify_of_a_missing_store_fails_plainly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = run_usher(&["log", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    expect_code(&out, 1, "verify without a store");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no usher store"),
        "{out:?}"
    );
}
