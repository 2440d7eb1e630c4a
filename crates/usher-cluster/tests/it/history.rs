//! Clients check seats out and in through the leader's proposer while the leader is
//! killed and restarted; the checker (see [`crate::checker`]) then reads the recorded
//! history.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::RwLock;
use usher_cluster::{Node, NodeId, Proposer, ProposerConfig, WriteError};
use usher_core::{Command, LedgerError, Outcome};

use crate::checker::{Event, Final, History, Service, check, client, grants};
use crate::cluster::{PATIENCE, TIMING};
use crate::util::{ledger, peer_tls};

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
    /// When the clients started.
    started: Instant,
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
            started: Instant::now(),
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

impl Service for Cluster {
    /// Sends `command` to the leader until it gets a definite answer: a try refused as
    /// not the leader's is resent at once; a try that failed or timed out may or may not
    /// have been applied, and is resent unchanged, which the command's ids make safe.
    async fn definitely(&self, command: Command) -> Result<Outcome, LedgerError> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "{command:?}: no answer");
            let (_, proposer) = self.leader().await;
            match tokio::time::timeout(TRY, proposer.submit(command.clone())).await {
                Ok(Ok(result)) => return result,
                Ok(Err(WriteError::NotLeader { .. } | WriteError::Raft(_))) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_leader_kills_never_hold_more_seats_than_the_pool() {
    let cluster = Cluster::start().await;
    let history: History = Arc::default();
    // Four clients contend for the two seats while the leader is killed and restarted
    // three times, each kill once the clients have been granted a few more seats.
    const ROUNDS: u64 = 10;
    let clients =
        (1..=4).map(|session| client(&cluster, history.clone(), session, ROUNDS, Duration::MAX));
    let grants = || grants(&history);
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
            .map(|(&id, member)| (id, Final::of(member.node.state_machine())))
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
