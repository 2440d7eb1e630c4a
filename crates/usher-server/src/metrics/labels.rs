//! The bounded label sets of the metrics: request kinds, refusal reasons, UDP results.

use super::encode::Label;

/// Declares a label's enum, each value with its spelling in the exposition, and its
/// [`Label`] implementation: the values in declaration order, each spelled once.
macro_rules! label {
    ($(#[$doc:meta])* $name:ident = $key:literal { $($(#[$vdoc:meta])* $value:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $value,)*
        }

        impl Label for $name {
            const KEY: &'static str = $key;
            const VALUES: &'static [$name] = &[$($name::$value),*];

            fn as_str(self) -> &'static str {
                match self {
                    $($name::$value => $text,)*
                }
            }

            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label! {
    /// The kinds of protocol request, for per-kind latency.
    RequestKind = "kind" {
        /// Hello (opening or resuming a session).
        Hello = "hello",
        /// Checkout.
        Checkout = "checkout",
        /// Checkin.
        Checkin = "checkin",
        /// Heartbeat.
        Heartbeat = "heartbeat",
        /// Status.
        Status = "status",
        /// Remove (administration).
        Remove = "remove",
        /// Reload (administration).
        Reload = "reload",
        /// Down (administration).
        Down = "down",
        /// Goodbye.
        Goodbye = "goodbye",
        /// Dequeue (withdrawing a waiting checkout).
        Dequeue = "dequeue",
        /// Activity (idle or active again).
        Activity = "activity",
        /// Borrow (seats for offline use).
        Borrow = "borrow",
        /// Return (borrowed seats, early).
        Return = "return",
        /// Detach (keep the session alive over UDP).
        Detach = "detach",
    }
}

label! {
    /// Why a connection was refused right after `accept`.
    RejectReason = "reason" {
        /// The peer is outside the allow-list.
        NotAllowed = "not_allowed",
        /// The peer's address already holds its maximum of connections.
        PerAddressLimit = "per_address_limit",
        /// The server already holds its maximum of client connections (`max_connections`).
        TotalLimit = "total_limit",
        /// The peer's TLS handshake or Hello failed, or it sent something else.
        Handshake = "handshake",
        /// The peer did not complete its TLS handshake and Hello within `handshake_timeout`.
        HandshakeTimeout = "handshake_timeout",
        /// The peer spoke plaintext to a server that requires TLS.
        Plaintext = "plaintext",
        /// A connection whose client did not read its answers within `send_timeout` (closed).
        NotReading = "not_reading",
        /// The peer's address opened new connections faster than `max_connection_rate_per_ip`.
        AddressRate = "address_rate",
        /// The server already had `max_handshakes` connections in their handshake.
        HandshakesLimit = "handshakes_limit",
    }
}

label! {
    /// What became of a datagram on the UDP port.
    UdpResult = "result" {
        /// A keepalive accepted: its session was touched and acknowledged.
        Keepalive = "keepalive",
        /// A discovery request answered.
        Discovered = "discovered",
        /// Not a usher datagram (wrong size, magic or kind).
        Garbage = "garbage",
        /// From a peer outside the client allow-list.
        NotAllowed = "not_allowed",
        /// A keepalive for a session with no keepalive key here.
        UnknownSession = "unknown_session",
        /// A keepalive whose sequence number was already used.
        Replayed = "replayed",
        /// A keepalive too far from the server's clock (held back and sent later).
        Stale = "stale",
        /// A keepalive whose tag does not verify.
        Forged = "forged",
        /// A good keepalive for a session that had already ended.
        SessionEnded = "session_ended",
        /// A discovery request while discovery is off.
        DiscoveryOff = "discovery_off",
        /// A discovery request over the answer rate of all senders together.
        RateLimited = "rate_limited",
        /// A discovery request from a sender already given its share of answers this second.
        OverShare = "over_share",
    }
}
