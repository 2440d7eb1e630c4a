//! End-to-end tests of usherd: real servers on loopback, real clients, raw frames for
//! hostile and old/new peers, and a real `usherd` process killed with `kill -9`.

mod access;
mod admin;
mod compat;
mod hostile;
mod recovery;
mod serve;
mod util;
