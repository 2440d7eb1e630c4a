//! The peer transport: Raft's three RPCs between members over mutually authenticated TLS 1.3.
//!
//! Each message is a frame: a 4-byte big-endian length, then that many bytes of JSON. A
//! member keeps one connection per peer and sends one request at a time on it, each
//! answered by one response. Every RPC runs under openraft's hard deadline for it: a
//! peer that accepts a connection but never answers must not hold the Raft core up
//! (openraft#1810). After any failure the connection is dropped and the next RPC
//! connects afresh.
//!
//! Every connection is TLS 1.3, both sides authenticated by their identity keys pinned in
//! the cluster configuration (see [`crate::PeerTls`]): a peer whose key is not pinned, one
//! that cannot sign with the pinned key, or one speaking plaintext is refused (logged,
//! rate-limited) before any frame of it is read, so it never reaches openraft. The
//! dialling side's handshake runs under the RPC's deadline; the listening side gives a
//! handshake `HANDSHAKE_TIMEOUT` (5 s).
//!
//! The connections themselves come from a [`PeerListener`]: a member listens on one and
//! dials its peers the way it says. A member serves its peers over TCP
//! ([`tokio::net::TcpListener`]); a simulation of the network may supply another, and
//! everything above the byte stream (TLS, frames, deadlines) stays the same.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;

use crate::peer_tls::{self, PeerTlsConfig};
use crate::{Member, NodeId, Raft, TypeConfig};

/// The largest frame accepted (a snapshot chunk is far smaller): a bigger length prefix
/// is refused instead of allocated.
const MAX_FRAME: u32 = 64 << 20;

/// How long a peer may take to accept a connection before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a peer connecting to this member may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a member's peer connections come from: the listener it accepts its peers on, and
/// the way it dials one.
pub trait PeerListener: Send + Sync + 'static {
    /// A connection between two members, either way.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static;

    /// Waits for the next peer to connect; returns the connection and where it comes
    /// from. An error ends the listening.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// Connects to the member listening at `addr` (with no deadline of its own: the
    /// caller bounds it).
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Peers over TCP, with Nagle's algorithm off (every frame is a whole request or answer).
impl PeerListener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY not set on a peer connection");
        }
        Ok((stream, peer))
    }

    async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// A request from one member to another.
#[derive(Debug, Serialize, Deserialize)]
enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`PeerRequest`], of the same kind.
#[derive(Debug, Serialize, Deserialize)]
enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
}

/// Serves the Raft RPCs that pinned members send to `raft` on `listener`, until the
/// listener fails. Each connection is served by a task of its own, owned by this one:
/// aborting this task closes every peer connection too.
pub(crate) async fn serve<L: PeerListener>(
    listener: L,
    raft: Raft,
    tls: PeerTlsConfig,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                connections.spawn(accept(stream, peer, raft.clone(), tls.clone()));
            }
            Some(done) = connections.join_next() => {
                if let Ok(Err(e)) = done {
                    tracing::debug!(error = %e, "peer connection closed");
                }
            }
        }
    }
}

/// Completes the TLS handshake of a peer connecting from `peer`, then serves it; refuses
/// (and logs) one that is not a pinned member over TLS 1.3.
async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    raft: Raft,
    tls: PeerTlsConfig,
) -> io::Result<()> {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tls.refused(&peer, &e);
            return Ok(());
        }
        Err(_) => {
            tls.refused(&peer, &"no TLS handshake in time");
            return Ok(());
        }
    };
    serve_connection(stream, raft).await
}

/// Answers one authenticated peer's requests, in order, until it hangs up.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: tokio_rustls::server::TlsStream<S>,
    raft: Raft,
) -> io::Result<()> {
    let mut stream = BufReader::new(stream);
    while let Some(request) = read_frame::<PeerRequest>(&mut stream).await? {
        let response = match request {
            PeerRequest::AppendEntries(rpc) => {
                PeerResponse::AppendEntries(raft.append_entries(rpc).await)
            }
            PeerRequest::Vote(rpc) => PeerResponse::Vote(raft.vote(rpc).await),
            PeerRequest::InstallSnapshot(rpc) => {
                PeerResponse::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
        };
        write_frame(stream.get_mut(), &response).await?;
    }
    Ok(())
}

/// Makes a [`Peer`] client for each member openraft replicates to, dialling as `L` does.
pub(crate) struct Network<L> {
    /// This member's id.
    id: NodeId,
    /// The pinned keys of the members it may reach, and its own.
    tls: PeerTlsConfig,
    dial: PhantomData<fn() -> L>,
}

impl<L> Network<L> {
    /// The network of member `id`.
    pub(crate) fn new(id: NodeId, tls: PeerTlsConfig) -> Network<L> {
        Network {
            id,
            tls,
            dial: PhantomData,
        }
    }
}

impl<L: PeerListener> RaftNetworkFactory<TypeConfig> for Network<L> {
    type Network = Peer<L>;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer<L> {
        Peer {
            id: self.id,
            target,
            addr: node.addr.clone(),
            tls: self.tls.clone(),
            conn: None,
        }
    }
}

/// The connection to one peer, opened on first use and after any failure.
pub(crate) struct Peer<L: PeerListener> {
    id: NodeId,
    target: NodeId,
    addr: String,
    /// The pinned keys (the target's connector accepts only the target's).
    tls: PeerTlsConfig,
    conn: Option<BufReader<TlsStream<L::Stream>>>,
}

/// What can go wrong with one RPC, before it is sorted into openraft's error kinds.
enum Failure {
    /// No connection could be made: back off before retrying.
    Unreachable(io::Error),
    /// The connection failed mid-exchange: retry at once on a new one.
    Network(io::Error),
    /// The deadline passed.
    Timeout,
}

impl<L: PeerListener> Peer<L> {
    /// Sends `request` and waits for its response, within `deadline`.
    async fn call(
        &mut self,
        request: &PeerRequest,
        deadline: Duration,
    ) -> Result<PeerResponse, Failure> {
        let result = tokio::time::timeout(deadline, self.exchange(request)).await;
        let result = result.unwrap_or(Err(Failure::Timeout));
        if result.is_err() {
            // A half-written request or a late response would desynchronize the stream.
            self.conn = None;
        }
        result
    }

    async fn exchange(&mut self, request: &PeerRequest) -> Result<PeerResponse, Failure> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self
                .conn
                .insert(connect::<L>(&self.addr, self.target, &self.tls).await?),
        };
        write_frame(conn.get_mut(), request)
            .await
            .map_err(Failure::Network)?;
        match read_frame(conn).await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(Failure::Network(io::ErrorKind::UnexpectedEof.into())),
            Err(e) => Err(Failure::Network(e)),
        }
    }

    /// The error openraft expects for `failure` of an RPC of type `action`.
    fn rpc_error<E: std::error::Error>(
        &self,
        failure: Failure,
        action: RPCTypes,
        deadline: Duration,
    ) -> RPCError<NodeId, Member, E> {
        match failure {
            Failure::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            Failure::Network(e) => RPCError::Network(NetworkError::new(&e)),
            Failure::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout: deadline,
            }),
        }
    }

    /// Sends `request`, of type `action`, under `option`'s hard deadline; `unpack` takes
    /// the answer out of a response of the same kind (`None` for another kind).
    async fn rpc<T, E: std::error::Error>(
        &mut self,
        request: PeerRequest,
        action: RPCTypes,
        option: RPCOption,
        unpack: fn(PeerResponse) -> Option<Result<T, E>>,
    ) -> Result<T, RPCError<NodeId, Member, E>> {
        let deadline = option.hard_ttl();
        let response = match self.call(&request, deadline).await {
            Ok(response) => response,
            Err(failure) => return Err(self.rpc_error(failure, action, deadline)),
        };
        match unpack(response) {
            Some(answer) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            None => {
                self.conn = None;
                let e = io::Error::new(io::ErrorKind::InvalidData, "peer answered another request");
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }
}

impl<L: PeerListener> RaftNetwork<TypeConfig> for Peer<L> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let request = PeerRequest::AppendEntries(rpc);
        self.rpc(
            request,
            RPCTypes::AppendEntries,
            option,
            |response| match response {
                PeerResponse::AppendEntries(answer) => Some(answer),
                _ => None,
            },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let request = PeerRequest::InstallSnapshot(rpc);
        self.rpc(
            request,
            RPCTypes::InstallSnapshot,
            option,
            |response| match response {
                PeerResponse::InstallSnapshot(answer) => Some(answer),
                _ => None,
            },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let request = PeerRequest::Vote(rpc);
        self.rpc(request, RPCTypes::Vote, option, |response| match response {
            PeerResponse::Vote(answer) => Some(answer),
            _ => None,
        })
        .await
    }
}

/// Connects to member `target` at `addr` (`host:port`) and completes the TLS handshake
/// accepting only the target's pinned key in `tls`. A TLS failure (another key, a bad
/// signature) is logged as a refusal, rate-limited.
async fn connect<L: PeerListener>(
    addr: &str,
    target: NodeId,
    tls: &PeerTlsConfig,
) -> Result<BufReader<TlsStream<L::Stream>>, Failure> {
    let connector = tls.connector(target).ok_or_else(|| {
        Failure::Unreachable(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("member {target} has no pinned identity key"),
        ))
    })?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| Failure::Unreachable(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, L::connect(addr))
        .await
        .map_err(|_| Failure::Unreachable(io::ErrorKind::TimedOut.into()))?
        .map_err(Failure::Unreachable)?;
    // Under the RPC's deadline, like the rest of the exchange.
    let stream = connector
        .connect(peer_tls::server_name(), stream)
        .await
        .map_err(|e| {
            // rustls reports its own failures as invalid data; the rest is the network.
            if e.kind() == io::ErrorKind::InvalidData {
                tls.refused(&format_args!("member {target} at {addr}"), &e);
            } else {
                tracing::debug!(target, error = %e, "TLS handshake with a peer failed");
            }
            Failure::Unreachable(e)
        })?;
    Ok(BufReader::new(stream))
}

/// Writes `message` as one frame.
async fn write_frame<T: Serialize>(
    stream: &mut (impl AsyncWrite + Unpin),
    message: &T,
) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&len| len <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    stream.flush().await
}

/// Reads one frame, or `None` if the peer closed the connection between frames.
async fn read_frame<T: DeserializeOwned>(
    stream: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<T>> {
    let mut len = [0; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too large"),
        ));
    }
    let mut body = vec![0; len as usize];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
