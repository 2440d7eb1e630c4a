//! `lmstat` end to end: FlexLM's text from a real server, under the names `usher lmstat`,
//! `lmutil lmstat` and `lmstat`, as monitoring tools invoke it.

use std::path::{Path, PathBuf};

use regex::Regex;

use crate::util::{
    Holder, Licensed, Outcome, Timings, command, free_port, output, run_usher, usher_bin,
};

/// The user line of FlexLM's `lmstat -a`, as the parsers in
/// `shared/reference/lmstat-output.md` read it.
pub(crate) const USER_LINE: &str =
    r"^    \S+ \S+ \S+ \(v[\d.]+\) \(\S+/\d+ \d+\), start [A-Z][a-z][a-z] \d+/\d+ \d+:\d\d";

/// A row of `lmstat -i`: feature, version, count, expiry, vendor.
const INFO_ROW: &str = r"^(\S+)\s+([\d.]+)\s+(\d+)\s+(\S+)\s+(\S+)$";

/// FlexLM's note on `lmstat -i`, verbatim.
const INFO_NOTE: &str = "NOTE: lmstat -i does not give information from the server, but only \
                         reads the license file.  For this reason, lmstat -a is recommended \
                         instead.";

pub(crate) fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad regex {pattern}: {e}"))
}

/// A line of `out` equal to `line`, or a panic showing the output.
#[track_caller]
fn assert_line(out: &Outcome, line: &str) {
    assert!(
        out.stdout.lines().any(|l| l == line),
        "no line {line:?}\n{out}"
    );
}

/// The output without its `Flexible License Manager status on ...` line, whose minute may
/// change between two runs.
fn without_date(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("Flexible License Manager status on "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `usher` linked as `name` in a fresh directory.
fn linked_as(dir: &Path, name: &str) -> PathBuf {
    let link = dir.join(name);
    std::os::unix::fs::symlink(usher_bin(), &link).expect("symlinking usher");
    link
}

#[test]
fn lmstat_prints_flexlm_text_for_a_real_server() {
    let fixture = Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let spec = server.spec();
    let _holder = Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 1);

    // -a: the whole report.
    let all = run_usher(&["lmstat", "-a", "-c", &spec]).ok();
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert!(lines.len() > 3, "{all}");
    assert!(lines[0].starts_with("lmstat - Copyright (c) "), "{all}");
    assert!(
        re(r"^Flexible License Manager status on [A-Z][a-z][a-z] \d+/\d+/\d{4} \d+:\d\d$")
            .is_match(lines[1]),
        "{all}"
    );
    assert_eq!(lines[2], "", "{all}");
    assert_line(&all, &format!("License server status: {spec}"));
    assert_line(
        &all,
        "Users of cad:  (Total of 2 licenses issued;  Total of 1 license in use)",
    );
    assert_line(
        &all,
        "Users of sim:  (Total of 5 licenses issued;  Total of 0 licenses in use)",
    );
    assert_line(&all, "Feature usage info:");
    assert!(
        re(r"^\S+: license server UP \(MASTER\) v[\d.]+$").is_match(
            lines
                .iter()
                .find(|l| l.contains("license server UP"))
                .unwrap_or(&"")
        ),
        "{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| re(r"^\s+acme: UP v[\d.]+$").is_match(l)),
        "{all}"
    );
    let user_line = re(USER_LINE);
    let users: Vec<&&str> = lines.iter().filter(|l| user_line.is_match(l)).collect();
    assert_eq!(users.len(), 1, "one user line\n{all}");
    let json = server.status();
    let handle = crate::util::feature_of(&json, "cad")["holders"][0]["handle"]
        .as_str()
        .expect("a handle")
        .to_owned();
    assert!(
        users[0].contains(&format!("/{} {handle}), start ", server.port)),
        "the user line shows the server port and the handle of usher status ({handle})\n{all}"
    );

    // -f FEATURE: only that feature.
    let one = run_usher(&["lmstat", "-c", &spec, "-f", "cad"]).ok();
    assert_line(
        &one,
        "Users of cad:  (Total of 2 licenses issued;  Total of 1 license in use)",
    );
    assert!(one.stdout.lines().any(|l| user_line.is_match(l)), "{one}");
    assert!(!one.stdout.contains("Users of sim"), "{one}");

    // -i: the license table.
    let info = run_usher(&["lmstat", "-i", "-c", &spec]).ok();
    assert_line(&info, INFO_NOTE);
    let row = re(INFO_ROW);
    let rows: Vec<Vec<String>> = info
        .stdout
        .lines()
        .filter_map(|l| row.captures(l))
        .map(|c| {
            c.iter()
                .skip(1)
                .map(|m| m.unwrap().as_str().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        rows,
        [
            ["cad", "2025", "2", "permanent", "acme"],
            ["sim", "1.0", "5", "31-dec-2099", "acme"],
        ],
        "{info}"
    );

    // -v: needs no server.
    let version = run_usher(&["lmstat", "-v"]).ok();
    assert!(
        version
            .stdout
            .lines()
            .any(|l| re(r"^lmstat v[\d.]+ build \d+ \w+").is_match(l)),
        "{version}"
    );
}

#[test]
fn lmstat_reports_an_unreachable_server_and_fails() {
    let spec = format!("{}@127.0.0.1", free_port());
    let down = run_usher(&["lmstat", "-a", "-c", &spec]);
    assert_ne!(down.code, Some(0), "{down}");
    assert_line(&down, &format!("License server status: {spec}"));
    assert!(
        down.stdout
            .lines()
            .any(|l| l.starts_with("Error getting status: Cannot connect to license server")),
        "{down}"
    );
}

#[test]
fn lmstat_answers_as_lmutil_and_as_lmstat() {
    let fixture = Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let spec = server.spec();
    let _holder = Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 1);
    let links = tempfile::tempdir().unwrap();

    let usher = run_usher(&["lmstat", "-a", "-c", &spec]).ok();
    let lmutil = output({
        let mut cmd = command(&linked_as(links.path(), "lmutil"));
        cmd.args(["lmstat", "-a", "-c", &spec]);
        cmd
    })
    .ok();
    let lmstat = output({
        let mut cmd = command(&linked_as(links.path(), "lmstat"));
        cmd.args(["-a", "-c", &spec]);
        cmd
    })
    .ok();
    assert!(usher.stdout.contains("Users of cad:  "), "{usher}");
    assert_eq!(
        without_date(&lmutil.stdout),
        without_date(&usher.stdout),
        "lmutil lmstat differs from usher lmstat\n{lmutil}\n{usher}"
    );
    assert_eq!(
        without_date(&lmstat.stdout),
        without_date(&usher.stdout),
        "lmstat differs from usher lmstat\n{lmstat}\n{usher}"
    );

    // `usher -c SPEC lmstat -a`: the global option names the server as well.
    let global = run_usher(&["-c", &spec, "lmstat", "-a"]).ok();
    assert_eq!(
        without_date(&global.stdout),
        without_date(&usher.stdout),
        "{global}"
    );

    // Without -c, USHER_LICENSE names the server, under every name.
    let from_env = output({
        let mut cmd = command(usher_bin());
        cmd.args(["lmstat", "-a"]).env("USHER_LICENSE", &spec);
        cmd
    })
    .ok();
    assert_eq!(
        without_date(&from_env.stdout),
        without_date(&usher.stdout),
        "{from_env}"
    );
    let lmstat_env = output({
        let mut cmd = command(&links.path().join("lmstat"));
        cmd.arg("-a").env("USHER_LICENSE", &spec);
        cmd
    })
    .ok();
    assert_eq!(
        without_date(&lmstat_env.stdout),
        without_date(&usher.stdout),
        "{lmstat_env}"
    );
}

/// A server that shows seat counts only to anyone shows holders to whoever presents its
/// admin token (`USHER_ADMIN_TOKEN_FILE` for lmstat's FlexLM command line,
/// `--admin-token-file` for usher's), so monitoring that scrapes `lmstat -a` keeps its
/// user lines without making them public; a wrong token fails loudly.
#[test]
fn lmstat_shows_holders_to_the_admin_token_only() {
    let vendor = crate::util::Vendor::new("acme");
    let license = vendor.sign("cad.lic", crate::util::TWO_CAD_SEATS);
    let server = crate::util::Server::start_private(&vendor, &license, Timings::SHORT);
    let spec = server.spec();
    let _holder = Holder::spawn(&server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 1);
    let user_line = re(USER_LINE);
    let user_lines = |out: &Outcome| out.stdout.lines().filter(|l| user_line.is_match(l)).count();

    let anonymous = run_usher(&["lmstat", "-a", "-c", &spec]).ok();
    assert_line(
        &anonymous,
        "Users of cad:  (Total of 2 licenses issued;  Total of 1 license in use)",
    );
    assert_eq!(user_lines(&anonymous), 0, "nobody's name\n{anonymous}");

    let token = server.admin_token_file();
    let mut cmd = crate::util::usher(&["lmstat", "-a", "-c", &spec]);
    cmd.env("USHER_ADMIN_TOKEN_FILE", &token);
    let admin = output(cmd).ok();
    assert_eq!(user_lines(&admin), 1, "the holder's line\n{admin}");

    let token_arg = token.to_str().unwrap();
    let status = run_usher(&[
        "status",
        "--json",
        "-c",
        &spec,
        "--admin-token-file",
        token_arg,
    ])
    .ok();
    assert!(status.stdout.contains("\"holders\""), "{status}");
    assert!(
        status.stdout.contains("\"sleep\""),
        "the holder's program\n{status}"
    );

    let wrong = server.scratch.path().join("wrong-token");
    std::fs::write(&wrong, "0".repeat(64)).unwrap();
    let mut cmd = crate::util::usher(&["lmstat", "-a", "-c", &spec]);
    cmd.env("USHER_ADMIN_TOKEN_FILE", &wrong);
    let refused = output(cmd).expect_code(1);
    assert!(
        refused.stderr.contains("does not match"),
        "the reason is given\n{refused}"
    );
    let missing = run_usher(&[
        "status",
        "-c",
        &spec,
        "--admin-token-file",
        "/nonexistent/token",
    ])
    .expect_code(2);
    assert!(missing.stderr.contains("/nonexistent/token"), "{missing}");
}
