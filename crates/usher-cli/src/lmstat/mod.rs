//! FlexLM-compatible `lmstat`: the argument forms real tools use and the exact text they
//! parse.
//!
//! Monitoring tools (Prometheus exporters, Nagios checks, web dashboards) and batch
//! schedulers' license integrations speak no license protocol: they run `lmutil lmstat ...`
//! (or a binary renamed `lmstat`) and apply regular expressions to its output. If usher
//! prints FlexLM's text byte for byte, all of them work unchanged. So in this module
//! **spacing, singular/plural and indentation are the contract**, not a matter of taste:
//! two spaces after `:` and `;` in `Users of` lines, `license` for a count of 1, four spaces
//! before a user line. The tests check the output against the regular expressions that
//! published parsers use (see `shared/reference/lmstat-output.md`).
//!
//! Everything here is pure: the caller parses the arguments, fetches a
//! [`StatusReport`], picks the time zone (FlexLM prints local time), prints the string and
//! chooses the exit code (non-zero after [`render_unreachable`]; both exporters treat a
//! non-zero exit as a failed scrape).
//!
//! Decisions where FlexLM itself varies:
//! - **Handles** are the lease id in decimal ([`crate::show::format_handle`]). FlexLM handles are small
//!   decimal numbers and flexlm_exporter requires `\d+` there; `usher remove` accepts the
//!   same text ([`crate::show::parse_handle`]).
//! - **Permanent** entitlements show `permanent` as their expiry. Some FlexLM versions print
//!   `1-jan-0`; current flexlm_exporter reads any expiry without `-` as permanent.
//! - **PID** (`, PID: n`, printed by recent FlexLM versions for some vendors) is off unless
//!   [`LmstatArgs::show_pid`] is set: the Rust exporter's user-line regexes end at the start
//!   time or the license count and would skip such lines.

mod args;
mod info;
mod server;
mod text;
mod users;

#[cfg(test)]
mod tests;

use chrono::{DateTime, TimeZone};
use usher_client::StatusReport;

pub use args::{LmstatArgs, LmstatMode, USAGE, parse_args};
pub use info::render_info;
pub use server::render_unreachable;
pub use text::{LMSTAT_COMPAT_BUILD, LMSTAT_COMPAT_VERSION};

use server::{ServerName, server_section};
use text::{COPYRIGHT, header};
use users::{feature_groups, token_users_of, users_of};

/// `lmstat -v`: a copyright line, then a line matching `^lmstat v[\d.]+ build \d+ \w+`
/// (flexlm_exporter reads version, build and platform from it).
pub fn render_version() -> String {
    format!(
        "lmstat - {COPYRIGHT}\nlmstat v{LMSTAT_COMPAT_VERSION} build {LMSTAT_COMPAT_BUILD} {}\n",
        platform()
    )
}

/// FlexLM's platform name for this build (`x64_lsb` is 64-bit Linux), or `arch_os`.
fn platform() -> String {
    match (std::env::consts::ARCH, std::env::consts::OS) {
        ("x86_64", "linux") => "x64_lsb".to_owned(),
        ("x86", "linux") => "i86_lsb".to_owned(),
        ("x86_64", "windows") => "x64_n6".to_owned(),
        ("x86", "windows") => "i86_n3".to_owned(),
        (arch, os) => format!("{arch}_{os}"),
    }
}

/// The usage text of `lmstat` without `-i`: the status of the server and, with `-a`, `-A`,
/// `-S` or `-f`, the usage of features.
///
/// - `server_spec` is printed after `License server status:` and should be `port@host`
///   (parsers require the `port@` form); when `-c` named a license file, the caller passes
///   the server it resolved. Empty means `port@server_name` from the report.
/// - `now_local` is the time of the query, shown in the second line; `tz` is the zone in
///   which start times are shown. FlexLM prints local time.
///
/// Layouts, as FlexLM prints them:
/// - no flag or `-s`: the server and vendor daemon status, no feature usage;
/// - `-a`, `-A`, `-S`: the status, `Feature usage info:`, then one `Users of` block per
///   feature (`-A`: only features in use; `-S VENDOR` and `-f FEATURE` restrict the list);
/// - `-f` alone: only the `Users of` blocks, of one feature or of all.
///
/// Pools of one feature (different versions or vendors) are summed into one `Users of`
/// line, followed by a detail block for each pool with licenses in use.
pub fn render_status<Tz: TimeZone>(
    report: &StatusReport,
    server_spec: &str,
    args: &LmstatArgs,
    now_local: DateTime<Tz>,
    tz: &Tz,
) -> String {
    let server = ServerName::of(report, server_spec);
    let mut out = header(&now_local);
    let full = args.all || args.active_only || args.vendor_status;
    if full || !args.feature_usage {
        server_section(&mut out, report, &server);
    }
    if !full && !args.feature_usage {
        return out;
    }
    if full {
        out.push_str("Feature usage info:\n\n");
    }
    for group in feature_groups(report, args) {
        users_of(&mut out, &group, &report.queue, &server, args, tz);
    }
    for feature in report.token_features.iter().filter(|t| {
        args.feature.as_deref().is_none_or(|f| t.feature == f)
            && args.vendor.as_deref().is_none_or(|v| t.vendor == v)
            && (!args.active_only || t.in_use > 0)
    }) {
        token_users_of(&mut out, report, feature, &server, args, tz);
    }
    out.push_str(&crate::show::not_shown(report));
    out
}
