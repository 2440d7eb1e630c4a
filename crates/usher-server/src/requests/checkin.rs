//! Checkin and Return: seats given back, on the server or from a borrow.

use usher_core::{Command, LeaseId, Outcome};
use usher_proto::{CheckedIn, Returned, response};

use super::{Caller, Dispatched, answer, internal, need_session};
use crate::applied::Applied;
use crate::ledger_task::LedgerGone;
use crate::shared::Shared;

/// Checkin: a lease given back.
pub async fn checkin(
    id: u64,
    c: usher_proto::Checkin,
    caller: Caller,
    ctx: &Shared,
) -> Result<Dispatched, LedgerGone> {
    let Some(session) = caller.session else {
        return Ok(need_session(id, "checkin"));
    };
    let lease_id = c.lease_id;
    let cmd = Command::Checkin {
        session,
        lease_id: LeaseId(lease_id),
    };
    let rx = ctx.ledger.submit(cmd).await?;
    let pending = answer(ctx, id, rx, move |a| checked_in(lease_id, a));
    Ok((pending, false))
}

/// Return: borrowed seats given back before the borrow ends.
pub async fn return_borrowed(
    id: u64,
    r: usher_proto::Return,
    caller: Caller,
    ctx: &Shared,
) -> Result<Dispatched, LedgerGone> {
    let Some(session) = caller.session else {
        return Ok(need_session(id, "return"));
    };
    let cmd = Command::Return {
        session,
        feature: r.feature,
        lease_id: (r.lease_id != 0).then_some(LeaseId(r.lease_id)),
    };
    let rx = ctx.ledger.submit(cmd).await?;
    Ok((answer(ctx, id, rx, returned), false))
}

/// The answer to a checkin.
fn checked_in(lease_id: u64, applied: Applied) -> response::Kind {
    match applied.result {
        Ok(Outcome::Released(_)) => response::Kind::CheckedIn(CheckedIn {
            lease_id,
            was_held: true,
        }),
        Ok(Outcome::NotHeld) => response::Kind::CheckedIn(CheckedIn {
            lease_id,
            was_held: false,
        }),
        other => internal(&other),
    }
}

/// The answer to a return.
fn returned(applied: Applied) -> response::Kind {
    match applied.result {
        Ok(Outcome::Released(lease)) => response::Kind::Returned(Returned {
            lease_id: lease.id.0,
            was_borrowed: true,
            count: lease.count,
        }),
        Ok(Outcome::NotHeld) => response::Kind::Returned(Returned::default()),
        other => internal(&other),
    }
}
