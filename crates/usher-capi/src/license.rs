//! Checking seats out and in, and the license handle: its status (polled, never
//! blocking) and what the grant says (lease id, expiry, count, server, version,
//! statement).

use std::ffi::c_char;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use usher_client::QueueWait;

use crate::abi::*;
use crate::args::{copy_out, invalid, out_arg, str_arg};
use crate::boundary::{entry, lock};
use crate::client::{Connected, UsherClient, client_ref};
use crate::codes::*;
use crate::events::{self, Events, not_reentrant};

/// Seats checked out (or queued for) (opaque). Freed by `usher_checkin` or by
/// `usher_client_free`.
pub struct UsherLicense {
    connected: Arc<Connected>,
    slot: Arc<Mutex<Slot>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

enum Slot {
    Queued,
    Granted(usher_client::License),
    Failed(Failure),
    CheckedIn,
}

/// # Safety
/// `lic` is NULL or a live pointer from `usher_checkout`.
unsafe fn license_ref<'a>(lic: *const UsherLicense) -> Result<&'a UsherLicense, Failure> {
    // SAFETY: the caller guarantees a live license or NULL.
    unsafe { lic.as_ref() }.ok_or_else(|| invalid("license is NULL"))
}

/// Watches a granted license for its loss and reports it as an event.
fn watch_loss(runtime: &tokio::runtime::Handle, events: Arc<Events>, lic: &usher_client::License) {
    let loss = lic.loss_watch();
    let lease_id = lic.lease_id();
    runtime.spawn(async move {
        // `None`: checked in without a loss.
        if let Some(reason) = loss.lost().await {
            events.push(USHER_EVENT_LICENSE_LOST, lease_id, &reason.to_string());
        }
    });
}

/// Checks out `count` seats of `feature` at `version` or newer (NULL or empty: any).
/// `flags` is `USHER_CHECKOUT_NOWAIT`, `_WAIT` (block in the queue for at most
/// `timeout_ms`, or `USHER_WAIT_FOREVER`) or `_QUEUE` (return at once with a license whose
/// status is `USHER_STATUS_QUEUED` until granted). On success `*out` is the license; free
/// it with `usher_checkin`. Blocking (connects first if need be).
///
/// Thread-safe.
///
/// # Safety
/// `client` is a live client, the strings NUL-terminated, `out` valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_checkout(
    client: *mut UsherClient,
    feature: *const c_char,
    version: *const c_char,
    count: u32,
    flags: i32,
    timeout_ms: i64,
    out: *mut *mut UsherLicense,
) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees every pointer.
        let (client, feature, version, out) = unsafe {
            (
                client_ref(client)?,
                str_arg(feature, "feature")?,
                str_arg(version, "version")?,
                out_arg(out, "out")?,
            )
        };
        *out = std::ptr::null_mut();
        let feature = feature
            .filter(|f| !f.is_empty())
            .ok_or_else(|| invalid("feature is NULL or empty"))?
            .to_string();
        let version = version.unwrap_or("").to_string();
        if count == 0 {
            return Err(invalid("count is 0"));
        }
        let wait = match (flags, timeout_ms) {
            (USHER_CHECKOUT_NOWAIT, _) => QueueWait::No,
            (USHER_CHECKOUT_WAIT | USHER_CHECKOUT_QUEUE, USHER_WAIT_FOREVER) => {
                QueueWait::Indefinitely
            }
            (USHER_CHECKOUT_WAIT | USHER_CHECKOUT_QUEUE, ms) if ms >= 0 => {
                QueueWait::For(Duration::from_millis(ms as u64))
            }
            (USHER_CHECKOUT_WAIT | USHER_CHECKOUT_QUEUE, _) => {
                return Err(invalid("timeout_ms is negative (USHER_WAIT_FOREVER is -1)"));
            }
            _ => {
                return Err(Failure::new(
                    USHER_E_INVALID_OPTION,
                    format!("{flags} is not a checkout flag"),
                ));
            }
        };
        not_reentrant()?;
        let connected = client.connect()?;
        let slot = Arc::new(Mutex::new(Slot::Queued));
        let mut task = None;
        let c = connected.client.clone();
        if flags == USHER_CHECKOUT_QUEUE {
            let (events, slot2) = (client.events.clone(), slot.clone());
            let handle = connected.runtime.handle().clone();
            task = Some(connected.runtime.spawn(async move {
                let result = c
                    .checkout(&feature)
                    .version(&version)
                    .count(count)
                    .wait(wait)
                    .await;
                let mut s = lock(&slot2);
                if matches!(*s, Slot::CheckedIn) {
                    return; // dropping a grant here checks it in
                }
                *s = match result {
                    Ok(lic) => {
                        events.push(USHER_EVENT_LICENSE_GRANTED, lic.lease_id(), "granted");
                        watch_loss(&handle, events.clone(), &lic);
                        Slot::Granted(lic)
                    }
                    Err(e) => Slot::Failed(e.into()),
                };
            }));
        } else {
            let lic = connected.runtime.block_on(
                c.checkout(&feature)
                    .version(&version)
                    .count(count)
                    .wait(wait)
                    .send(),
            )?;
            watch_loss(connected.runtime.handle(), client.events.clone(), &lic);
            *lock(&slot) = Slot::Granted(lic);
        }
        let license = Box::into_raw(Box::new(UsherLicense {
            connected: connected.clone(),
            slot,
            task,
        }));
        lock(&connected.licenses).insert(license as usize);
        *out = license;
        Ok(())
    })
}

/// The license's status, without blocking or touching the network: `*status` is one of
/// `USHER_STATUS_*`. For `USHER_STATUS_DENIED` the return value is the code of the
/// failure (with its detail), else `USHER_OK`. For applications that cannot take
/// callbacks, poll this. (In manual heartbeat mode it changes only during usher calls.)
///
/// Thread-safe.
///
/// # Safety
/// `lic` is a live license, `status` valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_license_status(lic: *const UsherLicense, status: *mut i32) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees both pointers.
        let (lic, status) = unsafe { (license_ref(lic)?, out_arg(status, "status")?) };
        let slot = lock(&lic.slot);
        *status = match &*slot {
            Slot::Queued => USHER_STATUS_QUEUED,
            Slot::Granted(l) if l.lost_reason().is_some() => USHER_STATUS_LOST,
            Slot::Granted(_) if !lic.connected.client.is_connected() => USHER_STATUS_RECONNECTING,
            Slot::Granted(_) => USHER_STATUS_GRANTED,
            Slot::Failed(f) => {
                *status = USHER_STATUS_DENIED;
                return Err(Failure::new(f.code, f.detail.clone()));
            }
            Slot::CheckedIn => return Err(invalid("license already checked in")),
        };
        Ok(())
    })
}

/// Runs `f` on the granted license.
///
/// # Safety
/// `lic` is a live license.
unsafe fn granted(
    lic: *const UsherLicense,
    f: impl FnOnce(&usher_client::License, &Connected) -> Result<(), Failure>,
) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees a live license.
        let lic = unsafe { license_ref(lic)? };
        match &*lock(&lic.slot) {
            Slot::Granted(l) => f(l, &lic.connected),
            Slot::Failed(e) => Err(Failure::new(USHER_E_NOT_GRANTED, e.detail.clone())),
            _ => Err(Failure::new(
                USHER_E_NOT_GRANTED,
                "the checkout is still queued",
            )),
        }
    })
}

/// The lease id (as administrators see it in `usher status` and remove it by).
/// `USHER_E_NOT_GRANTED` while queued.
///
/// Thread-safe.
///
/// # Safety
/// `lic` is a live license, `out` valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_license_lease_id(lic: *const UsherLicense, out: *mut u64) -> i32 {
    // SAFETY: the caller guarantees both pointers.
    unsafe {
        granted(lic, |l, _| {
            *out_arg(out, "out")? = l.lease_id();
            Ok(())
        })
    }
}

/// When the entitlement behind the seats expires, in seconds since 1970 (0: permanent).
///
/// Thread-safe.
///
/// # Safety
/// `lic` is a live license, `out` valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_license_expiry(lic: *const UsherLicense, out: *mut i64) -> i32 {
    // SAFETY: the caller guarantees both pointers.
    unsafe {
        granted(lic, |l, _| {
            *out_arg(out, "out")? = l
                .expires()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            Ok(())
        })
    }
}

/// Seats held.
///
/// Thread-safe.
///
/// # Safety
/// `lic` is a live license, `out` valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_license_count(lic: *const UsherLicense, out: *mut u32) -> i32 {
    // SAFETY: the caller guarantees both pointers.
    unsafe {
        granted(lic, |l, _| {
            *out_arg(out, "out")? = l.count();
            Ok(())
        })
    }
}

/// 1 if the grant was verified against a vendor key (`USHER_OPT_VENDOR_KEY`: a grant
/// that fails verification is never returned), 0 if no key was set.
///
/// Thread-safe.
///
/// # Safety
/// `lic` is a live license, `out` valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_license_verified(lic: *const UsherLicense, out: *mut i32) -> i32 {
    // SAFETY: the caller guarantees both pointers.
    unsafe {
        granted(lic, |_, c| {
            *out_arg(out, "out")? = i32::from(c.verified);
            Ok(())
        })
    }
}

/// The server that granted the seats (`port@host`), copied into `buf`.
///
/// Thread-safe.
///
/// # Safety
/// `lic` is a live license, `buf` valid for writing `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_license_server(
    lic: *const UsherLicense,
    buf: *mut c_char,
    len: usize,
) -> i32 {
    // SAFETY: the caller guarantees both pointers.
    unsafe {
        granted(lic, |_, c| {
            copy_out(&c.client.session_info().server.to_string(), buf, len)
        })
    }
}

/// The version of the pool the seats came from, copied into `buf`.
///
/// Thread-safe.
///
/// # Safety
/// `lic` is a live license, `buf` valid for writing `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_license_version(
    lic: *const UsherLicense,
    buf: *mut c_char,
    len: usize,
) -> i32 {
    // SAFETY: the caller guarantees both pointers.
    unsafe { granted(lic, |l, _| copy_out(l.version(), buf, len)) }
}

/// The grant's statement signed by the server, as text, copied into `buf`: present when
/// the grant was verified against a vendor key (`USHER_OPT_VENDOR_KEY`), an empty string
/// otherwise. Another program (a helper the application starts, say) can check it against
/// the vendor key it was built with. `USHER_E_NOT_GRANTED` while queued.
///
/// Thread-safe.
///
/// # Safety
/// `lic` is a live license, `buf` valid for writing `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_license_statement(
    lic: *const UsherLicense,
    buf: *mut c_char,
    len: usize,
) -> i32 {
    // SAFETY: the caller guarantees both pointers.
    unsafe { granted(lic, |l, _| copy_out(l.statement().unwrap_or(""), buf, len)) }
}

/// Checks the seats in (or withdraws a queued checkout) and frees the license. Waits
/// (bounded by the request timeout) until the server has them back, except inside a
/// callback, where it only queues the checkin. The handle is invalid afterwards.
///
/// Not thread-safe for the same license: no other call may use `lic` concurrently.
///
/// # Safety
/// `lic` is NULL (nothing happens) or a live license.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_checkin(lic: *mut UsherLicense) -> i32 {
    entry(|| {
        if lic.is_null() {
            return Ok(());
        }
        // SAFETY: a live license was created by `Box::into_raw` in `usher_checkout` and
        // is removed from its client's registry here, so it is freed exactly once.
        let license = unsafe { Box::from_raw(lic) };
        let connected = license.connected.clone();
        lock(&connected.licenses).remove(&(lic as usize));
        if connected.runtime_is_ours() {
            let was_granted = release(*license);
            if was_granted && !events::in_callback() {
                // The checkin goes out before the heartbeat, so its answer is in when the
                // acknowledgement is.
                connected.runtime.block_on(connected.client.heartbeat())?;
            }
        } else {
            // After fork() the runtime's threads are gone; leak rather than hang.
            std::mem::forget(license);
            return Err(Failure::new(
                USHER_E_FORKED,
                "license of the parent process",
            ));
        }
        Ok(())
    })
}

/// Checks a license in: returns whether it held seats.
pub(crate) fn release(license: UsherLicense) -> bool {
    if let Some(task) = &license.task {
        task.abort();
    }
    let old = std::mem::replace(&mut *lock(&license.slot), Slot::CheckedIn);
    // Dropping the client's license sends the checkin.
    matches!(old, Slot::Granted(_))
}
