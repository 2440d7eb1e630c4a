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

/// A line that expired and one that starts later are shown as such, with their dates and
/// seats, in `usher status` (text and JSON) and in `usher lmstat -i` (as FlexLM, which
/// reads the file: the count and expiry of the lines), not as `0 of 0 seats ... permanent`.
#[test]
fn expired_and_not_yet_started_lines_show_their_dates() {
    use crate::util::{Server, Vendor};
    let vendor = Vendor::new("acme");
    let license = vendor.sign(
        "dates.lic",
        "FEATURE old acme 1.0 31-jan-2020 5\n\
         FEATURE new acme 2.0 31-dec-2099 3 START=1-jan-2099\n\
         FEATURE cad acme 2025 permanent 2\n",
    );
    let server = Server::start(&vendor, &license, Timings::LONG);
    let spec = server.spec();

    let text = run_usher(&["status", "-c", &spec]).ok().stdout;
    assert!(
        text.contains("old v1.0 (acme)  0 of 0 seats in use  expired 2020-01-31 (5 seats)"),
        "{text}"
    );
    assert!(
        text.contains(
            "new v2.0 (acme)  0 of 0 seats in use  starts 2099-01-01 (3 seats, expires 2099-12-31)"
        ),
        "{text}"
    );
    assert!(
        text.contains("cad v2025 (acme)  0 of 2 seats in use  permanent"),
        "{text}"
    );

    let json = server.status();
    let old = feature_of(&json, "old");
    assert_eq!(old["expired"], "2020-01-31", "{json:#}");
    assert_eq!(old["expires"], "2020-01-31", "{json:#}");
    assert_eq!(old["licensed"], 5, "{json:#}");
    assert_eq!(old["starts"], serde_json::Value::Null, "{json:#}");
    let new = feature_of(&json, "new");
    assert_eq!(new["starts"], "2099-01-01", "{json:#}");
    assert_eq!(new["expires"], "2099-12-31", "{json:#}");
    assert_eq!(new["licensed"], 3, "{json:#}");
    assert_eq!(new["expired"], serde_json::Value::Null, "{json:#}");

    let info = run_usher(&["lmstat", "-i", "-c", &spec]).ok().stdout;
    let row = regex::Regex::new(r"^(\S+)\s+([\d.]+)\s+(\d+)\s+([\w-]+)\s+(\w+)$").unwrap();
    let rows: Vec<_> = info
        .lines()
        .filter_map(|l| row.captures(l))
        .map(|c| (c[1].to_string(), c[3].to_string(), c[4].to_string()))
        .collect();
    for (feature, count, expiry) in [
        ("old", "5", "31-jan-2020"),
        ("new", "3", "31-dec-2099"),
        ("cad", "2", "permanent"),
    ] {
        assert!(
            rows.contains(&(feature.into(), count.into(), expiry.into())),
            "{feature} {count} {expiry} not in\n{info}"
        );
    }
}

/// A token-based feature (`count` = `token`) is shown by name, with the pool it draws from
/// and what a seat costs, in `usher status` (text, JSON, and asked for by name), and a
/// refusal names it and its pool with the pool's figures in tokens.
#[test]
fn a_token_based_feature_is_shown_with_its_pool_and_price() {
    use crate::util::{Server, Vendor};
    let vendor = Vendor::new("acme");
    let license = vendor.sign(
        "tokens.lic",
        "FEATURE tokens acme 1 permanent 10\n\
         FEATURE solver acme 1 permanent token TOKEN=\"<tokens 1 4>\"\n",
    );
    let server = Server::start(&vendor, &license, Timings::LONG);
    let spec = server.spec();
    let _first = Holder::spawn(&server, "solver", &["sleep", "60"]);
    server.wait_in_use("tokens", 4);
    let _second = Holder::spawn(&server, "solver", &["sleep", "60"]);
    server.wait_in_use("tokens", 8);

    let text = run_usher(&["status", "-c", &spec]).ok().stdout;
    assert!(
        text.contains("tokens v1 (acme)  8 of 10 seats in use  permanent"),
        "{text}"
    );
    assert!(
        text.contains(
            "solver v1 (acme)  2 seats in use (8 tokens)  a seat costs 4 tokens of \"tokens\" v1  permanent"
        ),
        "{text}"
    );

    let by_name = run_usher(&["status", "-c", &spec, "solver"]).ok().stdout;
    assert!(!by_name.contains("(no features)"), "{by_name}");
    assert!(
        by_name.contains("solver v1 (acme)  2 seats in use"),
        "{by_name}"
    );
    assert!(by_name.contains("tokens v1 (acme)  8 of 10"), "{by_name}");

    let json = server.status();
    let solver = json["token_features"]
        .as_array()
        .and_then(|t| t.iter().find(|f| f["feature"] == "solver"))
        .unwrap_or_else(|| panic!("no token feature solver: {json:#}"));
    assert_eq!(
        (&solver["in_use"], &solver["tokens_in_use"]),
        (&serde_json::json!(2), &serde_json::json!(8)),
        "{json:#}"
    );
    assert_eq!(
        solver["costs"],
        serde_json::json!([{ "pool": "tokens", "version": "1", "tokens": 4 }]),
        "{json:#}"
    );

    let lmstat = run_usher(&["lmstat", "-a", "-c", &spec]).ok().stdout;
    for line in [
        "Users of tokens:  (Total of 10 licenses issued;  Total of 8 licenses in use)",
        "Users of solver:  (Total of 2 licenses issued;  Total of 2 licenses in use)",
        "  token license: 4 tokens of \"tokens\" per license",
    ] {
        assert!(
            lmstat.lines().any(|l| l == line),
            "{line:?} not in\n{lmstat}"
        );
    }
    let solver_block = lmstat.split("Users of solver:").nth(1).unwrap_or_default();
    let users = solver_block
        .lines()
        .filter(|l| l.starts_with("    ") && l.contains(", start "))
        .collect::<Vec<_>>();
    assert_eq!(users.len(), 2, "one user line per checkout\n{lmstat}");
    assert!(
        users.iter().all(|l| !l.contains("licenses")),
        "each holds one license of solver\n{lmstat}"
    );

    // lmstat -i: a row for it, counting what the pool's tokens pay for.
    let info = run_usher(&["lmstat", "-i", "-c", &spec]).ok().stdout;
    let row = crate::lmstat::re(r"^solver\s+1\s+2\s+permanent\s+acme$");
    assert!(info.lines().any(|l| row.is_match(l)), "{info}");

    let refused = run_usher(&["run", "-c", &spec, "solver", "--", "true"]).expect_code(4);
    assert!(
        refused
            .stderr
            .contains("\"solver\" costs 4 tokens of pool \"tokens\"; 8 of 10 tokens in use"),
        "{refused}"
    );
}
