//! What the ledger task answers a command with: the ledger's outcome, and what the
//! ledger knew at that moment that the answer needs (a grant's expiry, the entitlement its
//! seats come from, the holder's name). The request layer turns it into a reply.

use std::sync::Arc;

use usher_core::{LedgerError, Outcome};
use usher_license::Entitlement;

/// The result of a command, with what the connection needs to answer the client.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The ledger's answer.
    pub result: Result<Outcome, LedgerError>,
    /// For a grant: when the pool's current entitlements expire (0: permanent).
    pub expires_at_ms: u64,
    /// For a grant: the entitlement the seats were drawn from, which a signed statement
    /// (a borrow token, or a grant's answer to a nonce) carries.
    pub source: Option<Arc<Entitlement>>,
    /// For a grant: the holder's user name, which a signed statement names.
    pub user: String,
}
