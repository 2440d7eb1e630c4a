//! The table's layout (columns, seat notes, hidden and left-out holders, cells that
//! cannot break lines) and the JSON's documented shape, on hand-built reports.

use chrono::{FixedOffset, NaiveDate};

use serde_json::{Value, json};
use usher_client::status::{FeatureStatus, Holder, QueueEntry, StatusReport};

use super::*;

fn tz() -> FixedOffset {
    FixedOffset::east_opt(2 * 3600).unwrap()
}

/// Milliseconds since the epoch of a UTC time.
fn utc_ms(y: i32, m: u32, d: u32, h: u32, min: u32) -> u64 {
    let t = NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, min, 0)
        .unwrap();
    u64::try_from(t.and_utc().timestamp_millis()).unwrap()
}

fn holder(user: &str, display: &str, pid: u32, count: u32, lease_id: u64) -> Holder {
    build!(Holder {
        user: user.into(),
        host: "ws1".into(),
        display: display.into(),
        pid,
        program: "cadtool".into(),
        version: "2025".into(),
        since_ms: utc_ms(2026, 3, 1, 7, 39),
        count,
        lease_id,
        session_id: 7,
        connected: true,
        detached: false,
        overdraft: false,
        lingering_until_ms: 0,
        borrowed_until_ms: 0,
        token_for: String::new(),
    })
}

fn report() -> StatusReport {
    build!(StatusReport {
        server_name: "lic1".into(),
        server_version: "0.1.0".into(),
        port: 1648,
        queue: vec![],
        holders_total: 0,
        queue_total: 0,
        truncated: false,
        token_features: vec![],
        features: vec![
            build!(FeatureStatus {
                feature: "cad".into(),
                vendor: "demo".into(),
                version: "2025".into(),
                // Valid through 2027-12-31.
                expires_at_ms: utc_ms(2028, 1, 1, 0, 0),
                total: 3,
                in_use: 3,
                holders: vec![
                    holder("alice", "/dev/pts/0", 4242, 1, 7),
                    holder("bartholomew", "", 0, 2, 18446744073709551615),
                ],
            }),
            build!(FeatureStatus {
                feature: "sim".into(),
                vendor: "demo".into(),
                version: "1.0".into(),
                expires_at_ms: 0,
                total: 1,
                in_use: 0,
                holders: vec![],
            }),
        ],
        started_at_ms: utc_ms(2026, 3, 1, 6, 0),
        license_files: vec!["/etc/usher/a.lic".into()],
        vendors: vec!["demo".into()],
        now_ms: utc_ms(2026, 3, 1, 8, 0),
    })
}

#[test]
fn table_aligns_columns_to_their_content() {
    let expected = "\
server lic1:1648  usher 0.1.0  up since 2026-03-01 08:00

cad v2025 (demo)  3 of 3 seats in use  expires 2027-12-31
  USER         HOST  DISPLAY      PID  VERSION  SINCE             SEATS  HANDLE
  alice        ws1   /dev/pts/0  4242  2025     2026-03-01 09:39      1  7
  bartholomew  ws1   -              -  2025     2026-03-01 09:39      2  18446744073709551615

sim v1.0 (demo)  0 of 1 seat in use  permanent
  (no holders)
";
    assert_eq!(render_table(&report(), &tz()), expected);
}

#[test]
fn queue_is_listed_after_the_pools_in_table_and_json() {
    let mut r = report();
    r.queue = vec![build!(QueueEntry {
        feature: "cad".into(),
        version: "2025".into(),
        count: 1,
        position: 1,
        user: "dave".into(),
        host: "ws9".into(),
        since_ms: utc_ms(2026, 3, 1, 9, 50),
        lease_id: 4100,
    })];
    let text = render_table(&r, &tz());
    let tail = "\nwaiting for seats\n  FEATURE  POS  USER  HOST  DISPLAY  SEATS  SINCE             \
                    GIVES UP\n  cad        1  dave  ws9   -            1  2026-03-01 11:50  never\n";
    assert!(text.ends_with(tail), "{text}");
    let json = render_json(&r);
    assert_eq!(json["queue"][0]["user"], "dave");
    assert_eq!(json["queue"][0]["handle"], "4100");
    assert_eq!(json["queue"][0]["gives_up"], Value::Null);
}

/// A report holding less than the whole status (a server's one-frame reply to a client
/// that does not page) says how much it leaves out; a whole one says nothing.
#[test]
fn holders_left_out_are_counted_in_table_and_json() {
    let whole = report();
    assert!(!render_table(&whole, &tz()).contains("not shown"));
    assert!(render_json(&whole).get("holders_not_shown").is_none());
    let mut cut = report();
    cut.holders_total = 1_002;
    cut.queue_total = 5;
    let text = render_table(&cut, &tz());
    assert!(
        text.ends_with("\n1000 more holders not shown\n\n5 more queued requests not shown\n"),
        "{text}"
    );
    let json = render_json(&cut);
    assert_eq!(json["holders_not_shown"], 1_000);
    assert_eq!(json["queue_not_shown"], 5);
}

/// The SEATS cell says how a holder is linked, and what else is special about its seats.
#[test]
fn seats_show_detached_disconnected_and_combined_notes() {
    let tz = tz();
    let plain = holder("alice", "", 1, 2, 7);
    let detached = build!(Holder {
        detached: true,
        ..plain.clone()
    });
    let dropped = build!(Holder {
        connected: false,
        overdraft: true,
        ..plain.clone()
    });
    let lingering = build!(Holder {
        connected: false,
        lingering_until_ms: utc_ms(2026, 3, 1, 8, 5),
        token_for: "suite".into(),
        ..plain.clone()
    });
    assert_eq!(seats_cell(&plain, &tz), "2");
    assert_eq!(seats_cell(&detached, &tz), "2 (detached)");
    assert_eq!(seats_cell(&dropped, &tz), "2 (disconnected, overdraft)");
    assert_eq!(
        seats_cell(&lingering, &tz),
        "2 (tokens for suite, linger to 2026-03-01 10:05:00)",
        "a lingering seat has no holder to be linked"
    );
}

#[test]
fn a_long_seats_note_keeps_every_number_in_its_column() {
    let mut r = report();
    r.features[0].holders[0].detached = true;
    r.features[0].holders[1].count = 12;
    let text = render_table(&r, &tz());
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("2026-03-01 09:39"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let end_of_number = |line: &str| {
        let at = line.find("09:39").unwrap() + 5;
        let rest = &line[at..];
        let first_digit = rest.find(|c: char| c.is_ascii_digit()).unwrap();
        at + first_digit
            + rest[first_digit..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap()
    };
    assert_eq!(end_of_number(lines[0]), end_of_number(lines[1]), "{text}");
    assert!(lines[0].contains(" 1 (detached)"), "{text}");
}

#[test]
fn seats_in_use_without_holders_say_the_holders_are_hidden() {
    let mut r = report();
    r.features[0].holders.clear();
    let text = render_table(&r, &tz());
    assert!(
        text.contains(
            "3 of 3 seats in use  expires 2027-12-31\n  (holders hidden: status_detail is totals)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("0 of 1 seat in use  permanent\n  (no holders)\n"),
        "{text}"
    );
}

#[test]
fn table_of_an_empty_server_says_so() {
    let mut r = report();
    r.features.clear();
    r.started_at_ms = 0;
    assert_eq!(
        render_table(&r, &tz()),
        "server lic1:1648  usher 0.1.0\n\n(no features)\n"
    );
}

#[test]
fn table_cells_cannot_break_lines() {
    let mut r = report();
    r.features[0].holders[0].user = "eve\nsim v9 (demo)".into();
    let out = render_table(&r, &tz());
    assert!(out.contains("  eve?sim v9 (demo)  "), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("sim v")).count(),
        1,
        "{out}"
    );
}

#[test]
fn json_has_the_documented_shape() {
    let expected = json!({
        "server": {
            "name": "lic1",
            "version": "0.1.0",
            "port": 1648,
            "started_at": "2026-03-01T06:00:00Z",
            "now": "2026-03-01T08:00:00Z",
            "license_files": ["/etc/usher/a.lic"],
            "vendors": ["demo"],
        },
        "features": [
            {
                "feature": "cad",
                "vendor": "demo",
                "version": "2025",
                "expires": "2027-12-31",
                "expired": null,
                "starts": null,
                "licensed": null,
                "total": 3,
                "in_use": 3,
                "holders": [
                    {
                        "user": "alice", "host": "ws1", "display": "/dev/pts/0",
                        "pid": 4242, "program": "cadtool", "version": "2025",
                        "since": "2026-03-01T07:39:00Z", "count": 1, "handle": "7",
                        "connected": true,
                        "detached": false,
                        "overdraft": false,
                        "lingering_until": null,
                        "borrowed_until": null,
                        "token_for": null,
                    },
                    {
                        "user": "bartholomew", "host": "ws1", "display": "",
                        "pid": 0, "program": "cadtool", "version": "2025",
                        "since": "2026-03-01T07:39:00Z", "count": 2,
                        "handle": "18446744073709551615", "connected": true,
                        "detached": false,
                        "overdraft": false,
                        "lingering_until": null,
                        "borrowed_until": null,
                        "token_for": null,
                    },
                ],
            },
            {
                "feature": "sim",
                "vendor": "demo",
                "version": "1.0",
                "expires": null,
                "expired": null,
                "starts": null,
                "licensed": null,
                "total": 1,
                "in_use": 0,
                "holders": [],
            },
        ],
        "queue": [],
        "token_features": [],
    });
    assert_eq!(render_json(&report()), expected);
}

#[test]
fn json_handles_are_the_text_lmstat_shows() {
    let json = render_json(&report());
    let handle = &json["features"][0]["holders"][1]["handle"];
    assert_eq!(
        crate::show::parse_handle(handle.as_str().unwrap()),
        Some(u64::MAX)
    );
    let mut r = report();
    r.started_at_ms = 0;
    assert_eq!(render_json(&r)["server"]["started_at"], Value::Null);
}
