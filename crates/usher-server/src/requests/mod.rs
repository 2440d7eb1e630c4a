//! The request layer: one file per request family, between the connection (frames) and
//! the ledger task (commands and outcomes).
//!
//! Each family validates its request, builds the ledger command, submits it, and shapes
//! the reply from the ledger's [`Applied`] answer once that is durable. [`dispatch`] only
//! chooses the family. Only this layer and `usher-proto` know messages: the connection
//! below it knows frames, the ledger task beneath knows commands.
//!
//! | family | requests |
//! |---|---|
//! | [`checkout`] | Checkout, Borrow (and the grant a queued checkout ends with) |
//! | [`checkin`] | Checkin, Return |
//! | [`queue`] | Dequeue |
//! | [`lease`] | the wire form of a grant, and the notice that ends a queued checkout's wait |
//! | [`session`] | Heartbeat, Activity, Detach, Goodbye |
//! | [`status`] | Status (served from [`status_view`]) |
//! | [`admin`] | Remove, Reload, Down (admin socket only) |
//! | [`denied`] | the refusal every family may answer with |

pub mod admin;
pub mod checkin;
pub mod checkout;
pub mod denied;
pub mod lease;
pub mod queue;
pub mod session;
pub mod status;
pub mod status_view;

use std::net::IpAddr;
use std::sync::Arc;

use usher_core::{LedgerError, SessionId};
use usher_proto::{ErrorCode, Request, Response, request, response};

use crate::applied::Applied;
use crate::ledger_task::LedgerGone;
use crate::metrics::RequestKind;
pub use crate::notices::{Answer, PendingResponse};
use crate::shared::Shared;

/// Who sent a request: what the connection knows of its peer.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The connection's session; `None` on a query-only connection.
    pub session: Option<SessionId>,
    /// Whether the request came on the administration socket.
    pub admin: bool,
    /// The peer's address (none on the administration socket).
    pub peer_ip: Option<IpAddr>,
}

/// The future of a request's response, and whether the connection ends after it.
pub type Dispatched = (PendingResponse, bool);

/// Submits one request and returns the future of its response, plus whether the client
/// said goodbye.
pub async fn dispatch(
    req: Request,
    caller: Caller,
    ctx: &Arc<Shared>,
) -> Result<Dispatched, LedgerGone> {
    let id = req.id;
    let Some(kind) = req.kind else {
        let msg = "this server does not know that request; it may be older than the client";
        return Ok(refusal(id, ErrorCode::UnknownRequest, msg));
    };
    use request::Kind as K;
    match kind {
        K::Hello(_) => {
            let msg = "handshake already done on this connection";
            Ok(refusal(id, ErrorCode::BadRequest, msg))
        }
        K::Checkout(c) => checkout::checkout(id, c, caller, ctx).await,
        K::Borrow(b) => checkout::borrow(id, b, caller, ctx).await,
        K::Return(r) => checkin::return_borrowed(id, r, caller, ctx).await,
        K::Checkin(c) => checkin::checkin(id, c, caller, ctx).await,
        K::Dequeue(d) => queue::dequeue(id, d, caller, ctx).await,
        K::Activity(a) => session::activity(id, a, caller, ctx).await,
        K::Heartbeat(_) => session::heartbeat(id, caller, ctx).await,
        K::Status(s) => Ok(status::status(id, s, caller, ctx)),
        K::Remove(_) | K::Reload(_) | K::Down(_) if !caller.admin => {
            let msg = "administration is accepted only on the server's admin socket";
            Ok(refusal(id, ErrorCode::NotPermitted, msg))
        }
        K::Remove(r) => Ok(admin::remove(id, r, ctx)),
        K::Reload(_) => Ok(admin::reload(id, ctx)),
        K::Down(_) => Ok(admin::down(id, ctx).await),
        K::Detach(_) => session::detach(id, caller, ctx).await,
        K::Goodbye(_) => session::goodbye(id, caller, ctx).await,
    }
}

/// The metrics label of a request, if it is one this server knows.
pub fn request_kind(req: &Request) -> Option<RequestKind> {
    use request::Kind as K;
    Some(match req.kind.as_ref()? {
        K::Hello(_) => RequestKind::Hello,
        K::Checkout(_) => RequestKind::Checkout,
        K::Checkin(_) => RequestKind::Checkin,
        K::Heartbeat(_) => RequestKind::Heartbeat,
        K::Status(_) => RequestKind::Status,
        K::Remove(_) => RequestKind::Remove,
        K::Reload(_) => RequestKind::Reload,
        K::Down(_) => RequestKind::Down,
        K::Goodbye(_) => RequestKind::Goodbye,
        K::Dequeue(_) => RequestKind::Dequeue,
        K::Activity(_) => RequestKind::Activity,
        K::Borrow(_) => RequestKind::Borrow,
        K::Return(_) => RequestKind::Return,
        K::Detach(_) => RequestKind::Detach,
    })
}

/// The one check of the names a request carries (feature, version, user, host, ...; see
/// `usher_proto::names`): the refusal to send if one breaks its rule. Every request passes
/// here before it is dispatched, so nothing unbounded reaches the ledger, the usage log or
/// a metric label.
pub fn refuse_bad_names(req: &Request) -> Option<Response> {
    let e = usher_proto::names::check_request(req).err()?;
    Some(Response::error(
        req.id,
        ErrorCode::BadRequest,
        format!("refused: the {e}"),
    ))
}

/// A successful response.
pub fn ok(id: u64, kind: response::Kind) -> Response {
    Response {
        id,
        kind: Some(kind),
    }
}

/// A response that is ready now.
pub fn ready(r: Response) -> PendingResponse {
    Box::pin(std::future::ready(r.into()))
}

/// A response that `fut` works out.
pub fn later(fut: impl Future<Output = Response> + Send + 'static) -> PendingResponse {
    Box::pin(async move { fut.await.into() })
}

/// An error answer, ready now; the connection goes on.
fn refusal(id: u64, code: ErrorCode, msg: impl Into<String>) -> Dispatched {
    (ready(Response::error(id, code, msg)), false)
}

/// The refusal of a request that needs a session on a query-only connection.
fn need_session(id: u64, what: &str) -> Dispatched {
    let msg = format!("{what} needs a session; this connection was opened query-only");
    refusal(id, ErrorCode::NotPermitted, msg)
}

/// The answer when the ledger task has gone.
pub fn shutting_down(id: u64) -> Response {
    Response::error(id, ErrorCode::ShuttingDown, "the server is shutting down")
}

/// The answer to a request the server cannot make durable now.
pub fn store_unavailable(id: u64, why: &str) -> Response {
    let msg = format!(
        "store unavailable: the server cannot write its store ({why}); seats already held \
         are kept, new grants are refused until it can; try again shortly"
    );
    Response::error(id, ErrorCode::StoreUnavailable, msg)
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
        let response = match rx.await {
            Ok(applied) => match &applied.result {
                Err(LedgerError::UnknownSession) => Response::error(
                    id,
                    ErrorCode::SessionExpired,
                    "the session has expired; its seats were released",
                ),
                _ => ok(id, convert(applied)),
            },
            // Unanswered: the ledger went away, or refused the request because the store
            // cannot commit (its batch was rolled back, or it is a new grant meanwhile).
            Err(_) => match metrics.store_unavailable() {
                Some(why) => store_unavailable(id, &why),
                None => shutting_down(id),
            },
        };
        response.into()
    })
}

/// The answer to an outcome no request of this family can have.
fn internal<T: std::fmt::Debug>(what: &T) -> response::Kind {
    response::Kind::Error(usher_proto::Error {
        code: ErrorCode::Internal as i32,
        message: format!("unexpected ledger outcome: {what:?}"),
    })
}
