//! `usher borrow`: a seat borrowed from a real server keeps working with the server
//! stopped, survives the server's restart, and goes back early with `--return`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::util::{Outcome, Server, Timings, Vendor, feature_of, free_port, output, usher};

/// `usher args` with borrow tokens kept in `tokens`.
fn borrower(tokens: &Path, args: &[&str]) -> Outcome {
    let mut cmd: Command = usher(args);
    cmd.env("USHER_BORROW_DIR", tokens);
    output(cmd)
}

#[test]
fn a_borrow_works_offline_survives_a_restart_and_returns_early() {
    let vendor = Vendor::new("acme");
    let data = tempfile::tempdir().unwrap();
    let tokens = tempfile::tempdir().unwrap();
    let tokens = tokens.path();
    let key = vendor.public_key();
    let key = key.to_str().unwrap();

    // A first start makes the server's identity; the vendor then binds the license to it.
    let unbound = vendor.sign("first.lic", "FEATURE cad acme 2025 permanent 2 BORROW=24\n");
    let mut first = Server::start_in(&vendor, &unbound, Timings::LONG, data.path());
    first.shutdown();
    let id = std::fs::read_to_string(data.path().join("identity.id")).unwrap();
    let license = vendor.sign(
        "cad.lic",
        &format!(
            "FEATURE cad acme 2025 permanent 2 HOSTID={} BORROW=24\n",
            id.trim()
        ),
    );
    let mut server = Server::start_in(&vendor, &license, Timings::LONG, data.path());
    let spec = server.spec();

    // Longer than BORROW=24 allows: a borrow refusal (exit 9), saying the limit.
    let long = borrower(tokens, &["borrow", "-c", &spec, "cad", "--for", "2d"]).expect_code(9);
    assert!(long.stderr.contains("at most 24 hours"), "{long}");

    let done = borrower(tokens, &["borrow", "-c", &spec, "cad", "--for", "2h"]).ok();
    assert!(
        done.stdout.contains("borrowed 1 seat of cad v2025"),
        "{done}"
    );
    let token = tokens.join("cad.borrow");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token is the user's alone");
    // Borrowing again while the first borrow lasts is refused locally.
    borrower(tokens, &["borrow", "-c", &spec, "cad", "--for", "1h"]).expect_code(1);

    // The seat is held on the server (the borrowing command has long said goodbye), and
    // status says until when.
    server.wait_in_use("cad", 1);
    let status = server.status();
    let holder = &feature_of(&status, "cad")["holders"][0];
    assert!(holder["borrowed_until"].is_string(), "{status:#}");

    // With the server stopped, the application runs on the borrowed seat.
    server.shutdown();
    let offline = borrower(
        tokens,
        &[
            "run",
            "-c",
            &spec,
            "--vendor-key",
            key,
            "cad",
            "--",
            "sh",
            "-c",
            "exit 0",
        ],
    )
    .ok();
    assert!(
        offline.stderr.contains("borrowed from USHER_ID="),
        "{offline}"
    );
    // Without the vendor's key nothing can be verified: it needs the (stopped) server.
    borrower(tokens, &["run", "-c", &spec, "cad", "--", "true"]).expect_code(3);
    // A token edited to claim a second seat is refused, and so falls back to the server.
    let text = std::fs::read_to_string(&token).unwrap();
    std::fs::write(&token, text.replace("count 1", "count 2")).unwrap();
    let forged = borrower(
        tokens,
        &["run", "-c", &spec, "--vendor-key", key, "cad", "--", "true"],
    )
    .expect_code(3);
    assert!(forged.stderr.contains("does not verify"), "{forged}");
    std::fs::write(&token, &text).unwrap();

    // After a restart the seat is still borrowed, and can be given back early.
    let server = Server::start_in(&vendor, &license, Timings::LONG, data.path());
    let spec = server.spec();
    server.wait_in_use("cad", 1);
    let listed = borrower(tokens, &["borrow", "--list"]).ok();
    assert!(
        listed.stdout.contains("cad v2025  1 seat  until"),
        "{listed}"
    );
    // Someone else cannot return it: the server keeps the seat, so the token stays.
    let other = output({
        let mut cmd = usher(&["borrow", "-c", &spec, "--return", "cad"]);
        cmd.env("USHER_BORROW_DIR", tokens)
            .env("USER", "somebody-else");
        cmd
    })
    .expect_code(1);
    assert!(other.stderr.contains("the local token is kept"), "{other}");
    assert!(token.exists(), "the borrower's token survives\n{other}");
    server.wait_in_use("cad", 1);
    let back = borrower(tokens, &["borrow", "-c", &spec, "--return", "cad"]).ok();
    assert!(back.stdout.contains("returned 1 borrowed seat"), "{back}");
    server.wait_in_use("cad", 0);
    assert!(!token.exists(), "the token is removed");
    let again = borrower(tokens, &["borrow", "-c", &spec, "--return", "cad"]).ok();
    assert!(again.stdout.contains("holds no borrow"), "{again}");
}

#[test]
fn a_license_without_borrow_lends_nothing() {
    let vendor = Vendor::new("acme");
    let data = tempfile::tempdir().unwrap();
    let tokens = tempfile::tempdir().unwrap();
    let license = vendor.sign("cad.lic", "FEATURE cad acme 2025 permanent 2\n");
    let server = Server::start_in(&vendor, &license, Timings::LONG, data.path());
    let refused = borrower(
        tokens.path(),
        &["borrow", "-c", &server.spec(), "cad", "--for", "1h"],
    )
    .expect_code(9);
    assert!(
        refused.stderr.contains("does not allow borrowing"),
        "{refused}"
    );
    assert!(!tokens.path().join("cad.borrow").exists());
    // And an unreachable server leaves nothing behind either.
    let spec = format!("{}@127.0.0.1", free_port());
    borrower(
        tokens.path(),
        &["borrow", "-c", &spec, "cad", "--for", "1h"],
    )
    .expect_code(3);
}
