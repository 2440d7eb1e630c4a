//! One member of a cluster: its Raft instance, log, ledger and peer listener together,
//! behind an interface with no openraft types in it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, RaftMetrics, ServerState};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::peer_tls::PeerTlsConfig;
use crate::{
    Applied, LogStore, Member, NodeId, PeerTls, Proposer, ProposerConfig, Raft, StateMachine,
    network::{self, PeerListener},
};

/// The Raft timing of a member, in milliseconds.
///
/// A follower that hears nothing from a leader for a random time between the two
/// election timeouts stands for election; the leader's heartbeats must come well within
/// the smaller one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often the leader sends heartbeats.
    pub heartbeat_ms: u64,
    /// The shortest election timeout.
    pub election_min_ms: u64,
    /// The longest election timeout.
    pub election_max_ms: u64,
}

impl Default for Timing {
    /// A new leader within about a second of the old one's loss.
    fn default() -> Self {
        Timing {
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 600,
        }
    }
}

/// What a member knows about the cluster, from its own point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This member.
    pub id: NodeId,
    /// The leader this member follows (itself, if it leads), if it knows one.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// The index of the last log entry applied to this member's ledger.
    pub applied: Option<u64>,
    /// The index of the last log entry this member knows to be committed (held by a
    /// majority); `None` before any is, or once this member's Raft has stopped.
    pub committed: Option<u64>,
    /// The index of the last entry in this member's log.
    pub last_log: Option<u64>,
    /// The members that vote, in the membership this member uses (during a change, the
    /// old and the new voters together).
    pub voters: BTreeSet<NodeId>,
    /// The members that receive the log without voting (members being added).
    pub learners: BTreeSet<NodeId>,
    /// On the leader, every other member's replication lag: how many entries of the
    /// leader's log it does not hold yet (the leader's last log index minus the
    /// member's last matched one). Empty on a member that does not lead.
    pub lag: BTreeMap<NodeId, u64>,
}

/// Why a member could not start or join.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The log or the snapshot could not be opened.
    #[error("cannot open the cluster store: {0}")]
    Store(#[from] io::Error),
    /// The Raft timing is not valid (an election timeout not above the heartbeat...).
    #[error("invalid Raft timing: {0}")]
    Timing(String),
    /// The peer TLS configuration is not usable (the identity key cannot be loaded).
    #[error("peer TLS: {0}")]
    Tls(String),
    /// Raft refused to start or to form the cluster.
    #[error("raft: {0}")]
    Raft(String),
}

/// Why an entry was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// This member does not lead; the batch should go to the leader, if one is known.
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader {
        /// The leader, as far as this member knows.
        leader: Option<NodeId>,
    },
    /// The batch may or may not have been committed (the leader stepped down, or Raft
    /// stopped): only reading the ledger again tells.
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a membership change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// This member does not lead; the change should go to the leader, if one is known.
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader {
        /// The leader, as far as this member knows.
        leader: Option<NodeId>,
    },
    /// The id was a member's once and was removed: ids are never reused (a member
    /// replaced after losing its disk joins under a new id).
    #[error("member id {0} was removed from the cluster and is never reused; use a new id")]
    Retired(NodeId),
    /// This member has no identity key pinned for the id: it could not reach the new
    /// member. Every member's configuration must pin the new member's key first.
    #[error("member {0} has no pinned identity key; pin it on every member first")]
    NotPinned(NodeId),
    /// The id is not a member (nor a learner).
    #[error("{0} is not a member of the cluster")]
    NotMember(NodeId),
    /// The new member did not receive the leader's log in time (it is not running, not
    /// reachable, or too slow). It stays a learner, which never blocks the cluster: add
    /// it again once it runs, or remove it.
    #[error(
        "member {id} did not catch up in time (it holds the log up to {matched:?}, the \
         leader up to {leader_last:?}); it stays a learner: add it again or remove it"
    )]
    CatchUpTimeout {
        /// The member being added.
        id: NodeId,
        /// The last log index the leader knows it holds.
        matched: Option<u64>,
        /// The index it had to reach.
        leader_last: Option<u64>,
    },
    /// The change was proposed but not confirmed in time (a majority may be missing):
    /// [`Node::status`] tells whether it took effect.
    #[error("the membership change was not confirmed in time")]
    Timeout,
    /// Raft refused the change (another change in progress, or Raft stopped).
    #[error("raft: {0}")]
    Raft(String),
}

/// A running member.
pub struct Node {
    id: NodeId,
    raft: Raft,
    state: StateMachine,
    tls: PeerTlsConfig,
    listener: JoinHandle<io::Result<()>>,
}

impl Node {
    /// Starts member `id` with its log and snapshot in `dir` and its ledger starting as
    /// `ledger`, serving its peers on `listener` over TLS, authenticated as `tls` says
    /// (and dialling them the way the listener's type says: TCP for a
    /// [`tokio::net::TcpListener`]).
    pub async fn start<L: PeerListener>(
        id: NodeId,
        timing: Timing,
        dir: &Path,
        ledger: usher_core::Ledger,
        listener: L,
        tls: PeerTls,
    ) -> Result<Node, StartError> {
        let tls = PeerTlsConfig::new(&tls).map_err(|e| StartError::Tls(e.to_string()))?;
        let config = Config {
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            ..Config::default()
        }
        .validate()
        .map_err(|e| StartError::Timing(e.to_string()))?;
        let log = LogStore::open(&dir.join("raft-log.db"))?;
        let state = StateMachine::open(dir, ledger)?;
        let raft = Raft::new(
            id,
            Arc::new(config),
            network::Network::<L>::new(id, tls.clone()),
            log,
            state.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let listener = tokio::spawn(network::serve(listener, raft.clone(), tls.clone()));
        Ok(Node {
            id,
            raft,
            state,
            tls,
            listener,
        })
    }

    /// Forms a new cluster of `members` (ids and peer addresses), this member among them.
    /// Called once, on one member, when the cluster is first set up.
    pub async fn initialize(
        &self,
        members: &BTreeMap<NodeId, SocketAddr>,
    ) -> Result<(), StartError> {
        let members: BTreeMap<NodeId, Member> = members
            .iter()
            .map(|(&id, addr)| {
                (
                    id,
                    Member {
                        addr: addr.to_string(),
                    },
                )
            })
            .collect();
        self.raft
            .initialize(members)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))
    }

    /// Replicates `entry` and applies it, returning its outcomes once a majority holds
    /// it durably and this member (the leader) has applied it. The entry is applied as
    /// it is: its time and ids are the caller's (see [`Node::proposer`] for a proposer
    /// that stamps them).
    pub async fn write(&self, entry: usher_core::Entry) -> Result<Applied, WriteError> {
        write_entry(&self.raft, entry).await
    }

    /// Starts this member's proposer, which batches the commands submitted to it into
    /// entries while this member leads, stamped with the system clock.
    pub fn proposer(&self, config: ProposerConfig) -> Proposer {
        self.proposer_with_clock(config, crate::clock::system_clock_ms)
    }

    /// Starts this member's proposer with `clock` (milliseconds since the Unix epoch) in
    /// place of the system clock: a simulation's clock, so that ledger time follows
    /// simulated time.
    pub fn proposer_with_clock(
        &self,
        config: ProposerConfig,
        clock: fn() -> usher_core::Millis,
    ) -> Proposer {
        Proposer::start(
            self.id,
            self.raft.clone(),
            self.state.clone(),
            config,
            clock,
        )
    }

    /// Adds member `id`, listening for its peers at `addr`, to the cluster; on the
    /// leader only. The new member must be running (started, never initialized) with
    /// every member's key pinned, and its own key must be pinned on every member.
    ///
    /// The member first joins as a learner, receiving the log without voting, so a
    /// member that is down or slow never blocks the cluster; once it holds the leader's
    /// log up to where it stood when the learner was added, it becomes a voter through a
    /// joint membership (old and new voters must both agree on every entry until the
    /// change is committed). Gives up after `timeout`, leaving the learner in place if
    /// it did not catch up ([`MembershipError::CatchUpTimeout`]). Adding a member
    /// already in the cluster again is harmless; an id removed once is refused.
    pub async fn add(
        &self,
        id: NodeId,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), MembershipError> {
        let deadline = Instant::now() + timeout;
        self.lead().await?;
        if self.state.retired().contains(&id) {
            return Err(MembershipError::Retired(id));
        }
        if self.tls.connector(id).is_none() {
            return Err(MembershipError::NotPinned(id));
        }
        let member = Member {
            addr: addr.to_string(),
        };
        until(deadline, self.raft.add_learner(id, member, false))
            .await?
            .map_err(change_error)?;
        self.catch_up(id, deadline).await?;
        let voters = BTreeSet::from([id]);
        until(
            deadline,
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(voters), false),
        )
        .await?
        .map_err(change_error)?;
        Ok(())
    }

    /// Removes member `id` from the cluster; on the leader only. The membership without
    /// it is committed through a joint membership; the id is then retired for good. A
    /// leader may remove itself: it goes on leading until the new membership is
    /// committed, then steps down, and the remaining members elect a leader. Stop the
    /// removed member afterwards. Gives up after `timeout` ([`MembershipError::Timeout`]:
    /// [`Node::status`] tells whether the change took effect).
    pub async fn remove(&self, id: NodeId, timeout: Duration) -> Result<(), MembershipError> {
        let deadline = Instant::now() + timeout;
        self.lead().await?;
        let (voter, known) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            (
                membership.voter_ids().any(|v| v == id),
                membership.get_node(&id).is_some(),
            )
        };
        let ids = BTreeSet::from([id]);
        let change = if voter {
            ChangeMembers::RemoveVoters(ids)
        } else if known {
            ChangeMembers::RemoveNodes(ids)
        } else {
            return Err(MembershipError::NotMember(id));
        };
        until(deadline, self.raft.change_membership(change, false))
            .await?
            .map_err(change_error)?;
        Ok(())
    }

    /// Confirms that this member leads (a majority still follows it) and has applied
    /// everything committed before, so what its state machine says is current.
    async fn lead(&self) -> Result<(), MembershipError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(MembershipError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(e) => Err(MembershipError::Raft(e.to_string())),
        }
    }

    /// Waits until the leader's replication to learner `id` has reached the leader's
    /// last log index as it is now, or `deadline` passes.
    async fn catch_up(&self, id: NodeId, deadline: Instant) -> Result<(), MembershipError> {
        let mut metrics = self.raft.metrics();
        let target = metrics.borrow().last_log_index;
        let mut matched = None;
        let wait = async {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    let leader = leader_of(self.id, &m);
                    if leader != Some(self.id) {
                        return Err(MembershipError::NotLeader { leader });
                    }
                    matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).copied().flatten())
                        .map(|log_id| log_id.index);
                    if matched >= target {
                        return Ok(());
                    }
                }
                if metrics.changed().await.is_err() {
                    return Err(MembershipError::Raft("raft stopped".into()));
                }
            }
        };
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(done) => done,
            Err(_) => Err(MembershipError::CatchUpTimeout {
                id,
                matched,
                leader_last: target,
            }),
        }
    }

    /// This member's view of the cluster now.
    pub async fn status(&self) -> Status {
        let committed = self.committed().await;
        status(self.id, &self.raft.metrics().borrow(), committed)
    }

    /// The index of the last entry this member knows to be committed (`None` once its
    /// Raft has stopped): the Raft metrics do not carry it.
    async fn committed(&self) -> Option<u64> {
        self.raft
            .with_raft_state(|state| state.committed.map(|log_id| log_id.index))
            .await
            .ok()
            .flatten()
    }

    /// Waits until this member's view of the cluster satisfies `condition`, for at most
    /// `timeout`; returns the view that did, or `None` on timeout.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&Status) -> bool,
    ) -> Option<Status> {
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                let committed = self.committed().await;
                let now = status(self.id, &metrics.borrow_and_update(), committed);
                if condition(&now) {
                    return Some(now);
                }
                metrics.changed().await.ok()?;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// This member's ledger, as applied so far.
    pub fn state_machine(&self) -> &StateMachine {
        &self.state
    }

    /// Stops the member: it stops answering its peers and Raft stops.
    pub async fn shutdown(self) {
        self.listener.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
    }
}

/// Replicates and applies `entry` through `raft` (see [`Node::write`]).
pub(crate) async fn write_entry(
    raft: &Raft,
    entry: usher_core::Entry,
) -> Result<Applied, WriteError> {
    match raft.client_write(entry).await {
        Ok(response) => Ok(response.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            Err(WriteError::NotLeader {
                leader: forward.leader_id,
            })
        }
        Err(e) => Err(WriteError::Raft(e.to_string())),
    }
}

/// Runs `change` until `deadline`.
async fn until<T>(
    deadline: Instant,
    change: impl Future<Output = T>,
) -> Result<T, MembershipError> {
    tokio::time::timeout_at(deadline, change)
        .await
        .map_err(|_| MembershipError::Timeout)
}

/// The [`MembershipError`] of a refused membership change.
fn change_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            MembershipError::NotLeader {
                leader: forward.leader_id,
            }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::LearnerNotFound(e),
        )) => MembershipError::NotMember(e.node_id),
        e => MembershipError::Raft(e.to_string()),
    }
}

/// The leader member `id` follows (itself if it leads), as its `metrics` say. A leader
/// that removed itself keeps its vote, so the metrics still name it; it leads no more.
pub(crate) fn leader_of(id: NodeId, metrics: &RaftMetrics<NodeId, Member>) -> Option<NodeId> {
    metrics
        .current_leader
        .filter(|&leader| leader != id || metrics.state == ServerState::Leader)
}

fn status(id: NodeId, metrics: &RaftMetrics<NodeId, Member>, committed: Option<u64>) -> Status {
    let membership = metrics.membership_config.membership();
    // Entries in the log: one more than the last index (none before the first).
    let held = |index: Option<u64>| index.map_or(0, |i| i + 1);
    let last_log = held(metrics.last_log_index);
    let lag = metrics
        .replication
        .iter()
        .flatten()
        .filter(|&(&member, _)| member != id)
        .map(|(&member, matched)| {
            let matched = held(matched.map(|log_id| log_id.index));
            (member, last_log.saturating_sub(matched))
        })
        .collect();
    Status {
        id,
        leader: leader_of(id, metrics),
        term: metrics.current_term,
        applied: metrics.last_applied.map(|log_id| log_id.index),
        committed,
        last_log: metrics.last_log_index,
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        lag,
    }
}
