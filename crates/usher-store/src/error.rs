//! What can go wrong in a store.

use std::{error::Error as StdError, io, path::PathBuf};

use usher_core::{LeaseId, SessionId};

/// The underlying cause of a [`StoreError::Sqlite`]. It is boxed and opaque so that no
/// SQLite type leaks out of this crate (only `usher-store` knows SQL); print it through
/// [`std::error::Error::source`].
pub type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// An error from a [`Store`](crate::Store).
///
/// The `Display` text of each variant says what the store was doing; the low-level cause,
/// where there is one, is the error's `source()` (print the chain, e.g. with anyhow's
/// `{:#}`, to see both).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory that should hold the store file could not be created.
    #[error("creating directory {} for the store", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The store file could not be created (mode 0600, not through a symbolic link).
    #[error("creating the store file {}", path.display())]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// SQLite reported a failure.
    #[error("{context}")]
    Sqlite {
        /// What the store was doing, e.g. "committing batch of 3 changes".
        context: String,
        /// SQLite's error.
        #[source]
        source: Cause,
    },
    /// The file was written by a newer usher whose schema this version does not know.
    /// Opening it anyway could corrupt it, so the store refuses.
    #[error(
        "store at {} has schema version {found}, but this usher knows only versions up to \
         {supported}; run a newer usher or restore a backup",
        path.display()
    )]
    SchemaTooNew {
        /// The store file.
        path: PathBuf,
        /// Schema version found in the file (`PRAGMA user_version`).
        found: i64,
        /// Newest schema version this build understands.
        supported: i64,
    },
    /// The file has an older schema than this build reads without migrating it (a
    /// read-only open never migrates). Starting `usherd` once migrates it.
    #[error(
        "store at {} has schema version {found}, older than version {needed}; start usherd \
         once to migrate it",
        path.display()
    )]
    SchemaTooOld {
        /// The store file.
        path: PathBuf,
        /// Schema version found in the file.
        found: i64,
        /// Version needed.
        needed: i64,
    },
    /// The file is an SQLite database, but not one of ours (it belongs to some other
    /// application, or holds tables we did not create). The store refuses to touch it.
    #[error("{} is not an usher store ({reason})", path.display())]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// SQLite would not switch the file to write-ahead logging (some network file systems
    /// cannot support the shared memory it needs). Without WAL the store's durability and
    /// reader/writer concurrency are not what the server relies on, so it refuses to run.
    #[error("store at {} cannot use WAL journaling (journal_mode is {mode:?})", path.display())]
    NoWal {
        /// The store file.
        path: PathBuf,
        /// The journal mode SQLite reported instead of `wal`.
        mode: String,
    },
    /// A batch granted a lease to a session the store does not hold (never opened, or
    /// already closed). The ledger never produces such a batch, so this is a bug in the
    /// caller; the whole batch was refused and the store is unchanged.
    #[error("lease {lease} is granted to session {session}, which is not stored")]
    UnknownSession {
        /// The lease being granted.
        lease: LeaseId,
        /// The session it names.
        session: SessionId,
    },
}

/// Attaches "what we were doing" to a rusqlite result.
pub(crate) trait Context<T> {
    /// Wraps an error as [`StoreError::Sqlite`], with the context built lazily so the
    /// happy path does not format strings.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|e| sqlite(what(), e))
    }
}

/// Wraps a rusqlite error with its context.
pub(crate) fn sqlite(context: String, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        context,
        source: Box::new(source),
    }
}
