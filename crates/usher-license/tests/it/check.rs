//! Checking entitlements against trusted keys and a date.

use usher_license::{SignatureError, Status, VendorSigningKey, check, verify};

use crate::util::{SAMPLE, acme_key, checked, date, other_key, parse_ok, signed, statuses};

#[test]
fn dates_are_inclusive_in_utc_days() {
    let text = signed("FEATURE a acme 1 31-dec-2027 3 START=2026-01-01\n");
    let on = |y, m, d| statuses(&text, date(y, m, d))[0];
    assert_eq!(on(2025, 12, 31), Status::NotYetStarted(date(2026, 1, 1)));
    assert_eq!(on(2026, 1, 1), Status::Valid);
    assert_eq!(on(2027, 12, 31), Status::Valid);
    assert_eq!(on(2028, 1, 1), Status::Expired(date(2027, 12, 31)));
}

#[test]
fn predicates() {
    assert!(Status::Valid.signature_ok() && Status::Valid.is_valid_now());
    for status in [
        Status::Expired(date(2020, 1, 1)),
        Status::NotYetStarted(date(2030, 1, 1)),
    ] {
        assert!(
            status.signature_ok() && !status.is_valid_now(),
            "{status:?}"
        );
    }
    for status in [
        Status::Unsigned,
        Status::UnknownVendor,
        Status::BadSignature,
    ] {
        assert!(
            !status.signature_ok() && !status.is_valid_now(),
            "{status:?}"
        );
    }
}

#[test]
fn unsigned_unknown_vendor_and_wrong_key() {
    let theirs = usher_license::sign_text(
        "t",
        "FEATURE x stranger 1 permanent 1\n",
        &VendorSigningKey::from_seed("stranger", [3; 32]).unwrap(),
    )
    .unwrap()
    .text;
    // Signed with a key that claims to be acme's but is not the trusted one.
    let impostor = VendorSigningKey::from_seed("acme", [4; 32]).unwrap();
    let forged = usher_license::sign_text("t", "FEATURE y acme 1 permanent 1000\n", &impostor)
        .unwrap()
        .text;
    let text = format!("{theirs}{forged}FEATURE z acme 1 permanent 1\n");
    let results = checked(&text, date(2026, 1, 1));
    let shown: Vec<String> = results.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "line 1: feature \"x\": no trusted public key for vendor \"stranger\"",
            "line 6: feature \"y\": signature does not verify (tampered or wrong vendor key)",
            "line 11: feature \"z\": not signed (no SIGN= attribute)",
        ]
    );
}

#[test]
fn display_of_dates() {
    let text =
        signed("FEATURE a acme 1 31-dec-2027 3\nFEATURE b acme 1 permanent 3 START=1-jan-2030\n");
    let shown: Vec<String> = checked(&text, date(2028, 1, 1))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            "line 1: feature \"a\": expired on 2027-12-31",
            "line 6: feature \"b\": not valid before 2030-01-01"
        ]
    );
}

#[test]
fn any_trusted_key_of_the_vendor_verifies() {
    let old = VendorSigningKey::from_seed("acme", [5; 32]).unwrap();
    let text = usher_license::sign_text("t", SAMPLE, &old).unwrap().text;
    let file = parse_ok(&text);
    let keys = [
        acme_key().public_key(),
        other_key().public_key(),
        old.public_key(),
    ];
    let results = check(&file, &keys, date(2026, 6, 1));
    assert!(
        results.iter().all(|c| c.status == Status::Valid),
        "{results:?}"
    );
    let results = check(&file, &keys[..2], date(2026, 6, 1));
    assert!(
        results.iter().all(|c| c.status == Status::BadSignature),
        "{results:?}"
    );
}

#[test]
fn verify_checks_the_vendor_name() {
    let file = parse_ok(&signed(SAMPLE));
    let e = &file.entitlements[0];
    assert_eq!(verify(e, &acme_key().public_key()), Ok(()));
    // Same key bytes, but published for another vendor: refused before any crypto.
    let renamed =
        usher_license::VendorPublicKey::from_bytes("other", &acme_key().public_key().to_bytes())
            .unwrap();
    assert_eq!(
        verify(e, &renamed),
        Err(SignatureError::VendorMismatch {
            entitlement: "acme".into(),
            key: "other".into()
        })
    );
    let unsigned = parse_ok(SAMPLE);
    assert_eq!(
        verify(&unsigned.entitlements[0], &acme_key().public_key()),
        Err(SignatureError::Unsigned)
    );
}

#[test]
fn signature_malleability_is_refused() {
    // Adding the group order L to S gives a signature plain `verify` may accept; strict
    // verification must not.
    let text = signed("FEATURE a acme 1 permanent 3\n");
    let mut e = parse_ok(&text).entitlements.remove(0);
    let mut sig = e.signature.unwrap();
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        sig[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    e.signature = Some(sig);
    assert_eq!(
        verify(&e, &acme_key().public_key()),
        Err(SignatureError::Invalid)
    );
}
