//! Loading license files and vendor keys into a catalog of pools.

use std::path::{Path, PathBuf};

use usher_core::{Catalog, Policy};
use usher_license::{Entitlement, VendorPublicKey};

/// The licenses a server serves, after checking.
#[derive(Debug, Clone)]
pub struct LoadedLicenses {
    /// Pools built from every entitlement that passed its checks.
    pub catalog: Catalog,
    /// Entitlements served (signature good, bound to this host).
    pub entitlements: Vec<Entitlement>,
    /// The files read.
    pub files: Vec<PathBuf>,
    /// Vendors served.
    pub vendors: Vec<String>,
    /// Entitlements refused, one human-readable line each (file, line, reason).
    pub refused: Vec<String>,
    /// Entitlements served but not usable today (expired, not yet started), one line each.
    pub warnings: Vec<String>,
}

/// What an administrator can do about a refused entitlement, appended to its log line.
pub const REFUSED_ADVICE: &str = "it is not served; check that vendor_keys holds this \
    vendor's public key, and ask the vendor for a line signed for this server (`usher hostid` \
    prints its host ids)";

/// What an administrator can do about an entitlement not valid today.
pub const NOT_VALID_ADVICE: &str = "checkouts of it are refused until it is valid; ask the \
    vendor for a renewed line, then `usher reload`";

/// Logs each entitlement not usable today (expired, or not yet started) with what to
/// do: at start and on every reload, however it was asked for (SIGHUP has no one to
/// answer).
pub fn warn_not_usable(lines: &[String]) {
    for line in lines {
        tracing::warn!("entitlement not usable today: {line}; {NOT_VALID_ADVICE}");
    }
}

/// Why licenses could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A license file has a syntax error (the message names file, line and column).
    #[error("{0}")]
    Parse(#[from] usher_license::ParseError),
    /// The policy file could not be read.
    #[error("cannot read the policy file {path}: {source}")]
    ReadPolicy {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The policy file has a mistake (the message names file, line and column).
    #[error("{0}")]
    Policy(#[from] usher_core::PolicyError),
    /// A vendor key file is unusable.
    #[error("vendor key {path}: {message}")]
    Key {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The host ids a license may be bound to on this server: the machine's, and the server's
/// own identity (`USHER_ID=`, see [`crate::identity`]).
pub fn served_host_ids(server_host_id: &str) -> Vec<String> {
    let mut ids = usher_license::host_ids();
    ids.push(server_host_id.to_string());
    ids
}

/// Reads and parses the policy file (none: the empty policy, which allows everything).
/// `TIMEOUT`s shorter than `min_timeout` are raised to it; the warnings say so.
pub fn load_policy(
    path: Option<&Path>,
    min_timeout: std::time::Duration,
) -> Result<(Policy, Vec<String>), LoadError> {
    let Some(path) = path else {
        return Ok((Policy::default(), Vec::new()));
    };
    let text = usher_license::input::read_text_file(path, usher_license::input::MAX_POLICY_FILE)
        .map_err(|source| LoadError::ReadPolicy {
            path: path.to_path_buf(),
            source,
        })?;
    let mut policy = Policy::parse(&path.display().to_string(), &text)?;
    let floor = min_timeout.as_millis() as u64;
    let mut warnings = Vec::new();
    for (line, timeout) in policy.timeouts_mut() {
        if *timeout < floor {
            warnings.push(format!(
                "{}:{line}: a TIMEOUT of {} s is below the server's minimum; using {} s \
                 (min_timeout)",
                path.display(),
                *timeout / 1000,
                floor / 1000
            ));
            *timeout = floor;
        }
    }
    Ok((policy, warnings))
}

/// A warning for each feature name in `policy` that no served license has: a rule for it
/// has no effect (most likely a misspelling, or a license not yet installed).
fn unlicensed_features(path: &Path, policy: &Policy, catalog: &Catalog) -> Vec<String> {
    policy
        .named_features()
        .iter()
        .filter(|named| !catalog.knows(&named.feature))
        .map(|named| {
            format!(
                "{}:{}:{}: {} names feature {:?}, which no license served here has; the \
                 rule has no effect: correct the name to one `usher status` lists, or install \
                 the license for it, then `usher reload`",
                path.display(),
                named.line,
                named.column,
                named.keyword,
                named.feature
            )
        })
        .collect()
}

/// Everything a server serves, as loaded from its files: the licenses and the policy.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The licenses, checked.
    pub licenses: LoadedLicenses,
    /// The policy (empty without a policy file).
    pub policy: Policy,
    /// What the policy needed adjusting (TIMEOUTs raised to `min_timeout`) and rules for
    /// features no license has, one located line each.
    pub policy_warnings: Vec<String>,
}

/// Reads vendor keys, license files and the policy file the way the server does at start,
/// on `usher reload` and SIGHUP, and in `usherd check`: the one code path for all four.
pub fn load_all(
    license_files: &[PathBuf],
    vendor_keys: &[PathBuf],
    policy_file: Option<&Path>,
    min_timeout: std::time::Duration,
    server_host_id: &str,
    today: chrono::NaiveDate,
) -> Result<Loaded, LoadError> {
    let keys = load_keys(vendor_keys)?;
    let licenses = load(
        license_files,
        &keys,
        &served_host_ids(server_host_id),
        today,
    )?;
    let (policy, mut policy_warnings) = load_policy(policy_file, min_timeout)?;
    if let Some(path) = policy_file {
        policy_warnings.extend(unlicensed_features(path, &policy, &licenses.catalog));
    }
    Ok(Loaded {
        licenses,
        policy,
        policy_warnings,
    })
}

/// The files `paths` name: a file stands for itself, a directory for the files in it whose
/// names end in `.EXTENSION`, in name order (so a packaged server's `/etc/usher/licenses`
/// serves every license dropped into it, on the next reload). Read afresh at every load.
pub fn expand(paths: &[PathBuf], extension: &str) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let read = |source| LoadError::Read {
            path: path.clone(),
            source,
        };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(path).map_err(read)? {
            let entry = entry.map_err(read)?.path();
            if entry.extension().is_some_and(|e| e == extension) && !entry.is_dir() {
                found.push(entry);
            }
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Reads vendor public keys (a directory stands for its `*.pub` files).
pub fn load_keys(paths: &[PathBuf]) -> Result<Vec<VendorPublicKey>, LoadError> {
    expand(paths, "pub")?
        .iter()
        .map(|p| {
            VendorPublicKey::read_from(p).map_err(|e| {
                // An I/O error already starts with the path; say it once.
                let text = e.to_string();
                let prefix = format!("{}: ", p.display());
                LoadError::Key {
                    path: p.clone(),
                    message: text.strip_prefix(&prefix).unwrap_or(&text).to_string(),
                }
            })
        })
        .collect()
}

/// Reads, parses and checks license files against trusted keys and this host's ids. A
/// directory among `files` stands for the `*.lic` files in it (see [`expand`]).
///
/// A syntax error fails the whole load (the administrator must fix the file). An
/// entitlement with a bad signature, an unknown vendor or a binding to another host is
/// refused alone: it is reported in `refused` and every other entitlement is served.
/// Expired and not-yet-started entitlements are served (the ledger refuses checkouts with
/// the precise reason) and reported in `warnings`.
pub fn load(
    files: &[PathBuf],
    keys: &[VendorPublicKey],
    host_ids: &[String],
    today: chrono::NaiveDate,
) -> Result<LoadedLicenses, LoadError> {
    let files = &expand(files, "lic")?;
    let mut served = Vec::new();
    let mut refused = Vec::new();
    let mut warnings = Vec::new();
    // Lines bound to another host: their features are refused with that reason.
    let mut bound_elsewhere = Vec::new();
    for path in files {
        let text =
            usher_license::input::read_text_file(path, usher_license::input::MAX_LICENSE_FILE)
                .map_err(|source| LoadError::Read {
                    path: path.clone(),
                    source,
                })?;
        let name = path.display().to_string();
        let file = usher_license::parse(&name, &text)?;
        for (index, checked) in usher_license::check(&file, keys, today)
            .into_iter()
            .enumerate()
        {
            let e = &checked.entitlement;
            // An entitlement is a whole line: its problems are located at its first column.
            let at = format!(
                "{}:{}:1: feature {:?}",
                display_name(path),
                e.line,
                e.feature
            );
            if !checked.status.signature_ok() {
                refused.push(format!("{at}: {}", checked.status));
                continue;
            }
            // Uncounted entitlements are node-locked to client machines and validated there;
            // the server serves no pool for them, so their binding is not its business.
            let uncounted = e.count == usher_license::SeatCount::Uncounted;
            if !uncounted && !usher_license::matches_host(&e.hostid, host_ids) {
                refused.push(format!(
                    "{at}: bound to another server (HOSTID={})",
                    hostid(e)
                ));
                bound_elsewhere.push((e.feature.clone(), hostid(e)));
                continue;
            }
            if !checked.status.is_valid_now() {
                warnings.push(format!("{at}: {}", checked.status));
            }
            // The same judge as `usher vendor sign` and `usher license check`, located at
            // the value; the line is still served, as `served_as` says.
            warnings.extend(
                file.attribute_problems
                    .iter()
                    .filter(|p| p.entitlement == index)
                    .map(|p| format!("{p}; {}", p.served_as())),
            );
            served.push(checked.entitlement);
        }
    }
    let mut vendors: Vec<String> = served.iter().map(|e| e.vendor.clone()).collect();
    vendors.sort();
    vendors.dedup();
    let catalog = Catalog::from_entitlements(&served).with_bound_elsewhere(bound_elsewhere);
    warnings.extend(catalog.problems().iter().cloned());
    Ok(LoadedLicenses {
        catalog,
        entitlements: served,
        files: files.to_vec(),
        vendors,
        refused,
        warnings,
    })
}

fn hostid(e: &Entitlement) -> String {
    match &e.hostid {
        usher_license::HostId::Any => "ANY".to_string(),
        usher_license::HostId::Id(id) => id.clone(),
    }
}

fn display_name(path: &Path) -> String {
    path.display().to_string()
}
