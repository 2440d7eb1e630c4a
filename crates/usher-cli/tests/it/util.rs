//! Finding the binaries, starting `usherd`, running `usher`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest wait for the server to start or stop.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn usher() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_usher"))
}

/// `usherd` sits next to `usher` once the workspace is built; build it if it is not.
pub fn usherd() -> PathBuf {
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
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// Starts the demo server with extra `usherd` arguments (e.g. shorter timings).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
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
            .args(extra)
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
    pub fn license(&self) -> String {
        let (host, port) = self.addr.rsplit_once(':').expect("host:port");
        format!("{port}@{host}")
    }

    pub fn stop(mut self) {
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

pub fn run_usher(args: &[&str]) -> Output {
    Command::new(usher())
        .args(args)
        .env_remove("USHER_LICENSE")
        .env_remove("USHERD_DATA_DIR")
        .output()
        .expect("running usher")
}

#[track_caller]
pub fn expect_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
