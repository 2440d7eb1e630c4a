//! Three members in one process on loopback: election, replication, and the loss of the
//! leader.

use std::collections::BTreeMap;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::TcpListener;
use usher_cluster::{Applied, Node, NodeId, Timing, WriteError};
use usher_core::{Command, Denial, Outcome};

use crate::util::{SEATS, T0, checkin, checkout, ledger, open, peer_tls};

/// Long enough for an election on a loaded machine; tests wait on conditions, never
/// this long unless something is wrong.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Election timeouts generous for a loaded two-core machine: no member should stand for
/// election while a healthy leader's heartbeats are merely late.
pub const TIMING: Timing = Timing {
    heartbeat_ms: 200,
    election_min_ms: 1_500,
    election_max_ms: 3_000,
};

/// Members 1, 2 and 3, each with its own directory, formed into one cluster.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(ledger).await
    }

    /// Members whose ledgers start as `ledger` makes them.
    pub async fn start_with(ledger: fn() -> usher_core::Ledger) -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port");
            listeners.insert(id, listener);
        }
        let addrs = listeners
            .iter()
            .map(|(&id, l)| (id, l.local_addr().expect("bound address")))
            .collect();
        let mut nodes = BTreeMap::new();
        let mut dirs = Vec::new();
        for (id, listener) in listeners {
            let dir = TempDir::new().expect("temporary directory");
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
            nodes.insert(id, node);
            dirs.push(dir);
        }
        nodes[&1].initialize(&addrs).await.expect("cluster forms");
        Cluster { nodes, _dirs: dirs }
    }

    /// The leader every remaining member agrees on, once they do (a member that was
    /// stopped is not one, even while the others still follow it).
    pub async fn leader(&self) -> NodeId {
        let first = self.nodes.values().next().expect("a member is left");
        let leader = first
            .wait_until(PATIENCE, |s| {
                s.leader.is_some_and(|l| self.nodes.contains_key(&l))
            })
            .await
            .and_then(|s| s.leader)
            .expect("a leader is elected");
        for node in self.nodes.values() {
            node.wait_until(PATIENCE, |s| s.leader == Some(leader))
                .await
                .expect("every member follows the leader");
        }
        leader
    }

    /// Writes `commands` at `time` through the leader, following it if it moves.
    async fn write(&self, time: u64, commands: Vec<Command>) -> Applied {
        let batch = usher_core::Entry { at: time, commands };
        let mut leader = self.leader().await;
        loop {
            match self.nodes[&leader].write(batch.clone()).await {
                Ok(applied) => return applied,
                // Refused before it was appended: safe to send to the new leader.
                Err(WriteError::NotLeader { .. }) => leader = self.leader().await,
                Err(e) => panic!("batch not applied: {e}"),
            }
        }
    }

    /// Waits until every member has applied up to `index`, then returns each member's
    /// seats in use.
    async fn seats_after(&self, index: u64) -> BTreeMap<NodeId, u32> {
        let mut seats = BTreeMap::new();
        for (&id, node) in &self.nodes {
            node.wait_until(PATIENCE, |s| s.applied >= Some(index))
                .await
                .expect("every member applies the log");
            let held = node
                .state_machine()
                .read(|ledger, _| ledger.pools_in_use().map(|(_, n)| n).sum());
            seats.insert(id, held);
        }
        seats
    }

    /// The index the leader's ledger has applied (everything written so far: a write
    /// returns once applied, though the Raft metrics may report it a moment later).
    async fn applied(&self) -> u64 {
        let leader = self.leader().await;
        self.nodes[&leader]
            .state_machine()
            .read(|_, applied| applied)
            .expect("the leader applied its writes")
    }
}

fn granted(applied: &Applied) -> usize {
    applied
        .outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Outcome::Granted(_))))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_no_seat_is_granted_twice() {
    let mut cluster = Cluster::start().await;

    // Three users ask for the two seats: two are granted, the third is refused.
    let first = cluster
        .write(
            T0,
            vec![
                open(1, "ann"),
                open(2, "bob"),
                open(3, "cy"),
                checkout(1, 11),
                checkout(2, 12),
                checkout(3, 13),
            ],
        )
        .await;
    assert_eq!(granted(&first), 2, "{first:?}");
    let index = cluster.applied().await;
    let seats = cluster.seats_after(index).await;
    assert!(
        seats.values().all(|&n| n == SEATS),
        "seats in use per member: {seats:?}"
    );

    // The leader is lost.
    let old = cluster.leader().await;
    cluster
        .nodes
        .remove(&old)
        .expect("the leader is a member")
        .shutdown()
        .await;
    let new = cluster.leader().await;
    assert_ne!(new, old);

    // The new leader knows both seats are held: a retried grant is the same lease, a new
    // checkout is refused, and only a checkin frees a seat for it.
    let retry = cluster
        .write(T0 + 5_000, vec![checkout(1, 11), checkout(3, 14)])
        .await;
    assert!(
        matches!(&retry.outcomes[0], Ok(Outcome::Granted(l)) if l.id.0 == 11),
        "{retry:?}"
    );
    assert!(
        matches!(
            &retry.outcomes[1],
            Ok(Outcome::Denied(Denial::AllInUse { .. }))
        ),
        "{retry:?}"
    );
    let freed = cluster
        .write(T0 + 6_000, vec![checkin(2, 12), checkout(3, 15)])
        .await;
    assert!(
        matches!(&freed.outcomes[1], Ok(Outcome::Granted(_))),
        "{freed:?}"
    );

    let index = cluster.applied().await;
    let seats = cluster.seats_after(index).await;
    assert!(
        seats.values().all(|&n| n == SEATS),
        "seats in use per member: {seats:?}"
    );
    let leases: Vec<Vec<u64>> = cluster
        .nodes
        .values()
        .map(|n| {
            n.state_machine()
                .read(|l, _| l.leases().map(|l| l.id.0).collect())
        })
        .collect();
    assert!(
        leases.iter().all(|l| l == &[11, 15]),
        "leases per member: {leases:?}"
    );

    for node in std::mem::take(&mut cluster.nodes).into_values() {
        node.shutdown().await;
    }
}
