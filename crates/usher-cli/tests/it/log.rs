//! `usher log` end to end: a real `usherd` writes the usage log, `usher run` takes a seat
//! and is refused another, then `usher log verify` and `usher log export` read the file,
//! and an edit made with plain SQL is caught.

use crate::util::{Server, run_usher};

#[test]
fn verify_passes_then_catches_an_edited_row() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path();
    let data_arg = data.to_str().expect("UTF-8 temp path");
    let mut server = Server::demo(data);
    let c = server.spec();
    run_usher(&["-c", &c, "run", "cad", "--", "true"]).ok();
    run_usher(&["-c", &c, "run", "no-such-feature", "--", "true"]).expect_code(5);
    server.shutdown();

    let out = run_usher(&["log", "verify", "--data-dir", data_arg]).ok();
    assert!(
        out.stdout.starts_with("ok: ") && out.stdout.contains("records, chain intact"),
        "{out}"
    );

    let out = run_usher(&["log", "export", "--data-dir", data_arg, "--format", "jsonl"]).ok();
    let rows: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let events: Vec<&str> = rows.iter().filter_map(|r| r["event"].as_str()).collect();
    for event in [
        "server_start",
        "session_open",
        "checkout",
        "checkin",
        "denied",
        "server_stop",
    ] {
        assert!(events.contains(&event), "no {event} in {events:?}");
    }
    let denied = rows
        .iter()
        .find(|r| r["event"] == "denied")
        .expect("a denied row");
    assert_eq!(denied["feature"], "no-such-feature", "{denied}");
    assert_eq!(denied["detail"], "unknown_feature", "{denied}");
    assert!(denied["user"].is_string(), "the session's user: {denied}");
    assert_eq!(denied["hash"].as_str().map(str::len), Some(64), "{denied}");

    let out = run_usher(&["log", "export", "--data-dir", data_arg]).ok();
    let csv = &out.stdout;
    assert!(
        csv.starts_with("seq,at,time,event,session,lease,feature,"),
        "{csv}"
    );
    assert_eq!(
        csv.lines().count(),
        rows.len() + 1,
        "a header and one line per row"
    );

    let checkout_seq = rows
        .iter()
        .find(|r| r["event"] == "checkout")
        .and_then(|r| r["seq"].as_i64())
        .expect("a checkout row");
    let conn = rusqlite::Connection::open(data.join("usher.db")).expect("opening the store raw");
    let edited = conn
        .execute(
            "UPDATE usage_log SET user = 'somebody-else' WHERE seq = ?1",
            [checkout_seq],
        )
        .expect("editing a row");
    assert_eq!(edited, 1);
    drop(conn);

    let out = run_usher(&["log", "verify", "--data-dir", data_arg]).expect_code(7);
    assert!(
        out.stdout.contains(&format!("seq {checkout_seq}")),
        "names seq {checkout_seq}: {out}"
    );
}

#[test]
fn verify_of_a_missing_store_fails_plainly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = run_usher(&["log", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    let out = out.expect_code(1);
    assert!(out.stderr.contains("no usher store"), "{out}");
}

/// A lease has one handle everywhere: `usher status` and the usage log export show the
/// same decimal text (ids from 10 up, where decimal and hexadecimal differ).
#[test]
fn the_log_export_names_a_lease_by_the_handle_status_shows() {
    let fixture = crate::util::Licensed::start(crate::util::Timings::LONG);
    let server = &fixture.server;
    let c = server.spec();
    for _ in 0..12 {
        run_usher(&["-c", &c, "run", "cad", "--", "true"]).ok();
    }
    let _holder = crate::util::Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 1);
    let status = server.status();
    let handle = crate::util::feature_of(&status, "cad")["holders"][0]["handle"]
        .as_str()
        .expect("a handle")
        .to_owned();
    assert!(handle.parse::<u64>().expect("decimal") >= 10, "{handle}");
    let data_dir = server.admin_token_file();
    let data_dir = data_dir.parent().and_then(|d| d.parent()).unwrap();
    let out = run_usher(&[
        "log",
        "export",
        "--format",
        "jsonl",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
    .ok();
    let last_checkout = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|r| r["event"] == "checkout")
        .expect("a checkout row");
    assert_eq!(last_checkout["lease"], handle.as_str(), "{last_checkout}");
}
