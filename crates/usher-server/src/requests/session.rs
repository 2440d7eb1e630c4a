//! Requests about the session itself: Heartbeat, Activity, Detach, Goodbye.

use usher_core::Command;
use usher_proto::{Bye, ErrorCode, HeartbeatAck, response};

use super::{Caller, Dispatched, answer, internal, need_session, ok, ready, refusal};
use crate::applied::Applied;
use crate::clock::wall_clock_ms;
use crate::ledger_task::LedgerGone;
use crate::shared::Shared;

/// Heartbeat: keeps the session alive (on a query-only connection, just the server time).
pub async fn heartbeat(id: u64, caller: Caller, ctx: &Shared) -> Result<Dispatched, LedgerGone> {
    match caller.session {
        Some(session) => {
            let rx = ctx
                .ledger
                .submit(Command::Heartbeat { id: session })
                .await?;
            Ok((answer(ctx, id, rx, heartbeat_answer), false))
        }
        None => {
            let ack = HeartbeatAck {
                server_time_ms: wall_clock_ms(),
            };
            Ok((ready(ok(id, response::Kind::HeartbeatAck(ack))), false))
        }
    }
}

/// Activity: whether the application is idle (for the policy's `TIMEOUT`).
pub async fn activity(
    id: u64,
    a: usher_proto::Activity,
    caller: Caller,
    ctx: &Shared,
) -> Result<Dispatched, LedgerGone> {
    let Some(session) = caller.session else {
        return Ok(need_session(id, "activity"));
    };
    let cmd = Command::Activity {
        id: session,
        idle: a.idle,
    };
    let rx = ctx.ledger.submit(cmd).await?;
    Ok((answer(ctx, id, rx, heartbeat_answer), false))
}

/// Detach: the session lives on without the connection, kept alive over UDP with a fresh
/// keepalive key. The connection ends after the answer.
pub async fn detach(id: u64, caller: Caller, ctx: &Shared) -> Result<Dispatched, LedgerGone> {
    let (Some(session), Some(udp_port)) = (caller.session, ctx.udp_port) else {
        let msg = if caller.session.is_none() {
            "detach needs a session; this connection was opened query-only"
        } else {
            "this server has no UDP port for keepalives; stay connected"
        };
        return Ok(refusal(id, ErrorCode::NotPermitted, msg));
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

/// Goodbye: the session ends and its seats come back. The connection ends after the
/// answer.
pub async fn goodbye(id: u64, caller: Caller, ctx: &Shared) -> Result<Dispatched, LedgerGone> {
    match caller.session {
        Some(session) => {
            let rx = ctx
                .ledger
                .submit(Command::CloseSession { id: session })
                .await?;
            Ok((answer(ctx, id, rx, |_| response::Kind::Bye(Bye {})), true))
        }
        None => Ok((ready(ok(id, response::Kind::Bye(Bye {}))), true)),
    }
}

/// The answer to a heartbeat.
fn heartbeat_answer(applied: Applied) -> response::Kind {
    match applied.result {
        Ok(_) => response::Kind::HeartbeatAck(HeartbeatAck {
            server_time_ms: wall_clock_ms(),
        }),
        other => internal(&other),
    }
}
