//! Replays the fuzz targets' committed corpora (`fuzz/corpus/frame`, `fuzz/corpus/message`)
//! as ordinary tests, so every input a fuzzer ever found interesting keeps being checked
//! on stable Rust, without the fuzzer.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("reading a corpus file");
            (p, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    inputs
}

#[test]
fn frame_corpus_never_panics() {
    for (path, bytes) in corpus("frame") {
        let outcome = std::panic::catch_unwind(|| usher_proto::fuzzing::decode_stream(&bytes));
        assert!(
            outcome.is_ok(),
            "frame decoder panicked on {}",
            path.display()
        );
    }
}

#[test]
fn message_corpus_never_panics() {
    for (path, bytes) in corpus("message") {
        let outcome = std::panic::catch_unwind(|| usher_proto::fuzzing::decode_message(&bytes));
        assert!(
            outcome.is_ok(),
            "message decoder panicked on {}",
            path.display()
        );
    }
}
