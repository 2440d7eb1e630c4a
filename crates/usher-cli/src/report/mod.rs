//! Usage reports: the usage log replayed into seats in use over time, per feature.
//!
//! Pure: records in, figures out. The log is replayed from its first record (seats held
//! when the period starts must be counted), and the state between two records is constant,
//! so every figure is an exact integral over time, not a sample.
//!
//! Seats in use are counted by the ledger's own accounting ([`SeatsInUse`](usher_core::SeatsInUse)), under the
//! `DUP_GROUP=` rule each `seats` record gives its pool, so duplicate checkouts that share
//! a seat in the ledger share it in the report too.

mod model;
mod replay;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use model::{Bucket, FeatureReport, Figures, Ms, Request};
pub use replay::Replay;
#[cfg(test)]
pub use replay::build;
