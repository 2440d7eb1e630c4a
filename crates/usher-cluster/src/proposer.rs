//! The leader's proposer: ledger commands from clients, batched into log entries.
//!
//! Every member runs one; it proposes only while its member leads. It is the cluster's
//! counterpart of the single server's ledger task: it takes whatever commands are waiting
//! (up to [`ProposerConfig::max_batch`]), stamps them with a [`Stamper`] (one time for the
//! entry, a fresh lease id for each checkout or borrow) behind an expiry tick, and writes
//! the entry through Raft. While one entry is being replicated the next batch gathers, so
//! entries grow with the load, as group commit does on a single server.
//!
//! **Time and ids across a failover.** A new leader first confirms it leads and has
//! applied everything committed before its term (`ensure_linearizable`), then seeds its
//! stamper from its state machine: the last entry's time and the first lease id no entry
//! used. Its first entry extends every session to at least its time plus
//! [`ProposerConfig::grace`] before expiring anything: clients had no leader to heartbeat
//! during the election, and get a bounded time to find the new one. The grace is in the
//! log, so every member applies the same one.
//!
//! Expiry happens only through the ticks the leader proposes (one at the head of every
//! entry, and a lone one when the ledger's next deadline passes with nothing to do), so
//! every member expires the same sessions at the same log position.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use usher_core::{Command, Entry, LedgerError, Millis, Outcome, Stamper};

use crate::node::{leader_of, write_entry};
use crate::{NodeId, Raft, StateMachine, WriteError};

/// How a proposer batches and how long a new leader's grace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposerConfig {
    /// Most commands in one entry.
    pub max_batch: usize,
    /// How much longer than its time a new leader's first entry keeps every session.
    pub grace: Millis,
    /// How many commands may wait for the proposer before submitters wait too.
    pub queue_depth: usize,
}

impl Default for ProposerConfig {
    fn default() -> Self {
        ProposerConfig {
            max_batch: 512,
            grace: 15_000,
            queue_depth: 65_536,
        }
    }
}

/// What a command submitted to the proposer gave: the ledger's result, or why it was not
/// applied ([`WriteError::NotLeader`]: never proposed, safe to resend elsewhere).
pub type Proposed = Result<Result<Outcome, LedgerError>, WriteError>;

struct Pending {
    command: Command,
    reply: oneshot::Sender<Proposed>,
}

/// A member's proposer: submit commands here; they are applied while this member leads.
/// Stops when dropped.
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
    task: JoinHandle<()>,
}

impl Drop for Proposer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proposer {
    pub(crate) fn start(
        id: NodeId,
        raft: Raft,
        state: StateMachine,
        config: ProposerConfig,
        clock: fn() -> Millis,
    ) -> Proposer {
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let task = tokio::spawn(
            Leading {
                id,
                raft,
                state,
                config,
                clock,
            }
            .run(rx),
        );
        Proposer { tx, task }
    }

    /// Applies `command` through the log and returns its result once a majority holds it
    /// and this member has applied it. A checkout's or borrow's lease id is the
    /// proposer's to choose: whatever the command carries is replaced.
    pub async fn submit(&self, command: Command) -> Proposed {
        let (reply, rx) = oneshot::channel();
        let stopped = || WriteError::Raft("the proposer stopped".into());
        self.tx
            .send(Pending { command, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// The proposer task's state.
struct Leading {
    id: NodeId,
    raft: Raft,
    state: StateMachine,
    config: ProposerConfig,
    clock: fn() -> Millis,
}

impl Leading {
    async fn run(self, mut rx: mpsc::Receiver<Pending>) {
        loop {
            let Some(term) = self.wait_to_lead(&mut rx).await else {
                return;
            };
            let Some(stamper) = self.take_over().await else {
                continue;
            };
            if !self.lead(term, stamper, &mut rx).await {
                return;
            }
        }
    }

    /// Waits until this member leads; meanwhile every command is refused with the leader
    /// it should go to. `None` once nobody can submit any more.
    async fn wait_to_lead(&self, rx: &mut mpsc::Receiver<Pending>) -> Option<u64> {
        let mut metrics = self.raft.metrics();
        loop {
            let (leader, term) = {
                let m = metrics.borrow_and_update();
                (leader_of(self.id, &m), m.current_term)
            };
            if leader == Some(self.id) {
                return Some(term);
            }
            tokio::select! {
                changed = metrics.changed() => changed.ok()?,
                pending = rx.recv() => {
                    let _ = pending?.reply.send(Err(WriteError::NotLeader { leader }));
                }
            }
        }
    }

    /// Confirms the leadership and catches up with everything committed before it; then
    /// proposes the grace and returns the stamper to go on with. `None` if leadership was
    /// lost meanwhile.
    async fn take_over(&self) -> Option<Stamper> {
        self.raft.ensure_linearizable().await.ok()?;
        let (time, next_lease_id) = self.state.stamp_seed();
        let mut stamper = Stamper::new(time, next_lease_id);
        let at = stamper.time((self.clock)());
        let first = Entry {
            at,
            commands: vec![
                Command::ExtendSessions {
                    until: at.saturating_add(self.config.grace),
                },
                Command::Expire,
            ],
        };
        write_entry(&self.raft, first).await.ok()?;
        tracing::info!(member = self.id, "leading: sessions extended by the grace");
        Some(stamper)
    }

    /// Proposes entries while this member leads in `term`. Returns `false` once nobody
    /// can submit any more.
    async fn lead(
        &self,
        term: u64,
        mut stamper: Stamper,
        rx: &mut mpsc::Receiver<Pending>,
    ) -> bool {
        let mut metrics = self.raft.metrics();
        loop {
            let deadline = self.state.read(|ledger, _| ledger.next_deadline());
            let wait = deadline.map(|at| at.saturating_sub((self.clock)()) + 1);
            let first = tokio::select! {
                pending = rx.recv() => match pending {
                    Some(pending) => Some(pending),
                    None => return false,
                },
                () = sleep(wait) => None,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    let m = metrics.borrow_and_update();
                    if leader_of(self.id, &m) != Some(self.id) || m.current_term != term {
                        return true;
                    }
                    continue;
                }
            };
            let mut batch: Vec<Pending> = first.into_iter().collect();
            while batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            let at = stamper.time((self.clock)());
            let mut commands = Vec::with_capacity(batch.len() + 1);
            commands.push(Command::Expire);
            for pending in &mut batch {
                stamper.stamp(&mut pending.command);
                commands.push(pending.command.clone());
            }
            match write_entry(&self.raft, Entry { at, commands }).await {
                Ok(applied) => {
                    // The tick's outcome is first; the rest are the batch's, in order.
                    let mut outcomes = applied.outcomes.into_iter().skip(1);
                    for pending in batch {
                        let outcome = outcomes.next().ok_or_else(|| {
                            WriteError::Raft("the entry gave fewer outcomes than commands".into())
                        });
                        let _ = pending.reply.send(outcome);
                    }
                }
                Err(e) => {
                    let lost = matches!(e, WriteError::NotLeader { .. });
                    for pending in batch {
                        let _ = pending.reply.send(Err(e.clone()));
                    }
                    if lost {
                        return true;
                    }
                }
            }
        }
    }
}

async fn sleep(wait: Option<Millis>) {
    match wait {
        Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        None => std::future::pending().await,
    }
}
