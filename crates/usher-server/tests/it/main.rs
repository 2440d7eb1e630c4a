//! End-to-end tests of usherd: real servers on loopback, real clients, raw frames for
//! hostile and old/new peers, a proxy that breaks connections, and a real `usherd`
//! process killed with `kill -9`.
//!
//! Tests assert behaviour, never speed: every wait is a bounded poll with a generous cap,
//! and every failure message carries the status report or response it was judging.

mod access;
mod admin;
mod api_pages;
mod clock;
mod closing;
mod compat;
mod corpus;
mod dashboard;
mod fail_loudly;
mod flood;
mod full_disk;
mod hostile;
mod http;
mod junk;
mod local;
mod metric_names;
mod names;
mod ops;
mod policy;
mod proxy;
mod queue;
mod recovery;
mod refusals;
mod scale;
mod serve;
mod sessions;
mod tls;
mod udp;
mod usage_log;
mod util;
mod verify;
