//! Integration tests of usher-license, in one test binary.

mod attributes;
mod check;
mod corpus;
mod keys;
mod no_panic;
mod parse_errors;
mod parse_ok;
mod sign;
mod statement;
mod util;
