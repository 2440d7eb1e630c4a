//! Integration tests of the replicated ledger.

mod cluster;
mod snapshot;
mod suite;
mod util;
