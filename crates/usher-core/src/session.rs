//! Sessions and leases: who holds what.

use std::fmt;

use crate::Millis;

/// A short text (a user, host, feature or version name): kept inline up to 24 bytes, so a
/// million sessions and leases do not cost a heap block per name.
pub type Name = compact_str::CompactString;

/// A session's identifier, chosen at random by the server when the session opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// A lease's identifier (the "handle" administrators see), chosen by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// Who a client process says it is, as sent in its handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientInfo {
    /// Login name of the user running the application.
    pub user: Name,
    /// Host name of the client machine.
    pub host: Name,
    /// Display (X display or terminal), as FlexLM reports it.
    pub display: Name,
    /// Process id on the client machine.
    pub pid: u32,
    /// Program name.
    pub program: Name,
    /// Program version.
    pub program_version: Name,
    /// Network address the session connected from, as seen by the server.
    pub address: Name,
}

/// One client process's presence.
///
/// The durable part (`id`, `secret_hash`, `client`, `opened_at`) is stored; the liveness
/// part (`expires_at`, `connected`, and `client.address`, which a resume updates to the
/// new connection's address) is soft state that a restart resets, giving every recovered
/// session a fresh TTL in which to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Session id.
    pub id: SessionId,
    /// SHA-256 of the session secret; the secret itself is known only to the client.
    pub secret_hash: [u8; 32],
    /// Client identity from the handshake.
    pub client: ClientInfo,
    /// When the session opened.
    pub opened_at: Millis,
    /// When the session lapses unless it is heard from.
    pub expires_at: Millis,
    /// Whether a connection currently carries this session.
    pub connected: bool,
}

/// Seats held by a session from one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Lease id.
    pub id: LeaseId,
    /// Owning session.
    pub session: SessionId,
    /// Feature checked out.
    pub feature: Name,
    /// Vendor of the pool the seats came from.
    pub vendor: Name,
    /// Version the client asked for (as written by the client).
    pub requested_version: Name,
    /// Version of the pool the seats came from; with `feature`, it names the pool.
    pub pool_version: Name,
    /// Number of seats.
    pub count: u32,
    /// When the lease was granted.
    pub granted_at: Millis,
    /// The client's idempotency key: a retried checkout with the same key returns this
    /// lease instead of taking a second seat.
    pub client_ref: u64,
    /// Whether the seats were granted beyond the pool's count, under its `OVERDRAFT=`
    /// allowance. Flagged to the client, in status and in the usage log.
    pub overdraft: bool,
    /// Set once the client has given the lease back while its pool's `LINGER=` or
    /// `MIN_CHECKOUT=` keeps the seats held: until when they stay held. The client no
    /// longer holds such a lease; the seats still count.
    pub lingering_until: Option<crate::Millis>,
    /// Set when the seats were borrowed for offline use (`usher borrow`): until when the
    /// borrower holds them, with or without a session. They come back when the borrow
    /// ends or the borrower returns them early.
    pub borrowed_until: Option<crate::Millis>,
    /// Set when the checkout asked for a token-based feature (`count` = `token`): its
    /// name. The lease then holds `count` tokens of `feature`, the pool that paid.
    pub token_for: Option<Name>,
}

impl Lease {
    /// Whether the seats are held apart from any client session: lingering after they
    /// were given back, or borrowed. Such a lease outlives its session, is not handed back
    /// on a resume, and cannot be checked in.
    pub fn detached(&self) -> bool {
        self.lingering_until.is_some() || self.borrowed_until.is_some()
    }
}
