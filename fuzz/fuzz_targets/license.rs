//! Arbitrary text through the license-file parser, and the canonical encoding of whatever
//! parses.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(file) = usher_license::parse("fuzz.lic", &text) {
        for e in &file.entitlements {
            let _ = e.canonical_bytes();
        }
    }
});
