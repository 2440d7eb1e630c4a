//! What goes into the ledger (commands) and what comes out (outcomes and changes).

use crate::{
    ClientInfo, DequeueReason, Lease, LeaseId, Millis, QueuedRequest, Session, SessionId, Wait,
};

/// A request to change (or read) the ledger. Everything non-deterministic (ids, secrets,
/// time) is supplied by the caller.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open a new session.
    OpenSession {
        /// Fresh id, unused by any live session.
        id: SessionId,
        /// SHA-256 of the fresh secret handed to the client.
        secret_hash: [u8; 32],
        /// Who the client says it is.
        client: ClientInfo,
    },
    /// Re-attach a connection to an existing session (after a network blip or a server
    /// restart). Succeeds only with the right secret and while the session lives.
    Resume {
        /// Session to resume.
        id: SessionId,
        /// SHA-256 of the secret the client presented.
        secret_hash: [u8; 32],
        /// The client's current network address.
        address: String,
    },
    /// The session was heard from: push its expiry out by one TTL.
    Heartbeat {
        /// Session.
        id: SessionId,
    },
    /// The client detaches the session: its connection closes next, and UDP keepalives
    /// (applied as heartbeats) keep the session alive until it resumes over TCP.
    Detach {
        /// Session.
        id: SessionId,
    },
    /// The session's connection closed without a goodbye (the peer's OS closed it, as when
    /// the process crashed): release its seats after the reconnect grace unless it resumes.
    Disconnected {
        /// Session.
        id: SessionId,
    },
    /// The application reports whether its user is idle. While a session is idle, its
    /// seats of features with a policy `TIMEOUT` are reclaimed once the timeout passes.
    Activity {
        /// Session.
        id: SessionId,
        /// Idle (`true`) or active again (`false`).
        idle: bool,
    },
    /// The client said goodbye: release every seat and forget the session.
    CloseSession {
        /// Session.
        id: SessionId,
    },
    /// Take seats: `ask.count` seats of `ask.feature` at version `ask.version` or newer.
    Checkout {
        /// The seats asked for, by whom, and the ids that make the request idempotent.
        ask: Ask,
        /// Whether to wait in the queue when no seat is free.
        wait: Wait,
    },
    /// Borrow seats for offline use for `duration` (`usher borrow`). Granted like a
    /// checkout that does not wait, from a pool whose license allows borrowing (`BORROW`),
    /// for no longer than the license and the policy's `MAX_BORROW_HOURS` allow, and never
    /// below the policy's `BORROW_LOWWATER`. The seats are held until the ledger's time
    /// when it grants them plus `duration` (or the license's end, if sooner) whether or
    /// not the session lives on.
    Borrow {
        /// The seats asked for; a retry with the same `client_ref` returns the same
        /// borrow.
        ask: Ask,
        /// How long (ms) the borrow should last from the moment the ledger applies it.
        /// The end is the ledger's time plus this, never the caller's clock plus this:
        /// the ledger's time never runs backwards and may be ahead of a clock that was
        /// stepped back, and an end taken from that clock would come too soon or have
        /// passed already.
        duration: Millis,
    },
    /// Return borrowed seats early (`usher borrow --return`): the borrow of `feature` (the
    /// one with `lease_id`, if given) made by the same user on the same host.
    Return {
        /// Requesting session (whose user and host must be the borrower's).
        session: SessionId,
        /// Feature borrowed.
        feature: String,
        /// The borrow's lease, if the client knows it.
        lease_id: Option<LeaseId>,
    },
    /// Withdraw a queued checkout (the client gave up waiting).
    Dequeue {
        /// Owning session.
        session: SessionId,
        /// The checkout's idempotency key.
        client_ref: u64,
    },
    /// Give a lease back.
    Checkin {
        /// Owning session.
        session: SessionId,
        /// Lease to release.
        lease_id: LeaseId,
    },
    /// Bring the ledger up to `now`: end queued waits that ran out, release the seats of
    /// every session whose TTL or grace has lapsed, and grant queued checkouts that can
    /// now be served (also after a license reload).
    Expire,
    /// Every live session lives at least until `until`, whether or not it is heard from
    /// before then. A cluster's new leader proposes this in its first entry: clients had no
    /// leader to heartbeat while the members elected one, and get a bounded time to find
    /// the new one before their seats lapse.
    ExtendSessions {
        /// The earliest expiry any live session has afterwards.
        until: Millis,
    },
    /// An administrator takes a lease away (like `lmremove`). Refused while the lease is
    /// younger than the configured minimum remove time, so a lease cannot be bounced
    /// between users faster than the applications can notice.
    Remove {
        /// Lease to release.
        lease_id: LeaseId,
    },
}

/// The seats a [`Command::Checkout`] or a [`Command::Borrow`] asks for, and the ids that
/// make the request idempotent.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Requesting session.
    pub session: SessionId,
    /// Fresh id for the lease, used if seats are granted.
    pub lease_id: LeaseId,
    /// Feature name.
    pub feature: String,
    /// Minimum version needed.
    pub version: String,
    /// Seats wanted (at least 1).
    pub count: u32,
    /// Client idempotency key; see [`Lease::client_ref`].
    pub client_ref: u64,
}

/// Why a checkout was refused. These are ordinary outcomes, not errors.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No license names this feature.
    UnknownFeature,
    /// The only licenses for this feature are bound to another host than this server
    /// (`HOSTID=`), so they are not served.
    BoundToOtherHost {
        /// The `HOSTID=` they name, as written (case-normalised).
        hostid: String,
    },
    /// Licenses exist for the feature but none for a version this new.
    VersionTooNew {
        /// Highest version licensed.
        highest: String,
    },
    /// Every entitlement that could serve the request has expired.
    Expired {
        /// When the last of them ended.
        at: Millis,
    },
    /// No entitlement that could serve the request has started yet.
    NotYetStarted {
        /// When the first of them starts.
        at: Millis,
    },
    /// All seats are taken.
    AllInUse {
        /// Seats in use in the pools that could serve the request.
        in_use: u32,
        /// Seats in those pools.
        total: u32,
    },
    /// A token-based feature's checkout cannot be paid for: its pool has too few tokens
    /// free. The pool is the first of the feature's `TOKEN=` alternatives that ran short.
    TokensInUse {
        /// The pool the tokens are drawn from.
        pool: String,
        /// Tokens the checkout costs.
        cost: u32,
        /// Tokens in use in that pool.
        in_use: u32,
        /// Tokens in that pool.
        total: u32,
    },
    /// Seats may be free, but other checkouts for the feature are queued ahead and the
    /// request did not ask to wait.
    QueuedAhead {
        /// Requests waiting ahead.
        waiting: u32,
    },
    /// The policy keeps this client from the feature (`EXCLUDE`, or not `INCLUDE`d).
    Excluded,
    /// The license is `USER_BASED` and this user is not one of its named users (the first
    /// `limit` users the policy `INCLUDE`s for the feature).
    NotNamedUser {
        /// How many named users the license allows.
        limit: u32,
    },
    /// The client (or its group, host...) already holds as many seats as a `MAX` rule
    /// allows.
    MaxReached {
        /// The limit.
        limit: u32,
        /// The rule, as written (`MAX 2 cad GROUP eng`).
        rule: String,
    },
    /// More seats were asked for than any pool that could serve the request has, even
    /// with its `OVERDRAFT`: it can never be met, so it is refused at once, never queued.
    MoreThanLicensed {
        /// Seats asked for.
        asked: u32,
        /// The most seats one such pool has.
        licensed: u32,
    },
    /// More seats were asked for than a `MAX` rule allows this client at all: it can never
    /// be met, so it is refused at once, never queued.
    MoreThanAllowed {
        /// The limit.
        limit: u32,
        /// The rule, as written (`MAX 2 cad USER bob`).
        rule: String,
    },
    /// Seats are free, but `RESERVE`d for others.
    Reserved {
        /// Seats free in the pools that could serve the request.
        free: u32,
    },
    /// No license for the feature allows borrowing (`BORROW`).
    NotBorrowable,
    /// The borrow asks for longer than the license's `BORROW=` or the policy's
    /// `MAX_BORROW_HOURS` allows.
    BorrowTooLong {
        /// The longest borrow allowed.
        max: Millis,
    },
    /// The policy keeps this many seats from being borrowed (`BORROW_LOWWATER`), and the
    /// borrow would take one of them.
    BorrowLowWater {
        /// Seats kept for use on the network.
        keep: u32,
    },
    /// The request itself is malformed (empty feature name, zero count, bad version...).
    BadRequest(String),
}

/// A failure to apply a command because it does not fit the ledger's state.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The session does not exist (never opened, or expired).
    #[error("unknown or expired session")]
    UnknownSession,
    /// The session exists but the secret is wrong.
    #[error("session secret does not match")]
    BadSecret,
    /// A fresh id collided with a live one (the caller should draw another).
    #[error("id already in use")]
    IdInUse,
    /// The seats are borrowed for offline use: the borrower's token stays valid, so taking
    /// the seats back would let one more copy run than the license allows. They come back
    /// when the borrower returns them or the borrow ends.
    #[error("the seats are borrowed for offline use until {until} (ms since the epoch)")]
    Borrowed {
        /// When the borrow ends.
        until: Millis,
    },
    /// The lease is younger than the minimum remove time.
    #[error("the lease is too new to remove; try again in {wait_ms} ms")]
    TooSoonToRemove {
        /// How long until it may be removed.
        wait_ms: Millis,
    },
}

/// The result of applying a command.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command had its effect (or none was needed).
    Done,
    /// A session was resumed; these are its leases.
    Resumed {
        /// Leases the session still holds.
        leases: Vec<Lease>,
    },
    /// A checkout was granted (or an identical earlier grant was returned).
    Granted(Lease),
    /// A checkout was refused.
    Denied(Denial),
    /// A checkout is waiting in the queue (or, retried, still is).
    Queued {
        /// The request as queued.
        request: QueuedRequest,
        /// Its 1-based place in its feature's queue.
        position: u32,
    },
    /// A checkin released a lease.
    Released(Lease),
    /// A checkin named a lease the session does not hold, or a dequeue a request that is
    /// not waiting; nothing changed. Both are idempotent, so clients treat this as success.
    NotHeld,
    /// `Expire` ended these sessions.
    Expired {
        /// Sessions that lapsed.
        sessions: Vec<SessionId>,
    },
}

/// Why seats went back to their pool; recorded with each release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// The client checked the lease in.
    Checkin,
    /// The client closed its session.
    SessionClosed,
    /// The session lapsed (TTL or reconnect grace).
    Expired,
    /// An administrator removed the lease.
    Removed,
    /// The client was idle for longer than the policy's `TIMEOUT` for the feature.
    IdleTimeout,
    /// The seats lingered after the client gave them back (`LINGER=`, `MIN_CHECKOUT=`),
    /// and the linger is over.
    LingerOver,
    /// The lingering seats were taken over by a new checkout of the same user and host.
    Reused,
    /// The borrower returned borrowed seats early.
    Returned,
    /// The borrow period ended.
    BorrowEnded,
}

/// A durable effect of a command. The store persists changes (not commands): after a
/// crash, sessions and leases are reloaded and the ledger rebuilt from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A session opened.
    SessionOpened(Session),
    /// A session ended; its leases were released by preceding `LeaseReleased` changes.
    SessionClosed(SessionId),
    /// Seats were granted.
    LeaseGranted(Lease),
    /// The client gave a lease back but its seats linger: the stored lease becomes this
    /// one (with `lingering_until` set). Its release follows when the linger ends.
    LeaseLingering(Lease),
    /// Seats went back.
    LeaseReleased {
        /// The lease released.
        lease: Lease,
        /// Why.
        reason: ReleaseReason,
    },
    /// A checkout joined the queue. The queue is soft state: it is logged, not stored, and
    /// clients queue again after a server restart.
    Queued(QueuedRequest),
    /// A checkout left the queue. When it was granted, a `LeaseGranted` follows.
    Dequeued {
        /// The request.
        request: QueuedRequest,
        /// Why it left.
        reason: DequeueReason,
    },
}
