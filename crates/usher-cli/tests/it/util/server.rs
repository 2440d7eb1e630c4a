//! A real `usherd` on a loopback port, its timings and its log.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::*;

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

pub(super) fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log at {}: {e})", path.display()))
}
