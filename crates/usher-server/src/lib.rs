//! The usher server: listeners, connection tasks, the ledger task and its store.
//!
//! Data flows one way: bytes → frames → requests → ledger commands → durable batch →
//! replies. [`run`] is the single entry point, used by the `usherd` binary (which passes
//! a future that completes on SIGTERM or ctrl-c) and by tests (which pass a oneshot).

pub mod accept_backoff;
pub mod access;
pub mod admin;
pub mod applied;
pub mod auth;
pub mod background;
pub mod check;
pub mod clock;
pub mod commit;
pub mod config;
pub mod connection;
pub mod data_dir;
pub mod demo;
pub mod denial_log;
pub mod fatal;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod keepalives;
pub mod ledger_task;
pub mod licenses;
pub mod logging;
pub mod metrics;
pub mod notices;
pub mod requests;
pub mod server;
pub mod shared;
pub mod systemd;
pub mod tls;
pub mod udp;

pub use config::Config;
pub use server::{Server, ServerError, run};
