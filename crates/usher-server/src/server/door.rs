//! The door: new client connections are taken, judged and made to wait for their
//! opening on a thread of their own at a low CPU priority, and only then handed to the
//! runtime that serves established connections.
//!
//! A connection flood costs CPU in `accept`, in the first reads, in closing what is
//! refused, and in the kernel's loopback and TCP work done on the caller's behalf. On the
//! runtime's workers, that work takes turns with every established session's requests and
//! so slows them as much as it slows itself. Here it runs at nice 10, which weighs about a
//! tenth of a normal thread in the kernel's fair scheduler: while both cores are busy,
//! established clients are served first and new connections queue in the kernel's backlog
//! (a flood then slows itself); on an idle server the door takes as much CPU as it needs.
//!
//! What the door does for each new connection, in order: the connection limit, the
//! allow-list, the per-address cap and rate ([`crate::access::Gate`]), a look at the bytes
//! already sent ([`crate::tls::judge`]), a handshake slot (`max_handshakes`), and a wait
//! until the whole opening (the first TLS record or frame) has arrived
//! ([`crate::tls::opening`]), all within the handshake timeout. A connection refused is
//! counted, logged (rate-limited) and closed here, or told why in answer to its Hello when
//! the protocol allows (see [`Refusing`]). One that passes is an [`Arrival`], its socket
//! taken off this thread's runtime and sent to the accept loop, which registers it with
//! the serving runtime for the TLS handshake and the client protocol.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::access::{Admitted, Gate, Refusal};
use crate::config::Config;
use crate::connection;
use crate::metrics::{Metrics, RejectReason};

/// The door thread's nice value (see the module's documentation): low enough that the
/// serving threads win the CPU while both cores are busy, high enough that new
/// connections are still taken at a steady rate on a server busy with grants.
const DOOR_NICE: i32 = 10;

/// Most connections judged and waiting to be taken by the accept loop; the door waits
/// (and new connections queue in the kernel) beyond that.
const ARRIVALS_QUEUED: usize = 256;

/// Most refused connections being told why at once (each costs a TLS handshake); beyond
/// that, refused connections are closed without a word (and counted, and logged).
const REFUSALS_IN_FLIGHT: usize = 64;

/// A new client connection that passed the door, with what it holds.
pub(super) struct Arrival {
    /// Off any runtime, non-blocking, its opening unread.
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
    /// When its TLS handshake and Hello must be done (the handshake timeout from
    /// `accept`).
    pub(super) deadline: tokio::time::Instant,
    /// Its place among the `max_handshakes` until its Hello is answered.
    pub(super) handshake: OwnedSemaphorePermit,
    /// Its place among the `max_connections` and its address's count: held for the
    /// connection's lifetime.
    pub(super) held: (OwnedSemaphorePermit, Admitted),
}

/// The running door: its arrivals and a way to close it.
pub(super) struct Door {
    pub(super) arrivals: mpsc::Receiver<Arrival>,
    /// Completes when the door's thread has ended, whether closed or failed.
    pub(super) gone: tokio::sync::oneshot::Receiver<Result<(), String>>,
    close: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Door {
    /// Opens the door on `listener` (taken off the calling runtime) with a thread of its
    /// own.
    pub(super) fn open(
        listener: TcpListener,
        config: &Config,
        metrics: Arc<Metrics>,
        tls: tokio_rustls::TlsAcceptor,
    ) -> std::io::Result<Door> {
        let listener = listener.into_std()?;
        let (tx, arrivals) = mpsc::channel(ARRIVALS_QUEUED);
        let (done, gone) = tokio::sync::oneshot::channel();
        let close = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let keeper = Keeper {
            config: config.clone(),
            metrics,
            tls,
            arrivals: tx,
            close: close.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("usherd-door".into())
            .spawn(move || {
                crate::background::lower_priority(DOOR_NICE);
                let run = std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        keeper.keep(&listener).await;
                        Ok::<(), std::io::Error>(())
                    })
                });
                let ended = match std::panic::catch_unwind(run) {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("the client listener failed: {e}")),
                    Err(panic) => Err(format!(
                        "the door thread panicked: {}",
                        crate::fatal::panic_text(&panic)
                    )),
                };
                let _ = done.send(ended);
            })?;
        Ok(Door {
            arrivals,
            gone,
            close,
            thread: Some(thread),
        })
    }

    /// Closes the door: no connection is taken any more, those still at the door are
    /// closed, and the listening socket is closed before this returns.
    pub(super) async fn close(mut self) {
        self.close.cancel();
        self.arrivals.close();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// What the door's thread runs with.
struct Keeper {
    config: Config,
    metrics: Arc<Metrics>,
    tls: tokio_rustls::TlsAcceptor,
    arrivals: mpsc::Sender<Arrival>,
    close: CancellationToken,
}

impl Keeper {
    /// Takes connections until the door is closed or the accept loop is gone.
    async fn keep(self, listener: &TcpListener) {
        let config = &self.config;
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let mut permit = None;
        let gate = Gate::new(config.allow.clone(), config.max_connections_per_ip)
            .with_rate(config.max_connection_rate_per_ip);
        // Connections still in their handshake (TLS and Hello), all addresses together.
        let handshaking = Arc::new(Semaphore::new(config.max_handshakes));
        let refusing = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
        let refusal = Refusing {
            slots: &refusing,
            tls: &self.tls,
            config,
            metrics: &self.metrics,
        };
        let judging = Judging {
            plaintext: config.insecure_plaintext,
            max_frame: config.max_frame_bytes,
            timeout: config.handshake_timeout,
        };
        // Out of descriptors, the loop would otherwise spin (see accept_backoff).
        let mut backoff = crate::accept_backoff::AcceptBackoff::new("client");
        // Connections waiting for their opening, and refusals being told why.
        let mut waiting = tokio::task::JoinSet::new();
        loop {
            while waiting.try_join_next().is_some() {}
            // The waiting connections' wake-ups run before the next connection is taken.
            tokio::task::yield_now().await;
            tokio::select! {
                _ = self.close.cancelled() => return,
                _ = self.arrivals.closed() => return,
                // Wait for room before accepting, so excess connections queue in the
                // kernel rather than costing memory here; while the server is full, a few
                // are still accepted, to be told so (see `Refusing`).
                p = limit.clone().acquire_owned(), if permit.is_none() => {
                    permit = Some(p.expect("the semaphore is never closed"));
                }
                accepted = listener.accept(),
                    if permit.is_some() || refusing.available_permits() > 0 => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            backoff.pause(&e).await;
                            continue;
                        }
                    };
                    backoff.succeeded();
                    // Room may have come free since the last permit was taken.
                    if permit.is_none() {
                        permit = limit.clone().try_acquire_owned().ok();
                    }
                    let contended = contended(&handshaking, config.max_handshakes);
                    let admitted = match &permit {
                        Some(_) => gate.admit(peer.ip(), contended),
                        None => Err(Refusal::ServerFull),
                    };
                    let admitted = match admitted {
                        Ok(a) => a,
                        Err(why) => {
                            refusal.refuse(stream, peer, why, &mut waiting);
                            continue;
                        }
                    };
                    // Junk already sent is refused here, for the price of one `recv`, not
                    // of a task, and before it can take a handshake slot.
                    let (plaintext, max_frame) = (judging.plaintext, judging.max_frame);
                    if let Err(refused) = crate::tls::judge(&stream, plaintext, max_frame) {
                        refused.count(&self.metrics, &peer);
                        continue;
                    }
                    let Ok(handshake) = handshaking.clone().try_acquire_owned() else {
                        drop(admitted);
                        refusal.refuse(stream, peer, Refusal::Handshakes, &mut waiting);
                        continue;
                    };
                    let entering = Entering {
                        stream,
                        peer,
                        deadline: tokio::time::Instant::now() + config.handshake_timeout,
                        handshake,
                        held: (permit.take().expect("admitted with a permit"), admitted),
                    };
                    let (metrics, arrivals) = (self.metrics.clone(), self.arrivals.clone());
                    waiting.spawn(async move {
                        if let Some(arrival) = entering.opened(judging, &metrics).await {
                            // Refused only when the server is stopping.
                            let _ = arrivals.send(arrival).await;
                        }
                    });
                }
            }
        }
    }
}

/// What an opening is judged by (from the configuration).
#[derive(Debug, Clone, Copy)]
struct Judging {
    plaintext: bool,
    max_frame: usize,
    timeout: std::time::Duration,
}

/// A connection admitted at the door, its opening not yet whole.
struct Entering {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    handshake: OwnedSemaphorePermit,
    held: (OwnedSemaphorePermit, Admitted),
}

impl Entering {
    /// Waits until the whole opening has arrived and judges it (see
    /// [`crate::tls::opening`]): the arrival to hand on, or `None` for a connection refused
    /// (counted and logged; a plaintext peer that began its Hello is told why at the
    /// handshake timeout).
    async fn opened(self, judging: Judging, metrics: &Metrics) -> Option<Arrival> {
        let Entering {
            mut stream,
            peer,
            deadline,
            handshake,
            held,
        } = self;
        let Judging {
            plaintext,
            max_frame,
            timeout,
        } = judging;
        let opening = crate::tls::opening(&stream, plaintext, max_frame);
        match tokio::time::timeout_at(deadline, opening).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                refused.count(metrics, &peer);
                return None;
            }
            Err(_) => {
                let detail = format!(
                    "no whole first TLS record or frame within the handshake timeout of \
                     {timeout:?}"
                );
                metrics.connection_rejected(RejectReason::HandshakeTimeout, &peer, &detail);
                if plaintext && crate::tls::began_in_plaintext(&stream) {
                    connection::tell_handshake_timeout(&mut stream, timeout).await;
                }
                return None;
            }
        }
        Some(Arrival {
            stream: stream.into_std().ok()?,
            peer,
            deadline,
            handshake,
            held,
        })
    }
}

/// Whether new connections compete for handshake slots: half of the `max` or more are in
/// use, so each address is held to its share of new connections.
fn contended(handshaking: &Semaphore, max: usize) -> bool {
    handshaking.available_permits() <= max / 2
}

/// What refusing a connection needs from the door.
struct Refusing<'a> {
    slots: &'a Arc<Semaphore>,
    tls: &'a tokio_rustls::TlsAcceptor,
    config: &'a Config,
    metrics: &'a Metrics,
}

impl Refusing<'_> {
    /// Counts and logs a refused connection and, unless the peer is outside the allow-list
    /// (which learns nothing), tells it why in answer to its Hello, in a task of its own
    /// (at most [`REFUSALS_IN_FLIGHT`] at once).
    fn refuse(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        why: Refusal,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        let config = self.config;
        let (reason, message) = match why {
            Refusal::NotAllowed => {
                let detail = "the address is not in the allow-list (told nothing)";
                self.metrics
                    .connection_rejected(RejectReason::NotAllowed, &peer, detail);
                return;
            }
            // Closed at once, before TLS: answering would cost what the limit saves.
            Refusal::AddressRate => {
                let detail = format!(
                    "the address opens new connections faster than {} a second \
                     (max_connection_rate_per_ip; closed, told nothing)",
                    config.max_connection_rate_per_ip
                );
                self.metrics
                    .connection_rejected(RejectReason::AddressRate, &peer, &detail);
                return;
            }
            Refusal::Handshakes => {
                let detail = format!(
                    "{} connections are already in their handshake (max_handshakes; \
                     closed, told nothing)",
                    config.max_handshakes
                );
                self.metrics
                    .connection_rejected(RejectReason::HandshakesLimit, &peer, &detail);
                return;
            }
            Refusal::TooManyFromAddress => (
                RejectReason::PerAddressLimit,
                format!(
                    "too many connections from your address {} (limit {}, the server's \
                     max_connections_per_ip)",
                    peer.ip(),
                    config.max_connections_per_ip
                ),
            ),
            Refusal::ServerFull => (
                RejectReason::TotalLimit,
                format!(
                    "the server is at its limit of {} client connections (max_connections); \
                     try again later",
                    config.max_connections
                ),
            ),
        };
        self.metrics.connection_rejected(reason, &peer, &message);
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        let (tls, plaintext, timeout) = (
            self.tls.clone(),
            config.insecure_plaintext,
            config.handshake_timeout,
        );
        tasks.spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let accepted =
                tokio::time::timeout_at(deadline, crate::tls::accept(stream, &tls, plaintext));
            let code = usher_proto::ErrorCode::TooManyConnections;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match accepted.await {
                Ok(Ok(crate::tls::Accepted::Tls(s))) => {
                    connection::refuse(*s, code, message, left).await;
                }
                Ok(Ok(crate::tls::Accepted::Plain(s))) => {
                    connection::refuse(s, code, message, left).await;
                }
                Ok(Err(_)) | Err(_) => {}
            }
            drop(slot);
        });
    }
}
