//! Syntax errors: each names the file, the line and column in the original text, and what
//! was expected.

use usher_license::parse;

const EXPIRY: &str = "expected an expiry date (dd-mmm-yyyy, yyyy-mm-dd or permanent)";
const COUNT: &str = "expected a seat count (a positive number, uncounted or token)";

/// (text, line, column, exact message)
const CASES: &[(&str, usize, usize, &str)] = &[
    (
        "FOO bar\n",
        1,
        1,
        "expected SERVER, VENDOR, USE_SERVER, FEATURE or INCREMENT, found \"FOO\"",
    ),
    (
        "VENDOR acme\nDAEMON acme\n",
        2,
        1,
        "DAEMON lines are not supported; write VENDOR",
    ),
    (
        "LINGER=5\n",
        1,
        1,
        "expected SERVER, VENDOR, USE_SERVER, FEATURE or INCREMENT, found \"LINGER=5\"",
    ),
    (
        "FEATURE c@d acme 1.0 permanent 5\n",
        1,
        9,
        "expected a feature name (letters, digits, '_' and '-', at most 64 characters), found \"c@d\"",
    ),
    (
        "FEATURE \"cad\" acme 1.0 permanent 5\n",
        1,
        9,
        "expected a feature name, found \"\\\"cad\\\"\"",
    ),
    (
        "FEATURE cad ac.me 1.0 permanent 5\n",
        1,
        13,
        "expected a vendor name (letters, digits, '_' and '-', at most 64 characters), found \"ac.me\"",
    ),
    (
        "FEATURE cad acme 1.x permanent 5\n",
        1,
        18,
        "expected a version (dot-separated numbers such as 2025 or 2025.10), found \"1.x\"",
    ),
    ("FEATURE cad acme 1.0\n", 1, 21, "EXPIRY, found end of line"),
    (
        "FEATURE cad acme 1.0 31-foo-2027 5\n",
        1,
        22,
        "EXPIRY, found \"31-foo-2027\"",
    ),
    (
        "FEATURE cad acme 1.0 30-feb-2027 5\n",
        1,
        22,
        "EXPIRY, found \"30-feb-2027\"",
    ),
    (
        "FEATURE cad acme 1.0 permanent\n",
        1,
        31,
        "COUNT, found end of line",
    ),
    (
        "FEATURE cad acme 1.0 permanent many\n",
        1,
        32,
        "COUNT, found \"many\"",
    ),
    (
        "FEATURE cad acme 1.0 permanent -3\n",
        1,
        32,
        "COUNT, found \"-3\"",
    ),
    (
        "FEATURE cad acme 1.0 permanent uncounted\n",
        1,
        32,
        "an uncounted entitlement must be locked to a host: add HOSTID=<host id> (HOSTID=ANY is not allowed)",
    ),
    (
        "FEATURE cad acme 1.0 permanent 0 HOSTID=ANY\n",
        1,
        32,
        "an uncounted entitlement must be locked to a host: add HOSTID=<host id> (HOSTID=ANY is not allowed)",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 LINGER=1 LINGER=2\n",
        1,
        43,
        "duplicate attribute LINGER (first given at line 1, column 34)",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 Linger=1\n",
        1,
        34,
        "expected an attribute name in UPPER_CASE (set and signed by the vendor) or lower_case (an administrator's note), found \"Linger\"",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 hostid=any\n",
        1,
        34,
        "hostid must be written HOSTID: lowercase attributes are unsigned notes and would have no effect",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 note\n",
        1,
        34,
        "expected note=value: lowercase attributes need a value",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 LINGER=\n",
        1,
        41,
        "expected a value after LINGER= (write LINGER=\"\" for an empty value)",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 START\n",
        1,
        34,
        "expected START=<date> (dd-mmm-yyyy or yyyy-mm-dd)",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 START=1-jan-0\n",
        1,
        40,
        "expected START=<date> (dd-mmm-yyyy or yyyy-mm-dd), found \"1-jan-0\"",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 \"loose\"\n",
        1,
        34,
        "expected KEY=value, found \"\\\"loose\\\"\"",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 NOTICE=\"a\"b\n",
        1,
        44,
        "expected whitespace after the closing quote, found 'b'",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 NOTICE=a\"b\"\n",
        1,
        42,
        "unexpected '\"': quotes may only surround a whole value, as in KEY=\"some text\"",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 NOTICE=\"open \\\n   still open\nVENDOR acme\n",
        1,
        41,
        "unterminated quoted value: expected a closing '\"' on this line (or a continued one)",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 SIGN=\"12 zz\"\n",
        1,
        39,
        "expected SIGN= to hold 128 hex digits (a 64-byte Ed25519 signature), found 'z'",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 SIGN=\"1234 5678\"\n",
        1,
        39,
        "expected SIGN= to hold 128 hex digits (a 64-byte Ed25519 signature), found 8 hex digits",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 HOSTID=ETHER=\n",
        1,
        41,
        "expected a host id such as ANY, ETHER=<mac> or HOSTNAME=<name>, found \"ETHER=\"",
    ),
    (
        "SERVER\n",
        1,
        7,
        "expected a server host name, found end of line",
    ),
    (
        "SERVER lic1\n",
        1,
        12,
        "expected a server host id, found end of line",
    ),
    (
        "SERVER lic1 ANY 70000\n",
        1,
        17,
        "expected a port number (1-65535), found \"70000\"",
    ),
    (
        "SERVER lic1 ANY 1648 PRIMARY_IS_MASTER\n",
        1,
        22,
        "unexpected \"PRIMARY_IS_MASTER\" after the SERVER port: usher's SERVER line is `SERVER host hostid [port]`",
    ),
    ("USE_SERVER now\n", 1, 12, "USE_SERVER takes no arguments"),
    (
        "VENDOR\n",
        1,
        7,
        "expected a vendor name, found end of line",
    ),
    (
        "VENDOR acme\u{7}\n",
        1,
        12,
        "unexpected control character U+0007",
    ),
    // Columns count characters, not bytes: "é" is one column.
    (
        "FEATURE cad acme 1.0 permanent 5 NOTICE=\"h\u{e9}llo\" Bad=1\n",
        1,
        49,
        "expected an attribute name in UPPER_CASE (set and signed by the vendor) or lower_case (an administrator's note), found \"Bad\"",
    ),
    // A tab is one column.
    (
        "\tFEATURE cad acme 1.x permanent 5\n",
        1,
        19,
        "expected a version (dot-separated numbers such as 2025 or 2025.10), found \"1.x\"",
    ),
    // Positions after continuations point into the original lines.
    (
        "# header\n\nFEATURE cad acme 1.0 permanent 5 \\\n    START=31-foo-2027\n",
        4,
        11,
        "expected START=<date> (dd-mmm-yyyy or yyyy-mm-dd), found \"31-foo-2027\"",
    ),
    (
        "FEATURE cad \\\n  acme \\   \n\t\t1.0 \\\n  # a comment ends the line \\\n  tomorrow 5\n",
        3,
        6,
        "EXPIRY, found end of line",
    ),
    (
        "FEATURE cad acme 1.0 permanent 5 \\\n  LINGER=1 \\\n  # note\n  LINGER=2\n",
        4,
        3,
        "expected SERVER, VENDOR, USE_SERVER, FEATURE or INCREMENT, found \"LINGER=2\"",
    ),
    (
        "INCREMENT cad acme 1.0 permanent 5 NOTICE=\"one \\\n  two\" \\\n    LINGER=1 LINGER=1\n",
        3,
        14,
        "duplicate attribute LINGER (first given at line 3, column 5)",
    ),
    (
        "VENDOR acme\r\nFEATURE cad acme 1.0 permanent x\r\n",
        2,
        32,
        "COUNT, found \"x\"",
    ),
    (
        "FEATURE s acme 1 permanent token\n",
        1,
        28,
        "a token-based entitlement needs TOKEN=\"<feature version tokens> ...\" to say which pools pay for it",
    ),
    (
        "FEATURE s acme 1 permanent token TOKEN=\"<units 2.0>\"\n",
        1,
        34,
        "expected <feature version tokens> in TOKEN=\"<feature version tokens> ...\", e.g. TOKEN=\"<units 2.0 5>\", found <units 2.0>",
    ),
    (
        "FEATURE s acme 1 permanent token TOKEN=\"<units 2.0 0>\"\n",
        1,
        34,
        "\"0\" is not a token count of 1 or more (in TOKEN=)",
    ),
    (
        "FEATURE s acme 1 permanent 5 TOKEN=\"<units 1 2>\"\n",
        1,
        30,
        "TOKEN= applies only to a token-based entitlement (count `token`)",
    ),
];

#[test]
fn table_of_syntax_errors() {
    let mut failures = Vec::new();
    for &(text, line, column, message) in CASES {
        let message = message.replace("EXPIRY", EXPIRY).replace("COUNT", COUNT);
        let expected = format!("x.lic:{line}:{column}: {message}");
        match parse("x.lic", text) {
            Ok(file) => failures.push(format!(
                "{text:?}\n  parsed: {file:?}\n  expected: {expected}"
            )),
            Err(e) => {
                if e.to_string() != expected
                    || (e.file.as_str(), e.line, e.column) != ("x.lic", line, column)
                {
                    failures.push(format!("{text:?}\n  got:      {e}\n  expected: {expected}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn a_bad_signature_is_not_a_syntax_error() {
    let sign = "ab".repeat(64);
    let text = format!("FEATURE cad acme 1.0 permanent 5 SIGN={sign}\n");
    let file = parse("x.lic", &text).unwrap();
    assert_eq!(file.entitlements[0].signature, Some([0xab; 64]));
}
