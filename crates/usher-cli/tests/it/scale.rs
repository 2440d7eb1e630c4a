//! `usher status`, `usher status --json` and `lmstat` with more holders than one frame
//! holds: the client reads the status page by page, and the text still parses as FlexLM's.

use std::time::Duration;

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
    let holders = json_holders(&json);
    assert_eq!(holders.len(), HOLDERS, "{json}");
    let mut users: Vec<&str> = holders.iter().filter_map(|h| h["user"].as_str()).collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users.len(), HOLDERS, "each holder once");
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
