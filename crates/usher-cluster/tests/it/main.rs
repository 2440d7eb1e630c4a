//! Integration tests of the replicated ledger.

mod cluster;
mod proposer;
mod snapshot;
mod suite;
mod util;
