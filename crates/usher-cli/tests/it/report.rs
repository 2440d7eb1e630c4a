//! `usher report` on a generated history with known peaks, denials and queueing, written
//! through the store's own API into a real SQLite file, and on a real server's log.

use std::path::Path;

use serde_json::Value;
use usher_core::{LeaseId, SessionId};
use usher_store::{LogEvent, SqliteStore, UsageEvent};

use crate::util::run_usher;

/// 2026-01-01T00:00:00Z.
const DAY0: u64 = 1_767_225_600_000;
const HOUR: u64 = 3_600_000;

fn event(
    kind: UsageEvent,
    lease: u64,
    feature: &str,
    user: &str,
    detail: Option<&str>,
) -> LogEvent {
    LogEvent {
        session: Some(SessionId(lease)),
        lease: Some(LeaseId(lease)),
        feature: Some(feature.into()),
        vendor: Some("acme".into()),
        version: Some("2025".into()),
        count: Some(1),
        user: Some(user.into()),
        host: Some(format!("{user}-ws")),
        display: Some(":0".into()),
        ..LogEvent::server(kind, detail)
    }
}

/// The history (cad has 2 seats, sim 5; times in hours after DAY0):
/// - 1h alice takes cad, 2h bob takes cad (full), 3h carol is refused and queues,
/// - 4h alice checks in and carol is granted, 6h bob checks in, 8h carol checks in;
/// - sim: dave holds 1 seat from 1h to 5h.
fn write_history(data_dir: &Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    let mut store = SqliteStore::open(&data_dir.join("usher.db")).unwrap();
    let at = |h: u64| DAY0 + h * HOUR;
    let batches: Vec<(u64, Vec<LogEvent>)> = vec![
        (
            at(0),
            vec![
                LogEvent::seats("cad", "acme", "2025", 2),
                LogEvent::seats("sim", "acme", "1.0", 5),
            ],
        ),
        (
            at(1),
            vec![
                event(UsageEvent::Checkout, 1, "cad", "alice", None),
                event(UsageEvent::Checkout, 9, "sim", "dave", None),
            ],
        ),
        (
            at(2),
            vec![event(UsageEvent::Checkout, 2, "cad", "bob", None)],
        ),
        (
            at(3),
            vec![
                event(UsageEvent::Denied, 3, "cad", "carol", Some("all_in_use")),
                event(UsageEvent::Queue, 3, "cad", "carol", None),
            ],
        ),
        (
            at(4),
            vec![
                event(UsageEvent::Checkin, 1, "cad", "alice", None),
                event(UsageEvent::Dequeue, 3, "cad", "carol", Some("granted")),
                event(UsageEvent::Checkout, 3, "cad", "carol", None),
            ],
        ),
        (
            at(5),
            vec![event(UsageEvent::Checkin, 9, "sim", "dave", None)],
        ),
        (
            at(6),
            vec![event(UsageEvent::Checkin, 2, "cad", "bob", None)],
        ),
        (
            at(8),
            vec![event(UsageEvent::Checkin, 3, "cad", "carol", None)],
        ),
    ];
    for (t, events) in batches {
        store.commit_batch(t, &[], &events).unwrap();
    }
    drop(store);
}

fn report(data_dir: &Path, extra: &[&str]) -> String {
    let dir = data_dir.to_str().unwrap();
    let mut args = vec![
        "report",
        "--data-dir",
        dir,
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-01T12:00:00Z",
    ];
    args.extend_from_slice(extra);
    run_usher(&args).ok().stdout
}

#[test]
fn the_report_finds_the_known_peaks_denials_and_seat_hours() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_history(&data);

    let json: Value = serde_json::from_str(&report(&data, &["--format", "json"])).unwrap();
    let cad = &json["features"][0];
    assert_eq!(cad["feature"], "cad", "{json:#}");
    let t = &cad["total"];
    assert_eq!(t["seats"], 2, "{t:#}");
    assert_eq!(t["peak"], 2);
    // 11 seat-hours used of 24 available.
    assert!(
        (t["avg_utilisation"].as_f64().unwrap() - 11.0 / 24.0).abs() < 1e-9,
        "{t:#}"
    );
    assert_eq!(t["time_at_full_s"], 4 * 3600, "full from 2h to 6h");
    assert_eq!(t["denials"], 1);
    assert_eq!(t["denials_by_reason"]["all_in_use"], 1);
    assert_eq!(t["queued_s"], 3600);
    assert_eq!(cad["seat_hours_by_user"]["alice"], 3.0);
    assert_eq!(cad["seat_hours_by_user"]["bob"], 4.0);
    assert_eq!(cad["seat_hours_by_user"]["carol"], 4.0);
    assert_eq!(cad["seat_hours_by_host"]["bob-ws"], 4.0);
    assert_eq!(cad["peak_demand"], 3);
    let verdict = cad["verdict"].as_str().unwrap();
    assert!(verdict.contains("consider 1 more seat"), "{verdict}");
    let sim = &json["features"][1];
    assert_eq!(sim["total"]["peak"], 1);
    let verdict = sim["verdict"].as_str().unwrap();
    assert!(verdict.contains("4 seats stayed idle"), "{verdict}");

    // By hour: twelve rows; the 02:00 row was full all hour, the 03:00 one had the refusal.
    let csv = report(
        &data,
        &["--format", "csv", "--by", "hour", "--feature", "cad"],
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "feature,from,to,seats,peak,avg_utilisation,time_at_full_s,denials,queued_s"
    );
    assert_eq!(lines.len(), 13, "{csv}");
    assert_eq!(
        lines[3],
        "cad,2026-01-01T02:00:00Z,2026-01-01T03:00:00Z,2,2,1.0000,3600,0,0"
    );
    assert_eq!(
        lines[4],
        "cad,2026-01-01T03:00:00Z,2026-01-01T04:00:00Z,2,2,1.0000,3600,1,3600"
    );
    assert_eq!(
        lines[9],
        "cad,2026-01-01T08:00:00Z,2026-01-01T09:00:00Z,2,0,0.0000,0,0,0"
    );

    let table = report(&data, &[]);
    assert!(table.contains("cad (2 seats)"), "{table}");
    assert!(
        table.contains("seat-hours by user: bob 4.00, carol 4.00, alice 3.00"),
        "{table}"
    );
    assert!(table.contains("consider 1 more seat"), "{table}");
}

#[test]
fn seats_held_before_the_period_count_and_the_chart_is_well_formed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_history(&data);
    // From 05:00 bob and carol already hold both seats: full from the first instant.
    let svg_path = tmp.path().join("usage.svg");
    let dir = data.to_str().unwrap();
    let svg_arg = svg_path.to_str().unwrap();
    let out = run_usher(&[
        "report",
        "--data-dir",
        dir,
        "--format",
        "json",
        "--feature",
        "cad",
        "--from",
        "2026-01-01T05:00:00Z",
        "--to",
        "2026-01-01T12:00:00Z",
        "--svg",
        svg_arg,
    ]);
    let json: Value = serde_json::from_str(&out.ok().stdout).unwrap();
    let t = &json["features"][0]["total"];
    assert_eq!(t["peak"], 2, "{json:#}");
    assert_eq!(t["time_at_full_s"], 3600, "05:00 to 06:00");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
    let class = |c: &str| {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(c))
            .count()
    };
    assert_eq!(class("feature"), 1);
    assert_eq!(class("in-use"), 1);
    assert_eq!(class("peak"), 1, "the peak is marked");
    assert_eq!(class("seats"), 1, "the seat count is drawn");
    assert_eq!(class("denial"), 0, "the refusal was before the period");
}

#[test]
fn a_period_that_ends_before_it_starts_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_history(&data);
    let dir = data.to_str().unwrap();
    let out = run_usher(&[
        "report",
        "--data-dir",
        dir,
        "--from",
        "2026-01-02",
        "--to",
        "2026-01-01",
    ]);
    out.expect_code(2);
}

#[test]
fn a_real_server_logs_what_the_report_needs() {
    use crate::util::{Holder, Licensed, Timings};
    let mut fixture = Licensed::start(Timings::SHORT);
    let server = &mut fixture.server;
    let data = server.scratch.path().join("data");
    let holder = Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 1);
    drop(holder);
    server.wait_in_use("cad", 0);
    server.shutdown();
    let dir = data.to_str().unwrap();
    let out = run_usher(&[
        "report",
        "--data-dir",
        dir,
        "--format",
        "json",
        "--feature",
        "cad",
    ]);
    let json: Value = serde_json::from_str(&out.ok().stdout).unwrap();
    let t = &json["features"][0]["total"];
    assert_eq!(t["seats"], 2, "the server logged its seat counts: {json:#}");
    assert_eq!(t["peak"], 1, "{json:#}");
}

/// The report reads the log a page (10,000 records) at a time and replays it as it reads:
/// a seat taken on the first page and given back on the second is counted whole, and no
/// record is read twice or skipped at the page boundary.
#[test]
fn a_log_longer_than_a_page_is_replayed_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut store = SqliteStore::open(&data.join("usher.db")).unwrap();
    store
        .commit_batch(
            DAY0,
            &[],
            &[
                LogEvent::seats("cad", "acme", "2025", 2),
                LogEvent::seats("sim", "acme", "1.0", 5),
                event(UsageEvent::Checkout, 1, "cad", "alice", None),
            ],
        )
        .unwrap();
    // 6,000 short sim checkouts (12,000 records), 100 ms each, back to back: each commit
    // gives one back and takes the next.
    let pairs: u64 = 6_000;
    let at = |i: u64| DAY0 + (i + 1) * 100;
    for i in 0..=pairs {
        let mut events = Vec::new();
        if i > 0 {
            events.push(event(UsageEvent::Checkin, 999 + i, "sim", "bot", None));
        }
        if i < pairs {
            events.push(event(UsageEvent::Checkout, 1_000 + i, "sim", "bot", None));
        }
        store.commit_batch(at(i), &[], &events).unwrap();
    }
    store
        .commit_batch(
            DAY0 + 2 * HOUR,
            &[],
            &[event(UsageEvent::Checkin, 1, "cad", "alice", None)],
        )
        .unwrap();
    drop(store);

    let json: Value = serde_json::from_str(&report(&data, &["--format", "json"])).unwrap();
    let cad = &json["features"][0];
    assert_eq!(cad["feature"], "cad", "{json:#}");
    assert_eq!(cad["total"]["peak"], 1);
    assert_eq!(cad["seat_hours_by_user"]["alice"], 2.0, "{cad:#}");
    let sim = &json["features"][1];
    assert_eq!(sim["total"]["peak"], 1, "never two at once: {sim:#}");
    let bot = sim["seat_hours_by_user"]["bot"].as_f64().unwrap();
    let expected = (pairs * 100) as f64 / HOUR as f64;
    assert!((bot - expected).abs() < 1e-6, "{bot} != {expected}");
}

/// `DUP_GROUP=UH`: two `usher run dupapp` of one user on one host share the only seat
/// (status says 1 in use), and the report of the server's own usage log agrees: peak 1,
/// demand 1.
#[test]
fn a_real_server_s_shared_seat_is_reported_once() {
    use crate::util::{Holder, Server, Timings, Vendor, feature_of};
    let vendor = Vendor::new("acme");
    let license = vendor.sign(
        "dup.lic",
        "FEATURE dupapp acme 1.0 permanent 1 DUP_GROUP=UH\n",
    );
    let mut server = Server::start(&vendor, &license, Timings::LONG);
    let first = Holder::spawn(&server, "dupapp", &["sleep", "60"]);
    server.wait_in_use("dupapp", 1);
    let second = Holder::spawn(&server, "dupapp", &["sleep", "60"]);
    crate::util::poll("two holders sharing the seat", crate::util::WAIT, || {
        let status = server.try_status()?;
        let f = feature_of(&status, "dupapp");
        match f["holders"].as_array().map(Vec::len) {
            Some(2) if f["in_use"] == 1 => Ok(()),
            _ => Err(format!("{status:#}")),
        }
    });
    drop((first, second));
    let data_dir = server
        .admin_token_file()
        .parent()
        .and_then(|d| d.parent())
        .expect("the token is in DATA_DIR/admin")
        .to_owned();
    server.shutdown();
    let out = run_usher(&[
        "report",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--format",
        "json",
    ])
    .ok();
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    let dup = &json["features"][0];
    assert_eq!(dup["feature"], "dupapp", "{json:#}");
    assert_eq!(dup["total"]["seats"], 1, "{json:#}");
    assert_eq!(dup["total"]["peak"], 1, "the seat is shared: {json:#}");
    assert_eq!(
        dup["peak_demand"], 1,
        "nobody wanted a second seat: {json:#}"
    );
}
