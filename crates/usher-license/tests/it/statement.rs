//! Entitlements written back as lines, and borrow tokens: what a client accepts offline and
//! each forgery it refuses.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use usher_license::{
    BorrowToken, Entitlement, Statement, StatementKind, TokenError, VendorSigningKey, binding_ids,
    usher_id,
};

use crate::util::{SAMPLE, acme_key, other_key, parse_ok, signed};

fn entitlements(text: &str) -> Vec<Entitlement> {
    parse_ok(text).entitlements
}

#[test]
fn every_sample_entitlement_round_trips_through_its_line() {
    for e in entitlements(&signed(SAMPLE)) {
        let line = e.to_line();
        let back = &entitlements(&line)[0];
        assert_eq!(back.canonical_bytes(), e.canonical_bytes(), "{line}");
        assert_eq!(back.signature, e.signature, "{line}");
    }
}

proptest! {
    /// Whatever values a file gives (spaces, `#`, `=`, backslashes, Unicode), the written
    /// line parses back to the same signed content.
    #[test]
    fn lines_round_trip(
        notice in "[ a-zA-Z0-9#=\\\\,.é-]{0,20}",
        value in "[ a-zA-Z0-9#=\\\\,.é-]{0,12}",
        hostid in prop_oneof![Just("ANY".to_string()), "[a-z0-9]{1,8}( [a-z0-9]{1,8}){0,2}"
            .prop_map(|ids| format!("\"USHER_ID={ids}\""))],
    ) {
        let text = format!(
            "FEATURE f v 1.2 permanent 3 START=2026-01-01 NOTICE=\"{notice}\" \
             HOSTID={hostid} VENDOR_STRING=\"{value}\" USER_BASED\n"
        );
        let Ok(file) = usher_license::parse("p.lic", &text) else {
            return Ok(());
        };
        let e = &file.entitlements[0];
        let back = &entitlements(&e.to_line())[0];
        prop_assert_eq!(back.canonical_bytes(), e.canonical_bytes());
    }
}

/// A server identity key, made from a seed.
fn server(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

const NOW: u64 = 1_780_000_000_000; // 2026-05-28
const HOUR: u64 = 3_600_000;

fn host() -> Vec<String> {
    vec![
        "HOSTNAME=ws1".to_string(),
        "ETHER=001a2b3c4d5e".to_string(),
        "MACHINE_ID=0123456789abcdef".to_string(),
    ]
}

/// A license line for `cad` bound to `server`'s id, signed by `vendor`.
fn license_for(server: &SigningKey, vendor: &VendorSigningKey) -> String {
    let id = usher_id(server.verifying_key().as_bytes());
    let text = format!(
        "FEATURE cad {} 2025 31-dec-2027 4 HOSTID={id} BORROW=168\n",
        vendor.vendor()
    );
    let text = usher_license::sign_text("t.lic", &text, vendor)
        .unwrap()
        .text;
    entitlements(&text)[0].to_line()
}

fn token_from(server: &SigningKey, entitlement: String) -> BorrowToken {
    Statement {
        kind: StatementKind::Borrow,
        server_key: server.verifying_key().to_bytes(),
        lease_id: 0x2a,
        session: 0,
        feature: "cad".into(),
        version: "2025".into(),
        count: 1,
        user: "alice".into(),
        host_ids: binding_ids(&host()),
        issued_at_ms: NOW,
        valid_until_ms: NOW + 24 * HOUR,
        entitlement,
        nonce: Vec::new(),
    }
    .sign(server)
}

fn good_token() -> BorrowToken {
    token_from(&server(1), license_for(&server(1), &acme_key()))
}

fn check(token: &BorrowToken, at: u64) -> Result<usher_license::Borrowed, TokenError> {
    token.verify(&[acme_key().public_key()], "cad", "2024", &host(), at)
}

#[test]
fn a_genuine_token_grants_its_feature_on_its_host_until_it_ends() {
    let token = good_token();
    let ok = check(&token, NOW + HOUR).unwrap();
    assert_eq!((ok.feature.as_str(), ok.count), ("cad", 1));
    assert_eq!(ok.until_ms, NOW + 24 * HOUR);
    assert_eq!(ok.server, usher_id(server(1).verifying_key().as_bytes()));
    // The text form reads back to the same token.
    let text = token.to_text();
    assert_eq!(BorrowToken::from_text(&text).unwrap(), token);
    // The lease id as every view shows it (usher_license::words::lease_handle): decimal.
    assert!(text.contains("\nlease-id 42\n"), "{text}");
    // A token written by an earlier usher (`lease` in hex) still reads as the same lease.
    let older = text.replacen("lease-id 42", "lease 2a", 1);
    assert_eq!(BorrowToken::from_text(&older).unwrap(), token);
    assert!(check(&BorrowToken::from_text(&text).unwrap(), NOW).is_ok());
}

#[test]
fn the_token_binds_the_strongest_host_id() {
    assert_eq!(binding_ids(&host()), vec!["MACHINE_ID=0123456789abcdef"]);
    let token = good_token();
    // Same host name and MAC, another machine id: refused.
    let clone = vec!["HOSTNAME=ws1".into(), "MACHINE_ID=ffffffffffffffff".into()];
    let err = token
        .verify(&[acme_key().public_key()], "cad", "", &clone, NOW)
        .unwrap_err();
    assert_eq!(err, TokenError::OtherHost);
}

#[test]
fn an_ended_or_future_token_is_refused() {
    let token = good_token();
    assert!(matches!(
        check(&token, NOW + 24 * HOUR),
        Err(TokenError::Ended { .. })
    ));
    assert_eq!(check(&token, NOW - HOUR), Err(TokenError::NotYetValid));
}

#[test]
fn a_tampered_token_is_refused() {
    let text = good_token().to_text();
    for (from, to) in [
        ("count 1", "count 4"),
        ("until-ms ", "until-ms 9"),
        ("user alice", "user mallory"),
        ("feature cad", "feature cae"),
    ] {
        let edited = text.replacen(from, to, 1);
        assert_ne!(edited, text);
        let token = BorrowToken::from_text(&edited).unwrap();
        assert_eq!(
            check(&token, NOW).unwrap_err(),
            TokenError::BadServerSignature,
            "{from} -> {to}"
        );
    }
}

#[test]
fn a_rogue_server_with_its_own_vendor_key_is_refused() {
    // The rogue signs a license for itself with a key of its own, named "acme".
    let rogue_vendor = VendorSigningKey::from_seed("acme", [99; 32]).unwrap();
    let token = token_from(&server(2), license_for(&server(2), &rogue_vendor));
    assert!(matches!(
        check(&token, NOW),
        Err(TokenError::BadLicenseSignature(_))
    ));
}

#[test]
fn a_genuine_license_lent_by_a_server_it_does_not_bind_is_refused() {
    // The customer's real license (bound to server 1), served by an emulator (server 2).
    let token = token_from(&server(2), license_for(&server(1), &acme_key()));
    assert!(matches!(
        check(&token, NOW),
        Err(TokenError::ServerNotBound { .. })
    ));
}

#[test]
fn a_token_for_another_vendor_or_feature_is_refused() {
    let token = token_from(&server(1), license_for(&server(1), &other_key()));
    assert_eq!(
        check(&token, NOW),
        Err(TokenError::UnknownVendor("other".into()))
    );
    let err = good_token()
        .verify(&[acme_key().public_key()], "solver", "", &host(), NOW)
        .unwrap_err();
    assert!(matches!(err, TokenError::WrongFeature { .. }), "{err}");
    let err = good_token()
        .verify(&[acme_key().public_key()], "cad", "2026", &host(), NOW)
        .unwrap_err();
    assert!(matches!(err, TokenError::WrongFeature { .. }), "{err}");
}

#[test]
fn a_statement_that_outgrows_its_license_is_refused() {
    let server = server(1);
    let mut statement = good_token().statement;
    statement.count = 5; // the license counts 4
    let token = statement.sign(&server);
    assert!(matches!(check(&token, NOW), Err(TokenError::Mismatch(_))));
}

#[test]
fn malformed_token_files_name_the_problem() {
    let text = good_token().to_text();
    for (text, needle) in [
        ("", "line 1"),
        ("usher-borrow-token 1\n", "no kind line"),
        (
            &text.replacen("lease-id 42", "lease-id 0x2a", 1),
            "bad lease-id",
        ),
        (&text.replacen("lease-id 42", "lease zz", 1), "bad lease"),
        (
            &text.replacen("lease-id 42", "lease-id 42\nlease 2a", 1),
            "both",
        ),
        (&format!("{text}count 2\n"), "a second count line"),
    ] {
        let err = BorrowToken::from_text(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
}

const NONCE: &[u8] = b"0123456789abcdef";

/// The statement server `signer` makes for a checkout that sent [`NONCE`] and was granted
/// lease 0x2a with one seat drawn from `entitlement`.
fn grant_from(signer: &SigningKey, entitlement: String) -> usher_license::SignedStatement {
    Statement {
        kind: StatementKind::Grant,
        session: 7,
        host_ids: Vec::new(),
        nonce: NONCE.to_vec(),
        ..token_from(signer, entitlement).statement
    }
    .sign(signer)
}

fn check_grant(
    grant: &usher_license::SignedStatement,
    nonce: &[u8],
) -> Result<usher_license::VerifiedGrant, TokenError> {
    grant.verify_grant(&[acme_key().public_key()], nonce, 0x2a, "cad", 1, NOW)
}

#[test]
fn a_genuine_grant_verifies_against_its_nonce_and_lease() {
    let grant = grant_from(&server(1), license_for(&server(1), &acme_key()));
    let text = grant.to_text();
    assert!(
        text.contains("\nsession 7\n") && text.contains("\nnonce "),
        "{text}"
    );
    let back = usher_license::SignedStatement::from_text(&text).unwrap();
    assert_eq!(back, grant);
    let ok = check_grant(&back, NONCE).unwrap();
    assert_eq!(ok.vendor, "acme");
    assert_eq!(ok.server, usher_id(server(1).verifying_key().as_bytes()));
    assert!(ok.bound);
    assert_eq!(ok.session, 7);
}

#[test]
fn a_replayed_grant_is_refused() {
    let grant = grant_from(&server(1), license_for(&server(1), &acme_key()));
    let err = check_grant(&grant, b"another checkout").unwrap_err();
    assert!(matches!(err, TokenError::NotThisCheckout(_)), "{err}");
    assert!(err.to_string().contains("replayed"), "{err}");
    // The same statement offered for another lease or more seats.
    for (lease, feature, count) in [(0x2b, "cad", 1), (0x2a, "cae", 1), (0x2a, "cad", 2)] {
        let err = grant
            .verify_grant(
                &[acme_key().public_key()],
                NONCE,
                lease,
                feature,
                count,
                NOW,
            )
            .unwrap_err();
        assert!(matches!(err, TokenError::NotThisCheckout(_)), "{err}");
    }
}

#[test]
fn a_tampered_grant_is_refused() {
    let text = grant_from(&server(1), license_for(&server(1), &acme_key())).to_text();
    for (from, to) in [
        ("session 7", "session 8"),
        ("nonce 30", "nonce 31"),
        ("kind grant", "kind borrow"),
    ] {
        let edited = text.replacen(from, to, 1);
        assert_ne!(edited, text, "{from}");
        let grant = usher_license::SignedStatement::from_text(&edited).unwrap();
        let err = grant
            .verify_grant(&[acme_key().public_key()], NONCE, 0x2a, "cad", 1, NOW)
            .unwrap_err();
        assert!(
            matches!(
                err,
                TokenError::BadServerSignature | TokenError::WrongKind { .. }
            ),
            "{from} -> {to}: {err}"
        );
    }
}

#[test]
fn a_grant_from_a_rogue_or_unbound_server_is_refused() {
    let rogue_vendor = VendorSigningKey::from_seed("acme", [99; 32]).unwrap();
    let rogue = grant_from(&server(2), license_for(&server(2), &rogue_vendor));
    assert!(matches!(
        check_grant(&rogue, NONCE),
        Err(TokenError::BadLicenseSignature(_))
    ));
    let emulator = grant_from(&server(2), license_for(&server(1), &acme_key()));
    assert!(matches!(
        check_grant(&emulator, NONCE),
        Err(TokenError::ServerNotBound { .. })
    ));
}

#[test]
fn a_borrow_token_is_not_a_grant_nor_a_grant_a_borrow_token() {
    let token = good_token();
    assert!(matches!(
        check_grant(&token, b""),
        Err(TokenError::WrongKind {
            wanted: "grant",
            ..
        })
    ));
    let grant = grant_from(&server(1), license_for(&server(1), &acme_key()));
    assert!(matches!(
        check(&grant, NOW),
        Err(TokenError::WrongKind {
            wanted: "borrow",
            ..
        })
    ));
}
