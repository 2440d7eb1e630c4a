//! Replays the policy-parser fuzz target's committed corpus (`fuzz/corpus/policy`) as an
//! ordinary test, on stable Rust.

use std::path::PathBuf;

use usher_core::{Policy, Who};

#[test]
fn policy_corpus_never_panics() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/policy");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let text =
            String::from_utf8_lossy(&std::fs::read(&path).expect("a corpus file")).into_owned();
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(policy) = Policy::parse("fuzz.opt", &text) {
                let who = Who {
                    user: "alice",
                    host: "ws1",
                    display: ":0",
                    address: "10.1.2.3:4000",
                };
                let _ = policy.excluded("cad", &who);
                let _ = policy.priority("cad", &who);
                let _ = policy.named_users("cad");
            }
        });
        assert!(
            outcome.is_ok(),
            "the policy parser panicked on {}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen > 0, "no corpus in {}", dir.display());
}
