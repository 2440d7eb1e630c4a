//! Vendor attribute values: one judge ([`usher_license::attribute_value`]), located at the
//! value, used by the parser, the signer and (through `Terms`) the server's pools.

use usher_license::{SignError, Terms, attribute_value, sign_text};

use crate::util::{acme_key, parse_ok};

const BAD: &str = "\
# bad values
FEATURE cad acme 2025 permanent 2 OVERDRAFT=lots LINGER=abc \\
    DUP_GROUP=XYZ BORROW=99999 LINGRE=60 QUEUE=1
";

#[test]
fn every_refused_value_is_located_at_its_value_and_the_line_still_parses() {
    let file = parse_ok(BAD);
    assert_eq!(file.entitlements.len(), 1);
    let found: Vec<(&str, usize, usize)> = file
        .attribute_problems
        .iter()
        .map(|p| (p.key.as_str(), p.line, p.column))
        .collect();
    // Column of the value for a known keyword, of the keyword for an unknown one.
    assert_eq!(
        found,
        [
            ("OVERDRAFT", 2, 45),
            ("LINGER", 2, 57),
            ("DUP_GROUP", 3, 15),
            ("BORROW", 3, 26),
            ("LINGRE", 3, 32),
            ("QUEUE", 3, 48),
        ],
        "{:#?}",
        file.attribute_problems
    );
    let shown: Vec<String> = file
        .attribute_problems
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown[3],
        "test.lic:3:26: BORROW=\"99999\" is not a number of hours from 1 to 8784"
    );
    assert!(
        shown[4].starts_with("test.lic:3:32: unknown attribute LINGRE")
            && shown[4].contains("did you mean LINGER?"),
        "{shown:?}"
    );
}

#[test]
fn the_signer_refuses_each_bad_value_with_file_line_and_column() {
    for (attr, column) in [
        ("OVERDRAFT=lots", 45),
        ("LINGER=abc", 42),
        ("MIN_CHECKOUT=-1", 48),
        ("DUP_GROUP=XYZ", 45),
        ("BORROW=99999", 42),
        ("BORROW=0", 42),
        ("USER_BASED=0", 46),
        ("LINGRE=60", 35),
    ] {
        let text = format!("\nFEATURE cad acme 2025 permanent 2 {attr}\n");
        match sign_text("v.lic", &text, &acme_key()) {
            Err(SignError::Attribute(p)) => {
                assert_eq!((p.line, p.column), (2, column), "{attr}: {p}");
                assert!(
                    p.to_string().starts_with(&format!("v.lic:2:{column}: ")),
                    "{p}"
                );
            }
            other => panic!("{attr}: {other:?}"),
        }
    }
    let fine = "FEATURE cad acme 2025 permanent 2 BORROW BORROW_X=1\n";
    assert!(sign_text("v.lic", fine, &acme_key()).is_err());
    let fine = "FEATURE cad acme 2025 permanent 2 BORROW=8784 OVERDRAFT=0 DUP_GROUP=site\n";
    assert_eq!(sign_text("v.lic", fine, &acme_key()).unwrap().signed, 1);
}

#[test]
fn terms_serve_refused_values_as_absent_and_good_ones_as_written() {
    let file = parse_ok(BAD);
    let terms = Terms::of(&file.entitlements[0]);
    assert_eq!(terms, Terms::default(), "nothing refused is served");
    let good = parse_ok(
        "FEATURE cad acme 2025 permanent 2 OVERDRAFT=3 LINGER=60 MIN_CHECKOUT=5 BORROW \
         USER_BASED=4 DUP_GROUP=U\n",
    );
    let terms = Terms::of(&good.entitlements[0]);
    assert_eq!(
        (
            terms.overdraft,
            terms.linger_secs,
            terms.min_checkout_secs,
            terms.borrow_hours,
            terms.user_based
        ),
        (3, 60, 5, Some(168), Some(Some(4)))
    );
    assert!(terms.dup_group.is_some_and(|d| d.user && !d.host));
    // The same judge says the same about each value, wherever it is asked.
    for (key, value) in &file.entitlements[0].attrs {
        assert!(attribute_value(key, value).is_err(), "{key}={value}");
    }
}
