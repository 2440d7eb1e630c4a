//! Consistent copies of a store, taken beside a running server, and their check before a
//! restore.
//!
//! A copy is taken with SQLite's online backup API in a single step: the whole database is
//! copied inside one read transaction, so the copy is the store as of one commit (every
//! batch before it, none after), and the server's writer is never blocked (WAL lets it go
//! on while the copy is read). The copy is written beside `out` and renamed into place
//! once complete and on disk, so `out` is always either the old file or a whole new copy.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::SqliteStore;
use crate::error::{Context, StoreError};

impl SqliteStore {
    /// Writes a consistent copy of this store to `out` (replacing it, atomically).
    pub fn backup_to(&self, out: &Path) -> Result<(), StoreError> {
        let what = || format!("backing up {} to {}", self.path().display(), out.display());
        let partial = partial_path(out);
        let _ = std::fs::remove_file(&partial);
        // Private from the start, as the store is: the copy holds every holder's user,
        // host and address.
        crate::sqlite::create_private(&partial).map_err(|source| StoreError::CreateFile {
            path: partial.clone(),
            source,
        })?;
        {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NOFOLLOW;
            let mut dst = Connection::open_with_flags(&partial, flags).context(what)?;
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut dst).context(what)?;
            // -1: every page in one step, hence one read transaction on the source (a
            // stepwise copy would restart each time the server commits, forever under load).
            loop {
                match backup.step(-1).context(what)? {
                    rusqlite::backup::StepResult::Done => break,
                    // Busy or locked: another connection holds a write lock on the copy's
                    // file for a moment; try again.
                    _ => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
            drop(backup);
            // The copy is a self-contained file: no -wal beside it.
            dst.pragma_update(None, "journal_mode", "DELETE")
                .context(what)?;
        }
        let io = |source| StoreError::CreateFile {
            path: out.to_owned(),
            source,
        };
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&partial, out).map_err(io)?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// What a check of a copy found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCheck {
    /// The schema version (this build's).
    pub schema: i64,
    /// Usage records whose hash chain verified.
    pub records: u64,
    /// Sessions held in the copy.
    pub sessions: usize,
    /// Leases held in the copy.
    pub leases: usize,
}

/// Why a copy must not be restored.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The file is not a store this build can serve from (missing, not an usher store,
    /// another schema version, unreadable).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The usage log's hash chain does not verify: records were edited, removed or cut off.
    #[error("the usage log in {path} does not verify: {why}")]
    Chain {
        /// The copy.
        path: PathBuf,
        /// The first break.
        why: String,
    },
}

/// Checks that `path` is a store this build serves from as it is: the current schema
/// version (no migration needed), a usage log whose hash chain verifies, and sessions and
/// leases that load. Reads only.
pub fn check_copy(path: &Path) -> Result<CopyCheck, CopyError> {
    let store = SqliteStore::open_read_only(path)?;
    let report = store.verify_usage_log()?;
    if let Some(broken) = report.broken {
        return Err(CopyError::Chain {
            path: path.to_owned(),
            why: broken.to_string(),
        });
    }
    let snapshot = store.load()?;
    Ok(CopyCheck {
        schema: crate::SCHEMA_VERSION,
        records: report.records,
        sessions: snapshot.sessions.len(),
        leases: snapshot.leases.len(),
    })
}
