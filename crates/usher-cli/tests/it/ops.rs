//! Operations: `usher backup` of a server under load and `usher restore` into a stopped
//! one; `usher import flexlm` of realistic FlexNet files.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{Holder, Server, Timings, Vendor, output, run_usher, usher, usherd_bin};

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// The permission bits of `p`.
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A busy client: `usher run cad -- true`, `rounds` times in a row.
fn churn(server: &Server, rounds: u32) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for i in $(seq {rounds}); do \"$0\" run -c {} --wait 5 cad -- true || exit 1; done",
            server.spec()
        ))
        .arg(crate::util::usher_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting a busy client")
}

#[test]
fn a_backup_under_load_verifies_and_a_server_restored_from_it_serves_the_same_leases() {
    let vendor = Vendor::new("acme");
    let license = vendor.sign("acme.lic", "FEATURE cad acme 2025 permanent 6 HOSTID=ANY\n");
    let data = tempfile::tempdir().unwrap();
    let live_dir = data.path().join("live");
    let mut server = Server::start_in(&vendor, &license, Timings::LONG, &live_dir);
    let _a = Holder::spawn(&server, "cad", &["sleep", "600"]);
    let _b = Holder::spawn(&server, "cad", &["sleep", "600"]);
    server.wait_in_use("cad", 2);

    let mut busy: Vec<_> = (0..2).map(|_| churn(&server, 15)).collect();
    // Copies taken while the clients check out and in.
    for n in 0..3 {
        let out = data.path().join(format!("during-{n}.db"));
        let done = run_usher(&["backup", "--data-dir", path(&live_dir), "--out", path(&out)]).ok();
        assert!(done.stdout.contains("chain intact"), "{done}");
        let check = usher_store::check_copy(&out).unwrap_or_else(|e| panic!("{e}\n{done}"));
        assert!(
            check.leases >= 2,
            "the held seats are in the copy: {check:?}"
        );
        assert!(!out.with_extension("db.partial").exists());
    }
    for mut b in busy.drain(..) {
        assert!(b.wait().unwrap().success(), "a busy client failed");
    }
    server.wait_in_use("cad", 2);
    let copy = data.path().join("final.db");
    // Under the usual umask 022 a new file is world-readable; a copy of the store holds
    // every holder's user, host and address, so it must not be.
    let mut backup = Command::new("sh");
    backup
        .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .arg(crate::util::usher_bin())
        .args([
            "backup",
            "--data-dir",
            path(&live_dir),
            "--out",
            path(&copy),
        ]);
    output(backup).ok();
    assert_eq!(mode(&copy), 0o600, "the backup is private");
    let copied = usher_store::SqliteStore::open_read_only(&copy)
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(copied.leases.len(), 2, "{:?}", copied.leases);

    // Not into the data directory of a running server.
    let refused =
        run_usher(&["restore", "--data-dir", path(&live_dir), path(&copy)]).expect_code(1);
    assert!(refused.stderr.contains("stop it first"), "{refused}");

    // A tampered copy is refused with the broken-log code.
    let tampered = data.path().join("tampered.db");
    std::fs::copy(&copy, &tampered).unwrap();
    {
        let conn = rusqlite::Connection::open(&tampered).unwrap();
        conn.execute("UPDATE usage_log SET user = 'mallory' WHERE seq = 2", [])
            .unwrap();
    }
    let restored_dir = data.path().join("restored");
    run_usher(&[
        "restore",
        "--data-dir",
        path(&restored_dir),
        path(&tampered),
    ])
    .expect_code(7);
    assert!(!restored_dir.join("usher.db").exists());

    server.shutdown();
    // A copy that was made readable (copied around, say) is still restored private.
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    run_usher(&["restore", "--data-dir", path(&restored_dir), path(&copy)]).ok();
    assert_eq!(
        mode(&restored_dir.join("usher.db")),
        0o600,
        "the restored store is private"
    );
    assert_eq!(
        mode(&restored_dir),
        0o700,
        "the data directory restore made is private"
    );
    let restored = Server::start_in(&vendor, &license, Timings::LONG, &restored_dir);
    restored.wait_in_use("cad", 2);
    let status = restored.status();
    let holders = crate::util::feature_of(&status, "cad")["holders"].clone();
    let ids: Vec<u64> = holders
        .as_array()
        .unwrap_or_else(|| panic!("{status}"))
        .iter()
        .filter_map(|h| h["handle"].as_str()?.parse().ok())
        .collect();
    let mut expected: Vec<u64> = copied.leases.iter().map(|l| l.id.0).collect();
    let mut got = ids.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "the same leases: {status}");
}

/// A FlexNet file as vendors ship them: SERVER/VENDOR lines with ports and a daemon path,
/// continued lines, SIGN= over several lines, keywords usher has and keywords it lacks.
const FLEXNET: &str = r#"# Acme Engineering license for Example Corp
SERVER licsrv1 0050569a1b2c 27000
VENDOR acmed /opt/acme/bin/acmed OPTIONS=/opt/acme/acmed.opt PORT=27001
USE_SERVER
FEATURE cad acmed 2025.1 31-dec-2027 10 VENDOR_STRING=pro \
	DUP_GROUP=UH ISSUER="Acme Inc" ISSUED=15-jan-2025 \
	NOTICE="Example Corp, site license" SN=12345-ABC TS_OK \
	asset_info="rack 4" SIGN="0123 4567 89AB CDEF 0123 4567 89AB CDEF \
	0123 4567 89AB CDEF 0123 4567 89AB CDEF"
INCREMENT cad acmed 2025.1 permanent 5 START=1-jan-2026 HOSTID=ANY \
	BORROW=72 SIGN="ABCD EF01"
FEATURE solver acmed 3.0 1-jan-0 uncounted 46499B9E717E \
	HOSTID=e4a4716b48d8 FLOAT_OK SIGN="08EF B762"
PACKAGE suite acmed 1.0 COMPONENTS="cad solver" SIGN="00"
"#;

const OPTIONS: &str = "\
# Acme options file
GROUPCASEINSENSITIVE ON
GROUP designers alice bob
RESERVE 2 cad GROUP designers
MAX 4 cad USER carol
TIMEOUT cad 3600
REPORTLOG +/var/log/acme.rl
INCLUDE_BORROW cad \\
    USER alice
EXCLUDE cad HOST kiosk1
";

#[test]
fn a_flexnet_file_becomes_unsigned_entitlements_a_vendor_signs_and_usherd_serves() {
    let vendor = Vendor::new("acmed");
    let dir = vendor.dir.path();
    let flex = dir.join("flex.lic");
    std::fs::write(&flex, FLEXNET).unwrap();
    let converted = dir.join("converted.lic");
    let done = run_usher(&["import", "flexlm", path(&flex), "--out", path(&converted)]).ok();
    let text = std::fs::read_to_string(&converted).unwrap();
    for kept in [
        "FEATURE cad acmed 2025.1 31-dec-2027 10",
        "VENDOR_STRING=pro",
        "DUP_GROUP=UH",
        "NOTICE=\"Example Corp, site license\"",
        "asset_info=\"rack 4\"",
        "INCREMENT cad acmed 2025.1 permanent 5 START=1-jan-2026 HOSTID=ANY",
        "BORROW=72",
        "FEATURE solver acmed 3.0 permanent uncounted",
        "HOSTID=ETHER=e4a4716b48d8",
        "SERVER licsrv1 ANY 1648",
    ] {
        assert!(text.contains(kept), "{kept:?} missing\n{text}\n{done}");
    }
    for gone in [
        "SIGN=",
        "TS_OK",
        "FLOAT_OK",
        "46499B9E717E",
        "PACKAGE",
        "27000",
    ] {
        assert!(!text.contains(gone), "{gone:?} carried over\n{text}");
    }
    for listed in [
        "flex.lic:7:",
        "TS_OK dropped",
        "FLOAT_OK dropped",
        "positional license key",
        "PACKAGE line skipped",
        "SERVER: host id 0050569a1b2c and port 27000",
    ] {
        assert!(
            done.stderr.contains(listed),
            "{listed:?} not listed\n{done}"
        );
    }

    // The vendor signs it; usherd serves what it says.
    let signed = dir.join("signed.lic");
    let outcome = output({
        let mut cmd = usher(&["vendor", "sign", "--key", path(&vendor.secret_key())]);
        cmd.args(["--in", path(&converted), "--out", path(&signed)]);
        cmd
    });
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let check = output({
        let mut cmd = Command::new(usherd_bin());
        cmd.args(["check", "--license", path(&signed), "--vendor-key"])
            .arg(vendor.public_key())
            .arg("--data-dir")
            .arg(dir.join("data"));
        cmd
    });
    assert_eq!(check.code, Some(0), "{check}");
    assert!(
        check
            .stdout
            .contains("serving: acmed cad 2025.1 10 seat(s), until 2027-12-31"),
        "{check}"
    );

    // The options file: unsupported keywords listed with their place; the rest is usher's.
    let options = dir.join("acmed.opt");
    std::fs::write(&options, OPTIONS).unwrap();
    let checked = run_usher(&[
        "import",
        "flexlm",
        path(&flex),
        "--out",
        path(&converted),
        "--options",
        path(&options),
    ])
    .expect_code(1);
    assert!(
        checked
            .stderr
            .contains("acmed.opt:7:1: REPORTLOG is not supported"),
        "{checked}"
    );
    assert!(
        checked
            .stderr
            .contains("acmed.opt:8:1: INCLUDE_BORROW is not supported"),
        "{checked}"
    );
    assert_eq!(
        checked.stderr.matches("acmed.opt:").count(),
        2,
        "only the two unsupported lines: {checked}"
    );
}
