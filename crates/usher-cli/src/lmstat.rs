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
//! - **Handles** are the lease id in decimal ([`format_handle`]). FlexLM handles are small
//!   decimal numbers and flexlm_exporter requires `\d+` there; `usher remove` accepts the
//!   same text ([`parse_handle`]).
//! - **Permanent** entitlements show `permanent` as their expiry. Some FlexLM versions print
//!   `1-jan-0`; current flexlm_exporter reads any expiry without `-` as permanent.
//! - **PID** (`, PID: n`, printed by recent FlexLM versions for some vendors) is off unless
//!   [`LmstatArgs::show_pid`] is set: the Rust exporter's user-line regexes end at the start
//!   time or the license count and would skip such lines.

// Everything here is reached from `usher lmstat`, which main does not dispatch yet.
// wired into main by the lead
#![cfg_attr(not(test), allow(dead_code))]

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use usher_proto::{FeatureStatus, Holder, StatusReport};

/// The FlexLM version usher claims in `lmstat -v`, in `license server UP ... v…` and in
/// vendor daemon lines.
///
/// Parsers key on FlexLM-style versions (`v[\d.]+`), and some of them (or the people
/// reading dashboards) gate behaviour on the version, e.g. expecting the
/// `Users of` layout of 11.x. 11.19 is the current FlexLM line, whose output format usher
/// reproduces; usher's own version is in the `StatusReport`.
pub const LMSTAT_COMPAT_VERSION: &str = "11.19.0";

/// The build number in `lmstat -v`. Parsers require `build \d+`; usher bumps this when the
/// rendered text changes.
pub const LMSTAT_COMPAT_BUILD: u32 = 1;

/// The copyright notice, in FlexLM's place and form, naming who actually wrote this.
const COPYRIGHT: &str = "Copyright (c) 2026 The usher authors. All Rights Reserved.";

/// First line of `lmstat -i`, verbatim from FlexLM (note the two spaces after `file.`).
pub const INFO_NOTE: &str = "NOTE: lmstat -i does not give information from the server, but only reads the license file.  For this reason, lmstat -a is recommended instead.";

/// The usage text printed for `-help` and after an argument error.
pub const USAGE: &str = "\
usage: lmstat [-a] [-A] [-c license_file_list|port@host[,port@host...]] [-f [feature]]
              [-i [feature]] [-s [server]] [-S [vendor]] [-t timeout_value] [-v] [-help]
  -a              display everything: server status and the usage of every feature
  -A              like -a, but only features with licenses in use
  -c spec         the license server (port@host, comma-separated) or a license file
  -f [feature]    the users of one feature (of every feature without a name)
  -i [feature]    the license table (count, version, expiry) of one or every feature
  -s [server]     license server status only
  -S [vendor]     like -a, restricted to one vendor's features
  -t timeout      accepted for compatibility; the connection timeout in seconds
  -v              print the lmstat version
";

/// The command-line arguments of `lmstat`, as FlexLM's `lmutil lmstat` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LmstatArgs {
    /// `-a`: server status plus the usage of every feature.
    pub all: bool,
    /// `-A`: like `-a`, but only features with licenses in use.
    pub active_only: bool,
    /// `-c SPEC`: `port@host[,port@host...]` or a license file path.
    pub server: Option<String>,
    /// `-f` was given, with or without a feature name.
    pub feature_usage: bool,
    /// `-f FEATURE`: only this feature.
    pub feature: Option<String>,
    /// `-i`: the license table instead of usage.
    pub info: bool,
    /// `-i FEATURE`: only this feature's rows.
    pub info_feature: Option<String>,
    /// `-v`: print the version.
    pub version: bool,
    /// `-s`: license server status only.
    pub server_status: bool,
    /// `-s SERVER`: the server whose status is wanted (usher has one per report).
    pub status_server: Option<String>,
    /// `-S` was given, with or without a vendor name.
    pub vendor_status: bool,
    /// `-S VENDOR`: only this vendor's features.
    pub vendor: Option<String>,
    /// `-t SECONDS`: connection timeout. FlexLM tools pass it; usher may use it.
    pub timeout_secs: Option<u64>,
    /// `-help` / `-h`: print [`USAGE`].
    pub help: bool,
    /// Append `, PID: n` to user lines. Not a FlexLM flag and never set by [`parse_args`]:
    /// the caller sets it from configuration (see the module docs for why it is off).
    pub show_pid: bool,
}

/// What an `lmstat` invocation asks for, in the order FlexLM gives precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmstatMode {
    /// Print [`USAGE`].
    Help,
    /// Print [`render_version`]; needs no server.
    Version,
    /// Print [`render_info`].
    Info,
    /// Print [`render_status`].
    Status,
}

impl LmstatArgs {
    /// What to print.
    pub fn mode(&self) -> LmstatMode {
        if self.help {
            LmstatMode::Help
        } else if self.version {
            LmstatMode::Version
        } else if self.info {
            LmstatMode::Info
        } else {
            LmstatMode::Status
        }
    }
}

/// Parses `lmstat` arguments, in any order.
///
/// `args` are the arguments after the command name: the caller strips the program name and,
/// for the `lmutil lmstat ARGS` and `usher lmstat ARGS` forms, the `lmstat` subcommand word.
/// A leading `lmstat` left in place is skipped all the same. Flags whose argument is
/// optional in FlexLM (`-f`, `-i`, `-s`, `-S`) take the next word unless it starts with `-`.
/// `-verbose` and `-q` are accepted and ignored. Anything else is an error: one line such
/// as `lmstat: invalid option "-z"`, which the caller prints with [`USAGE`] before exiting
/// non-zero.
pub fn parse_args(args: &[String]) -> Result<LmstatArgs, String> {
    let mut parsed = LmstatArgs::default();
    let mut words = args.iter().map(String::as_str).peekable();
    if words.peek() == Some(&"lmstat") {
        words.next();
    }
    while let Some(word) = words.next() {
        // The value of a flag whose argument FlexLM makes optional.
        let mut optional_value = || {
            words
                .next_if(|next| !next.starts_with('-'))
                .map(str::to_owned)
        };
        match word {
            "-a" => parsed.all = true,
            "-A" => parsed.active_only = true,
            "-c" => {
                let spec = optional_value()
                    .ok_or_else(|| usage_error("-c needs a license file or port@host"))?;
                parsed.server = Some(spec);
            }
            "-f" => {
                parsed.feature_usage = true;
                parsed.feature = optional_value();
            }
            "-i" => {
                parsed.info = true;
                parsed.info_feature = optional_value();
            }
            "-s" => {
                parsed.server_status = true;
                parsed.status_server = optional_value();
            }
            "-S" => {
                parsed.vendor_status = true;
                parsed.vendor = optional_value();
            }
            "-t" => {
                let value =
                    optional_value().ok_or_else(|| usage_error("-t needs a timeout in seconds"))?;
                let secs = value.parse().map_err(|_| {
                    usage_error(&format!("-t needs a timeout in seconds, not \"{value}\""))
                })?;
                parsed.timeout_secs = Some(secs);
            }
            "-v" => parsed.version = true,
            "-help" | "-h" | "--help" => parsed.help = true,
            // Harmless flags some wrappers add; FlexLM ignores them for lmstat too.
            "-verbose" | "-q" => {}
            other if other.starts_with('-') => {
                return Err(usage_error(&format!("invalid option \"{other}\"")));
            }
            other => return Err(usage_error(&format!("unexpected argument \"{other}\""))),
        }
    }
    Ok(parsed)
}

fn usage_error(what: &str) -> String {
    format!("lmstat: {what}")
}

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
        users_of(&mut out, &group, &server, args, tz);
    }
    out
}

/// `lmstat -i`: FlexLM's note, then one row per pool: feature, version, license count,
/// expiry (`dd-mon-yyyy` or `permanent`) and vendor, in FlexLM's columns.
///
/// Rows match flexlm_exporter's
/// `^(\S+)\s+([\d.]+)\s+(\d+)\s+([\w-]+)\s+(\w+)$` as long as the version is numeric and the
/// vendor a word, which license files guarantee. `-i FEATURE` restricts the rows.
pub fn render_info<Tz: TimeZone>(
    report: &StatusReport,
    args: &LmstatArgs,
    now_local: DateTime<Tz>,
) -> String {
    let mut out = header(&now_local);
    out.push_str(INFO_NOTE);
    out.push_str("\n\n");
    out.push_str(
        "Feature                         Version     #licenses    Expires      Vendor\n\
         _______                         _________   _________    __________   ______\n",
    );
    let wanted = args.info_feature.as_deref();
    for pool in report
        .features
        .iter()
        .filter(|p| wanted.is_none_or(|f| p.feature == f))
    {
        // Widths from FlexLM's own output: the row's columns start at 0, 32, 45, 57, 70.
        // Padding one short and adding a space keeps fields apart when one overflows.
        let line = format!(
            "{:<31} {:<12} {:<11} {:<12} {}",
            clean(&pool.feature, "unknown"),
            version_or_zero(&pool.version),
            pool.total,
            flexlm_expiry(pool.expires_at_ms),
            clean(&pool.vendor, "unknown"),
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

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

/// A lease handle as `lmstat` and `usher status` show it: the lease id in decimal.
pub fn format_handle(lease_id: u64) -> String {
    lease_id.to_string()
}

/// Reads a handle as [`format_handle`] writes it (surrounding spaces allowed).
pub fn parse_handle(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The last day on which an entitlement is valid, or `None` for permanent ones.
///
/// `expires_at_ms` is the first millisecond *after* validity (00:00 UTC of the day after
/// the expiry date, as usher-license computes it; 0 means permanent), so the date shown is
/// the UTC day of the millisecond before: the date written in the license file. A value
/// past chrono's range reads as permanent.
pub fn expiry_date(expires_at_ms: u64) -> Option<NaiveDate> {
    let last_valid_ms = i64::try_from(expires_at_ms.checked_sub(1)?).ok()?;
    DateTime::from_timestamp_millis(last_valid_ms).map(|t| t.date_naive())
}

/// The instant `ms` (since the Unix epoch) in `tz`; clamped to chrono's range.
pub(crate) fn instant<Tz: TimeZone>(ms: u64, tz: &Tz) -> DateTime<Tz> {
    let utc = i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    utc.with_timezone(tz)
}

/// Replaces characters that would break the line structure (newlines, tabs, other control
/// characters) with `?`, and an empty value with `fallback`. Spaces stay: FlexLM prints
/// user names such as `John Smith` as they are. Without this a client could send a user
/// name containing `\nUsers of ...` and forge lines in every monitoring tool.
pub(crate) fn clean<'a>(text: &'a str, fallback: &'a str) -> Cow<'a, str> {
    if text.is_empty() {
        Cow::Borrowed(fallback)
    } else if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// Parsers need a version token (`v[\w.]+`, `[\d.]+`); an empty one reads as `0`.
fn version_or_zero(version: &str) -> Cow<'_, str> {
    clean(version, "0")
}

/// The two lines every lmstat output starts with, and the blank line after them.
fn header<Tz: TimeZone>(now_local: &DateTime<Tz>) -> String {
    // `Sun 8/20/2023 12:25`: no leading zeros except on the minutes, 24-hour clock. Built
    // from numbers rather than a strftime pattern so that no locale can change it.
    format!(
        "lmstat - {COPYRIGHT}\nFlexible License Manager status on {} {}/{}/{} {}:{:02}\n\n",
        now_local.weekday(),
        now_local.month(),
        now_local.day(),
        now_local.year(),
        now_local.hour(),
        now_local.minute(),
    )
}

/// The server's host name and port as the user lines and status lines print them.
struct ServerName {
    /// `port@host[,...]` for `License server status:`.
    spec: String,
    host: String,
    port: u32,
}

impl ServerName {
    fn of(report: &StatusReport, server_spec: &str) -> Self {
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
fn server_section(out: &mut String, report: &StatusReport, server: &ServerName) {
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

/// The pools of one feature, in report order.
struct FeatureGroup<'a> {
    name: &'a str,
    pools: Vec<&'a FeatureStatus>,
}

/// The pools the arguments select, grouped by feature name in order of first appearance.
fn feature_groups<'a>(report: &'a StatusReport, args: &LmstatArgs) -> Vec<FeatureGroup<'a>> {
    let mut groups: Vec<FeatureGroup<'a>> = Vec::new();
    let selected = report.features.iter().filter(|pool| {
        args.feature.as_deref().is_none_or(|f| pool.feature == f)
            && args.vendor.as_deref().is_none_or(|v| pool.vendor == v)
    });
    for pool in selected {
        match groups.iter_mut().find(|g| g.name == pool.feature) {
            Some(group) => group.pools.push(pool),
            None => groups.push(FeatureGroup {
                name: &pool.feature,
                pools: vec![pool],
            }),
        }
    }
    if args.active_only {
        groups.retain(|g| g.pools.iter().any(|p| p.in_use > 0));
    }
    groups
}

/// `license` or `licenses`, as FlexLM words a count.
fn licenses(n: u64) -> &'static str {
    if n == 1 { "license" } else { "licenses" }
}

/// One `Users of` block: the summed header line, then a detail block per pool in use.
fn users_of<Tz: TimeZone>(
    out: &mut String,
    group: &FeatureGroup<'_>,
    server: &ServerName,
    args: &LmstatArgs,
    tz: &Tz,
) {
    let total: u64 = group.pools.iter().map(|p| u64::from(p.total)).sum();
    let in_use: u64 = group.pools.iter().map(|p| u64::from(p.in_use)).sum();
    let _ = writeln!(
        out,
        "Users of {}:  (Total of {total} {} issued;  Total of {in_use} {} in use)",
        clean(group.name, "unknown"),
        licenses(total),
        licenses(in_use),
    );
    out.push('\n');
    for pool in group.pools.iter().filter(|p| p.in_use > 0) {
        let _ = writeln!(
            out,
            "  \"{}\" v{}, vendor: {}, expiry: {}",
            clean(&pool.feature, "unknown"),
            version_or_zero(&pool.version),
            clean(&pool.vendor, "unknown"),
            flexlm_expiry(pool.expires_at_ms),
        );
        out.push_str("  floating license\n\n");
        for holder in &pool.holders {
            user_line(out, pool, holder, server, args.show_pid, tz);
        }
        out.push('\n');
    }
}

/// `    user host display (vVER) (server/port handle), start Ddd M/D H:MM[, N licenses]`
/// `[, PID: n]`.
fn user_line<Tz: TimeZone>(
    out: &mut String,
    pool: &FeatureStatus,
    holder: &Holder,
    server: &ServerName,
    show_pid: bool,
    tz: &Tz,
) {
    let user = clean(&holder.user, "unknown");
    let host = clean(&holder.host, "unknown");
    // FlexLM shows the host as the display of clients without one (Windows).
    let display = clean(&holder.display, &host).into_owned();
    // The version the client asked for; a client that asked for any shows the pool's.
    let version = if holder.version.is_empty() {
        version_or_zero(&pool.version)
    } else {
        clean(&holder.version, "0")
    };
    let start = instant(holder.since_ms, tz);
    let _ = write!(
        out,
        "    {user} {host} {display} (v{version}) ({}/{} {}), start {} {}/{} {}:{:02}",
        server.host,
        server.port,
        format_handle(holder.lease_id),
        start.weekday(),
        start.month(),
        start.day(),
        start.hour(),
        start.minute(),
    );
    if holder.count > 1 {
        let _ = write!(out, ", {} licenses", holder.count);
    }
    if show_pid && holder.pid != 0 {
        let _ = write!(out, ", PID: {}", holder.pid);
    }
    out.push('\n');
}

/// `31-dec-2027` (day zero-padded, month lower case, as FlexLM writes dates) or `permanent`.
fn flexlm_expiry(expires_at_ms: u64) -> String {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    match expiry_date(expires_at_ms) {
        None => "permanent".to_owned(),
        Some(date) => {
            format!(
                "{:02}-{}-{}",
                date.day(),
                MONTHS[date.month0() as usize],
                date.year()
            )
        }
    }
}
