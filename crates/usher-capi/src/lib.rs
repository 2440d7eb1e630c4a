//! The usher C ABI: check out license seats from C (and C++, Fortran, Java, MATLAB...).
//!
//! The header `include/usher.h` is generated from this crate by cbindgen and committed;
//! a test regenerates it and fails on any difference. docs/c-api.md is the guide.
//!
//! **ABI Invariants:**
//! - No panic crosses the boundary: every entry point runs inside `boundary::entry`, which turns a
//!   panic into `USHER_E_INTERNAL`. The library never exits or aborts the host.
//! - Strings in are borrowed, NUL-terminated UTF-8; strings out are static or copied
//!   into the caller's buffer, so the caller frees only what it allocated.
//! - Every enum-like argument is an `int32_t` checked against the values defined;
//!   anything else is `USHER_E_INVALID_OPTION`, never undefined behaviour.
//! - A client remembers the process that created it; used after a `fork()` in the child,
//!   every call returns `USHER_E_FORKED` (the child has none of its threads).
#![deny(unsafe_op_in_unsafe_fn)]

// cbindgen reads this file, then the modules in the order they are declared here, and
// writes the constants and the functions in the order it read them. The header has abi's
// constants before codes', and the functions of abi, boundary, client, license and
// session in that order: the alphabetical order rustfmt keeps these lines in. A module
// that adds constants or functions must fit that order (the header test says if not).
mod abi;
mod args;
mod boundary;
mod client;
pub mod codes;
mod events;
mod license;
mod session;

pub use abi::*;
pub use boundary::{usher_last_error_detail, usher_status_message, usher_status_retryable};
pub use client::{
    UsherClient, usher_client_connect, usher_client_new, usher_client_set_callback,
    usher_client_set_int, usher_client_set_str,
};
pub use codes::*;
pub use license::{
    UsherLicense, usher_checkin, usher_checkout, usher_license_count, usher_license_expiry,
    usher_license_lease_id, usher_license_server, usher_license_statement, usher_license_status,
    usher_license_verified, usher_license_version,
};
pub use session::{usher_borrow, usher_client_free, usher_heartbeat, usher_heartbeat_interval_ms};
