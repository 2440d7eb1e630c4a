//! Statements a server signs about the seats it hands out, and the borrow token built on
//! them.
//!
//! A client must be able to tell a genuine seat from one made up by an emulator holding a
//! copy of the license file. It holds only its vendor's public key, so everything it needs
//! travels with the seat:
//!
//! 1. the vendor-signed entitlement the seat was drawn from (as a license line), which the
//!    vendor key verifies;
//! 2. a [`Statement`] signed by the server's identity key about this seat: which lease,
//!    feature, version and count, for whom (user, host ids), until when;
//! 3. the server's public key, whose [`usher_id`] must be one the entitlement's
//!    `HOSTID=USHER_ID=...` names, so the server is the one the vendor licensed.
//!
//! A [`SignedStatement`] is exactly that. As a [`BorrowToken`] it is kept in a file on the
//! borrowing host, and [`SignedStatement::verify`] is what the client library runs to
//! grant a borrowed feature with no server in reach. With an ordinary grant it answers a
//! nonce the client sent with its checkout, and [`SignedStatement::verify_grant`] shows the
//! seat comes from a genuine license, on the server it binds, just now.
//!
//! **Invariant:** the statement's encoding is injective (every field length-prefixed, in a
//! fixed order, after a domain prefix that no other usher signature uses), so a signature
//! over one statement never verifies another.

mod text;
mod verify;

use ed25519_dalek::{Signer, SigningKey};

pub use text::TOKEN_HEADER;
pub use verify::{Borrowed, CLOCK_SKEW_MS, VerifiedGrant};

use crate::SignatureError;

/// Prefix of every statement's signed bytes.
pub const STATEMENT_DOMAIN: &[u8] = b"usher-statement-v1\0";

/// What a statement vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Seats borrowed for offline use by one host until `valid_until_ms`.
    Borrow,
    /// Seats granted to a checkout that carried `nonce`.
    Grant,
}

impl StatementKind {
    fn as_str(self) -> &'static str {
        match self {
            StatementKind::Borrow => "borrow",
            StatementKind::Grant => "grant",
        }
    }
}

/// What a server says, under its identity key, about seats it granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// What it vouches for.
    pub kind: StatementKind,
    /// The server's identity public key (Ed25519).
    pub server_key: [u8; 32],
    /// The lease handle on that server.
    pub lease_id: u64,
    /// The session the lease was granted to (0: none, as for a borrow).
    pub session: u64,
    /// Feature.
    pub feature: String,
    /// Version of the pool the seats came from.
    pub version: String,
    /// Seats.
    pub count: u32,
    /// The user the seats were granted to.
    pub user: String,
    /// The host ids of the machine the seats are bound to (for a borrow: the borrower's).
    pub host_ids: Vec<String>,
    /// When the server signed it (ms since the Unix epoch).
    pub issued_at_ms: u64,
    /// First millisecond it no longer holds.
    pub valid_until_ms: u64,
    /// The vendor-signed entitlement the seats were drawn from, as one license line.
    pub entitlement: String,
    /// For a grant: the nonce the client sent with its checkout (empty for a borrow).
    pub nonce: Vec<u8>,
}

impl Statement {
    /// The bytes the server signs: [`STATEMENT_DOMAIN`], then every field in declaration
    /// order, texts and byte strings as a big-endian `u32` length and the bytes, numbers
    /// as big-endian `u64`, the host ids as a count followed by each id.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.entitlement.len());
        out.extend_from_slice(STATEMENT_DOMAIN);
        field(&mut out, self.kind.as_str().as_bytes());
        field(&mut out, &self.server_key);
        out.extend_from_slice(&self.lease_id.to_be_bytes());
        out.extend_from_slice(&self.session.to_be_bytes());
        field(&mut out, self.feature.as_bytes());
        field(&mut out, self.version.as_bytes());
        out.extend_from_slice(&u64::from(self.count).to_be_bytes());
        field(&mut out, self.user.as_bytes());
        out.extend_from_slice(&(self.host_ids.len() as u64).to_be_bytes());
        for id in &self.host_ids {
            field(&mut out, id.as_bytes());
        }
        out.extend_from_slice(&self.issued_at_ms.to_be_bytes());
        out.extend_from_slice(&self.valid_until_ms.to_be_bytes());
        field(&mut out, self.entitlement.as_bytes());
        field(&mut out, &self.nonce);
        out
    }

    /// Signs the statement with the server's identity key, which must be the one named in
    /// `server_key`.
    pub fn sign(self, key: &SigningKey) -> SignedStatement {
        debug_assert_eq!(key.verifying_key().to_bytes(), self.server_key);
        let signature = key.sign(&self.signed_bytes()).to_bytes();
        SignedStatement {
            statement: self,
            signature,
        }
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A statement with the server's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedStatement {
    /// What the server vouches for.
    pub statement: Statement,
    /// The server's Ed25519 signature over [`Statement::signed_bytes`].
    pub signature: [u8; 64],
}

/// A server-signed, host-bound, time-limited permission to use borrowed seats offline.
pub type BorrowToken = SignedStatement;

/// Why a borrow token does not grant its feature here and now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token file is not a borrow token (the message names the line).
    #[error("not a usher borrow token: {0}")]
    Malformed(String),
    /// The server's signature does not verify: the token was edited or forged.
    #[error("the server's signature on the borrow token does not verify (edited or forged)")]
    BadServerSignature,
    /// The entitlement inside does not parse.
    #[error("the license line in the borrow token does not parse: {0}")]
    BadEntitlement(String),
    /// No trusted key for the entitlement's vendor.
    #[error("no trusted key for vendor {0:?}")]
    UnknownVendor(String),
    /// The vendor's signature on the entitlement does not verify.
    #[error("the vendor's signature on the license line does not verify: {0}")]
    BadLicenseSignature(SignatureError),
    /// The entitlement binds its seats to another server (`HOSTID=USHER_ID=...`) than
    /// the one that signed the token: a server that is not the licensed one lent them.
    #[error("the license binds its seats to {bound}, but the token was signed by {signer}")]
    ServerNotBound {
        /// The servers the license names.
        bound: String,
        /// The server that signed.
        signer: String,
    },
    /// The statement and the entitlement disagree (feature, vendor, version or count).
    #[error("the borrow token does not match its license line: {0}")]
    Mismatch(String),
    /// The token is for another feature than the one asked for, or an older version.
    #[error("the borrow token is for {have}, not {want}")]
    WrongFeature {
        /// What the token holds.
        have: String,
        /// What was asked for.
        want: String,
    },
    /// The token is bound to another machine.
    #[error("the borrow token is bound to another machine")]
    OtherHost,
    /// The borrow period is over.
    #[error("the borrow ended at {until_ms} (ms since the epoch)")]
    Ended {
        /// When it ended.
        until_ms: u64,
    },
    /// The token claims to be issued in the future: this machine's clock is wrong, or the
    /// token is not genuine.
    #[error("the server's statement is dated in the future; check this machine's clock")]
    NotYetValid,
    /// The statement vouches for something else (a grant offered as a borrow token, or
    /// the other way round).
    #[error("the server's statement is a {found} statement, not a {wanted} one")]
    WrongKind {
        /// What was needed.
        wanted: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// The grant's statement is signed by another server than the one the connection
    /// reached (its TLS identity): the answer was relayed or made up.
    #[error(
        "the statement was signed by {signer}, not by the server this connection reached ({connected})"
    )]
    NotTheConnectedServer {
        /// The server the TLS channel authenticated.
        connected: String,
        /// The server that signed.
        signer: String,
    },
    /// The grant does not answer this checkout: another nonce (a replayed grant), another
    /// lease, or other seats than the answer claims.
    #[error("the grant's statement does not answer this checkout: {0}")]
    NotThisCheckout(String),
}

/// The host ids a token binds to: among `ids` (a machine's [`crate::host_ids`]), those of
/// the strongest kind present, `MACHINE_ID=` before `ETHER=` before `HOSTNAME=`, since a
/// host name is the easiest to copy.
pub fn binding_ids(ids: &[String]) -> Vec<String> {
    for kind in ["MACHINE_ID=", "ETHER=", "HOSTNAME="] {
        let of_kind: Vec<String> = ids
            .iter()
            .filter(|i| i.starts_with(kind))
            .cloned()
            .collect();
        if !of_kind.is_empty() {
            return of_kind;
        }
    }
    ids.to_vec()
}
