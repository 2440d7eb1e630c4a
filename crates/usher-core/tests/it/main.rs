//! Integration tests for the usher ledger (`usher-core`), compiled as one test binary.
//!
//! `util` builds entitlements, catalogs and sessions; the other modules are table-driven
//! tests of one behaviour each, a model-based property test (`model`) that runs random
//! command sequences (restarts and license reloads included) against a reference
//! implementation, a property test of lingering seats (`linger_props`) that drives the
//! ledger through time as the server does, and a determinism check.

mod borrow;
mod catalog;
mod checkout;
mod corpus;
mod determinism;
mod dup_group;
mod linger;
mod linger_props;
mod model;
mod overdraft;
mod policy;
mod queue;
mod reload;
mod remove;
mod restore;
mod session;
mod tokens;
mod util;
