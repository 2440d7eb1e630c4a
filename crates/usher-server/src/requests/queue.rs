//! A queued checkout: withdrawn by Dequeue, or ended by the ledger (granted, timed out,
//! refused), which the waiting client hears of as a notice.

use usher_core::{Command, DequeueReason, Outcome, QueuedRequest};
use usher_proto::{Denied, DenyReason, Dequeued, response};

use super::checkout::granted;
use super::denied::denied;
use super::{Caller, Dispatched, answer, internal, need_session};
use crate::applied::Applied;
use crate::ledger_task::LedgerGone;
use crate::shared::Shared;

/// Dequeue: the client withdraws a queued checkout.
pub async fn dequeue(
    id: u64,
    d: usher_proto::Dequeue,
    caller: Caller,
    ctx: &Shared,
) -> Result<Dispatched, LedgerGone> {
    let Some(session) = caller.session else {
        return Ok(need_session(id, "dequeue"));
    };
    let client_ref = d.client_ref;
    let cmd = Command::Dequeue {
        session,
        client_ref,
    };
    let rx = ctx.ledger.submit(cmd).await?;
    let pending = answer(ctx, id, rx, move |a| dequeue_answer(client_ref, a));
    Ok((pending, false))
}

/// The answer to a dequeue.
fn dequeue_answer(client_ref: u64, applied: Applied) -> response::Kind {
    match applied.result {
        Ok(Outcome::Done) => response::Kind::Dequeued(Dequeued {
            client_ref,
            was_queued: true,
        }),
        Ok(Outcome::NotHeld) => response::Kind::Dequeued(Dequeued {
            client_ref,
            was_queued: false,
        }),
        other => internal(&other),
    }
}

/// The notice that ends a queued checkout's wait, sent once the outcome is durable:
/// its grant, or why it will not be granted. `None` when nobody is left to tell (the
/// client withdrew it, or its session ended).
pub fn dequeued(
    request: &QueuedRequest,
    reason: &DequeueReason,
    expires_at_ms: u64,
) -> Option<response::Kind> {
    let (feature, version) = (&request.feature, &request.version);
    let mut d = match reason {
        DequeueReason::Granted(lease) => {
            return Some(response::Kind::Granted(granted(lease, expires_at_ms)));
        }
        DequeueReason::Cancelled | DequeueReason::SessionEnded => return None,
        DequeueReason::Refused(denial) => denied(feature, version, denial),
        DequeueReason::TimedOut => {
            let waited = request
                .deadline
                .unwrap_or(request.queued_at)
                .saturating_sub(request.queued_at);
            Denied {
                reason: DenyReason::WaitTimedOut as i32,
                message: format!(
                    "no seat of \"{feature}\" freed within the {} s the checkout would wait",
                    waited.div_ceil(1000)
                ),
                ..Denied::default()
            }
        }
    };
    d.client_ref = request.client_ref;
    Some(response::Kind::Denied(d))
}
