//! Output hygiene: every command ends quietly when its reader goes away, and start-up
//! errors are said once.

use std::process::Stdio;

use crate::util::{Licensed, Timings, command, output, usher, usherd_bin};

/// Runs `usher args` with its standard output a pipe whose reading end is already closed
/// (as `usher ... | head -0` would leave it), and asserts a quiet exit 0.
#[track_caller]
fn quiet_on_a_closed_pipe(args: &[&str]) {
    let (reader, writer) = std::io::pipe().expect("creating a pipe");
    drop(reader);
    let mut cmd = usher(args);
    cmd.stdout(Stdio::from(writer));
    let outcome = output(cmd);
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(
        !outcome.stderr.contains("panicked") && !outcome.stderr.contains("Broken pipe"),
        "{outcome}"
    );
}

#[test]
fn every_command_exits_quietly_when_its_reader_goes_away() {
    let fixture = Licensed::start(Timings::LONG);
    let server = &fixture.server;
    let spec = server.spec();
    let data_dir = server.data_dir_arg();
    let keys = tempfile::tempdir().unwrap();
    let keys_dir = keys.path().to_str().unwrap();
    quiet_on_a_closed_pipe(&["--help"]);
    quiet_on_a_closed_pipe(&["hostid"]);
    quiet_on_a_closed_pipe(&["vendor", "keygen", "--vendor", "acme", "--out", keys_dir]);
    quiet_on_a_closed_pipe(&["status", "-c", &spec]);
    quiet_on_a_closed_pipe(&["status", "--json", "-c", &spec]);
    quiet_on_a_closed_pipe(&["lmstat", "-a", "-c", &spec]);
    quiet_on_a_closed_pipe(&["reload", "--data-dir", &data_dir]);
    quiet_on_a_closed_pipe(&["report", "--data-dir", &data_dir]);
    quiet_on_a_closed_pipe(&["log", "export", "--data-dir", &data_dir]);
    quiet_on_a_closed_pipe(&["log", "verify", "--data-dir", &data_dir]);
    quiet_on_a_closed_pipe(&["borrow", "--list"]);

    // One exit code for "nothing removed", however the lease was named.
    let by_handle = crate::util::run_usher(&["remove", "99999", "--data-dir", &data_dir]);
    let by_holder =
        crate::util::run_usher(&["remove", "cad", "nobody", "vm", "--data-dir", &data_dir]);
    assert_eq!(by_handle.code, Some(1), "{by_handle}");
    assert_eq!(by_holder.code, Some(1), "{by_holder}");
    assert!(by_handle.stderr.contains("not held"), "{by_handle}");
}

#[test]
fn usherd_says_a_start_up_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let license = dir.path().join("a.lic");
    std::fs::write(&license, "FEATURE a acme 1 permanent 1 HOSTID=ANY\n").unwrap();
    let missing_key = dir.path().join("nope.pub");
    let missing_license = dir.path().join("nolic");
    for (lic, key) in [(&license, Some(&missing_key)), (&missing_license, None)] {
        let mut cmd = command(usherd_bin());
        cmd.arg("--license").arg(lic);
        if let Some(key) = key {
            cmd.arg("--vendor-key").arg(key);
        }
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "off",
                "--log",
                "warn",
            ])
            .env("RUST_BACKTRACE", "0");
        let outcome = output(cmd);
        assert_eq!(outcome.code, Some(1), "{outcome}");
        let errors: Vec<&str> = outcome
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(errors.len(), 1, "one line\n{outcome}");
        let line = errors[0];
        assert!(line.starts_with("usherd: "), "{outcome}");
        assert_eq!(line.matches("No such file").count(), 1, "{outcome}");
        let name = if lic == &license { "nope.pub" } else { "nolic" };
        assert_eq!(line.matches(name).count(), 1, "{outcome}");
    }
}

#[test]
fn a_missing_key_file_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let license = dir.path().join("a.lic");
    std::fs::write(&license, "FEATURE a acme 1 permanent 1 HOSTID=ANY\n").unwrap();
    let mut cmd = usher(&["license", "check"]);
    cmd.arg(&license)
        .arg("--vendor-key")
        .arg(dir.path().join("nope.pub"));
    let outcome = output(cmd);
    assert_eq!(outcome.code, Some(1), "{outcome}");
    assert_eq!(outcome.stderr.matches("nope.pub").count(), 1, "{outcome}");
    assert_eq!(
        outcome.stderr.matches("No such file").count(),
        1,
        "{outcome}"
    );
}
