//! Events for the application's callback: queued by the library's tasks, delivered on the
//! event thread (automatic mode) or inside `usher_heartbeat` (manual mode).

use std::collections::VecDeque;
use std::ffi::{CString, c_char, c_void};
use std::sync::{Condvar, Mutex};

use crate::boundary::lock;
use crate::codes::{Failure, USHER_E_REENTRANT};

thread_local! {
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside an usher callback (blocking calls are refused there).
pub fn in_callback() -> bool {
    IN_CALLBACK.with(|c| c.get())
}

pub(crate) fn not_reentrant() -> Result<(), Failure> {
    if in_callback() {
        return Err(Failure::new(
            USHER_E_REENTRANT,
            "blocking usher functions cannot be called from an usher callback",
        ));
    }
    Ok(())
}

/// The application's callback and its user data.
#[derive(Clone, Copy)]
pub struct Callback {
    /// The function.
    pub f: unsafe extern "C" fn(i32, u64, *const c_char, *mut c_void),
    /// Passed back as given.
    pub user_data: *mut c_void,
}

// SAFETY: the header documents that the callback runs on the library's event thread and
// that `user_data` must be usable there; the library only passes the pointer back.
unsafe impl Send for Callback {}

struct Event {
    kind: i32,
    lease_id: u64,
    detail: CString,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Event>,
    stopped: bool,
}

/// The pending events of one client.
#[derive(Default)]
pub struct Events {
    queue: Mutex<Queue>,
    ready: Condvar,
    callback: Mutex<Option<Callback>>,
}

impl Events {
    /// Queues an event (kept only while a callback is set).
    pub fn push(&self, kind: i32, lease_id: u64, detail: &str) {
        if lock(&self.callback).is_none() {
            return;
        }
        let detail = CString::new(detail.replace('\0', " ")).unwrap_or_default();
        lock(&self.queue).events.push_back(Event {
            kind,
            lease_id,
            detail,
        });
        self.ready.notify_all();
    }

    /// Sets or removes the callback.
    pub fn set_callback(&self, callback: Option<Callback>) {
        *lock(&self.callback) = callback;
    }

    /// The event thread: delivers events until stopped.
    pub fn run(&self) {
        loop {
            let event = {
                let mut q = lock(&self.queue);
                loop {
                    if q.stopped {
                        return;
                    }
                    if let Some(e) = q.events.pop_front() {
                        break e;
                    }
                    q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            self.deliver(&event);
        }
    }

    /// Delivers every pending event on this thread (manual mode).
    pub fn deliver_pending(&self) {
        loop {
            let Some(event) = lock(&self.queue).events.pop_front() else {
                return;
            };
            self.deliver(&event);
        }
    }

    /// Stops the event thread.
    pub fn stop(&self) {
        lock(&self.queue).stopped = true;
        self.ready.notify_all();
    }

    fn deliver(&self, event: &Event) {
        let Some(cb) = *lock(&self.callback) else {
            return;
        };
        IN_CALLBACK.with(|c| c.set(true));
        // SAFETY: the application registered `f` as callable with `user_data` until it
        // is replaced or the client freed (`usher_client_set_callback`); `detail` lives
        // until after the call.
        unsafe {
            (cb.f)(
                event.kind,
                event.lease_id,
                event.detail.as_ptr(),
                cb.user_data,
            )
        };
        IN_CALLBACK.with(|c| c.set(false));
    }
}
