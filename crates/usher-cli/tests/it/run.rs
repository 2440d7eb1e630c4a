//! `usher run`: holds a seat while a command runs; exit codes tell why it could not.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::util::{Holder, Licensed, Timings, WAIT, free_port, poll, run_usher};

#[test]
fn run_holds_seats_and_its_exit_code_says_why_it_could_not() {
    let fixture = Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let spec = server.spec();

    let first = Holder::spawn(server, "cad", &["sleep", "30"]);
    let _second = Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 2);

    let busy = run_usher(&["run", "-c", &spec, "cad", "--", "true"]).expect_code(4);
    let reason = busy.stderr.trim_end();
    assert_eq!(reason.lines().count(), 1, "one line of reason\n{busy}");
    assert!(reason.contains("all 2 seats"), "{busy}");

    run_usher(&["run", "-c", &spec, "nosuchfeature", "--", "true"]).expect_code(5);
    run_usher(&["run", "-c", &spec, "--version", "2030", "cad", "--", "true"]).expect_code(5);

    // With a seat free again, the command runs and its exit status becomes usher's.
    drop(first);
    server.wait_in_use("cad", 1);
    run_usher(&["run", "-c", &spec, "cad", "--", "sh", "-c", "exit 7"]).expect_code(7);
    server.wait_in_use("cad", 1);
}

#[test]
fn run_exits_3_when_no_server_answers() {
    let spec = format!("{}@127.0.0.1", free_port());
    let once = [
        "run",
        "-c",
        &spec,
        "--connect-deadline",
        "0",
        "cad",
        "--",
        "true",
    ];
    let outcome = run_usher(&once).expect_code(3);
    assert!(
        !outcome.stderr.trim().is_empty() && !outcome.stderr.contains("gave up after"),
        "a reason is printed, after one attempt\n{outcome}"
    );
    run_usher(&[
        "run",
        "-c",
        "1@127.0.0.1",
        "--connect-deadline",
        "0",
        "cad",
        "--",
        "true",
    ])
    .expect_code(3);
    // With a deadline, usher keeps trying until it passes, then says so.
    let retried = [
        "run",
        "-c",
        &spec,
        "--connect-deadline",
        "1",
        "cad",
        "--",
        "true",
    ];
    let outcome = run_usher(&retried).expect_code(3);
    assert!(
        outcome.stderr.contains("gave up after")
            && outcome.stderr.contains("--connect-deadline is 1 s"),
        "{outcome}"
    );
}

/// A wrapper started before its server (a batch system starting jobs while the server
/// restarts) keeps trying, and gets its seat once the server is up.
#[test]
fn run_started_before_the_server_keeps_trying_and_gets_its_seat() {
    let relay = Relay::start();
    let spec = format!("{}@127.0.0.1", relay.port);
    // A deadline well past what starting a server takes on a loaded machine.
    let mut run = crate::util::usher(&[
        "run",
        "-c",
        &spec,
        "--connect-deadline",
        "120",
        "cad",
        "--",
        "sh",
        "-c",
        "echo $USHER_LEASE",
    ]);
    run.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = run.spawn().expect("usher run starts");
    // The server is not up: every attempt is turned away, and usher tries again.
    poll("usher run to try again", WAIT, || {
        let refused = relay.refused.load(Ordering::SeqCst);
        (refused >= 2)
            .then_some(())
            .ok_or(format!("{refused} attempts"))
    });
    let fixture = Licensed::start(Timings::LONG);
    relay.forward_to(fixture.server.port);
    let out = run.wait_with_output().expect("usher run ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lease = String::from_utf8_lossy(&out.stdout);
    assert!(
        lease.trim().parse::<u64>().is_ok(),
        "the command ran holding a seat: {lease:?}\n{stderr}"
    );
}

/// A loopback port standing in for a server that is not up yet: it turns every
/// connection away (accepts and closes it) until [`Relay::forward_to`] names the real
/// server, then relays every connection to it. The port is the relay's for the whole
/// test, so no other process can take it between the two phases.
struct Relay {
    port: u16,
    refused: Arc<AtomicUsize>,
    upstream: Arc<Mutex<Option<u16>>>,
}

impl Relay {
    fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().unwrap().port();
        let refused = Arc::new(AtomicUsize::new(0));
        let upstream = Arc::new(Mutex::new(None::<u16>));
        let (counted, target) = (refused.clone(), upstream.clone());
        // Lives until the test process ends, blocked in accept once the test is done.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                match *target.lock().unwrap() {
                    None => {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(port) => relay(client, port),
                }
            }
        });
        Relay {
            port,
            refused,
            upstream,
        }
    }

    fn forward_to(&self, port: u16) {
        *self.upstream.lock().unwrap() = Some(port);
    }
}

/// Copies bytes both ways between `client` and the server on `port`, until either ends.
fn relay(client: TcpStream, port: u16) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
    pipe(server, client);
}

#[test]
fn run_reports_a_command_killed_by_a_signal_as_128_plus_n_and_frees_the_seat() {
    // Sessions outlive the test: only usher's own check-in can free the seat in time.
    let fixture = Licensed::start(Timings::LONG);
    let server = &fixture.server;
    let spec = server.spec();
    // 128 + 9, as a shell reports a command killed by SIGKILL.
    run_usher(&["run", "-c", &spec, "cad", "--", "sh", "-c", "kill -9 $$"]).expect_code(137);
    server.wait_in_use("cad", 0);
}

#[test]
fn run_frees_the_seat_of_a_command_that_cannot_be_started() {
    // Sessions outlive the test: only usher's own check-in can free the seat in time.
    let fixture = Licensed::start(Timings::LONG);
    let server = &fixture.server;
    let spec = server.spec();
    // The race is between usher's exit and its client task sending the check-in, so one
    // attempt often passes: try a few.
    for _ in 0..20 {
        let missing = run_usher(&["run", "-c", &spec, "cad", "--", "/nonexistent/usher-test"]);
        let missing = missing.expect_code(1);
        assert!(
            missing.stderr.contains("/nonexistent/usher-test"),
            "{missing}"
        );
        server.wait_in_use("cad", 0);
    }
}

#[test]
fn run_wait_queues_and_runs_the_command_once_a_holder_exits() {
    let fixture = Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let mut first = Holder::spawn(server, "cad", &["sh", "-c", "read x"]);
    let _second = Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 2);

    let mut waiter = Holder::spawn_with(server, &["--wait", "0"], "cad", &["sh", "-c", "exit 3"]);
    let queue = poll("the waiting run to show in status", WAIT, || {
        let status = server.try_status()?;
        match status["queue"].as_array() {
            Some(q) if q.len() == 1 => Ok(q[0].clone()),
            _ => Err(format!("{status:#}")),
        }
    });
    assert_eq!(queue["feature"], "cad", "{queue:#}");
    assert_eq!(queue["position"], 1, "{queue:#}");
    assert_eq!(
        queue["gives_up"],
        Value::Null,
        "waits indefinitely: {queue:#}"
    );
    poll("the waiting run to say so", WAIT, || {
        let said = waiter.stderr();
        if said.contains("waiting in the queue (position 1)") {
            Ok(())
        } else {
            Err(said)
        }
    });
    assert_eq!(
        run_usher(&["status", "-c", &server.spec()])
            .ok()
            .stdout
            .lines()
            .filter(|l| l.contains("waiting for seats"))
            .count(),
        1,
        "the table lists the queue"
    );

    // The first holder's command ends, so usher checks its seat in: the waiter gets it,
    // runs its command and passes on its exit status.
    first.close_stdin();
    assert_eq!(waiter.wait_exit(), Some(3), "{}", waiter.stderr());
    server.wait_in_use("cad", 1);
    assert_eq!(server.status()["queue"], Value::Array(vec![]));
}

#[test]
fn run_wait_gives_up_after_its_seconds_and_exits_4() {
    let fixture = Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let _first = Holder::spawn(server, "cad", &["sleep", "30"]);
    let _second = Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 2);
    let spec = server.spec();
    let gave_up =
        run_usher(&["run", "-c", &spec, "--wait", "1", "cad", "--", "true"]).expect_code(4);
    assert!(gave_up.stderr.contains("within the 1 s"), "{gave_up}");
    assert_eq!(server.status()["queue"], Value::Array(vec![]));
    server.wait_in_use("cad", 2);
}

#[test]
fn run_reads_usher_detach_after_from_the_environment() {
    let fixture = Licensed::start(Timings::LONG);
    let server = &fixture.server;
    let mut cmd = crate::util::usher(&["run", "-c", &server.spec(), "cad", "--", "sleep", "30"]);
    cmd.env("USHER_DETACH_AFTER", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("starting usher run");
    let detached = std::panic::catch_unwind(|| {
        poll("the holder to detach after 1 s", crate::util::WAIT, || {
            let status = server.try_status()?;
            let holders = &crate::util::feature_of(&status, "cad")["holders"];
            match holders.as_array().and_then(|h| h.first()) {
                Some(h) if h["detached"] == Value::Bool(true) => Ok(()),
                _ => Err(serde_json::to_string_pretty(&status).unwrap_or_default()),
            }
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    detached.expect("USHER_DETACH_AFTER=1 detaches `usher run`");
}

#[test]
fn run_refuses_at_once_a_count_the_pool_can_never_hold_and_a_count_of_zero() {
    let fixture = Licensed::start(Timings::LONG);
    let server = &fixture.server;
    let spec = server.spec();
    let _one = Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 1);
    for wait in [None, Some("0")] {
        let mut args = vec!["run", "-c", &spec, "cad", "--count", "3"];
        if let Some(w) = wait {
            args.extend(["--wait", w]);
        }
        args.extend(["--", "true"]);
        let outcome = run_usher(&args).expect_code(5);
        assert!(
            outcome
                .stderr
                .contains("3 seats of \"cad\" asked for, but it has at most 2 seats"),
            "{outcome}"
        );
    }
    let status = server.status();
    assert_eq!(
        status["queue"].as_array().map_or(0, Vec::len),
        0,
        "nothing queued: {status}"
    );
    let zero = run_usher(&["run", "-c", &spec, "cad", "--count", "0", "--", "true"]).expect_code(2);
    assert!(zero.stderr.contains("--count"), "{zero}");
    server.wait_in_use("cad", 1);
}

#[test]
fn run_exports_the_lease_and_forwards_signals_to_the_command() {
    let fixture = Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let spec = server.spec();
    run_usher(&[
        "run",
        "-c",
        &spec,
        "cad",
        "--",
        "sh",
        "-c",
        r#"test "$USHER_FEATURE" = cad && test "$USHER_LEASE" -gt 0"#,
    ])
    .expect_code(0);

    // SIGTERM to usher reaches the command, whose own exit status is usher's. The signal
    // is sent once the command has set its trap (a seat in use says only that usher has
    // started it; a shell killed before its trap exits 143).
    let ready = server.scratch.path().join("trap.ready");
    let script = format!(
        "trap 'exit 7' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut holder = Holder::spawn(server, "cad", &["sh", "-c", &script]);
    server.wait_in_use("cad", 1);
    poll("the command to set its trap", WAIT, || {
        ready.exists().then_some(()).ok_or("not yet".to_string())
    });
    holder.signal("TERM");
    assert_eq!(holder.wait_exit(), Some(7), "{}", holder.stderr());
    server.wait_in_use("cad", 0);
}

#[test]
fn run_takes_the_command_down_with_it() {
    let fixture = Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let pid_file = server.scratch.path().join("command.pid");
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let mut holder = Holder::spawn(server, "cad", &["sh", "-c", &script]);
    let pid: u32 = poll("the command to start", WAIT, || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| "no pid yet".to_string())
    });
    holder.kill_usher();
    // SIGKILL leaves usher no chance to act: the kernel kills the command.
    poll(
        "the command to die with usher",
        WAIT,
        || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => Ok(()),
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                Ok(())
            }
            Ok(stat) => Err(format!("still running: {stat}")),
        },
    );
}

/// A server whose seats an administrator may remove at once (`--min-remove 0s`).
fn removable() -> crate::util::Licensed {
    crate::util::Licensed::start_with(Timings::SHORT, &["--min-remove", "0s"])
}

/// Starts `usher run --on-lost POLICY --grace GRACE cad -- sh -c SCRIPT`, waits until it
/// holds its seat, removes the seat as an administrator, and returns the holder and
/// when the seat was removed.
fn lose_the_seat(
    server: &crate::util::Server,
    policy: &str,
    grace: &str,
    script: &str,
) -> (Holder, std::time::Instant) {
    // The seat is removed once the command has run up to `READY` (after any trap it
    // sets): a shell signalled before its trap is set dies of the signal instead.
    let ready = server.scratch.path().join("command.ready");
    let script = script.replace("READY", &format!("touch {}", ready.display()));
    let holder = Holder::spawn_with(
        server,
        &["--on-lost", policy, "--grace", grace],
        "cad",
        &["sh", "-c", &script],
    );
    server.wait_in_use("cad", 1);
    poll("the command to be ready", WAIT, || {
        ready.exists().then_some(()).ok_or("not yet".to_string())
    });
    let removed_at = std::time::Instant::now();
    server.remove_first_holder("cad");
    server.wait_in_use("cad", 0);
    poll("usher run to report the loss", WAIT, || {
        let said = holder.stderr();
        if said.contains("the license for \"cad\" was lost") {
            Ok(())
        } else {
            Err(said)
        }
    });
    (holder, removed_at)
}

#[test]
fn run_on_lost_warn_lets_the_command_run_on() {
    let fixture = removable();
    let server = &fixture.server;
    let (mut holder, _) = lose_the_seat(server, "warn", "0", "READY; read x; exit 5");
    // Well past the (zero) grace period the command still runs: it ends only when told.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !holder.stderr().contains("stopping"),
        "no signal under warn\n{}",
        holder.stderr()
    );
    holder.close_stdin();
    assert_eq!(holder.wait_exit(), Some(5), "{}", holder.stderr());
}

#[test]
fn run_on_lost_term_sends_sigterm_after_the_grace_period() {
    let fixture = removable();
    let server = &fixture.server;
    let script = "trap 'exit 7' TERM; READY; while :; do sleep 0.05; done";
    let (mut holder, removed_at) = lose_the_seat(server, "term", "1", script);
    // The command's own answer to SIGTERM becomes usher's exit status.
    assert_eq!(holder.wait_exit(), Some(7), "{}", holder.stderr());
    assert!(
        removed_at.elapsed() >= std::time::Duration::from_secs(1),
        "the command had its grace period first\n{}",
        holder.stderr()
    );
    let said = holder.stderr();
    assert!(said.contains("with SIGTERM"), "{said}");
    assert!(!said.contains("with SIGKILL"), "{said}");
}

#[test]
fn run_on_lost_term_escalates_to_sigkill_when_sigterm_is_ignored() {
    let fixture = removable();
    let server = &fixture.server;
    let script = "trap '' TERM; READY; while :; do sleep 0.05; done";
    let (mut holder, removed_at) = lose_the_seat(server, "term", "1", script);
    assert_eq!(holder.wait_exit(), Some(128 + 9), "{}", holder.stderr());
    assert!(
        removed_at.elapsed() >= std::time::Duration::from_secs(2),
        "SIGTERM after one grace period, SIGKILL after another\n{}",
        holder.stderr()
    );
    let said = holder.stderr();
    assert!(
        said.contains("with SIGTERM") && said.contains("with SIGKILL"),
        "{said}"
    );
}

#[test]
fn run_on_lost_kill_sends_sigkill_after_the_grace_period() {
    let fixture = removable();
    let server = &fixture.server;
    let script = "trap 'exit 7' TERM; READY; while :; do sleep 0.05; done";
    let (mut holder, removed_at) = lose_the_seat(server, "kill", "1", script);
    assert_eq!(holder.wait_exit(), Some(128 + 9), "{}", holder.stderr());
    assert!(
        removed_at.elapsed() >= std::time::Duration::from_secs(1),
        "{}",
        holder.stderr()
    );
    let said = holder.stderr();
    assert!(
        said.contains("with SIGKILL") && !said.contains("with SIGTERM"),
        "{said}"
    );
}

#[test]
fn run_with_a_vendor_key_exports_the_signed_grant_which_verifies_with_that_key() {
    let fixture = crate::util::Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let spec = server.spec();
    let key_file = fixture.vendor.public_key();
    let key_arg = key_file.to_str().expect("temporary paths are UTF-8");
    let out = server.scratch.path().join("child.env");
    let script = format!(
        r#"printf '%s\n%s\n' "$USHER_LEASE" "$USHER_FEATURE" > {0}; printf '%s' "$USHER_GRANT" >> {0}"#,
        out.display()
    );
    let args = ["run", "-c", &spec, "--vendor-key", key_arg, "cad", "--"];
    run_usher(&[&args[..], &["sh", "-c", &script]].concat()).ok();

    let seen = std::fs::read_to_string(&out).expect("the command wrote what it was given");
    let mut parts = seen.splitn(3, '\n');
    let lease: u64 = parts
        .next()
        .and_then(|l| l.parse().ok())
        .expect("USHER_LEASE");
    let feature = parts.next().expect("USHER_FEATURE");
    let grant = parts.next().unwrap_or_default();
    let statement = usher_license::SignedStatement::from_text(grant)
        .unwrap_or_else(|e| panic!("USHER_GRANT is a signed statement ({e}):\n{seen}"));
    let keys = [usher_license::VendorPublicKey::read_from(&key_file).expect("the vendor key")];
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64;
    let nonce = statement.statement.nonce.clone();
    let verified = statement
        .verify_grant(&keys, &nonce, lease, feature, 1, now_ms)
        .unwrap_or_else(|e| panic!("the exported grant verifies with the vendor key: {e}"));
    assert_eq!(verified.vendor, "acme");

    // Another vendor's key does not vouch for it.
    let other = crate::util::Vendor::new("acme");
    let other_keys =
        [usher_license::VendorPublicKey::read_from(&other.public_key()).expect("a vendor key")];
    assert!(
        statement
            .verify_grant(&other_keys, &nonce, lease, feature, 1, now_ms)
            .is_err()
    );

    // Without a vendor key nothing was verified, so nothing is exported as verified.
    let script = r#"test -z "${USHER_GRANT+set}""#;
    run_usher(&["run", "-c", &spec, "cad", "--", "sh", "-c", script]).expect_code(0);
}
