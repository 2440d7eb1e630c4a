//! The server's part of the output: its name and port as the lines print them, the
//! `License server status:` section through the vendor daemon lines, and what is printed
//! when the server cannot be reached.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, TimeZone};
use usher_client::StatusReport;

use super::text::{LMSTAT_COMPAT_VERSION, header};
use crate::show::clean;

/// What `lmstat` prints when the server cannot be reached: the header, the server asked
/// for, and FlexLM's `Error getting status` line with its error code (`-15`, "cannot
/// connect"). `detail` is the connection error's text: a refused connection and a timeout
/// get FlexLM's exact wording, anything else is quoted after the refused-connection code.
/// The caller exits non-zero.
pub fn render_unreachable<Tz: TimeZone>(
    server_spec: &str,
    detail: &str,
    now_local: DateTime<Tz>,
) -> String {
    let lower = detail.to_ascii_lowercase();
    let (code, text): (&str, Cow<'_, str>) = if lower.contains("refused") {
        ("-15,570:111", "Connection refused".into())
    } else if lower.contains("timed out") || lower.contains("timeout") {
        ("-15,10:110", "Connection timed out".into())
    } else {
        // Quotes would end FlexLM's quoted string early; control characters would break
        // the line.
        let text: String = detail
            .chars()
            .map(|c| {
                if c == '"' {
                    '\''
                } else if c.is_control() {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        ("-15,570:111", text.into())
    };
    let mut out = header(&now_local);
    let _ = writeln!(out, "License server status: {server_spec}");
    let _ = writeln!(
        out,
        "Error getting status: Cannot connect to license server ({code} \"{text}\")"
    );
    out
}

/// The server's host name and port as the user lines and status lines print them.
pub(super) struct ServerName {
    /// `port@host[,...]` for `License server status:`.
    spec: String,
    pub(super) host: String,
    pub(super) port: u32,
}

impl ServerName {
    pub(super) fn of(report: &StatusReport, server_spec: &str) -> Self {
        // The first `port@host` of the spec stands in for what the report leaves empty.
        let first = server_spec.split(',').next().unwrap_or_default();
        let (spec_port, spec_host) = first.split_once('@').unwrap_or(("", ""));
        let host = if !report.server_name.is_empty() {
            clean(&report.server_name, "").into_owned()
        } else if !spec_host.is_empty() {
            spec_host.to_owned()
        } else {
            "localhost".to_owned()
        };
        let port = if report.port != 0 {
            report.port
        } else {
            spec_port.parse().unwrap_or(0)
        };
        let spec = if server_spec.is_empty() {
            format!("{port}@{host}")
        } else {
            server_spec.to_owned()
        };
        ServerName { spec, host, port }
    }
}

/// `License server status:` through the vendor daemon lines.
pub(super) fn server_section(out: &mut String, report: &StatusReport, server: &ServerName) {
    let host = &server.host;
    let _ = writeln!(out, "License server status: {}", server.spec);
    let mut files = String::new();
    for file in &report.license_files {
        files.push_str(&clean(file, ""));
        files.push(':');
    }
    let _ = writeln!(out, "    License file(s) on {host}: {files}");
    out.push('\n');
    let _ = writeln!(
        out,
        "{host}: license server UP (MASTER) v{LMSTAT_COMPAT_VERSION}"
    );
    out.push('\n');
    let _ = writeln!(out, "Vendor daemon status (on {host}):");
    out.push('\n');
    // A report without a vendor list still names each pool's vendor.
    let mut vendors: Vec<&str> = report.vendors.iter().map(String::as_str).collect();
    if vendors.is_empty() {
        for pool in &report.features {
            if !vendors.contains(&pool.vendor.as_str()) {
                vendors.push(&pool.vendor);
            }
        }
    }
    for vendor in vendors {
        let _ = writeln!(
            out,
            "  {}: UP v{LMSTAT_COMPAT_VERSION}",
            clean(vendor, "unknown")
        );
    }
}
