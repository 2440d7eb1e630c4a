//! Integration tests of usher-store: one binary, a module per concern.
//!
//! - `chain`: the usage log's hash chain: verification, migration, read-only opens.
//! - `conformance`: the `Store` contract, run against every backend.
//! - `model`: random batches committed to SQLite and checked against the in-memory model.
//! - `sqlite`: what only the SQLite store has (file, WAL, schema versions, big batches).
//! - `crash`: a writer process killed with SIGKILL loses no acknowledged batch.

mod chain;
mod conformance;
mod crash;
mod model;
mod sqlite;
mod util;
