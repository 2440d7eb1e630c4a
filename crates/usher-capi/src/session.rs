//! The rest of a client's session: borrowing seats for use without a server, heartbeats
//! (which manual heartbeat mode relies on), and its end (`usher_client_free`).

use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

use crate::args::{invalid, out_arg, str_arg};
use crate::boundary::{entry, lock};
use crate::client::{UsherClient, client_ref};
use crate::codes::*;
use crate::events::not_reentrant;
use crate::license::{UsherLicense, release};

/// Borrows `count` seats of `feature` for `seconds` for use on this host without a
/// server, and saves the signed token in `store_dir` (NULL: the user's default,
/// `~/.local/share/usher/borrow`). Blocking.
///
/// Thread-safe.
///
/// # Safety
/// `client` is a live client, the strings NUL-terminated or NULL where allowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_borrow(
    client: *mut UsherClient,
    feature: *const c_char,
    version: *const c_char,
    count: u32,
    seconds: u64,
    store_dir: *const c_char,
) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees every pointer.
        let (client, feature, version, dir) = unsafe {
            (
                client_ref(client)?,
                str_arg(feature, "feature")?,
                str_arg(version, "version")?,
                str_arg(store_dir, "store_dir")?,
            )
        };
        let feature = feature.ok_or_else(|| invalid("feature is NULL"))?;
        if count == 0 || seconds == 0 {
            return Err(invalid("count and seconds must be positive"));
        }
        not_reentrant()?;
        let connected = client.connect()?;
        let token = connected.runtime.block_on(
            connected
                .client
                .borrow(feature, Duration::from_secs(seconds))
                .version(version.unwrap_or(""))
                .count(count)
                .send(),
        )?;
        let store = match dir {
            Some(d) => usher_client::borrow::BorrowStore::at(d),
            None => usher_client::borrow::BorrowStore::user_default(),
        };
        store
            .save(&token)
            .map(drop)
            .map_err(|e| Failure::new(USHER_E_BORROW_STORE, e.to_string()))
    })
}

/// Manual heartbeat mode: sends a heartbeat, lets the library do its pending work
/// (reconnecting, checkins, queued grants) and delivers pending events to the callback
/// on this thread. Call it at least every `usher_heartbeat_interval_ms`. In automatic
/// mode it sends an extra heartbeat (harmless). Blocking (one round trip). Connects
/// first if need be.
///
/// Thread-safe.
///
/// # Safety
/// `client` is a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_heartbeat(client: *mut UsherClient) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees a live client.
        let client = unsafe { client_ref(client)? };
        not_reentrant()?;
        let connected = client.connect()?;
        let result = connected.runtime.block_on(connected.client.heartbeat());
        if connected.manual {
            client.events.deliver_pending();
        }
        result.map_err(Failure::from)
    })
}

/// The heartbeat interval the server asked for, in milliseconds (connects first if need
/// be).
///
/// Thread-safe.
///
/// # Safety
/// `client` is a live client, `out` valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_heartbeat_interval_ms(
    client: *mut UsherClient,
    out: *mut u64,
) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees both pointers.
        let (client, out) = unsafe { (client_ref(client)?, out_arg(out, "out")?) };
        let connected = client.connect()?;
        *out = connected
            .client
            .session_info()
            .heartbeat_interval
            .as_millis() as u64;
        Ok(())
    })
}

/// Checks in every license of the client, frees them (their handles become invalid),
/// ends the session and joins the library's threads, then frees the client. NULL: no-op.
/// In a child process after `fork()` it frees nothing (the parent owns the session) and
/// returns `USHER_E_FORKED`.
///
/// Not thread-safe for the same client: no other call may use `client` (or its
/// licenses) concurrently, and it must not be called from a callback.
///
/// # Safety
/// `client` is NULL or a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_client_free(client: *mut UsherClient) -> i32 {
    entry(|| {
        if client.is_null() {
            return Ok(());
        }
        not_reentrant()?;
        // SAFETY: the caller guarantees a live client.
        if unsafe { client_ref(client) }.is_err_and(|f| f.code == USHER_E_FORKED) {
            return Err(Failure::new(
                USHER_E_FORKED,
                "the client belongs to the parent process; nothing was freed",
            ));
        }
        // SAFETY: a live client was created by `Box::into_raw` in `usher_client_new`.
        let client = unsafe { Box::from_raw(client) };
        let connected = lock(&client.state).connected.take();
        if let Some(connected) = connected {
            let handles: Vec<usize> = lock(&connected.licenses).drain().collect();
            for handle in handles {
                // SAFETY: every address in the registry is a live license created by
                // `Box::into_raw` and not yet checked in (checkin removes it first).
                let license = unsafe { Box::from_raw(handle as *mut UsherLicense) };
                release(*license);
            }
            let thread = lock(&connected.event_thread).take();
            match Arc::try_unwrap(connected) {
                Ok(c) => {
                    // The goodbye releases every seat the session still holds.
                    c.runtime.block_on(c.client.clone().close());
                    drop(c.client);
                    // Dropping the runtime joins its threads.
                    drop(c.runtime);
                }
                Err(_) => {
                    return Err(Failure::new(
                        USHER_E_INTERNAL,
                        "the client is still in use by another thread",
                    ));
                }
            }
            client.events.stop();
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
        Ok(())
    })
}
