//! The `usher` commands against a live server: vendor tooling, `usher run` and its exit
//! codes, seats coming back after `kill -9` and `SIGSTOP` of a holder, status, and lmstat
//! (also as `lmutil` and `lmstat`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Short timings, so that lapsed sessions can be observed quickly.
const FAST: &[&str] = &[
    "--session-ttl",
    "2s",
    "--heartbeat-interval",
    "200ms",
    "--reconnect-grace",
    "500ms",
];

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn status_json(c: &str) -> serde_json::Value {
    let out = run_usher(&["-c", c, "status", "--json"]);
    expect_code(&out, 0, "usher status --json");
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

fn in_use(c: &str, feature: &str) -> u64 {
    status_json(c)["features"]
        .as_array()
        .expect("features")
        .iter()
        .filter(|f| f["feature"] == feature)
        .map(|f| f["in_use"].as_u64().expect("in_use"))
        .sum()
}

/// Polls until `in_use(feature) == want`, for at most `WAIT`.
#[track_caller]
fn wait_in_use(c: &str, feature: &str, want: u64, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        if in_use(c, feature) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: in_use({feature}) never became {want}; status:\n{}",
            text(&run_usher(&["-c", c, "status"]))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `usher run FEATURE -- sleep 60`, holding a seat until killed.
struct Holder(Child);

impl Holder {
    fn start(c: &str, feature: &str) -> Holder {
        let child = Command::new(usher())
            .args(["-c", c, "run", feature, "--", "sleep", "60"])
            .env_remove("USHER_LICENSE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("usher run starts");
        Holder(child)
    }

    fn signal(&self, sig: &str) {
        let pid = self.0.id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill {sig} {pid}");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn vendor_keygen_sign_and_check() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let keys_arg = keys.to_str().unwrap();
    expect_code(
        &run_usher(&["vendor", "keygen", "--vendor", "acme", "--out", keys_arg]),
        0,
        "keygen",
    );
    let mode = std::fs::metadata(keys.join("acme.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "secret key mode {mode:o}");
    assert!(keys.join("acme.pub").is_file());

    let lic = dir.path().join("acme.lic");
    std::fs::write(
        &lic,
        "# two features\nFEATURE cad acme 2025 permanent 3 HOSTID=ANY\nFEATURE sim acme 1.0 permanent 5\n",
    )
    .unwrap();
    let (key, public, lic_arg) = (
        keys.join("acme.key"),
        keys.join("acme.pub"),
        lic.to_str().unwrap().to_string(),
    );
    let out = run_usher(&[
        "vendor",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--in",
        &lic_arg,
        "--out",
        &lic_arg,
    ]);
    expect_code(&out, 0, "sign");
    assert!(text(&out).contains("signed 2"), "{}", text(&out));

    let public_arg = public.to_str().unwrap().to_string();
    let check = || run_usher(&["license", "check", &lic_arg, "--vendor-key", &public_arg]);
    let out = check();
    expect_code(&out, 0, "check of a freshly signed file");
    assert!(
        text(&out).contains("cad") && text(&out).contains("2 ok, 0 bad"),
        "{}",
        text(&out)
    );

    // Raise a count after signing: that entitlement (line 2) is bad, the other stays ok.
    let signed = std::fs::read_to_string(&lic).unwrap();
    std::fs::write(&lic, signed.replacen("permanent 3", "permanent 30", 1)).unwrap();
    let out = check();
    expect_code(&out, 6, "check of a tampered file");
    assert!(
        text(&out).contains("line 2") && text(&out).contains("1 ok, 1 bad"),
        "{}",
        text(&out)
    );

    // A syntax error names file, line and column.
    std::fs::write(&lic, "FEATURE cad acme 2025 sometime 3\n").unwrap();
    let out = check();
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("acme.lic:1:23"), "{}", text(&out));

    let out = run_usher(&["hostid"]);
    expect_code(&out, 0, "hostid");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .all(|l| l.contains('='))
    );
}

#[test]
fn run_holds_a_seat_and_refusals_have_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.license();
    let holders: Vec<Holder> = (0..3).map(|_| Holder::start(&c, "cad")).collect();
    wait_in_use(&c, "cad", 3, "three holders");

    let out = run_usher(&["-c", &c, "run", "cad", "--", "true"]);
    expect_code(&out, 4, "a fourth run while all seats are in use");
    let msg = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        msg.contains("all 3 seats") && msg.lines().count() == 1,
        "{msg}"
    );
    expect_code(
        &run_usher(&["-c", &c, "run", "nope", "--", "true"]),
        5,
        "unknown feature",
    );
    expect_code(
        &run_usher(&["-c", &c, "run", "cad", "--version", "2030", "--", "true"]),
        5,
        "version too new",
    );
    expect_code(
        &run_usher(&["-c", "1@127.0.0.1", "run", "cad", "--", "true"]),
        3,
        "no server",
    );

    drop(holders);
    wait_in_use(&c, "cad", 0, "holders gone");
    expect_code(
        &run_usher(&["-c", &c, "run", "sim", "--", "sh", "-c", "exit 7"]),
        7,
        "the command's status",
    );
    // A normal exit frees the seat at once (the goodbye is acknowledged before exit).
    assert_eq!(in_use(&c, "sim"), 0);
    server.stop();
}

#[test]
fn seats_come_back_after_kill_9_and_after_a_holder_goes_silent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), FAST);
    let c = server.license();

    let crashed = Holder::start(&c, "cad");
    wait_in_use(&c, "cad", 1, "the holder's seat");
    let mut crashed = crashed;
    crashed.0.kill().unwrap(); // SIGKILL: the OS closes its socket without a goodbye
    crashed.0.wait().unwrap();
    wait_in_use(
        &c,
        "cad",
        0,
        "the killed holder's seat comes back after the grace",
    );

    let silent = Holder::start(&c, "cad");
    wait_in_use(&c, "cad", 1, "the second holder's seat");
    silent.signal("-STOP"); // no FIN, no heartbeats: like a host cut off the network
    wait_in_use(
        &c,
        "cad",
        0,
        "the silent holder's seat comes back after the TTL",
    );
    silent.signal("-CONT");
    drop(silent);
    server.stop();
}

/// The two date lines differ between runs a minute apart; compare the rest.
fn without_dates(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("Flexible License Manager status on"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn lmstat_against_a_live_server_and_under_its_flexlm_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.license();
    let _holder = Holder::start(&c, "cad");
    wait_in_use(&c, "cad", 1, "one holder");

    let out = run_usher(&["lmstat", "-a", "-c", &c]);
    expect_code(&out, 0, "lmstat -a");
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        all.contains(&format!("License server status: {c}")),
        "{all}"
    );
    assert!(
        all.contains("Users of cad:  (Total of 3 licenses issued;  Total of 1 license in use)"),
        "{all}"
    );
    let user_line = regex::Regex::new(
        r"(?m)^    \S+ \S+ \S+ \(v[\d.]+\) \(\S+/\d+ \d+\), start [A-Z][a-z][a-z] \d+/\d+ \d+:\d\d",
    )
    .unwrap();
    assert!(user_line.is_match(&all), "{all}");

    // `-c` first: the global `usher -c` takes it, and lmstat uses it all the same.
    let out = run_usher(&["lmstat", "-c", &c, "-f", "cad"]);
    let one = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        one.contains("Users of cad:") && !one.contains("Users of sim:"),
        "{one}"
    );

    let out = run_usher(&["lmstat", "-c", &c, "-i"]);
    let info = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        info.contains("NOTE: lmstat -i does not give information from the server"),
        "{info}"
    );
    let row = regex::Regex::new(r"(?m)^cad\s+([\d.]+)\s+(\d+)\s+(\S+)\s+(\S+)$").unwrap();
    assert!(row.is_match(&info), "{info}");

    let out = run_usher(&["lmstat", "-v"]);
    let version = regex::Regex::new(r"(?m)^lmstat v[\d.]+ build \d+ \w+").unwrap();
    assert!(version.is_match(&String::from_utf8_lossy(&out.stdout)));

    // The same binary under FlexLM's names, and USHER_LICENSE instead of -c.
    let bin = tempfile::tempdir().unwrap();
    for name in ["lmutil", "lmstat"] {
        std::os::unix::fs::symlink(usher(), bin.path().join(name)).unwrap();
    }
    let run_as = |name: &str, args: &[&str]| {
        Command::new(bin.path().join(name))
            .args(args)
            .env_remove("USHER_LICENSE")
            .output()
            .unwrap()
    };
    let lmutil = run_as("lmutil", &["lmstat", "-a", "-c", &c]);
    let lmstat = run_as("lmstat", &["-a", "-c", &c]);
    expect_code(&lmutil, 0, "lmutil lmstat -a");
    expect_code(&lmstat, 0, "lmstat -a");
    for other in [&lmutil, &lmstat] {
        assert_eq!(
            without_dates(&String::from_utf8_lossy(&other.stdout)),
            without_dates(&all)
        );
    }
    let via_env = Command::new(usher())
        .args(["lmstat", "-a"])
        .env("USHER_LICENSE", &c)
        .output()
        .unwrap();
    assert_eq!(
        without_dates(&String::from_utf8_lossy(&via_env.stdout)),
        without_dates(&all)
    );

    // Unreachable: FlexLM's error line and a non-zero exit, as monitoring tools expect.
    let down = run_as("lmstat", &["-a", "-c", "1@127.0.0.1"]);
    assert_ne!(down.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&down.stdout)
            .contains("Error getting status: Cannot connect to license server"),
        "{}",
        text(&down)
    );
    server.stop();
}

#[test]
fn status_shows_holders_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.license();
    let _holder = Holder::start(&c, "sim");
    wait_in_use(&c, "sim", 1, "one holder");
    let out = run_usher(&["-c", &c, "status"]);
    expect_code(&out, 0, "status");
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("sim") && table.contains("HANDLE") && table.contains("1 of 10"),
        "{table}"
    );
    let json = status_json(&c);
    let sim = json["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "sim")
        .unwrap();
    assert_eq!(
        sim["holders"][0]["handle"].as_str().map(|h| !h.is_empty()),
        Some(true),
        "{json}"
    );
    server.stop();
}

#[test]
fn the_demo_reuses_its_key_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.license();
    let report = status_json(&c);
    let names: Vec<&str> = report["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["feature"].as_str())
        .collect();
    assert!(names.contains(&"cad") && names.contains(&"sim"), "{report}");
    server.stop();
    let public = Path::new(dir.path()).join("demo").join("demo.pub");
    let before = std::fs::read(&public).unwrap();
    let again = Server::start(dir.path());
    assert_eq!(
        std::fs::read(&public).unwrap(),
        before,
        "the demo key is reused"
    );
    again.stop();
}
