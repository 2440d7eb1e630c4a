//! Members in one process on loopback: election, replication, and the loss of the
//! leader. [`Cluster`] is the helper the membership and proposer tests share too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// Every id a test member may have: each member pins the identity keys of all of them,
/// so any of them can be added.
pub const IDS: std::ops::RangeInclusive<NodeId> = 1..=5;

/// Members on loopback, each with its own directory and port, kept across a restart.
pub struct Cluster {
    /// The running members.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Every member's peer address, running or not.
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    dirs: BTreeMap<NodeId, TempDir>,
    ledger: fn() -> usher_core::Ledger,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(ledger).await
    }

    /// Members 1, 2 and 3, whose ledgers start as `ledger` makes them, formed into one
    /// cluster.
    pub async fn start_with(ledger: fn() -> usher_core::Ledger) -> Cluster {
        Cluster::form(1..=3, ledger).await
    }

    /// Members `ids`, whose ledgers start as `ledger` makes them, formed into one
    /// cluster.
    pub async fn form(
        ids: impl IntoIterator<Item = NodeId>,
        ledger: fn() -> usher_core::Ledger,
    ) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            addrs: BTreeMap::new(),
            dirs: BTreeMap::new(),
            ledger,
        };
        for id in ids {
            cluster.launch(id).await;
        }
        let (_, first) = cluster
            .nodes
            .first_key_value()
            .expect("one member at least");
        first
            .initialize(&cluster.addrs)
            .await
            .expect("cluster forms");
        cluster
    }

    /// Starts member `id` from its directory on its port (new ones if it has none yet),
    /// without making it a member of anything: it waits to be added, or rejoins the
    /// cluster its files say it is in. Returns its peer address.
    pub async fn launch(&mut self, id: NodeId) -> SocketAddr {
        let listener = match self.addrs.get(&id) {
            Some(&addr) => bind_again(addr).await,
            None => TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port"),
        };
        let addr = listener.local_addr().expect("bound address");
        self.addrs.insert(id, addr);
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| TempDir::new().expect("temporary directory"));
        let node = Node::start(
            id,
            TIMING,
            dir.path(),
            (self.ledger)(),
            listener,
            peer_tls(id, IDS),
        )
        .await
        .expect("member starts");
        self.nodes.insert(id, node);
        addr
    }

    /// Stops member `id` (its files stay, for [`Cluster::launch`] to restart it).
    pub async fn stop(&mut self, id: NodeId) {
        self.nodes
            .remove(&id)
            .expect("a running member")
            .shutdown()
            .await;
    }

    /// Stops every member.
    pub async fn stop_all(&mut self) {
        for node in std::mem::take(&mut self.nodes).into_values() {
            node.shutdown().await;
        }
    }

    /// The leader every running voter agrees on, once they do (a member that was
    /// stopped is not one, even while the others still follow it).
    pub async fn leader(&self) -> NodeId {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for node in self.nodes.values() {
                let status = node.status().await;
                if status.leader != Some(status.id) {
                    continue;
                }
                let mut followed = true;
                for voter in &status.voters {
                    if let Some(voter) = self.nodes.get(voter) {
                        followed &= voter.status().await.leader == Some(status.id);
                    }
                }
                if followed {
                    return status.id;
                }
            }
            assert!(Instant::now() < deadline, "no leader every voter follows");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes `commands` at `time` through the leader, following it if it moves.
    pub async fn write(&self, time: u64, commands: Vec<Command>) -> Applied {
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
    pub async fn seats_after(&self, index: u64) -> BTreeMap<NodeId, u32> {
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
    pub async fn applied(&self) -> u64 {
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

    cluster.stop_all().await;
}

/// Binds `addr` again, the port of a member that was stopped: free once its listener
/// task has ended, which may take a moment after the member stops.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "port not free yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    }
}
