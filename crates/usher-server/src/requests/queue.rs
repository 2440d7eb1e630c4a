//! A queued checkout withdrawn by Dequeue. (Its end decided by the ledger, granted, timed
//! out or refused, reaches the client as a notice: see [`super::lease::dequeued`].)

use usher_core::{Command, Outcome};
use usher_proto::{Dequeued, response};

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
