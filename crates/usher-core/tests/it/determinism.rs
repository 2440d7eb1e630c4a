//! Determinism: the same commands at the same times give the same outcomes and changes,
//! which is what lets a replicated log or a replay rebuild the same ledger.

use proptest::prelude::*;
use usher_core::{
    Ask, Catalog, Change, Command, Entry, LeaseId, Ledger, LedgerError, Millis, Outcome, SessionId,
    Stamper, Wait,
};

use crate::model::{FEATURES, Line, REQUEST_VERSIONS, SESSION_IDS, config, lines};
use crate::util::{CONFIG, DAY, Durable, T0, client, secret, snapshot};

/// One step: let `Millis` pass, then apply a command or restart from the durable state.
#[derive(Debug, Clone)]
enum Step {
    Apply(Millis, Command),
    Restart(Millis),
}

/// Any command, on a few sessions and lease ids.
fn command() -> impl Strategy<Value = Command> {
    let sid = (1..=SESSION_IDS).prop_map(SessionId);
    let lease = (1u64..=40).prop_map(LeaseId);
    prop_oneof![
        3 => sid.clone().prop_map(|id| Command::OpenSession {
            id,
            secret_hash: secret(id.0),
            client: client(id.0),
        }),
        1 => (sid.clone(), any::<bool>()).prop_map(|(id, right)| Command::Resume {
            id,
            secret_hash: if right { secret(id.0) } else { [0; 32] },
            address: format!("10.2.0.{}:1", id.0),
        }),
        2 => sid.clone().prop_map(|id| Command::Heartbeat { id }),
        1 => sid.clone().prop_map(|id| Command::Disconnected { id }),
        1 => sid.clone().prop_map(|id| Command::CloseSession { id }),
        8 => (sid.clone(), lease.clone(), 0..FEATURES.len(), 0..REQUEST_VERSIONS.len(), 0u32..=3, 0u64..3)
            .prop_map(|(session, lease_id, f, v, count, client_ref)| Command::Checkout {
                ask: Ask {
                    session,
                    lease_id,
                    feature: FEATURES[f].to_string(),
                    version: REQUEST_VERSIONS[v].to_string(),
                    count,
                    client_ref,
                },
                wait: Wait::No,
            }),
        4 => (sid, lease).prop_map(|(session, lease_id)| Command::Checkin { session, lease_id }),
        2 => Just(Command::Expire),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let command = command();
    let advance = prop_oneof![4 => 0..30_000u64, 1 => 0..DAY];
    let step = prop_oneof![
        20 => (advance.clone(), command).prop_map(|(ms, cmd)| Step::Apply(ms, cmd)),
        1 => advance.prop_map(Step::Restart),
    ];
    prop::collection::vec(step, 0..=80)
}

type Trace = Vec<(Result<Outcome, LedgerError>, Vec<Change>)>;

/// Runs `steps` on a fresh ledger built from `lines`; returns every outcome and the ledger.
fn replay(lines: &[Line], steps: &[Step]) -> (Trace, Ledger) {
    let ents: Vec<_> = lines.iter().map(Line::entitlement).collect();
    let catalog = Catalog::from_entitlements(&ents);
    let mut ledger = Ledger::new(catalog.clone(), CONFIG);
    let mut durable = Durable::default();
    let mut now = T0;
    let mut trace = Vec::new();
    for step in steps {
        let mut changes = Vec::new();
        let result = match step {
            Step::Apply(ms, cmd) => {
                now += ms;
                ledger.apply(now, cmd.clone(), &mut changes)
            }
            Step::Restart(ms) => {
                now += ms;
                ledger = durable.restore(catalog.clone(), now, &mut changes);
                Ok(Outcome::Done)
            }
        };
        durable
            .record(&changes)
            .unwrap_or_else(|e| panic!("{step:?}: {e}"));
        trace.push((result, changes));
    }
    (trace, ledger)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn same_commands_same_outcomes_and_changes(lines in lines(), steps in steps()) {
        let (first, a) = replay(&lines, &steps);
        let (second, b) = replay(&lines, &steps);
        for (i, (x, y)) in first.iter().zip(&second).enumerate() {
            prop_assert_eq!(x, y, "step #{} {:?}", i, &steps[i]);
        }
        prop_assert_eq!(snapshot(&a), snapshot(&b));
    }
}

/// One step of a stamped history: a batch the wall clock says starts `clock` ms after (or,
/// if negative, before) the previous one, or a restart from the durable state.
#[derive(Debug, Clone)]
enum Batch {
    Apply(i64, Vec<Command>),
    Restart(i64),
}

fn batches() -> impl Strategy<Value = Vec<Batch>> {
    let commands = prop::collection::vec(command(), 0..=6);
    // The wall clock mostly moves on, but now and then steps back (NTP, another host).
    let clock = prop_oneof![6 => 0..30_000i64, 1 => -(DAY as i64)..0];
    let batch = prop_oneof![
        8 => (clock.clone(), commands).prop_map(|(c, cmds)| Batch::Apply(c, cmds)),
        1 => clock.prop_map(Batch::Restart),
    ];
    prop::collection::vec(batch, 0..=30)
}

/// What one entry gave: each command's result, and the changes.
type EntryTrace = (Vec<Result<Outcome, LedgerError>>, Vec<Change>);

/// What a stamped run left: every entry applied, what each gave, and the durable state.
struct Stamped {
    entries: Vec<Entry>,
    trace: Vec<EntryTrace>,
    granted: Vec<LeaseId>,
    /// The time of each entry that changed something durable, in order.
    durable_times: Vec<Millis>,
}

/// Runs `batches` as a server does: each batch stamped by a [`Stamper`] and applied as an
/// entry; on a restart, the ledger comes back from the durable state and a new stamper
/// starts at what the store knows (the newest time written, the highest lease id granted).
fn stamped_run(lines: &[Line], batches: &[Batch]) -> Stamped {
    let ents: Vec<_> = lines.iter().map(Line::entitlement).collect();
    let catalog = Catalog::from_entitlements(&ents);
    let mut ledger = Ledger::new(catalog.clone(), CONFIG);
    let mut durable = Durable::default();
    let mut stamper = Stamper::new(0, 1);
    let (mut newest_written, mut highest_granted) = (0, 0);
    let mut wall = T0 as i64;
    let mut run = Stamped {
        entries: Vec::new(),
        trace: Vec::new(),
        granted: Vec::new(),
        durable_times: Vec::new(),
    };
    for batch in batches {
        let mut changes = Vec::new();
        match batch {
            Batch::Apply(clock, commands) => {
                wall += clock;
                let at = stamper.time(wall.max(0) as Millis);
                let mut commands = commands.clone();
                commands.iter_mut().for_each(|c| stamper.stamp(c));
                let entry = Entry { at, commands };
                run.entries.push(entry.clone());
                let results = ledger.apply_entry(entry, &mut changes);
                run.trace.push((results, changes.clone()));
            }
            Batch::Restart(clock) => {
                wall += clock;
                let at = Stamper::new(newest_written, 0).time(wall.max(0) as Millis);
                ledger = durable.restore(catalog.clone(), at, &mut changes);
                stamper = Stamper::new(newest_written, highest_granted + 1);
                stamper.time(at);
            }
        }
        durable
            .record(&changes)
            .unwrap_or_else(|e| panic!("{batch:?}: {e}"));
        if !changes.is_empty() {
            newest_written = stamper.last();
            run.durable_times.push(newest_written);
        }
        for change in &changes {
            if let Change::LeaseGranted(lease) = change {
                run.granted.push(lease.id);
                highest_granted = highest_granted.max(lease.id.0);
            }
        }
    }
    run
}

proptest! {
    #![proptest_config(config())]

    /// Stamped entries are the whole story: time never runs backwards in what is written,
    /// even across a wall clock stepped back and restarts; no lease id is handed out twice;
    /// and a second ledger applying the same entries (a follower replaying the log) gives
    /// the same outcomes and changes.
    #[test]
    fn stamped_entries_keep_time_and_ids_and_replay_identically(lines in lines(), batches in batches()) {
        let run = stamped_run(&lines, &batches);
        prop_assert!(
            run.durable_times.windows(2).all(|w| w[0] <= w[1]),
            "durable times ran backwards: {:?}", run.durable_times
        );
        let mut ids = run.granted.clone();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), run.granted.len(), "a lease id was granted twice: {:?}", run.granted);

        // The follower: no restarts, so it replays only the entries up to the first one.
        let first_restart = batches.iter().position(|b| matches!(b, Batch::Restart(_)));
        let upto = batches[..first_restart.unwrap_or(batches.len())].len();
        let ents: Vec<_> = lines.iter().map(Line::entitlement).collect();
        let mut follower = Ledger::new(Catalog::from_entitlements(&ents), CONFIG);
        for (i, entry) in run.entries.iter().take(upto).enumerate() {
            let mut changes = Vec::new();
            let results = follower.apply_entry(entry.clone(), &mut changes);
            prop_assert_eq!(&(results, changes), &run.trace[i], "entry #{}", i);
        }
    }

    /// An entry is exactly its commands applied one by one at its time.
    #[test]
    fn an_entry_applies_as_its_commands_in_turn(lines in lines(), commands in prop::collection::vec(command(), 0..=40)) {
        let ents: Vec<_> = lines.iter().map(Line::entitlement).collect();
        let catalog = Catalog::from_entitlements(&ents);
        let (mut whole, mut each) = (Ledger::new(catalog.clone(), CONFIG), Ledger::new(catalog, CONFIG));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        whole.apply_entry_with(Entry { at: T0, commands: commands.clone() }, &mut a, |ledger, i, result| {
            seen.push((i, result, snapshot(ledger)));
        });
        for (i, command) in commands.into_iter().enumerate() {
            let result = each.apply(T0, command, &mut b);
            prop_assert_eq!(&seen[i], &(i, result, snapshot(&each)));
        }
        prop_assert_eq!(a, b);
    }
}
