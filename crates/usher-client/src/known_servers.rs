//! Trust on first use, as SSH does: the first server id seen at a server address is
//! remembered, and a later connection to that address that presents another id is
//! refused (a server impersonated on the network, or a key rotated on purpose: the user
//! decides, with `usher trust --forget ADDR`).
//!
//! The file is `$USHER_KNOWN_SERVERS`, else `$XDG_STATE_HOME/usher/known_servers`, else
//! `~/.local/state/usher/known_servers`: one `PORT@HOST USHER_ID=...` line per address,
//! `#` starts a comment. Pinned server ids ([`crate::ClientConfig::server_ids`]) override
//! it: a client with pins neither reads nor writes it.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The environment variable naming the known-servers file (`off`: no trust on first use).
pub const ENV_KNOWN_SERVERS: &str = "USHER_KNOWN_SERVERS";

/// The known-servers file of this user, if one can be named (see the module docs).
/// `None` when `USHER_KNOWN_SERVERS=off`, or no state directory can be found.
pub fn default_path() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var(ENV_KNOWN_SERVERS) {
        return (path != "off").then(|| PathBuf::from(path));
    }
    let state = var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".local").join("state")))?;
    Some(state.join("usher").join("known_servers"))
}

/// What the file says about a server id presented at an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time at this address: now remembered.
    New,
    /// The id remembered for this address.
    Known,
    /// Another id than the one remembered.
    Changed {
        /// The id remembered.
        known: String,
    },
}

fn entries(path: &Path) -> io::Result<Vec<(String, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (addr, id) = l.split_once(char::is_whitespace)?;
            Some((addr.to_ascii_lowercase(), id.trim().to_string()))
        })
        .collect())
}

/// The address as the file keys it.
fn key(addr: &str) -> String {
    addr.trim().to_ascii_lowercase()
}

/// Looks `id` up for `addr`, remembering it if the address is new.
pub fn check_and_remember(path: &Path, addr: &str, id: &str) -> io::Result<Seen> {
    let addr = key(addr);
    if let Some((_, known)) = entries(path)?.into_iter().find(|(a, _)| *a == addr) {
        return Ok(if known.eq_ignore_ascii_case(id) {
            Seen::Known
        } else {
            Seen::Changed { known }
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    // One short append: concurrent clients each add whole lines.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{addr} {id}\n").as_bytes())?;
    Ok(Seen::New)
}

/// Forgets what was remembered for `addr`, so the next connection remembers the id it
/// finds. Returns the id forgotten, if there was one.
pub fn forget(path: &Path, addr: &str) -> io::Result<Option<String>> {
    let addr = key(addr);
    let all = entries(path)?;
    let Some((_, known)) = all.iter().find(|(a, _)| *a == addr).cloned() else {
        return Ok(None);
    };
    let kept: String = all
        .iter()
        .filter(|(a, _)| *a != addr)
        .map(|(a, id)| format!("{a} {id}\n"))
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?
        .write_all(kept.as_bytes())?;
    std::fs::rename(&tmp, path)?;
    Ok(Some(known))
}

/// Every remembered `(address, id)`.
pub fn list(path: &Path) -> io::Result<Vec<(String, String)>> {
    entries(path)
}

/// The refusal of a changed id: both ids, the file, and the command that accepts the new
/// one.
pub fn changed_message(addr: &str, known: &str, presented: &str, path: &Path) -> String {
    format!(
        "the server at {addr} presented {presented}, but {known} was seen there before \
         (remembered in {}): this may be another machine impersonating the server. If its \
         key was changed on purpose, accept the new id with `usher trust --forget {addr}` \
         (or pin it with USHER_SERVER_ID={presented})",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_is_remembered_a_changed_one_reported_and_forgetting_accepts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/usher/known_servers");
        assert_eq!(
            check_and_remember(&path, "1648@Lic", "USHER_ID=AA").unwrap(),
            Seen::New
        );
        assert_eq!(
            check_and_remember(&path, "1648@lic", "USHER_ID=aa").unwrap(),
            Seen::Known
        );
        assert_eq!(
            check_and_remember(&path, "1649@lic", "USHER_ID=BB").unwrap(),
            Seen::New
        );
        assert_eq!(
            check_and_remember(&path, "1648@lic", "USHER_ID=CC").unwrap(),
            Seen::Changed {
                known: "USHER_ID=AA".into()
            }
        );
        assert_eq!(
            forget(&path, "1648@lic").unwrap(),
            Some("USHER_ID=AA".into())
        );
        assert_eq!(forget(&path, "1648@lic").unwrap(), None);
        assert_eq!(
            check_and_remember(&path, "1648@lic", "USHER_ID=CC").unwrap(),
            Seen::New
        );
        assert_eq!(list(&path).unwrap().len(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}
