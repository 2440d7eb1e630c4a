//! The usher ledger replicated over Raft ([openraft] 0.9), the foundation of a cluster of
//! three or five servers of which any majority serves.
//!
//! Every openraft type stays inside this crate, so that a move to another openraft
//! version touches one place. What is here:
//!
//! - [`TypeConfig`]: the Raft type configuration. The log's application entry is an
//!   [`usher_core::Entry`] (ledger commands the leader stamped with its time and their
//!   ids, as the single server's ledger task applies them); the response is [`Applied`],
//!   one outcome per command.
//! - [`LogStore`]: the durable Raft log in SQLite, on a worker thread of its own.
//! - [`StateMachine`]: applies committed entries to a [`usher_core::Ledger`] and builds
//!   and installs snapshots of it.
//! - [`network`]: the peer transport, length-prefixed JSON frames over mutually
//!   authenticated TLS 1.3 ([`PeerTls`]: each member's identity key pinned), every RPC
//!   under a hard deadline, over the streams of a [`network::PeerListener`] (TCP, or a
//!   simulated network's).
//! - [`Proposer`]: the leader's batching of client commands into stamped entries, with
//!   an expiry tick in each and a grace for every session when a new leader takes over.
//! - [`Node`]: one running member (all of the above plus its Raft instance), with an
//!   interface free of openraft types: start, form the cluster, add and remove members,
//!   write an entry, watch the leader and the replication, stop.
//!
//! `usherd` does not serve a cluster yet: see `docs/cluster.md` for what exists and what
//! is still to come.
//!
//! **Architecture invariant:** the state machine changes the ledger only through
//! [`usher_core::Ledger::apply_entry`], at the time recorded in the log entry, never reading a
//! clock, so every member that applies the same log holds the same ledger.
//!
//! **Architecture invariant:** an append, a vote and a truncation are durable (committed
//! to SQLite with `synchronous=FULL`) before openraft is told they are done, and
//! appends are reported done in the order they were made.

// openraft's storage and RPC traits return its own large error types (`StorageError`,
// `RPCError`), so every function on those paths does too.
#![allow(clippy::result_large_err)]

mod applied;
mod clock;
mod log_store;
pub mod network;
mod node;
mod peer_tls;
mod proposer;
mod state_machine;

pub use applied::Applied;
pub use log_store::LogStore;
pub use node::{MembershipError, Node, StartError, Status, Timing, WriteError};
pub use peer_tls::PeerTls;
pub use proposer::{Proposed, Proposer, ProposerConfig};
pub use state_machine::StateMachine;

/// The default peer port (TCP): 1648 is the client protocol's, 1649 the admin HTTP
/// listener's.
pub const DEFAULT_PEER_PORT: u16 = 1650;

/// A member's id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The Raft type configuration of an usher cluster.
    pub TypeConfig:
        D = usher_core::Entry,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft instance replicating the ledger.
pub type Raft = openraft::Raft<TypeConfig>;

/// A member's address as the cluster membership records it.
use openraft::BasicNode as Member;
