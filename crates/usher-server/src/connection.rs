//! One task per client connection: handshake, then requests in, responses out.
//!
//! Requests are read in order and submitted to the ledger at once; their replies are
//! written in the same order by a separate writer task. A client may therefore pipeline
//! requests, up to `max_requests_in_flight` of them (64 by default), after which the reader stops reading and
//! TCP flow control pushes back on the client.
//!
//! A connection is closed when its session ends (the ledger let it lapse, or a request on
//! it was answered "session expired"), and when one of its answers could not be written
//! within `send_timeout` (the client does not read): neither may keep a socket and a task
//! that serve no live session, or a client that only pipelines and never reads.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument};
use usher_core::{Ask, ClientInfo, Command, LeaseId, LedgerError, Outcome, SessionId, Wait};
use usher_proto::{
    Bye, ErrorCode, FrameError, FrameReader, HeartbeatAck, Hello, Request, Response, Welcome,
    request, response,
};

use crate::admin::AdminError;
use crate::applied::Applied;
use crate::clock::wall_clock_ms;
use crate::config::StatusDetail;
use crate::ledger_task::LedgerGone;
use crate::metrics::{RejectReason, RequestKind};
use crate::notices::Carrier;
pub use crate::notices::PendingResponse;
use crate::reply;
use crate::shared::Shared;
use crate::status;

/// Who acted, in the usage log, for actions arriving on the admin socket.
const ADMIN_SOCKET: &str = "admin socket";

/// How many times a client may retry the handshake on one connection (a failed resume is
/// followed by a fresh Hello).
const MAX_HELLOS: usize = 3;

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

/// Serves one connection until the peer leaves, misbehaves or the server shuts down.
///
/// `admin` is true only for connections on the administration socket: they may use the
/// remove, reload and down requests.
#[instrument(name = "conn", skip_all, fields(peer = %peer))]
pub async fn serve<S>(
    stream: S,
    peer: String,
    admin: bool,
    ctx: Arc<Shared>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
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
        Ok(Ok(session)) => session,
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
            // Tell a client that is merely slow why it is dropped; a peer that does not
            // read gets no more of our time than this bounded write.
            let msg = format!(
                "the server closed the connection: the handshake did not complete within \
                 its handshake timeout ({:?})",
                ctx.handshake_timeout
            );
            let answer = Response::error(0, ErrorCode::HandshakeTimeout, msg);
            let write = usher_proto::write_frame(&mut wr, &answer);
            let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write).await;
            return;
        }
    };

    let stalled = CancellationToken::new();
    let writer = {
        let (send_timeout, stalled, ended) =
            (ctx.send_timeout, stalled.clone(), carrier.ended.clone());
        let carries = session.is_some();
        tokio::spawn(async move {
            while let Some(pending) = out_rx.recv().await {
                let response = crate::status::within_frame(pending.await);
                let write = usher_proto::write_frame(&mut wr, &response);
                match tokio::time::timeout(send_timeout, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        stalled.cancel();
                        break;
                    }
                }
                if carries && says_session_expired(&response) {
                    // The client starts over on a new connection; this one serves nothing.
                    ended.cancel();
                }
            }
        })
    };

    let peer_ip = peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
    // The request loop is dropped wherever it waits (reading, or queueing an answer
    // behind ones the client does not read) when the connection is to close.
    let end = tokio::select! {
        end = request_loop(&mut reader, session, (admin, peer_ip), &ctx, &stop, &out_tx) => end,
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

async fn request_loop<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    session: Option<SessionId>,
    caller: (bool, Option<IpAddr>),
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
                .1
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
        let (pending, goodbye) = match dispatch(req, session, caller, ctx).await {
            Ok((pending, goodbye)) => match kind {
                Some(kind) => {
                    let metrics = ctx.metrics.clone();
                    let timed: PendingResponse = Box::pin(async move {
                        let response = pending.await;
                        metrics.request_done(kind, started.elapsed());
                        response
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

/// The metrics label of a request, if it is one this server knows.
fn request_kind(req: &Request) -> Option<RequestKind> {
    Some(match req.kind.as_ref()? {
        request::Kind::Hello(_) => RequestKind::Hello,
        request::Kind::Checkout(_) => RequestKind::Checkout,
        request::Kind::Checkin(_) => RequestKind::Checkin,
        request::Kind::Heartbeat(_) => RequestKind::Heartbeat,
        request::Kind::Status(_) => RequestKind::Status,
        request::Kind::Remove(_) => RequestKind::Remove,
        request::Kind::Reload(_) => RequestKind::Reload,
        request::Kind::Down(_) => RequestKind::Down,
        request::Kind::Goodbye(_) => RequestKind::Goodbye,
        request::Kind::Dequeue(_) => RequestKind::Dequeue,
        request::Kind::Activity(_) => RequestKind::Activity,
        request::Kind::Borrow(_) => RequestKind::Borrow,
        request::Kind::Return(_) => RequestKind::Return,
        request::Kind::Detach(_) => RequestKind::Detach,
    })
}

fn ready(r: Response) -> PendingResponse {
    Box::pin(std::future::ready(r))
}

/// Submits one request and returns the future of its response, plus whether the client
/// said goodbye.
async fn dispatch(
    req: Request,
    session: Option<SessionId>,
    (admin, peer_ip): (bool, Option<IpAddr>),
    ctx: &Arc<Shared>,
) -> Result<(PendingResponse, bool), LedgerGone> {
    let id = req.id;
    let Some(kind) = req.kind else {
        let msg = "this server does not know that request; it may be older than the client";
        return Ok((
            ready(Response::error(id, ErrorCode::UnknownRequest, msg)),
            false,
        ));
    };
    let need_session = |what: &str| {
        let msg = format!("{what} needs a session; this connection was opened query-only");
        ready(Response::error(id, ErrorCode::NotPermitted, msg))
    };
    match kind {
        request::Kind::Hello(_) => {
            let msg = "handshake already done on this connection";
            Ok((
                ready(Response::error(id, ErrorCode::BadRequest, msg)),
                false,
            ))
        }
        request::Kind::Checkout(c) => {
            let Some(session) = session else {
                return Ok((need_session("checkout"), false));
            };
            if c.nonce.len() > usher_proto::MAX_NONCE_LEN {
                let msg = format!(
                    "a checkout nonce is at most {} bytes",
                    usher_proto::MAX_NONCE_LEN
                );
                return Ok((
                    ready(Response::error(id, ErrorCode::BadRequest, msg)),
                    false,
                ));
            }
            let (feature, version) = (c.feature.clone(), c.version.clone());
            let cmd = Command::Checkout {
                ask: Ask {
                    session,
                    // The ledger task allocates the handle.
                    lease_id: LeaseId(0),
                    feature: c.feature,
                    version: c.version,
                    count: c.count.max(1),
                    client_ref: c.client_ref,
                },
                wait: match (c.wait, c.wait_ms) {
                    (false, _) => Wait::No,
                    (true, 0) => Wait::Forever,
                    (true, ms) => Wait::Until(wall_clock_ms().saturating_add(ms)),
                },
            };
            let rx = ctx.ledger.submit(cmd).await?;
            let (identity, nonce) = (ctx.identity.clone(), c.nonce);
            Ok((
                answer(ctx, id, rx, move |a| {
                    reply::checkout(&feature, &version, a, nonce, &identity)
                }),
                false,
            ))
        }
        request::Kind::Borrow(b) => {
            let Some(session) = session else {
                return Ok((need_session("borrow"), false));
            };
            let (feature, version) = (b.feature.clone(), b.version.clone());
            let cmd = Command::Borrow {
                ask: Ask {
                    session,
                    // The ledger task allocates the handle.
                    lease_id: LeaseId(0),
                    feature: b.feature,
                    version: b.version,
                    count: b.count.max(1),
                    client_ref: b.client_ref,
                },
                until: wall_clock_ms().saturating_add(b.duration_ms),
            };
            let rx = ctx.ledger.submit(cmd).await?;
            let (identity, host_ids) = (ctx.identity.clone(), b.host_ids);
            Ok((
                answer(ctx, id, rx, move |a| {
                    reply::borrow(&feature, &version, a, &identity, host_ids)
                }),
                false,
            ))
        }
        request::Kind::Return(r) => {
            let Some(session) = session else {
                return Ok((need_session("return"), false));
            };
            let cmd = Command::Return {
                session,
                feature: r.feature,
                lease_id: (r.lease_id != 0).then_some(LeaseId(r.lease_id)),
            };
            let rx = ctx.ledger.submit(cmd).await?;
            Ok((answer(ctx, id, rx, reply::returned), false))
        }
        request::Kind::Checkin(c) => {
            let Some(session) = session else {
                return Ok((need_session("checkin"), false));
            };
            let lease_id = c.lease_id;
            let cmd = Command::Checkin {
                session,
                lease_id: LeaseId(lease_id),
            };
            let rx = ctx.ledger.submit(cmd).await?;
            Ok((
                answer(ctx, id, rx, move |a| reply::checkin(lease_id, a)),
                false,
            ))
        }
        request::Kind::Dequeue(d) => {
            let Some(session) = session else {
                return Ok((need_session("dequeue"), false));
            };
            let client_ref = d.client_ref;
            let cmd = Command::Dequeue {
                session,
                client_ref,
            };
            let rx = ctx.ledger.submit(cmd).await?;
            Ok((
                answer(ctx, id, rx, move |a| reply::dequeue(client_ref, a)),
                false,
            ))
        }
        request::Kind::Activity(a) => {
            let Some(session) = session else {
                return Ok((need_session("activity"), false));
            };
            let cmd = Command::Activity {
                id: session,
                idle: a.idle,
            };
            let rx = ctx.ledger.submit(cmd).await?;
            Ok((answer(ctx, id, rx, reply::heartbeat), false))
        }
        request::Kind::Heartbeat(_) => match session {
            Some(session) => {
                let rx = ctx
                    .ledger
                    .submit(Command::Heartbeat { id: session })
                    .await?;
                Ok((answer(ctx, id, rx, reply::heartbeat), false))
            }
            None => {
                let ack = HeartbeatAck {
                    server_time_ms: wall_clock_ms(),
                };
                Ok((
                    ready(reply::ok(id, response::Kind::HeartbeatAck(ack))),
                    false,
                ))
            }
        },
        request::Kind::Status(s) => {
            // Whoever asks without the admin socket or the token learns file names at
            // most, never where the server keeps its files.
            let anonymous = !admin && s.admin_token.is_empty();
            let detail = if admin {
                StatusDetail::Full
            } else if !s.admin_token.is_empty() {
                match token_status(ctx, peer_ip, &s.admin_token) {
                    Ok(()) => StatusDetail::Full,
                    Err(msg) => {
                        return Ok((
                            ready(Response::error(id, ErrorCode::NotPermitted, msg)),
                            false,
                        ));
                    }
                }
            } else {
                ctx.status_detail
            };
            if detail == StatusDetail::None {
                let msg = "status is available to administrators only on this server";
                return Ok((
                    ready(Response::error(id, ErrorCode::NotPermitted, msg)),
                    false,
                ));
            }
            if detail == StatusDetail::Totals {
                // Counts only: nobody's name, host or program.
                let ledger = ctx.ledger.clone();
                let fut = async move {
                    let feature = s.feature;
                    match ledger.query(move |v| status::totals(v, &feature)).await {
                        Ok(report) => reply::ok(id, response::Kind::Status(report)),
                        Err(LedgerGone) => shutting_down(id),
                    }
                };
                return Ok((Box::pin(fut), false));
            }
            let cursor = match s.cursor.as_str() {
                "" => None,
                text => match status::Cursor::parse(text) {
                    Ok(c) => Some(c),
                    Err(msg) => {
                        return Ok((
                            ready(Response::error(id, ErrorCode::BadRequest, msg)),
                            false,
                        ));
                    }
                },
            };
            let (ledger, views) = (ctx.ledger.clone(), ctx.status_views.clone());
            let fut = async move {
                let kept = cursor.and_then(|c| views.by_generation(c.generation));
                let view = match kept {
                    Some(view) => view,
                    // No cursor, or its view is gone: the newest view (a walk then goes on
                    // from the same offset in it).
                    None => match views.fresh(&ledger).await {
                        Ok(view) => view,
                        Err(LedgerGone) => return shutting_down(id),
                    },
                };
                // Building a page is CPU work: off the runtime's workers, which the
                // ledger task and every connection share.
                let built = tokio::task::spawn_blocking(move || {
                    let request = status::PageRequest {
                        feature: &s.feature,
                        offset: cursor.map_or(0, |c| c.offset),
                        page_size: s.page_size as usize,
                        max_bytes: usher_proto::MAX_FRAME_LEN,
                    };
                    status::page(&view, id, request)
                })
                .await;
                let Ok(mut report) = built else {
                    return shutting_down(id);
                };
                if report.truncated {
                    status::log_truncated(&report);
                }
                if anonymous {
                    status::hide_paths(&mut report);
                }
                reply::ok(id, response::Kind::Status(report))
            };
            Ok((Box::pin(fut), false))
        }
        request::Kind::Remove(_) | request::Kind::Reload(_) | request::Kind::Down(_) if !admin => {
            let msg = "administration is accepted only on the server's admin socket";
            Ok((
                ready(Response::error(id, ErrorCode::NotPermitted, msg)),
                false,
            ))
        }
        request::Kind::Remove(r) => {
            let ctx = ctx.clone();
            let fut = async move {
                let removed = |was_held, feature: String, count| {
                    let r = usher_proto::Removed {
                        lease_id: r.lease_id,
                        was_held,
                        feature,
                        count,
                    };
                    reply::ok(id, response::Kind::Removed(r))
                };
                match ctx.admin.remove(r.lease_id, ADMIN_SOCKET).await {
                    Ok(Some(lease)) => removed(true, lease.feature.to_string(), lease.count),
                    Ok(None) => removed(false, String::new(), 0),
                    Err(AdminError::Gone(_)) => shutting_down(id),
                    Err(e) => Response::error(id, ErrorCode::NotPermitted, e.to_string()),
                }
            };
            Ok((Box::pin(fut), false))
        }
        request::Kind::Reload(_) => {
            let ctx = ctx.clone();
            let fut = async move {
                match ctx.admin.reload(ADMIN_SOCKET).await {
                    Ok(done) => {
                        let done = usher_proto::Reloaded {
                            entitlements: done.entitlements as u32,
                            refused: done.refused,
                            warnings: done.warnings,
                        };
                        reply::ok(id, response::Kind::Reloaded(done))
                    }
                    Err(e @ AdminError::ReloadRefused(_)) => {
                        Response::error(id, ErrorCode::BadRequest, e.to_string())
                    }
                    Err(AdminError::Gone(_)) => shutting_down(id),
                    Err(e) => Response::error(id, ErrorCode::Internal, e.to_string()),
                }
            };
            Ok((Box::pin(fut), false))
        }
        request::Kind::Down(_) => {
            // Either way the server stops; a failed audit record means it is stopping already.
            let _ = ctx.admin.down(ADMIN_SOCKET).await;
            Ok((ready(reply::ok(id, response::Kind::Bye(Bye {}))), true))
        }
        request::Kind::Detach(_) => {
            let (Some(session), Some(udp_port)) = (session, ctx.udp_port) else {
                let msg = if session.is_none() {
                    "detach needs a session; this connection was opened query-only"
                } else {
                    "this server has no UDP port for keepalives; stay connected"
                };
                return Ok((
                    ready(Response::error(id, ErrorCode::NotPermitted, msg)),
                    false,
                ));
            };
            let key = ctx.keepalives.issue(session);
            // The TTL counts from now; the first keepalive is due within an interval.
            let rx = ctx.ledger.submit(Command::Detach { id: session }).await?;
            let interval = ctx.heartbeat_interval.as_millis() as u64;
            let detached = move |_| {
                response::Kind::Detached(usher_proto::Detached {
                    keepalive_key: key.to_vec(),
                    udp_port: u32::from(udp_port),
                    keepalive_interval_ms: interval,
                })
            };
            Ok((answer(ctx, id, rx, detached), true))
        }
        request::Kind::Goodbye(_) => match session {
            Some(session) => {
                let rx = ctx
                    .ledger
                    .submit(Command::CloseSession { id: session })
                    .await?;
                Ok((answer(ctx, id, rx, |_| response::Kind::Bye(Bye {})), true))
            }
            None => Ok((ready(reply::ok(id, response::Kind::Bye(Bye {}))), true)),
        },
    }
}

/// Whether `response` tells the client that its session has expired.
fn says_session_expired(response: &Response) -> bool {
    matches!(&response.kind, Some(response::Kind::Error(e)) if e.code() == ErrorCode::SessionExpired)
}

/// Checks the admin token a status request on the client port presents: it is accepted
/// only from `admin_from`, and a wrong one counts against the address.
fn token_status(ctx: &Shared, peer: Option<IpAddr>, token: &str) -> Result<(), String> {
    if !peer.is_some_and(|ip| crate::access::Cidr::any_contains(&ctx.admin_from, ip)) {
        return Err(
            "the admin token is accepted only from the addresses in the server's admin_from".into(),
        );
    }
    match ctx
        .admin_auth
        .check(peer, token, "status on the client port")
    {
        Ok(()) => Ok(()),
        Err(crate::auth::Refused::Wrong) => {
            Err("the admin token does not match DATA_DIR/admin/token".into())
        }
        Err(crate::auth::Refused::LockedOut(wait)) => Err(format!(
            "too many wrong admin tokens from this address; try again in {} s",
            wait.as_secs().max(1)
        )),
    }
}

fn shutting_down(id: u64) -> Response {
    Response::error(id, ErrorCode::ShuttingDown, "the server is shutting down")
}

/// Turns a pending ledger result into a pending response.
fn answer(
    ctx: &Shared,
    id: u64,
    rx: tokio::sync::oneshot::Receiver<Applied>,
    convert: impl FnOnce(Applied) -> response::Kind + Send + 'static,
) -> PendingResponse {
    let metrics = ctx.metrics.clone();
    Box::pin(async move {
        match rx.await {
            Ok(applied) => match &applied.result {
                Err(LedgerError::UnknownSession) => Response::error(
                    id,
                    ErrorCode::SessionExpired,
                    "the session has expired; its seats were released",
                ),
                _ => reply::ok(id, convert(applied)),
            },
            // Unanswered: the ledger went away, or refused the request because the store
            // cannot commit (its batch was rolled back, or it is a new grant meanwhile).
            Err(_) => match metrics.store_unavailable() {
                Some(why) => store_unavailable(id, &why),
                None => shutting_down(id),
            },
        }
    })
}

/// The answer to a request the server cannot make durable now.
fn store_unavailable(id: u64, why: &str) -> Response {
    let msg = format!(
        "store unavailable: the server cannot write its store ({why}); seats already held \
         are kept, new grants are refused until it can; try again shortly"
    );
    Response::error(id, ErrorCode::StoreUnavailable, msg)
}

/// Reads Hello, opens or resumes the session, and answers Welcome.
async fn handshake<R, W>(
    reader: &mut FrameReader<R>,
    wr: &mut W,
    peer: &str,
    ctx: &Shared,
    carrier: &Carrier,
) -> Result<Option<SessionId>, End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    for _ in 0..MAX_HELLOS {
        let req = match reader.read::<Request>().await {
            Ok(Some(req)) => req,
            Ok(None) => return Err(End::Eof),
            Err(e) => {
                if !matches!(e, FrameError::Io(_) | FrameError::Truncated) {
                    ctx.metrics.frame_rejected();
                }
                return Err(End::Protocol(e.to_string()));
            }
        };
        if let Some(refusal) = refuse_bad_names(&req) {
            send(wr, &refusal).await?;
            return Err(End::Protocol("a name broke its rule".into()));
        }
        let started = std::time::Instant::now();
        let id = req.id;
        let hello = match req.kind {
            Some(request::Kind::Hello(h)) => h,
            _ => {
                let msg = "the first request on a connection must be Hello";
                send(wr, &Response::error(id, ErrorCode::HandshakeRequired, msg)).await?;
                return Err(End::Protocol("no hello".into()));
            }
        };
        if hello.magic != usher_proto::MAGIC {
            // Not a usher client; say nothing more.
            return Err(End::Protocol("bad magic".into()));
        }
        if hello.protocol_version < usher_proto::MIN_PROTOCOL_VERSION {
            let msg = format!(
                "protocol version {} is too old; this server speaks {} to {}",
                hello.protocol_version,
                usher_proto::MIN_PROTOCOL_VERSION,
                usher_proto::PROTOCOL_VERSION
            );
            send(wr, &Response::error(id, ErrorCode::UnsupportedVersion, msg)).await?;
            return Err(End::Protocol("unsupported version".into()));
        }
        let mut welcome = Welcome {
            protocol_version: hello.protocol_version.min(usher_proto::PROTOCOL_VERSION),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            heartbeat_interval_ms: ctx.heartbeat_interval.as_millis() as u64,
            session_ttl_ms: ctx.session_ttl.as_millis() as u64,
            server_name: ctx.server_name.clone(),
            ..Welcome::default()
        };
        if hello.query_only {
            ctx.metrics
                .request_done(RequestKind::Hello, started.elapsed());
            send(wr, &reply::ok(id, response::Kind::Welcome(welcome))).await?;
            return Ok(None);
        }
        if hello.resume_session != 0 {
            let session = SessionId(hello.resume_session);
            let cmd = Command::Resume {
                id: session,
                secret_hash: hash_secret(&hello.resume_secret),
                address: peer.to_string(),
            };
            let applied = ctx.ledger.apply(cmd).await.map_err(|_| End::LedgerGone)?;
            match applied.result {
                Ok(Outcome::Resumed { leases }) => {
                    welcome.session_id = session.0;
                    welcome.resumed = true;
                    welcome.leases = leases.iter().map(|l| reply::granted(l, 0)).collect();
                    ctx.metrics
                        .request_done(RequestKind::Hello, started.elapsed());
                    welcomed(
                        wr,
                        ctx,
                        carrier,
                        session,
                        reply::ok(id, response::Kind::Welcome(welcome)),
                    )
                    .await?;
                    debug!(session = %session, "session resumed");
                    return Ok(Some(session));
                }
                _ => {
                    let msg = "that session has expired; open a new one";
                    send(wr, &Response::error(id, ErrorCode::SessionExpired, msg)).await?;
                    continue;
                }
            }
        }
        let session = match open_session(hello, peer, ctx).await {
            Err(End::StoreUnavailable(why)) => {
                send(wr, &store_unavailable(id, &why)).await?;
                return Err(End::StoreUnavailable(why));
            }
            other => other?,
        };
        welcome.session_id = session.0.0;
        welcome.session_secret = session.1.to_vec();
        ctx.metrics
            .request_done(RequestKind::Hello, started.elapsed());
        let welcome = reply::ok(id, response::Kind::Welcome(welcome));
        welcomed(wr, ctx, carrier, session.0, welcome).await?;
        return Ok(Some(session.0));
    }
    Err(End::Protocol("too many handshakes".into()))
}

/// Makes this connection the carrier of `session` and only then sends the Welcome: once
/// the client has it, it may drop an older connection of the same session, and that one's
/// closing must already see that it no longer carries the session (or it would cut the
/// session to the reconnect grace).
async fn welcomed<W: AsyncWrite + Unpin>(
    wr: &mut W,
    ctx: &Shared,
    carrier: &Carrier,
    session: SessionId,
    welcome: Response,
) -> Result<(), End> {
    ctx.notices.register(session, carrier.clone());
    if let Err(end) = send(wr, &welcome).await {
        ctx.notices.unregister(session, &carrier.queue);
        return Err(end);
    }
    Ok(())
}

async fn open_session(
    hello: Hello,
    peer: &str,
    ctx: &Shared,
) -> Result<(SessionId, [u8; 32]), End> {
    let client = ClientInfo {
        user: hello.user.into(),
        host: hello.host.into(),
        display: hello.display.into(),
        pid: hello.pid,
        program: hello.program.into(),
        program_version: hello.program_version.into(),
        address: peer.to_string().into(),
    };
    loop {
        let id = SessionId(random_id());
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random number generator is available");
        let cmd = Command::OpenSession {
            id,
            secret_hash: hash_secret(&secret),
            client: client.clone(),
        };
        let Ok(applied) = ctx.ledger.apply(cmd).await else {
            return Err(match ctx.metrics.store_unavailable() {
                Some(why) => End::StoreUnavailable(why),
                None => End::LedgerGone,
            });
        };
        match applied.result {
            Ok(_) => return Ok((id, secret)),
            // A 64-bit collision with a live session: draw again.
            Err(LedgerError::IdInUse) => continue,
            Err(e) => return Err(End::Protocol(e.to_string())),
        }
    }
}

/// The one check of the names a request carries (feature, version, user, host, ...; see
/// `usher_proto::names`): the refusal to send if one breaks its rule. Every request passes
/// here before it is dispatched, so nothing unbounded reaches the ledger, the usage log or
/// a metric label.
fn refuse_bad_names(req: &Request) -> Option<Response> {
    let e = usher_proto::names::check_request(req).err()?;
    Some(Response::error(
        req.id,
        ErrorCode::BadRequest,
        format!("refused: the {e}"),
    ))
}

async fn send<W: AsyncWrite + Unpin>(wr: &mut W, r: &Response) -> Result<(), End> {
    usher_proto::write_frame(wr, r)
        .await
        .map_err(|e| End::Protocol(e.to_string()))
}

/// The server keeps only a hash of each session secret, so a copy of the store does not
/// let anyone take over a session.
pub fn hash_secret(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// A random non-zero id.
pub fn random_id() -> u64 {
    loop {
        let id = getrandom::u64().expect("the OS random number generator is available");
        if id != 0 {
            return id;
        }
    }
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
