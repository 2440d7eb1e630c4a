//! The handshake: a Hello read, a session opened or resumed in the ledger, a Welcome
//! answered; then the connection carries the session.

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;
use usher_core::{ClientInfo, Command, LedgerError, Outcome, SessionId};
use usher_proto::{
    ErrorCode, FrameError, FrameReader, Hello, Request, Response, Welcome, request, response,
};

use super::End;
use crate::metrics::RequestKind;
use crate::notices::Carrier;
use crate::requests::{self, refuse_bad_names, store_unavailable};
use crate::shared::Shared;

/// How many times a client may retry the handshake on one connection (a failed resume is
/// followed by a fresh Hello).
const MAX_HELLOS: usize = 3;

/// Reads Hello, opens or resumes the session, and answers Welcome.
pub(super) async fn handshake<R, W>(
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
            send(wr, &requests::ok(id, response::Kind::Welcome(welcome))).await?;
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
                    welcome.leases = leases
                        .iter()
                        .map(|l| requests::lease::granted(l, 0))
                        .collect();
                    ctx.metrics
                        .request_done(RequestKind::Hello, started.elapsed());
                    welcomed(
                        wr,
                        ctx,
                        carrier,
                        session,
                        requests::ok(id, response::Kind::Welcome(welcome)),
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
        let welcome = requests::ok(id, response::Kind::Welcome(welcome));
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
