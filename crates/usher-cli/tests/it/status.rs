//! `usher status`: the table for people and the JSON for programs.

use crate::util::{Holder, Licensed, Timings, feature_of, run_usher};

#[test]
fn status_shows_each_feature_and_who_holds_it() {
    let fixture = Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let _holder = Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 1);

    let json = server.status();
    let cad = feature_of(&json, "cad");
    assert_eq!(cad["total"], 2, "{json:#}");
    assert_eq!(cad["in_use"], 1, "{json:#}");
    let holders = cad["holders"].as_array().expect("holders is an array");
    assert_eq!(holders.len(), 1, "{json:#}");
    let holder = &holders[0];
    let handle = holder["handle"].as_str().expect("the handle is a string");
    assert!(
        !handle.is_empty() && handle.bytes().all(|b| b.is_ascii_digit()),
        "handles are decimal digits: {json:#}"
    );
    let user = holder["user"].as_str().expect("user is a string");
    let host = holder["host"].as_str().expect("host is a string");
    assert!(!user.is_empty() && !host.is_empty(), "{json:#}");
    let sim = feature_of(&json, "sim");
    assert_eq!(
        (sim["total"].as_u64(), sim["in_use"].as_u64()),
        (Some(5), Some(0)),
        "{json:#}"
    );

    let table = run_usher(&["status", "-c", &server.spec()]).ok();
    let text = &table.stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("cad v2025 (acme)  1 of 2 seats in use")),
        "{table}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("sim v1.0 (acme)  0 of 5 seats in use")),
        "{table}"
    );
    let row = text
        .lines()
        .find(|l| l.split_whitespace().last() == Some(handle))
        .unwrap_or_else(|| panic!("no holder row ends with handle {handle}\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..2], [user, host], "USER and HOST columns\n{table}");
    assert!(text.contains("USER") && text.contains("HANDLE"), "{table}");
}

#[test]
fn status_of_one_feature_lists_only_that_feature() {
    let fixture = Licensed::start(Timings::SHORT);
    let outcome = run_usher(&["status", "--json", "-c", &fixture.server.spec(), "sim"]).ok();
    let json: serde_json::Value = serde_json::from_str(&outcome.stdout).expect("JSON");
    let names: Vec<&str> = json["features"]
        .as_array()
        .expect("features is an array")
        .iter()
        .filter_map(|f| f["feature"].as_str())
        .collect();
    assert_eq!(names, ["sim"], "{outcome}");
}
