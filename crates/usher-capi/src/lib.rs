//! The usher C ABI: check out license seats from C (and C++, Fortran, Java, MATLAB...).
//!
//! The header `include/usher.h` is generated from this crate by cbindgen and committed;
//! a test regenerates it and fails on any difference. docs/c-api.md is the guide.
//!
//! **ABI Invariants:**
//! - No panic crosses the boundary: every entry point runs inside [`entry`], which turns a
//!   panic into `USHER_E_INTERNAL`. The library never exits or aborts the host.
//! - Strings in are borrowed, NUL-terminated UTF-8; strings out are static or copied
//!   into the caller's buffer, so the caller frees only what it allocated.
//! - Every enum-like argument is an `int32_t` checked against the values defined;
//!   anything else is `USHER_E_INVALID_OPTION`, never undefined behaviour.
//! - A client remembers the process that created it; used after a `fork()` in the child,
//!   every call returns `USHER_E_FORKED` (the child has none of its threads).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod codes;
mod events;

use std::collections::HashSet;
use std::ffi::{CStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use codes::*;
use events::{Callback, Events};
use usher_client::{ClientConfig, QueueWait};

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

/// A license client (opaque). Created by `usher_client_new`, freed by `usher_client_free`.
pub struct UsherClient {
    pid: u32,
    events: Arc<Events>,
    state: Mutex<ClientState>,
}

struct ClientState {
    config: ClientConfig,
    manual: bool,
    connected: Option<Arc<Connected>>,
}

/// What exists once the client has connected.
struct Connected {
    runtime: tokio::runtime::Runtime,
    client: usher_client::Client,
    /// The process that connected (see `fork()`).
    pid: u32,
    manual: bool,
    verified: bool,
    /// Addresses of the live license handles, which `usher_client_free` frees.
    licenses: Mutex<HashSet<usize>>,
    event_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

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

thread_local! {
    static DETAIL: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic caught at the boundary may poison a lock; the data stays consistent
    // because every critical section below is a plain assignment or lookup.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs an entry point: catches panics, records the detail of a failure for this thread.
fn entry(f: impl FnOnce() -> Result<(), Failure>) -> i32 {
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

fn invalid(what: &str) -> Failure {
    Failure::new(USHER_E_INVALID_ARGUMENT, what.to_string())
}

/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Failure> {
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
unsafe fn out_arg<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: the caller guarantees that a non-null `p` is valid and unaliased.
    unsafe { p.as_mut() }.ok_or_else(|| invalid(&format!("{name} is NULL")))
}

/// Copies `text` into `buf` (`len` bytes), NUL-terminated, truncating if needed.
///
/// # Safety
/// `buf` is valid for writing `len` bytes.
unsafe fn copy_out(text: &str, buf: *mut c_char, len: usize) -> Result<(), Failure> {
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

/// # Safety
/// `client` is NULL or a live pointer from `usher_client_new`.
unsafe fn client_ref<'a>(client: *const UsherClient) -> Result<&'a UsherClient, Failure> {
    // SAFETY: the caller guarantees a live client or NULL.
    let c = unsafe { client.as_ref() }.ok_or_else(|| invalid("client is NULL"))?;
    if c.pid != std::process::id() {
        return Err(Failure::new(
            USHER_E_FORKED,
            "this client was created by the parent process before fork(); create a new one",
        ));
    }
    Ok(c)
}

/// # Safety
/// `lic` is NULL or a live pointer from `usher_checkout`.
unsafe fn license_ref<'a>(lic: *const UsherLicense) -> Result<&'a UsherLicense, Failure> {
    // SAFETY: the caller guarantees a live license or NULL.
    unsafe { lic.as_ref() }.ok_or_else(|| invalid("license is NULL"))
}

fn not_reentrant() -> Result<(), Failure> {
    if events::in_callback() {
        return Err(Failure::new(
            USHER_E_REENTRANT,
            "blocking usher functions cannot be called from an usher callback",
        ));
    }
    Ok(())
}

impl UsherClient {
    /// The connected state, connecting first if need be.
    fn connect(&self) -> Result<Arc<Connected>, Failure> {
        let mut state = lock(&self.state);
        if let Some(c) = &state.connected {
            return Ok(c.clone());
        }
        not_reentrant()?;
        let runtime = if state.manual {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("usher-client")
                .enable_all()
                .build()
        }
        .map_err(|e| Failure::new(USHER_E_INTERNAL, format!("cannot start a runtime: {e}")))?;
        let config = state.config.clone();
        let verified = !config.vendor_keys.is_empty();
        let client = runtime.block_on(usher_client::Client::connect(config))?;
        // Connection events, from the client's connection state.
        let mut up = client.connection_watch();
        let events = self.events.clone();
        runtime.spawn(async move {
            while let Some(connected) = up.changed().await {
                let event = if connected {
                    (USHER_EVENT_RECONNECTED, "reconnected")
                } else {
                    (USHER_EVENT_CONNECTION_LOST, "connection lost; reconnecting")
                };
                events.push(event.0, 0, event.1);
            }
        });
        let event_thread = (!state.manual).then(|| {
            let events = self.events.clone();
            std::thread::Builder::new()
                .name("usher-events".into())
                .spawn(move || events.run())
        });
        let event_thread = match event_thread {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                return Err(Failure::new(
                    USHER_E_INTERNAL,
                    format!("cannot start the event thread: {e}"),
                ));
            }
            None => None,
        };
        let connected = Arc::new(Connected {
            runtime,
            client,
            pid: self.pid,
            manual: state.manual,
            verified,
            licenses: Mutex::default(),
            event_thread: Mutex::new(event_thread),
        });
        state.connected = Some(connected.clone());
        Ok(connected)
    }

    /// Fails if the client has connected (options are fixed from then on).
    fn configure(
        &self,
        f: impl FnOnce(&mut ClientState) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let mut state = lock(&self.state);
        if state.connected.is_some() {
            return Err(Failure::new(
                USHER_E_ALREADY_CONNECTED,
                "options can only be set before the first checkout or usher_client_connect",
            ));
        }
        f(&mut state)
    }
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

/// Creates a client for `servers` (`"1648@host1,1648@host2"`; NULL or empty: the
/// `USHER_LICENSE` environment variable, else discovery on the local network). It does
/// not connect: set options first; the first checkout (or `usher_client_connect`)
/// connects. The transport environment (`USHER_SERVER_ID`, `USHER_INSECURE_PLAINTEXT`,
/// `USHER_DETACH_AFTER`) is read here.
///
/// Thread-safe. The client may be used from several threads at once.
///
/// # Safety
/// `servers` is NULL or a NUL-terminated string; `out` is valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_client_new(
    servers: *const c_char,
    out: *mut *mut UsherClient,
) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees both pointers.
        let (servers, out) = unsafe { (str_arg(servers, "servers")?, out_arg(out, "out")?) };
        *out = std::ptr::null_mut();
        let mut config = match servers.filter(|s| !s.trim().is_empty()) {
            Some(list) => {
                let mut c = ClientConfig::new(
                    usher_client::parse_servers(list)
                        .map_err(|e| Failure::new(USHER_E_BAD_SERVER_LIST, e.to_string()))?,
                );
                c.transport_from_env();
                c
            }
            None => ClientConfig::from_env()
                .map_err(|e| Failure::new(USHER_E_BAD_SERVER_LIST, e.to_string()))?,
        };
        config.identity.program_version = String::new();
        let client = UsherClient {
            pid: std::process::id(),
            events: Arc::new(Events::default()),
            state: Mutex::new(ClientState {
                config,
                manual: false,
                connected: None,
            }),
        };
        *out = Box::into_raw(Box::new(client));
        Ok(())
    })
}

/// Sets an integer option (`USHER_OPT_*_MS`, `USHER_OPT_MANUAL_HEARTBEAT`...) before the
/// client connects.
///
/// Thread-safe.
///
/// # Safety
/// `client` is a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_client_set_int(
    client: *mut UsherClient,
    option: i32,
    value: i64,
) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees a live client.
        let client = unsafe { client_ref(client)? };
        let ms = || {
            u64::try_from(value)
                .ok()
                .filter(|v| *v > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| invalid("a timeout must be a positive number of milliseconds"))
        };
        let flag = || match value {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(invalid("a switch is 0 or 1")),
        };
        if !matches!(
            option,
            USHER_OPT_CONNECT_TIMEOUT_MS
                | USHER_OPT_REQUEST_TIMEOUT_MS
                | USHER_OPT_MANUAL_HEARTBEAT
                | USHER_OPT_INSECURE_PLAINTEXT
                | USHER_OPT_DETACH_AFTER_S
        ) {
            return Err(Failure::new(
                USHER_E_INVALID_OPTION,
                format!("{option} is not an integer option"),
            ));
        }
        client.configure(|s| {
            match option {
                USHER_OPT_CONNECT_TIMEOUT_MS => s.config.connect_timeout = ms()?,
                USHER_OPT_REQUEST_TIMEOUT_MS => s.config.request_timeout = ms()?,
                USHER_OPT_MANUAL_HEARTBEAT => s.manual = flag()?,
                USHER_OPT_INSECURE_PLAINTEXT => s.config.insecure_plaintext = flag()?,
                USHER_OPT_DETACH_AFTER_S => {
                    let secs = u64::try_from(value).map_err(|_| invalid("negative seconds"))?;
                    s.config.detach_after = (secs > 0).then(|| Duration::from_secs(secs));
                }
                _ => {
                    return Err(Failure::new(
                        USHER_E_INVALID_OPTION,
                        format!("{option} is not an integer option"),
                    ));
                }
            }
            Ok(())
        })
    })
}

/// Sets a string option (`USHER_OPT_VENDOR_KEY`, `USHER_OPT_SERVER_ID`...) before the
/// client connects. The string is copied.
///
/// Thread-safe.
///
/// # Safety
/// `client` is a live client; `value` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_client_set_str(
    client: *mut UsherClient,
    option: i32,
    value: *const c_char,
) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees a live client and a string.
        let (client, value) = unsafe { (client_ref(client)?, str_arg(value, "value")?) };
        let value = value.ok_or_else(|| invalid("value is NULL"))?;
        if !(USHER_OPT_VENDOR_KEY..=USHER_OPT_PROGRAM_VERSION).contains(&option) {
            return Err(Failure::new(
                USHER_E_INVALID_OPTION,
                format!("{option} is not a string option"),
            ));
        }
        client.configure(|s| {
            match option {
                USHER_OPT_VENDOR_KEY => s.config.vendor_keys.push(
                    usher_license::VendorPublicKey::from_file_text(value)
                        .map_err(|e| Failure::new(USHER_E_BAD_VENDOR_KEY, e.to_string()))?,
                ),
                USHER_OPT_SERVER_ID => s
                    .config
                    .server_ids
                    .extend(usher_client::parse_server_ids(value)),
                USHER_OPT_PROGRAM => s.config.identity.program = value.to_string(),
                USHER_OPT_PROGRAM_VERSION => s.config.identity.program_version = value.to_string(),
                _ => {
                    return Err(Failure::new(
                        USHER_E_INVALID_OPTION,
                        format!("{option} is not a string option"),
                    ));
                }
            }
            Ok(())
        })
    })
}

/// Sets (or, with NULL, removes) the event callback. In automatic mode it is called on
/// the library's event thread; in manual heartbeat mode, from inside `usher_heartbeat` on
/// the caller's thread. Inside the callback, blocking usher functions return
/// `USHER_E_REENTRANT`; `usher_license_status`, the info functions and `usher_checkin`
/// work.
///
/// Thread-safe. `user_data` must be usable from the thread the callback runs on.
///
/// # Safety
/// `client` is a live client; `callback`, if not NULL, stays callable with `user_data`
/// until it is replaced or the client is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_client_set_callback(
    client: *mut UsherClient,
    callback: UsherEventCallback,
    user_data: *mut c_void,
) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees a live client.
        let client = unsafe { client_ref(client)? };
        client
            .events
            .set_callback(callback.map(|f| Callback { f, user_data }));
        Ok(())
    })
}

/// Connects now (else the first checkout does). Blocking: at most the connect timeout
/// per server.
///
/// Thread-safe.
///
/// # Safety
/// `client` is a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usher_client_connect(client: *mut UsherClient) -> i32 {
    entry(|| {
        // SAFETY: the caller guarantees a live client.
        let client = unsafe { client_ref(client)? };
        client.connect().map(drop)
    })
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
fn release(license: UsherLicense) -> bool {
    if let Some(task) = &license.task {
        task.abort();
    }
    let old = std::mem::replace(&mut *lock(&license.slot), Slot::CheckedIn);
    // Dropping the client's license sends the checkin.
    matches!(old, Slot::Granted(_))
}

impl Connected {
    /// False in a child after fork(): the runtime belongs to the parent.
    fn runtime_is_ours(&self) -> bool {
        self.pid == std::process::id()
    }
}

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
