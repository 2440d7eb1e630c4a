//! The wire forms of a lease that both answers and notices carry: a grant, and the end
//! of a queued checkout's wait. Pure shaping: nothing here reaches the ledger.

use usher_core::{DequeueReason, Lease, QueuedRequest};
use usher_proto::{Denied, DenyReason, Granted, response};

use super::denied::denied;

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
