//! Borrowed seats: used offline, with no server, until the borrow ends.
//!
//! [`Client::borrow`](crate::Client::borrow) asks the server to hold seats for this host
//! for a while and returns a [`BorrowToken`] the server signed. [`BorrowStore::save`] keeps
//! it in a file in the user's data directory. From then on the application calls [`check`]
//! at start: with only the vendor's public key (compiled into the application), it verifies
//! that the token is genuine, that the license it came from is genuine and bound to the
//! server that lent it, that it is bound to this machine and that the borrow has not
//! ended, and so grants the feature with no network at all. A borrowed seat is this host's
//! seat: use it before asking a server for another one.
//!
//! ```no_run
//! # fn demo() -> Result<(), usher_client::borrow::BorrowError> {
//! let key = usher_license::VendorPublicKey::read_from("acme.pub".as_ref()).unwrap();
//! let borrowed = usher_client::borrow::check("cad", "2025", &[key])?;
//! println!("cad is borrowed until {} (ms since the epoch)", borrowed.until_ms);
//! # Ok(()) }
//! ```

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use usher_license::{BorrowToken, Borrowed, TokenError};
use usher_license::{VendorPublicKey, host_ids};

/// Environment variable naming the directory borrow tokens are kept in.
pub const ENV_BORROW_DIR: &str = "USHER_BORROW_DIR";

/// Why a borrowed seat cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BorrowError {
    /// Nothing of this feature is borrowed on this host (for this user).
    #[error("{feature:?} is not borrowed on this host (no {})", path.display())]
    NotBorrowed {
        /// Feature asked for.
        feature: String,
        /// Where its token would be.
        path: PathBuf,
    },
    /// The token is there but does not grant the feature (forged, edited, another host,
    /// ended...).
    #[error("the borrow token {} does not grant {feature:?}: {source}", path.display())]
    Invalid {
        /// Feature asked for.
        feature: String,
        /// The token file.
        path: PathBuf,
        /// Why.
        source: TokenError,
    },
    /// The token store could not be read or written.
    #[error("borrow token store {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The feature name cannot name a token file.
    #[error("{0:?} is not a feature name")]
    BadFeature(String),
}

/// The directory holding this user's borrow tokens, one file per feature
/// (`FEATURE.borrow`, mode 0600).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BorrowStore {
    dir: PathBuf,
}

impl BorrowStore {
    /// The store at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        BorrowStore { dir: dir.into() }
    }

    /// The user's store: `$USHER_BORROW_DIR`, else `$XDG_DATA_HOME/usher/borrow`, else
    /// `~/.local/share/usher/borrow`.
    pub fn user_default() -> Self {
        let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let dir = if let Some(dir) = env(ENV_BORROW_DIR) {
            PathBuf::from(dir)
        } else if let Some(data) = env("XDG_DATA_HOME") {
            Path::new(&data).join("usher/borrow")
        } else {
            let home = env("HOME").unwrap_or_else(|| ".".into());
            Path::new(&home).join(".local/share/usher/borrow")
        };
        BorrowStore { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the token for `feature` is kept.
    pub fn path(&self, feature: &str) -> Result<PathBuf, BorrowError> {
        let valid = !feature.is_empty()
            && feature.len() <= usher_license::MAX_NAME_LEN
            && feature
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(BorrowError::BadFeature(feature.to_string()));
        }
        Ok(self.dir.join(format!("{feature}.borrow")))
    }

    /// Keeps `token` (replacing any token of the same feature), readable by this user only.
    pub fn save(&self, token: &BorrowToken) -> Result<PathBuf, BorrowError> {
        let path = self.path(&token.statement.feature)?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BorrowError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        // Written beside it and renamed over it, so a crash never leaves half a token.
        let partial = path.with_extension("borrow.partial");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io_err(&partial))?;
        file.write_all(token.to_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_err(&partial))?;
        fs::rename(&partial, &path).map_err(io_err(&path))?;
        Ok(path)
    }

    /// The token kept for `feature`, if any (not verified: see [`BorrowStore::check`]).
    pub fn load(&self, feature: &str) -> Result<Option<BorrowToken>, BorrowError> {
        let path = self.path(feature)?;
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(BorrowError::Io { path, source }),
        };
        BorrowToken::from_text(&text)
            .map(Some)
            .map_err(|source| BorrowError::Invalid {
                feature: feature.to_string(),
                path,
                source,
            })
    }

    /// Forgets the token for `feature`; whether there was one.
    pub fn remove(&self, feature: &str) -> Result<bool, BorrowError> {
        let path = self.path(feature)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(BorrowError::Io { path, source }),
        }
    }

    /// Every token kept, by feature name; unreadable files are skipped.
    pub fn list(&self) -> Result<Vec<BorrowToken>, BorrowError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(BorrowError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut tokens: Vec<BorrowToken> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "borrow"))
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .filter_map(|text| BorrowToken::from_text(&text).ok())
            .collect();
        tokens.sort_by(|a, b| a.statement.feature.cmp(&b.statement.feature));
        Ok(tokens)
    }

    /// Whether the token kept for `feature` grants `version` or newer (empty: any) on
    /// this machine now, trusting only `keys`.
    pub fn check(
        &self,
        feature: &str,
        version: &str,
        keys: &[VendorPublicKey],
    ) -> Result<Borrowed, BorrowError> {
        let Some(token) = self.load(feature)? else {
            return Err(BorrowError::NotBorrowed {
                feature: feature.to_string(),
                path: self.path(feature)?,
            });
        };
        token
            .verify(keys, feature, version, &host_ids(), now_ms())
            .map_err(|source| BorrowError::Invalid {
                feature: feature.to_string(),
                path: self.path(feature).unwrap_or_default(),
                source,
            })
    }
}

/// [`BorrowStore::check`] on the user's default store.
pub fn check(
    feature: &str,
    version: &str,
    keys: &[VendorPublicKey],
) -> Result<Borrowed, BorrowError> {
    BorrowStore::user_default().check(feature, version, keys)
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
