//! The output checked against the regular expressions of published lmstat parsers, and
//! against FlexLM's exact text (golden tests), with the argument parser's cases.

use chrono::{FixedOffset, NaiveDate};
use regex::Regex;
use usher_client::status::{FeatureStatus, Holder, QueueEntry};

use super::text::flexlm_expiry;
use super::*;
use crate::show::{expiry_date, format_handle, parse_handle};

// Regular expressions of published lmstat parsers, quoted as they use them. The output
// must satisfy all of them at once.

/// licmon-style feature line (shared/reference/lmstat-output.md).
const USERS_OF: &str =
    r"Users of (.*?):  \(Total of (\d+) licenses? issued;  Total of (\d+) licenses? in use\)";
/// An older Go parser that knows only the plural form.
const USERS_OF_GO_PLURAL: &str =
    r"^Users of (\S+):  \(Total of (\d+) licenses issued;  Total of (\d+) licenses in use\)$";
/// The Rust exporter (prometheus license exporter, flexlm.rs).
const RUST_USAGE: &str = r"^Users of ([a-zA-Z0-9_\-+]+):\s+\(Total of (\d+) license[s]? issued;\s+Total of (\d+) license[s]? in use\)$";
const RUST_USER_SINGLE: &str =
    r"^\s+(\w+) [\w.\-_]+\s+[\w/]+\s+\(([\w\-.]+)\).*, start [A-Z][a-z][a-z] \d+/\d+ \d+:\d+$";
const RUST_USER_MULTI: &str = r"^\s+(\w+) [\w.\-_]+\s+[a-zA-Z0-9/]+\s+\(([\w.\-_]+)\)\s+\([\w./\s]+\),\s+start [A-Z][a-z][a-z] \d+/\d+ \d+:\d+,\s+(\d+) licenses$";
/// flexlm_exporter (collector/regexp.go).
const GO_VERSION: &str = r"^lmstat (?P<version>v[\d\.]+) build (?P<build>\d+) (?P<arch>[\w]+)";
const GO_SERVERS: &str = r"^License server status: (?P<servers>[\w,.@\-]+)";
const GO_SERVER_STATUS: &str = r"(?P<fqdn>[\w\.\-]+): license server (?P<status>\w+)(?P<master>\s\(MASTER\))? (?P<version>v[\d\.]+)$";
const GO_VENDOR: &str = r"^\s+(?P<vendor>\w+): (?P<status>UP|DOWN) (?P<version>v[\d\.]+)$";
const GO_USAGE: &str = r"^Users of (?P<name>.*):\s+\(Total of (?P<issued>\d+) \w+ issued\;\s+Total of (?P<used>\d+) \w+ in use\)$";
const GO_USER: &str = r"^\s+(?P<user>[\w[:print:]]+) [\w\-\.]+ [[:print:]]+ (?P<ver>\(v[\w\.]+\)) \([\w\-\.]+\/\d+ \d+\)\, start (?P<since>\w+ \d+\/\d+ \d+\:\d+)(\,\s(?P<licenses>\d+)\s\w+|)(\s+\(linger\:\s\d+\s\/\s\d+\))?(\,\s+PID\:\s+\d+\s?)?$";
const GO_TYPE: &str = r"^\s+(?P<type>floating|uncounted nodelocked|nodelocked) license";
const GO_INFO_ROW: &str = r"^(?P<feature>[[:graph:]]+)\s+(?P<version>[\d\.]+)\s+(?P<licenses>\d+)\s+(?P<expires>[\w\-]+)\s+(?P<vendor>\w+)$";
const GO_SINCE: &str = r"^\w+ (?P<month>\d+)/(?P<day>\d+) (?P<time>\d+:\d+)$";

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad test regex {pattern}: {e}"))
}

/// Asserts that `line` matches `pattern` and returns the captures as strings.
fn captures(pattern: &str, line: &str) -> Vec<String> {
    let caps = re(pattern)
        .captures(line)
        .unwrap_or_else(|| panic!("line {line:?}\ndoes not match {pattern}"));
    caps.iter()
        .map(|m| m.map_or_else(String::new, |m| m.as_str().to_owned()))
        .collect()
}

fn assert_no_match(pattern: &str, line: &str) {
    assert!(
        !re(pattern).is_match(line),
        "line {line:?}\nunexpectedly matches {pattern}"
    );
}

/// Central European summer time, so that local and UTC times differ.
fn tz() -> FixedOffset {
    FixedOffset::east_opt(2 * 3600).unwrap()
}

/// `y-m-d h:min` in [`tz`].
fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<FixedOffset> {
    tz().with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

/// Milliseconds since the epoch of a local time in [`tz`].
fn ms(y: i32, m: u32, d: u32, h: u32, min: u32) -> u64 {
    u64::try_from(local(y, m, d, h, min).timestamp_millis()).unwrap()
}

/// `expires_at_ms` for an entitlement whose last valid day is `y-m-d`.
fn expires_after(y: i32, m: u32, d: u32) -> u64 {
    let next = NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .succ_opt()
        .unwrap();
    u64::try_from(
        next.and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis(),
    )
    .unwrap()
}

#[allow(clippy::too_many_arguments)]
fn holder(
    user: &str,
    host: &str,
    display: &str,
    version: &str,
    since_ms: u64,
    count: u32,
    lease_id: u64,
    pid: u32,
) -> Holder {
    build!(Holder {
        user: user.into(),
        host: host.into(),
        display: display.into(),
        pid,
        program: "cadtool".into(),
        version: version.into(),
        since_ms,
        count,
        lease_id,
        session_id: 99,
        connected: true,
        detached: false,
        overdraft: false,
        lingering_until_ms: 0,
        borrowed_until_ms: 0,
        token_for: String::new(),
    })
}

fn pool(
    feature: &str,
    vendor: &str,
    version: &str,
    expires_at_ms: u64,
    total: u32,
    holders: Vec<Holder>,
) -> FeatureStatus {
    build!(FeatureStatus {
        feature: feature.into(),
        vendor: vendor.into(),
        version: version.into(),
        expires_at_ms,
        total,
        in_use: holders.iter().map(|h| h.count.max(1)).sum(),
        holders,
    })
}

/// Two pools of `cad` (one in use), one `sim` seat in use, and two idle features, one
/// from a second vendor.
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
            pool(
                "cad",
                "demo",
                "2025",
                expires_after(2027, 12, 31),
                3,
                vec![
                    holder(
                        "alice",
                        "ws1",
                        "/dev/pts/0",
                        "2025",
                        ms(2023, 8, 20, 9, 39),
                        2,
                        4001,
                        4242,
                    ),
                    holder("bob", "ws2", "", "", ms(2023, 8, 20, 0, 5), 1, 4002, 77),
                ],
            ),
            pool(
                "sim",
                "demo",
                "1.0",
                0,
                1,
                vec![holder(
                    "carol",
                    "node7",
                    "/dev/tty",
                    "1.0",
                    ms(2023, 8, 19, 23, 59),
                    1,
                    17,
                    0,
                )],
            ),
            pool("cad", "demo", "2024", 0, 2, vec![]),
            pool("viewer", "demo", "3", expires_after(2024, 3, 1), 1, vec![]),
            pool("calc", "acme", "10.5", 0, 10, vec![]),
        ],
        started_at_ms: ms(2023, 8, 1, 8, 0),
        license_files: vec!["/etc/usher/a.lic".into(), "/etc/usher/b.lic".into()],
        vendors: vec!["demo".into(), "acme".into()],
        now_ms: ms(2023, 8, 20, 12, 25),
    })
}

fn args(words: &[&str]) -> LmstatArgs {
    let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
    parse_args(&words).unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

fn status(words: &[&str]) -> String {
    render_status(
        &report(),
        "1648@lic1",
        &args(words),
        local(2023, 8, 20, 12, 25),
        &tz(),
    )
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// The line after the one starting with `prefix`-less search: the first line that
/// starts with `prefix`.
fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?} in\n{text}"))
}

#[test]
fn full_output_of_dash_a_is_flexlm_text() {
    let expected = "\
lmstat - Copyright (c) 2026 The usher authors. All Rights Reserved.
Flexible License Manager status on Sun 8/20/2023 12:25

License server status: 1648@lic1
    License file(s) on lic1: /etc/usher/a.lic:/etc/usher/b.lic:

lic1: license server UP (MASTER) v11.19.0

Vendor daemon status (on lic1):

  demo: UP v11.19.0
  acme: UP v11.19.0
Feature usage info:

Users of cad:  (Total of 5 licenses issued;  Total of 3 licenses in use)

  \"cad\" v2025, vendor: demo, expiry: 31-dec-2027
  floating license

    alice ws1 /dev/pts/0 (v2025) (lic1/1648 4001), start Sun 8/20 9:39, 2 licenses
    bob ws2 ws2 (v2025) (lic1/1648 4002), start Sun 8/20 0:05

Users of sim:  (Total of 1 license issued;  Total of 1 license in use)

  \"sim\" v1.0, vendor: demo, expiry: permanent
  floating license

    carol node7 /dev/tty (v1.0) (lic1/1648 17), start Sat 8/19 23:59

Users of viewer:  (Total of 1 license issued;  Total of 0 licenses in use)

Users of calc:  (Total of 10 licenses issued;  Total of 0 licenses in use)

";
    assert_eq!(status(&["-a"]), expected);
}

#[test]
fn queued_checkouts_follow_the_holders_of_their_feature() {
    let mut r = report();
    r.queue = vec![build!(QueueEntry {
        feature: "cad".into(),
        version: "2025".into(),
        count: 2,
        position: 1,
        user: "dave".into(),
        host: "ws9".into(),
        lease_id: 4100,
    })];
    // A checkout for any version shows the licensed one, never `(v0)`.
    r.queue.push(build!(QueueEntry {
        version: String::new(),
        count: 1,
        position: 2,
        user: "erin".into(),
        host: "ws3".into(),
        lease_id: 4101,
        ..r.queue[0].clone()
    }));
    let out = render_status(
        &r,
        "1648@lic1",
        &args(&["-a"]),
        local(2023, 8, 20, 12, 25),
        &tz(),
    );
    let expected = "    bob ws2 ws2 (v2025) (lic1/1648 4002), start Sun 8/20 0:05

    dave ws9 ws9 (v2025) (lic1/1648 4100) queued for 2 licenses
    erin ws3 ws3 (v2025) (lic1/1648 4101) queued for 1 license

Users of sim:";
    assert!(out.contains(expected), "{out}");
}

#[test]
fn header_names_usher_in_flexlm_form() {
    let out = status(&["-a"]);
    let first = lines(&out)[0];
    assert!(first.starts_with("lmstat - Copyright (c) "), "{first}");
    assert!(first.ends_with(" All Rights Reserved."), "{first}");
    assert!(first.contains("usher"), "{first}");
    assert_eq!(lines(&out)[2], "");
}

#[test]
fn date_line_has_no_leading_zeros_except_minutes() {
    let out = status(&["-a"]);
    assert_eq!(
        lines(&out)[1],
        "Flexible License Manager status on Sun 8/20/2023 12:25"
    );
    let early = render_status(
        &report(),
        "1648@lic1",
        &args(&[]),
        local(2026, 1, 5, 9, 5),
        &tz(),
    );
    assert_eq!(
        lines(&early)[1],
        "Flexible License Manager status on Mon 1/5/2026 9:05"
    );
    let midnight = render_status(
        &report(),
        "1648@lic1",
        &args(&[]),
        local(2026, 12, 31, 0, 0),
        &tz(),
    );
    assert_eq!(
        lines(&midnight)[1],
        "Flexible License Manager status on Thu 12/31/2026 0:00"
    );
}

#[test]
fn server_status_line_keeps_the_port_at_host_spec() {
    let out = status(&["-a"]);
    let line = line_starting(&out, "License server status:");
    assert_eq!(line, "License server status: 1648@lic1");
    assert_eq!(captures(GO_SERVERS, line)[1], "1648@lic1");

    let triad = "1648@a.example,1648@b.example,1648@c-2.example";
    let out = render_status(
        &report(),
        triad,
        &args(&["-a"]),
        local(2023, 8, 20, 12, 25),
        &tz(),
    );
    let line = line_starting(&out, "License server status:");
    assert_eq!(captures(GO_SERVERS, line)[1], triad);

    // No spec: the report's port and host.
    let out = render_status(&report(), "", &args(&[]), local(2023, 8, 20, 12, 25), &tz());
    assert_eq!(
        line_starting(&out, "License server status:"),
        "License server status: 1648@lic1"
    );
}

#[test]
fn license_file_line_lists_files_with_trailing_colon() {
    let out = status(&["-a"]);
    assert_eq!(
        lines(&out)[4],
        "    License file(s) on lic1: /etc/usher/a.lic:/etc/usher/b.lic:"
    );
}

#[test]
fn server_up_line_matches_flexlm_exporter() {
    let out = status(&["-a"]);
    let line = line_starting(&out, "lic1: license server");
    assert_eq!(line, "lic1: license server UP (MASTER) v11.19.0");
    let caps = captures(GO_SERVER_STATUS, line);
    assert_eq!(
        (caps[1].as_str(), caps[2].as_str(), caps[4].as_str()),
        ("lic1", "UP", "v11.19.0")
    );
    assert_eq!(caps[3], " (MASTER)");
}

#[test]
fn vendor_lines_match_flexlm_exporter() {
    let out = status(&["-a"]);
    assert!(out.contains("\nVendor daemon status (on lic1):\n\n  demo: UP v11.19.0\n"));
    let caps = captures(GO_VENDOR, "  demo: UP v11.19.0");
    assert_eq!(
        (caps[1].as_str(), caps[2].as_str(), caps[3].as_str()),
        ("demo", "UP", "v11.19.0")
    );
    captures(GO_VENDOR, "  acme: UP v11.19.0");

    // Without a vendor list, the pools' vendors stand in.
    let mut r = report();
    r.vendors.clear();
    let out = render_status(
        &r,
        "1648@lic1",
        &args(&[]),
        local(2023, 8, 20, 12, 25),
        &tz(),
    );
    assert!(
        out.ends_with("  demo: UP v11.19.0\n  acme: UP v11.19.0\n"),
        "{out}"
    );
}

#[test]
fn users_of_line_plural_matches_every_parser() {
    let out = status(&["-a"]);
    let line = line_starting(&out, "Users of cad:");
    assert_eq!(
        line,
        "Users of cad:  (Total of 5 licenses issued;  Total of 3 licenses in use)"
    );
    for pattern in [USERS_OF, USERS_OF_GO_PLURAL, RUST_USAGE, GO_USAGE] {
        let caps = captures(pattern, line);
        assert_eq!(
            (caps[1].as_str(), caps[2].as_str(), caps[3].as_str()),
            ("cad", "5", "3")
        );
    }
}

#[test]
fn users_of_line_is_singular_for_one() {
    let out = status(&["-a"]);
    let line = line_starting(&out, "Users of sim:");
    assert_eq!(
        line,
        "Users of sim:  (Total of 1 license issued;  Total of 1 license in use)"
    );
    for pattern in [USERS_OF, RUST_USAGE, GO_USAGE] {
        let caps = captures(pattern, line);
        assert_eq!((caps[2].as_str(), caps[3].as_str()), ("1", "1"));
    }
    // As with FlexLM itself, the plural-only parser cannot read singular lines.
    assert_no_match(USERS_OF_GO_PLURAL, line);
}

#[test]
fn users_of_line_is_plural_for_zero() {
    let out = status(&["-a"]);
    let line = line_starting(&out, "Users of viewer:");
    assert_eq!(
        line,
        "Users of viewer:  (Total of 1 license issued;  Total of 0 licenses in use)"
    );
    let line = line_starting(&out, "Users of calc:");
    assert_eq!(
        line,
        "Users of calc:  (Total of 10 licenses issued;  Total of 0 licenses in use)"
    );
    for pattern in [USERS_OF, USERS_OF_GO_PLURAL, RUST_USAGE, GO_USAGE] {
        assert_eq!(captures(pattern, line)[3], "0");
    }
    // An idle feature has no detail block: the next line after its blank is the next
    // feature or the end.
    assert!(out.contains("in use)\n\nUsers of calc:"), "{out}");
}

#[test]
fn detail_block_shows_each_pool_in_use_with_its_version() {
    let mut r = report();
    // Put the second cad pool in use too: two blocks under one summed header.
    r.features[2].holders = vec![holder(
        "dave",
        "ws9",
        "ws9",
        "2024",
        ms(2023, 8, 20, 10, 0),
        1,
        5,
        0,
    )];
    r.features[2].in_use = 1;
    let out = render_status(
        &r,
        "1648@lic1",
        &args(&["-a"]),
        local(2023, 8, 20, 12, 25),
        &tz(),
    );
    assert!(
        out.contains(
            "Users of cad:  (Total of 5 licenses issued;  Total of 4 licenses in use)\n\n  \
             \"cad\" v2025, vendor: demo, expiry: 31-dec-2027\n  floating license\n\n    \
             alice ws1 /dev/pts/0 (v2025) (lic1/1648 4001), start Sun 8/20 9:39, 2 licenses\n    \
             bob ws2 ws2 (v2025) (lic1/1648 4002), start Sun 8/20 0:05\n\n  \
             \"cad\" v2024, vendor: demo, expiry: permanent\n  floating license\n\n    \
             dave ws9 ws9 (v2024) (lic1/1648 5), start Sun 8/20 10:00\n\nUsers of sim:"
        ),
        "{out}"
    );
}

#[test]
fn quoted_feature_line_has_two_space_indent_and_flexlm_date() {
    let out = status(&["-a"]);
    assert!(out.contains("\n  \"cad\" v2025, vendor: demo, expiry: 31-dec-2027\n"));
    assert!(out.contains("\n  \"sim\" v1.0, vendor: demo, expiry: permanent\n"));
    assert_eq!(flexlm_expiry(expires_after(2026, 3, 5)), "05-mar-2026");
    assert_eq!(flexlm_expiry(0), "permanent");
}

#[test]
fn floating_license_line_matches_flexlm_exporter() {
    let out = status(&["-a"]);
    let line = line_starting(&out, "  floating");
    assert_eq!(line, "  floating license");
    assert_eq!(captures(GO_TYPE, line)[1], "floating");
}

#[test]
fn user_line_with_several_licenses() {
    let out = status(&["-a"]);
    let line = line_starting(&out, "    alice");
    assert_eq!(
        line,
        "    alice ws1 /dev/pts/0 (v2025) (lic1/1648 4001), start Sun 8/20 9:39, 2 licenses"
    );
    let go = captures(GO_USER, line);
    assert_eq!(
        (go[1].as_str(), go[2].as_str(), go[3].as_str()),
        ("alice", "(v2025)", "Sun 8/20 9:39")
    );
    assert_eq!(go[5], "2");
    let caps = captures(GO_SINCE, &go[3]);
    assert_eq!(
        (caps[1].as_str(), caps[2].as_str(), caps[3].as_str()),
        ("8", "20", "9:39")
    );
    let rust = captures(RUST_USER_MULTI, line);
    assert_eq!(
        (rust[1].as_str(), rust[2].as_str(), rust[3].as_str()),
        ("alice", "v2025", "2")
    );
    assert_no_match(RUST_USER_SINGLE, line);
}

#[test]
fn user_line_with_one_license_has_no_count() {
    let out = status(&["-a"]);
    let line = line_starting(&out, "    bob");
    // No display: the host stands in, as FlexLM shows Windows clients. No requested
    // version: the pool's.
    assert_eq!(
        line,
        "    bob ws2 ws2 (v2025) (lic1/1648 4002), start Sun 8/20 0:05"
    );
    let go = captures(GO_USER, line);
    assert_eq!(
        (go[1].as_str(), go[3].as_str(), go[5].as_str()),
        ("bob", "Sun 8/20 0:05", "")
    );
    let rust = captures(RUST_USER_SINGLE, line);
    assert_eq!((rust[1].as_str(), rust[2].as_str()), ("bob", "v2025"));
    assert_no_match(RUST_USER_MULTI, line);
}

#[test]
fn user_line_with_pid_when_asked() {
    let mut a = args(&["-a"]);
    a.show_pid = true;
    let out = render_status(
        &report(),
        "1648@lic1",
        &a,
        local(2023, 8, 20, 12, 25),
        &tz(),
    );
    let alice = line_starting(&out, "    alice");
    assert_eq!(
        alice,
        "    alice ws1 /dev/pts/0 (v2025) (lic1/1648 4001), start Sun 8/20 9:39, 2 licenses, PID: 4242"
    );
    assert_eq!(captures(GO_USER, alice)[5], "2");
    let bob = line_starting(&out, "    bob");
    assert_eq!(
        bob,
        "    bob ws2 ws2 (v2025) (lic1/1648 4002), start Sun 8/20 0:05, PID: 77"
    );
    captures(GO_USER, bob);
    // PID 0 means unknown and is left out.
    let carol = line_starting(&out, "    carol");
    assert!(carol.ends_with("start Sat 8/19 23:59"), "{carol}");
    // Off by default.
    assert!(!status(&["-a"]).contains("PID"));
}

/// A seat given back but still held (`LINGER=`, `MIN_CHECKOUT=`) is marked as FlexLM
/// marks it, `(linger: SECONDS)`, counted from the start shown on the line.
#[test]
fn user_line_of_a_lingering_seat_says_how_long_it_is_held() {
    let mut lingering = report();
    let bob = lingering
        .features
        .iter_mut()
        .flat_map(|f| f.holders.iter_mut())
        .find(|h| h.user == "bob")
        .expect("bob holds a seat");
    bob.lingering_until_ms = bob.since_ms + 300_000;
    let out = render_status(
        &lingering,
        "1648@lic1",
        &args(&["-a"]),
        local(2023, 8, 20, 12, 25),
        &tz(),
    );
    assert_eq!(
        line_starting(&out, "    bob"),
        "    bob ws2 ws2 (v2025) (lic1/1648 4002), start Sun 8/20 0:05 (linger: 300)"
    );
}

#[test]
fn user_line_fields_cannot_forge_lines() {
    let mut r = report();
    r.features[0].holders[0].user =
        "mallory\nUsers of fake:  (Total of 9 licenses issued;  Total of 0 licenses in use)".into();
    r.features[0].holders[1].user = String::new();
    let out = render_status(
        &r,
        "1648@lic1",
        &args(&["-a"]),
        local(2023, 8, 20, 12, 25),
        &tz(),
    );
    assert!(!out.contains("\nUsers of fake"), "{out}");
    assert!(out.contains("    mallory?Users of fake:"), "{out}");
    assert!(out.contains("    unknown ws2 ws2 (v2025)"), "{out}");
}

#[test]
fn dash_f_shows_only_that_feature_without_server_status() {
    let out = status(&["-c", "1648@lic1", "-f", "cad"]);
    assert!(
        out.starts_with(
            "lmstat - Copyright (c) 2026 The usher authors. All Rights Reserved.\n\
             Flexible License Manager status on Sun 8/20/2023 12:25\n\n\
             Users of cad:  (Total of 5 licenses issued;  Total of 3 licenses in use)\n\n"
        ),
        "{out}"
    );
    assert_eq!(out.matches("Users of").count(), 1, "{out}");
    assert!(!out.contains("License server status"), "{out}");
    assert!(!out.contains("Feature usage info"), "{out}");
    // `-f` alone lists every feature.
    assert_eq!(status(&["-f"]).matches("Users of").count(), 4);
    // With `-a` the status comes first.
    let out = status(&["-a", "-f", "sim"]);
    assert!(out.contains("License server status"));
    assert_eq!(out.matches("Users of").count(), 1);
}

#[test]
fn no_flag_shows_server_status_only() {
    let out = status(&["-c", "1648@lic1"]);
    assert!(out.contains("lic1: license server UP (MASTER) v11.19.0\n"));
    assert!(
        out.ends_with("  demo: UP v11.19.0\n  acme: UP v11.19.0\n"),
        "{out}"
    );
    assert!(!out.contains("Feature usage info"));
    assert!(!out.contains("Users of"));
    assert_eq!(status(&["-s"]), out);
}

#[test]
fn dash_capital_a_and_s_restrict_features() {
    let out = status(&["-A"]);
    let features: Vec<&str> = out.lines().filter(|l| l.starts_with("Users of")).collect();
    assert_eq!(features.len(), 2, "{out}");
    assert!(features[0].starts_with("Users of cad:") && features[1].starts_with("Users of sim:"));

    let out = status(&["-S", "acme"]);
    assert!(
        out.contains("Feature usage info:\n\nUsers of calc:"),
        "{out}"
    );
    assert_eq!(out.matches("Users of").count(), 1);
}

#[test]
fn info_prints_the_note_and_flexlm_columns() {
    let out = render_info(
        &report(),
        &args(&["-c", "1648@lic1", "-i"]),
        local(2023, 8, 20, 12, 25),
    );
    let l = lines(&out);
    assert_eq!(
        l[1],
        "Flexible License Manager status on Sun 8/20/2023 12:25"
    );
    assert_eq!(
        l[3],
        "NOTE: lmstat -i does not give information from the server, but only reads the license file.  For this reason, lmstat -a is recommended instead."
    );
    assert_eq!(l[4], "");
    assert_eq!(
        l[5],
        "Feature                         Version     #licenses    Expires      Vendor"
    );
    assert_eq!(
        l[6],
        "_______                         _________   _________    __________   ______"
    );
    let rows = &l[7..];
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[0],
        "cad                             2025         3           31-dec-2027  demo"
    );
    assert_eq!(
        rows[1],
        "sim                             1.0          1           permanent    demo"
    );
    for row in rows {
        captures(r"^(\S+)\s+([\d.]+)\s+(\d+)\s+(\S+)\s+(\S+)$", row);
        captures(GO_INFO_ROW, row);
        // FlexLM's columns: 0, 32, 45, 57, 70.
        let starts: Vec<usize> = re(r"\S+").find_iter(row).map(|m| m.start()).collect();
        assert_eq!(starts, [0, 32, 45, 57, 70], "{row}");
    }
    let caps = captures(GO_INFO_ROW, rows[0]);
    assert_eq!(
        caps[1..].to_vec(),
        ["cad", "2025", "3", "31-dec-2027", "demo"]
    );
}

#[test]
fn info_keeps_fields_apart_when_one_overflows_and_filters() {
    let mut r = report();
    r.features[0].feature = "a_feature_name_of_forty_characters_long_".into();
    let out = render_info(&r, &args(&["-i"]), local(2023, 8, 20, 12, 25));
    captures(GO_INFO_ROW, line_starting(&out, "a_feature"));

    let out = render_info(
        &report(),
        &args(&["-i", "calc"]),
        local(2023, 8, 20, 12, 25),
    );
    let rows: Vec<&str> = out.lines().skip(7).collect();
    assert_eq!(
        rows,
        ["calc                            10.5         10          permanent    acme"]
    );
}

#[test]
fn version_line_matches_flexlm_exporter() {
    let out = render_version();
    let line = out
        .lines()
        .find(|l| l.starts_with("lmstat v"))
        .unwrap_or_else(|| panic!("no version line in {out}"));
    captures(r"^lmstat v[\d.]+ build \d+ \w+", line);
    let caps = captures(GO_VERSION, line);
    assert_eq!((caps[1].as_str(), caps[2].as_str()), ("v11.19.0", "1"));
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains("Copyright (c) 2026 The usher authors.")
    );
}

#[test]
fn unreachable_prints_flexlm_error_lines() {
    let now = local(2023, 8, 20, 12, 25);
    let out = render_unreachable("1648@lic1", "connection refused (os error 111)", now);
    assert_eq!(
        out,
        "lmstat - Copyright (c) 2026 The usher authors. All Rights Reserved.\n\
             Flexible License Manager status on Sun 8/20/2023 12:25\n\n\
             License server status: 1648@lic1\n\
             Error getting status: Cannot connect to license server (-15,570:111 \"Connection refused\")\n"
    );
    let out = render_unreachable("1648@lic1", "connect timed out after 5s", now);
    assert!(out.ends_with(
            "Error getting status: Cannot connect to license server (-15,10:110 \"Connection timed out\")\n"
        ));
    let out = render_unreachable("1648@lic1", "no such host \"lic9\"\nretrying", now);
    assert!(out.ends_with(
            "Error getting status: Cannot connect to license server (-15,570:111 \"no such host 'lic9' retrying\")\n"
        ), "{out}");
}

fn parsed(words: &[&str]) -> LmstatArgs {
    args(words)
}

#[test]
fn parse_args_accepts_every_form_real_tools_use() {
    let a = parsed(&["-a", "-c", "1648@host"]);
    assert!(a.all);
    assert_eq!(a.server.as_deref(), Some("1648@host"));
    assert_eq!(a.mode(), LmstatMode::Status);
    assert_eq!(parsed(&["-c", "1648@host", "-a"]), a);

    let a = parsed(&["-c", "1648@host", "-f", "cad"]);
    assert!(a.feature_usage && !a.all);
    assert_eq!(a.feature.as_deref(), Some("cad"));

    let a = parsed(&["-c", "1648@host", "-i"]);
    assert!(a.info && a.info_feature.is_none());
    assert_eq!(a.mode(), LmstatMode::Info);

    let a = parsed(&["-v"]);
    assert!(a.version);
    assert_eq!(a.mode(), LmstatMode::Version);

    let a = parsed(&["-c", "27096@m2,27096@m2-x01,27096@m2-x02", "-a"]);
    assert_eq!(
        a.server.as_deref(),
        Some("27096@m2,27096@m2-x01,27096@m2-x02")
    );

    // No -a: server status (phpLicenseWatcher); a license file (check_flexlm).
    let a = parsed(&["-c", "/opt/flexlm/license.dat"]);
    assert_eq!(
        a,
        LmstatArgs {
            server: Some("/opt/flexlm/license.dat".into()),
            ..Default::default()
        }
    );
}

#[test]
fn parse_args_optional_values_and_the_rest() {
    let a = parsed(&["-f", "-c", "1648@host"]);
    assert!(a.feature_usage && a.feature.is_none());
    assert_eq!(a.server.as_deref(), Some("1648@host"));
    assert_eq!(parsed(&["-i", "cad"]).info_feature.as_deref(), Some("cad"));
    let a = parsed(&[
        "-s", "lic1", "-S", "demo", "-A", "-t", "30", "-verbose", "-q",
    ]);
    assert!(a.server_status && a.vendor_status && a.active_only);
    assert_eq!(a.status_server.as_deref(), Some("lic1"));
    assert_eq!(a.vendor.as_deref(), Some("demo"));
    assert_eq!(a.timeout_secs, Some(30));
    assert_eq!(parsed(&["-S"]).vendor, None);
    assert_eq!(parsed(&["-help"]).mode(), LmstatMode::Help);
    assert_eq!(parsed(&["-a", "-v"]).mode(), LmstatMode::Version);
    // A leftover subcommand word from `lmutil lmstat` is skipped.
    assert_eq!(parsed(&["lmstat", "-a"]), parsed(&["-a"]));
    assert_eq!(parsed(&[]), LmstatArgs::default());
}

#[test]
fn parse_args_rejects_what_lmstat_does_not_know() {
    let err = |words: &[&str]| {
        let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        parse_args(&words).unwrap_err()
    };
    assert_eq!(err(&["-z"]), "lmstat: invalid option \"-z\"");
    assert_eq!(err(&["-a", "cad"]), "lmstat: unexpected argument \"cad\"");
    assert!(err(&["-c"]).starts_with("lmstat: -c needs"));
    assert!(err(&["-a", "-c", "-f"]).starts_with("lmstat: -c needs"));
    assert!(err(&["-t", "soon"]).contains("\"soon\""));
    assert!(err(&["-t"]).starts_with("lmstat: -t needs"));
}

#[test]
fn handles_are_decimal_lease_ids_and_parse_back() {
    assert_eq!(format_handle(4001), "4001");
    assert_eq!(format_handle(u64::MAX), "18446744073709551615");
    for id in [0, 1, 4001, u64::MAX] {
        assert_eq!(parse_handle(&format_handle(id)), Some(id));
    }
    assert_eq!(parse_handle(" 42 "), Some(42));
    for bad in ["", "fa1", "0x10", "-1", "+1", "1 2", "18446744073709551616"] {
        assert_eq!(parse_handle(bad), None, "{bad:?}");
    }
}

#[test]
fn expiry_date_is_the_last_valid_day() {
    assert_eq!(expiry_date(0), None);
    assert_eq!(expiry_date(u64::MAX), None);
    assert_eq!(
        expiry_date(expires_after(2027, 12, 31)),
        NaiveDate::from_ymd_opt(2027, 12, 31)
    );
    // An end given as the day's last millisecond reads the same.
    assert_eq!(
        expiry_date(expires_after(2027, 12, 31) - 1),
        NaiveDate::from_ymd_opt(2027, 12, 31)
    );
}
