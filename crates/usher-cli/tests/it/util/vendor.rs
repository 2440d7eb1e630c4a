//! A vendor with a key pair and signed licenses, and the license most tests serve.

use std::path::PathBuf;

use tempfile::TempDir;

use super::*;

/// A vendor key pair made with `usher vendor keygen`, and licenses signed with
/// `usher vendor sign`.
pub struct Vendor {
    /// Holds the keys and licenses.
    pub dir: TempDir,
    /// The vendor name.
    pub name: String,
}

impl Vendor {
    /// Creates a key pair for `name` in a fresh temporary directory.
    pub fn new(name: &str) -> Vendor {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let keys = dir.path().join("keys");
        let keys_arg = keys.to_str().expect("temporary paths are UTF-8");
        run_usher(&["vendor", "keygen", "--vendor", name, "--out", keys_arg]).ok();
        Vendor {
            dir,
            name: name.to_owned(),
        }
    }

    /// The secret key file.
    pub fn secret_key(&self) -> PathBuf {
        self.dir
            .path()
            .join("keys")
            .join(format!("{}.key", self.name))
    }

    /// The public key file.
    pub fn public_key(&self) -> PathBuf {
        self.dir
            .path()
            .join("keys")
            .join(format!("{}.pub", self.name))
    }

    /// Writes `text` to `FILE_NAME.unsigned`, signs it into `FILE_NAME` and returns that path.
    pub fn sign(&self, file_name: &str, text: &str) -> PathBuf {
        let input = self.dir.path().join(format!("{file_name}.unsigned"));
        let signed = self.dir.path().join(file_name);
        std::fs::write(&input, text).expect("writing the unsigned license");
        let outcome = output({
            let mut cmd = usher(&["vendor", "sign", "--key"]);
            cmd.arg(self.secret_key())
                .arg("--in")
                .arg(&input)
                .arg("--out")
                .arg(&signed);
            cmd
        })
        .ok();
        assert!(outcome.stdout.contains("signed "), "{outcome}");
        signed
    }
}

/// The license most tests serve: `cad` with two seats, `sim` with five.
pub const TWO_CAD_SEATS: &str = "\
FEATURE cad acme 2025 permanent 2 HOSTID=ANY NOTICE=\"usher tests\"
FEATURE sim acme 1.0 31-dec-2099 5 HOSTID=ANY
";

/// A server for [`TWO_CAD_SEATS`], and the vendor whose key signed it.
pub struct Licensed {
    /// The server (declared first: it stops before the vendor's files go away).
    pub server: Server,
    /// The vendor: keeps the key and the license file for as long as the server runs.
    pub vendor: Vendor,
}

impl Licensed {
    /// Signs [`TWO_CAD_SEATS`] and serves it with `timings`.
    pub fn start(timings: Timings) -> Licensed {
        Licensed::start_with(timings, &[])
    }

    /// Like [`Licensed::start`], with `extra` flags for usherd.
    pub fn start_with(timings: Timings, extra: &[&str]) -> Licensed {
        let vendor = Vendor::new("acme");
        let license = vendor.sign("cad.lic", TWO_CAD_SEATS);
        let server = Server::start_with(&vendor, &license, timings, extra);
        Licensed { server, vendor }
    }
}
