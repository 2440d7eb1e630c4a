//! The administrator's actions (remove, reload, down), shared by the admin socket and the
//! admin HTTP API so that both go through the same ledger commands and leave the same
//! trail: a log line and an `admin` record in the usage log naming who acted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use usher_core::{Command, Lease, LeaseId, LedgerError, Outcome};
use usher_store::{LogEvent, UsageEvent};

use crate::ledger_task::{LedgerGone, LedgerHandle};
use crate::notices::Notices;

/// The usage-log event name of an administrator's action. Its detail reads
/// `ACTION ... by WHO`, e.g. `remove lease 17 by http 127.0.0.1:50412 (token)`.
pub const ADMIN_EVENT: &str = "admin";

/// Why an administrator's action was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The lease is younger than the minimum remove time.
    #[error("the lease is too new to remove; try again in {wait_ms} ms")]
    TooSoonToRemove {
        /// How long until it may be removed.
        wait_ms: u64,
    },
    /// The seats are borrowed for offline use: they cannot be taken back.
    #[error(
        "the seats are borrowed for offline use until {until} (ms since the epoch); they come \
         back when the borrower returns them (`usher borrow --return`) or the borrow ends"
    )]
    Borrowed {
        /// When the borrow ends.
        until: u64,
    },
    /// The license files or the policy file could not be loaded; the licenses and policy
    /// in force are unchanged.
    #[error("reload refused, the licenses and policy in force are unchanged: {0}")]
    ReloadRefused(String),
    /// Something unexpected failed inside the server.
    #[error("{0}")]
    Internal(String),
    /// The server is shutting down.
    #[error(transparent)]
    Gone(#[from] LedgerGone),
}

/// What a reload re-reads: the files the server was started with, and what loading them
/// depends on.
#[derive(Debug, Clone)]
pub struct ReloadInputs {
    /// License files and directories.
    pub license_files: Vec<PathBuf>,
    /// Vendor public keys.
    pub vendor_keys: Vec<PathBuf>,
    /// The policy (options) file, if any.
    pub policy_file: Option<PathBuf>,
    /// See [`crate::Config::min_timeout`].
    pub min_timeout: Duration,
    /// This server's `USHER_ID=` host id (licenses may be bound to it).
    pub server_host_id: String,
}

/// What an administrator's actions act on.
#[derive(Debug)]
pub struct Admin {
    /// The ledger.
    pub ledger: LedgerHandle,
    /// Where a removed lease's holder is told.
    pub notices: Arc<Notices>,
    /// Cancelled by an administrator's `down`.
    pub down: CancellationToken,
    /// What a reload re-reads.
    pub reload: ReloadInputs,
}

/// What a reload put in force.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// Entitlements now served.
    pub entitlements: usize,
    /// Entitlements refused, one line each.
    pub refused: Vec<String>,
    /// Entitlements not usable today, one line each.
    pub warnings: Vec<String>,
}

impl Admin {
    /// Appends the `admin` record of an action to the usage log.
    async fn audit(&self, what: String, lease: Option<&Lease>) -> Result<(), LedgerGone> {
        let mut event = LogEvent::server(UsageEvent::Other(ADMIN_EVENT.into()), Some(&what));
        if let Some(l) = lease {
            event.lease = Some(l.id);
            event.session = Some(l.session);
            event.feature = Some(l.feature.to_string());
            event.vendor = Some(l.vendor.to_string());
            event.version = Some(l.pool_version.to_string());
            event.count = Some(l.count);
        }
        self.ledger.record(event).await
    }

    /// Removes a lease, tells its holder, and records who did it. `Ok(None)`: no such lease
    /// is held (removing twice is harmless).
    pub async fn remove(&self, lease_id: u64, by: &str) -> Result<Option<Lease>, AdminError> {
        let applied = self
            .ledger
            .apply(Command::Remove {
                lease_id: LeaseId(lease_id),
            })
            .await?;
        match applied.result {
            Ok(Outcome::Released(lease)) => {
                info!(lease = lease.id.0, feature = %lease.feature, by, "lease removed by an administrator");
                self.notices.lease_lost(
                    lease.session,
                    lease.id.0,
                    usher_proto::LossCause::RemovedByAdministrator,
                    "removed by an administrator",
                );
                self.audit(format!("remove lease {lease_id} by {by}"), Some(&lease))
                    .await?;
                Ok(Some(lease))
            }
            Ok(_) => Ok(None),
            Err(LedgerError::TooSoonToRemove { wait_ms }) => {
                Err(AdminError::TooSoonToRemove { wait_ms })
            }
            Err(LedgerError::Borrowed { until }) => Err(AdminError::Borrowed { until }),
            Err(e) => Err(AdminError::Internal(e.to_string())),
        }
    }

    /// Re-reads license files, vendor keys and the policy file and puts them in force. A file
    /// that fails to parse leaves the licenses and policy in force unchanged and says why.
    pub async fn reload(&self, by: &str) -> Result<Reloaded, AdminError> {
        let inputs = self.reload.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            crate::licenses::load_all(
                &inputs.license_files,
                &inputs.vendor_keys,
                inputs.policy_file.as_deref(),
                inputs.min_timeout,
                &inputs.server_host_id,
                chrono::Utc::now().date_naive(),
            )
        })
        .await;
        let crate::licenses::Loaded {
            licenses: mut loaded,
            policy,
            policy_warnings,
        } = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => {
                warn!(
                    by,
                    "reload refused, the licenses and policy in force are unchanged: {e}; fix \
                 the file named and reload again"
                );
                return Err(AdminError::ReloadRefused(e.to_string()));
            }
            Err(e) => return Err(AdminError::Internal(e.to_string())),
        };
        for line in &loaded.refused {
            warn!(
                "entitlement refused: {line}; {}",
                crate::licenses::REFUSED_ADVICE
            );
        }
        crate::licenses::warn_not_usable(&loaded.warnings);
        for line in &policy_warnings {
            warn!("{line}");
        }
        loaded.warnings.extend(policy_warnings);
        let files = loaded
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        self.ledger
            .reload(loaded.catalog, policy, files, loaded.vendors)
            .await?;
        info!(
            entitlements = loaded.entitlements.len(),
            refused = loaded.refused.len(),
            by,
            "licenses reloaded"
        );
        let done = Reloaded {
            entitlements: loaded.entitlements.len(),
            refused: loaded.refused,
            warnings: loaded.warnings,
        };
        self.audit(
            format!("reload ({} entitlements) by {by}", done.entitlements),
            None,
        )
        .await?;
        Ok(done)
    }

    /// Records who asked, then starts a graceful shutdown (as SIGTERM).
    pub async fn down(&self, by: &str) -> Result<(), AdminError> {
        info!(by, "shutdown requested by an administrator");
        // Recorded first: once `down` fires, the ledger may stop taking records.
        let recorded = self.audit(format!("down by {by}"), None).await;
        self.down.cancel();
        Ok(recorded?)
    }
}
