//! A property test of the policy invariants under random policies and operations.

use proptest::prelude::*;
use usher_core::{Ask, Change, Command, LeaseId, Ledger, Policy, SessionId, Wait};

use super::table::GROUPS;
use crate::util::*;

/// Users are `user1..=user4`, hosts `host1..=host4`; the random policy draws on them.
fn rule() -> impl Strategy<Value = String> {
    let target = prop_oneof![
        (1u64..=4).prop_map(|n| format!("USER user{n}")),
        (1u64..=4).prop_map(|n| format!("HOST host{n}")),
        Just("GROUP eng".to_string()),
        Just("HOST_GROUP lab".to_string()),
    ];
    prop_oneof![
        target.clone().prop_map(|t| format!("EXCLUDE cad {t}")),
        target.clone().prop_map(|t| format!("INCLUDE cad {t}")),
        (1u32..=2, target.clone()).prop_map(|(n, t)| format!("RESERVE {n} cad {t}")),
        (1u32..=3, target.clone()).prop_map(|(n, t)| format!("MAX {n} cad {t}")),
        (1u32..=3, target).prop_map(|(n, t)| format!("PRIORITY {n} cad {t}")),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Checkout { client: u64, count: u32, wait: bool },
    Checkin { pick: usize },
    Close { client: u64 },
    Reload { rules: Vec<String> },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..=4, 1u32..=2, any::<bool>()).prop_map(|(client, count, wait)| Op::Checkout { client, count, wait }),
        4 => any::<usize>().prop_map(|pick| Op::Checkin { pick }),
        1 => (1u64..=4).prop_map(|client| Op::Close { client }),
        1 => proptest::collection::vec(rule(), 0..5).prop_map(|rules| Op::Reload { rules }),
        1 => Just(Op::Restart),
    ]
}

fn policy_of(rules: &[String]) -> Policy {
    let text = format!("{GROUPS}{}\n", rules.join("\n"));
    Policy::parse("opts", &text).expect("generated policies parse")
}

proptest! {
    #![proptest_config(crate::model::config())]

    /// With random policies, reloads and restarts: seats never exceed the count; no
    /// excluded client is granted; no grant leaves a `MAX` exceeded; a grant to a client
    /// outside every reservation never eats into seats reserved for others; and a queued
    /// checkout is granted past one waiting ahead of it only from seats reserved for it.
    #[test]
    fn policy_invariants_hold(
        rules in proptest::collection::vec(rule(), 0..5),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        const SEATS: u32 = 4;
        let mut policy = policy_of(&rules);
        let mut ledger = ledger(&[ent("cad", "2025", SEATS)]);
        ledger.set_policy(policy.clone());
        let mut now = T0;
        let mut lease = 100u64;
        for n in 1..=4 {
            session(&mut ledger, n, now);
        }
        for op in ops {
            now += 1000;
            let mut changes = Vec::new();
            let cmd = match op {
                Op::Checkout { client, count, wait } => {
                    if ledger.session(SessionId(client)).is_none() {
                        ledger.apply(now, open_cmd(client), &mut changes).expect("fresh");
                    }
                    lease += 1;
                    Command::Checkout {
                        ask: Ask {
                            session: SessionId(client),
                            lease_id: LeaseId(lease),
                            feature: "cad".into(),
                            version: String::new(),
                            count,
                            client_ref: lease,
                        },
                        wait: if wait { Wait::Forever } else { Wait::No },
                    }
                }
                Op::Checkin { pick } => {
                    let leases: Vec<_> = ledger.leases().cloned().collect();
                    if leases.is_empty() { continue; }
                    let l = &leases[pick % leases.len()];
                    Command::Checkin { session: l.session, lease_id: l.id }
                }
                Op::Close { client } => {
                    if ledger.session(SessionId(client)).is_none() { continue; }
                    Command::CloseSession { id: SessionId(client) }
                }
                Op::Reload { rules } => {
                    policy = policy_of(&rules);
                    ledger.set_policy(policy.clone());
                    Command::Expire
                }
                Op::Restart => {
                    let mut orphans = Vec::new();
                    let sessions: Vec<_> = ledger.sessions().cloned().collect();
                    let leases: Vec<_> = ledger.leases().cloned().collect();
                    ledger = Ledger::restore(ledger.catalog().clone(), CONFIG, sessions, leases, now, &mut orphans);
                    ledger.set_policy(policy.clone());
                    prop_assert!(orphans.is_empty());
                    continue;
                }
            };
            let before: Vec<_> = ledger.leases().cloned().collect();
            let waiting_before: Vec<_> = ledger.queued().map(|(r, _)| r.clone()).collect();
            let result = ledger.apply(now, cmd.clone(), &mut changes);
            prop_assert!(result.is_ok(), "{:?}: {:?}", cmd, result);
            let held: u32 = ledger.leases().map(|l| l.count).sum();
            for change in &changes {
                let Change::LeaseGranted(granted) = change else { continue };
                prop_assert!(held <= SEATS, "{} seats held of {}", held, SEATS);
                let session = ledger.session(granted.session).expect("grantee lives");
                let who = usher_core::Who::from(&session.client);
                prop_assert!(!policy.excluded("cad", &who), "excluded {:?} granted", session.client.user);
                for limit in policy.limits("cad") {
                    if !policy.matches(&limit.target, &who) { continue; }
                    let theirs: u32 = ledger
                        .leases()
                        .filter(|l| ledger.session(l.session).is_some_and(|s| policy.matches(&limit.target, &usher_core::Who::from(&s.client))))
                        .map(|l| l.count)
                        .sum();
                    prop_assert!(theirs <= limit.number, "MAX {} {} exceeded: {}", limit.number, limit.target, theirs);
                }
                let member = policy.reservations("cad").any(|r| policy.matches(&r.target, &who));
                if !member {
                    // Seats held by clients in no reservation never exceed the seats nobody
                    // reserved.
                    let reserved: u32 = policy.reservations("cad").map(|r| r.number).sum();
                    let outsiders: u32 = ledger
                        .leases()
                        .filter(|l| {
                            let c = &ledger.session(l.session).expect("holder lives").client;
                            !policy.reservations("cad").any(|r| policy.matches(&r.target, &usher_core::Who::from(c)))
                        })
                        .map(|l| l.count)
                        .sum();
                    prop_assert!(outsiders <= SEATS.saturating_sub(reserved), "outsiders hold {} with {} reserved of {}", outsiders, reserved, SEATS);
                }
                // Granted out of the queue past an earlier waiter: only from a reservation.
                if let Some(pos) = waiting_before.iter().position(|r| r.lease_id == granted.id) {
                    let overtaken = waiting_before[..pos]
                        .iter()
                        .any(|ahead| changes.iter().all(|c| !matches!(c, Change::Dequeued { request, .. } if request.lease_id == ahead.lease_id)));
                    prop_assert!(!overtaken || member, "{:?} overtook the queue {:?}", granted, waiting_before);
                }
            }
            let _ = before;
        }
    }
}
