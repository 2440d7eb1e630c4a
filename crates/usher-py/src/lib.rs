//! The `usher` Python package: check out license seats from Python.
//!
//! ```python
//! import usher
//!
//! with usher.checkout("cad", "2025", count=1, wait=300) as lic:
//!     ...  # the licensed work; `lic.lost` turns true if the seat is taken away
//! ```
//!
//! Built on the Rust client (`usher-client`) directly. Each `Client` runs the async
//! client on a private one-worker runtime, whose thread also sends the heartbeats, so
//! seats stay alive while Python does anything at all.
//!
//! **Architecture Invariant:** no network wait holds the GIL. Every call that waits on the
//! server releases it ([`Python::detach`]) in slices of at most `SLICE`, checking for
//! signals between slices, so other Python threads run and Ctrl-C interrupts a waiting
//! checkout (which is then withdrawn from the server's queue).
//!
//! Errors are exceptions under `usher.UsherError` whose `code` is the C ABI's status code
//! for the same failure (one mapping: `usher-capi`'s `codes`).

mod client;
mod errors;
mod license;
mod shared;

use pyo3::prelude::*;

use client::Client;
use errors::*;
use license::License;

/// Check out license seats from an usher license server.
#[pymodule]
#[pyo3(name = "usher")]
fn usher_py(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add_class::<License>()?;
    m.add_function(wrap_pyfunction!(client::checkout, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    macro_rules! add_exceptions {
        ($($name:ident),*) => { $( m.add(stringify!($name), py.get_type::<$name>())?; )* };
    }
    add_exceptions!(
        UsherError,
        InvalidArgument,
        ServerUnreachable,
        ServerError,
        ClientClosed,
        GrantUntrusted,
        LicenseUnavailable,
        NoSuchFeature,
        LicenseExpired,
        AllInUse,
        WaitTimedOut,
        PolicyDenied,
        LicenseLost
    );
    Ok(())
}
