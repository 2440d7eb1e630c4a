//! `usherd --demo`: a demo vendor, key and signed license, created once in the data
//! directory and reused afterwards, so a newcomer can try everything in one command.

use std::path::{Path, PathBuf};

use usher_license::{VendorPublicKey, VendorSigningKey};

/// Vendor name of the demo license.
pub const DEMO_VENDOR: &str = "demo";

/// The demo license before signing. `cad` has only three seats so that a fourth
/// checkout is refused; `sim` shows INCREMENT lines adding seats to one pool.
const DEMO_LICENSE: &str = "\
# usher demo license, signed by a demo vendor key generated on this machine.
# Try: usher run cad -- sleep 60   (a fourth concurrent run is refused)
FEATURE cad demo 2025 permanent 3 HOSTID=ANY NOTICE=\"usher demo\"
FEATURE sim demo 2025.10 31-dec-2099 6 HOSTID=ANY NOTICE=\"usher demo\"
INCREMENT sim demo 2025.10 31-dec-2099 4 HOSTID=ANY NOTICE=\"usher demo\"
";

/// Paths of the demo material.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The demo vendor's public key.
    pub public_key: PathBuf,
    /// The signed demo license.
    pub license: PathBuf,
}

/// Creates the demo vendor key and signed license under `data_dir/demo`, or reuses them.
pub fn prepare(data_dir: &Path) -> Result<Demo, Box<dyn std::error::Error + Send + Sync>> {
    crate::data_dir::prepare(data_dir)?;
    let dir = data_dir.join("demo");
    crate::data_dir::create_private_dir(&dir)?;
    let secret = dir.join(format!("{DEMO_VENDOR}.key"));
    let public = dir.join(format!("{DEMO_VENDOR}.pub"));
    let license = dir.join("demo.lic");
    if !secret.exists() || !public.exists() {
        let _ = std::fs::remove_file(&secret);
        let _ = std::fs::remove_file(&public);
        let _ = std::fs::remove_file(&license);
        usher_license::keygen(DEMO_VENDOR, &dir)?;
    }
    // Re-sign if the license is missing or was signed by an earlier key.
    let valid = license.exists() && {
        let key = VendorPublicKey::read_from(&public)?;
        let text = std::fs::read_to_string(&license)?;
        let file = usher_license::parse(&license.display().to_string(), &text)?;
        let today = chrono::Utc::now().date_naive();
        usher_license::check(&file, &[key], today)
            .iter()
            .all(|c| c.status.signature_ok())
    };
    if !valid {
        let key = VendorSigningKey::read_from(&secret)?;
        let signed = usher_license::sign_text("demo.lic", DEMO_LICENSE, &key)?;
        std::fs::write(&license, signed.text)?;
    }
    Ok(Demo {
        public_key: public,
        license,
    })
}
