//! The history checker the failover tests share: clients that check seats out and in,
//! recording what they did and what they were told, and the properties the recorded
//! history and the members' final ledgers must satisfy.
//!
//! What the checker holds the cluster to:
//! - the seats clients hold (from a grant's answer to the checkin's sending) never exceed
//!   the pool at any moment;
//! - a retried checkout (same session and client reference) always gets the same lease;
//! - every acknowledged grant not acknowledged as checked in is in every member's final
//!   ledger, and every lease there is one a client asked for;
//! - every member's ledger is the same at the same applied index;
//! - with [`check_recovery`], a grant comes within a bound after every fault.
//!
//! Times are durations since the start of the test on the clock the clients share: real
//! time in a test over loopback, simulated time in a simulation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use usher_cluster::{NodeId, StateMachine};
use usher_core::{Command, LedgerError, Outcome};

use crate::util::{SEATS, checkin, checkout, open};

/// What a client did and what it was told, at what time.
#[derive(Debug, Clone)]
pub enum Event {
    /// A checkout (session, client reference) was answered with a grant of `lease`.
    Granted {
        session: u64,
        client_ref: u64,
        lease: u64,
        at: Duration,
    },
    /// The client is about to send the checkin of `lease`: from here on it no longer
    /// counts the seat as its own.
    Releasing { lease: u64, at: Duration },
    /// The checkin of `lease` was acknowledged.
    Released { lease: u64 },
    /// A checkout (session, client reference) was sent (perhaps again).
    Asked { session: u64, client_ref: u64 },
}

/// The events of every client, in the order they were recorded.
pub type History = Arc<Mutex<Vec<Event>>>;

/// How many grants `history` holds so far.
pub fn grants(history: &History) -> usize {
    history
        .lock()
        .expect("history lock")
        .iter()
        .filter(|e| matches!(e, Event::Granted { .. }))
        .count()
}

/// A member's ledger at the end: the index applied, the leases held, and every session
/// with its expiry (which heartbeats and checkouts move, so members agree on it only if
/// they applied the same entries at the same times).
#[derive(Debug, PartialEq, Eq)]
pub struct Final {
    pub applied: Option<u64>,
    pub leases: Vec<u64>,
    pub sessions: Vec<(u64, u64)>,
}

impl Final {
    /// What `state` holds now.
    pub fn of(state: &StateMachine) -> Final {
        state.read(|ledger, applied| {
            let mut sessions: Vec<(u64, u64)> =
                ledger.sessions().map(|s| (s.id.0, s.expires_at)).collect();
            sessions.sort();
            Final {
                applied,
                leases: ledger.leases().map(|l| l.id.0).collect(),
                sessions,
            }
        })
    }
}

/// What the clients talk to: a cluster, over whatever reaches it.
pub trait Service {
    /// Sends `command` until it gets a definite answer (resending it unchanged after a
    /// try that failed or timed out, which the command's ids make safe).
    async fn definitely(&self, command: Command) -> Result<Outcome, LedgerError>;

    /// The time now, since the start of the test.
    fn now(&self) -> Duration;
}

/// Client `session`: up to `rounds` times, and no more once `until` has passed, check a
/// seat out (waiting for one by retrying, with the same client reference, while the pool
/// is full), hold it a moment, and check it in.
pub async fn client(
    service: &impl Service,
    history: History,
    session: u64,
    rounds: u64,
    until: Duration,
) {
    let opened = service
        .definitely(open(session, &format!("u{session}")))
        .await;
    assert!(
        matches!(opened, Ok(Outcome::Done) | Err(LedgerError::IdInUse)),
        "{opened:?}"
    );
    let record = |e: Event| history.lock().expect("history lock").push(e);
    for round in 0..rounds {
        if service.now() >= until {
            break;
        }
        let client_ref = session * 1_000 + round + 1;
        let mut command = checkout(session, 0);
        if let Command::Checkout { ask, .. } = &mut command {
            ask.client_ref = client_ref;
        }
        let lease = loop {
            record(Event::Asked {
                session,
                client_ref,
            });
            match service.definitely(command.clone()).await {
                Ok(Outcome::Granted(lease)) => break lease.id.0,
                Ok(Outcome::Denied(_)) => tokio::time::sleep(Duration::from_millis(30)).await,
                other => panic!("checkout: {other:?}"),
            }
        };
        record(Event::Granted {
            session,
            client_ref,
            lease,
            at: service.now(),
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        record(Event::Releasing {
            lease,
            at: service.now(),
        });
        match service.definitely(checkin(session, lease)).await {
            // A resent checkin whose first try was applied finds the lease gone.
            Ok(Outcome::Released(_) | Outcome::NotHeld) => record(Event::Released { lease }),
            other => panic!("checkin: {other:?}"),
        }
    }
}

/// The checker: what the recorded history and the members' final ledgers must satisfy.
pub fn check(events: &[Event], finals: &BTreeMap<NodeId, Final>) {
    // Retries of one checkout always get the same lease; different checkouts different
    // leases.
    let mut by_ask: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut owners: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for e in events {
        if let Event::Granted {
            session,
            client_ref,
            lease,
            ..
        } = *e
        {
            let first = *by_ask.entry((session, client_ref)).or_insert(lease);
            assert_eq!(
                first, lease,
                "checkout {session}/{client_ref} got two leases"
            );
            let owner = *owners.entry(lease).or_insert((session, client_ref));
            assert_eq!(owner, (session, client_ref), "lease {lease} granted twice");
        }
    }

    // Seats held as the clients see them never exceed the pool.
    let mut edges: Vec<(Duration, i32)> = Vec::new();
    let mut open_grants: BTreeMap<u64, Duration> = BTreeMap::new();
    for e in events {
        match *e {
            Event::Granted { lease, at, .. } => {
                open_grants.insert(lease, at);
            }
            Event::Releasing { lease, at } => {
                let from = open_grants.remove(&lease).expect("released after granted");
                // Releases sort before grants at the same instant.
                edges.push((from, 1));
                edges.push((at, -1));
            }
            _ => {}
        }
    }
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let mut held = 0;
    for (at, delta) in edges {
        held += delta;
        assert!(held <= SEATS as i32, "{held} seats held at {at:?}");
    }

    // What every member holds at the end: the acknowledged grants not acknowledged as
    // released (none, as every client checked in), and nothing nobody asked for.
    let released: BTreeSet<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Released { lease } => Some(*lease),
            _ => None,
        })
        .collect();
    let still_held: BTreeSet<u64> = owners
        .keys()
        .filter(|l| !released.contains(l))
        .copied()
        .collect();
    let asked: BTreeSet<(u64, u64)> = events
        .iter()
        .filter_map(|e| match *e {
            Event::Asked {
                session,
                client_ref,
            } => Some((session, client_ref)),
            _ => None,
        })
        .collect();
    let mut first: Option<&Final> = None;
    for (id, state) in finals {
        let held: BTreeSet<u64> = state.leases.iter().copied().collect();
        assert!(
            still_held.is_subset(&held),
            "member {id} lost an acknowledged grant: {still_held:?} not all in {held:?}"
        );
        assert!(
            held.len() <= asked.len(),
            "member {id} holds leases nobody asked for"
        );
        match first {
            None => first = Some(state),
            Some(f) => assert_eq!(f, state, "members differ at the same applied index"),
        }
    }
}

/// After every fault (a kill, a partition, a heal) at the times `faults`, some client
/// was granted a seat within `bound`. Returns how long after each the next grant came.
pub fn check_recovery(
    events: &[Event],
    faults: &[(Duration, &str)],
    bound: Duration,
) -> Vec<Duration> {
    let granted: Vec<Duration> = events
        .iter()
        .filter_map(|e| match *e {
            Event::Granted { at, .. } => Some(at),
            _ => None,
        })
        .collect();
    faults
        .iter()
        .map(|&(fault, what)| {
            let next = granted.iter().filter(|&&at| at > fault).min();
            let delay = next.map(|&at| at - fault);
            assert!(
                delay.is_some_and(|delay| delay <= bound),
                "no grant within {bound:?} of {what} at {fault:?} (the next at {next:?})"
            );
            delay.unwrap_or_default()
        })
        .collect()
}
