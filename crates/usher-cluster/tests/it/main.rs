//! Integration tests of the replicated ledger.

mod checker;
mod cluster;
mod history;
mod membership;
mod proposer;
mod sim;
mod snapshot;
mod suite;
mod tls;
mod util;
