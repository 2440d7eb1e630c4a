//! Membership changes: members added through a learner, removed (the leader too), ids
//! never reused, and the status an operator reads.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use usher_cluster::{MembershipError, NodeId, ProposerConfig, WriteError};

use crate::cluster::{Cluster, PATIENCE};
use crate::util::{T0, ledger, open};

/// How long a learner that cannot catch up is waited for before `add` gives up.
const CATCH_UP: Duration = Duration::from_secs(3);

/// Writes, through the leader, an entry opening session `id`.
async fn write_one(cluster: &Cluster, id: u64) {
    let applied = cluster.write(T0 + id, vec![open(id, "ann")]).await;
    assert_eq!(applied.outcomes.len(), 1, "{applied:?}");
}

/// The sessions member `id`'s ledger holds, once it has applied up to `index`.
async fn sessions(cluster: &Cluster, id: NodeId, index: u64) -> Vec<u64> {
    let node = &cluster.nodes[&id];
    node.wait_until(PATIENCE, |s| s.applied >= Some(index))
        .await
        .expect("the member applies the log");
    let mut held: Vec<u64> = node
        .state_machine()
        .read(|ledger, _| ledger.sessions().map(|s| s.id.0).collect());
    held.sort_unstable();
    held
}

/// A loopback address nothing listens on.
async fn unused_addr() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    probe.local_addr().expect("bound address")
}

/// The leader of `cluster` and one of its followers.
async fn leader_and_follower(cluster: &Cluster) -> (NodeId, NodeId) {
    let leader = cluster.leader().await;
    let follower = cluster.nodes.keys().copied().find(|&id| id != leader);
    (leader, follower.expect("a follower"))
}

fn ids(ids: impl IntoIterator<Item = NodeId>) -> BTreeSet<NodeId> {
    ids.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grows_from_one_member_to_three_under_writes() {
    let mut cluster = Cluster::form([1], ledger).await;
    assert_eq!(cluster.leader().await, 1);
    for session in 1..=20 {
        write_one(&cluster, session).await;
    }
    let addr2 = cluster.launch(2).await;
    let addr3 = cluster.launch(3).await;

    // Writes go on while 2 and 3 join, each first as a learner catching up.
    let added = Cell::new(false);
    let writes = async {
        let mut written = 0;
        for session in 100..1_100 {
            write_one(&cluster, session).await;
            written += 1;
            if added.get() {
                break;
            }
        }
        written
    };
    let adds = async {
        let leader = &cluster.nodes[&1];
        leader.add(2, addr2, PATIENCE).await?;
        leader.add(3, addr3, PATIENCE).await?;
        added.set(true);
        Ok::<_, MembershipError>(())
    };
    let (written, adds) = tokio::join!(writes, adds);
    adds.expect("2 and 3 join");
    assert!(written >= 1);

    let status = cluster.nodes[&1].status().await;
    assert_eq!(status.voters, ids([1, 2, 3]), "{status:?}");
    assert!(status.learners.is_empty(), "{status:?}");
    let index = cluster.applied().await;
    let expected = sessions(&cluster, 1, index).await;
    assert_eq!(expected.len(), 20 + written, "{expected:?}");
    for id in [2, 3] {
        assert_eq!(sessions(&cluster, id, index).await, expected, "member {id}");
    }

    // 2 and 3 are voters: without 1 they elect a leader and commit.
    cluster.stop(1).await;
    let leader = cluster.leader().await;
    assert_ne!(leader, 1);
    write_one(&cluster, 2_000).await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_that_cannot_catch_up_does_not_block_the_cluster_and_add_times_out() {
    let mut cluster = Cluster::start_with(ledger).await;
    let (leader, follower) = leader_and_follower(&cluster).await;

    // Only the leader changes the membership.
    let refused = cluster.nodes[&follower]
        .add(4, unused_addr().await, CATCH_UP)
        .await;
    assert_eq!(
        refused,
        Err(MembershipError::NotLeader {
            leader: Some(leader)
        })
    );
    // A member whose key nobody pins could never be reached.
    let unpinned = cluster.nodes[&leader]
        .add(9, unused_addr().await, CATCH_UP)
        .await;
    assert_eq!(unpinned, Err(MembershipError::NotPinned(9)));

    // Member 4 is partitioned: its port accepts connections but nothing ever answers.
    // Member 5 is not running at all. The cluster commits while each is being added.
    let hung = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let hung_addr = hung.local_addr().expect("bound address");
    cluster.addrs.insert(4, hung_addr);
    for (id, addr, session) in [(4, hung_addr, 1), (5, unused_addr().await, 2)] {
        let (added, ()) = tokio::join!(
            cluster.nodes[&leader].add(id, addr, CATCH_UP),
            write_one(&cluster, session)
        );
        assert!(
            matches!(added, Err(MembershipError::CatchUpTimeout { id: i, .. }) if i == id),
            "{added:?}"
        );
        write_one(&cluster, session + 10).await;
    }
    let status = cluster.nodes[&leader].status().await;
    assert_eq!(status.voters, ids([1, 2, 3]), "{status:?}");
    assert_eq!(status.learners, ids([4, 5]), "{status:?}");

    // Once 4 runs, adding it again completes; 5 is given up and removed.
    drop(hung);
    cluster.launch(4).await;
    cluster.nodes[&leader]
        .add(4, hung_addr, PATIENCE)
        .await
        .expect("4 catches up and joins");
    cluster.nodes[&leader]
        .remove(5, PATIENCE)
        .await
        .expect("the learner 5 is removed");
    let status = cluster.nodes[&leader].status().await;
    assert_eq!(status.voters, ids([1, 2, 3, 4]), "{status:?}");
    assert!(status.learners.is_empty(), "{status:?}");
    let index = cluster.applied().await;
    assert_eq!(sessions(&cluster, 4, index).await, [1, 2, 11, 12]);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_follower_leaves_two_that_serve_and_its_id_is_never_reused() {
    let mut cluster = Cluster::start_with(ledger).await;
    let (leader, removed) = leader_and_follower(&cluster).await;
    write_one(&cluster, 1).await;
    cluster.nodes[&leader]
        .remove(removed, PATIENCE)
        .await
        .expect("the follower is removed");
    cluster.stop(removed).await;
    let status = cluster.nodes[&leader].status().await;
    let remaining = ids(cluster.nodes.keys().copied());
    assert_eq!(status.voters, remaining, "{status:?}");
    assert!(status.learners.is_empty(), "{status:?}");
    write_one(&cluster, 2).await;

    // Its id is retired, even with a fresh disk behind it.
    let addr = cluster.addrs[&removed];
    let again = cluster.nodes[&leader].add(removed, addr, PATIENCE).await;
    assert_eq!(again, Err(MembershipError::Retired(removed)));
    let twice = cluster.nodes[&leader].remove(removed, PATIENCE).await;
    assert_eq!(twice, Err(MembershipError::NotMember(removed)));

    // Also once both remaining members are restarted from their files.
    for &id in &remaining {
        cluster.stop(id).await;
    }
    for &id in &remaining {
        cluster.launch(id).await;
    }
    let leader = cluster.leader().await;
    let again = cluster.nodes[&leader].add(removed, addr, PATIENCE).await;
    assert_eq!(again, Err(MembershipError::Retired(removed)));
    write_one(&cluster, 3).await;
    let status = cluster.nodes[&leader].status().await;
    assert_eq!(status.voters, remaining, "{status:?}");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_removes_itself_and_the_others_elect_a_new_one() {
    let mut cluster = Cluster::start_with(ledger).await;
    let old = cluster.leader().await;
    let proposer = cluster.nodes[&old].proposer(ProposerConfig::default());
    write_one(&cluster, 1).await;
    cluster.nodes[&old]
        .remove(old, PATIENCE)
        .await
        .expect("the leader removes itself");
    // It steps down once the membership without it is committed, and the others elect
    // a leader among themselves, while it still runs.
    let stepped_down = cluster.nodes[&old]
        .wait_until(PATIENCE, |s| s.leader != Some(old))
        .await
        .expect("the removed leader steps down");
    assert!(!stepped_down.voters.contains(&old), "{stepped_down:?}");
    let new = cluster.leader().await;
    assert_ne!(new, old);
    // Its proposer knows it leads no more, though its vote still names it.
    let refused = tokio::time::timeout(PATIENCE, proposer.submit(open(3, "bob")))
        .await
        .expect("the removed leader's proposer answers");
    assert!(
        matches!(refused, Err(WriteError::NotLeader { .. })),
        "{refused:?}"
    );
    drop(proposer);
    cluster.stop(old).await;
    write_one(&cluster, 2).await;
    let status = cluster.nodes[&new].status().await;
    assert_eq!(
        status.voters,
        ids(cluster.nodes.keys().copied()),
        "{status:?}"
    );
    let again = cluster.nodes[&new]
        .add(old, cluster.addrs[&old], PATIENCE)
        .await;
    assert_eq!(again, Err(MembershipError::Retired(old)));
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_commit_apply_and_replication_lag() {
    let mut cluster = Cluster::start_with(ledger).await;
    let leader = cluster.leader().await;
    for session in 1..=10 {
        write_one(&cluster, session).await;
    }
    let followers: Vec<NodeId> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|&id| id != leader)
        .collect();

    // Quiet after the writes: everything committed is applied, and no follower lags.
    let settled = cluster.nodes[&leader]
        .wait_until(PATIENCE, |s| {
            s.committed.is_some()
                && s.committed == s.last_log
                && s.applied == s.committed
                && s.lag.len() == 2
                && s.lag.values().all(|&lag| lag == 0)
        })
        .await
        .expect("the leader's status settles");
    assert_eq!(settled.leader, Some(leader));
    assert_eq!(ids(settled.lag.keys().copied()), ids(followers.clone()));
    assert!(settled.term >= 1);
    let last = settled.last_log.expect("entries were written");
    for &id in &followers {
        let status = cluster.nodes[&id]
            .wait_until(PATIENCE, |s| s.applied == Some(last))
            .await
            .expect("the follower applies everything");
        assert_eq!(status.leader, Some(leader));
        assert_eq!(status.term, settled.term);
        assert!(status.lag.is_empty(), "only the leader knows the lag");
        assert!(status.committed <= Some(last), "{status:?}");
    }

    // A stopped follower lags by at least the entries written since.
    let stopped = followers[0];
    cluster.stop(stopped).await;
    for session in 11..=15 {
        write_one(&cluster, session).await;
    }
    let status = cluster.nodes[&leader]
        .wait_until(PATIENCE, |s| s.lag.get(&followers[1]) == Some(&0))
        .await
        .expect("the running follower keeps up");
    assert!(status.lag[&stopped] >= 5, "{status:?}");
    assert!(status.committed >= Some(last + 5), "{status:?}");
    cluster.stop_all().await;
}
