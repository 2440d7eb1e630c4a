//! Why a license was lost, and how an application follows a license or the connection.
//!
//! The background task reports a loss as a line of text (its own, or the server's
//! `LeaseLost` notice); [`LossReason::from_message`] reads that line into the reason an
//! application can act on, keeping any line it does not know in [`LossReason::Other`].
//! A server's notice also names its cause, typed ([`usher_proto::LossCause`]):
//! [`LossReason::from_lease_lost`] takes that, and reads the line only when the cause is
//! unspecified (an older server's notice).

use std::fmt;

use tokio::sync::watch;

/// What the background task says when the server stayed out of reach past the TTL.
const SERVER_UNREACHABLE: &str =
    "the license server has been out of reach for longer than the session TTL";
/// What the background task says when the server no longer knows the session.
const SESSION_EXPIRED: &str = "the session expired and its seats were released";
/// What the background task says when a resumed session no longer lists a lease.
const RELEASED_WHILE_AWAY: &str = "the server released this license while the client was away";
/// The server's notice for a lease an administrator removed (`usher remove`, the HTTP API).
const REMOVED: &str = "removed by an administrator";
/// How the server's notice for a seat reclaimed from an idle application begins.
const IDLE_RECLAIMED: &str = "reclaimed: the application was idle";

/// Why a [`License`](crate::License) was lost: the seats are no longer the application's,
/// and it should stop the licensed work (or check out again).
///
/// More reasons may come in later versions; match with a `_` arm.
///
/// ```
/// use usher_client::LossReason;
///
/// let reason = LossReason::from_message("removed by an administrator");
/// assert_eq!(reason, LossReason::RemovedByAdministrator);
/// assert_eq!(reason.to_string(), "removed by an administrator");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// The server could not be reached for longer than the session TTL, so the server
    /// has released the session's seats.
    ServerUnreachable,
    /// The server no longer knew the session when the client came back (it was away too
    /// long, or the server lost its state): every seat of the session was released.
    SessionExpired,
    /// The session was resumed, but the server no longer listed this seat: it was
    /// released while the client was away (by an administrator, say).
    ReleasedWhileAway,
    /// An administrator removed the seat (`usher remove`, the HTTP API).
    RemovedByAdministrator,
    /// The application was idle (see [`Client::set_idle`](crate::Client::set_idle))
    /// for longer than the server's `TIMEOUT` for the feature, and the seat was reclaimed.
    IdleReclaimed,
    /// A reason this client does not know (a newer server's), as the server said it.
    Other(String),
}

impl LossReason {
    /// Reads a loss report, as the background task or the server words it.
    pub fn from_message(message: &str) -> LossReason {
        match message {
            SERVER_UNREACHABLE => LossReason::ServerUnreachable,
            SESSION_EXPIRED => LossReason::SessionExpired,
            RELEASED_WHILE_AWAY => LossReason::ReleasedWhileAway,
            REMOVED => LossReason::RemovedByAdministrator,
            m if m.starts_with(IDLE_RECLAIMED) => LossReason::IdleReclaimed,
            other => LossReason::Other(other.to_string()),
        }
    }
}

impl LossReason {
    /// Reads the server's `LeaseLost` notice: its typed cause when it names one, else (a
    /// server older than the cause, or a cause newer than this client) its text, as
    /// [`LossReason::from_message`] does.
    ///
    /// ```
    /// use usher_client::LossReason;
    /// use usher_proto::{LeaseLost, LossCause};
    ///
    /// let typed = LeaseLost {
    ///     lease_id: 7,
    ///     reason: "removed by alice".into(),
    ///     cause: LossCause::RemovedByAdministrator as i32,
    /// };
    /// assert_eq!(LossReason::from_lease_lost(&typed), LossReason::RemovedByAdministrator);
    ///
    /// let untyped = LeaseLost { cause: 0, reason: "removed by an administrator".into(), ..typed };
    /// assert_eq!(LossReason::from_lease_lost(&untyped), LossReason::RemovedByAdministrator);
    /// ```
    pub fn from_lease_lost(notice: &usher_proto::LeaseLost) -> LossReason {
        match notice.cause() {
            usher_proto::LossCause::RemovedByAdministrator => LossReason::RemovedByAdministrator,
            usher_proto::LossCause::IdleReclaimed => LossReason::IdleReclaimed,
            usher_proto::LossCause::Unspecified => LossReason::from_message(&notice.reason),
        }
    }
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossReason::ServerUnreachable => SERVER_UNREACHABLE,
            LossReason::SessionExpired => SESSION_EXPIRED,
            LossReason::ReleasedWhileAway => RELEASED_WHILE_AWAY,
            LossReason::RemovedByAdministrator => REMOVED,
            LossReason::IdleReclaimed => {
                "reclaimed: the application was idle for longer than the server's TIMEOUT \
                 for this feature"
            }
            LossReason::Other(message) => message,
        })
    }
}

/// Follows one license for its loss, apart from the [`License`](crate::License) itself
/// (so a task of its own can wait on it). Made by [`License::loss_watch`](crate::License::loss_watch).
///
/// ```no_run
/// # async fn demo(license: &usher_client::License) {
/// let watch = license.loss_watch();
/// tokio::spawn(async move {
///     if let Some(reason) = watch.lost().await {
///         eprintln!("license lost: {reason}");
///     }
/// });
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LossWatch {
    rx: watch::Receiver<Option<String>>,
}

impl LossWatch {
    pub(crate) fn new(rx: watch::Receiver<Option<String>>) -> Self {
        LossWatch { rx }
    }

    /// Why the license was lost, if it was (so far).
    pub fn reason(&self) -> Option<LossReason> {
        self.rx.borrow().as_deref().map(LossReason::from_message)
    }

    /// Completes when the license is lost, with the reason, or with `None` once it is
    /// checked in (or the client is gone) without having been lost.
    pub async fn lost(mut self) -> Option<LossReason> {
        loop {
            if let Some(reason) = self.rx.borrow_and_update().as_deref() {
                return Some(LossReason::from_message(reason));
            }
            self.rx.changed().await.ok()?;
        }
    }
}

/// Follows whether a [`Client`](crate::Client) is connected. Made by
/// [`Client::connection_watch`](crate::Client::connection_watch).
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) {
/// let mut connection = client.connection_watch();
/// while let Some(up) = connection.changed().await {
///     eprintln!("{}", if up { "reconnected" } else { "connection lost; reconnecting" });
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionWatch {
    rx: watch::Receiver<bool>,
}

impl ConnectionWatch {
    pub(crate) fn new(rx: watch::Receiver<bool>) -> Self {
        ConnectionWatch { rx }
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits for the next change and returns the new state, or `None` once the client is
    /// gone (nothing will change any more).
    pub async fn changed(&mut self) -> Option<bool> {
        self.rx.changed().await.ok()?;
        Some(*self.rx.borrow_and_update())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_reason_reads_back_from_its_own_words() {
        for reason in [
            LossReason::ServerUnreachable,
            LossReason::SessionExpired,
            LossReason::ReleasedWhileAway,
            LossReason::RemovedByAdministrator,
            LossReason::IdleReclaimed,
            LossReason::Other("the moon is in the wrong phase".into()),
        ] {
            assert_eq!(
                LossReason::from_message(&reason.to_string()),
                reason,
                "{reason}"
            );
        }
    }

    #[test]
    fn the_servers_idle_notice_reads_as_idle_reclaimed() {
        // As usher-server's notices.rs words it.
        let notice = "reclaimed: the application was idle for longer than the server's \
                      TIMEOUT for this feature";
        assert_eq!(LossReason::from_message(notice), LossReason::IdleReclaimed);
    }

    #[test]
    fn a_notice_is_read_by_its_cause_and_by_its_text_without_one() {
        use usher_proto::{LeaseLost, LossCause};
        let notice = |cause: i32, reason: &str| LeaseLost {
            lease_id: 1,
            reason: reason.into(),
            cause,
        };
        // An older server's notices (no cause) read as before.
        for (text, reason) in [
            (
                "removed by an administrator",
                LossReason::RemovedByAdministrator,
            ),
            (
                "reclaimed: the application was idle for longer than the server's TIMEOUT \
                 for this feature",
                LossReason::IdleReclaimed,
            ),
            ("the moon", LossReason::Other("the moon".into())),
        ] {
            assert_eq!(
                LossReason::from_lease_lost(&notice(0, text)),
                reason,
                "{text}"
            );
        }
        // A typed cause wins over the text, whatever the text says.
        let removed = notice(LossCause::RemovedByAdministrator as i32, "taken by alice");
        assert_eq!(
            LossReason::from_lease_lost(&removed),
            LossReason::RemovedByAdministrator
        );
        let idle = notice(
            LossCause::IdleReclaimed as i32,
            "removed by an administrator",
        );
        assert_eq!(
            LossReason::from_lease_lost(&idle),
            LossReason::IdleReclaimed
        );
        // A cause newer than this client falls back on the text.
        let newer = notice(99, "the moon");
        assert_eq!(
            LossReason::from_lease_lost(&newer),
            LossReason::Other("the moon".into())
        );
    }

    #[tokio::test]
    async fn a_watch_reports_the_loss_or_none_after_a_checkin() {
        let (tx, rx) = watch::channel(None);
        let watch = LossWatch::new(rx);
        assert_eq!(watch.reason(), None);
        tx.send_replace(Some(SESSION_EXPIRED.to_string()));
        assert_eq!(watch.reason(), Some(LossReason::SessionExpired));
        assert_eq!(watch.lost().await, Some(LossReason::SessionExpired));

        let (tx, rx) = watch::channel(None::<String>);
        drop(tx); // checked in without a loss
        assert_eq!(LossWatch::new(rx).lost().await, None);
    }

    #[tokio::test]
    async fn a_connection_watch_follows_changes_until_the_client_is_gone() {
        let (tx, rx) = watch::channel(true);
        let mut connection = ConnectionWatch::new(rx);
        assert!(connection.is_connected());
        tx.send_replace(false);
        assert_eq!(connection.changed().await, Some(false));
        drop(tx);
        assert_eq!(connection.changed().await, None);
    }
}
