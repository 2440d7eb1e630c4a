//! The parser, signer and checker never panic, whatever the text; and errors always point
//! inside the text.

use proptest::prelude::*;
use usher_license::{check, parse, sign_text};

use std::sync::LazyLock;

use crate::util::{SAMPLE, acme_key, signed, today};

/// Signed once: signing and verifying dominate the cost of a case in debug builds.
static SIGNED_SAMPLE: LazyLock<String> = LazyLock::new(|| signed(SAMPLE));

/// Runs everything that takes text and checks the error position is inside it.
fn exercise(text: &str) {
    match parse("f", text) {
        Ok(file) => {
            let _ = check(&file, &[acme_key().public_key()], today());
            for e in &file.entitlements {
                let _ = (e.canonical_bytes(), e.valid_from_ms(), e.valid_until_ms());
            }
            if let Ok(outcome) = sign_text("f", text, &acme_key()) {
                parse("f", &outcome.text).expect("signed output parses");
            }
        }
        Err(e) => {
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(e.line >= 1 && e.line <= lines.len(), "{e} in {text:?}");
            let width = lines[e.line - 1].chars().count();
            assert!(e.column >= 1 && e.column <= width + 1, "{e} in {text:?}");
        }
    }
}

/// Characters that matter to the lexer, to make mutations interesting.
const SPECIAL: &[char] = &[
    '\\', '"', '#', '=', '\n', '\r', '\t', ' ', '-', '0', 'é', '\u{0}',
];

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let ch = prop_oneof![prop::sample::select(SPECIAL), any::<char>()];
    prop_oneof![
        (any::<usize>(), ch).prop_map(|(at, c)| Edit::Insert(at, c)),
        (any::<usize>(), 1..20usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 1..40usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len().max(1);
        match *edit {
            Edit::Insert(at, c) => chars.insert((at % len).min(chars.len()), c),
            Edit::Delete(at, n) => {
                let at = (at % len).min(chars.len());
                let end = (at + n).min(chars.len());
                chars.drain(at..end);
            }
            Edit::Duplicate(at, n) => {
                let at = (at % len).min(chars.len());
                let end = (at + n).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, copy);
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings(text in any::<String>()) {
        exercise(&text);
    }

    #[test]
    fn license_shaped_strings(text in "([A-Za-z0-9_=.\"#\\\\ \t-]{0,12}(\n|\r\n|\\\\\n)?){0,12}") {
        exercise(&text);
    }

    #[test]
    fn mutations_of_a_valid_file(edits in prop::collection::vec(edit(), 1..6)) {
        exercise(&apply(SAMPLE, &edits));
    }

    #[test]
    fn mutations_of_a_signed_file(edits in prop::collection::vec(edit(), 1..6)) {
        exercise(&apply(&SIGNED_SAMPLE, &edits));
    }
}
