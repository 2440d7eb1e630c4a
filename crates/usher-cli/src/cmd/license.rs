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
    /// attribute's value, bound to another host) or not valid today.
    Check {
        /// License file.
        file: PathBuf,
        /// Vendor public key(s) to verify against (repeatable).
        #[arg(long = "vendor-key", required = true)]
        vendor_keys: Vec<PathBuf>,
        /// Judge host-bound lines against these host ids (repeatable, as `usher hostid`
        /// prints them) instead of this machine's: to check a license for another server.
        #[arg(long = "host-id")]
        host_ids: Vec<String>,
        /// A server's data directory: its own id (`USHER_ID=`) counts as one of the host's.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs a license subcommand.
pub fn run(cmd: LicenseCommand) -> Result<u8, Failure> {
    let LicenseCommand::Check {
        file,
        vendor_keys,
        host_ids,
        data_dir,
    } = cmd;
    let (mut ids, whose) = if host_ids.is_empty() {
        (usher_license::host_ids(), "this host")
    } else {
        (host_ids, "the given host ids")
    };
    if let Some(dir) = &data_dir {
        let id = usher_server::identity::host_id_in(dir).ok_or_else(|| {
            Failure::new(
                crate::exit::FAILURE,
                format!(
                    "no server identity in {} (usherd makes it at its first start)",
                    dir.display()
                ),
            )
        })?;
        ids.push(id);
    }
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
        // A host-bound line is served (counted) or runs (uncounted, node-locked) only on
        // a host it names.
        let fits = match &e.hostid {
            HostId::Any => None,
            bound => Some(usher_license::matches_host(bound, &ids)),
        };
        let ok = c.status.signature_ok()
            && c.status.is_valid_now()
            && problems.is_empty()
            && fits != Some(false);
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
        match fits {
            Some(true) => println!("      host: fits {whose}"),
            Some(false) => println!(
                "      problem: bound to another host: HOSTID={} names none of {whose}'s ids ({})",
                match &e.hostid {
                    HostId::Id(id) => id.as_str(),
                    HostId::Any => "ANY",
                },
                ids.join(" ")
            ),
            None => {}
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
