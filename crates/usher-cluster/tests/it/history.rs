//! Clients check seats out and in through the leader's proposer while the leader is
//! killed and restarted; a checker then reads the recorded history.
//!
//! What the checker holds the cluster to:
//! - the seats clients hold (from a grant's answer to the checkin's sending) never exceed
//!   the pool at any moment;
//! - a retried checkout (same session and client reference) always gets the same lease;
//! - every acknowledged grant not acknowledged as checked in is in every member's final
//!   ledger, and every lease there is one a client asked for;
//! - every member's ledger is the same at the same applied index.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::RwLock;
use usher_cluster::{Node, NodeId, Proposer, ProposerConfig, WriteError};
use usher_core::{Command, LedgerError, Outcome};

use crate::cluster::{PATIENCE, TIMING};
use crate::util::{SEATS, checkin, checkout, ledger, open, peer_tls};

/// How long one try may take before the client gives up on it and retries elsewhere.
const TRY: Duration = Duration::from_secs(5);

/// One member: its Raft node and its proposer.
struct Member {
    node: Node,
    proposer: Arc<Proposer>,
}

/// Three members whose leader can be killed and restarted from its directory.
struct Cluster {
    members: RwLock<BTreeMap<NodeId, Member>>,
    addrs: BTreeMap<NodeId, SocketAddr>,
    dirs: BTreeMap<NodeId, TempDir>,
}

async fn start_member(id: NodeId, dir: &TempDir, addr: SocketAddr) -> Member {
    // The port was this member's before it was killed; it is free again at once.
    let listener = TcpListener::bind(addr)
        .await
        .expect("bind the member's port");
    let node = Node::start(
        id,
        TIMING,
        dir.path(),
        ledger(),
        listener,
        peer_tls(id, 1..=3),
    )
    .await
    .expect("member starts");
    let proposer = Arc::new(node.proposer(ProposerConfig::default()));
    Member { node, proposer }
}

impl Cluster {
    async fn start() -> Cluster {
        let mut addrs = BTreeMap::new();
        let mut dirs = BTreeMap::new();
        for id in 1..=3 {
            let probe = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
            addrs.insert(id, probe.local_addr().expect("bound address"));
            dirs.insert(id, TempDir::new().expect("temporary directory"));
        }
        let mut members = BTreeMap::new();
        for (&id, &addr) in &addrs {
            members.insert(id, start_member(id, &dirs[&id], addr).await);
        }
        members[&1]
            .node
            .initialize(&addrs)
            .await
            .expect("cluster forms");
        Cluster {
            members: RwLock::new(members),
            addrs,
            dirs,
        }
    }

    /// The proposer of the member some running member believes leads, once one does.
    async fn leader(&self) -> (NodeId, Arc<Proposer>) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            {
                let members = self.members.read().await;
                let mut leader = None;
                for member in members.values() {
                    let known = member.node.status().await.leader;
                    if known.is_some_and(|l| members.contains_key(&l)) {
                        leader = known;
                        break;
                    }
                }
                if let Some(id) = leader {
                    return (id, members[&id].proposer.clone());
                }
            }
            assert!(Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the leader (its Raft stops; its files stay) and restarts it once another
    /// member leads.
    async fn kill_and_restart_the_leader(&self) {
        let (old, _) = self.leader().await;
        let member = self.members.write().await.remove(&old).expect("a member");
        drop(member.proposer);
        member.node.shutdown().await;
        let deadline = Instant::now() + PATIENCE;
        while self.leader().await.0 == old {
            assert!(Instant::now() < deadline, "no new leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let restarted = start_member(old, &self.dirs[&old], self.addrs[&old]).await;
        self.members.write().await.insert(old, restarted);
    }

    async fn stop(self) {
        for (_, member) in std::mem::take(&mut *self.members.write().await) {
            drop(member.proposer);
            member.node.shutdown().await;
        }
    }
}

/// What a client did and what it was told, in real time.
#[derive(Debug, Clone)]
enum Event {
    /// A checkout (session, client reference) was answered with a grant of `lease`.
    Granted {
        session: u64,
        client_ref: u64,
        lease: u64,
        at: Instant,
    },
    /// The client is about to send the checkin of `lease`: from here on it no longer
    /// counts the seat as its own.
    Releasing { lease: u64, at: Instant },
    /// The checkin of `lease` was acknowledged.
    Released { lease: u64 },
    /// A checkout (session, client reference) was sent (perhaps again).
    Asked { session: u64, client_ref: u64 },
}

type History = Arc<Mutex<Vec<Event>>>;

/// A member's ledger at the end: the index applied, the leases held, and every session
/// with its expiry (which heartbeats and checkouts move, so members agree on it only if
/// they applied the same entries at the same times).
#[derive(Debug, PartialEq, Eq)]
struct Final {
    applied: Option<u64>,
    leases: Vec<u64>,
    sessions: Vec<(u64, u64)>,
}

/// Sends `command` to the leader until it gets a definite answer: a try refused as not
/// the leader's is resent at once; a try that failed or timed out may or may not have
/// been applied, and is resent unchanged, which the command's ids make safe.
async fn definitely(cluster: &Cluster, command: Command) -> Result<Outcome, LedgerError> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "{command:?}: no answer");
        let (_, proposer) = cluster.leader().await;
        match tokio::time::timeout(TRY, proposer.submit(command.clone())).await {
            Ok(Ok(result)) => return result,
            Ok(Err(WriteError::NotLeader { .. } | WriteError::Raft(_))) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Client `session`: `rounds` times, check a seat out (waiting for one by retrying
/// while the pool is full), hold it a moment, and check it in.
async fn client(cluster: &Cluster, history: History, session: u64, rounds: u64) {
    let opened = definitely(cluster, open(session, &format!("u{session}"))).await;
    assert!(
        matches!(opened, Ok(Outcome::Done) | Err(LedgerError::IdInUse)),
        "{opened:?}"
    );
    let record = |e: Event| history.lock().expect("history lock").push(e);
    for round in 0..rounds {
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
            match definitely(cluster, command.clone()).await {
                Ok(Outcome::Granted(lease)) => break lease.id.0,
                Ok(Outcome::Denied(_)) => tokio::time::sleep(Duration::from_millis(30)).await,
                other => panic!("checkout: {other:?}"),
            }
        };
        record(Event::Granted {
            session,
            client_ref,
            lease,
            at: Instant::now(),
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        record(Event::Releasing {
            lease,
            at: Instant::now(),
        });
        match definitely(cluster, checkin(session, lease)).await {
            // A resent checkin whose first try was applied finds the lease gone.
            Ok(Outcome::Released(_) | Outcome::NotHeld) => record(Event::Released { lease }),
            other => panic!("checkin: {other:?}"),
        }
    }
}

/// The checker: what the recorded history and the members' final ledgers must satisfy.
fn check(events: &[Event], finals: &BTreeMap<NodeId, Final>) {
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
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    let mut open_grants: BTreeMap<u64, Instant> = BTreeMap::new();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_leader_kills_never_hold_more_seats_than_the_pool() {
    let cluster = Cluster::start().await;
    let history: History = Arc::default();
    // Four clients contend for the two seats while the leader is killed and restarted
    // three times, each kill once the clients have been granted a few more seats.
    const ROUNDS: u64 = 10;
    let clients = (1..=4).map(|session| client(&cluster, history.clone(), session, ROUNDS));
    let grants = || {
        history
            .lock()
            .expect("history lock")
            .iter()
            .filter(|e| matches!(e, Event::Granted { .. }))
            .count()
    };
    let kills = async {
        let mut killed_after = Vec::new();
        for k in 1..=3 {
            while grants() < k * 8 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            killed_after.push(grants());
            cluster.kill_and_restart_the_leader().await;
        }
        killed_after
    };
    let (_, killed_after) = tokio::join!(futures::future::join_all(clients), kills);
    // Every kill came in the middle of the clients' work, not after it.
    assert!(
        killed_after.iter().all(|&n| n < 4 * ROUNDS as usize),
        "kills after {killed_after:?} grants"
    );

    // The members' ledgers, read when all have applied the same index (a member that
    // was restarted last may still hold an election, and a new leader's first entries
    // move every index on: then they are read again).
    let deadline = Instant::now() + PATIENCE;
    let finals = loop {
        let members = cluster.members.read().await;
        let finals: BTreeMap<NodeId, Final> = members
            .iter()
            .map(|(&id, member)| {
                let state = member.node.state_machine().read(|ledger, applied| {
                    let mut sessions: Vec<(u64, u64)> =
                        ledger.sessions().map(|s| (s.id.0, s.expires_at)).collect();
                    sessions.sort();
                    Final {
                        applied,
                        leases: ledger.leases().map(|l| l.id.0).collect(),
                        sessions,
                    }
                });
                (id, state)
            })
            .collect();
        let indexes: BTreeSet<Option<u64>> = finals.values().map(|f| f.applied).collect();
        if indexes.len() == 1 {
            break finals;
        }
        assert!(
            Instant::now() < deadline,
            "members never agree on an index: {indexes:?}"
        );
        drop(members);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let events = history.lock().expect("history lock").clone();
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Granted { .. }))
            .count()
            == 4 * ROUNDS as usize,
        "every client's every round was granted"
    );
    check(&events, &finals);
    cluster.stop().await;
}
