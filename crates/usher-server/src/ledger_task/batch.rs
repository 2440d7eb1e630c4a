//! One batch of the ledger task: the stamped commands gathered, applied together as one
//! [`Entry`], and what each command's answer needs (the denial log, the grant's extras).

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::info;
use usher_core::{Ask, Command, Entry, Ledger, LedgerError, Millis, Outcome, Stamper};
use usher_store::{LogEvent, UsageEvent};

use super::{Denials, LedgerMsg, Query, ServerInfo, UNKNOWN_FEATURE, View, seat_events};
use crate::applied::Applied;
use crate::commit::{CommitJob, PendingReply};
use crate::denial_log::denial_reason;
use crate::notices::Notices;

/// One batch on its way to the store: the commit job, and the stamped commands gathered
/// for the ledger but not yet applied (applied together as one [`Entry`] before anything
/// else reads or changes the ledger).
pub(super) struct Batch {
    pub(super) job: CommitJob,
    pub(super) entry: Vec<Command>,
    /// For each command in `entry`, what its result is for.
    pub(super) asked: Vec<Asked>,
}

/// What a command's result is for.
pub(super) enum Asked {
    /// The batch's own expiry tick: sessions it ended are told.
    Tick,
    /// Nobody waits for it (the expiry after a reload, which may serve the queue).
    Nobody,
    /// A connection waits for the answer.
    Reply {
        reply: oneshot::Sender<Applied>,
        /// A checkout's or borrow's ask, which a refusal is logged with.
        ask: Option<Ask>,
    },
}

impl Batch {
    pub(super) fn push(&mut self, command: Command, asked: Asked) {
        self.entry.push(command);
        self.asked.push(asked);
    }

    /// Applies the gathered commands as one entry at the batch's time, and answers each.
    pub(super) fn apply(
        &mut self,
        ledger: &mut Ledger,
        notices: &Arc<Notices>,
        denials: &mut Denials,
    ) {
        if self.entry.is_empty() {
            return;
        }
        let now = self.job.at;
        let entry = Entry {
            at: now,
            commands: std::mem::take(&mut self.entry),
        };
        let mut asked = std::mem::take(&mut self.asked).into_iter();
        let (events, replies) = (&mut self.job.events, &mut self.job.replies);
        ledger.apply_entry_with(entry, &mut self.job.changes, |ledger, _, result| {
            match asked.next() {
                Some(Asked::Tick) => expired(result, notices, replies),
                Some(Asked::Reply { reply, ask }) => {
                    if let (Ok(Outcome::Denied(denial)), Some(ask)) = (&result, &ask) {
                        denied(ledger, now, ask, denial, denials, events);
                    }
                    let applied = answer(ledger, now, result);
                    replies.push(Box::new(move || {
                        // The connection may have gone; then nobody is waiting for it.
                        let _ = reply.send(applied);
                    }));
                }
                Some(Asked::Nobody) | None => {}
            }
        });
    }

    /// Takes one message into the batch: a command is stamped and gathered; anything
    /// else first applies what is gathered, so it sees the ledger as of its arrival.
    pub(super) fn take(
        &mut self,
        ledger: &mut Ledger,
        stamper: &mut Stamper,
        msg: LedgerMsg,
        info: &mut ServerInfo,
        (denials, generation): (&mut Denials, &mut u64),
        notices: &Arc<Notices>,
    ) {
        let now = self.job.at;
        if let LedgerMsg::Apply { mut cmd, reply } = msg {
            #[cfg(feature = "fault-injection")]
            if let fault @ crate::fault::CommitFault::Panic = crate::fault::on_command(&cmd) {
                self.job.fault = fault;
            }
            if !matches!(cmd, Command::Heartbeat { .. }) {
                *generation += 1;
            }
            stamper.stamp(&mut cmd);
            let ask = match &cmd {
                Command::Checkout { ask, .. } | Command::Borrow { ask, .. } => Some(ask.clone()),
                _ => None,
            };
            self.push(cmd, Asked::Reply { reply, ask });
            return;
        }
        self.apply(ledger, notices, denials);
        let job = &mut self.job;
        match msg {
            LedgerMsg::Apply { .. } => unreachable!("commands are gathered above"),
            LedgerMsg::Reload {
                catalog,
                policy,
                license_files,
                vendors,
                reply,
            } => {
                *generation += 1;
                ledger.set_catalog(catalog);
                ledger.set_policy(*policy);
                job.events.extend(seat_events(ledger.catalog(), now));
                info.license_files = license_files;
                info.vendors = vendors;
                job.replies.push(Box::new(move || {
                    let _ = reply.send(());
                }));
                // The new catalog may serve queued checkouts at once.
                self.push(Command::Expire, Asked::Nobody);
            }
            LedgerMsg::Query(Query(read)) => {
                let view = View {
                    ledger,
                    now,
                    info,
                    denials: &denials.tally,
                    generation: *generation,
                };
                job.replies.push(read(&view));
            }
            LedgerMsg::Record { event, reply } => {
                job.events.push(event);
                job.replies.push(Box::new(move || {
                    let _ = reply.send(());
                }));
            }
            LedgerMsg::Prune { before } => job.prune_before = Some(before),
            LedgerMsg::Touch { ids, reply } => {
                // Heartbeats change nothing stored (see `LedgerMsg::Touch`): no commit to
                // wait for, and nothing a log would need to carry.
                let mut none = Vec::new();
                let alive = ids
                    .into_iter()
                    .map(|id| {
                        ledger
                            .apply(now, Command::Heartbeat { id }, &mut none)
                            .is_ok()
                    })
                    .collect();
                debug_assert!(none.is_empty(), "a heartbeat changed the store");
                let _ = reply.send(alive);
            }
        }
    }
}

/// The batch's expiry tick ended `sessions`: their connections are closed once that is
/// durable.
fn expired(
    result: Result<Outcome, LedgerError>,
    notices: &Arc<Notices>,
    replies: &mut Vec<PendingReply>,
) {
    if let Ok(Outcome::Expired { sessions }) = result
        && !sessions.is_empty()
    {
        info!(
            count = sessions.len(),
            "sessions expired; their seats are released"
        );
        // A connection that outlived its session (busy, but with nothing that keeps the
        // session alive) is closed once the end is durable.
        let notices = notices.clone();
        replies.push(Box::new(move || {
            for id in sessions {
                notices.end(id);
            }
        }));
    }
}

/// Counts a refused checkout and logs it (repeats gathered into one record).
fn denied(
    ledger: &Ledger,
    now: Millis,
    ask: &Ask,
    denial: &usher_core::Denial,
    denials: &mut Denials,
    events: &mut Vec<LogEvent>,
) {
    let label = if ledger.catalog().knows(&ask.feature) {
        ask.feature.clone()
    } else {
        UNKNOWN_FEATURE.to_owned()
    };
    *denials
        .tally
        .entry((label, denial_reason(denial)))
        .or_default() += 1;
    // The session exists (the ledger refuses unknown sessions with an error, not a
    // denial), so its identity is there to copy.
    let client = ledger.session(ask.session).map(|s| &s.client);
    let record = LogEvent {
        event: UsageEvent::Denied,
        session: Some(ask.session),
        lease: None,
        feature: Some(ask.feature.clone()),
        vendor: None,
        version: Some(ask.version.clone()),
        count: Some(ask.count),
        user: client.map(|c| c.user.to_string()),
        host: client.map(|c| c.host.to_string()),
        display: client.map(|c| c.display.to_string()),
        detail: Some(denial_reason(denial).to_owned()),
    };
    if denials.repeats.note(now, &record) {
        events.push(record);
    }
}

/// A command's result with what the ledger knows right after it that the answer needs.
fn answer(ledger: &Ledger, now: Millis, result: Result<Outcome, LedgerError>) -> Applied {
    let (mut expires_at_ms, mut source, mut user) = (0, None, String::new());
    if let Ok(Outcome::Granted(lease)) = &result {
        let pool = ledger.catalog().pool(lease.pool_key());
        expires_at_ms = pool.and_then(|p| p.expires_at(now)).unwrap_or(0);
        source = pool.and_then(|p| p.source_at(now)).cloned();
        user = (ledger
            .holder(lease.session)
            .map(|s| s.client.user.clone())
            .unwrap_or_default())
        .to_string();
    }
    Applied {
        result,
        expires_at_ms,
        source,
        user,
    }
}
