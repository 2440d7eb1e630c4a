//! The bounded label sets of the metrics: request kinds, refusal reasons, UDP results.

/// The kinds of protocol request, for per-kind latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Hello (opening or resuming a session).
    Hello,
    /// Checkout.
    Checkout,
    /// Checkin.
    Checkin,
    /// Heartbeat.
    Heartbeat,
    /// Status.
    Status,
    /// Remove (administration).
    Remove,
    /// Reload (administration).
    Reload,
    /// Down (administration).
    Down,
    /// Goodbye.
    Goodbye,
    /// Dequeue (withdrawing a waiting checkout).
    Dequeue,
    /// Activity (idle or active again).
    Activity,
    /// Borrow (seats for offline use).
    Borrow,
    /// Return (borrowed seats, early).
    Return,
    /// Detach (keep the session alive over UDP).
    Detach,
}

impl RequestKind {
    /// Every kind, in label order.
    pub const ALL: [RequestKind; 14] = [
        RequestKind::Hello,
        RequestKind::Checkout,
        RequestKind::Checkin,
        RequestKind::Heartbeat,
        RequestKind::Status,
        RequestKind::Remove,
        RequestKind::Reload,
        RequestKind::Down,
        RequestKind::Goodbye,
        RequestKind::Dequeue,
        RequestKind::Activity,
        RequestKind::Borrow,
        RequestKind::Return,
        RequestKind::Detach,
    ];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Hello => "hello",
            RequestKind::Checkout => "checkout",
            RequestKind::Checkin => "checkin",
            RequestKind::Heartbeat => "heartbeat",
            RequestKind::Status => "status",
            RequestKind::Remove => "remove",
            RequestKind::Reload => "reload",
            RequestKind::Down => "down",
            RequestKind::Goodbye => "goodbye",
            RequestKind::Dequeue => "dequeue",
            RequestKind::Activity => "activity",
            RequestKind::Borrow => "borrow",
            RequestKind::Return => "return",
            RequestKind::Detach => "detach",
        }
    }
}

/// Why a connection was refused right after `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The peer is outside the allow-list.
    NotAllowed,
    /// The peer's address already holds its maximum of connections.
    PerAddressLimit,
    /// The server already holds its maximum of client connections (`max_connections`).
    TotalLimit,
    /// The peer's TLS handshake or Hello failed, or it sent something else.
    Handshake,
    /// The peer did not complete its TLS handshake and Hello within `handshake_timeout`.
    HandshakeTimeout,
    /// The peer spoke plaintext to a server that requires TLS.
    Plaintext,
    /// A connection sent requests faster than `max_request_rate` (held back, not closed).
    RateLimited,
    /// A connection whose client did not read its answers within `send_timeout` (closed).
    NotReading,
    /// The peer's address opened new connections faster than `max_connection_rate_per_ip`.
    AddressRate,
    /// The server already had `max_handshakes` connections in their handshake.
    HandshakesLimit,
}

impl RejectReason {
    pub(super) const ALL: [RejectReason; 10] = [
        RejectReason::NotAllowed,
        RejectReason::PerAddressLimit,
        RejectReason::TotalLimit,
        RejectReason::Handshake,
        RejectReason::HandshakeTimeout,
        RejectReason::Plaintext,
        RejectReason::RateLimited,
        RejectReason::NotReading,
        RejectReason::AddressRate,
        RejectReason::HandshakesLimit,
    ];

    /// The `reason` label (and the reason the warning names).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotAllowed => "not_allowed",
            RejectReason::PerAddressLimit => "per_address_limit",
            RejectReason::TotalLimit => "total_limit",
            RejectReason::Handshake => "handshake",
            RejectReason::HandshakeTimeout => "handshake_timeout",
            RejectReason::Plaintext => "plaintext",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::NotReading => "not_reading",
            RejectReason::AddressRate => "address_rate",
            RejectReason::HandshakesLimit => "handshakes_limit",
        }
    }

    pub(super) fn index(self) -> usize {
        RejectReason::ALL
            .iter()
            .position(|&r| r == self)
            .expect("ALL lists every reason")
    }
}

/// What became of a datagram on the UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpResult {
    /// A keepalive accepted: its session was touched and acknowledged.
    Keepalive,
    /// A discovery request answered.
    Discovered,
    /// Not a usher datagram (wrong size, magic or kind).
    Garbage,
    /// From a peer outside the client allow-list.
    NotAllowed,
    /// A keepalive for a session with no keepalive key here.
    UnknownSession,
    /// A keepalive whose sequence number was already used.
    Replayed,
    /// A keepalive too far from the server's clock (held back and sent later).
    Stale,
    /// A keepalive whose tag does not verify.
    Forged,
    /// A good keepalive for a session that had already ended.
    SessionEnded,
    /// A discovery request while discovery is off.
    DiscoveryOff,
    /// A discovery request over the answer rate of all senders together.
    RateLimited,
    /// A discovery request from a sender already given its share of answers this second.
    OverShare,
}

impl UdpResult {
    pub(super) const ALL: [UdpResult; 12] = [
        UdpResult::Keepalive,
        UdpResult::Discovered,
        UdpResult::Garbage,
        UdpResult::NotAllowed,
        UdpResult::UnknownSession,
        UdpResult::Replayed,
        UdpResult::Stale,
        UdpResult::Forged,
        UdpResult::SessionEnded,
        UdpResult::DiscoveryOff,
        UdpResult::RateLimited,
        UdpResult::OverShare,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            UdpResult::Keepalive => "keepalive",
            UdpResult::Discovered => "discovered",
            UdpResult::Garbage => "garbage",
            UdpResult::NotAllowed => "not_allowed",
            UdpResult::UnknownSession => "unknown_session",
            UdpResult::Replayed => "replayed",
            UdpResult::Stale => "stale",
            UdpResult::Forged => "forged",
            UdpResult::SessionEnded => "session_ended",
            UdpResult::DiscoveryOff => "discovery_off",
            UdpResult::RateLimited => "rate_limited",
            UdpResult::OverShare => "over_share",
        }
    }
}
