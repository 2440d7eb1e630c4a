//! What one Raft log entry carries: a batch of ledger commands and the time to apply
//! them at.

use serde::{Deserialize, Serialize};
use usher_core::{Command, LedgerError, Millis, Outcome};

/// Ledger commands the leader proposes together, applied in order at one time.
///
/// The leader stamps the batch with its clock; every member applies it at
/// `max(time, the previous batch's time)`, so ledger time never runs backwards even if a
/// new leader's clock is behind the old one's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The leader's wall-clock time when it proposed the batch (ms since the epoch).
    pub time: Millis,
    /// The commands, each carrying the ids it uses.
    pub commands: Vec<Command>,
}

/// What applying a [`Batch`] gave: one result per command, in the batch's order. Entries
/// without commands (Raft's own blank and membership entries) give none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Each command's outcome, or why it did not fit the ledger.
    pub outcomes: Vec<Result<Outcome, LedgerError>>,
}
