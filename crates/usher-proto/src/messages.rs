//! Every message on the wire, with its Protocol Buffers field tags.
//!
//! **Compatibility rules** (see docs/protocol.md): never change a tag's type or meaning,
//! never reuse a tag, add fields with new tags, give every new field a default that means
//! "the old behaviour", and add request kinds as new `oneof` tags.

/// A client-to-server message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// Chosen by the client; echoed in the response so requests can be pipelined. 0 is
    /// reserved for messages that need no answer.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// What is asked. `None` when the client sent a kind this server does not know.
    #[prost(
        oneof = "request::Kind",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23"
    )]
    pub kind: Option<request::Kind>,
}

/// The kinds of [`Request`].
pub mod request {
    /// What a request asks for.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// Handshake; must be the first request on a connection.
        #[prost(message, tag = "10")]
        Hello(super::Hello),
        /// Take seats.
        #[prost(message, tag = "11")]
        Checkout(super::Checkout),
        /// Return seats.
        #[prost(message, tag = "12")]
        Checkin(super::Checkin),
        /// Keep the session alive.
        #[prost(message, tag = "13")]
        Heartbeat(super::Heartbeat),
        /// Ask for usage.
        #[prost(message, tag = "14")]
        Status(super::StatusRequest),
        /// End the session, releasing every seat it holds.
        #[prost(message, tag = "15")]
        Goodbye(super::Goodbye),
        /// Administrator: take a lease away. Accepted only on the admin socket.
        #[prost(message, tag = "16")]
        Remove(super::Remove),
        /// Administrator: re-read licenses. Accepted only on the admin socket.
        #[prost(message, tag = "17")]
        Reload(super::Reload),
        /// Administrator: shut the server down gracefully. Accepted only on the admin socket.
        #[prost(message, tag = "18")]
        Down(super::Down),
        /// Withdraw a queued checkout.
        #[prost(message, tag = "19")]
        Dequeue(super::Dequeue),
        /// Report whether the application's user is idle (for the policy's `TIMEOUT`).
        #[prost(message, tag = "20")]
        Activity(super::Activity),
        /// Borrow seats for offline use; answered `Granted` with a borrow token.
        #[prost(message, tag = "21")]
        Borrow(super::Borrow),
        /// Return borrowed seats early.
        #[prost(message, tag = "22")]
        Return(super::Return),
        /// Keep the session (and its seats) alive over UDP from now on; the server answers
        /// `Detached` with a keepalive key and closes the connection.
        #[prost(message, tag = "23")]
        Detach(super::Detach),
    }
}

/// A server-to-client message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    /// The id of the request answered, or 0 for a notice the server sends unasked.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The answer. `None` only from a newer server sending a kind this client does not
    /// know; clients ignore such responses.
    #[prost(
        oneof = "response::Kind",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24"
    )]
    pub kind: Option<response::Kind>,
}

/// The kinds of [`Response`].
pub mod response {
    /// What a response says.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// Handshake accepted.
        #[prost(message, tag = "10")]
        Welcome(super::Welcome),
        /// Seats granted.
        #[prost(message, tag = "11")]
        Granted(super::Granted),
        /// Seats refused, with the reason.
        #[prost(message, tag = "12")]
        Denied(super::Denied),
        /// Seats returned.
        #[prost(message, tag = "13")]
        CheckedIn(super::CheckedIn),
        /// Heartbeat seen.
        #[prost(message, tag = "14")]
        HeartbeatAck(super::HeartbeatAck),
        /// Usage.
        #[prost(message, tag = "15")]
        Status(super::StatusReport),
        /// The request failed.
        #[prost(message, tag = "16")]
        Error(super::Error),
        /// Goodbye acknowledged; the server closes the connection next.
        #[prost(message, tag = "17")]
        Bye(super::Bye),
        /// Unasked notice: a lease was taken away (for example by an administrator).
        #[prost(message, tag = "18")]
        LeaseLost(super::LeaseLost),
        /// A lease was removed by an administrator.
        #[prost(message, tag = "19")]
        Removed(super::Removed),
        /// Licenses were re-read.
        #[prost(message, tag = "20")]
        Reloaded(super::Reloaded),
        /// The checkout waits in the queue. Its outcome arrives later as an unasked
        /// `Granted` or `Denied` notice carrying the checkout's `client_ref`.
        #[prost(message, tag = "21")]
        Queued(super::Queued),
        /// A queued checkout was withdrawn.
        #[prost(message, tag = "22")]
        Dequeued(super::Dequeued),
        /// The answer to a `Return`.
        #[prost(message, tag = "23")]
        Returned(super::Returned),
        /// The answer to a `Detach`; the server closes the connection next.
        #[prost(message, tag = "24")]
        Detached(super::Detached),
    }
}

/// The handshake. Opens a new session, resumes an old one, or (with `query_only`) opens
/// a connection that only reads status.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// Must be [`crate::MAGIC`].
    #[prost(string, tag = "1")]
    pub magic: String,
    /// Highest protocol version the client speaks.
    #[prost(uint32, tag = "2")]
    pub protocol_version: u32,
    /// Client library name and version, for diagnostics.
    #[prost(string, tag = "3")]
    pub client_version: String,
    /// Login name.
    #[prost(string, tag = "4")]
    pub user: String,
    /// Client host name.
    #[prost(string, tag = "5")]
    pub host: String,
    /// Display or terminal.
    #[prost(string, tag = "6")]
    pub display: String,
    /// Process id.
    #[prost(uint32, tag = "7")]
    pub pid: u32,
    /// Program name.
    #[prost(string, tag = "8")]
    pub program: String,
    /// Program version.
    #[prost(string, tag = "9")]
    pub program_version: String,
    /// Session to resume (0: open a new session).
    #[prost(fixed64, tag = "10")]
    pub resume_session: u64,
    /// Secret of the session to resume.
    #[prost(bytes = "vec", tag = "11")]
    pub resume_secret: Vec<u8>,
    /// Open no session: the connection will only ask for status.
    #[prost(bool, tag = "12")]
    pub query_only: bool,
}

/// The server's answer to [`Hello`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Welcome {
    /// Protocol version both sides will speak.
    #[prost(uint32, tag = "1")]
    pub protocol_version: u32,
    /// Server software version.
    #[prost(string, tag = "2")]
    pub server_version: String,
    /// The session (0 for a query-only connection).
    #[prost(fixed64, tag = "3")]
    pub session_id: u64,
    /// The session's secret; sent once, when the session opens (empty on resume).
    #[prost(bytes = "vec", tag = "4")]
    pub session_secret: Vec<u8>,
    /// How often the client should send heartbeats.
    #[prost(uint64, tag = "5")]
    pub heartbeat_interval_ms: u64,
    /// How long the session lives without being heard from.
    #[prost(uint64, tag = "6")]
    pub session_ttl_ms: u64,
    /// True when an existing session was resumed.
    #[prost(bool, tag = "7")]
    pub resumed: bool,
    /// On resume: the leases the session still holds.
    #[prost(message, repeated, tag = "8")]
    pub leases: Vec<Granted>,
    /// Server host name.
    #[prost(string, tag = "9")]
    pub server_name: String,
}

/// Ask for seats.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Checkout {
    /// Feature name.
    #[prost(string, tag = "1")]
    pub feature: String,
    /// Minimum version needed (empty: any).
    #[prost(string, tag = "2")]
    pub version: String,
    /// Seats wanted (0 is read as 1).
    #[prost(uint32, tag = "3")]
    pub count: u32,
    /// Client idempotency key, unique within the session: a checkout retried after a
    /// reconnect returns the original lease rather than a second one. 0 disables this
    /// (and a checkout that waits must have one).
    #[prost(uint64, tag = "4")]
    pub client_ref: u64,
    /// Wait in the queue if no seat is free, instead of being refused.
    #[prost(bool, tag = "5")]
    pub wait: bool,
    /// With `wait`: give up after this many milliseconds (0: wait indefinitely).
    #[prost(uint64, tag = "6")]
    pub wait_ms: u64,
    /// A fresh random value: when set, the `Granted` answer carries a statement signed by
    /// the server's identity key that answers it (see `Granted::statement`). Empty: no
    /// statement is wanted.
    #[prost(bytes = "vec", tag = "7")]
    pub nonce: Vec<u8>,
}

/// Borrow seats for offline use (`usher borrow`). Granted like a checkout that does not
/// wait; the `Granted` answer carries `borrowed_until_ms` and the signed `borrow_token`.
/// The seats stay held on the server until then, whether or not the session lives on.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Borrow {
    /// Feature name.
    #[prost(string, tag = "1")]
    pub feature: String,
    /// Minimum version needed (empty: any).
    #[prost(string, tag = "2")]
    pub version: String,
    /// Seats wanted (0 is read as 1).
    #[prost(uint32, tag = "3")]
    pub count: u32,
    /// Client idempotency key, as for `Checkout`.
    #[prost(uint64, tag = "4")]
    pub client_ref: u64,
    /// How long to borrow for, in milliseconds.
    #[prost(uint64, tag = "5")]
    pub duration_ms: u64,
    /// The borrowing machine's host ids, which the token is bound to.
    #[prost(string, repeated, tag = "6")]
    pub host_ids: Vec<String>,
}

/// Return borrowed seats before the borrow ends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Return {
    /// Feature borrowed.
    #[prost(string, tag = "1")]
    pub feature: String,
    /// The borrow's lease handle, from the token (0: the borrower's borrow of `feature`).
    #[prost(fixed64, tag = "2")]
    pub lease_id: u64,
}

/// Borrowed seats came back (or there were none to return).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Returned {
    /// The lease returned (0 if none).
    #[prost(fixed64, tag = "1")]
    pub lease_id: u64,
    /// False if this user on this host had no such borrow (returning is idempotent).
    #[prost(bool, tag = "2")]
    pub was_borrowed: bool,
    /// Seats returned.
    #[prost(uint32, tag = "3")]
    pub count: u32,
}

/// The checkout waits for a seat.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Queued {
    /// The checkout's idempotency key.
    #[prost(uint64, tag = "1")]
    pub client_ref: u64,
    /// The handle the lease will carry once granted.
    #[prost(fixed64, tag = "2")]
    pub lease_id: u64,
    /// 1-based place in the feature's queue when it was answered.
    #[prost(uint32, tag = "3")]
    pub position: u32,
    /// Feature.
    #[prost(string, tag = "4")]
    pub feature: String,
}

/// Whether the application's user is idle. While idle, seats of features with a policy
/// `TIMEOUT` are reclaimed once it passes. Answered with `HeartbeatAck`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Activity {
    /// Idle (`true`) or active again (`false`).
    #[prost(bool, tag = "1")]
    pub idle: bool,
}

/// Withdraw a queued checkout.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dequeue {
    /// The checkout's idempotency key.
    #[prost(uint64, tag = "1")]
    pub client_ref: u64,
}

/// A queued checkout was withdrawn.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dequeued {
    /// The checkout's idempotency key.
    #[prost(uint64, tag = "1")]
    pub client_ref: u64,
    /// False if it was not waiting (already granted, refused or never queued).
    #[prost(bool, tag = "2")]
    pub was_queued: bool,
}

/// Seats granted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Granted {
    /// Lease handle, used to check in.
    #[prost(fixed64, tag = "1")]
    pub lease_id: u64,
    /// Feature.
    #[prost(string, tag = "2")]
    pub feature: String,
    /// Version of the pool the seats came from.
    #[prost(string, tag = "3")]
    pub version: String,
    /// Seats held.
    #[prost(uint32, tag = "4")]
    pub count: u32,
    /// Vendor.
    #[prost(string, tag = "5")]
    pub vendor: String,
    /// When the entitlement behind the pool expires (ms since epoch; 0: permanent).
    #[prost(uint64, tag = "6")]
    pub expires_at_ms: u64,
    /// When the seats were granted (ms since epoch).
    #[prost(uint64, tag = "7")]
    pub granted_at_ms: u64,
    /// The client's idempotency key from the checkout.
    #[prost(uint64, tag = "8")]
    pub client_ref: u64,
    /// The seats are beyond the pool's count, granted under its `OVERDRAFT=` allowance.
    #[prost(bool, tag = "9")]
    pub overdraft: bool,
    /// For a borrow: when it ends (ms since epoch). 0: not borrowed.
    #[prost(uint64, tag = "10")]
    pub borrowed_until_ms: u64,
    /// For a borrow: the server-signed borrow token (its text form), which lets the
    /// client library grant the feature on this host with no server until the borrow ends.
    #[prost(string, tag = "11")]
    pub borrow_token: String,
    /// For a token-based feature (`feature` is the one asked for): the pool that paid,
    /// and `count` is the tokens drawn from it. Empty otherwise.
    #[prost(string, tag = "12")]
    pub token_pool: String,
    /// When the checkout carried a nonce: the text of a statement signed by the server's
    /// identity key covering this lease, its pool, seats and validity, the nonce, and the
    /// vendor-signed license line the seats come from, for the client to verify with the
    /// vendor's public key. Empty otherwise.
    #[prost(string, tag = "13")]
    pub statement: String,
}

/// Why seats were refused. Unknown values (from newer servers) read as `Unspecified`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DenyReason {
    /// Not given, or not known to this build.
    Unspecified = 0,
    /// No license names the feature.
    UnknownFeature = 1,
    /// The licensed versions are all older than the one requested.
    VersionTooNew = 2,
    /// The licenses for the feature have expired.
    Expired = 3,
    /// The licenses for the feature have not started yet.
    NotYetStarted = 4,
    /// Every seat is in use.
    AllInUse = 5,
    /// The request is malformed.
    BadRequest = 6,
    /// Other checkouts are queued ahead and the request did not ask to wait.
    QueuedAhead = 7,
    /// The checkout waited in the queue for as long as it allowed.
    WaitTimedOut = 8,
    /// The server's policy keeps this client from the feature (`EXCLUDE`, `INCLUDE`).
    Excluded = 9,
    /// A policy `MAX` for this client (or its group, host...) is reached; `total` is the
    /// limit.
    MaxReached = 10,
    /// The free seats are reserved for others by policy (`RESERVE`).
    Reserved = 11,
    /// The license is `USER_BASED` and this user is not one of its named users; `total` is
    /// how many named users it allows.
    NotNamedUser = 12,
    /// No license for the feature allows borrowing.
    NotBorrowable = 13,
    /// The borrow is longer than the license or policy allows; `at_ms` is the longest
    /// borrow allowed, in milliseconds.
    BorrowTooLong = 14,
    /// The policy keeps the remaining seats from being borrowed (`BORROW_LOWWATER`);
    /// `total` is how many it keeps.
    BorrowLowWater = 15,
    /// More seats were asked for than the licenses have (`total`): the request can never
    /// be met, so it is refused at once and never queued.
    MoreThanLicensed = 16,
    /// More seats were asked for than the policy's `MAX` allows this client (`total`): it
    /// can never be met, so it is refused at once and never queued.
    MoreThanAllowed = 17,
    /// The only licenses for the feature are bound (`HOSTID=`) to another host than this
    /// server, so the server does not serve them.
    BoundToOtherHost = 18,
}

/// What kind of refusal a [`DenyReason`] is: the one classification the usage report,
/// the exit codes of `usher` and the messages use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalClass {
    /// No seat was free (or others wait ahead, or a wait ran out): more seats would
    /// have helped. The only class a "do we need more seats?" verdict counts.
    Shortage,
    /// The licenses do not cover the request (unknown feature, version, dates, named
    /// users, more seats than licensed).
    Licensing,
    /// The server's policy refuses it (`EXCLUDE`/`INCLUDE`, `MAX`, `RESERVE`).
    Policy,
    /// A borrow the licenses or the policy do not allow (not borrowable, too long,
    /// `BORROW_LOWWATER`).
    Borrowing,
    /// A malformed request, or a reason this build does not know.
    BadRequest,
}

impl RefusalClass {
    /// The class's name, as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            RefusalClass::Shortage => "shortage",
            RefusalClass::Licensing => "licensing",
            RefusalClass::Policy => "policy",
            RefusalClass::Borrowing => "borrowing",
            RefusalClass::BadRequest => "bad request",
        }
    }
}

impl DenyReason {
    /// Every reason, for tables and tests.
    pub const ALL: [DenyReason; 19] = [
        DenyReason::Unspecified,
        DenyReason::UnknownFeature,
        DenyReason::VersionTooNew,
        DenyReason::Expired,
        DenyReason::NotYetStarted,
        DenyReason::AllInUse,
        DenyReason::BadRequest,
        DenyReason::QueuedAhead,
        DenyReason::WaitTimedOut,
        DenyReason::Excluded,
        DenyReason::MaxReached,
        DenyReason::Reserved,
        DenyReason::NotNamedUser,
        DenyReason::NotBorrowable,
        DenyReason::BorrowTooLong,
        DenyReason::BorrowLowWater,
        DenyReason::MoreThanLicensed,
        DenyReason::MoreThanAllowed,
        DenyReason::BoundToOtherHost,
    ];

    /// The stable snake_case name the usage log, the metrics and the admin API use
    /// (`all_in_use`, `max_reached`...).
    pub fn name(self) -> &'static str {
        match self {
            DenyReason::Unspecified => "unspecified",
            DenyReason::UnknownFeature => "unknown_feature",
            DenyReason::VersionTooNew => "version_too_new",
            DenyReason::Expired => "expired",
            DenyReason::NotYetStarted => "not_yet_started",
            DenyReason::AllInUse => "all_in_use",
            DenyReason::BadRequest => "bad_request",
            DenyReason::QueuedAhead => "queued_ahead",
            DenyReason::WaitTimedOut => "wait_timed_out",
            DenyReason::Excluded => "excluded",
            DenyReason::MaxReached => "max_reached",
            DenyReason::Reserved => "reserved",
            DenyReason::NotNamedUser => "not_named_user",
            DenyReason::NotBorrowable => "not_borrowable",
            DenyReason::BorrowTooLong => "borrow_too_long",
            DenyReason::BorrowLowWater => "borrow_lowwater",
            DenyReason::MoreThanLicensed => "more_than_licensed",
            DenyReason::MoreThanAllowed => "more_than_allowed",
            DenyReason::BoundToOtherHost => "bound_to_other_host",
        }
    }

    /// The reason a [`DenyReason::name`] names.
    pub fn from_name(name: &str) -> Option<DenyReason> {
        DenyReason::ALL.into_iter().find(|r| r.name() == name)
    }

    /// What kind of refusal this is.
    pub fn class(self) -> RefusalClass {
        match self {
            DenyReason::AllInUse | DenyReason::QueuedAhead | DenyReason::WaitTimedOut => {
                RefusalClass::Shortage
            }
            DenyReason::UnknownFeature
            | DenyReason::VersionTooNew
            | DenyReason::Expired
            | DenyReason::NotYetStarted
            | DenyReason::NotNamedUser
            | DenyReason::MoreThanLicensed
            | DenyReason::BoundToOtherHost => RefusalClass::Licensing,
            DenyReason::Excluded
            | DenyReason::MaxReached
            | DenyReason::Reserved
            | DenyReason::MoreThanAllowed => RefusalClass::Policy,
            DenyReason::NotBorrowable | DenyReason::BorrowTooLong | DenyReason::BorrowLowWater => {
                RefusalClass::Borrowing
            }
            DenyReason::BadRequest | DenyReason::Unspecified => RefusalClass::BadRequest,
        }
    }
}

/// Seats refused.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Denied {
    /// Typed reason.
    #[prost(enumeration = "DenyReason", tag = "1")]
    pub reason: i32,
    /// One line for a human, e.g. `all 3 seats of "cad" are in use`.
    #[prost(string, tag = "2")]
    pub message: String,
    /// For `AllInUse`: seats in use (for a token-based feature: tokens in use in the pool
    /// it draws from).
    #[prost(uint32, tag = "3")]
    pub in_use: u32,
    /// For `AllInUse`: seats in the pools that could serve the request (for a token-based
    /// feature: tokens in the pool).
    #[prost(uint32, tag = "4")]
    pub total: u32,
    /// For `VersionTooNew`: the highest licensed version.
    #[prost(string, tag = "5")]
    pub highest_version: String,
    /// For `Expired` / `NotYetStarted`: when (ms since epoch).
    #[prost(uint64, tag = "6")]
    pub at_ms: u64,
    /// In a notice ending a queued wait: the checkout's idempotency key.
    #[prost(uint64, tag = "7")]
    pub client_ref: u64,
}

/// Give seats back.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Checkin {
    /// Lease handle.
    #[prost(fixed64, tag = "1")]
    pub lease_id: u64,
}

/// Seats returned.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckedIn {
    /// Lease handle.
    #[prost(fixed64, tag = "1")]
    pub lease_id: u64,
    /// False if the session did not hold that lease (checkin is idempotent).
    #[prost(bool, tag = "2")]
    pub was_held: bool,
}

/// Keep the session alive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Heartbeat {}

/// Heartbeat seen.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeartbeatAck {
    /// Server clock (ms since epoch), for diagnostics.
    #[prost(uint64, tag = "1")]
    pub server_time_ms: u64,
}

/// Ask for usage.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {
    /// Only this feature (empty: all).
    #[prost(string, tag = "1")]
    pub feature: String,
    /// The server's admin token (`DATA_DIR/admin/token`), for the full status (holders and
    /// queue) on a server whose client port shows less to everyone else. Empty: none.
    /// Clients send it only over TLS or to a server on their own host.
    #[prost(string, tag = "2")]
    pub admin_token: String,
    /// Most holders and queue entries wanted in this reply (one page). 0: a client that does
    /// not page; it gets the first page that fits in one frame, marked `truncated` if more
    /// remain. The server caps it at its own maximum and always fits the reply in
    /// [`crate::MAX_FRAME_LEN`], so a page may hold fewer.
    #[prost(uint32, tag = "3")]
    pub page_size: u32,
    /// Where to continue: the `next_cursor` of the previous page. Empty: the first page.
    #[prost(string, tag = "4")]
    pub cursor: String,
}

/// Usage, per pool.
///
/// A report is one page of the status: the first page carries every pool (without the
/// holders beyond the page); a later page carries only the pools whose holders it holds.
/// The holders, then the queue entries, are paged in one order; `next_cursor` continues.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusReport {
    /// Server host name.
    #[prost(string, tag = "1")]
    pub server_name: String,
    /// Server software version.
    #[prost(string, tag = "2")]
    pub server_version: String,
    /// Port the server listens on.
    #[prost(uint32, tag = "3")]
    pub port: u32,
    /// One entry per pool.
    #[prost(message, repeated, tag = "4")]
    pub features: Vec<FeatureStatus>,
    /// When the server started (ms since epoch).
    #[prost(uint64, tag = "5")]
    pub started_at_ms: u64,
    /// License files served.
    #[prost(string, repeated, tag = "6")]
    pub license_files: Vec<String>,
    /// Vendors served.
    #[prost(string, repeated, tag = "7")]
    pub vendors: Vec<String>,
    /// Server clock when the report was made (ms since epoch).
    #[prost(uint64, tag = "8")]
    pub now_ms: u64,
    /// Checkouts waiting for seats, each feature's in serving order.
    #[prost(message, repeated, tag = "9")]
    pub queue: Vec<QueueEntry>,
    /// The cursor of the next page (send it as `StatusRequest.cursor`). Empty: this is the
    /// last page.
    #[prost(string, tag = "10")]
    pub next_cursor: String,
    /// Holders in the whole status, across every page (of the feature asked for), so a
    /// reader can say how many it did not show.
    #[prost(uint64, tag = "11")]
    pub holders_total: u64,
    /// Queue entries in the whole status, across every page.
    #[prost(uint64, tag = "12")]
    pub queue_total: u64,
    /// The reply to a client that does not page (`page_size` 0) holds only the first page:
    /// more holders or queue entries exist than it shows.
    #[prost(bool, tag = "13")]
    pub truncated: bool,
    /// Token-based features (`count` = `token`): they have no seats of their own, so they
    /// are not in `features`; each checkout draws tokens from a pool that is. On a later
    /// page: empty. Older servers never send it; older clients ignore it.
    #[prost(message, repeated, tag = "14")]
    pub token_features: Vec<TokenFeatureStatus>,
}

/// A token-based feature: what a seat of it costs, and how much of it is checked out.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TokenFeatureStatus {
    /// Feature.
    #[prost(string, tag = "1")]
    pub feature: String,
    /// Vendor.
    #[prost(string, tag = "2")]
    pub vendor: String,
    /// Highest version licensed.
    #[prost(string, tag = "3")]
    pub version: String,
    /// What one seat costs, in the order the pools are tried (`TOKEN=`).
    #[prost(message, repeated, tag = "4")]
    pub costs: Vec<TokenCost>,
    /// Seats of the feature checked out.
    #[prost(uint32, tag = "5")]
    pub in_use: u32,
    /// Tokens those seats hold, across their pools.
    #[prost(uint32, tag = "6")]
    pub tokens_in_use: u32,
    /// Earliest expiry among its license lines valid now (ms since epoch; 0: permanent).
    #[prost(uint64, tag = "7")]
    pub expires_at_ms: u64,
}

/// One way a seat of a token-based feature is paid for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TokenCost {
    /// The pool's feature.
    #[prost(string, tag = "1")]
    pub pool: String,
    /// The pool's lowest version that pays.
    #[prost(string, tag = "2")]
    pub version: String,
    /// Tokens per seat.
    #[prost(uint32, tag = "3")]
    pub tokens: u32,
}

/// A checkout waiting in the queue, as status shows it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueueEntry {
    /// Feature.
    #[prost(string, tag = "1")]
    pub feature: String,
    /// Version asked for.
    #[prost(string, tag = "2")]
    pub version: String,
    /// Seats wanted.
    #[prost(uint32, tag = "3")]
    pub count: u32,
    /// 1-based place in the feature's queue.
    #[prost(uint32, tag = "4")]
    pub position: u32,
    /// Queue rank from the policy's `PRIORITY` (lower is served first; -1: none, served
    /// after every ranked request).
    #[prost(int32, tag = "5")]
    pub priority: i32,
    /// User.
    #[prost(string, tag = "6")]
    pub user: String,
    /// Client host.
    #[prost(string, tag = "7")]
    pub host: String,
    /// Display.
    #[prost(string, tag = "8")]
    pub display: String,
    /// Process id.
    #[prost(uint32, tag = "9")]
    pub pid: u32,
    /// Program name.
    #[prost(string, tag = "10")]
    pub program: String,
    /// When it joined the queue (ms since epoch).
    #[prost(uint64, tag = "11")]
    pub since_ms: u64,
    /// When it gives up (ms since epoch; 0: never).
    #[prost(uint64, tag = "12")]
    pub deadline_ms: u64,
    /// The handle the lease will carry.
    #[prost(fixed64, tag = "13")]
    pub lease_id: u64,
    /// Session.
    #[prost(fixed64, tag = "14")]
    pub session_id: u64,
}

/// Usage of one pool.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureStatus {
    /// Feature.
    #[prost(string, tag = "1")]
    pub feature: String,
    /// Vendor.
    #[prost(string, tag = "2")]
    pub vendor: String,
    /// Pool version.
    #[prost(string, tag = "3")]
    pub version: String,
    /// Earliest expiry among the pool's current entitlements (ms since epoch, the first
    /// millisecond after the last valid day; 0: permanent). For a pool with none valid
    /// now: the expiry of those that start at `starts_at_ms`, or `ended_at_ms`.
    #[prost(uint64, tag = "4")]
    pub expires_at_ms: u64,
    /// Seats valid now.
    #[prost(uint32, tag = "5")]
    pub total: u32,
    /// Seats held.
    #[prost(uint32, tag = "6")]
    pub in_use: u32,
    /// Who holds them.
    #[prost(message, repeated, tag = "7")]
    pub holders: Vec<Holder>,
    /// Every entitlement of the pool has expired: when the last ended (ms since epoch, as
    /// `expires_at_ms`). 0: not expired.
    #[prost(uint64, tag = "8")]
    pub ended_at_ms: u64,
    /// No entitlement of the pool is valid yet: when the first starts (ms since epoch).
    /// 0: not waiting to start.
    #[prost(uint64, tag = "9")]
    pub starts_at_ms: u64,
    /// For an expired or not yet started pool (`total` 0): the seats its license lines
    /// hold (those that ended last, or those that start first). 0 otherwise.
    #[prost(uint32, tag = "10")]
    pub licensed: u32,
}

/// One lease, as status shows it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Holder {
    /// User.
    #[prost(string, tag = "1")]
    pub user: String,
    /// Client host.
    #[prost(string, tag = "2")]
    pub host: String,
    /// Display.
    #[prost(string, tag = "3")]
    pub display: String,
    /// Process id.
    #[prost(uint32, tag = "4")]
    pub pid: u32,
    /// Program name.
    #[prost(string, tag = "5")]
    pub program: String,
    /// Version the client asked for.
    #[prost(string, tag = "6")]
    pub version: String,
    /// When the lease was granted (ms since epoch).
    #[prost(uint64, tag = "7")]
    pub since_ms: u64,
    /// Seats.
    #[prost(uint32, tag = "8")]
    pub count: u32,
    /// Lease handle.
    #[prost(fixed64, tag = "9")]
    pub lease_id: u64,
    /// Session.
    #[prost(fixed64, tag = "10")]
    pub session_id: u64,
    /// Whether the server hears from the session right now: over its connection, or by
    /// UDP keepalives when `detached`. False while a dropped connection's session waits
    /// to resume (its seats go back after the reconnect grace).
    #[prost(bool, tag = "11")]
    pub connected: bool,
    /// The seats are beyond the pool's count (`OVERDRAFT=`).
    #[prost(bool, tag = "12")]
    pub overdraft: bool,
    /// The client gave the seats back, but they stay held until then (ms since epoch;
    /// `LINGER=`, `MIN_CHECKOUT=`). 0: not lingering.
    #[prost(uint64, tag = "13")]
    pub lingering_until_ms: u64,
    /// The seats are borrowed for offline use until then (ms since epoch). 0: not
    /// borrowed.
    #[prost(uint64, tag = "14")]
    pub borrowed_until_ms: u64,
    /// The lease holds tokens of this pool for the token-based feature named here
    /// (`count` is the tokens). Empty: an ordinary lease.
    #[prost(string, tag = "15")]
    pub token_for: String,
    /// The session is detached: no connection, kept alive by UDP keepalives (it comes
    /// back over TCP for its next request).
    #[prost(bool, tag = "16")]
    pub detached: bool,
}

/// End the session.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Goodbye {}

/// Goodbye acknowledged.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bye {}

/// Leave the connection but keep the session: its seats stay held as long as UDP
/// keepalives (see [`crate::udp`]) arrive within the session TTL. The client comes back
/// over TCP (resuming the session) for anything else.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Detach {}

/// A `Detach` accepted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Detached {
    /// The session's keepalive key (32 bytes), valid until the session ends or the server
    /// restarts; it tags keepalives and acknowledgements.
    #[prost(bytes = "vec", tag = "1")]
    pub keepalive_key: Vec<u8>,
    /// The server's UDP port for keepalives, on the address of this connection.
    #[prost(uint32, tag = "2")]
    pub udp_port: u32,
    /// How often to send a keepalive (ms).
    #[prost(uint64, tag = "3")]
    pub keepalive_interval_ms: u64,
}

/// A lease was taken away without the client asking.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseLost {
    /// Lease handle.
    #[prost(fixed64, tag = "1")]
    pub lease_id: u64,
    /// Why, for a human.
    #[prost(string, tag = "2")]
    pub reason: String,
    /// Why, typed (a [`LossCause`]). `Unspecified` from a server older than the field:
    /// the client then reads `reason`.
    #[prost(enumeration = "LossCause", tag = "3")]
    pub cause: i32,
}

/// Why the server took a lease away, in a [`LeaseLost`]. Unknown values (from newer
/// servers) read as `Unspecified`, and the client falls back on the `reason` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum LossCause {
    /// Not given (an older server), or not known to this build.
    Unspecified = 0,
    /// An administrator removed the lease (`usher remove`, the HTTP API).
    RemovedByAdministrator = 1,
    /// The application was idle for longer than the feature's `TIMEOUT`.
    IdleReclaimed = 2,
}

/// Error codes. Unknown values (from newer servers) read as `Unspecified`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    /// Not given, or not known to this build.
    Unspecified = 0,
    /// The request is malformed or makes no sense here.
    BadRequest = 1,
    /// The server does not know this kind of request (it is older than the client).
    UnknownRequest = 2,
    /// No protocol version in common.
    UnsupportedVersion = 3,
    /// The first request on a connection must be `Hello`.
    HandshakeRequired = 4,
    /// The session to resume (or act for) no longer exists; open a new one.
    SessionExpired = 5,
    /// The server is shutting down; try another server or again shortly.
    ShuttingDown = 6,
    /// Something failed inside the server.
    Internal = 7,
    /// The request is not allowed for this client.
    NotPermitted = 8,
    /// The connection was refused: its address, or the server, holds as many connections
    /// as it may (the message names the limit). Sent in answer to the Hello, then closed.
    TooManyConnections = 9,
    /// The handshake (TLS and Hello) did not complete in the time the server allows.
    HandshakeTimeout = 10,
    /// The server cannot write its store (a full disk): nothing new can be made durable,
    /// so new grants and sessions are refused; held seats and heartbeats keep working.
    StoreUnavailable = 11,
}

/// The request failed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    /// Typed code.
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub code: i32,
    /// One line for a human.
    #[prost(string, tag = "2")]
    pub message: String,
}

impl Response {
    /// An error response to request `id`.
    pub fn error(id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Response {
            id,
            kind: Some(response::Kind::Error(Error {
                code: code as i32,
                message: message.into(),
            })),
        }
    }
}

/// Administrator: take a lease away, freeing its seats.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Remove {
    /// Lease handle, as status and lmstat show it.
    #[prost(fixed64, tag = "1")]
    pub lease_id: u64,
}

/// A lease was removed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Removed {
    /// Lease handle.
    #[prost(fixed64, tag = "1")]
    pub lease_id: u64,
    /// False if no such lease was held (nothing changed).
    #[prost(bool, tag = "2")]
    pub was_held: bool,
    /// Feature of the removed lease.
    #[prost(string, tag = "3")]
    pub feature: String,
    /// Seats freed.
    #[prost(uint32, tag = "4")]
    pub count: u32,
}

/// Administrator: re-read license files and vendor keys without dropping any lease.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reload {}

/// Licenses were re-read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reloaded {
    /// Entitlements now served.
    #[prost(uint32, tag = "1")]
    pub entitlements: u32,
    /// Entitlements refused, one line each (file, line, reason).
    #[prost(string, repeated, tag = "2")]
    pub refused: Vec<String>,
    /// Entitlements served but not usable today, one line each.
    #[prost(string, repeated, tag = "3")]
    pub warnings: Vec<String>,
}

/// Administrator: shut the server down gracefully (answered with `Bye`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Down {}

impl StatusReport {
    /// Adds the next page of the same status (the reply to a request with this page's
    /// `next_cursor`): its holders join their pools', its queue entries the queue, and its
    /// `next_cursor` replaces this one's. The totals and server facts stay the first page's.
    pub fn absorb(&mut self, page: StatusReport) {
        for pool in page.features {
            let same = |f: &&mut FeatureStatus| {
                f.feature == pool.feature && f.vendor == pool.vendor && f.version == pool.version
            };
            match self.features.iter_mut().rev().find(same) {
                Some(f) => f.holders.extend(pool.holders),
                None => self.features.push(pool),
            }
        }
        self.queue.extend(page.queue);
        self.next_cursor = page.next_cursor;
        self.truncated = page.truncated;
    }

    /// Holders the whole status has beyond those in this report (a reply cut to one frame
    /// for a client that does not page, or a walk that stopped early). 0 from a server
    /// that does not say.
    pub fn holders_not_shown(&self) -> u64 {
        let shown: usize = self.features.iter().map(|f| f.holders.len()).sum();
        self.holders_total.saturating_sub(shown as u64)
    }

    /// Queue entries the whole status has beyond those in this report.
    pub fn queue_not_shown(&self) -> u64 {
        self.queue_total.saturating_sub(self.queue.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// `LeaseLost { lease_id: 7, reason: "removed by an administrator" }` as a server
    /// older than `cause` encodes it.
    const LEASE_LOST_WITHOUT_CAUSE: &[u8] =
        b"\x09\x07\0\0\0\0\0\0\0\x12\x1bremoved by an administrator";

    #[test]
    fn a_lease_lost_without_a_cause_still_decodes_as_unspecified() {
        let lost = LeaseLost::decode(LEASE_LOST_WITHOUT_CAUSE).expect("decodes");
        assert_eq!(lost.lease_id, 7);
        assert_eq!(lost.reason, "removed by an administrator");
        assert_eq!(lost.cause(), LossCause::Unspecified);
        // And a frame without a cause is what a cause-less message encodes to.
        assert_eq!(lost.encode_to_vec(), LEASE_LOST_WITHOUT_CAUSE);
    }

    #[test]
    fn a_lease_lost_with_a_cause_has_a_fixed_encoding() {
        let lost = LeaseLost {
            lease_id: 7,
            reason: "removed by an administrator".into(),
            cause: LossCause::RemovedByAdministrator as i32,
        };
        let mut golden = LEASE_LOST_WITHOUT_CAUSE.to_vec();
        golden.extend_from_slice(b"\x18\x01");
        assert_eq!(lost.encode_to_vec(), golden);
        assert_eq!(LeaseLost::decode(&golden[..]).expect("decodes"), lost);
        assert_eq!(LossCause::IdleReclaimed as i32, 2);
    }

    #[test]
    fn an_unknown_cause_from_a_newer_server_reads_as_unspecified() {
        let mut frame = LEASE_LOST_WITHOUT_CAUSE.to_vec();
        frame.extend_from_slice(b"\x18\x63");
        let lost = LeaseLost::decode(&frame[..]).expect("decodes");
        assert_eq!(lost.cause, 99);
        assert_eq!(lost.cause(), LossCause::Unspecified);
        assert_eq!(lost.reason, "removed by an administrator");
    }
}
