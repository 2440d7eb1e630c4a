//! Turning ledger outcomes into protocol responses.

use chrono::DateTime;
use usher_core::{Denial, DequeueReason, Lease, Outcome, QueuedRequest};
use usher_license::words::plural;
use usher_license::{Statement, StatementKind, binding_ids};
use usher_proto::{
    CheckedIn, Denied, DenyReason, Dequeued, ErrorCode, Granted, HeartbeatAck, Queued, Response,
    Returned, response,
};

use crate::applied::Applied;
use crate::clock::wall_clock_ms;
use crate::identity::Identity;

/// A successful response.
pub fn ok(id: u64, kind: response::Kind) -> Response {
    Response {
        id,
        kind: Some(kind),
    }
}

/// The wire form of a lease.
pub fn granted(lease: &Lease, expires_at_ms: u64) -> Granted {
    Granted {
        lease_id: lease.id.0,
        feature: (lease
            .token_for
            .clone()
            .unwrap_or_else(|| lease.feature.clone()))
        .to_string(),
        version: lease.pool_version.to_string(),
        count: lease.count,
        vendor: lease.vendor.to_string(),
        expires_at_ms,
        granted_at_ms: lease.granted_at,
        client_ref: lease.client_ref,
        overdraft: lease.overdraft,
        borrowed_until_ms: lease.borrowed_until.unwrap_or(0),
        borrow_token: String::new(),
        token_pool: (lease
            .token_for
            .as_ref()
            .map(|_| lease.feature.clone())
            .unwrap_or_default())
        .to_string(),
        statement: String::new(),
    }
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
pub fn borrow(
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

/// The answer to a return.
pub fn returned(applied: Applied) -> response::Kind {
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

/// The answer to a checkout. With a `nonce` from the client, a grant carries the
/// statement the server signs for it with `identity`.
pub fn checkout(
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

/// The answer to a dequeue.
pub fn dequeue(client_ref: u64, applied: Applied) -> response::Kind {
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

/// The answer to a checkin.
pub fn checkin(lease_id: u64, applied: Applied) -> response::Kind {
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

/// The answer to a heartbeat.
pub fn heartbeat(applied: Applied) -> response::Kind {
    match applied.result {
        Ok(_) => response::Kind::HeartbeatAck(HeartbeatAck {
            server_time_ms: wall_clock_ms(),
        }),
        other => internal(&other),
    }
}

fn internal<T: std::fmt::Debug>(what: &T) -> response::Kind {
    response::Kind::Error(usher_proto::Error {
        code: ErrorCode::Internal as i32,
        message: format!("unexpected ledger outcome: {what:?}"),
    })
}

/// A refusal with its typed reason and a one-line explanation.
pub fn denied(feature: &str, version: &str, denial: &Denial) -> Denied {
    let mut d = Denied::default();
    let message = match denial {
        Denial::UnknownFeature => format!("no license for feature \"{feature}\" on this server"),
        Denial::VersionTooNew { highest } => {
            d.highest_version = highest.clone();
            format!(
                "version {version} of \"{feature}\" was requested but only versions up to \
                     {highest} are licensed"
            )
        }
        Denial::Expired { at } => {
            d.at_ms = *at;
            // `at` is the first moment after validity; the license's last day is the day before.
            let last_day = date(at.saturating_sub(86_400_000));
            format!("the license for \"{feature}\" expired on {last_day}")
        }
        Denial::NotYetStarted { at } => {
            d.at_ms = *at;
            format!("the license for \"{feature}\" starts on {}", date(*at))
        }
        Denial::AllInUse { in_use, total } => {
            d.in_use = *in_use;
            d.total = *total;
            let all = match total {
                1 => "the only seat".to_string(),
                n => format!("all {n} seats"),
            };
            format!("{all} of \"{feature}\" in use ({in_use} of {total} in use)")
        }
        Denial::QueuedAhead { waiting } => format!(
            "{} already waiting for \"{feature}\"",
            plural((*waiting).into(), "checkout is|checkouts are")
        ),
        Denial::Excluded => format!("the server's policy does not allow you to use \"{feature}\""),
        Denial::NotNamedUser { limit } => {
            d.total = *limit;
            format!(
                "the license for \"{feature}\" is for {}, and you are not one of them \
                     (the server's policy INCLUDEs its named users)",
                plural((*limit).into(), "named user")
            )
        }
        Denial::MaxReached { limit, rule } => {
            d.total = *limit;
            format!("the policy limit {rule} is reached")
        }
        Denial::MoreThanLicensed { asked, licensed } => {
            d.total = *licensed;
            format!(
                "{} of \"{feature}\" asked for, but it has at most {} (a request that can \
                 never be met is not queued)",
                plural((*asked).into(), "seat"),
                plural((*licensed).into(), "seat")
            )
        }
        Denial::MoreThanAllowed { limit, rule } => {
            d.total = *limit;
            format!(
                "more seats of \"{feature}\" asked for than the policy limit {rule} allows \
                 (a request that can never be met is not queued)"
            )
        }
        Denial::Reserved { free } => {
            let are = if *free == 1 { "is" } else { "are" };
            format!(
                "the {} of \"{feature}\" {are} reserved for others",
                plural((*free).into(), "free seat")
            )
        }
        Denial::NotBorrowable => format!("the license for \"{feature}\" does not allow borrowing"),
        Denial::BorrowTooLong { max } => {
            d.at_ms = *max;
            format!(
                "\"{feature}\" may be borrowed for at most {}",
                hours_text(*max)
            )
        }
        Denial::BorrowLowWater { keep } => {
            d.total = *keep;
            format!(
                "the policy keeps the last {} of \"{feature}\" from being borrowed \
                     (BORROW_LOWWATER)",
                plural((*keep).into(), "seat")
            )
        }
        Denial::BadRequest(why) => format!("bad request: {why}"),
    };
    d.reason = deny_reason(denial) as i32;
    d.message = message;
    d
}

/// The typed reason of a refusal: what the client is told, and (by its
/// [`DenyReason::name`]) what the usage log and the metrics record.
pub fn deny_reason(denial: &Denial) -> DenyReason {
    match denial {
        Denial::UnknownFeature => DenyReason::UnknownFeature,
        Denial::VersionTooNew { .. } => DenyReason::VersionTooNew,
        Denial::Expired { .. } => DenyReason::Expired,
        Denial::NotYetStarted { .. } => DenyReason::NotYetStarted,
        Denial::AllInUse { .. } => DenyReason::AllInUse,
        Denial::QueuedAhead { .. } => DenyReason::QueuedAhead,
        Denial::Excluded => DenyReason::Excluded,
        Denial::NotNamedUser { .. } => DenyReason::NotNamedUser,
        Denial::MaxReached { .. } => DenyReason::MaxReached,
        Denial::Reserved { .. } => DenyReason::Reserved,
        Denial::MoreThanLicensed { .. } => DenyReason::MoreThanLicensed,
        Denial::MoreThanAllowed { .. } => DenyReason::MoreThanAllowed,
        Denial::NotBorrowable => DenyReason::NotBorrowable,
        Denial::BorrowTooLong { .. } => DenyReason::BorrowTooLong,
        Denial::BorrowLowWater { .. } => DenyReason::BorrowLowWater,
        Denial::BadRequest(_) => DenyReason::BadRequest,
    }
}

/// A duration as whole hours (`168 hours`), or minutes when under an hour.
fn hours_text(ms: u64) -> String {
    if ms >= 3_600_000 {
        plural(ms / 3_600_000, "hour")
    } else {
        plural(ms / 60_000, "minute")
    }
}

fn date(ms: u64) -> String {
    DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "an unrepresentable date".into())
}
