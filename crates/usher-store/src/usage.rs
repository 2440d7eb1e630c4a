//! The usage log: an append-only record of who used what, and when.
//!
//! Every committed [`Change`] appends exactly one record; the server adds its own events
//! (start, stop, ...) with [`Store::log_event`](crate::Store::log_event). Records are never
//! changed or removed, and their sequence numbers only grow, so a reader can follow the log
//! by remembering the last `seq` it saw.

use std::fmt;

use usher_core::{
    Change, DequeueReason, DupGroup, Lease, LeaseId, Millis, QueuedRequest, ReleaseReason,
    SessionId,
};

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
    /// `expire`: seats came back because their session lapsed (or, with detail
    /// [`DETAIL_IDLE_TIMEOUT`], because the client was idle past the policy's `TIMEOUT`).
    Expire,
    /// `remove`: an administrator took the seats away.
    Remove,
    /// `server_start`: the server started serving.
    ServerStart,
    /// `server_stop`: the server stopped in an orderly way.
    ServerStop,
    /// `denied`: a checkout was refused; the detail says why (e.g. `all_in_use`).
    Denied,
    /// `denied_repeats`: `count` more refusals, after a `denied` record, of the same
    /// checkout (session, feature, version, seats) for the same reason (`detail`), within
    /// a minute of it. The server aggregates repeats so that one client retrying cannot
    /// grow the log faster than its legitimate work; reports count `count` denials.
    DeniedRepeats,
    /// `seats`: how many seats a pool offers from now on (`count`; `feature`, `vendor` and
    /// `version` name the pool), written for every pool at start and on every reload, so
    /// reports know the totals at each moment. The detail names the pool's `DUP_GROUP=`
    /// rule, if it has one (see [`LogEvent::dup_group`]), so reports count shared
    /// seats as the ledger does.
    Seats,
    /// `linger`: the client gave a lease back, but its seats stay held until the linger
    /// ends (`LINGER=`, `MIN_CHECKOUT=`); a `checkin` with detail [`DETAIL_LINGER_OVER`]
    /// (or [`DETAIL_REUSED`]) follows when they go back.
    Linger,
    /// `queue`: a checkout joined the queue to wait for a seat. `lease` is the handle the
    /// grant will carry, `version` the version asked for.
    Queue,
    /// `dequeue`: a checkout left the queue; the detail says why (`granted`, `timed_out`,
    /// `cancelled`, `session_ended` or `refused`). A `granted` one is followed by the
    /// `checkout` of the same lease.
    Dequeue,
    /// `borrow`: seats were borrowed for offline use (`usher borrow`); held until the
    /// matching `return`.
    Borrow,
    /// `return`: borrowed seats came back, returned early by the borrower or (with detail
    /// [`DETAIL_BORROW_ENDED`]) at the end of the borrow.
    Return,
    /// Any other name: events the server invents later, or names written by a newer usher.
    /// [`UsageEvent::from`] never puts one of the names above in here.
    Other(String),
}

/// The detail recorded with a `checkout` whose seats are beyond the pool's count
/// (`OVERDRAFT=`).
pub const DETAIL_OVERDRAFT: &str = "overdraft";

/// The detail recorded with an `expire` caused by the policy's `TIMEOUT`: the client was
/// idle for too long.
pub const DETAIL_IDLE_TIMEOUT: &str = "idle timeout";

/// The detail recorded with the `checkin` that ends a linger: the seats go back now.
pub const DETAIL_LINGER_OVER: &str = "linger over";

/// The detail recorded with the `checkin` of lingering seats taken over by a new checkout
/// of the same user and host (the new lease's `checkout` follows).
pub const DETAIL_REUSED: &str = "reused";

/// The detail recorded with the `return` of borrowed seats whose borrow period ended.
pub const DETAIL_BORROW_ENDED: &str = "borrow ended";

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
            UsageEvent::Denied => "denied",
            UsageEvent::DeniedRepeats => "denied_repeats",
            UsageEvent::Seats => "seats",
            UsageEvent::Linger => "linger",
            UsageEvent::Queue => "queue",
            UsageEvent::Dequeue => "dequeue",
            UsageEvent::Borrow => "borrow",
            UsageEvent::Return => "return",
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
            "denied" => UsageEvent::Denied,
            "denied_repeats" => UsageEvent::DeniedRepeats,
            "seats" => UsageEvent::Seats,
            "linger" => UsageEvent::Linger,
            "queue" => UsageEvent::Queue,
            "dequeue" => UsageEvent::Dequeue,
            "borrow" => UsageEvent::Borrow,
            "return" => UsageEvent::Return,
            other => UsageEvent::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for UsageEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the usage log: an event, where it stands in the log, and its link in the
/// hash chain.
///
/// The event's columns are a [`LogEvent`], read through the record (`record.feature`).
/// Columns that do not apply to an event are `None`: session events carry no lease,
/// server events carry no session. `user`, `host` and `display` are copied from the
/// session row as it stood when the record was written, so they survive the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Position in the log: starts at 1, strictly increasing, never reused.
    pub seq: i64,
    /// When it happened: the `at` of the batch or event that wrote it.
    pub at: Millis,
    /// What happened, to whom (for a change, `version` is the version of the pool the
    /// seats came from, not the version the client asked for).
    pub columns: LogEvent,
    /// Link in the log's hash chain: SHA-256 of the previous record's hash and this
    /// record's other columns (see [`record_hash`](crate::chain::record_hash)).
    pub hash: [u8; 32],
}

impl std::ops::Deref for UsageRecord {
    type Target = LogEvent;
    fn deref(&self) -> &LogEvent {
        &self.columns
    }
}

impl std::ops::DerefMut for UsageRecord {
    fn deref_mut(&mut self) -> &mut LogEvent {
        &mut self.columns
    }
}

/// How a `seats` record's detail begins when its pool groups duplicate checkouts.
const DUP_GROUP_DETAIL: &str = "DUP_GROUP=";

impl LogEvent {
    /// For a `seats` record: the pool's `DUP_GROUP=` rule, if its duplicate checkouts
    /// share seats (see [`LogEvent::sharing`]). `None` for every other record, and for a
    /// detail that is no rule.
    pub fn dup_group(&self) -> Option<DupGroup> {
        if self.event != UsageEvent::Seats {
            return None;
        }
        let rule = self.detail.as_deref()?.strip_prefix(DUP_GROUP_DETAIL)?;
        DupGroup::parse(rule).ok().flatten()
    }
}

/// A usage record that the caller composes in full, committed with a batch by
/// [`Store::commit_batch`](crate::Store::commit_batch): events the ledger produces without
/// a change, such as a refused checkout. The store adds `seq`, `at` and `hash`, and writes
/// the columns as given (it looks nothing up: the session may be gone by the time the
/// batch is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// What happened.
    pub event: UsageEvent,
    /// The session concerned.
    pub session: Option<SessionId>,
    /// The lease concerned.
    pub lease: Option<LeaseId>,
    /// Feature.
    pub feature: Option<String>,
    /// Vendor.
    pub vendor: Option<String>,
    /// Version (for a denial: the version asked for).
    pub version: Option<String>,
    /// Seats.
    pub count: Option<u32>,
    /// User of the session.
    pub user: Option<String>,
    /// Host of the session.
    pub host: Option<String>,
    /// Display of the session.
    pub display: Option<String>,
    /// Free text: for a denial, the reason (`all_in_use`, `unknown_feature`, ...).
    pub detail: Option<String>,
}

impl LogEvent {
    /// A server-level event (start, stop, ...) that concerns no session or lease.
    pub fn server(event: UsageEvent, detail: Option<&str>) -> Self {
        LogEvent {
            event,
            session: None,
            lease: None,
            feature: None,
            vendor: None,
            version: None,
            count: None,
            user: None,
            host: None,
            display: None,
            detail: detail.map(str::to_owned),
        }
    }

    /// The `seats` record of a pool offering `seats` seats.
    pub fn seats(feature: &str, vendor: &str, version: &str, seats: u32) -> Self {
        LogEvent {
            feature: Some(feature.to_owned()),
            vendor: Some(vendor.to_owned()),
            version: Some(version.to_owned()),
            count: Some(seats),
            ..LogEvent::server(UsageEvent::Seats, None)
        }
    }

    /// This `seats` record, for a pool whose duplicate checkouts share seats under `dup`
    /// (`DUP_GROUP=`): the rule goes in the detail, as `DUP_GROUP=UH` (read back by
    /// [`LogEvent::dup_group`]), so that a replay of the log counts seats as the
    /// ledger did.
    pub fn sharing(self, dup: Option<DupGroup>) -> Self {
        LogEvent {
            detail: dup.map(|d| format!("{DUP_GROUP_DETAIL}{d}")),
            ..self
        }
    }

    /// The record this event becomes at `seq` and `at`, with its hash still zero.
    pub(crate) fn record(&self, seq: i64, at: Millis) -> UsageRecord {
        UsageRecord {
            seq,
            at,
            columns: self.clone(),
            hash: [0; 32],
        }
    }
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
    /// For queue events: the waiting request (which has no lease yet).
    pub queued: Option<&'a QueuedRequest>,
    pub detail: Option<&'static str>,
}

impl<'a> Entry<'a> {
    pub fn for_change(change: &'a Change) -> Self {
        match change {
            Change::SessionOpened(s) => Entry {
                event: UsageEvent::SessionOpen,
                session: Some(s.id),
                lease: None,
                queued: None,
                detail: None,
            },
            Change::SessionClosed(id) => Entry {
                event: UsageEvent::SessionClose,
                session: Some(*id),
                lease: None,
                queued: None,
                detail: None,
            },
            Change::LeaseGranted(l) => Entry {
                event: if l.borrowed_until.is_some() {
                    UsageEvent::Borrow
                } else {
                    UsageEvent::Checkout
                },
                session: Some(l.session),
                lease: Some(l),
                queued: None,
                detail: l.overdraft.then_some(DETAIL_OVERDRAFT),
            },
            Change::LeaseReleased { lease, reason } => {
                let (event, detail) = match reason {
                    ReleaseReason::Checkin => (UsageEvent::Checkin, None),
                    ReleaseReason::SessionClosed => {
                        (UsageEvent::Checkin, Some(DETAIL_SESSION_CLOSED))
                    }
                    ReleaseReason::Expired => (UsageEvent::Expire, None),
                    ReleaseReason::IdleTimeout => (UsageEvent::Expire, Some(DETAIL_IDLE_TIMEOUT)),
                    ReleaseReason::LingerOver => (UsageEvent::Checkin, Some(DETAIL_LINGER_OVER)),
                    ReleaseReason::Reused => (UsageEvent::Checkin, Some(DETAIL_REUSED)),
                    ReleaseReason::Removed => (UsageEvent::Remove, None),
                    ReleaseReason::Returned => (UsageEvent::Return, None),
                    ReleaseReason::BorrowEnded => (UsageEvent::Return, Some(DETAIL_BORROW_ENDED)),
                };
                Entry {
                    event,
                    session: Some(lease.session),
                    lease: Some(lease),
                    queued: None,
                    detail,
                }
            }
            Change::LeaseLingering(l) => Entry {
                event: UsageEvent::Linger,
                session: Some(l.session),
                lease: Some(l),
                queued: None,
                detail: None,
            },
            Change::Queued(request) => Entry {
                event: UsageEvent::Queue,
                session: Some(request.session),
                lease: None,
                queued: Some(request),
                detail: None,
            },
            Change::Dequeued { request, reason } => Entry {
                event: UsageEvent::Dequeue,
                session: Some(request.session),
                lease: None,
                queued: Some(request),
                detail: Some(match reason {
                    DequeueReason::Granted(_) => "granted",
                    DequeueReason::TimedOut => "timed_out",
                    DequeueReason::Cancelled => "cancelled",
                    DequeueReason::SessionEnded => "session_ended",
                    DequeueReason::Refused(_) => "refused",
                }),
            },
        }
    }
}

impl Entry<'_> {
    /// The full record, with the session's `(user, host, display)` if it is stored, and
    /// the hash still zero.
    pub fn record(
        &self,
        seq: i64,
        at: Millis,
        who: Option<(String, String, String)>,
    ) -> UsageRecord {
        let lease = self.lease;
        let (user, host, display) = match who {
            Some((u, h, d)) => (Some(u), Some(h), Some(d)),
            None => (None, None, None),
        };
        let queued = self.queued;
        let columns = LogEvent {
            event: self.event.clone(),
            session: self.session,
            lease: lease.map(|l| l.id).or(queued.map(|q| q.lease_id)),
            feature: lease
                .map(|l| l.feature.to_string())
                .or(queued.map(|q| q.feature.clone())),
            vendor: lease.map(|l| l.vendor.to_string()),
            version: lease
                .map(|l| l.pool_version.to_string())
                .or(queued.map(|q| q.version.clone())),
            count: lease.map(|l| l.count).or(queued.map(|q| q.count)),
            user,
            host,
            display,
            detail: self.detail.map(str::to_owned),
        };
        UsageRecord {
            seq,
            at,
            columns,
            hash: [0; 32],
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
        Change::LeaseLingering(l) => format!("lease {} lingering", l.id),
        Change::Queued(r) => format!("queueing request {} of {:?}", r.lease_id, r.feature),
        Change::Dequeued { request, .. } => format!("dequeueing request {}", request.lease_id),
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
            UsageEvent::Denied,
            UsageEvent::DeniedRepeats,
            UsageEvent::Seats,
            UsageEvent::Linger,
            UsageEvent::Queue,
            UsageEvent::Dequeue,
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
    fn a_seats_record_carries_its_pool_s_dup_group() {
        for rule in ["SITE", "U", "UH", "HD", "UHD", "D"] {
            let dup = DupGroup::parse(rule).unwrap();
            let record = LogEvent::seats("cad", "acme", "2025", 3)
                .sharing(dup)
                .record(1, 0);
            assert_eq!(
                record.detail.as_deref(),
                Some(&*format!("DUP_GROUP={rule}"))
            );
            assert_eq!(record.dup_group(), dup, "{rule}");
        }
        let plain = LogEvent::seats("cad", "acme", "2025", 3).sharing(None);
        assert_eq!(plain.detail, None);
        assert_eq!(plain.record(1, 0).dup_group(), None);
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
