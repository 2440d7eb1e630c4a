//! The usage log: an append-only record of who used what, and when.
//!
//! Every committed [`Change`] appends exactly one record; the server adds its own events
//! (start, stop, ...) with [`Store::log_event`](crate::Store::log_event). Records are never
//! changed or removed, and their sequence numbers only grow, so a reader can follow the log
//! by remembering the last `seq` it saw.

use std::fmt;

use usher_core::{Change, Lease, LeaseId, Millis, ReleaseReason, SessionId};

/// What a usage record is about. Stored as its [`as_str`](UsageEvent::as_str) name, so the
/// log stays readable with plain SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UsageEvent {
    /// `session_open`: a client session began.
    SessionOpen,
    /// `session_close`: a session ended (goodbye or expiry; its releases say which).
    SessionClose,
    /// `checkout`: seats were granted.
    Checkout,
    /// `checkin`: seats came back because the client checked them in or closed its
    /// session (the latter with detail [`DETAIL_SESSION_CLOSED`]).
    Checkin,
    /// `expire`: seats came back because their session lapsed.
    Expire,
    /// `remove`: an administrator took the seats away.
    Remove,
    /// `server_start`: the server started serving.
    ServerStart,
    /// `server_stop`: the server stopped in an orderly way.
    ServerStop,
    /// Any other name: events the server invents later, or names written by a newer usher.
    /// [`UsageEvent::from`] never puts one of the names above in here.
    Other(String),
}

/// The detail recorded with a `checkin` caused by the client closing its session.
pub const DETAIL_SESSION_CLOSED: &str = "session closed";

impl UsageEvent {
    /// The name stored in the log.
    pub fn as_str(&self) -> &str {
        match self {
            UsageEvent::SessionOpen => "session_open",
            UsageEvent::SessionClose => "session_close",
            UsageEvent::Checkout => "checkout",
            UsageEvent::Checkin => "checkin",
            UsageEvent::Expire => "expire",
            UsageEvent::Remove => "remove",
            UsageEvent::ServerStart => "server_start",
            UsageEvent::ServerStop => "server_stop",
            UsageEvent::Other(name) => name,
        }
    }
}

impl From<&str> for UsageEvent {
    /// Parses a stored name; unknown names become [`UsageEvent::Other`].
    fn from(name: &str) -> Self {
        match name {
            "session_open" => UsageEvent::SessionOpen,
            "session_close" => UsageEvent::SessionClose,
            "checkout" => UsageEvent::Checkout,
            "checkin" => UsageEvent::Checkin,
            "expire" => UsageEvent::Expire,
            "remove" => UsageEvent::Remove,
            "server_start" => UsageEvent::ServerStart,
            "server_stop" => UsageEvent::ServerStop,
            other => UsageEvent::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for UsageEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the usage log.
///
/// Columns that do not apply to an event are `None`: session events carry no lease,
/// server events carry no session. `user`, `host` and `display` are copied from the
/// session row as it stood when the record was written, so they survive the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Position in the log: starts at 1, strictly increasing, never reused.
    pub seq: i64,
    /// When it happened: the `at` of the batch or event that wrote it.
    pub at: Millis,
    /// What happened.
    pub event: UsageEvent,
    /// The session concerned.
    pub session: Option<SessionId>,
    /// The lease concerned.
    pub lease: Option<LeaseId>,
    /// Feature of the lease.
    pub feature: Option<String>,
    /// Vendor of the lease's pool.
    pub vendor: Option<String>,
    /// Version of the pool the seats came from (not the version the client asked for).
    pub version: Option<String>,
    /// Seats.
    pub count: Option<u32>,
    /// User of the session.
    pub user: Option<String>,
    /// Host of the session.
    pub host: Option<String>,
    /// Display of the session.
    pub display: Option<String>,
    /// Free text: why, or anything the event wants to add.
    pub detail: Option<String>,
}

/// The part of a usage record that a change determines by itself; the backend adds the
/// sequence number, the time and the session's user, host and display.
///
/// Both backends build their records from this one function, so they cannot disagree on
/// what a change means in the log.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    pub event: UsageEvent,
    pub session: Option<SessionId>,
    pub lease: Option<&'a Lease>,
    pub detail: Option<&'static str>,
}

impl<'a> Entry<'a> {
    pub fn for_change(change: &'a Change) -> Self {
        match change {
            Change::SessionOpened(s) => Entry {
                event: UsageEvent::SessionOpen,
                session: Some(s.id),
                lease: None,
                detail: None,
            },
            Change::SessionClosed(id) => Entry {
                event: UsageEvent::SessionClose,
                session: Some(*id),
                lease: None,
                detail: None,
            },
            Change::LeaseGranted(l) => Entry {
                event: UsageEvent::Checkout,
                session: Some(l.session),
                lease: Some(l),
                detail: None,
            },
            Change::LeaseReleased { lease, reason } => {
                let (event, detail) = match reason {
                    ReleaseReason::Checkin => (UsageEvent::Checkin, None),
                    ReleaseReason::SessionClosed => {
                        (UsageEvent::Checkin, Some(DETAIL_SESSION_CLOSED))
                    }
                    ReleaseReason::Expired => (UsageEvent::Expire, None),
                    ReleaseReason::Removed => (UsageEvent::Remove, None),
                };
                Entry {
                    event,
                    session: Some(lease.session),
                    lease: Some(lease),
                    detail,
                }
            }
        }
    }
}

/// A short description of a change, for error messages.
pub(crate) fn describe(change: &Change) -> String {
    match change {
        Change::SessionOpened(s) => format!("opening session {}", s.id),
        Change::SessionClosed(id) => format!("closing session {id}"),
        Change::LeaseGranted(l) => {
            format!(
                "granting lease {} of {:?} to session {}",
                l.id, l.feature, l.session
            )
        }
        Change::LeaseReleased { lease, .. } => format!("releasing lease {}", lease.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        for event in [
            UsageEvent::SessionOpen,
            UsageEvent::SessionClose,
            UsageEvent::Checkout,
            UsageEvent::Checkin,
            UsageEvent::Expire,
            UsageEvent::ServerStart,
            UsageEvent::ServerStop,
            UsageEvent::Other("license_reload".into()),
        ] {
            assert_eq!(
                UsageEvent::from(event.as_str()),
                event,
                "round trip of {event}"
            );
        }
    }

    #[test]
    fn known_names_never_become_other() {
        assert_eq!(UsageEvent::from("checkin"), UsageEvent::Checkin);
        assert_eq!(
            UsageEvent::from("Checkin"),
            UsageEvent::Other("Checkin".into())
        );
    }
}
