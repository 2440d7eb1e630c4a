//! Replays the fuzz targets' committed corpora (`fuzz/corpus/frame`, `message`, `datagram`)
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

#[test]
fn datagram_corpus_never_panics() {
    for (path, bytes) in corpus("datagram") {
        let outcome = std::panic::catch_unwind(|| usher_proto::fuzzing::decode_datagram(&bytes));
        assert!(
            outcome.is_ok(),
            "datagram decoders panicked on {}",
            path.display()
        );
    }
}

/// The committed seeds are the datagrams this build makes (so the corpus starts from
/// valid inputs of every kind, and a layout change that forgets them fails here).
#[test]
fn datagram_seeds_are_committed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/datagram");
    for (name, bytes) in usher_proto::fuzzing::datagram_seeds() {
        let committed = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("seed {name} not in {}: {e}", dir.display()));
        assert_eq!(committed, bytes, "seed {name} is stale");
    }
}
