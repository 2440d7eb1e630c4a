//! `usher import flexlm`: turns a FlexNet license file into unsigned usher entitlements
//! for the vendor to re-sign (`usher vendor sign`), and checks a FlexLM options file
//! against what usher's policy understands.
//!
//! FlexLM's signatures cannot be carried over (usher signs with Ed25519 over its own
//! canonical encoding), so every FEATURE and INCREMENT comes out unsigned, with the fields
//! and keywords that mean something here kept and the others dropped and listed.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use usher_license::{Token, logical_lines};

use crate::exit::{FAILURE, Failure, OK};

/// `usher import` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Convert a FlexNet license file (FEATURE/INCREMENT lines) into unsigned usher
    /// entitlements for the vendor to sign; list what could not be carried over.
    Flexlm(FlexlmArgs),
}

/// `usher import flexlm`.
#[derive(Debug, Args)]
pub struct FlexlmArgs {
    /// The FlexNet license file.
    pub license_file: PathBuf,
    /// Write the converted file here [default: standard output].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also check a FlexLM options file: report the keywords usher does not support, and
    /// any other mistake, with file, line and column.
    #[arg(long)]
    pub options: Option<PathBuf>,
}

/// Runs an import subcommand.
pub fn run(cmd: ImportCommand) -> Result<u8, Failure> {
    match cmd {
        ImportCommand::Flexlm(args) => flexlm(args),
    }
}

fn flexlm(args: FlexlmArgs) -> Result<u8, Failure> {
    let text = std::fs::read_to_string(&args.license_file)
        .with_context(|| format!("reading {}", args.license_file.display()))?;
    let name = args.license_file.display().to_string();
    let converted = convert(&name, &text).map_err(|e| Failure::new(FAILURE, e))?;
    match &args.out {
        Some(path) => std::fs::write(path, &converted.text)
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{}", converted.text),
    }
    for note in &converted.notes {
        eprintln!("{note}");
    }
    eprintln!(
        "{} entitlement(s) converted, unsigned: the vendor signs them with `usher vendor sign`",
        converted.entitlements
    );
    let mut code = OK;
    if let Some(options) = &args.options {
        let text = std::fs::read_to_string(options)
            .with_context(|| format!("reading {}", options.display()))?;
        let problems = check_options(&options.display().to_string(), &text);
        for p in &problems {
            eprintln!("{p}");
        }
        if problems.is_empty() {
            eprintln!("{}: every line is understood by usher", options.display());
        } else {
            code = FAILURE;
        }
    }
    Ok(code)
}

/// A converted license file.
#[derive(Debug)]
pub struct Converted {
    /// The usher license file text (unsigned entitlements).
    pub text: String,
    /// One line per field or keyword not carried over, and per line skipped, located.
    pub notes: Vec<String>,
    /// FEATURE and INCREMENT lines converted.
    pub entitlements: usize,
}

/// Vendor keywords with the same meaning in usher, carried over as they are.
const CARRIED: &[&str] = &[
    "START",
    "ISSUED",
    "NOTICE",
    "ISSUER",
    "SN",
    "DUP_GROUP",
    "BORROW",
    "OVERDRAFT",
    "USER_BASED",
    "HOST_BASED",
    "SUPERSEDE",
    "VENDOR_STRING",
    "PLATFORMS",
];

/// Why a FlexLM keyword is dropped, for the ones an administrator will ask about.
fn dropped_because(key: &str) -> &'static str {
    match key {
        "SIGN" | "SIGN2" | "AUTH" | "ck" | "START_LICENSE" => {
            "a FlexNet signature; the vendor signs the usher line instead"
        }
        "FLOAT_OK" => "dongle mobility (FLEXID) has no usher equivalent",
        "TS_OK" => "usher does not detect Terminal Services sessions; every session counts",
        "VM_PLATFORMS" | "VM_ONLY" => "usher does not detect virtual machines",
        "TZ" => "usher has no time-zone restriction",
        "CAPACITY" => "capacity licensing is not supported",
        "SUITE_DUP_GROUP" => "suites (PACKAGE) are not supported",
        "REPLACE" => "usher has no REPLACE; SUPERSEDE is the nearest",
        "SORT" => "display order is the administrator's `sort=` note in usher",
        _ => "no meaning in usher",
    }
}

/// Converts FlexNet license text into usher license text.
pub fn convert(name: &str, text: &str) -> Result<Converted, String> {
    let lines = logical_lines(text)
        .map_err(|e| format!("{name}:{}:{}: {}", e.pos.line, e.pos.column, e.message))?;
    let mut out = String::new();
    let mut notes = Vec::new();
    let mut entitlements = 0;
    let _ = writeln!(
        out,
        "# Converted from the FlexNet license {name} by `usher import flexlm`.\n\
         # The entitlements are unsigned: the vendor signs them with `usher vendor sign`."
    );
    for line in &lines {
        let t = &line.tokens;
        let at = |tok: &Token| format!("{name}:{}:{}", tok.pos.line, tok.pos.column);
        let keyword = t[0].value.to_ascii_uppercase();
        match keyword.as_str() {
            "SERVER" => {
                // SERVER host hostid [port] [...]: usher binds a server by USHER_ID= on the
                // entitlement, not on the SERVER line; its port is 1648.
                let host = t.get(1).map_or("this_host", |x| x.value.as_str());
                let port = t
                    .get(3)
                    .and_then(|x| x.bare())
                    .filter(|p| p.parse::<u16>().is_ok());
                let _ = writeln!(out, "SERVER {host} ANY 1648");
                notes.push(format!(
                    "{}: SERVER: host id {} and port {} not carried over (usher listens on \
                     1648, TCP and UDP; bind entitlements to the server with \
                     HOSTID=USHER_ID=..., which `usher hostid --data-dir` prints)",
                    at(&t[0]),
                    t.get(2).map_or("-", |x| x.value.as_str()),
                    port.unwrap_or("(default)")
                ));
            }
            "VENDOR" | "DAEMON" => {
                let vendor = t.get(1).map_or("", |x| x.value.as_str());
                let _ = writeln!(out, "VENDOR {vendor}");
                if t.len() > 2 {
                    notes.push(format!(
                        "{}: VENDOR: daemon path, OPTIONS= and PORT= not carried over (usher \
                         has no vendor daemon; the options file is usherd's policy_file)",
                        at(&t[0])
                    ));
                }
            }
            "USE_SERVER" => {
                let _ = writeln!(out, "USE_SERVER");
            }
            "FEATURE" | "INCREMENT" => {
                let (line_text, mut line_notes) = entitlement(&keyword, t, &at)?;
                out.push('\n');
                out.push_str(&line_text);
                notes.append(&mut line_notes);
                entitlements += 1;
            }
            other => notes.push(format!(
                "{}: {other} line skipped: {}",
                at(&t[0]),
                match other {
                    "PACKAGE" | "UPGRADE" =>
                        "packages and upgrades are not supported; ask the \
                        vendor for FEATURE lines (or TOKEN= features) instead",
                    "FEATURESET" => "usher signs each line; FEATURESET has no meaning here",
                    _ => "not a FlexNet line usher knows",
                }
            )),
        }
    }
    Ok(Converted {
        text: out,
        notes,
        entitlements,
    })
}

/// One FEATURE or INCREMENT line, unsigned, and what of it was not carried over.
fn entitlement(
    keyword: &str,
    t: &[Token],
    at: &dyn Fn(&Token) -> String,
) -> Result<(String, Vec<String>), String> {
    if t.len() < 6 {
        return Err(format!(
            "{}: {keyword} needs feature, vendor, version, expiry and count",
            at(&t[0])
        ));
    }
    let mut notes = Vec::new();
    let (feature, vendor, version) = (&t[1].value, &t[2].value, &t[3].value);
    let expiry = match t[4].value.to_ascii_lowercase().as_str() {
        "permanent" | "jan-0" | "1-jan-0" | "01-jan-0" | "1-jan-00" | "1-jan-0000"
        | "01-jan-0000" => "permanent".to_string(),
        d if d.ends_with("-0") || d.ends_with("-0000") => "permanent".to_string(),
        d => d.to_string(),
    };
    let count = match t[5].value.to_ascii_lowercase().as_str() {
        "0" | "uncounted" => "uncounted".to_string(),
        n => n.to_string(),
    };
    let mut words = vec![
        keyword.to_string(),
        feature.clone(),
        vendor.clone(),
        version.clone(),
        expiry,
        count,
    ];
    let mut rest = &t[6..];
    // Before v8.1 a positional license key followed the count.
    if let Some(key) = rest.first().and_then(|x| x.bare())
        && key.len() >= 12
        && key.chars().all(|c| c.is_ascii_hexdigit())
    {
        notes.push(format!(
            "{}: {feature}: the positional license key is a FlexNet signature; dropped",
            at(&rest[0])
        ));
        rest = &rest[1..];
    }
    for tok in rest {
        let Some(key) = tok.key.clone().or_else(|| tok.bare().map(str::to_string)) else {
            notes.push(format!(
                "{}: {feature}: {} dropped: not a keyword",
                at(tok),
                tok.as_written()
            ));
            continue;
        };
        let upper = key.to_ascii_uppercase();
        if key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
        {
            // End-user attributes (asset_info, dist_info, user_info, vendor_info, sort) are
            // the administrator's notes in usher too.
            words.push(quote(&key, &tok.value, tok.key.is_some()));
            continue;
        }
        if upper == "HOSTID" {
            match hostid(&tok.value) {
                Ok(id) => words.push(format!("HOSTID={id}")),
                Err(why) => notes.push(format!(
                    "{}: {feature}: HOSTID={} dropped: {why}",
                    at(tok),
                    tok.value
                )),
            }
            continue;
        }
        if CARRIED.contains(&upper.as_str()) {
            words.push(quote(&upper, &tok.value, tok.key.is_some()));
        } else {
            notes.push(format!(
                "{}: {feature}: {} dropped: {}",
                at(tok),
                tok.as_written(),
                dropped_because(&key)
            ));
        }
    }
    let mut line = String::new();
    let mut width = 0;
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            if width + w.len() > 80 {
                line.push_str(" \\\n    ");
                width = 4;
            } else {
                line.push(' ');
                width += 1;
            }
        }
        line.push_str(w);
        width += w.len();
    }
    line.push('\n');
    Ok((line, notes))
}

/// `KEY=value`, quoted when the value holds spaces (or is empty), or the bare flag.
fn quote(key: &str, value: &str, has_value: bool) -> String {
    if !has_value {
        key.to_string()
    } else if value.is_empty() || value.contains([' ', '\t', '#']) {
        format!("{key}=\"{value}\"")
    } else {
        format!("{key}={value}")
    }
}

/// A FlexLM host id in usher's spelling: `ANY`, `HOSTNAME=`, `ETHER=` (FlexLM's bare
/// 12-hex-digit Ethernet address), `INTERNET=`; several ids separated by spaces.
fn hostid(value: &str) -> Result<String, &'static str> {
    let mut ids = Vec::new();
    for id in value.split_whitespace() {
        let upper = id.to_ascii_uppercase();
        if upper == "ANY" {
            return Ok("ANY".to_string());
        }
        if upper == "DEMO" {
            return Err("DEMO has no usher equivalent (use uncounted with HOSTID=ANY)");
        }
        if let Some((kind, v)) = id.split_once('=') {
            match kind.to_ascii_uppercase().as_str() {
                "HOSTNAME" | "ETHER" | "INTERNET" => {
                    ids.push(format!("{}={v}", kind.to_ascii_uppercase()))
                }
                _ => {
                    return Err(
                        "this kind of host id (dongle, TPM, VM, COMPOSITE, USER, DISPLAY) is not supported",
                    );
                }
            }
        } else if id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            ids.push(format!("ETHER={}", id.to_ascii_lowercase()));
        } else {
            return Err("not a host id usher knows");
        }
    }
    if ids.is_empty() {
        return Err("empty");
    }
    let joined = ids.join(" ");
    Ok(if ids.len() > 1 {
        format!("\"{joined}\"")
    } else {
        joined
    })
}

/// Keywords of FlexLM's options file that usher's policy reads (see docs/policy.md).
const POLICY_KEYWORDS: &[&str] = &[
    "GROUP",
    "HOST_GROUP",
    "GROUPCASEINSENSITIVE",
    "INCLUDE",
    "INCLUDEALL",
    "EXCLUDE",
    "EXCLUDEALL",
    "RESERVE",
    "MAX",
    "PRIORITY",
    "TIMEOUT",
    "TIMEOUTALL",
    "LINGER",
    "MAX_BORROW_HOURS",
    "BORROW_LOWWATER",
    "MAX_OVERDRAFT",
];

/// What to do instead of a FlexLM options keyword usher does not read.
fn instead_of(keyword: &str) -> &'static str {
    match keyword {
        "REPORTLOG" => {
            "usher keeps its usage log in the store (`usher log export`, `usher report`)"
        }
        "DEBUGLOG" | "NOLOG" => {
            "usherd logs to standard error or the journal; choose what with --log"
        }
        "INCLUDE_BORROW" | "EXCLUDE_BORROW" => {
            "borrowing is limited with MAX_BORROW_HOURS and BORROW_LOWWATER"
        }
        "MAX_CONNECTIONS" => "set max_connections and max_connections_per_ip in usherd.toml",
        "FQDN_MATCHING" => "host names are compared as clients send them",
        "INCLUDE_ENTITLEMENT"
        | "EXCLUDE_ENTITLEMENT"
        | "ACTIVATION_LOWWATER"
        | "ACTIVATION_EXPIRY_DAYS" => "usher has no trusted-storage activation",
        _ => "remove the line",
    }
}

/// Problems of a FlexLM options file as usher's policy: every unsupported keyword, then
/// the first other mistake (usher's own policy parser, on the rest of the file).
pub fn check_options(name: &str, text: &str) -> Vec<String> {
    let lines = match logical_lines(text) {
        Ok(lines) => lines,
        Err(e) => {
            return vec![format!(
                "{name}:{}:{}: {}",
                e.pos.line, e.pos.column, e.message
            )];
        }
    };
    let mut problems = Vec::new();
    let mut physical: Vec<String> = text.lines().map(str::to_string).collect();
    for line in &lines {
        let first = &line.tokens[0];
        let keyword = first.value.to_ascii_uppercase();
        if POLICY_KEYWORDS.contains(&keyword.as_str()) {
            continue;
        }
        problems.push(format!(
            "{name}:{}:{}: {keyword} is not supported by usher: {}",
            first.pos.line,
            first.pos.column,
            instead_of(&keyword)
        ));
        // Blank the line (and its continuations) so the parser judges the rest, with the
        // same line numbers.
        for n in first.pos.line..=line.end().line {
            if let Some(l) = physical.get_mut(n - 1) {
                l.clear();
            }
        }
    }
    if let Err(e) = usher_core::Policy::parse(name, &physical.join("\n")) {
        problems.push(e.to_string());
    }
    problems
}
