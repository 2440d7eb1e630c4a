//! The administrator's requests on the admin socket: Remove, Reload, Down. Each is carried
//! out by [`crate::admin::Admin`], which the admin HTTP API shares.

use std::sync::Arc;

use usher_proto::{Bye, ErrorCode, Response, response};

use super::{Dispatched, later, ok, ready, shutting_down};
use crate::admin::AdminError;
use crate::shared::Shared;

/// Who acted, in the usage log, for actions arriving on the admin socket.
pub const ADMIN_SOCKET: &str = "admin socket";

/// Remove: a lease taken away from its holder.
pub fn remove(id: u64, r: usher_proto::Remove, ctx: &Arc<Shared>) -> Dispatched {
    let ctx = ctx.clone();
    let fut = async move {
        let removed = |was_held, feature: String, count| {
            let r = usher_proto::Removed {
                lease_id: r.lease_id,
                was_held,
                feature,
                count,
            };
            ok(id, response::Kind::Removed(r))
        };
        match ctx.admin.remove(r.lease_id, ADMIN_SOCKET).await {
            Ok(Some(lease)) => removed(true, lease.feature.to_string(), lease.count),
            Ok(None) => removed(false, String::new(), 0),
            Err(AdminError::Gone(_)) => shutting_down(id),
            Err(e) => Response::error(id, ErrorCode::NotPermitted, e.to_string()),
        }
    };
    (later(fut), false)
}

/// Reload: license files, vendor keys and the policy read again and put in force.
pub fn reload(id: u64, ctx: &Arc<Shared>) -> Dispatched {
    let ctx = ctx.clone();
    let fut = async move {
        match ctx.admin.reload(ADMIN_SOCKET).await {
            Ok(done) => {
                let done = usher_proto::Reloaded {
                    entitlements: done.entitlements as u32,
                    refused: done.refused,
                    warnings: done.warnings,
                };
                ok(id, response::Kind::Reloaded(done))
            }
            Err(e @ AdminError::ReloadRefused(_)) => {
                Response::error(id, ErrorCode::BadRequest, e.to_string())
            }
            Err(AdminError::Gone(_)) => shutting_down(id),
            Err(e) => Response::error(id, ErrorCode::Internal, e.to_string()),
        }
    };
    (later(fut), false)
}

/// Down: a graceful shutdown. The connection ends after the answer.
pub async fn down(id: u64, ctx: &Shared) -> Dispatched {
    // Either way the server stops; a failed audit record means it is stopping already.
    let _ = ctx.admin.down(ADMIN_SOCKET).await;
    (ready(ok(id, response::Kind::Bye(Bye {}))), true)
}
