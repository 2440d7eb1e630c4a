//! The exceptions: `usher.UsherError` and its subclasses, and the one mapping from a
//! failure (the C ABI's status code, from `usher-capi`'s `codes`) to the exception.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use usher::codes::{self as c, Failure};
use usher_client::ClientError;

pyo3::create_exception!(
    usher,
    UsherError,
    PyException,
    "Base of every usher error. `code` is the C ABI's status code (a negative int), `detail` one line for a human, `retryable` whether trying again later may succeed."
);
pyo3::create_exception!(
    usher,
    InvalidArgument,
    UsherError,
    "A bad argument, server list or vendor key."
);
pyo3::create_exception!(
    usher,
    ServerUnreachable,
    UsherError,
    "No license server could be reached, or it did not answer in time."
);
pyo3::create_exception!(
    usher,
    ServerError,
    UsherError,
    "The license server answered with an error, or with something this client cannot read."
);
pyo3::create_exception!(
    usher,
    ClientClosed,
    UsherError,
    "The client (or the license) has been closed."
);
pyo3::create_exception!(
    usher,
    GrantUntrusted,
    UsherError,
    "The grant did not verify against the vendor keys (an emulator, or tampering); no seat is held."
);
pyo3::create_exception!(
    usher,
    LicenseUnavailable,
    UsherError,
    "The checkout was refused: see the subclasses, `code` and `detail`."
);
pyo3::create_exception!(
    usher,
    NoSuchFeature,
    LicenseUnavailable,
    "No license names the feature (or none at the version asked for)."
);
pyo3::create_exception!(
    usher,
    LicenseExpired,
    LicenseUnavailable,
    "The licenses for the feature have expired, or have not started yet."
);
pyo3::create_exception!(
    usher,
    AllInUse,
    LicenseUnavailable,
    "Every seat is in use (or others are queued ahead), and the checkout did not wait."
);
pyo3::create_exception!(
    usher,
    WaitTimedOut,
    LicenseUnavailable,
    "The checkout waited in the queue for as long as it allowed."
);
pyo3::create_exception!(
    usher,
    PolicyDenied,
    LicenseUnavailable,
    "The server's policy refused the checkout (excluded, a maximum reached, seats reserved, not a named user)."
);
pyo3::create_exception!(
    usher,
    LicenseLost,
    UsherError,
    "The license was lost: an administrator removed it, or the session expired."
);

/// The exception for a failure, carrying its code, detail and retryability.
pub(crate) fn to_py(py: Python<'_>, failure: Failure) -> PyErr {
    let detail = failure.detail.clone();
    let err = match failure.code {
        c::USHER_E_INVALID_ARGUMENT
        | c::USHER_E_INVALID_OPTION
        | c::USHER_E_BAD_SERVER_LIST
        | c::USHER_E_BAD_VENDOR_KEY => InvalidArgument::new_err(detail),
        c::USHER_E_UNREACHABLE | c::USHER_E_TIMEOUT | c::USHER_E_SERVER_SHUTTING_DOWN => {
            ServerUnreachable::new_err(detail)
        }
        c::USHER_E_PROTOCOL | c::USHER_E_SERVER => ServerError::new_err(detail),
        c::USHER_E_CLOSED => ClientClosed::new_err(detail),
        c::USHER_E_UNTRUSTED => GrantUntrusted::new_err(detail),
        c::USHER_E_NO_SUCH_FEATURE | c::USHER_E_VERSION_TOO_NEW => NoSuchFeature::new_err(detail),
        c::USHER_E_EXPIRED | c::USHER_E_NOT_YET_STARTED => LicenseExpired::new_err(detail),
        c::USHER_E_ALL_IN_USE | c::USHER_E_QUEUED_AHEAD => AllInUse::new_err(detail),
        c::USHER_E_WAIT_TIMED_OUT => WaitTimedOut::new_err(detail),
        c::USHER_E_EXCLUDED
        | c::USHER_E_MAX_REACHED
        | c::USHER_E_RESERVED
        | c::USHER_E_NOT_NAMED_USER
        | c::USHER_E_MORE_THAN_ALLOWED => PolicyDenied::new_err(detail),
        c::USHER_E_LICENSE_LOST => LicenseLost::new_err(detail),
        code if (c::USHER_E_BOUND_TO_OTHER_HOST..=c::USHER_E_NO_SUCH_FEATURE).contains(&code) => {
            LicenseUnavailable::new_err(detail)
        }
        _ => UsherError::new_err(detail),
    };
    let value = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of memory
    // exhaustion, when the exception without them is still the right answer.
    let _ = value.setattr("code", failure.code);
    let _ = value.setattr("detail", &failure.detail);
    let _ = value.setattr("retryable", c::retryable(failure.code));
    err
}

pub(crate) fn client_error(py: Python<'_>, e: ClientError) -> PyErr {
    to_py(py, Failure::from(e))
}
