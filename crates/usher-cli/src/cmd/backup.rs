//! `usher backup` and `usher restore`: a consistent copy of a server's store, taken while
//! it runs, and putting one back into a stopped server's data directory after checking it.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use usher_server::config::{LOCK_FILE, STORE_FILE, default_data_dir};

use crate::exit::{FAILURE, Failure, LOG_BROKEN, OK};

/// `usher backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The server's data directory [default: as usherd's].
    #[arg(long, env = "USHERD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The copy to write (replaced atomically if it exists).
    #[arg(long)]
    pub out: PathBuf,
}

/// `usher restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The data directory of the stopped server to restore into [default: as usherd's].
    #[arg(long, env = "USHERD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A copy made by `usher backup`.
    pub file: PathBuf,
}

/// Copies the store of the server whose data directory is given, running or not.
pub fn backup(args: BackupArgs) -> Result<u8, Failure> {
    let store = super::log::open_store(args.data_dir)?;
    store
        .backup_to(&args.out)
        .with_context(|| format!("backing up {}", store.path().display()))?;
    let check = checked(&args.out)?;
    println!(
        "wrote {}: schema {}, {} usage records (chain intact), {} sessions and {} leases held",
        args.out.display(),
        check.schema,
        check.records,
        check.sessions,
        check.leases
    );
    Ok(OK)
}

/// Checks a copy; a broken chain exits with the code `usher log verify` uses for it.
fn checked(path: &Path) -> Result<usher_store::CopyCheck, Failure> {
    usher_store::check_copy(path).map_err(|e| match e {
        usher_store::CopyError::Chain { .. } => Failure::new(LOG_BROKEN, e.to_string()),
        usher_store::CopyError::Store(_) => Failure::new(FAILURE, e.to_string()),
    })
}

/// Checks `args.file`, then makes it the store of a stopped server. The store it replaces
/// is kept beside it as `usher.db.before-restore`.
pub fn restore(args: RestoreArgs) -> Result<u8, Failure> {
    let check = checked(&args.file)?;
    let dir = args.data_dir.unwrap_or_else(default_data_dir);
    // Private as usherd makes them: the store holds every holder's user, host and address.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // Held until the copy is in place, so no server starts on a half-restored directory.
    let lock_path = dir.join(LOCK_FILE);
    let lock = private_file()
        .truncate(false)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Failure::new(
                FAILURE,
                format!(
                    "a server is using {}: stop it first (systemctl stop usherd), then restore",
                    dir.display()
                ),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(anyhow::Error::new(e)
                .context(format!("locking {}", lock_path.display()))
                .into());
        }
    }
    let store = dir.join(STORE_FILE);
    let incoming = dir.join(format!("{STORE_FILE}.restoring"));
    std::fs::File::open(&args.file)
        .and_then(|mut from| {
            // A leftover from an interrupted restore goes; creating anew (O_EXCL) never
            // follows a symbolic link.
            match std::fs::remove_file(&incoming) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut to = private_file().create_new(true).open(&incoming)?;
            std::io::copy(&mut from, &mut to)?;
            to.sync_all()
        })
        .with_context(|| format!("copying {} to {}", args.file.display(), incoming.display()))?;
    // The store being replaced goes aside whole: its file and its write-ahead log.
    for suffix in ["", "-wal", "-shm"] {
        let from = dir.join(format!("{STORE_FILE}{suffix}"));
        let to = dir.join(format!("{STORE_FILE}.before-restore{suffix}"));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&to);
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("moving {} aside", from.display()))
                    .into());
            }
        }
    }
    std::fs::rename(&incoming, &store)
        .with_context(|| format!("putting the copy in place at {}", store.display()))?;
    let _ = std::fs::File::open(&dir).and_then(|d| d.sync_all());
    drop(lock);
    println!(
        "restored {} into {}: {} usage records (chain intact), {} sessions and {} leases \
         held; the previous store is {}.before-restore",
        args.file.display(),
        store.display(),
        check.records,
        check.sessions,
        check.leases,
        store.display()
    );
    Ok(OK)
}

/// Options that open (creating if need be) a file for writing, mode 0600 when created.
fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true).mode(0o600);
    options
}
