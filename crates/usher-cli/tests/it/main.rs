//! Process-level tests of the `usher` command line against a real `usherd`.
//!
//! Each test starts its own server on a free loopback port with a temporary data
//! directory, creates keys and licenses with `usher vendor` itself, and drives `usher` as
//! a user or a monitoring tool would: exit codes (the contract in `src/exit.rs`), the text
//! of `lmstat`, the JSON of `usher status`. Waits are bounded polls that print the server's
//! state and log when they give up; nothing asserts on speed.

mod borrow;
mod demo;
mod exit_codes;
mod hygiene;
mod lmstat;
mod log;
mod ops;
mod report;
mod run;
mod scale;
mod seats;
mod status;
mod trust;
mod util;
mod vendor;
