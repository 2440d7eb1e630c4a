//! Checkout and Borrow: seats asked for, granted, queued or refused.

use usher_core::{Ask, Command, Lease, LeaseId, Outcome, Wait};
use usher_license::{Statement, StatementKind, binding_ids};
use usher_proto::{ErrorCode, Granted, Queued, response};

use super::denied::denied;
use super::lease::granted;
use super::{Caller, Dispatched, answer, internal, need_session, refusal};
use crate::applied::Applied;
use crate::clock::wall_clock_ms;
use crate::identity::Identity;
use crate::ledger_task::LedgerGone;
use crate::shared::Shared;

/// Checkout: asks the ledger for seats; with a `nonce`, a grant carries the statement the
/// server signs for it.
pub async fn checkout(
    id: u64,
    c: usher_proto::Checkout,
    caller: Caller,
    ctx: &Shared,
) -> Result<Dispatched, LedgerGone> {
    let Some(session) = caller.session else {
        return Ok(need_session(id, "checkout"));
    };
    if c.nonce.len() > usher_proto::MAX_NONCE_LEN {
        let msg = format!(
            "a checkout nonce is at most {} bytes",
            usher_proto::MAX_NONCE_LEN
        );
        return Ok(refusal(id, ErrorCode::BadRequest, msg));
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
            (true, ms) => Wait::For(ms),
        },
    };
    let rx = ctx.ledger.submit(cmd).await?;
    let (identity, nonce) = (ctx.identity.clone(), c.nonce);
    let pending = answer(ctx, id, rx, move |a| {
        checked_out(&feature, &version, a, nonce, &identity)
    });
    Ok((pending, false))
}

/// Borrow: seats taken off the server for offline use, with the borrow token the server
/// signs for the borrowing host.
pub async fn borrow(
    id: u64,
    b: usher_proto::Borrow,
    caller: Caller,
    ctx: &Shared,
) -> Result<Dispatched, LedgerGone> {
    let Some(session) = caller.session else {
        return Ok(need_session(id, "borrow"));
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
        duration: b.duration_ms,
    };
    let rx = ctx.ledger.submit(cmd).await?;
    let (identity, host_ids) = (ctx.identity.clone(), b.host_ids);
    let pending = answer(ctx, id, rx, move |a| {
        borrowed(&feature, &version, a, &identity, host_ids)
    });
    Ok((pending, false))
}

/// The statement the server signs about a grant (a borrow, or an answer to a checkout's
/// nonce): the lease, its pool, seats and validity, the holder, and the vendor-signed
/// license line the seats come from.
fn statement(
    kind: StatementKind,
    g: &Granted,
    lease: &Lease,
    applied: &Applied,
    source: &usher_license::Entitlement,
    identity: &Identity,
) -> Statement {
    Statement {
        kind,
        server_key: identity.public_key(),
        lease_id: lease.id.0,
        session: match kind {
            StatementKind::Grant => lease.session.0,
            StatementKind::Borrow => 0,
        },
        feature: lease.feature.to_string(),
        version: lease.pool_version.to_string(),
        count: lease.count,
        user: applied.user.clone(),
        host_ids: Vec::new(),
        issued_at_ms: wall_clock_ms(),
        valid_until_ms: match (g.borrowed_until_ms, g.expires_at_ms) {
            (0, 0) => u64::MAX,
            (0, end) => end,
            (until, _) => until,
        }
        .min(source.valid_until_ms().unwrap_or(u64::MAX)),
        entitlement: source.to_line(),
        nonce: Vec::new(),
    }
}

/// The answer to a borrow: the grant, with the borrow token the server signs for the
/// borrowing host over the entitlement the seats came from.
fn borrowed(
    feature: &str,
    version: &str,
    applied: Applied,
    identity: &Identity,
    host_ids: Vec<String>,
) -> response::Kind {
    match (&applied.result, &applied.source) {
        (Ok(Outcome::Granted(lease)), Some(source)) => {
            let mut g = granted(lease, applied.expires_at_ms);
            let s = Statement {
                host_ids: binding_ids(&host_ids),
                ..statement(StatementKind::Borrow, &g, lease, &applied, source, identity)
            };
            g.borrow_token = s.sign(identity.signing_key()).to_text();
            response::Kind::Granted(g)
        }
        (Ok(Outcome::Denied(denial)), _) => {
            response::Kind::Denied(denied(feature, version, denial))
        }
        (other, _) => internal(other),
    }
}

/// The answer to a checkout. With a `nonce` from the client, a grant carries the
/// statement the server signs for it with `identity`.
fn checked_out(
    feature: &str,
    version: &str,
    applied: Applied,
    nonce: Vec<u8>,
    identity: &Identity,
) -> response::Kind {
    match &applied.result {
        Ok(Outcome::Granted(lease)) => {
            let mut g = granted(lease, applied.expires_at_ms);
            if !nonce.is_empty()
                && let Some(source) = &applied.source
            {
                let s = Statement {
                    nonce,
                    ..statement(StatementKind::Grant, &g, lease, &applied, source, identity)
                };
                g.statement = s.sign(identity.signing_key()).to_text();
            }
            response::Kind::Granted(g)
        }
        Ok(Outcome::Denied(denial)) => response::Kind::Denied(denied(feature, version, denial)),
        Ok(Outcome::Queued { request, position }) => response::Kind::Queued(Queued {
            client_ref: request.client_ref,
            lease_id: request.lease_id.0,
            position: *position,
            feature: request.feature.clone(),
        }),
        other => internal(other),
    }
}
