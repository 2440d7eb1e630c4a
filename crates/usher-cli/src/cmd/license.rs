//! `usher license check`.

use std::path::PathBuf;
use usher_license::words::plural;

use anyhow::Context;
use clap::Subcommand;
use usher_license::{Expiry, HostId, SeatCount, VendorPublicKey};

use crate::exit::{BAD_LICENSE, Failure, OK};

/// License subcommands.
#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Verify and pretty-print each entitlement; exit 6 if any is bad (signature, an
    /// attribute's value) or not valid today.
    Check {
        /// License file.
        file: PathBuf,
        /// Vendor public key(s) to verify against (repeatable).
        #[arg(long = "vendor-key", required = true)]
        vendor_keys: Vec<PathBuf>,
    },
}

/// Runs a license subcommand.
pub fn run(cmd: LicenseCommand) -> Result<u8, Failure> {
    let LicenseCommand::Check { file, vendor_keys } = cmd;
    let keys = vendor_keys
        .iter()
        .map(|p| VendorPublicKey::read_from(p).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>, _>>()?;
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let parsed = usher_license::parse(&file.display().to_string(), &text)
        .map_err(|e| Failure::new(BAD_LICENSE, e.to_string()))?;
    let today = chrono::Utc::now().date_naive();
    let checked = usher_license::check(&parsed, &keys, today);
    let mut bad = 0;
    for (index, c) in checked.iter().enumerate() {
        let e = &c.entitlement;
        let problems: Vec<_> = parsed
            .attribute_problems
            .iter()
            .filter(|p| p.entitlement == index)
            .collect();
        let ok = c.status.signature_ok() && c.status.is_valid_now() && problems.is_empty();
        if !ok {
            bad += 1;
        }
        let count = match e.count {
            SeatCount::Counted(n) => format!("{n} seat{}", if n == 1 { "" } else { "s" }),
            SeatCount::Uncounted => "uncounted (node-locked)".to_string(),
            SeatCount::Token => format!("token-based ({})", e.attr("TOKEN").unwrap_or("")),
        };
        let expiry = match e.expiry {
            Expiry::Permanent => "permanent".to_string(),
            Expiry::On(d) => format!("until {d}"),
        };
        let host = match &e.hostid {
            HostId::Any => "ANY".to_string(),
            HostId::Id(id) => id.clone(),
        };
        println!(
            "{mark} line {line}: {kind:?} {feature} v{version} ({vendor}), {count}, {expiry}, HOSTID={host}",
            mark = if ok { "ok " } else { "BAD" },
            line = e.line,
            kind = e.kind,
            feature = e.feature,
            version = e.version,
            vendor = e.vendor,
        );
        if let Some(start) = e.start {
            println!("      starts {start}");
        }
        if let Some(notice) = &e.notice {
            println!("      notice: {notice}");
        }
        for (k, v) in &e.attrs {
            println!("      {k}={v}");
        }
        if !(c.status.signature_ok() && c.status.is_valid_now()) {
            println!("      problem: {}", c.status);
        }
        for p in problems {
            println!("      problem: {p}");
        }
    }
    println!(
        "{}: {}, {} ok, {} bad",
        file.display(),
        plural(checked.len() as u64, "entitlement"),
        checked.len() - bad,
        bad
    );
    Ok(if bad == 0 { OK } else { BAD_LICENSE })
}
