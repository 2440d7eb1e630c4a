//! The leader's proposer: many clients batched into entries, lease ids stamped by the
//! leader, and a new leader's grace that keeps sessions through the election.

use std::collections::BTreeSet;

use usher_cluster::{Proposer, ProposerConfig, WriteError};
use usher_core::{Command, LedgerConfig, LedgerError, Outcome, SessionId};

use crate::cluster::Cluster;
use crate::util::{SEATS, checkin, checkout, ledger_with, open};

/// Sessions lapse one second after they are last heard from: shorter than any election
/// (a follower waits at least the cluster's shortest election timeout, 1.5 s, before it
/// stands), so only the new leader's grace can keep them.
fn short_lived() -> usher_core::Ledger {
    ledger_with(LedgerConfig {
        session_ttl: 1_000,
        reconnect_grace: 1_000,
        min_remove: 0,
    })
}

/// Submits `command` to the leader's proposer, following the leader if it moves.
async fn submit(
    cluster: &Cluster,
    proposers: &std::collections::BTreeMap<u64, Proposer>,
    command: Command,
) -> Result<Outcome, LedgerError> {
    loop {
        let leader = cluster.leader().await;
        match proposers[&leader].submit(command.clone()).await {
            Ok(result) => return result,
            Err(WriteError::NotLeader { .. }) => continue,
            Err(e) => panic!("{command:?} not applied: {e}"),
        }
    }
}

/// User `user` asks for a seat, with an idempotency key of its own and lease id 0: the
/// leader chooses the lease id.
fn ask(user: u64) -> Command {
    let mut command = checkout(user, 0);
    if let Command::Checkout { ask, .. } = &mut command {
        ask.client_ref = 100 + user;
    }
    command
}

fn lease_of(result: &Result<Outcome, LedgerError>) -> Option<u64> {
    match result {
        Ok(Outcome::Granted(lease)) => Some(lease.id.0),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_proposer_stamps_ids_and_a_new_leader_keeps_sessions_through_the_election() {
    let mut cluster = Cluster::start_with(short_lived).await;
    let mut proposers: std::collections::BTreeMap<u64, Proposer> = cluster
        .nodes
        .iter()
        .map(|(&id, node)| (id, node.proposer(ProposerConfig::default())))
        .collect();

    // Six clients at once: each opens a session and asks for a seat of the two. The
    // commands carry lease id 0; the leader stamps each checkout with its own.
    let users = 1..=6u64;
    let asks = users.clone().map(|user| {
        let (cluster, proposers) = (&cluster, &proposers);
        async move {
            let opened = submit(cluster, proposers, open(user, &format!("u{user}"))).await;
            assert_eq!(opened, Ok(Outcome::Done), "user {user}");
            submit(cluster, proposers, ask(user)).await
        }
    });
    let results = futures::future::join_all(asks).await;
    let granted: Vec<u64> = results.iter().filter_map(lease_of).collect();
    assert_eq!(granted.len(), SEATS as usize, "{results:?}");
    assert!(
        granted.iter().all(|&id| id > 0),
        "the leader chose the ids: {granted:?}"
    );

    // Every session is heard from, then the leader is lost at once.
    for user in users.clone() {
        let beat = submit(
            &cluster,
            &proposers,
            Command::Heartbeat {
                id: SessionId(user),
            },
        );
        assert_eq!(beat.await, Ok(Outcome::Done));
    }
    let old = cluster.leader().await;
    drop(proposers.remove(&old));
    cluster
        .nodes
        .remove(&old)
        .expect("the leader is a member")
        .shutdown()
        .await;

    // The election took longer than a session lives, yet the new leader's grace kept
    // every session and both seats.
    let new = cluster.leader().await;
    assert_ne!(new, old);
    for user in users.clone() {
        let beat = submit(
            &cluster,
            &proposers,
            Command::Heartbeat {
                id: SessionId(user),
            },
        );
        assert_eq!(
            beat.await,
            Ok(Outcome::Done),
            "user {user}'s session survived"
        );
    }
    let held = cluster.nodes[&new]
        .state_machine()
        .read(|ledger, _| ledger.leases().map(|l| l.id.0).collect::<BTreeSet<_>>());
    assert_eq!(held, granted.iter().copied().collect());

    // A retried checkout gets its original lease; a new grant gets an id no entry used.
    let holder = results
        .iter()
        .position(|r| lease_of(r).is_some())
        .expect("someone holds a seat") as u64
        + 1;
    let first = lease_of(&results[holder as usize - 1]).expect("granted");
    let retry = submit(&cluster, &proposers, ask(holder)).await;
    assert_eq!(lease_of(&retry), Some(first), "the retry is the same lease");
    let lease = cluster.nodes[&new]
        .state_machine()
        .read(|l, _| l.lease(usher_core::LeaseId(first)).cloned())
        .expect("held");
    assert_eq!(
        submit(&cluster, &proposers, checkin(holder, first)).await,
        Ok(Outcome::Released(lease))
    );
    let waiting = users
        .clone()
        .find(|&u| lease_of(&results[u as usize - 1]).is_none())
        .expect("someone was refused");
    let regrant = submit(&cluster, &proposers, ask(waiting)).await;
    let id = lease_of(&regrant).expect("the freed seat is granted");
    assert!(
        id > *granted.iter().max().expect("grants"),
        "a fresh id above every earlier one: {id} after {granted:?}"
    );

    drop(proposers);
    for node in std::mem::take(&mut cluster.nodes).into_values() {
        node.shutdown().await;
    }
}
