//! One task per client connection: handshake, then requests in, responses out.
//!
//! The transport only: framing, the handshake, pipelining, throttling and write batching.
//! What a request means is the request layer's ([`crate::requests`]).
//!
//! Requests are read in order and handed to [`requests::dispatch`] at once; their replies
//! are written in the same order by a separate writer task, the replies already worked out
//! together in one write (`write_answers`). A client may therefore pipeline requests, up
//! to `max_requests_in_flight` of them (64 by default), after which the reader stops
//! reading and TCP flow control pushes back on the client.
//!
//! A connection is closed when its session ends (the ledger let it lapse, or a request on
//! it was answered "session expired"), and when one of its answers could not be written
//! within `send_timeout` (the client does not read): neither may keep a socket and a task
//! that serve no live session, or a client that only pipelines and never reads.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument};
use usher_core::Command;
use usher_proto::{ErrorCode, FrameError, FrameReader, Request, Response, request, response};

use crate::ledger_task::LedgerGone;
use crate::metrics::RejectReason;
use crate::notices::Carrier;
pub use crate::notices::{Answer, PendingResponse};
use crate::requests::admin::ADMIN_SOCKET;
use crate::requests::{self, Caller, ready, refuse_bad_names, request_kind};
use crate::shared::Shared;

mod handshake;

use handshake::handshake;
pub use handshake::{hash_secret, random_id};

/// How long writing a refusal to a peer may take before the connection is just closed.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers the first request on a connection the server will not serve (its Hello) with
/// `code` and `message`, and closes it. Waits at most `timeout` for that request; a peer
/// that sends something else, or nothing, is closed without a word.
pub async fn refuse<S>(stream: S, code: ErrorCode, message: String, timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (rd, mut wr) = tokio::io::split(stream);
    // A Hello is small; anything larger is no client of ours.
    let mut reader = FrameReader::with_limit(rd, 16 * 1024);
    let Ok(Ok(Some(first))) = tokio::time::timeout(timeout, reader.read::<Request>()).await else {
        return;
    };
    if !matches!(first.kind, Some(request::Kind::Hello(_))) {
        return;
    }
    let answer = Response::error(first.id, code, message);
    let write = async {
        usher_proto::write_frame(&mut wr, &answer).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut wr).await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write).await;
}

/// Tells a peer that began the client protocol but did not finish its handshake within
/// `timeout` why it is dropped, so that a client that is merely slow can say so; a peer
/// that does not read gets no more of our time than this bounded write.
pub async fn tell_handshake_timeout<W>(wr: &mut W, timeout: Duration)
where
    W: AsyncWrite + Unpin,
{
    let msg = format!(
        "the server closed the connection: the handshake did not complete within its \
         handshake timeout ({timeout:?})"
    );
    let answer = Response::error(0, ErrorCode::HandshakeTimeout, msg);
    let write = usher_proto::write_frame(wr, &answer);
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write).await;
}

/// Why a connection ended, for the debug log.
#[derive(Debug)]
enum End {
    Goodbye,
    /// The client detached: its session lives on, kept alive over UDP.
    Detached,
    Eof,
    Idle,
    Shutdown,
    Protocol(String),
    LedgerGone,
    /// The store cannot commit, so no session can open (see `store_unavailable`).
    StoreUnavailable(String),
    /// The session this connection carried has ended.
    SessionEnded,
    /// An answer waited `send_timeout` to be written: the client does not read.
    NotReading,
}

/// Who a connection is with.
#[derive(Debug)]
pub struct Peer {
    /// The peer's address, or what stands for it, for the log.
    name: String,
    /// Only connections on the administration socket may use the remove, reload and down
    /// requests.
    admin: bool,
    /// The connection's slot among those still in their handshake (`max_handshakes`),
    /// given back once its Hello is answered.
    handshake: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Peer {
    /// A client connection from `addr`, holding its handshake slot.
    pub fn client(addr: String, handshake: tokio::sync::OwnedSemaphorePermit) -> Peer {
        Peer {
            name: addr,
            admin: false,
            handshake: Some(handshake),
        }
    }

    /// A connection on the administration socket.
    pub fn admin_socket() -> Peer {
        Peer {
            name: ADMIN_SOCKET.into(),
            admin: true,
            handshake: None,
        }
    }
}

/// Serves one connection until the peer leaves, misbehaves or the server shuts down.
#[instrument(name = "conn", skip_all, fields(peer = %peer.name))]
pub async fn serve<S>(stream: S, peer: Peer, ctx: Arc<Shared>, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Peer {
        name: peer,
        admin,
        handshake: handshake_slot,
    } = peer;
    let _counted = (!admin).then(|| ctx.metrics.connection_opened());
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = FrameReader::with_limit(rd, ctx.max_frame_bytes);

    // The response queue exists before the handshake: a session's notices must come to
    // this connection from the moment its Welcome is sent (see `handshake`).
    let (out_tx, mut out_rx) = mpsc::channel::<PendingResponse>(ctx.max_in_flight);
    let carrier = Carrier {
        queue: out_tx.clone(),
        ended: CancellationToken::new(),
    };
    let session = match tokio::time::timeout(
        ctx.handshake_timeout,
        handshake(&mut reader, &mut wr, &peer, &ctx, &carrier),
    )
    .await
    {
        Ok(Ok(session)) => {
            // Handshake done: the slot goes to the next new connection.
            drop(handshake_slot);
            session
        }
        Ok(Err(end)) => {
            if !matches!(end, End::Eof) {
                let detail = format!("handshake failed: {end:?}");
                ctx.metrics
                    .connection_rejected(RejectReason::Handshake, &peer, &detail);
            }
            debug!(?end, "connection closed during handshake");
            return;
        }
        Err(_) => {
            let detail = format!(
                "no Hello within the handshake timeout of {:?}",
                ctx.handshake_timeout
            );
            ctx.metrics
                .connection_rejected(RejectReason::HandshakeTimeout, &peer, &detail);
            tell_handshake_timeout(&mut wr, ctx.handshake_timeout).await;
            return;
        }
    };

    let stalled = CancellationToken::new();
    let writer = {
        let watch = Watch {
            send_timeout: ctx.send_timeout,
            stalled: stalled.clone(),
            // Only a connection that carries a session closes when the session ends.
            ended: session.map(|_| carrier.ended.clone()),
        };
        tokio::spawn(async move { write_answers(&mut wr, &mut out_rx, &watch).await })
    };

    let caller = Caller {
        session,
        admin,
        peer_ip: peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()),
    };
    // The request loop is dropped wherever it waits (reading, or queueing an answer
    // behind ones the client does not read) when the connection is to close.
    let end = tokio::select! {
        end = request_loop(&mut reader, caller, &ctx, &stop, &out_tx) => end,
        _ = carrier.ended.cancelled() => End::SessionEnded,
        _ = stalled.cancelled() => End::NotReading,
    };
    // A writer that gave up on the client also ends the loop (its queue closes).
    let end = if stalled.is_cancelled() {
        End::NotReading
    } else {
        end
    };
    if matches!(end, End::NotReading) {
        let detail = format!(
            "an answer could not be written within the send timeout of {:?}: the client \
             does not read its answers; the connection is closed",
            ctx.send_timeout
        );
        ctx.metrics
            .connection_rejected(RejectReason::NotReading, &peer, &detail);
    }
    // Whether this connection still carries its session. A client that gave up on it (a
    // half-open connection the server only drops after a silent TTL) may have resumed the
    // session on a new connection long ago; that one has replaced our entry.
    let carried = session.is_some_and(|id| ctx.notices.unregister(id, &out_tx));
    match &end {
        End::Protocol(why) => debug!(%why, "closing the connection after a protocol error"),
        other => debug!(end = ?other, "connection ending"),
    }
    // The writer ends once every sender of its queue is gone.
    drop((out_tx, carrier));
    // Finish writing the answers to requests already accepted.
    let _ = writer.await;

    if let Some(id) = session
        && carried
        && matches!(
            end,
            End::Eof | End::Idle | End::Protocol(_) | End::NotReading
        )
    {
        // Closed without a goodbye: most likely the client process died. Its seats come
        // back after the reconnect grace unless it resumes first. (Not if the session has
        // moved to another connection: marking it disconnected would cut the live
        // session's life to the grace.)
        let _ = ctx.ledger.apply(Command::Disconnected { id }).await;
    }
}

/// Most bytes of answers gathered into one write: a burst of large status pages is still
/// written page by page.
const BURST_BYTES: usize = 64 * 1024;

/// What the writer watches for besides writing.
struct Watch {
    /// How long one write may wait for the client to take it.
    send_timeout: Duration,
    /// Cancelled when a write waited `send_timeout`: the client does not read.
    stalled: CancellationToken,
    /// For a connection that carries a session: cancelled once an answer that says the
    /// session expired is written (the client starts over on a new connection, so this
    /// one serves nothing).
    ended: Option<CancellationToken>,
}

/// Writes the answers in the order their requests came, as each is worked out. Answers
/// already worked out when the one before them is written share its write: one write and
/// one flush per burst, not per frame. Returns when the queue closes, the peer fails or
/// does not take a write within the send timeout, or the session has ended.
async fn write_answers<W: AsyncWrite + Unpin>(
    wr: &mut W,
    queue: &mut mpsc::Receiver<PendingResponse>,
    watch: &Watch,
) {
    use std::task::Poll;

    let mut burst = Vec::new();
    let mut next = queue.recv().await;
    while let Some(mut pending) = next.take() {
        // Wait for this answer only once what is ready before it has been sent, so no
        // answer is held back behind a slower one.
        let ready_now = std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await;
        let answer = match ready_now {
            Poll::Ready(answer) => answer,
            Poll::Pending => {
                if !flush(wr, &mut burst, watch).await {
                    return;
                }
                pending.await
            }
        };
        let expired = match answer {
            Answer::Message(response) => {
                let response = requests::status_view::within_frame(response);
                burst.extend_from_slice(&usher_proto::encode_frame(&response));
                says_session_expired(&response)
            }
            // A large frame is written as it is, not copied behind the others.
            Answer::Frame(frame) if burst.is_empty() => {
                burst = frame;
                false
            }
            Answer::Frame(frame) => {
                burst.extend_from_slice(&frame);
                false
            }
        };
        if let Some(ended) = &watch.ended
            && expired
        {
            let flushed = flush(wr, &mut burst, watch).await;
            ended.cancel();
            if !flushed {
                return;
            }
        }
        next = match queue.try_recv() {
            Ok(more) if burst.len() < BURST_BYTES => Some(more),
            more => {
                if !flush(wr, &mut burst, watch).await {
                    return;
                }
                match more {
                    Ok(more) => Some(more),
                    Err(_) => queue.recv().await,
                }
            }
        };
    }
}

/// Writes the gathered answers and flushes; false if the connection is to close (the write
/// failed, or the client did not take it within the send timeout).
async fn flush<W: AsyncWrite + Unpin>(wr: &mut W, burst: &mut Vec<u8>, watch: &Watch) -> bool {
    use tokio::io::AsyncWriteExt;

    if burst.is_empty() {
        return true;
    }
    let write = async {
        wr.write_all(burst).await?;
        wr.flush().await
    };
    let written = tokio::time::timeout(watch.send_timeout, write).await;
    if burst.capacity() > 2 * BURST_BYTES {
        // A large status page went out: do not keep its room for every later burst.
        *burst = Vec::new();
    } else {
        burst.clear();
    }
    match written {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            watch.stalled.cancel();
            false
        }
    }
}

async fn request_loop<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    caller: Caller,
    ctx: &Arc<Shared>,
    stop: &CancellationToken,
    out: &mpsc::Sender<PendingResponse>,
) -> End {
    // A connection silent for a whole TTL is dead (or half-open); the session itself is
    // ended by the ledger's own timer, this only frees the socket.
    let idle = ctx.session_ttl;
    let mut bucket = TokenBucket::new(ctx.max_request_rate);
    loop {
        // Over its rate, a connection is simply not read for a while: TCP flow control
        // pushes back on the sender, and nothing it sends is lost or refused.
        if let Some(wait) = bucket.take(tokio::time::Instant::now()) {
            let who = caller
                .peer_ip
                .map_or_else(|| ADMIN_SOCKET.to_owned(), |ip| ip.to_string());
            ctx.metrics.request_throttled(&who, ctx.max_request_rate);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return End::Shutdown,
            }
        }
        let read = tokio::select! {
            r = tokio::time::timeout(idle, reader.read::<Request>()) => r,
            _ = stop.cancelled() => return End::Shutdown,
        };
        let req = match read {
            Err(_) => return End::Idle,
            Ok(Ok(None)) => return End::Eof,
            Ok(Ok(Some(req))) => req,
            Ok(Err(e)) => {
                let end = End::Protocol(e.to_string());
                if !matches!(e, FrameError::Io(_) | FrameError::Truncated) {
                    ctx.metrics.frame_rejected();
                    let msg = format!("protocol error: {e}");
                    let _ = out
                        .send(ready(Response::error(0, ErrorCode::BadRequest, msg)))
                        .await;
                }
                return end;
            }
        };
        if let Some(refusal) = refuse_bad_names(&req) {
            if out.send(ready(refusal)).await.is_err() {
                return End::Eof;
            }
            continue;
        }
        let id = req.id;
        let started = std::time::Instant::now();
        let kind = request_kind(&req);
        let detaching = matches!(req.kind, Some(request::Kind::Detach(_)));
        let (pending, goodbye) = match requests::dispatch(req, caller, ctx).await {
            Ok((pending, goodbye)) => match kind {
                Some(kind) => {
                    let metrics = ctx.metrics.clone();
                    let timed: PendingResponse = Box::pin(async move {
                        let answer = pending.await;
                        metrics.request_done(kind, started.elapsed());
                        answer
                    });
                    (timed, goodbye)
                }
                None => (pending, goodbye),
            },
            Err(LedgerGone) => {
                let msg = "the server is shutting down";
                let _ = out
                    .send(ready(Response::error(id, ErrorCode::ShuttingDown, msg)))
                    .await;
                return End::LedgerGone;
            }
        };
        if out.send(pending).await.is_err() {
            return End::Eof;
        }
        if goodbye {
            return if detaching {
                End::Detached
            } else {
                End::Goodbye
            };
        }
    }
}

/// Whether `response` tells the client that its session has expired.
fn says_session_expired(response: &Response) -> bool {
    matches!(&response.kind, Some(response::Kind::Error(e)) if e.code() == ErrorCode::SessionExpired)
}

/// A token bucket holding up to `rate` tokens, refilled at `rate` per second.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: tokio::time::Instant::now(),
        }
    }

    /// Takes a token for a request read at `now`; returns how long to wait first if none
    /// is left (the token is then spent in advance).
    fn take(&mut self, now: tokio::time::Instant) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate) - 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch {
            send_timeout: Duration::from_secs(30),
            stalled: CancellationToken::new(),
            ended: None,
        }
    }

    fn answer(id: u64) -> Response {
        Response::error(id, ErrorCode::BadRequest, "test")
    }

    /// Counts the writes a writer is given.
    struct Counting {
        writes: usize,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn answers_ready_together_go_out_in_one_write_in_order() {
        let (tx, mut rx) = mpsc::channel(8);
        for id in 1..=3 {
            tx.send(ready(answer(id))).await.unwrap();
        }
        drop(tx);
        let mut wr = Counting {
            writes: 0,
            bytes: Vec::new(),
        };
        write_answers(&mut wr, &mut rx, &watch()).await;
        assert_eq!(wr.writes, 1, "one write for the burst");
        let mut reader = FrameReader::new(&wr.bytes[..]);
        for id in 1..=3 {
            let r: Response = reader.read().await.unwrap().expect("a frame");
            assert_eq!(r.id, id, "in request order");
        }
        assert!(reader.read::<Response>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn encoded_frames_go_out_as_they_are_in_order_with_messages() {
        let (tx, mut rx) = mpsc::channel(8);
        let frame = |id| -> PendingResponse {
            let bytes = usher_proto::encode_frame(&answer(id));
            Box::pin(std::future::ready(Answer::Frame(bytes)))
        };
        // A frame first (it becomes the burst), a message behind it, a frame behind that.
        tx.send(frame(1)).await.unwrap();
        tx.send(ready(answer(2))).await.unwrap();
        tx.send(frame(3)).await.unwrap();
        drop(tx);
        let mut wr = Counting {
            writes: 0,
            bytes: Vec::new(),
        };
        write_answers(&mut wr, &mut rx, &watch()).await;
        let mut reader = FrameReader::new(&wr.bytes[..]);
        for id in 1..=3 {
            let r: Response = reader.read().await.unwrap().expect("a frame");
            assert_eq!(r, answer(id), "whole, and in request order");
        }
        assert!(reader.read::<Response>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_ready_answer_is_not_held_back_behind_a_slower_one() {
        let (tx, mut rx) = mpsc::channel(8);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            let mut server = server;
            write_answers(&mut server, &mut rx, &watch()).await;
        });
        let (done, later) = tokio::sync::oneshot::channel::<Response>();
        tx.send(ready(answer(1))).await.unwrap();
        tx.send(Box::pin(async move { later.await.unwrap().into() }))
            .await
            .unwrap();
        let mut reader = FrameReader::new(client);
        let first: Response = tokio::time::timeout(Duration::from_secs(5), reader.read())
            .await
            .expect("the first answer is written while the second is pending")
            .unwrap()
            .unwrap();
        assert_eq!(first.id, 1);
        done.send(answer(2)).unwrap();
        let second: Response = reader.read().await.unwrap().unwrap();
        assert_eq!(second.id, 2);
        drop(tx);
        writer.await.unwrap();
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = tokio::time::Instant::now();
        let mut bucket = TokenBucket::new(10);
        for _ in 0..10 {
            assert_eq!(bucket.take(t0), None, "the burst");
        }
        let wait = bucket.take(t0).expect("the 11th waits");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // A second later the bucket is full again (the early token was already spent).
        assert_eq!(bucket.take(t0 + Duration::from_secs(1)), None);
        assert!(TokenBucket::new(0).take(t0).is_none(), "0 is no limit");
    }
}
