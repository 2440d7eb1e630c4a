//! README's exit-code table, command by command: one table of (command line, outcome,
//! code), each row run as a real `usher` process against a real server.

use crate::util::{Holder, Server, Timings, Vendor, free_port, run_usher};

#[test]
fn each_command_exits_with_the_documented_code_for_each_outcome() {
    let vendor = Vendor::new("acme");
    let license = vendor.sign(
        "codes.lic",
        "FEATURE cad acme 2025 permanent 1 HOSTID=ANY\n\
         FEATURE free acme 2025 permanent 2 HOSTID=ANY\n\
         FEATURE pol acme 2025 permanent 2 HOSTID=ANY\n",
    );
    let policy = vendor.dir.path().join("codes.opt");
    // Only a user no test runs as may use `pol`: everyone else is refused by policy.
    std::fs::write(&policy, "INCLUDE pol USER nobody-else\n").unwrap();
    let server = Server::start_with(
        &vendor,
        &license,
        Timings::LONG,
        &["--policy", policy.to_str().unwrap()],
    );
    let spec = server.spec();
    let data_dir = server.data_dir_arg();
    let _holder = Holder::spawn(&server, "cad", &["sleep", "60"]);
    server.wait_in_use("cad", 1);

    let unreachable = format!("{}@127.0.0.1", free_port());
    let good = license.to_str().unwrap().to_owned();
    let bad_license = vendor.dir.path().join("bad.lic");
    std::fs::write(
        &bad_license,
        "FEATURE cad acme 2025 permanent 1 BORROW=99999\n",
    )
    .unwrap();
    let bad = bad_license.to_str().unwrap().to_owned();
    let key = vendor.secret_key().to_str().unwrap().to_owned();
    let public = vendor.public_key().to_str().unwrap().to_owned();
    let out = vendor.dir.path().join("out.lic");
    let out = out.to_str().unwrap();

    let s = spec.as_str();
    let u = unreachable.as_str();
    let table: &[(&str, Vec<&str>, i32)] = &[
        (
            "run: granted",
            vec!["run", "-c", s, "free", "--", "true"],
            0,
        ),
        (
            "run: all in use",
            vec!["run", "-c", s, "cad", "--", "true"],
            4,
        ),
        (
            "run: unknown feature",
            vec!["run", "-c", s, "nosuch", "--", "true"],
            5,
        ),
        (
            "run: more than licensed",
            vec!["run", "-c", s, "free", "--count", "3", "--", "true"],
            5,
        ),
        (
            "run: excluded by policy",
            vec!["run", "-c", s, "pol", "--", "true"],
            8,
        ),
        (
            "run: unreachable",
            vec![
                "run",
                "-c",
                u,
                "--connect-deadline",
                "0",
                "free",
                "--",
                "true",
            ],
            3,
        ),
        (
            "run: bad command line",
            vec!["run", "-c", s, "free", "--count", "0", "--", "true"],
            2,
        ),
        ("status: ok", vec!["status", "-c", s], 0),
        ("status: unreachable", vec!["status", "-c", u], 3),
        ("lmstat: ok", vec!["lmstat", "-a", "-c", s], 0),
        ("lmstat: unreachable", vec!["lmstat", "-a", "-c", u], 3),
        (
            "remove: not held",
            vec!["remove", "99999", "--data-dir", &data_dir],
            1,
        ),
        (
            "remove: nobody matching",
            vec!["remove", "cad", "nobody", "vm", "--data-dir", &data_dir],
            1,
        ),
        (
            "log verify: intact",
            vec!["log", "verify", "--data-dir", &data_dir],
            0,
        ),
        (
            "license check: ok",
            vec!["license", "check", &good, "--vendor-key", &public],
            0,
        ),
        (
            "license check: bad line",
            vec!["license", "check", &bad, "--vendor-key", &public],
            6,
        ),
        (
            "vendor sign: bad attribute",
            vec!["vendor", "sign", "--key", &key, "--in", &bad, "--out", out],
            1,
        ),
        ("vendor sign: bad command line", vec!["vendor", "sign"], 2),
        ("hostid: ok", vec!["hostid"], 0),
    ];
    let mut wrong = Vec::new();
    for (what, args, code) in table {
        let outcome = run_usher(args);
        if outcome.code != Some(*code) {
            wrong.push(format!("{what}: expected {code}\n{outcome}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}
