//! Replays the committed corpora of the `config` and `admin_api` fuzz targets
//! (`fuzz/corpus/`) as ordinary tests on stable Rust, through the same entry points the
//! targets use (`usher_server::fuzzing`), so an input that once crashed stays fixed.

use std::path::PathBuf;

/// Every file of `fuzz/corpus/<target>`, with its name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("a corpus file"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

#[test]
fn config_corpus_never_panics_and_accepts_the_packaged_file() {
    let mut outcomes = std::collections::BTreeMap::new();
    for (name, data) in corpus("config") {
        let outcome = std::panic::catch_unwind(|| usher_server::fuzzing::config_file(&data))
            .unwrap_or_else(|_| panic!("the config loader panicked on fuzz/corpus/config/{name}"));
        outcomes.insert(name, outcome.map_err(|e| e.to_string()));
    }
    for must in ["packaged", "every-key"] {
        assert!(
            outcomes[must].is_ok(),
            "{must} is a valid configuration: {:?}",
            outcomes[must]
        );
    }
    for (bad, says) in [
        ("unknown-key", "lisen"),
        ("bad-cidr", "config file"),
        ("invalid-values", "session_ttl"),
    ] {
        let err = outcomes[bad].as_ref().expect_err(bad);
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn admin_api_corpus_gets_well_formed_answers_below_500() {
    let server = usher_server::fuzzing::AdminServer::start();
    let mut statuses = std::collections::BTreeMap::new();
    for (name, data) in corpus("admin_api") {
        match server.send(&data) {
            Ok(status) => {
                statuses.insert(name, status);
            }
            Err(e) => panic!("fuzz/corpus/admin_api/{name}: {e}"),
        }
    }
    // The seeds reach the handlers, not only the router's refusals.
    for (name, want) in [
        ("features", 200),
        ("holders-cad", 200),
        ("queue", 200),
        ("remove-bad-json", 400),
        ("unknown-path", 404),
    ] {
        assert_eq!(statuses.get(name), Some(&want), "{name}: {statuses:?}");
    }
}
