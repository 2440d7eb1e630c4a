//! Group commit: one thread owns the store and writes the ledger's batches in order.
//!
//! The ledger task hands each batch's changes, together with the replies, to
//! `Commits::commit`. The committer writes every batch that is waiting in one SQLite
//! transaction and only then releases the replies. So:
//!
//! - **a grant or release is durable before anyone hears of it**, because replies travel
//!   with their changes and are sent after the commit returns;
//! - throughput does not collapse to one fsync per request, because one fsync covers
//!   everything that queued up while the previous one was in flight;
//! - the ledger never waits for the disk: it moves on to the next batch while the
//!   committer is still writing the last one. Batches are committed in order, so a later
//!   reply is never released before an earlier change is durable.
//!
//! When nothing is in flight and a batch holds a single request (a quiet server), the ledger
//! task commits it itself instead of handing it over: the hand-over costs two thread
//! wake-ups (to the committer and back to the connection), which on a quiet server are a
//! large part of a checkout's latency. Under load the committer takes every batch, so the
//! ledger keeps applying while the disk writes. Either way one batch commits at a time,
//! in order, and its replies go out after its commit.
//!
//! A failed commit (a full disk) is survived: its replies, and those of every batch built
//! after it, are never sent (their connections answer `STORE_UNAVAILABLE`); the ledger task
//! then reloads the ledger from the store, so it keeps nothing the store rolled back, and
//! refuses new grants until a probe write every two seconds succeeds (see `Recovery`).
//! A panic of the committer is fatal: it reports to [`Fatal`], and the server stops with
//! that reason.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, error, info};
use usher_core::{Change, Ledger, Millis};
use usher_store::{LogEvent, SqliteStore, UsageEvent};

use crate::fatal::Fatal;
use crate::metrics::Metrics;

/// Most replies in a batch the ledger task commits itself when no commit is in flight
/// (see the module docs); larger batches go to the committer thread. One: with more, a
/// server under moderate load (16 clients) loses more to the ledger waiting on the disk
/// than it saves in wake-ups (measured with usher-bench; see BENCHMARKS.md).
const INLINE_COMMIT_MAX: usize = 1;

/// A reply waiting for its batch to be committed.
pub(crate) type PendingReply = Box<dyn FnOnce() + Send>;

/// One batch for the store: the changes the ledger made, the usage records beside them,
/// and the replies to release once they are durable.
pub(crate) struct CommitJob {
    /// The batch's time.
    pub(crate) at: Millis,
    /// What the ledger changed, in order.
    pub(crate) changes: Vec<Change>,
    /// Usage records that are not changes (refused checkouts), logged after the changes.
    pub(crate) events: Vec<LogEvent>,
    /// Sent once the batch is durable; dropped unsent if it is not.
    pub(crate) replies: Vec<PendingReply>,
    /// Retention: remove usage records older than this, after the batch commits.
    pub(crate) prune_before: Option<Millis>,
    /// What the tests' fault injection asks of the committer for this batch.
    #[cfg(feature = "fault-injection")]
    pub(crate) fault: crate::fault::CommitFault,
}

impl CommitJob {
    /// An empty batch at `at`.
    pub(crate) fn new(at: Millis) -> Self {
        CommitJob {
            at,
            changes: Vec::new(),
            events: Vec::new(),
            replies: Vec::new(),
            prune_before: None,
            #[cfg(feature = "fault-injection")]
            fault: crate::fault::CommitFault::None,
        }
    }
}

/// How often the ledger task tries the store again while it is unavailable.
const PROBE_EVERY_MS: Millis = 2_000;

/// Surviving a store that cannot commit (a full disk): the ledger is reloaded from the
/// store (so it keeps nothing the store rolled back), new grants are refused, and a probe
/// write every [`PROBE_EVERY_MS`] finds out when the store takes writes again.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Whether the store has failed a commit and not yet taken a probe write.
    pub(crate) unavailable: bool,
    last_probe: Millis,
}

impl Recovery {
    pub(crate) fn next_probe(&self) -> Option<Millis> {
        self.unavailable.then_some(self.last_probe + PROBE_EVERY_MS)
    }

    /// Waits for every batch in flight to be written or dropped, then rebuilds the ledger
    /// from the store: what the store holds is the truth, whatever the failed batches did.
    pub(crate) async fn reload(&mut self, ledger: &mut Ledger, commits: &Commits, now: Millis) {
        let writer = &*commits.writer;
        while writer.in_flight.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let Ok(store) = writer.store.lock() else {
            writer
                .failed
                .fail("a store commit panicked; nothing more may be written");
            return;
        };
        let snapshot = match store.load() {
            Ok(s) => s,
            Err(e) => {
                writer.failed.fail(format!(
                    "the store could not be read back after a failed commit: {e}"
                ));
                return;
            }
        };
        drop(store);
        let (sessions, leases) = (snapshot.sessions.len(), snapshot.leases.len());
        // Orphans cannot be: the store's leases all have their sessions.
        let mut orphans = Vec::new();
        *ledger = ledger.reloaded(snapshot.sessions, snapshot.leases, now, &mut orphans);
        info!(
            sessions,
            leases, "ledger reloaded from the store after a failed commit"
        );
        writer.rolled_back.store(false, Ordering::Release);
        // A commit that fails while unavailable (a checkin, an expiry) does not put the
        // next probe off.
        if !self.unavailable {
            self.unavailable = true;
            self.last_probe = now;
        }
    }

    /// Tries a write (a `store_available` record) if one is due and nothing is in flight;
    /// on success the store is available again.
    pub(crate) fn probe(&mut self, commits: &Commits, now: Millis) {
        let writer = &*commits.writer;
        if now < self.last_probe + PROBE_EVERY_MS || writer.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        self.last_probe = now;
        let Ok(mut store) = writer.store.lock() else {
            return;
        };
        let event = LogEvent::server(
            UsageEvent::Other("store_available".into()),
            Some("the store takes writes again; new grants resume"),
        );
        match store.commit_batch(now, &[], &[event]) {
            Ok(()) => {
                info!("the store takes writes again; new grants resume");
                writer.metrics.set_store_unavailable(None);
                self.unavailable = false;
            }
            Err(e) => debug!("the store still cannot commit: {e}"),
        }
    }
}

/// The store and what its commits report to, shared by the ledger task and the committer.
struct Writer {
    /// Held while a batch is written (by whichever of the two writes it).
    store: Mutex<SqliteStore>,
    /// Batches handed to the committer and not yet committed with their replies sent.
    in_flight: AtomicUsize,
    metrics: Arc<Metrics>,
    failed: Fatal,
    /// Set when a commit fails: the ledger holds changes the store rolled back, so no later
    /// batch (built on them) may be written, until the ledger task has reloaded the ledger
    /// from the store and cleared this.
    rolled_back: std::sync::atomic::AtomicBool,
}

impl Writer {
    /// Commits `job` and then sends its replies. On failure, stops the server (dropping
    /// the replies tells every waiting connection that its request failed) and returns
    /// false.
    fn write(&self, job: CommitJob) -> bool {
        let CommitJob {
            at,
            changes,
            events,
            replies,
            prune_before,
            #[cfg(feature = "fault-injection")]
            fault,
        } = job;
        // Built on changes the store rolled back: its replies are never sent (the waiting
        // connections answer "store unavailable").
        if self.rolled_back.load(Ordering::Acquire) {
            return true;
        }
        // A poisoned lock means a commit panicked half-way: nothing more may be written.
        let Ok(mut store) = self.store.lock() else {
            self.failed
                .fail("a store commit panicked earlier; nothing more may be written");
            return false;
        };
        #[cfg(feature = "fault-injection")]
        if fault == crate::fault::CommitFault::Panic {
            panic!("injected fault: store committer panic");
        }
        let started = Instant::now();
        let committed = store.commit_batch(at, &changes, &events);
        self.metrics
            .store_commit
            .observe_duration(started.elapsed());
        self.metrics.store_batch.observe(replies.len() as f64);
        if let Err(e) = committed {
            // Not fatal: held seats stay held, new grants are refused until the store
            // takes writes again (see `Recovery`). The replies are dropped, never sent.
            // With its causes: "database or disk is full" is what an administrator needs.
            let mut why = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                why = format!("{why}: {c}");
                cause = c.source();
            }
            error!("store commit failed; new grants are refused until it recovers: {why}");
            self.metrics.set_store_unavailable(Some(why));
            self.rolled_back.store(true, Ordering::Release);
            return true;
        }
        for reply in replies {
            reply();
        }
        if let Some(before) = prune_before {
            match store.prune_usage_log(at, before) {
                Ok(n) => info!(removed = n, "usage log retention applied"),
                // Not fatal: the log only grows longer than the retention asks.
                Err(e) => error!("usage log retention failed: {e}"),
            }
        }
        true
    }
}

/// The ledger task's way to the store: commit a small batch itself when nothing is in
/// flight, or hand it to the committer thread.
pub(crate) struct Commits {
    tx: std_mpsc::Sender<CommitJob>,
    writer: Arc<Writer>,
}

impl Commits {
    /// Commits `job`, or queues it for the committer. False if the store has failed.
    pub(crate) fn commit(&self, job: CommitJob) -> bool {
        // After a failed commit the ledger holds changes the store rolled back: nothing
        // more may be written, by either path.
        if self.writer.failed.is_failed() {
            return false;
        }
        // Nothing in flight means every earlier batch is committed and answered, so this
        // one may be written now without overtaking any. The count only rises here, on
        // this task, so it cannot become non-zero behind our back.
        if job.replies.len() <= INLINE_COMMIT_MAX
            && self.writer.in_flight.load(Ordering::Acquire) == 0
        {
            // This blocks the runtime worker for one commit, as long as a small batch's
            // fsync. Under load batches grow and go to the committer instead.
            return self.writer.write(job);
        }
        self.writer.in_flight.fetch_add(1, Ordering::AcqRel);
        self.tx.send(job).is_ok()
    }
}

fn committer(writer: &Writer, rx: std_mpsc::Receiver<CommitJob>) {
    while let Ok(mut job) = rx.recv() {
        let mut taken = 1;
        // Everything that queued while the last commit was in flight shares this commit.
        // (Each job's events then follow all the changes, not just its own; they share one
        // `at` and one transaction, so nothing a report relies on moves.)
        while let Ok(next) = rx.try_recv() {
            job.at = job.at.max(next.at);
            job.changes.extend(next.changes);
            job.events.extend(next.events);
            job.replies.extend(next.replies);
            job.prune_before = job.prune_before.max(next.prune_before);
            #[cfg(feature = "fault-injection")]
            if next.fault != crate::fault::CommitFault::None {
                job.fault = next.fault;
            }
            taken += 1;
        }
        if !writer.write(job) {
            // In flight stays non-zero: the ledger task never writes after a failure.
            return;
        }
        writer.in_flight.fetch_sub(taken, Ordering::AcqRel);
    }
}

/// The committer thread, for waiting on it at shutdown.
pub(crate) struct Committer {
    thread: std::thread::JoinHandle<()>,
    writer: Arc<Writer>,
}

impl Commits {
    /// Starts the committer thread over `store`. Its commits report timings and batch sizes
    /// to `metrics`, and a failure (or a panic) to `failed`.
    pub(crate) fn start(
        store: SqliteStore,
        metrics: Arc<Metrics>,
        failed: Fatal,
    ) -> std::io::Result<(Commits, Committer)> {
        let (tx, rx) = std_mpsc::channel();
        let writer = Arc::new(Writer {
            store: Mutex::new(store),
            in_flight: AtomicUsize::new(0),
            metrics,
            failed,
            rolled_back: AtomicBool::new(false),
        });
        let thread = {
            let writer = writer.clone();
            std::thread::Builder::new()
                .name("usher-committer".into())
                .spawn(move || {
                    let run = std::panic::AssertUnwindSafe(|| committer(&writer, rx));
                    if let Err(panic) = std::panic::catch_unwind(run) {
                        writer.failed.fail(format!(
                            "the store committer panicked: {}",
                            crate::fatal::panic_text(&panic)
                        ));
                    }
                })?
        };
        let committer = Committer {
            thread,
            writer: writer.clone(),
        };
        Ok((Commits { tx, writer }, committer))
    }

    /// Whether a commit failed and the ledger must be reloaded from the store before
    /// anything more is written (see [`Recovery::reload`]).
    pub(crate) fn rolled_back(&self) -> bool {
        self.writer.rolled_back.load(Ordering::Acquire)
    }

    /// Stops the server: nothing more can be made durable.
    pub(crate) fn fail(&self, why: &str) {
        self.writer.failed.fail(why);
    }

    /// Where a failure is reported.
    pub(crate) fn fatal(&self) -> Fatal {
        self.writer.failed.clone()
    }
}

impl Committer {
    /// Waits for the committer to write the last batch (once every [`Commits`] is
    /// dropped), then returns the store for a clean close (`None` if the committer could
    /// not be waited for).
    pub(crate) async fn join(self) -> Option<SqliteStore> {
        let Committer { thread, writer } = self;
        match tokio::task::spawn_blocking(move || thread.join()).await {
            // Both the ledger task and the committer are gone: the store is ours again.
            Ok(Ok(())) => match Arc::try_unwrap(writer) {
                Ok(writer) => writer.store.into_inner().ok(),
                Err(_) => None,
            },
            Ok(Err(_)) => {
                error!("the store committer thread panicked");
                None
            }
            // The runtime is being torn down under us; the committer finishes on its own.
            Err(e) => {
                error!("could not wait for the store committer: {e}");
                None
            }
        }
    }
}
