//! Arguments from C: borrowed NUL-terminated strings, out-pointers, and text copied into
//! the caller's buffer. A bad one is `USHER_E_INVALID_ARGUMENT`.

use std::ffi::{CStr, c_char};

use crate::codes::{Failure, USHER_E_BUFFER_TOO_SMALL, USHER_E_INVALID_ARGUMENT};

pub(crate) fn invalid(what: &str) -> Failure {
    Failure::new(USHER_E_INVALID_ARGUMENT, what.to_string())
}

/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller guarantees a NUL-terminated string that outlives the call.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(Some)
        .map_err(|_| invalid(&format!("{name} is not valid UTF-8")))
}

/// # Safety
/// `p` is NULL or a valid pointer to `T` for the call (and for writing if `out`).
pub(crate) unsafe fn out_arg<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: the caller guarantees that a non-null `p` is valid and unaliased.
    unsafe { p.as_mut() }.ok_or_else(|| invalid(&format!("{name} is NULL")))
}

/// Copies `text` into `buf` (`len` bytes), NUL-terminated, truncating if needed.
///
/// # Safety
/// `buf` is valid for writing `len` bytes.
pub(crate) unsafe fn copy_out(text: &str, buf: *mut c_char, len: usize) -> Result<(), Failure> {
    if buf.is_null() || len == 0 {
        return Err(invalid("buffer is NULL or empty"));
    }
    let n = text.len().min(len - 1);
    // SAFETY: `buf` holds `len` bytes, `n + 1 <= len`, and `text` does not overlap it.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
    if n < text.len() {
        return Err(Failure::new(
            USHER_E_BUFFER_TOO_SMALL,
            format!("{} bytes needed", text.len() + 1),
        ));
    }
    Ok(())
}
