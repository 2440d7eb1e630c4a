//! The policy file: parsing (every keyword, and mistakes named by line and column), a
//! table of requests against policies with the expected grant or refusal, and a property
//! test of the policy invariants under random policies and operations.

mod parse;
mod props;
mod table;
mod timeouts;
