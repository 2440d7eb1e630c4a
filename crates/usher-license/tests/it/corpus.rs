//! Replays the license-parser fuzz target's committed corpus (`fuzz/corpus/license`) as an
//! ordinary test, on stable Rust.

use std::path::PathBuf;

#[test]
fn license_corpus_never_panics() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/license");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let text =
            String::from_utf8_lossy(&std::fs::read(&path).expect("a corpus file")).into_owned();
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(file) = usher_license::parse("fuzz.lic", &text) {
                for e in &file.entitlements {
                    let _ = e.canonical_bytes();
                }
            }
        });
        assert!(outcome.is_ok(), "the parser panicked on {}", path.display());
        seen += 1;
    }
    assert!(seen > 0, "no corpus in {}", dir.display());
}
