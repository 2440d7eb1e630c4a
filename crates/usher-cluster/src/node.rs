//! One member of a cluster: its Raft instance, log, ledger and peer listener together,
//! behind an interface with no openraft types in it.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, RaftMetrics};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::peer_tls::PeerTlsConfig;
use crate::{
    Applied, LogStore, Member, NodeId, PeerTls, Proposer, ProposerConfig, Raft, StateMachine,
    network,
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

/// A running member.
pub struct Node {
    id: NodeId,
    raft: Raft,
    state: StateMachine,
    listener: JoinHandle<io::Result<()>>,
}

impl Node {
    /// Starts member `id` with its log and snapshot in `dir` and its ledger starting as
    /// `ledger`, serving its peers on `listener` over TLS, authenticated as `tls` says.
    pub async fn start(
        id: NodeId,
        timing: Timing,
        dir: &Path,
        ledger: usher_core::Ledger,
        listener: TcpListener,
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
            network::Network::new(id, tls.clone()),
            log,
            state.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let listener = tokio::spawn(network::serve(listener, raft.clone(), tls));
        Ok(Node {
            id,
            raft,
            state,
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
        Proposer::start(
            self.id,
            self.raft.clone(),
            self.state.clone(),
            config,
            crate::clock::system_clock_ms,
        )
    }

    /// This member's view of the cluster now.
    pub fn status(&self) -> Status {
        status(self.id, &self.raft.metrics().borrow())
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
                let now = status(self.id, &metrics.borrow_and_update());
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

fn status(id: NodeId, metrics: &RaftMetrics<NodeId, Member>) -> Status {
    Status {
        id,
        leader: metrics.current_leader,
        term: metrics.current_term,
        applied: metrics.last_applied.map(|log_id| log_id.index),
    }
}
