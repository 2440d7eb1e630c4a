//! A table of requests against policies with the expected grant or refusal, and the queue
//! order and reservations a policy sets.

use usher_core::{Change, Command, Denial, DequeueReason, LeaseId, Outcome, Policy, SessionId};

use crate::util::*;

/// A request in the table: which client (`client(n)`: user `user{n}`, host `host{n}`,
/// address `10.0.0.{n}`), how many seats, and what should happen.
struct Case {
    name: &'static str,
    policy: &'static str,
    /// Seats of `cad`.
    seats: u32,
    /// Checkouts made first, each expected to be granted: (client, seats).
    before: &'static [(u64, u32)],
    /// The request: (client, seats).
    request: (u64, u32),
    /// `Ok(())`: granted; `Err(denial)`: refused so.
    expect: Result<(), Denial>,
}

pub(super) const GROUPS: &str = "GROUP eng user1 user2\nHOST_GROUP lab host3 host4\n";

fn table() -> Vec<Case> {
    let all_in_use = |in_use, total| Err(Denial::AllInUse { in_use, total });
    vec![
        Case {
            name: "no policy",
            policy: "",
            seats: 2,
            before: &[],
            request: (1, 1),
            expect: Ok(()),
        },
        Case {
            name: "EXCLUDE USER",
            policy: "EXCLUDE cad USER user1",
            seats: 2,
            before: &[],
            request: (1, 1),
            expect: Err(Denial::Excluded),
        },
        Case {
            name: "EXCLUDE spares others",
            policy: "EXCLUDE cad USER user1",
            seats: 2,
            before: &[],
            request: (2, 1),
            expect: Ok(()),
        },
        Case {
            name: "EXCLUDE HOST",
            policy: "EXCLUDE cad HOST HOST1",
            seats: 2,
            before: &[],
            request: (1, 1),
            expect: Err(Denial::Excluded),
        },
        Case {
            name: "EXCLUDE INTERNET",
            policy: "EXCLUDE cad INTERNET 10.0.0.0/30",
            seats: 2,
            before: &[],
            request: (2, 1),
            expect: Err(Denial::Excluded),
        },
        Case {
            name: "EXCLUDE DISPLAY",
            policy: "EXCLUDE cad DISPLAY /dev/pts/1",
            seats: 2,
            before: &[],
            request: (2, 1),
            expect: Err(Denial::Excluded),
        },
        Case {
            name: "EXCLUDEALL",
            policy: "EXCLUDEALL USER user1",
            seats: 2,
            before: &[],
            request: (1, 1),
            expect: Err(Denial::Excluded),
        },
        Case {
            name: "EXCLUDE other feature",
            policy: "EXCLUDE sim USER user1",
            seats: 2,
            before: &[],
            request: (1, 1),
            expect: Ok(()),
        },
        Case {
            name: "INCLUDE lets in",
            policy: "INCLUDE cad USER user1",
            seats: 2,
            before: &[],
            request: (1, 1),
            expect: Ok(()),
        },
        Case {
            name: "INCLUDE keeps out",
            policy: "INCLUDE cad USER user1",
            seats: 2,
            before: &[],
            request: (2, 1),
            expect: Err(Denial::Excluded),
        },
        Case {
            name: "INCLUDE GROUP",
            policy: "INCLUDE cad GROUP eng",
            seats: 2,
            before: &[],
            request: (2, 1),
            expect: Ok(()),
        },
        Case {
            name: "INCLUDE HOST_GROUP",
            policy: "INCLUDE cad HOST_GROUP lab",
            seats: 2,
            before: &[],
            request: (2, 1),
            expect: Err(Denial::Excluded),
        },
        Case {
            name: "INCLUDEALL",
            policy: "INCLUDEALL USER user3",
            seats: 2,
            before: &[],
            request: (2, 1),
            expect: Err(Denial::Excluded),
        },
        Case {
            name: "EXCLUDE beats INCLUDE",
            policy: "INCLUDE cad USER user1\nEXCLUDE cad USER user1",
            seats: 2,
            before: &[],
            request: (1, 1),
            expect: Err(Denial::Excluded),
        },
        Case {
            name: "EXCLUDE beats RESERVE",
            policy: "RESERVE 1 cad USER user1\nEXCLUDE cad HOST host1",
            seats: 2,
            before: &[],
            request: (1, 1),
            expect: Err(Denial::Excluded),
        },
        Case {
            name: "RESERVE counts as INCLUDE",
            policy: "INCLUDE cad USER user2\nRESERVE 1 cad USER user1",
            seats: 2,
            before: &[],
            request: (1, 1),
            expect: Ok(()),
        },
        Case {
            name: "RESERVE keeps seats from others",
            policy: "RESERVE 1 cad USER user1",
            seats: 2,
            before: &[(2, 1)],
            request: (3, 1),
            expect: Err(Denial::Reserved { free: 1 }),
        },
        Case {
            name: "RESERVE serves its member",
            policy: "RESERVE 1 cad USER user1",
            seats: 2,
            before: &[(2, 1)],
            request: (1, 1),
            expect: Ok(()),
        },
        Case {
            name: "RESERVE for a GROUP",
            policy: "RESERVE 1 cad GROUP eng",
            seats: 2,
            before: &[(3, 1)],
            request: (2, 1),
            expect: Ok(()),
        },
        Case {
            name: "used RESERVE frees the rest",
            policy: "RESERVE 1 cad USER user1",
            seats: 3,
            before: &[(1, 1)],
            request: (2, 2),
            expect: Ok(()),
        },
        Case {
            name: "member beyond the RESERVE",
            policy: "RESERVE 1 cad USER user1",
            seats: 2,
            before: &[(1, 1), (2, 1)],
            request: (1, 1),
            expect: all_in_use(2, 2),
        },
        Case {
            name: "MAX USER",
            policy: "MAX 1 cad USER user1",
            seats: 3,
            before: &[(1, 1)],
            request: (1, 1),
            expect: Err(Denial::MaxReached {
                limit: 1,
                rule: "MAX 1 cad USER user1".into(),
            }),
        },
        Case {
            name: "MAX counts the request",
            policy: "MAX 2 cad USER user1",
            seats: 5,
            before: &[(1, 1)],
            request: (1, 2),
            expect: Err(Denial::MaxReached {
                limit: 2,
                rule: "MAX 2 cad USER user1".into(),
            }),
        },
        Case {
            name: "MAX GROUP as a whole",
            policy: "MAX 2 cad GROUP eng",
            seats: 5,
            before: &[(1, 1), (2, 1)],
            request: (1, 1),
            expect: Err(Denial::MaxReached {
                limit: 2,
                rule: "MAX 2 cad GROUP eng".into(),
            }),
        },
        Case {
            name: "MAX spares others",
            policy: "MAX 1 cad USER user1",
            seats: 3,
            before: &[(1, 1)],
            request: (2, 1),
            expect: Ok(()),
        },
        Case {
            name: "MAX HOST_GROUP",
            policy: "MAX 1 cad HOST_GROUP lab",
            seats: 3,
            before: &[(3, 1)],
            request: (4, 1),
            expect: Err(Denial::MaxReached {
                limit: 1,
                rule: "MAX 1 cad HOST_GROUP lab".into(),
            }),
        },
        Case {
            name: "MAX beats INCLUDE",
            policy: "INCLUDE cad USER user1\nMAX 1 cad USER user1",
            seats: 3,
            before: &[(1, 1)],
            request: (1, 1),
            expect: Err(Denial::MaxReached {
                limit: 1,
                rule: "MAX 1 cad USER user1".into(),
            }),
        },
        Case {
            name: "MAX_OVERDRAFT 0",
            policy: "MAX_OVERDRAFT cad 0",
            seats: 1,
            before: &[(1, 1)],
            request: (2, 1),
            expect: all_in_use(1, 1),
        },
        Case {
            name: "full without policy",
            policy: "",
            seats: 1,
            before: &[(1, 1)],
            request: (2, 1),
            expect: all_in_use(1, 1),
        },
    ]
}

#[test]
fn each_request_gets_the_grant_or_refusal_the_policy_says() {
    for case in table() {
        let text = format!("{GROUPS}{}\n", case.policy);
        let policy = Policy::parse("opts", &text).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let mut e = ent("cad", "2025", case.seats);
        // Every case may draw on an overdraft, so that MAX_OVERDRAFT has one to cap.
        e.attrs.push((
            "OVERDRAFT".into(),
            if case.policy.contains("MAX_OVERDRAFT") {
                "1"
            } else {
                "0"
            }
            .into(),
        ));
        let mut ledger = ledger(&[e]);
        ledger.set_policy(policy);
        for n in 1..=4 {
            session(&mut ledger, n, T0);
        }
        let mut lease = 100;
        for (client, count) in case.before {
            lease += 1;
            grant(
                &mut ledger,
                T0,
                SessionId(*client),
                lease,
                "cad",
                "",
                *count,
            );
        }
        let (client, count) = case.request;
        let (result, _) = apply(
            &mut ledger,
            T0,
            checkout_cmd(SessionId(client), 999, "cad", "", count),
        );
        match (&case.expect, result) {
            (Ok(()), Ok(Outcome::Granted(_))) => {}
            (Err(denial), Ok(Outcome::Denied(got))) if *denial == got => {}
            (expect, got) => panic!("{}: expected {expect:?}, got {got:?}", case.name),
        }
    }
}

#[test]
fn priority_orders_the_queue_then_arrival() {
    let policy = Policy::parse(
        "opts",
        "PRIORITY 2 cad USER user3\nPRIORITY 1 cad USER user4\n",
    )
    .unwrap();
    let mut ledger = ledger(&[ent("cad", "2025", 1)]);
    ledger.set_policy(policy);
    let s: Vec<SessionId> = (1..=4).map(|n| session(&mut ledger, n, T0)).collect();
    grant(&mut ledger, T0, s[0], 10, "cad", "", 1);
    for (i, session) in [s[1], s[2], s[3]].into_iter().enumerate() {
        let lease = 20 + i as u64;
        let cmd = waiting_cmd(session, lease, "cad", 1, lease);
        let (result, _) = apply(&mut ledger, T0 + i as u64, cmd);
        assert!(matches!(result, Ok(Outcome::Queued { .. })), "{result:?}");
    }
    // user4 (rank 1), then user3 (rank 2), then user2 (no rank) although it came first.
    let order: Vec<u64> = ledger.queued().map(|(r, _)| r.lease_id.0).collect();
    assert_eq!(order, vec![22, 21, 20]);
    let mut granted = Vec::new();
    let mut holder = (s[0], 10);
    for _ in 0..3 {
        let (_, changes) = apply(
            &mut ledger,
            T0 + 10,
            Command::Checkin {
                session: holder.0,
                lease_id: LeaseId(holder.1),
            },
        );
        let lease = changes
            .iter()
            .find_map(|c| match c {
                Change::Dequeued {
                    reason: DequeueReason::Granted(l),
                    ..
                } => Some(l.clone()),
                _ => None,
            })
            .expect("the next in line is granted");
        granted.push(lease.id.0);
        holder = (lease.session, lease.id.0);
    }
    assert_eq!(granted, vec![22, 21, 20]);
}

#[test]
fn a_member_takes_a_reserved_seat_past_a_waiting_queue() {
    let policy = Policy::parse("opts", "RESERVE 1 cad USER user3\n").unwrap();
    let mut ledger = ledger(&[ent("cad", "2025", 2)]);
    ledger.set_policy(policy);
    let s: Vec<SessionId> = (1..=3).map(|n| session(&mut ledger, n, T0)).collect();
    grant(&mut ledger, T0, s[0], 10, "cad", "", 1);
    let wait = waiting_cmd(s[1], 20, "cad", 1, 20);
    let (result, _) = apply(&mut ledger, T0, wait);
    assert!(
        matches!(result, Ok(Outcome::Queued { .. })),
        "the free seat is reserved: {result:?}"
    );
    let (result, _) = apply(&mut ledger, T0, checkout_cmd(s[2], 30, "cad", "", 1));
    assert!(
        matches!(result, Ok(Outcome::Granted(_))),
        "the member is not queued behind: {result:?}"
    );
}

#[test]
fn a_new_policy_revokes_nothing_and_applies_to_new_requests() {
    let mut ledger = ledger(&[ent("cad", "2025", 3)]);
    let s = session(&mut ledger, 1, T0);
    grant(&mut ledger, T0, s, 10, "cad", "", 2);
    ledger.set_policy(Policy::parse("opts", "EXCLUDE cad USER user1\n").unwrap());
    assert!(ledger.lease(LeaseId(10)).is_some(), "held seats stay held");
    let (result, _) = apply(&mut ledger, T0, checkout_cmd(s, 11, "cad", "", 1));
    assert_eq!(result, Ok(Outcome::Denied(Denial::Excluded)));
}
