//! Arbitrary requests to the admin HTTP API of a real server (store, ledger task, axum
//! router, listener) with holders and a queued request: the first byte picks a route, the
//! bytes up to the first newline are its query string and the rest its body. Every answer
//! must be well-formed HTTP below 500 (JSON where it says JSON), and the server must not
//! panic (libFuzzer aborts on a panic in any thread).
#![no_main]
use std::sync::OnceLock;

use usher_server::fuzzing::AdminServer;

static SERVER: OnceLock<AdminServer> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let server = SERVER.get_or_init(AdminServer::start);
    if let Err(e) = server.send(data) {
        panic!("{e}");
    }
});
