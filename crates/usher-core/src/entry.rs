//! Entries: commands stamped with one time, the unit the ledger applies and a log carries.
//!
//! Whoever feeds a ledger (the single server's ledger task, a cluster's leader) stamps
//! what it is about to apply with a [`Stamper`]: one time for the whole batch, never
//! earlier than the last one, and a fresh lease id in every command that may grant. The
//! stamped [`Entry`] holds everything non-deterministic the ledger needs, so applying the
//! same entries to the same ledger anywhere gives the same outcomes and changes.

use crate::{Change, Command, LeaseId, Ledger, LedgerError, Millis, Outcome};

/// Commands applied in order at one time, with every id they use already inside them.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// When the commands happen (ms since the epoch), as the [`Stamper`] gave it.
    pub at: Millis,
    /// The commands, in the order they apply.
    pub commands: Vec<Command>,
}

/// Gives batches their time and grants their lease ids, in one place.
///
/// Time is the wall clock, but never earlier than the last batch's, so ledger time never
/// runs backwards when the wall clock does (an NTP step, a restart on a host whose clock
/// is behind). Lease ids count up from the first one never used, one per command that may
/// grant (a checkout or a borrow, granted or not), so a handle is never reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamper {
    /// The last time handed out.
    at: Millis,
    /// The next lease id to hand out.
    next_lease_id: u64,
}

impl Stamper {
    /// A stamper whose times start at `floor` or later and whose lease ids start at
    /// `first_lease_id` (above every id ever granted). The floor is the newest time
    /// already in the store, so a restart on a clock that is behind does not go back.
    pub fn new(floor: Millis, first_lease_id: u64) -> Self {
        Stamper {
            at: floor,
            next_lease_id: first_lease_id,
        }
    }

    /// The time for a batch that starts at wall-clock time `wall`: `max(wall, last)`.
    pub fn time(&mut self, wall: Millis) -> Millis {
        self.at = self.at.max(wall);
        self.at
    }

    /// The last time handed out.
    pub fn last(&self) -> Millis {
        self.at
    }

    /// The next lease id that [`Stamper::stamp`] would hand out.
    pub fn next_lease_id(&self) -> u64 {
        self.next_lease_id
    }

    /// Puts a fresh lease id into `command` if it may grant; other commands are left as
    /// they are.
    pub fn stamp(&mut self, command: &mut Command) {
        if let Command::Checkout { ask, .. } | Command::Borrow { ask, .. } = command {
            ask.lease_id = LeaseId(self.next_lease_id);
            self.next_lease_id += 1;
        }
    }
}

impl Ledger {
    /// Applies an entry's commands in order at its time, appending their durable effects
    /// to `changes`; returns one result per command.
    ///
    /// The same as [`Ledger::apply`] for each command in turn at `entry.at`, which is the
    /// point: a member replaying a log and a server applying batches run one code path.
    pub fn apply_entry(
        &mut self,
        entry: Entry,
        changes: &mut Vec<Change>,
    ) -> Vec<Result<Outcome, LedgerError>> {
        let mut results = Vec::with_capacity(entry.commands.len());
        self.apply_entry_with(entry, changes, |_, _, result| results.push(result));
        results
    }

    /// Like [`Ledger::apply_entry`], but hands each command's result to `then` as soon as
    /// it is applied, with the ledger as that command left it and the command's index in
    /// the entry, so a caller can read what the command did (who was denied, which pool
    /// granted) before the next command changes it.
    pub fn apply_entry_with(
        &mut self,
        entry: Entry,
        changes: &mut Vec<Change>,
        mut then: impl FnMut(&Ledger, usize, Result<Outcome, LedgerError>),
    ) {
        let Entry { at, commands } = entry;
        for (index, command) in commands.into_iter().enumerate() {
            let result = self.apply(at, command, changes);
            then(self, index, result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ask, SessionId, Wait};

    fn checkout() -> Command {
        Command::Checkout {
            ask: Ask {
                session: SessionId(1),
                lease_id: LeaseId(0),
                feature: "cad".into(),
                version: "1".into(),
                count: 1,
                client_ref: 0,
            },
            wait: Wait::No,
        }
    }

    #[test]
    fn time_never_runs_backwards_and_starts_at_the_floor() {
        let mut stamper = Stamper::new(1_000, 1);
        assert_eq!(
            stamper.time(500),
            1_000,
            "the floor holds over an earlier clock"
        );
        assert_eq!(stamper.time(2_000), 2_000);
        assert_eq!(
            stamper.time(1_500),
            2_000,
            "a clock stepped back is not followed"
        );
        assert_eq!(stamper.last(), 2_000);
    }

    #[test]
    fn only_commands_that_may_grant_take_a_lease_id() {
        let mut stamper = Stamper::new(0, 7);
        let mut first = checkout();
        let mut heartbeat = Command::Heartbeat { id: SessionId(1) };
        let mut second = checkout();
        stamper.stamp(&mut first);
        stamper.stamp(&mut heartbeat);
        stamper.stamp(&mut second);
        let id = |c: &Command| match c {
            Command::Checkout { ask, .. } => ask.lease_id,
            _ => unreachable!(),
        };
        assert_eq!((id(&first), id(&second)), (LeaseId(7), LeaseId(8)));
        assert_eq!(heartbeat, Command::Heartbeat { id: SessionId(1) });
        assert_eq!(stamper.next_lease_id(), 9);
    }
}
