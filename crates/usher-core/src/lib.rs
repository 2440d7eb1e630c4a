//! The usher ledger: a pure, deterministic state machine that accounts for license seats.
//!
//! `Ledger::apply(now, command)` is the only way state changes. Time, session ids, lease
//! ids and secrets all arrive inside the command, so the same sequence of commands always
//! produces the same state and the same outcomes. That property is what lets the server
//! replay the store after a crash, lets tests drive the ledger through millions of random
//! operations, and lets a replicated log carry the same commands to every node.
//!
//! Callers stamp a batch of commands with a [`Stamper`] (one time that never runs
//! backwards, fresh lease ids) into an [`Entry`] and apply it with
//! [`Ledger::apply_entry`]: the single server's ledger task and a cluster member's state
//! machine apply entries the same way.
//!
//! **Architecture invariant:** this crate performs no I/O, reads no clock, draws no random
//! numbers and depends on no async runtime.
//!
//! **Architecture invariant:** the seats held from a pool never exceed the seats the pool
//! holds at the moment of each grant, plus its `OVERDRAFT=` allowance (and every seat
//! beyond the count is flagged as overdraft).

mod catalog;
mod command;
mod entry;
mod in_use;
mod ledger;
mod names;
pub mod policy;
mod queue;
mod session;

pub use catalog::{
    Catalog, DEFAULT_BORROW_HOURS, DupGroup, MAX_BORROW_HOURS, Pool, PoolKey, PoolRef,
    TokenFeature, canonical_version,
};
pub use command::{Ask, Change, Command, Denial, LedgerError, Outcome, ReleaseReason};
pub use entry::{Entry, Stamper};
pub use in_use::{DupKey, Holder, PoolTallies, PoolTally, SeatsInUse};
pub use ledger::{Ledger, LedgerConfig};
pub use policy::{NamedFeature, Policy, PolicyError, Who};
pub use queue::{DequeueReason, QueuedRequest, Wait};
pub use session::{ClientInfo, Lease, LeaseId, Name, Session, SessionId};

/// Milliseconds since the Unix epoch. All times inside the ledger use this unit.
pub type Millis = u64;
