//! `usherd --demo`: a working server and license in one command, stable across restarts.

use crate::util::{Server, WAIT, feature_of, poll, run_usher};

#[test]
fn demo_serves_a_ready_license_and_keeps_its_key_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut first = Server::demo(&data_dir);
    poll("usherd --demo to print what to try", WAIT, || {
        let out = first.stdout();
        if out.contains("usher -- run cad") {
            Ok(())
        } else {
            Err(format!("stdout:\n{out}\n--- log ---\n{}", first.log()))
        }
    });

    let table = run_usher(&["status", "-c", &first.spec()]).ok();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("cad ") && l.contains(" 0 of 3 seats in use")),
        "{table}"
    );
    assert!(
        table.stdout.lines().any(|l| l.starts_with("sim ")),
        "{table}"
    );
    let json = first.status();
    assert_eq!(feature_of(&json, "cad")["total"], 3, "{json:#}");
    assert!(
        feature_of(&json, "sim")["total"].as_u64() > Some(0),
        "{json:#}"
    );

    let public_key = data_dir.join("demo").join("demo.pub");
    let key_before = std::fs::read(&public_key)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", public_key.display(), first.stdout()));
    first.shutdown();

    let second = Server::demo(&data_dir);
    let key_after = std::fs::read(&public_key).unwrap();
    assert!(
        key_before == key_after,
        "the demo key was regenerated on restart"
    );
    let json = second.status();
    assert_eq!(feature_of(&json, "cad")["total"], 3, "{json:#}");
}
