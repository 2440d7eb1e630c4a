//! `usherd check`: loads what the server would serve, through the server's own loading
//! code ([`crate::licenses::load_all`]), and reports it without binding a port, opening the
//! store or writing anything into the data directory.

use std::fmt::Write as _;

use usher_license::{Expiry, SeatCount};

use crate::config::Config;
use crate::licenses::{Loaded, load_all};

/// What a check found.
#[derive(Debug)]
pub struct CheckReport {
    /// What would be served and how, for the administrator to read.
    pub summary: String,
    /// Problems that stop the server or keep an entitlement from being served, each
    /// located (`file:line:column: ...`) where the file has a place to point at.
    pub errors: Vec<String>,
    /// Problems the server starts with (expired or not yet valid entitlements, adjusted
    /// TIMEOUTs), each located.
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// Whether the configuration has no error (warnings allowed).
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The report as printed by `usherd check`: the summary, then one problem a line.
    pub fn render(&self) -> String {
        let mut out = self.summary.clone();
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let _ = writeln!(
            out,
            "{}: {} error(s), {} warning(s)",
            if self.ok() { "ok" } else { "FAILED" },
            self.errors.len(),
            self.warnings.len()
        );
        out
    }
}

/// Checks a validated `config` the way [`crate::Server::bind`] would load it. The server's
/// `USHER_ID=` host id is read from the data directory if the server has started there
/// before; it is never created by a check.
pub fn check(config: &Config) -> CheckReport {
    let mut summary = String::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let _ = writeln!(summary, "listen: {} (TCP and UDP)", config.listen);
    let _ = writeln!(
        summary,
        "admin HTTP: {}",
        config
            .admin_listen
            .map_or("off".to_string(), |a| a.to_string())
    );
    let _ = writeln!(summary, "data directory: {}", config.data_dir.display());
    if config.insecure_plaintext {
        warnings.push(
            "insecure_plaintext is on: clients may connect without TLS; turn it off unless \
             every client is on a trusted network"
                .to_string(),
        );
    }
    if config.license_files.is_empty() {
        errors.push(
            "no license files configured: set license_files in the config file or pass \
             --license FILE"
                .to_string(),
        );
    }
    let host_id = crate::identity::host_id_in(&config.data_dir);
    let _ = writeln!(
        summary,
        "server host id: {}",
        host_id.as_deref().unwrap_or(
            "none yet (made at first start; licenses bound to a USHER_ID= are refused until then)"
        )
    );
    let loaded = load_all(
        &config.license_files,
        &config.vendor_keys,
        config.policy_file.as_deref(),
        config.min_timeout,
        host_id.as_deref().unwrap_or(""),
        chrono::Utc::now().date_naive(),
    );
    match loaded {
        Err(e) => errors.push(e.to_string()),
        Ok(Loaded {
            licenses,
            policy,
            policy_warnings,
        }) => {
            for file in &licenses.files {
                let _ = writeln!(summary, "license file: {}", file.display());
            }
            let _ = writeln!(
                summary,
                "vendors: {}",
                if licenses.vendors.is_empty() {
                    "none".to_string()
                } else {
                    licenses.vendors.join(", ")
                }
            );
            for e in &licenses.entitlements {
                let seats = match e.count {
                    SeatCount::Counted(n) => format!("{n} seat(s)"),
                    SeatCount::Uncounted => "uncounted (node-locked, checked by clients)".into(),
                    SeatCount::Token => "token-based".into(),
                };
                let expiry = match e.expiry {
                    Expiry::Permanent => "permanent".to_string(),
                    Expiry::On(d) => format!("until {d}"),
                };
                let _ = writeln!(
                    summary,
                    "serving: {} {} {} {seats}, {expiry}",
                    e.vendor, e.feature, e.version
                );
            }
            match &config.policy_file {
                Some(path) => {
                    let _ = writeln!(
                        summary,
                        "policy: {} ({} feature(s) with counted rules)",
                        path.display(),
                        policy.counted_features().len()
                    );
                }
                None => {
                    let _ = writeln!(summary, "policy: none (everyone may use everything)");
                }
            }
            if licenses.entitlements.is_empty() {
                warnings.push(
                    "no entitlement is served yet: put license files (*.lic) where \
                     license_files points, then reload (`systemctl reload usherd`)"
                        .to_string(),
                );
            }
            errors.extend(licenses.refused);
            warnings.extend(licenses.warnings);
            warnings.extend(policy_warnings);
        }
    }
    CheckReport {
        summary,
        errors,
        warnings,
    }
}
