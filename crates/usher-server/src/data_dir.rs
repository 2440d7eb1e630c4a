//! The data directory: who may touch it, and how files in it are opened.
//!
//! The directory holds the store (every holder's user, host and address), the identity
//! key, the admin token and the lock that keeps a second server out. Another local user
//! who could read the store would bypass `status_detail`; one who could lock the store's
//! `-shm` file or `usherd.lock` could stop the server or keep it from starting; one who
//! could write the directory could plant a token or a symbolic link that makes the server
//! overwrite or chmod a file of its choosing. So:
//!
//! - the directory is made mode 0700 and every file in it 0600, whatever the umask;
//! - the server refuses to start, naming the fix, when the directory or anything in it is
//!   owned by another user or writable by group or others, or is a symbolic link;
//! - files in it are opened with `O_NOFOLLOW`, so a link planted after the check is
//!   refused rather than followed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How deep [`prepare`] looks below the data directory (the server's own layout is two
/// levels: `admin/token`, `demo/demo.key`).
const MAX_DEPTH: usize = 4;

/// Why the data directory is not fit to use.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory or a file in it belongs to another user.
    #[error(
        "{} is owned by uid {owner}, not by uid {me} that runs usherd: another user could \
         change it; fix with `chown {me} {}` (or remove it)",
        path.display(), path.display()
    )]
    NotOwned {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The server's effective uid.
        me: u32,
    },
    /// The directory or a file in it is writable by group or others.
    #[error(
        "{} is writable by group or others (mode {mode:04o}): another user could change \
         it; fix with `chmod {fix:o} {}`",
        path.display(), path.display()
    )]
    Writable {
        /// The path.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
        /// The mode to set.
        fix: u32,
    },
    /// A symbolic link inside the data directory.
    #[error(
        "{} is a symbolic link; usherd never follows links inside its data directory: \
         remove it (`rm {}`)",
        path.display(), path.display()
    )]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DataDirError {
    let path = path.to_owned();
    move |source| DataDirError::Io {
        context,
        path,
        source,
    }
}

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Creates `dir` (mode 0700) if needed, then checks it and everything in it: refuses
/// what another user owns or can write and any symbolic link, and takes read access
/// from group and others where they have it (files 0600, directories 0700).
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("creating the data directory", dir))?;
    // The data directory itself may be a link (say /var/lib/usher to a bigger disk):
    // what matters is the directory it names, so its metadata is read through the link.
    let meta = fs::metadata(dir).map_err(io_err("reading", dir))?;
    check(dir, &meta)?;
    walk(dir, 0)
}

fn walk(dir: &Path, depth: usize) -> Result<(), DataDirError> {
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
        if meta.file_type().is_symlink() {
            return Err(DataDirError::Symlink { path });
        }
        check(&path, &meta)?;
        if meta.is_dir() {
            walk(&path, depth + 1)?;
        }
    }
    Ok(())
}

/// Checks one entry (not a link) and tightens its mode if group or others may read it.
fn check(path: &Path, meta: &fs::Metadata) -> Result<(), DataDirError> {
    let me = effective_uid();
    if meta.uid() != me {
        return Err(DataDirError::NotOwned {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let private = if meta.is_dir() { 0o700 } else { 0o600 };
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DataDirError::Writable {
            path: path.to_owned(),
            mode,
            fix: private,
        });
    }
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(private))
            .map_err(io_err("restricting", path))?;
        tracing::info!(
            path = %path.display(),
            from = format!("{mode:04o}"),
            to = format!("{private:04o}"),
            "took group and others' access away from a file in the data directory"
        );
    }
    Ok(())
}

/// Creates `dir` inside the data directory, mode 0700, refusing a symbolic link there.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(dir)?;
            if !meta.is_dir() {
                return Err(io::Error::other(format!(
                    "{} is not a directory (a symbolic link is not followed)",
                    dir.display()
                )));
            }
            if meta.mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Options that open a file inside the data directory: never through a symbolic link,
/// created (where asked) mode 0600.
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    options
}

/// Reads a file in the data directory without following a link; `Ok(None)` if there
/// is none.
pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match options().read(true).open(path) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates a new file (mode 0600, never through a link) holding `bytes`, synced.
pub fn create_new(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let mut file = options().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(file)
}

/// Writes `bytes` to `path` (mode 0600, never through a link), replacing what it held.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_and_its_files_are_made_private_whatever_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::DirBuilder::new().mode(0o755).create(&dir).unwrap();
        fs::write(dir.join("usher.db"), b"x").unwrap();
        fs::set_permissions(dir.join("usher.db"), fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("usher.db")), 0o600);
    }

    #[test]
    fn a_writable_directory_or_file_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("chmod 700 {}", dir.display())),
            "{err}"
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(dir.join("identity.id"), b"x").unwrap();
        fs::set_permissions(dir.join("identity.id"), fs::Permissions::from_mode(0o666)).unwrap();
        let err = prepare(&dir).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_link_inside_is_refused_and_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir(&dir).unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("identity.id")).unwrap();
        let err = prepare(&dir).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(write(&dir.join("identity.id"), b"overwritten").is_err());
        assert!(read(&dir.join("identity.id")).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
    }
}
