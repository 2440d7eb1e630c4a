//! The single writer: one task owns the ledger.
//!
//! Connection tasks send [`LedgerMsg`]s over a bounded channel. The ledger task takes
//! whatever is queued (up to [`MAX_BATCH`]), applies it in arrival order, and hands the
//! batch's changes, together with the replies, to group commit ([`crate::commit`]), which
//! releases the replies only once the changes are durable: **a grant or release is durable
//! before anyone hears of it**. The ledger never waits for the disk: it applies the next
//! batch while the last one is written.
//!
//! After a failed commit (a full disk) the ledger task reloads the ledger from the store,
//! so it keeps nothing the store rolled back, and refuses new grants until the store
//! takes writes again (see `crate::commit::Recovery`). A panic of the ledger task is
//! fatal: it reports to [`crate::fatal::Fatal`], and the server stops with that reason
//! instead of answering "shutting down" forever.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};
use usher_core::{Command, Ledger, Millis, SessionId, Stamper};
use usher_store::{LogEvent, SqliteStore};

use crate::applied::Applied;
use crate::clock::{sleep_until_ms, wall_clock_ms};
use crate::commit::{CommitJob, Commits, Committer, PendingReply, Recovery};
use crate::fatal::Fatal;
use crate::metrics::Metrics;
use crate::notices::Notices;

mod batch;

use batch::{Asked, Batch};

/// Most commands applied in one batch, so one huge burst cannot delay the replies of the
/// first requests in it indefinitely.
pub const MAX_BATCH: usize = 4096;

/// A request to the ledger task.
#[derive(Debug)]
pub enum LedgerMsg {
    /// Apply a command.
    Apply {
        /// The command.
        cmd: Command,
        /// Where the result goes, after it is durable.
        reply: oneshot::Sender<Applied>,
    },
    /// Serve a new catalog (license reload). Leases are kept; see `Ledger::set_catalog`.
    Reload {
        /// The new catalog.
        catalog: usher_core::Catalog,
        /// The new policy (boxed: it is much larger than the other messages).
        policy: Box<usher_core::Policy>,
        /// License files now served.
        license_files: Vec<String>,
        /// Vendors now served.
        vendors: Vec<String>,
        /// Completed once the new catalog is in force.
        reply: oneshot::Sender<()>,
    },
    /// Run a read-only query against the ledger (see [`LedgerHandle::query`]).
    Query(Query),
    /// Append an event of the server's own to the usage log, with the next batch.
    Record {
        /// The event.
        event: LogEvent,
        /// Completed once the event is durable.
        reply: oneshot::Sender<()>,
    },
    /// Retention: remove the usage records written before `before` (ms since the epoch)
    /// with the next batch.
    Prune {
        /// The cut-off.
        before: Millis,
    },
    /// Heartbeats for many sessions at once (UDP keepalives). A heartbeat only moves a
    /// session's deadline in memory, so the answer goes out at once, without waiting for
    /// the batch to commit.
    Touch {
        /// The sessions heard from.
        ids: Vec<SessionId>,
        /// For each, whether it is alive (and was touched).
        reply: oneshot::Sender<Vec<bool>>,
    },
}

/// A read-only query: runs on the ledger task against a [`View`] and returns the reply to
/// release once the batch it ran in is committed.
pub struct Query(Box<dyn FnOnce(&View<'_>) -> PendingReply + Send>);

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Query")
    }
}

/// Checkouts refused since the server started, by feature and reason. The feature is the
/// name asked for if the catalog knows it, else [`UNKNOWN_FEATURE`], so a client asking for
/// random names cannot grow the table.
pub type DenialTally = BTreeMap<(String, &'static str), u64>;

/// The feature label of denials of a feature the catalog does not know.
pub const UNKNOWN_FEATURE: &str = "?";

/// Facts about the server that status reports carry.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Host name.
    pub server_name: String,
    /// Software version.
    pub server_version: String,
    /// TCP port.
    pub port: u16,
    /// Start time.
    pub started_at_ms: Millis,
    /// License files served.
    pub license_files: Vec<String>,
    /// Vendors served.
    pub vendors: Vec<String>,
}

/// What a query sees: the ledger as of its batch, that batch's time, and the task's tallies.
#[derive(Debug)]
pub struct View<'a> {
    /// The ledger.
    pub ledger: &'a Ledger,
    /// The batch's time.
    pub now: Millis,
    /// Facts about the server.
    pub info: &'a ServerInfo,
    /// Refused checkouts so far.
    pub denials: &'a DenialTally,
    /// Moves on whenever a command may have changed what status shows (every command
    /// but a heartbeat, a reload, an expiry that ended something), so an unchanged value
    /// means a status view built earlier still holds.
    pub generation: u64,
}

/// The ledger task went away (the server is shutting down or failed).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server is shutting down")]
pub struct LedgerGone;

/// A cheap, cloneable handle for sending to the ledger task.
#[derive(Debug, Clone)]
pub struct LedgerHandle {
    tx: mpsc::Sender<LedgerMsg>,
}

impl LedgerHandle {
    /// Queues a command and returns the receiver for its (durable) result. Sending first
    /// and awaiting later lets a connection pipeline requests in order.
    pub async fn submit(&self, cmd: Command) -> Result<oneshot::Receiver<Applied>, LedgerGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(LedgerMsg::Apply { cmd, reply })
            .await
            .map_err(|_| LedgerGone)?;
        Ok(rx)
    }

    /// Applies a command and waits for its durable result.
    pub async fn apply(&self, cmd: Command) -> Result<Applied, LedgerGone> {
        self.submit(cmd).await?.await.map_err(|_| LedgerGone)
    }

    /// Puts a new catalog in force and waits until it is.
    pub async fn reload(
        &self,
        catalog: usher_core::Catalog,
        policy: usher_core::Policy,
        license_files: Vec<String>,
        vendors: Vec<String>,
    ) -> Result<(), LedgerGone> {
        let (reply, rx) = oneshot::channel();
        let msg = LedgerMsg::Reload {
            catalog,
            policy: Box::new(policy),
            license_files,
            vendors,
            reply,
        };
        self.tx.send(msg).await.map_err(|_| LedgerGone)?;
        rx.await.map_err(|_| LedgerGone)
    }

    /// Runs `read` on the ledger task, between two batches, and returns its result once
    /// every change applied before it is durable (so what it reports has happened). It
    /// must be quick: the ledger serves nobody while it runs.
    pub async fn query<T: Send + 'static>(
        &self,
        read: impl FnOnce(&View<'_>) -> T + Send + 'static,
    ) -> Result<T, LedgerGone> {
        let (reply, rx) = oneshot::channel();
        let query = Query(Box::new(move |view: &View<'_>| {
            let value = read(view);
            Box::new(move || {
                let _ = reply.send(value);
            }) as PendingReply
        }));
        self.tx
            .send(LedgerMsg::Query(query))
            .await
            .map_err(|_| LedgerGone)?;
        rx.await.map_err(|_| LedgerGone)
    }

    /// Touches the sessions `ids` (keepalives) and returns, for each, whether it is
    /// alive. Answered at once: heartbeats change nothing stored.
    pub async fn touch(&self, ids: Vec<SessionId>) -> Result<Vec<bool>, LedgerGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(LedgerMsg::Touch { ids, reply })
            .await
            .map_err(|_| LedgerGone)?;
        rx.await.map_err(|_| LedgerGone)
    }

    /// Asks for the usage records written before `before` to be removed (retention).
    pub async fn prune(&self, before: Millis) -> Result<(), LedgerGone> {
        self.tx
            .send(LedgerMsg::Prune { before })
            .await
            .map_err(|_| LedgerGone)
    }

    /// Appends `event` to the usage log and waits until it is durable.
    pub async fn record(&self, event: LogEvent) -> Result<(), LedgerGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(LedgerMsg::Record { event, reply })
            .await
            .map_err(|_| LedgerGone)?;
        rx.await.map_err(|_| LedgerGone)
    }
}

/// What the ledger task keeps about refused checkouts.
#[derive(Debug, Default)]
struct Denials {
    /// Counts for the metrics.
    tally: DenialTally,
    /// Repeats being gathered for the usage log.
    repeats: crate::denial_log::DenialRepeats,
}

/// The newest grant time among `ledger`'s leases (0 if it holds none).
pub(crate) fn newest_grant(ledger: &Ledger) -> Millis {
    ledger.leases().map(|l| l.granted_at).max().unwrap_or(0)
}

/// The running ledger task and committer thread.
pub struct LedgerService {
    /// Handle for connections.
    pub handle: LedgerHandle,
    task: tokio::task::JoinHandle<()>,
    committer: Committer,
}

/// What the ledger task and committer report to, besides their replies.
#[derive(Debug, Clone)]
pub struct Outlets {
    /// Where queue grants and timeouts are sent (to the waiting clients).
    pub notices: Arc<Notices>,
    /// Store commit timings and batch sizes.
    pub metrics: Arc<Metrics>,
    /// Told if the store, the ledger task or the committer fails, which stops the server.
    pub failed: Fatal,
}

impl LedgerService {
    /// Starts the ledger task and the committer thread.
    ///
    /// Lease handles are allocated here, from `first_lease_id` upwards, so that they are
    /// small, unique and never reused (the caller starts above every handle ever granted),
    /// and batch times never fall before the newest time already in the store: the later
    /// of its newest usage record and the newest grant among the leases `ledger` was
    /// restored with.
    pub fn start(
        ledger: Ledger,
        first_lease_id: u64,
        store: SqliteStore,
        info: ServerInfo,
        queue_depth: usize,
        outlets: Outlets,
    ) -> std::io::Result<Self> {
        let floor = store
            .newest_record_at()
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .max(newest_grant(&ledger));
        let stamper = Stamper::new(floor, first_lease_id);
        let Outlets {
            notices,
            metrics,
            failed,
        } = outlets;
        let (tx, rx) = mpsc::channel(queue_depth);
        let (commits, committer) = Commits::start(store, metrics, failed)?;
        let fatal = commits.fatal();
        let task = fatal.watch(
            "ledger task",
            ledger_loop(ledger, stamper, rx, commits, info, notices),
        );
        Ok(LedgerService {
            handle: LedgerHandle { tx },
            task,
            committer,
        })
    }

    /// Waits for the ledger task to finish (once every handle is dropped) and for the
    /// committer to write the last batch, then returns the store for a clean close
    /// (`None` if the committer could not be waited for).
    pub async fn join(self) -> Option<SqliteStore> {
        let LedgerService {
            handle,
            task,
            committer,
        } = self;
        drop(handle);
        if let Err(e) = task.await {
            error!("ledger task failed: {e}");
        }
        committer.join().await
    }
}

async fn ledger_loop(
    mut ledger: Ledger,
    mut stamper: Stamper,
    mut rx: mpsc::Receiver<LedgerMsg>,
    commits: Commits,
    mut info: ServerInfo,
    notices: Arc<Notices>,
) {
    let mut denials = Denials::default();
    let mut generation = 0;
    let mut recovery = Recovery::default();
    loop {
        let deadline = [
            ledger.next_deadline(),
            denials.repeats.next_due(),
            recovery.next_probe(),
        ]
        .into_iter()
        .flatten()
        .min();
        let first = tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => Some(msg),
                None => {
                    // The last repeats of denials, before the ledger goes.
                    let mut events = Vec::new();
                    denials.repeats.close(None, &mut events);
                    if !events.is_empty() {
                        let at = stamper.time(wall_clock_ms());
                        commits.commit(CommitJob { events, ..CommitJob::new(at) });
                    }
                    break;
                }
            },
            _ = sleep_until_ms(deadline) => None,
        };
        // The one place the batch gets its time: never earlier than the last batch's, even
        // if the wall clock steps back.
        let now = stamper.time(wall_clock_ms());
        if commits.rolled_back() {
            recovery.reload(&mut ledger, &commits, now).await;
            // What status shows comes from the reloaded ledger.
            generation += 1;
        }
        if recovery.unavailable {
            recovery.probe(&commits, now);
        }
        let mut batch = Batch {
            job: CommitJob::new(now),
            entry: Vec::new(),
            asked: Vec::new(),
        };
        denials.repeats.close(Some(now), &mut batch.job.events);
        // Lapsed sessions are ended before anything else in the batch, so a session whose
        // TTL has run out can never act again.
        batch.push(Command::Expire, Asked::Tick);
        batch.apply(&mut ledger, &notices, &mut denials);
        if !batch.job.changes.is_empty() {
            generation += 1;
        }
        let mut next = first;
        let mut taken = 0;
        while let Some(msg) = next {
            let grant = matches!(
                &msg,
                LedgerMsg::Apply {
                    cmd: Command::Checkout { .. } | Command::Borrow { .. },
                    ..
                }
            );
            // The store cannot commit: no new grant. Dropping the message unanswered makes
            // the connection answer STORE_UNAVAILABLE.
            if recovery.unavailable && grant {
                drop(msg);
            } else {
                batch.take(
                    &mut ledger,
                    &mut stamper,
                    msg,
                    &mut info,
                    (&mut denials, &mut generation),
                    &notices,
                );
            }
            taken += 1;
            next = if taken < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        batch.apply(&mut ledger, &notices, &mut denials);
        let Batch { mut job, .. } = batch;
        notices.of_changes(&ledger, now, &job.changes, &mut job.replies);
        if job.changes.is_empty()
            && job.events.is_empty()
            && job.replies.is_empty()
            && job.prune_before.is_none()
        {
            continue;
        }
        if !commits.commit(job) {
            // The store failed, so nothing more can be made durable.
            commits.fail("the store committer stopped; the ledger stops too");
            break;
        }
    }
    debug!("ledger task finished");
}

/// The `seats` records of every pool: what reports take as the totals from now on.
pub fn seat_events(catalog: &usher_core::Catalog, now: Millis) -> Vec<LogEvent> {
    catalog
        .all_pools()
        .map(|p| {
            LogEvent::seats(
                &p.key.feature,
                &p.key.vendor,
                &p.key.version,
                p.seats_at(now),
            )
            .sharing(p.dup_group)
        })
        .collect()
}
