//! [`License`]: seats held, checked back in when dropped, and how their loss is told.

use std::time::SystemTime;

use tokio::sync::{mpsc, watch};

use crate::driver::Call;
#[cfg(doc)]
use crate::{Client, ClientConfig};
use crate::{LossReason, LossWatch};

/// Seats held, from [`Client::checkout`]. Dropping it checks them back in. While it is
/// held, the client keeps the seats alive (heartbeats, reconnects); if they are taken
/// away anyway, [`License::lost`] says why.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
/// let license = client.checkout("cad").await?;
/// println!(
///     "{} seat(s) of {} {} from {}{}",
///     license.count(),
///     license.feature(),
///     license.version(),
///     license.vendor(),
///     if license.overdraft() { " (overdraft)" } else { "" },
/// );
/// if let Some(reason) = license.lost_reason() {
///     eprintln!("already lost: {reason}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct License {
    pub(crate) lease_id: u64,
    pub(crate) feature: String,
    pub(crate) version: String,
    pub(crate) vendor: String,
    pub(crate) count: u32,
    pub(crate) expires: Option<SystemTime>,
    pub(crate) overdraft: bool,
    pub(crate) statement: Option<String>,
    pub(crate) lost: watch::Receiver<Option<String>>,
    pub(crate) calls: mpsc::UnboundedSender<Call>,
}

impl License {
    /// The lease handle (as administrators see it).
    pub fn lease_id(&self) -> u64 {
        self.lease_id
    }

    /// Feature.
    pub fn feature(&self) -> &str {
        &self.feature
    }

    /// Version of the pool the seats came from.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Vendor.
    pub fn vendor(&self) -> &str {
        &self.vendor
    }

    /// Seats held.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// When the entitlement behind the seats expires (`None`: permanent).
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }

    /// Whether the seats were granted beyond the licensed count under the vendor's
    /// `OVERDRAFT=` allowance (the application may want to tell the user).
    pub fn overdraft(&self) -> bool {
        self.overdraft
    }

    /// The grant's statement signed by the server, as text, when the grant was verified
    /// against vendor keys ([`ClientConfig::vendor_keys`]); `None` otherwise. Another
    /// program can check it with [`usher_license::SignedStatement::from_text`] and
    /// [`usher_license::SignedStatement::verify_grant`], given the statement's own nonce
    /// and this license's lease id, feature (the token pool, for a token feature) and
    /// count.
    pub fn statement(&self) -> Option<&str> {
        self.statement.as_deref()
    }

    /// Why the license was lost, if it was (so far).
    pub fn lost_reason(&self) -> Option<LossReason> {
        self.loss_watch().reason()
    }

    /// A follower of the license's loss that does not borrow the license, so a task of
    /// its own can wait on it (see [`LossWatch`]).
    pub fn loss_watch(&self) -> LossWatch {
        LossWatch::new(self.lost.clone())
    }

    /// Completes when the license is lost (the session expired while the server was out
    /// of reach, or an administrator removed it), with the reason. Never completes for a
    /// license that is not lost.
    ///
    /// ```no_run
    /// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
    /// let license = client.checkout("cad").await?;
    /// tokio::select! {
    ///     () = std::future::pending::<()>() => {} // the licensed work
    ///     reason = license.lost() => eprintln!("stopping: the license was lost ({reason})"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) -> LossReason {
        match self.loss_watch().lost().await {
            Some(reason) => reason,
            // The client is gone for good, so nothing can ever report a loss.
            None => std::future::pending().await,
        }
    }
}

impl Drop for License {
    fn drop(&mut self) {
        // Fire and forget: the driver sends the checkin (or, if the whole client is
        // going away, the goodbye releases it).
        let _ = self.calls.send(Call::Release {
            lease_id: self.lease_id,
        });
    }
}
