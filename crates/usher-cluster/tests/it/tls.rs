//! The peer transport's authentication: a member whose key is not the one pinned for it
//! never joins, and plaintext on the peer port is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use usher_cluster::{Node, NodeId, PeerTls};
use usher_core::Entry;

use crate::cluster::{PATIENCE, TIMING};
use crate::util::{T0, identity, ledger, open, peer_tls};

/// Members 1, 2 and 3 on loopback, each started with the TLS configuration `tls` gives it.
async fn start(
    tls: impl Fn(NodeId) -> PeerTls,
) -> (
    BTreeMap<NodeId, Node>,
    BTreeMap<NodeId, SocketAddr>,
    Vec<TempDir>,
) {
    let mut nodes = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    let mut dirs = Vec::new();
    for id in 1..=3 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        addrs.insert(id, listener.local_addr().expect("bound address"));
        let dir = TempDir::new().expect("temporary directory");
        let node = Node::start(id, TIMING, dir.path(), ledger(), listener, tls(id))
            .await
            .expect("member starts");
        nodes.insert(id, node);
        dirs.push(dir);
    }
    nodes[&1].initialize(&addrs).await.expect("cluster forms");
    (nodes, addrs, dirs)
}

#[tokio::test]
async fn a_member_with_an_unpinned_key_never_joins_and_the_others_serve() {
    // Member 3 runs with a key that is not the one 1 and 2 pin for it (it does know
    // theirs): each side refuses the other, in both directions.
    let (nodes, _addrs, _dirs) = start(|id| {
        let mut tls = peer_tls(id, 1..=3);
        if id == 3 {
            tls.identity = identity(99);
        }
        tls
    })
    .await;
    let leader = nodes[&1]
        .wait_until(PATIENCE, |s| s.leader.is_some())
        .await
        .and_then(|s| s.leader)
        .expect("1 and 2 elect a leader");
    assert_ne!(leader, 3, "the unpinned member cannot win a vote");
    let applied = nodes[&leader]
        .write(Entry {
            at: T0,
            commands: vec![open(1, "ann")],
        })
        .await
        .expect("a majority of pinned members commits");
    assert_eq!(applied.outcomes.len(), 1);
    for id in [1, 2] {
        nodes[&id]
            .wait_until(PATIENCE, |s| s.leader == Some(leader))
            .await
            .expect("both pinned members follow the leader");
    }
    // Many heartbeats long: were it let in, member 3 would have learnt of the leader.
    let joined = nodes[&3]
        .wait_until(Duration::from_secs(3), |s| {
            s.leader.is_some() || s.applied.is_some()
        })
        .await;
    assert_eq!(joined, None, "the unpinned member received an append");
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn plaintext_on_the_peer_port_is_refused() {
    let (nodes, addrs, _dirs) = start(|id| peer_tls(id, 1..=3)).await;
    let mut stream = TcpStream::connect(addrs[&1])
        .await
        .expect("connect on loopback");
    // A frame as the plaintext transport sent it: a length prefix, then JSON.
    let body = br#"{"Vote":{}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream
        .write_all(&frame)
        .await
        .expect("send a plaintext frame");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the member closes the connection")
        .ok();
    // Nothing but, at most, a TLS alert record (content type 21).
    assert!(
        answer.first().is_none_or(|&b| b == 21),
        "a plaintext peer got an answer: {answer:?}"
    );
    for (_, node) in nodes {
        node.shutdown().await;
    }
}
