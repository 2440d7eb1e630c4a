//! The boundary every entry point passes: a panic becomes `USHER_E_INTERNAL`, the detail
//! of a failure is kept for the thread (`usher_last_error_detail`), a lock poisoned by a
//! caught panic is used as it is; and the functions that describe a status code.

use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard};

use crate::args::copy_out;
use crate::codes::{self, Failure, USHER_E_INTERNAL, USHER_OK};

thread_local! {
    static DETAIL: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic caught at the boundary may poison a lock; the data stays consistent
    // because every critical section in this crate is a plain assignment or lookup.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs an entry point: catches panics, records the detail of a failure for this thread.
pub(crate) fn entry(f: impl FnOnce() -> Result<(), Failure>) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Failure::new(
            USHER_E_INTERNAL,
            format!("internal error: {what}"),
        ))
    });
    match outcome {
        Ok(()) => USHER_OK,
        Err(f) => {
            DETAIL.with(|d| *d.borrow_mut() = f.detail);
            f.code
        }
    }
}

/// The static message of a status code (do not free). Unknown codes get
/// `"unknown status code"`.
///
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn usher_status_message(code: i32) -> *const c_char {
    codes::message(code).as_ptr()
}

/// 1 if trying the same call again later may succeed (`USHER_E_ALL_IN_USE`,
/// `USHER_E_UNREACHABLE`...), else 0.
///
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn usher_status_retryable(code: i32) -> i32 {
    i32::from(codes::retryable(code))
}

/// Copies the detail text of the last failed usher call on this thread into `buf`
/// (`len` bytes, NUL-terminated). Returns `USHER_E_BUFFER_TOO_SMALL` if it was truncated.
/// A successful call does not clear it.
///
/// Thread-safe (the detail is per thread).
///
/// # Safety
/// `buf` is valid for writing `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_last_error_detail(buf: *mut c_char, len: usize) -> i32 {
    let text = DETAIL.with(|d| d.borrow().clone());
    // SAFETY: the caller guarantees `buf` holds `len` bytes.
    let code = entry(|| unsafe { copy_out(&text, buf, len) });
    // Reporting on the detail must not replace it.
    DETAIL.with(|d| *d.borrow_mut() = text);
    code
}
