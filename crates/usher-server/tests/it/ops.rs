//! What an administrator sees of a real `usherd` process: its log (no colour in a file,
//! JSON lines, journal priorities), `usherd check`, SIGHUP reloads and the systemd notify
//! protocol.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Licensed, status_of};

/// A `usherd` process with its standard error in a file.
struct Usherd {
    child: Child,
    log: PathBuf,
}

impl Drop for Usherd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `usherd` serving `lic` on a loopback port the kernel picks, with `extra` arguments.
fn usherd(lic: &Licensed, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_usherd"));
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .arg("--data-dir")
        .arg(lic.data_dir())
        .arg("--license")
        .arg(&lic.license)
        .arg("--vendor-key")
        .arg(&lic.public)
        .args(["--insecure-plaintext", "--status-detail", "full"])
        .args(extra)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

impl Usherd {
    fn spawn(mut cmd: Command, log: PathBuf) -> Usherd {
        let child = cmd
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("usherd starts");
        Usherd { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `needle` in the log (at most 30 s) and returns the log.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("usherd exited ({status}) before logging {needle:?}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "usherd did not log {needle:?} within 30 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client port, from the `serving` line of a text log.
    fn port(&mut self) -> u16 {
        let text = self.wait_for("serving");
        let line = text.lines().find(|l| l.contains("serving")).unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        addr.parse::<std::net::SocketAddr>().unwrap().port()
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "usherd did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn seats(report: &usher_client::StatusReport, feature: &str) -> u32 {
    report
        .features
        .iter()
        .find(|f| f.feature == feature)
        .map(|f| f.total)
        .unwrap_or_else(|| panic!("no {feature} in {report:?}"))
}

#[test]
fn a_log_in_a_file_has_no_colour_and_json_lines_parse() {
    let lic = Licensed::new("FEATURE cad acme 2025 permanent 3 HOSTID=ANY\n");
    let mut text = Usherd::spawn(usherd(&lic, &[]), lic.tmp.path().join("text.log"));
    let log = text.wait_for("serving");
    text.stop();
    assert!(!log.contains('\x1b'), "escape codes in a log file:\n{log}");
    assert!(log.contains(" INFO "), "{log}");

    let mut json = Usherd::spawn(
        usherd(&lic, &["--log-format", "json"]),
        lic.tmp.path().join("json.log"),
    );
    json.wait_for("\"serving\"");
    json.stop();
    let log = std::fs::read_to_string(lic.tmp.path().join("json.log")).unwrap();
    let mut serving = None;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "no {key:?} in {line}");
        }
        if v["message"] == "serving" {
            serving = Some(v);
        }
    }
    let serving = serving.unwrap_or_else(|| panic!("no serving line:\n{log}"));
    assert_eq!(serving["level"], "INFO");
    assert!(
        serving["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "event fields are top-level: {serving}"
    );
}

#[test]
fn under_the_journal_each_line_carries_its_priority() {
    use std::os::unix::fs::MetadataExt;
    // An expired line, so there is a warning as well as information.
    let lic = Licensed::new(
        "FEATURE cad acme 2025 permanent 3 HOSTID=ANY\n\
         FEATURE old acme 1 2020-01-01 2 HOSTID=ANY\n",
    );
    let path = lic.tmp.path().join("journal.log");
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let mut cmd = usherd(&lic, &[]);
    // systemd names the stream it gave the service; here, the log file is that stream.
    cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(file);
    let child = cmd.spawn().unwrap();
    let mut server = Usherd { child, log: path };
    let log = server.wait_for("serving");
    server.stop();
    for line in log.lines() {
        assert!(
            line.starts_with("<6>") || line.starts_with("<4>") || line.starts_with("<3>"),
            "a line without a priority: {line:?}\n{log}"
        );
        assert!(!line.contains('\x1b'), "{line:?}");
    }
    let warning = log.lines().find(|l| l.contains("expired")).unwrap();
    assert!(warning.starts_with("<4>"), "{warning}");
    assert!(
        warning.contains("ask the vendor"),
        "a warning says what to do: {warning}"
    );
    // journald adds its own timestamp: the line starts with the level.
    assert!(
        log.lines().any(|l| l.starts_with("<6> INFO")),
        "no timestamp under journald:\n{log}"
    );
}

fn check(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .arg("check")
        .args(args)
        .env_remove("USHERD_CONFIG")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn write_config(dir: &Path, lic: &Licensed, extra: &str) -> PathBuf {
    let config = dir.join("usherd.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nlicense_files = [{:?}]\n\
             vendor_keys = [{:?}]\n{extra}",
            lic.data_dir(),
            lic.license,
            lic.public
        ),
    )
    .unwrap();
    config
}

#[test]
fn check_reports_what_would_be_served_and_every_located_problem() {
    let lic = Licensed::new(
        "FEATURE cad acme 2025 permanent 3 HOSTID=ANY\n\
         FEATURE old acme 1 2020-01-01 2 HOSTID=ANY\n",
    );
    let config = write_config(lic.tmp.path(), &lic, "");
    let (code, out) = check(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("serving: acme cad 2025 3 seat(s), permanent"),
        "{out}"
    );
    assert!(out.contains("acme.lic:"), "{out}");
    assert!(out.contains("warning:") && out.contains("expired"), "{out}");
    assert!(
        !lic.data_dir().exists(),
        "a check creates nothing in the data directory"
    );

    // A line whose signature does not match: refused, located, non-zero.
    let signed = std::fs::read_to_string(&lic.license).unwrap();
    std::fs::write(&lic.license, signed.replace(" 3 HOSTID", " 30 HOSTID")).unwrap();
    let (code, out) = check(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(code, 1, "{out}");
    let located = out
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{out}"));
    let name = lic.license.display().to_string();
    assert!(
        located.contains(&format!("{name}:")) && located.contains(":1: feature \"cad\""),
        "file:line:column: {located}"
    );

    // A syntax error in the license file: file, line and column.
    std::fs::write(&lic.license, "FEATURE cad acme 2025 permanent many\n").unwrap();
    let (code, out) = check(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{name}:1:")), "{out}");

    // A policy mistake, located too.
    lic.write("FEATURE cad acme 2025 permanent 3 HOSTID=ANY\n");
    let policy = lic.tmp.path().join("usher.opt");
    std::fs::write(&policy, "MAX 2 cad USER bob\nFROBNICATE cad\n").unwrap();
    let config = write_config(lic.tmp.path(), &lic, "policy_file = \"usher.opt\"\n");
    let (code, out) = check(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("usher.opt:2:"), "{out}");

    // A config file mistake: its line and column.
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nsession_tll = \"2m\"\n").unwrap();
    let (code, out) = check(&["--config".as_ref(), config.as_os_str()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("line 2, column 1"), "{out}");
    assert!(!lic.data_dir().exists(), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_like_usher_reload() {
    let lic = Licensed::new("FEATURE cad acme 2025 permanent 3 HOSTID=ANY\n");
    let mut server = Usherd::spawn(usherd(&lic, &[]), lic.tmp.path().join("hup.log"));
    let port = server.port();
    assert_eq!(seats(&status_of(port).await, "cad"), 3);

    // The new file also has a line that expired: SIGHUP has no one to answer, so the
    // warning, with what to do, goes to the log.
    lic.write(
        "FEATURE cad acme 2025 permanent 5 HOSTID=ANY\n\
         FEATURE old acme 1 01-jan-2020 2 HOSTID=ANY\n",
    );
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while seats(&status_of(port).await, "cad") != 5 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.wait_for("licenses reloaded");
    server.wait_for("entitlement not usable today");
    assert!(
        server
            .log_text()
            .contains("ask the vendor for a renewed line"),
        "{}",
        server.log_text()
    );
    assert!(
        server.log_text().contains("by=\"SIGHUP\""),
        "{}",
        server.log_text()
    );

    // A broken file: the reload is refused, the server keeps serving what it had.
    std::fs::write(&lic.license, "FEATURE cad acme 2025 permanent many\n").unwrap();
    server.signal("HUP");
    server.wait_for("reload refused");
    assert_eq!(seats(&status_of(port).await, "cad"), 5);
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
    server.stop();
}

#[test]
fn systemd_hears_ready_and_the_watchdog_from_the_ledger() {
    let lic = Licensed::new("FEATURE cad acme 2025 permanent 3 HOSTID=ANY\n");
    let socket_path = lic.tmp.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // systemd names the watched process in WATCHDOG_PID; a shell that `exec`s usherd
    // knows the pid usherd will have.
    let inner = usherd(&lic, &[]);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_remove("JOURNAL_STREAM")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut server = Usherd::spawn(cmd, lic.tmp.path().join("notify.log"));
    let mut heard = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while !(heard.iter().any(|m: &String| m.contains("READY=1"))
        && heard.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        assert!(
            Instant::now() < deadline,
            "heard only {heard:?}\n{}",
            server.log_text()
        );
        if let Ok(n) = socket.recv(&mut buf) {
            heard.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    // Readiness comes once the port listens: by then the server answers.
    let ready = heard.iter().position(|m| m.contains("READY=1")).unwrap();
    let addr = heard[ready]
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=serving on "))
        .unwrap_or_else(|| panic!("{heard:?}"));
    std::net::TcpStream::connect(addr).expect("the port listens once READY=1 is sent");
    server.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no STOPPING=1 after SIGTERM");
    }
    while server.child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_license_directory_serves_every_lic_file_in_it_and_a_reload_finds_new_ones() {
    let lic = Licensed::new("FEATURE cad acme 2025 permanent 3 HOSTID=ANY\n");
    // The license path becomes a directory holding the license (and a file that is not one).
    let dir = lic.license.clone();
    let aside = lic.tmp.path().join("cad.lic");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::rename(&aside, dir.join("cad.lic")).unwrap();
    std::fs::write(dir.join("README"), "not a license").unwrap();
    let cmd = usherd(&lic, &[]);
    let mut server = Usherd::spawn(cmd, lic.tmp.path().join("dir.log"));
    let port = server.port();
    assert_eq!(seats(&status_of(port).await, "cad"), 3);

    let key = usher_license::VendorSigningKey::read_from(&lic.key).unwrap();
    let signed = usher_license::sign_text(
        "sim.lic",
        "FEATURE sim acme 1.0 permanent 2 HOSTID=ANY\n",
        &key,
    )
    .unwrap();
    std::fs::write(dir.join("sim.lic"), signed.text).unwrap();
    server.signal("HUP");
    server.wait_for("licenses reloaded");
    let report = status_of(port).await;
    assert_eq!(seats(&report, "sim"), 2, "{report:?}");
    assert_eq!(seats(&report, "cad"), 3, "{report:?}");
    server.stop();
}

/// A line signed by a tool that does not judge attribute values reaches the server: each
/// refused value is logged at start, reported by `usherd check` and by a reload, at the
/// value's file, line and column, with how the line is served instead; the line serves.
#[tokio::test(flavor = "multi_thread")]
async fn bad_attribute_values_are_located_at_load_and_the_line_is_served_without_them() {
    let lic = Licensed::new("FEATURE cad acme 2025 permanent 3 HOSTID=ANY\n");
    lic.write_signed_unchecked(
        "FEATURE cad acme 2025 permanent 3 HOSTID=ANY OVERDRAFT=lots LINGER=abc \
         DUP_GROUP=XYZ BORROW=99999 LINGRE=60\n",
    );
    let name = lic.license.display().to_string();
    let expected = [
        format!("{name}:1:56: OVERDRAFT=\"lots\" is not a number of seats"),
        format!("{name}:1:68: LINGER=\"abc\" is not a number of seconds"),
        format!("{name}:1:82: DUP_GROUP=\"XYZ\" is not NONE, SITE"),
        format!("{name}:1:93: BORROW=\"99999\" is not a number of hours from 1 to 8784"),
        format!("{name}:1:99: unknown attribute LINGRE"),
    ];
    let config = write_config(lic.tmp.path(), &lic, "");
    let (code, out) = check(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(code, 0, "warnings only: {out}");
    for e in &expected {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("warning: {e}"))),
            "usherd check: expected {e:?}\n{out}"
        );
    }
    assert!(out.contains("served with no overdraft"), "{out}");
    assert!(out.contains("its seats cannot be borrowed"), "{out}");

    let mut server = Usherd::spawn(usherd(&lic, &[]), lic.tmp.path().join("attrs.log"));
    let port = server.port();
    assert_eq!(seats(&status_of(port).await, "cad"), 3, "the line serves");
    let log = server.wait_for("LINGRE");
    for e in &expected {
        assert!(log.contains(e.as_str()), "start: expected {e:?}\n{log}");
    }
}
