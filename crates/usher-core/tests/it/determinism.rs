//! Determinism: the same commands at the same times give the same outcomes and changes,
//! which is what lets a replicated log or a replay rebuild the same ledger.

use proptest::prelude::*;
use usher_core::{
    Ask, Catalog, Change, Command, LeaseId, Ledger, LedgerError, Millis, Outcome, SessionId, Wait,
};

use crate::model::{FEATURES, Line, REQUEST_VERSIONS, SESSION_IDS, config, lines};
use crate::util::{CONFIG, DAY, Durable, T0, client, secret, snapshot};

/// One step: let `Millis` pass, then apply a command or restart from the durable state.
#[derive(Debug, Clone)]
enum Step {
    Apply(Millis, Command),
    Restart(Millis),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let sid = (1..=SESSION_IDS).prop_map(SessionId);
    let lease = (1u64..=40).prop_map(LeaseId);
    let command = prop_oneof![
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
    ];
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
