//! Sessions and leases: who holds what.

use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;

use crate::Millis;

/// A short text (a user, host, feature or version name), shared.
///
/// One pointer wide: cloning it shares the text. The ledger interns the names of every
/// session and lease it holds (see `Ledger`), so the thousand sessions of one user on one
/// host, and the million leases of one feature, point at one copy of each name instead of
/// carrying their own. The text itself is a `CompactString`, inline in the shared block up
/// to 24 bytes, so a name costs one heap block per distinct text.
#[derive(Clone, Default)]
pub struct Name(Arc<CompactString>);

impl Name {
    /// The text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether `self` and `other` share one copy of their text.
    pub fn shares_with(&self, other: &Name) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// How many names share this one's text (interning sweeps the texts nobody else uses).
    pub(crate) fn sharers(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name(Arc::new(CompactString::from(s)))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name(Arc::new(CompactString::from(s)))
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Name {
        Name::from(s.as_str())
    }
}

impl From<&Name> for Name {
    fn from(s: &Name) -> Name {
        s.clone()
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.as_str().to_owned()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.shares_with(other) || self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&String> for Name {
    fn eq(&self, other: &&String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        self == other.as_str()
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for Name {
    // As `str` hashes, so a set of names can be searched by `&str` (see `Borrow`).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

/// A name travels as its text; a deserialized name has a copy of its own, which the
/// ledger interns like any other when it stores it.
#[cfg(feature = "serde")]
impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Name::from(text.as_str()))
    }
}

/// A session's identifier, chosen at random by the server when the session opens.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// A lease's identifier (the "handle" administrators see), chosen by the server.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A lease id is shown as its handle ([`usher_license::words::lease_handle`]: decimal), in
/// every view and log.
impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&usher_license::words::lease_handle(self.0))
    }
}

/// Who a client process says it is, as sent in its handshake.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
/// part (`expires_at`, `connected`, `detached`, and `client.address`, which a resume
/// updates to the new connection's address) is soft state that a restart resets, giving every recovered
/// session a fresh TTL in which to come back.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// Whether the server hears from this session: over its connection, or, once
    /// detached, by its keepalives. False between a connection's unannounced close and
    /// the session's resume (or its end after the reconnect grace).
    pub connected: bool,
    /// Whether the session is detached: its client closed the connection by agreement
    /// and keeps the session alive with UDP keepalives, coming back over TCP to resume.
    /// (Not to be confused with a lease detached from its session by a linger or a
    /// borrow.)
    pub detached: bool,
}

/// Seats held by a session from one pool.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// The pool the seats come from, borrowed from the lease (nothing is allocated).
    pub fn pool_key(&self) -> crate::PoolRef<'_> {
        crate::PoolRef {
            feature: &self.feature,
            vendor: &self.vendor,
            version: &self.pool_version,
        }
    }

    /// Whether the seats are held apart from any client session: lingering after they
    /// were given back, or borrowed. Such a lease outlives its session, is not handed back
    /// on a resume, and cannot be checked in.
    pub fn detached(&self) -> bool {
        self.lingering_until.is_some() || self.borrowed_until.is_some()
    }
}
