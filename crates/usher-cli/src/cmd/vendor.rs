//! `usher vendor keygen` and `usher vendor sign`.

use std::path::PathBuf;
use usher_license::words::plural;

use anyhow::Context;
use clap::Subcommand;
use usher_license::VendorSigningKey;

use crate::exit::{Failure, OK};

/// Vendor subcommands.
#[derive(Debug, Subcommand)]
pub enum VendorCommand {
    /// Create a vendor key pair: DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub.
    Keygen {
        /// Vendor name, as it appears in license files.
        #[arg(long)]
        vendor: String,
        /// Directory for the key files (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign every unsigned entitlement of a license file.
    Sign {
        /// The vendor's secret key file.
        #[arg(long)]
        key: PathBuf,
        /// License file to sign.
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write the signed file (may be the same as --in).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs a vendor subcommand.
pub fn run(cmd: VendorCommand) -> Result<u8, Failure> {
    match cmd {
        VendorCommand::Keygen { vendor, out } => {
            let (secret, public) = usher_license::keygen(&vendor, &out)
                .with_context(|| format!("creating a key pair for vendor {vendor:?}"))?;
            let key = usher_license::VendorPublicKey::read_from(&public)
                .with_context(|| format!("reading back {}", public.display()))?;
            println!("secret key: {} (keep it private)", secret.display());
            println!(
                "public key: {} (fingerprint {})",
                public.display(),
                key.fingerprint()
            );
            Ok(OK)
        }
        VendorCommand::Sign { key, input, out } => {
            let key = VendorSigningKey::read_from(&key)
                .with_context(|| format!("reading secret key {}", key.display()))?;
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let signed = usher_license::sign_text(&input.display().to_string(), &text, &key)
                .map_err(|e| Failure::new(crate::exit::FAILURE, e.to_string()))?;
            std::fs::write(&out, &signed.text)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "signed {}; {} already signed; wrote {}",
                plural(signed.signed as u64, "entitlement"),
                signed.already_signed,
                out.display()
            );
            Ok(OK)
        }
    }
}
