//! `usher status`, `usher status --json` and `lmstat` with more holders than one frame
//! holds: the client reads the status page by page, and the text still parses as FlexLM's.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lmstat::{USER_LINE, re};
use crate::util::{
    Holder, Outcome, Server, Timings, Vendor, feature_of, output, poll, run_usher, usher,
};

/// Lines of `out` that FlexLM parsers read as holders.
fn user_lines(out: &Outcome) -> usize {
    let user = re(USER_LINE);
    out.stdout.lines().filter(|l| user.is_match(l)).count()
}

/// Every holder in `usher status --json` output.
fn json_holders(out: &Outcome) -> Vec<Value> {
    let status: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON: {e}\n{out}"));
    assert!(
        status.get("holders_not_shown").is_none(),
        "{}",
        status["holders_not_shown"]
    );
    status["features"]
        .as_array()
        .expect("features")
        .iter()
        .flat_map(|f| f["holders"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// `usher status --json` output lists `holders` holders, each user once.
#[track_caller]
fn assert_each_holder_once(json: &Outcome, holders: usize) {
    let listed = json_holders(json);
    assert_eq!(listed.len(), holders, "{json}");
    let mut users: Vec<&str> = listed.iter().filter_map(|h| h["user"].as_str()).collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users.len(), holders, "each holder once");
}

/// A few hundred real `usher run` holders with long user names (together far more than one
/// 64 KiB frame): status, its JSON and lmstat show every one.
#[test]
fn hundreds_of_real_holders_are_shown_whole() {
    const HOLDERS: usize = 300;
    let vendor = Vendor::new("acme");
    let license = vendor.sign(
        "big.lic",
        "FEATURE big acme 1.0 permanent 1000 HOSTID=ANY\nFEATURE other acme 1.0 permanent 5 HOSTID=ANY\n",
    );
    let server = Server::start(&vendor, &license, Timings::LONG);
    let pad = "x".repeat(200);
    let _holders: Vec<Holder> = (0..HOLDERS)
        .map(|n| {
            let user = format!("user{n:03}-{pad}");
            Holder::spawn_as(&server, Some(&user), &[], "big", &["sleep", "600"])
        })
        .collect();
    server.wait_in_use("big", HOLDERS as u64);
    let spec = server.spec();

    let json = run_usher(&["status", "--json", "-c", &spec]).ok();
    assert_each_holder_once(&json, HOLDERS);
    assert!(
        json.stdout.len() > 2 * usher_proto::MAX_FRAME_LEN,
        "more than a frame"
    );

    let table = run_usher(&["status", "-c", &spec]).ok();
    assert_eq!(
        table
            .stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("user"))
            .count(),
        HOLDERS,
        "{table}"
    );
    assert!(!table.stdout.contains("not shown"), "{table}");

    let all = run_usher(&["lmstat", "-a", "-c", &spec]).ok();
    assert_eq!(user_lines(&all), HOLDERS, "{all}");
    assert!(
        all.stdout.lines().any(|l| l
            == format!("Users of big:  (Total of 1000 licenses issued;  Total of {HOLDERS} licenses in use)")),
        "{all}"
    );
    let one = run_usher(&["lmstat", "-f", "big", "-c", &spec]).ok();
    assert_eq!(user_lines(&one), HOLDERS, "{one}");
    let other = run_usher(&["lmstat", "-f", "other", "-c", &spec]).ok();
    assert_eq!(user_lines(&other), 0, "{other}");
}

/// Thousands of real `usher run` processes on this machine, one seat each under short
/// names (user `uNNNN`, this host): status, its JSON and lmstat (`-a` and `-f`, read with
/// the public parsers' user-line pattern) show every one. CI runs 1,000 (each `usher run` costs
/// about 1.7 MiB of memory of its own and 2 threads, see BENCHMARKS.md);
/// [`two_thousand_five_hundred_real_usher_run_holders`] is the full size.
#[test]
fn a_thousand_real_usher_run_holders_are_read_by_lmstat_parsers() {
    many_real_holders(1_000);
}

/// [`a_thousand_real_usher_run_holders_are_read_by_lmstat_parsers`] at 2,500 processes,
/// run by hand (7,500 processes and threads with their `sleep`s; figures in BENCHMARKS.md):
/// `cargo test -p usher-cli --test it -- --ignored two_thousand_five --nocapture`.
#[test]
#[ignore = "2,500 usher run processes: run by hand, see BENCHMARKS.md"]
fn two_thousand_five_hundred_real_usher_run_holders() {
    many_real_holders(2_500);
}

/// Starts holder `n` (user `uNNNN`).
fn spawn_holder(server: &Server, n: usize) -> Holder {
    let user = format!("u{n:04}");
    Holder::spawn_as(server, Some(&user), &[], "big", &["sleep", "900"])
}

/// Waits (polling twice a second: each status read walks every holder) until every one
/// of `spawned` holds its seat of `big`, for at most 300 s. A holder that gave up on the
/// 3 s connect timeout (a loaded machine) is started again, as its user would, and
/// counted in `restarted`; any other exit fails the test.
fn wait_for_holders(server: &Server, spawned: &mut [Holder], restarted: &mut usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let in_use = server
            .try_status()
            .ok()
            .and_then(|s| feature_of(&s, "big")["in_use"].as_u64());
        if in_use == Some(spawned.len() as u64) {
            return;
        }
        for n in 0..spawned.len() {
            if rss_kib(spawned[n].pid()) > 0 {
                continue;
            }
            let said = spawned[n].stderr();
            assert!(
                said.contains("timed out") && Instant::now() < deadline,
                "{in_use:?} of {} seats in use; usher run {n} ended:\n{said}\n\
                 --- usherd log (end) ---\n{}",
                spawned.len(),
                tail(&server.log(), 30)
            );
            spawned[n] = spawn_holder(server, n);
            *restarted += 1;
        }
        assert!(
            Instant::now() < deadline,
            "after 300 s, {in_use:?} of {} seats in use\n--- usherd log (end) ---\n{}",
            spawned.len(),
            tail(&server.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS`), 0 if it is gone.
fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status", "VmRSS:")
}

/// Proportional set size of process `pid` in KiB (its private memory plus its share of
/// pages mapped by others, such as the `usher` binary's text), 0 if it is gone.
fn pss_kib(pid: u32) -> u64 {
    proc_field(pid, "smaps_rollup", "Pss:")
}

/// The number on the `key` line of `/proc/PID/FILE` (in KiB for sizes), 0 if it is gone.
fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Threads of process `pid`, 0 if it is gone.
fn threads(pid: u32) -> u64 {
    proc_field(pid, "status", "Threads:")
}

/// `holders` real `usher run -- sleep 900` processes, then every reader; prints the figures
/// (start time, memory, threads, reader times) to standard error.
fn many_real_holders(holders: usize) {
    let vendor = Vendor::new("acme");
    let seats = holders + 100;
    let license = vendor.sign(
        "big.lic",
        &format!("FEATURE big acme 1.0 permanent {seats} HOSTID=ANY\n"),
    );
    // Heartbeats every 20 s: thousands of holders stay well within the request rate and
    // the machine's CPU. All come from 127.0.0.1, so the per-address cap is raised.
    let timings = Timings {
        heartbeat: "20s",
        session_ttl: "10m",
        reconnect_grace: "10m",
    };
    let cap = (holders + 100).to_string();
    let server = Server::start_with(
        &vendor,
        &license,
        timings,
        &["--max-connections-per-ip", &cap],
    );
    // Started in waves of 100, each in use before the next: thousands at once would be a
    // test of the machine's scheduler, not of the readers.
    let started = Instant::now();
    let mut spawned: Vec<Holder> = Vec::with_capacity(holders);
    let mut restarted = 0;
    while spawned.len() < holders {
        let wave = (holders - spawned.len()).min(100);
        for _ in 0..wave {
            spawned.push(spawn_holder(&server, spawned.len()));
        }
        wait_for_holders(&server, &mut spawned, &mut restarted);
    }
    let spec = server.spec();
    let all_in_use = started.elapsed();
    let holder_rss: Vec<u64> = spawned.iter().map(|h| rss_kib(h.pid())).collect();
    let holder_pss: u64 = spawned.iter().map(|h| pss_kib(h.pid())).sum();
    let holder_threads: u64 = spawned.iter().map(|h| threads(h.pid())).sum();
    let server_rss = rss_kib(server.pid());

    let timed = |args: &[&str]| {
        let t = Instant::now();
        let out = run_usher(args).ok();
        (out, t.elapsed())
    };
    let (json, json_time) = timed(&["status", "--json", "-c", &spec]);
    assert_each_holder_once(&json, holders);
    let (table, table_time) = timed(&["status", "-c", &spec]);
    assert!(!table.stdout.contains("not shown"), "{table}");
    let row = re(r"^\s*u\d{4}\s");
    assert_eq!(
        table.stdout.lines().filter(|l| row.is_match(l)).count(),
        holders,
        "{table}"
    );
    let (all, lmstat_time) = timed(&["lmstat", "-a", "-c", &spec]);
    assert_eq!(user_lines(&all), holders, "{all}");
    assert!(
        all.stdout.lines().any(|l| l
            == format!(
                "Users of big:  (Total of {seats} licenses issued;  Total of {holders} licenses in use)"
            )),
        "{all}"
    );
    let (one, lmstat_f_time) = timed(&["lmstat", "-f", "big", "-c", &spec]);
    assert_eq!(user_lines(&one), holders, "{one}");
    let alive = holder_rss.iter().filter(|&&r| r > 0).count();
    assert_eq!(alive, holders, "every usher run is still running");
    let mean_rss = holder_rss.iter().sum::<u64>() / holders as u64;
    let max_rss = holder_rss.iter().max().copied().unwrap_or(0);
    eprintln!(
        "{holders} usher run holders: all started and in use (in waves of 100; \
         {restarted} restarted after a connect timeout) after {all_in_use:.1?}; usher run RSS mean {mean_rss} KiB, max {max_rss} KiB, \
         PSS mean {} KiB, {:.1} threads each; usherd RSS {server_rss} KiB; status --json {json_time:.2?}, \
         status {table_time:.2?}, lmstat -a {lmstat_time:.2?}, lmstat -f {lmstat_f_time:.2?}",
        holder_pss / holders as u64,
        holder_threads as f64 / holders as f64
    );
}

/// 100,000 holders (leases over a few plaintext connections from this test) on a real
/// usherd: every reader shows them all.
#[test]
fn a_hundred_thousand_holders_are_shown_whole() {
    const CONNECTIONS: u64 = 20;
    const PER: u64 = 5_000;
    let vendor = Vendor::new("acme");
    let license = vendor.sign(
        "big.lic",
        "FEATURE big acme 1.0 permanent 200000 HOSTID=ANY\n",
    );
    let server = Server::start_with(
        &vendor,
        &license,
        Timings::LONG,
        &["--insecure-plaintext", "--max-request-rate", "0"],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let port = server.port;
    let _conns = runtime.block_on(async move {
        let fills: Vec<_> = (0..CONNECTIONS)
            .map(|c| tokio::spawn(hold(port, format!("user{c:02}"), PER)))
            .collect();
        let mut conns = Vec::new();
        for f in fills {
            conns.push(f.await.expect("a filling task"));
        }
        conns
    });
    let total = CONNECTIONS * PER;
    let plain = |args: &[&str]| {
        let mut cmd = usher(args);
        cmd.env("USHER_INSECURE_PLAINTEXT", "true");
        output(cmd).ok()
    };
    let spec = server.spec();
    poll("every seat in use", Duration::from_secs(30), || {
        let out = plain(&["status", "--json", "-c", &spec]);
        let status: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
        match feature_of(&status, "big")["in_use"].as_u64() {
            Some(n) if n == total => Ok(()),
            other => Err(format!("{other:?} in use")),
        }
    });
    let json = plain(&["status", "--json", "-c", &spec]);
    assert_eq!(json_holders(&json).len() as u64, total);
    let table = plain(&["status", "-c", &spec]);
    assert!(!table.stdout.contains("not shown"));
    assert!(table.stdout.lines().count() as u64 > total);
    let all = plain(&["lmstat", "-a", "-c", &spec]);
    assert_eq!(user_lines(&all) as u64, total);
    let one = plain(&["lmstat", "-f", "big", "-c", &spec]);
    assert_eq!(user_lines(&one) as u64, total);
}

/// A plaintext connection whose session holds `count` seats of `big`, one lease each,
/// checked out pipelined (a task writes while this one reads).
async fn hold(port: u16, user: String, count: u64) -> impl Send {
    use usher_proto::{FrameReader, Hello, Request, Response, request, response};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting to usherd");
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd);
    let hello = Hello {
        magic: usher_proto::MAGIC.into(),
        protocol_version: usher_proto::PROTOCOL_VERSION,
        user: user.clone(),
        host: "testhost".into(),
        display: ":0".into(),
        pid: 4242,
        program: "scale".into(),
        ..Hello::default()
    };
    let hello = Request {
        id: 1,
        kind: Some(request::Kind::Hello(hello)),
    };
    usher_proto::write_frame(&mut wr, &hello)
        .await
        .expect("hello");
    let sender = tokio::spawn(async move {
        for n in 0..count {
            let req = Request {
                id: n + 2,
                kind: Some(request::Kind::Checkout(usher_proto::Checkout {
                    feature: "big".into(),
                    count: 1,
                    ..usher_proto::Checkout::default()
                })),
            };
            usher_proto::write_frame(&mut wr, &req)
                .await
                .expect("a checkout");
        }
        wr
    });
    for n in 0..=count {
        let answer = tokio::time::timeout(Duration::from_secs(60), reader.read::<Response>())
            .await
            .expect("an answer within 60 s")
            .expect("a readable answer")
            .expect("usherd keeps the connection");
        match answer.kind {
            Some(response::Kind::Welcome(_)) if n == 0 => {}
            Some(response::Kind::Granted(_)) if n > 0 => {}
            other => panic!("{user}: unexpected answer {other:?}"),
        }
    }
    // Both halves: the session (and its seats) lasts while they are open.
    (reader, sender.await.expect("the sender"))
}
