//! What applying one Raft log entry gave. The entry itself is a [`usher_core::Entry`]:
//! ledger commands the leader stamped with its time and the ids they use.

use serde::{Deserialize, Serialize};
use usher_core::{LedgerError, Outcome};

/// What applying an [`usher_core::Entry`] gave: one result per command, in the batch's order. Entries
/// without commands (Raft's own blank and membership entries) give none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Each command's outcome, or why it did not fit the ledger.
    pub outcomes: Vec<Result<Outcome, LedgerError>>,
}
