//! Signing: what the signer writes, what it refuses, and that signatures cover meaning
//! rather than layout.

use usher_license::{SignError, Status, parse, sign_text, verify};

use crate::util::{
    SAMPLE, acme_key, other_key, parse_ok, replace_once, signed, statuses, strip_signatures, today,
};

const VALID3: [Status; 3] = [Status::Valid, Status::Valid, Status::Valid];

#[test]
fn sign_parse_verify_roundtrip() {
    let outcome = sign_text("test.lic", SAMPLE, &acme_key()).unwrap();
    assert_eq!((outcome.signed, outcome.already_signed), (3, 0));
    let file = parse_ok(&outcome.text);
    let public = acme_key().public_key();
    for e in &file.entitlements {
        assert!(
            e.signature.is_some(),
            "line {} not signed:\n{}",
            e.line,
            outcome.text
        );
        verify(e, &public).unwrap_or_else(|err| panic!("line {}: {err}\n{}", e.line, outcome.text));
    }
    // Signing covers fields, not line numbers: the lines are where they were.
    let lines: Vec<usize> = file.entitlements.iter().map(|e| e.line).collect();
    assert_eq!(lines, [6, 13, 18]);
    assert_eq!(statuses(&outcome.text, today()), VALID3);
}

#[test]
fn signer_only_adds_sign_attributes() {
    let text = signed(SAMPLE);
    assert_eq!(strip_signatures(&text), SAMPLE, "signed text:\n{text}");
    // The trailing comment stays after the signature, on the entitlement's last line.
    assert!(text.contains("\" # spare seats\n"), "{text}");
}

#[test]
fn signing_twice_changes_nothing() {
    let once = signed(SAMPLE);
    let twice = sign_text("test.lic", &once, &acme_key()).unwrap();
    assert_eq!((twice.signed, twice.already_signed), (0, 3));
    assert_eq!(twice.text, once);
}

#[test]
fn crlf_files_stay_crlf() {
    let text = SAMPLE.replace('\n', "\r\n");
    let out = signed(&text);
    assert!(!out.replace("\r\n", "").contains('\n'), "{out:?}");
    assert_eq!(statuses(&out, today()), VALID3);
}

#[test]
fn signing_a_line_with_a_trailing_continuation() {
    let text = "FEATURE a acme 1 permanent 3 \\\n\nFEATURE b acme 1 permanent 3\\\n  # note\n";
    let out = signed(text);
    assert_eq!(statuses(&out, today()), [Status::Valid, Status::Valid]);
}

#[test]
fn refuses_another_vendors_unsigned_line() {
    let text = format!("{SAMPLE}FEATURE x other 1 permanent 1\n");
    match sign_text("test.lic", &text, &acme_key()) {
        Err(SignError::WrongVendor {
            line,
            found,
            expected,
            ..
        }) => {
            assert_eq!(
                (line, found.as_str(), expected.as_str()),
                (11, "other", "acme")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn leaves_other_vendors_signed_lines_alone() {
    let theirs = sign_text("t", "FEATURE x other 1 permanent 1\n", &other_key())
        .unwrap()
        .text;
    let text = format!("{theirs}{SAMPLE}");
    let outcome = sign_text("test.lic", &text, &acme_key()).unwrap();
    assert_eq!((outcome.signed, outcome.already_signed), (3, 1));
    assert!(outcome.text.starts_with(&theirs));
    assert_eq!(statuses(&outcome.text, today()), [Status::Valid; 4]);
}

#[test]
fn refuses_unknown_attributes() {
    let text = replace_once(SAMPLE, "LINGER=60", "LINGRE=60");
    match sign_text("test.lic", &text, &acme_key()) {
        Err(SignError::Attribute(p)) => {
            // The physical line of the keyword (the entitlement starts on line 6).
            assert_eq!((p.line, p.key.as_str()), (8, "LINGRE"));
            assert!(p.column > 1, "{p:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_files_with_syntax_errors() {
    let text = replace_once(SAMPLE, "31-dec-2027", "31-dec-27");
    let err = sign_text("test.lic", &text, &acme_key()).unwrap_err();
    assert!(matches!(err, SignError::Parse(_)));
    assert!(
        err.to_string()
            .starts_with("test.lic:6:25: expected an expiry date"),
        "{err}"
    );
}

/// Each tamper applies to the first entitlement (lines 6-12 of the signed sample) only.
#[test]
fn tampering_with_any_signed_field_breaks_only_that_line() {
    let text = signed(SAMPLE);
    let tampers = [
        ("count", "2025.1 31-dec-2027 10 ", "2025.1 31-dec-2027 100 "),
        ("expiry", "31-dec-2027", "31-dec-2099"),
        ("expiry to permanent", "31-dec-2027", "permanent"),
        (
            "version",
            "FEATURE cad acme 2025.1",
            "FEATURE cad acme 2025.2",
        ),
        ("feature", "FEATURE cad acme", "FEATURE cam acme"),
        ("kind", "FEATURE cad", "INCREMENT cad"),
        ("attribute value", "LINGER=60", "LINGER=600"),
        ("attribute removed", "LINGER=60 ", ""),
        ("attribute added", "LINGER=60 ", "LINGER=60 BORROW=168 "),
        ("notice", "site license", "site licence"),
        ("issued", "ISSUED=2025-01-15", "ISSUED=2025-01-16"),
        (
            "start added",
            "ISSUED=2025-01-15",
            "ISSUED=2025-01-15 START=2025-01-01",
        ),
        (
            "hostid added",
            "ISSUED=2025-01-15",
            "ISSUED=2025-01-15 HOSTID=HOSTNAME=x",
        ),
    ];
    for (what, from, to) in tampers {
        let tampered = replace_once(&text, from, to);
        assert_eq!(
            statuses(&tampered, today()),
            [Status::BadSignature, Status::Valid, Status::Valid],
            "tampered {what}:\n{tampered}"
        );
    }

    // And the host binding of the third entitlement.
    let tampered = replace_once(&text, "ETHER=00:1a:2b:3c:4d:5e", "ETHER=00:1a:2b:3c:4d:5f");
    assert_eq!(
        statuses(&tampered, today()),
        [Status::Valid, Status::Valid, Status::BadSignature]
    );
    let tampered = replace_once(&text, "HOSTID=ETHER=00:1a:2b:3c:4d:5e", "HOSTID=ANY");
    assert!(
        parse("t", &tampered).is_err(),
        "uncounted with HOSTID=ANY must not parse"
    );
}

#[test]
fn moving_a_signature_to_another_line_breaks_it() {
    let text = signed("FEATURE a acme 1 permanent 3\nFEATURE b acme 1 permanent 3\n");
    let swapped = text
        .replacen("FEATURE a", "FEATURE @", 1)
        .replacen("FEATURE b", "FEATURE a", 1)
        .replacen("FEATURE @", "FEATURE b", 1);
    assert_eq!(
        statuses(&swapped, today()),
        [Status::BadSignature, Status::BadSignature]
    );
}

/// Everything an administrator may change without breaking the vendor's signature.
#[test]
fn layout_changes_keep_signatures_valid() {
    let text = signed(SAMPLE);
    let first_line_start = text.find("FEATURE cad").unwrap();
    let first_line_end = text.find("INCREMENT cad").unwrap();
    let file = parse_ok(&text);
    let sign = hex::encode(file.entitlements[0].signature.unwrap());

    // The first entitlement rewritten: tabs, other line breaks, attributes reordered and
    // respelled, lowercase attributes changed, dates in the other format, keywords in
    // other cases, an unquoted signature in lower case, a comment.
    let rewritten = format!(
        "feature\tcad  acme\t2025.1 2027-12-31 010 LINGER=\"60\" sort=5 \\\n\t DUP_GROUP=UH \
         NOTICE=\"Example   Corp, \\\n  site license \" SIGN={sign} ISSUED=15-JAN-2025 # note\n"
    );
    let mut edited = format!(
        "{}{}{}",
        &text[..first_line_start],
        rewritten,
        &text[first_line_end..]
    );
    // SERVER and VENDOR lines are the administrator's.
    edited = replace_once(
        &edited,
        "SERVER lic1.example.com ANY 1648",
        "SERVER lic2 ANY 27000",
    );
    edited = replace_once(&edited, "VENDOR acme", "VENDOR acme /opt/acme/bin/acme");
    // Blank lines and comments added.
    edited = format!("# edited by IT\n\n{edited}\n# end\n");
    assert_eq!(statuses(&edited, today()), VALID3, "edited:\n{edited}");
    assert_eq!(statuses(&edited.replace('\n', "\r\n"), today()), VALID3);
}

#[test]
fn signed_output_verifies_after_reflowing_the_signature() {
    let text = signed("FEATURE a acme 1 permanent 3\n");
    let file = parse_ok(&text);
    let sign = hex::encode_upper(file.entitlements[0].signature.unwrap());
    let spaced: String = sign.chars().flat_map(|c| [c, ' ']).collect();
    let reflowed = format!("FEATURE a acme 1 permanent 3 SIGN=\" {spaced} \\\n  \"\n");
    assert_eq!(statuses(&reflowed, today()), [Status::Valid]);
}

mod reflow {
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use usher_license::Status;

    use crate::util::{parse_ok, signed, statuses, today};

    const LINE: &str = "FEATURE cad acme 2025.1 31-dec-2027 10 ISSUED=2025-01-15 \
                        NOTICE=\"Example Corp\" LINGER=60 DUP_GROUP=UH sort=1\n";

    /// The attribute words of `LINE`, with its signature as one more attribute.
    static ATTRIBUTES: LazyLock<Vec<String>> = LazyLock::new(|| {
        let file = parse_ok(&signed(LINE));
        let sign = hex::encode(file.entitlements[0].signature.unwrap());
        let mut words: Vec<String> = LINE.split_whitespace().skip(6).map(String::from).collect();
        // `NOTICE="Example Corp"` was split in two by `split_whitespace`.
        let notice = words.iter().position(|w| w.starts_with("NOTICE")).unwrap();
        let corp = words.remove(notice + 1);
        words[notice] = format!("{} {corp}", words[notice]);
        words.push(format!("SIGN={sign}"));
        words
    });

    fn separator() -> impl Strategy<Value = &'static str> {
        prop::sample::select(
            &[
                " ",
                "\t",
                "   ",
                " \\\n",
                "\\\n\t",
                " \\  \r\n  ",
                "\t\\\n  \\\n",
            ][..],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn any_layout_of_the_same_line_verifies(
            order in Just((0..ATTRIBUTES.len()).collect::<Vec<_>>()).prop_shuffle(),
            separators in prop::collection::vec(separator(), 12),
            indent in prop::sample::select(&["", " ", "\t"][..]),
            tail in prop::sample::select(&["", " # comment", "\t#"][..]),
        ) {
            let mut words: Vec<String> =
                ["FEATURE", "cad", "acme", "2025.1", "31-dec-2027", "10"].map(String::from).to_vec();
            words.extend(order.iter().map(|&i| ATTRIBUTES[i].clone()));
            let mut text = indent.to_string();
            for (word, separator) in words.iter().zip(&separators) {
                text.push_str(word);
                text.push_str(separator);
            }
            // A continuation from the last separator must still end somewhere.
            text.push_str(tail);
            text.push('\n');
            prop_assert_eq!(statuses(&text, today()), [Status::Valid], "{}", text);
        }
    }
}
