//! The values of the ABI a C program passes and compares (its version, checkout flags,
//! license statuses, events and options), the callback type, and the functions that
//! report the library's version. The status codes are in `codes`.

use std::ffi::{CStr, c_char, c_void};

/// The ABI version: bumped only by an incompatible change (none so far).
pub const USHER_ABI_VERSION: u32 = 1;

/// Checkout flag: refuse at once if no seat is free.
pub const USHER_CHECKOUT_NOWAIT: i32 = 0;
/// Checkout flag: wait in the server's queue (blocking) for at most the timeout.
pub const USHER_CHECKOUT_WAIT: i32 = 1;
/// Checkout flag: queue and return at once; the license handle reports
/// `USHER_STATUS_QUEUED` until the seats are granted (or the timeout passes).
pub const USHER_CHECKOUT_QUEUE: i32 = 2;
/// Checkout timeout: wait for as long as it takes.
pub const USHER_WAIT_FOREVER: i64 = -1;

/// License status: waiting in the server's queue.
pub const USHER_STATUS_QUEUED: i32 = 1;
/// License status: the seats are held.
pub const USHER_STATUS_GRANTED: i32 = 2;
/// License status: held, but the connection is down and being re-established.
pub const USHER_STATUS_RECONNECTING: i32 = 3;
/// License status: lost (removed by an administrator, or the session expired).
pub const USHER_STATUS_LOST: i32 = 4;
/// License status: the queued checkout ended without a grant.
pub const USHER_STATUS_DENIED: i32 = 5;

/// Event: the connection to the server was lost; the library is reconnecting.
pub const USHER_EVENT_CONNECTION_LOST: i32 = 1;
/// Event: the session was resumed on a new connection; its seats are the same seats.
pub const USHER_EVENT_RECONNECTED: i32 = 2;
/// Event: a license was lost (`lease_id` says which, `detail` why).
pub const USHER_EVENT_LICENSE_LOST: i32 = 3;
/// Event: a queued checkout was granted (`lease_id` says which).
pub const USHER_EVENT_LICENSE_GRANTED: i32 = 4;

/// Integer option: connect timeout per server, in milliseconds (default 3000).
pub const USHER_OPT_CONNECT_TIMEOUT_MS: i32 = 1;
/// Integer option: request timeout, in milliseconds (default 30000).
pub const USHER_OPT_REQUEST_TIMEOUT_MS: i32 = 2;
/// Integer option: 1 for manual heartbeat mode (no library threads; the application
/// calls `usher_heartbeat` at least every `usher_heartbeat_interval_ms`), 0 (default) for
/// library threads that heartbeat and reconnect on their own.
pub const USHER_OPT_MANUAL_HEARTBEAT: i32 = 3;
/// Integer option: 1 to talk to servers without TLS (the server must allow it too).
pub const USHER_OPT_INSECURE_PLAINTEXT: i32 = 4;
/// Integer option: seconds of inactivity before the connection is closed and the seats
/// are kept by UDP keepalives (0: never; default 300).
pub const USHER_OPT_DETACH_AFTER_S: i32 = 5;
/// String option: a vendor public key (the text of the vendor's `.pub` file, compiled
/// into the application). May be given several times. With any key set, every grant must
/// carry a statement signed under the vendor's license, or the checkout fails with
/// `USHER_E_UNTRUSTED`.
pub const USHER_OPT_VENDOR_KEY: i32 = 101;
/// String option: a server id to pin (`USHER_ID=...`); the TLS handshake fails with others.
pub const USHER_OPT_SERVER_ID: i32 = 102;
/// String option: the program name shown to administrators.
pub const USHER_OPT_PROGRAM: i32 = 103;
/// String option: the program version shown to administrators.
pub const USHER_OPT_PROGRAM_VERSION: i32 = 104;

/// The event callback: `event` is a `USHER_EVENT_*` value, `lease_id` the license
/// concerned (0 for connection events), `detail` a NUL-terminated UTF-8 line valid only
/// during the call, `user_data` what was given to `usher_client_set_callback`. It must
/// return promptly and must not unwind (throw) into the library.
pub type UsherEventCallback = Option<
    unsafe extern "C" fn(event: i32, lease_id: u64, detail: *const c_char, user_data: *mut c_void),
>;

/// The library version, e.g. `"0.1.0"` (static; do not free).
///
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn usher_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// The ABI version of the library (compare with `USHER_ABI_VERSION` from the header the
/// application was compiled with).
///
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn usher_abi_version() -> u32 {
    USHER_ABI_VERSION
}
