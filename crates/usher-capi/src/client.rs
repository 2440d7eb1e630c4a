//! The client handle: creating it, its options (fixed once it connects), the event
//! callback, and connecting (its runtime, its event thread, its connection events).

use std::collections::HashSet;
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use usher_client::ClientConfig;

use crate::abi::*;
use crate::args::{invalid, out_arg, str_arg};
use crate::boundary::{entry, lock};
use crate::codes::*;
use crate::events::{Callback, Events, not_reentrant};

/// A license client (opaque). Created by `usher_client_new`, freed by `usher_client_free`.
pub struct UsherClient {
    pid: u32,
    pub(crate) events: Arc<Events>,
    pub(crate) state: Mutex<ClientState>,
}

pub(crate) struct ClientState {
    config: ClientConfig,
    manual: bool,
    pub(crate) connected: Option<Arc<Connected>>,
}

/// What exists once the client has connected.
pub(crate) struct Connected {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) client: usher_client::Client,
    /// The process that connected (see `fork()`).
    pid: u32,
    pub(crate) manual: bool,
    pub(crate) verified: bool,
    /// Addresses of the live license handles, which `usher_client_free` frees.
    pub(crate) licenses: Mutex<HashSet<usize>>,
    pub(crate) event_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// # Safety
/// `client` is NULL or a live pointer from `usher_client_new`.
pub(crate) unsafe fn client_ref<'a>(
    client: *const UsherClient,
) -> Result<&'a UsherClient, Failure> {
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

impl UsherClient {
    /// The connected state, connecting first if need be.
    pub(crate) fn connect(&self) -> Result<Arc<Connected>, Failure> {
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

impl Connected {
    /// False in a child after fork(): the runtime belongs to the parent.
    pub(crate) fn runtime_is_ours(&self) -> bool {
        self.pid == std::process::id()
    }
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
