//! `usher vendor keygen`, `usher vendor sign`, `usher license check` and `usher hostid`.

use std::os::unix::fs::PermissionsExt as _;

use regex::Regex;

use crate::util::{Vendor, output, run_usher, usher};

const LICENSE: &str = "\
# test license
FEATURE cad acme 2025 permanent 2 HOSTID=ANY NOTICE=\"Example Corp\"
FEATURE sim acme 1.0 31-dec-2099 5 HOSTID=ANY
";

/// `usher license check FILE --vendor-key PUB`.
fn check(vendor: &Vendor, file: &std::path::Path) -> crate::util::Outcome {
    let mut cmd = usher(&["license", "check"]);
    cmd.arg(file).arg("--vendor-key").arg(vendor.public_key());
    output(cmd)
}

#[test]
fn keygen_writes_a_private_secret_key_and_a_public_key() {
    let vendor = Vendor::new("acme");
    let secret = std::fs::metadata(vendor.secret_key()).expect("acme.key exists");
    assert_eq!(
        secret.permissions().mode() & 0o777,
        0o600,
        "the secret key must be readable by its owner only"
    );
    assert!(vendor.public_key().is_file(), "acme.pub exists");
}

#[test]
fn a_signed_license_checks_and_lists_every_entitlement() {
    let vendor = Vendor::new("acme");
    let signed = vendor.sign("cad.lic", LICENSE);
    let text = std::fs::read_to_string(&signed).unwrap();
    assert_eq!(text.matches("SIGN=").count(), 2, "{text}");

    let outcome = check(&vendor, &signed).ok();
    let ok_lines: Vec<&str> = outcome
        .stdout
        .lines()
        .filter(|l| l.starts_with("ok "))
        .collect();
    assert_eq!(ok_lines.len(), 2, "{outcome}");
    assert!(
        ok_lines[0].contains("cad v2025 (acme), 2 seats, permanent"),
        "{outcome}"
    );
    assert!(
        ok_lines[1].contains("sim v1.0 (acme), 5 seats, until 2099-12-31"),
        "{outcome}"
    );
    assert!(
        outcome.stdout.contains("2 entitlements, 2 ok, 0 bad"),
        "{outcome}"
    );
}

#[test]
fn an_edited_seat_count_is_bad_and_its_line_is_named() {
    let vendor = Vendor::new("acme");
    let signed = vendor.sign("cad.lic", LICENSE);
    let text = std::fs::read_to_string(&signed).unwrap();
    // Edit the second entitlement, so that the line numbers say which one broke.
    let line_of = |start: &str| {
        1 + text
            .lines()
            .position(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} line in\n{text}"))
    };
    let (cad_line, sim_line) = (line_of("FEATURE cad"), line_of("FEATURE sim"));
    let tampered_text = text.replace("31-dec-2099 5 HOSTID", "31-dec-2099 50 HOSTID");
    assert_ne!(tampered_text, text);
    let tampered = vendor.dir.path().join("tampered.lic");
    std::fs::write(&tampered, tampered_text).unwrap();

    let outcome = check(&vendor, &tampered).expect_code(6);
    assert!(
        outcome
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("BAD line {sim_line}: ")) && l.contains("sim")),
        "the tampered line {sim_line} should be reported BAD\n{outcome}"
    );
    assert!(
        outcome
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("ok  line {cad_line}: ")) && l.contains("cad")),
        "the untouched line stays ok\n{outcome}"
    );
}

#[test]
fn a_syntax_error_is_reported_as_file_line_column() {
    let vendor = Vendor::new("acme");
    let broken = vendor.dir.path().join("broken.lic");
    std::fs::write(
        &broken,
        "# fine\nFEATURE cad acme 2025 permanent 2 HOSTID=ANY NOTICE=\"unterminated\n",
    )
    .unwrap();
    let outcome = check(&vendor, &broken);
    assert_ne!(outcome.code, Some(0), "{outcome}");
    let located = Regex::new(r"broken\.lic:2:\d+: ").unwrap();
    assert!(
        located.is_match(&outcome.stderr) || located.is_match(&outcome.stdout),
        "expected broken.lic:2:COLUMN in the message\n{outcome}"
    );
}

#[test]
fn hostid_prints_key_value_lines() {
    let outcome = run_usher(&["hostid"]).ok();
    let id = Regex::new(r"^[A-Z][A-Z0-9_]*=\S+$").unwrap();
    assert!(outcome.stdout.lines().any(|l| id.is_match(l)), "{outcome}");
}

#[test]
fn hostid_prints_the_server_identity_of_a_data_directory() {
    let fixture = crate::util::Licensed::start(crate::util::Timings::SHORT);
    let data = fixture.server.scratch.path().join("data");
    let out = run_usher(&["hostid", "--data-dir", data.to_str().unwrap()]).ok();
    let first = out.stdout.lines().next().unwrap_or_default().to_string();
    assert!(first.starts_with("USHER_ID="), "{out}");
    assert_eq!(first.len(), "USHER_ID=".len() + 40, "{first}");
    let empty = tempfile::tempdir().unwrap();
    run_usher(&["hostid", "--data-dir", empty.path().to_str().unwrap()]).expect_code(1);
}

/// Each refused attribute value, and the column of its value on line 2 of
/// `FEATURE cad acme 2025 permanent 2 <attr>` (of the keyword, for an unknown one).
const BAD_ATTRIBUTES: &[(&str, usize)] = &[
    ("OVERDRAFT=lots", 45),
    ("OVERDRAFT", 35),
    ("LINGER=abc", 42),
    ("MIN_CHECKOUT=1.5", 48),
    ("DUP_GROUP=XYZ", 45),
    ("BORROW=99999", 42),
    ("BORROW=0", 42),
    ("USER_BASED=many", 46),
    ("HOST_BASED=-1", 46),
    ("SUPERSEDE=\"a,b\"", 45),
    ("QUEUE=yes", 41),
    ("LINGRE=60", 35),
];

#[test]
fn sign_and_check_refuse_each_bad_attribute_value_at_its_line_and_column() {
    let vendor = Vendor::new("acme");
    for &(attr, column) in BAD_ATTRIBUTES {
        let input = vendor.dir.path().join("bad.lic");
        let out = vendor.dir.path().join("bad-signed.lic");
        std::fs::write(
            &input,
            format!("# one line\nFEATURE cad acme 2025 permanent 2 {attr}\n"),
        )
        .unwrap();
        let at = format!("{}:2:{column}: ", input.display());

        let mut sign = usher(&["vendor", "sign", "--key"]);
        sign.arg(vendor.secret_key())
            .arg("--in")
            .arg(&input)
            .arg("--out")
            .arg(&out);
        let signed = output(sign).expect_code(1);
        assert!(
            signed.stderr.contains(&at),
            "{attr}: expected {at}\n{signed}"
        );
        assert!(!out.exists(), "{attr}: nothing is written\n{signed}");

        let checked = check(&vendor, &input).expect_code(6);
        let problem = format!("      problem: {at}");
        assert!(
            checked.stdout.lines().any(|l| l.starts_with(&problem)),
            "{attr}: expected {problem:?}\n{checked}"
        );
        assert!(checked.stdout.contains("0 ok, 1 bad"), "{attr}\n{checked}");
    }
}

/// A line bound to another machine is not `ok` in `usher license check` (it says which
/// host ids it names and which this host has), fits when checked for that host
/// (`--host-id`), and `usher run` is refused with that reason, not as an unknown feature.
#[test]
fn a_line_bound_to_another_host_is_named_by_check_and_by_the_refusal() {
    let vendor = Vendor::new("acme");
    let other = "ETHER=02deadbeef01";
    let signed = vendor.sign(
        "bound.lic",
        &format!(
            "FEATURE cad acme 2025 permanent 2 HOSTID=ANY\n\
             FEATURE viewer acme 2025 permanent 1 HOSTID={other}\n"
        ),
    );
    let here = check(&vendor, &signed).expect_code(6);
    assert!(
        here.stdout
            .lines()
            .any(|l| l.starts_with("BAD line ") && l.contains(" viewer v2025")),
        "{here}"
    );
    assert!(
        here.stdout.contains(&format!(
            "problem: bound to another host: HOSTID={} names none of this host's ids",
            other.to_ascii_lowercase().replace("ether", "ETHER")
        )),
        "{here}"
    );
    assert!(here.stdout.contains("1 ok, 1 bad"), "{here}");

    let mut there = usher(&["license", "check"]);
    there
        .arg(&signed)
        .arg("--vendor-key")
        .arg(vendor.public_key())
        .args(["--host-id", other]);
    let there = output(there).ok();
    assert!(
        there.stdout.contains("host: fits the given host ids"),
        "{there}"
    );

    let server = crate::util::Server::start(&vendor, &signed, crate::util::Timings::SHORT);
    let refused = run_usher(&["run", "-c", &server.spec(), "viewer", "--", "true"]).expect_code(5);
    assert!(
        refused
            .stderr
            .contains("\"viewer\" is bound to another host"),
        "{refused}"
    );
}
