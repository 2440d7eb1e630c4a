//! Status: who holds what, as much of it as the asker may see, one page at a time.

use std::net::IpAddr;
use std::sync::Arc;

use usher_proto::{ErrorCode, response};

use super::status_view as view;
use super::{Answer, Caller, Dispatched, later, ok, refusal, shutting_down};
use crate::background::Gone;
use crate::config::StatusDetail;
use crate::ledger_task::LedgerGone;
use crate::shared::Shared;

/// Status: a page of the newest status view (or of the one a cursor names), or totals
/// only, as the server's `status_detail` and the caller's credentials allow.
pub fn status(
    id: u64,
    s: usher_proto::StatusRequest,
    caller: Caller,
    ctx: &Arc<Shared>,
) -> Dispatched {
    let admin = caller.admin;
    // Whoever asks without the admin socket or the token learns file names at
    // most, never where the server keeps its files.
    let anonymous = !admin && s.admin_token.is_empty();
    let detail = if admin {
        StatusDetail::Full
    } else if !s.admin_token.is_empty() {
        match token_status(ctx, caller.peer_ip, &s.admin_token) {
            Ok(()) => StatusDetail::Full,
            Err(msg) => {
                return refusal(id, ErrorCode::NotPermitted, msg);
            }
        }
    } else {
        ctx.status_detail
    };
    if detail == StatusDetail::None {
        let msg = "status is available to administrators only on this server";
        return refusal(id, ErrorCode::NotPermitted, msg);
    }
    if detail == StatusDetail::Totals {
        // Counts only: nobody's name, host or program.
        let ledger = ctx.ledger.clone();
        let fut = async move {
            let feature = s.feature;
            match ledger.query(move |v| view::totals(v, &feature)).await {
                Ok(report) => ok(id, response::Kind::Status(report)),
                Err(LedgerGone) => shutting_down(id),
            }
        };
        return (later(fut), false);
    }
    let cursor = match s.cursor.as_str() {
        "" => None,
        text => match view::Cursor::parse(text) {
            Ok(c) => Some(c),
            Err(msg) => {
                return refusal(id, ErrorCode::BadRequest, msg);
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
                Err(LedgerGone) => return shutting_down(id).into(),
            },
        };
        // Building and encoding a page is CPU work: on the background threads, at the
        // lowest priority, so that it never takes the CPU from grants.
        let background = views.background();
        let built = background.run(move || {
            let request = view::PageRequest {
                feature: &s.feature,
                offset: cursor.map_or(0, |c| c.offset),
                page_size: s.page_size as usize,
                max_bytes: usher_proto::MAX_FRAME_LEN,
            };
            let mut report = view::page(&view, id, request);
            if report.truncated {
                view::log_truncated(&report);
            }
            if anonymous {
                view::hide_paths(&mut report);
            }
            let response = view::within_frame(ok(id, response::Kind::Status(report)));
            usher_proto::encode_frame(&response)
        });
        match built.await {
            Ok(frame) => Answer::Frame(frame),
            Err(Gone) => shutting_down(id).into(),
        }
    };
    (Box::pin(fut), false)
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
