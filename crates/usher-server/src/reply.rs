//! Turning ledger outcomes into protocol responses.

use chrono::DateTime;
use usher_core::{Denial, Lease, Outcome};
use usher_proto::{
    CheckedIn, Denied, DenyReason, ErrorCode, Granted, HeartbeatAck, Response, response,
};

use crate::ledger_task::{Applied, wall_clock_ms};

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
        feature: lease.feature.clone(),
        version: lease.pool_version.clone(),
        count: lease.count,
        vendor: lease.vendor.clone(),
        expires_at_ms,
        granted_at_ms: lease.granted_at,
        client_ref: lease.client_ref,
        overdraft: lease.overdraft,
    }
}

/// The answer to a checkout.
pub fn checkout(feature: &str, version: &str, applied: Applied) -> response::Kind {
    match applied.result {
        Ok(Outcome::Granted(lease)) => {
            response::Kind::Granted(granted(&lease, applied.expires_at_ms))
        }
        Ok(Outcome::Denied(denial)) => response::Kind::Denied(denied(feature, version, &denial)),
        other => internal(&other),
    }
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
    let (reason, message) = match denial {
        Denial::UnknownFeature => (
            DenyReason::UnknownFeature,
            format!("no license for feature \"{feature}\" on this server"),
        ),
        Denial::VersionTooNew { highest } => {
            d.highest_version = highest.clone();
            (
                DenyReason::VersionTooNew,
                format!(
                    "version {version} of \"{feature}\" was requested but only versions up to \
                     {highest} are licensed"
                ),
            )
        }
        Denial::Expired { at } => {
            d.at_ms = *at;
            // `at` is the first moment after validity; the license's last day is the day before.
            let last_day = date(at.saturating_sub(86_400_000));
            (
                DenyReason::Expired,
                format!("the license for \"{feature}\" expired on {last_day}"),
            )
        }
        Denial::NotYetStarted { at } => {
            d.at_ms = *at;
            (
                DenyReason::NotYetStarted,
                format!("the license for \"{feature}\" starts on {}", date(*at)),
            )
        }
        Denial::AllInUse { in_use, total } => {
            d.in_use = *in_use;
            d.total = *total;
            let seats = if *total == 1 { "seat" } else { "seats" };
            (
                DenyReason::AllInUse,
                format!("all {total} {seats} of \"{feature}\" in use ({in_use} of {total} in use)"),
            )
        }
        Denial::BadRequest(why) => (DenyReason::BadRequest, format!("bad request: {why}")),
    };
    d.reason = reason as i32;
    d.message = message;
    d
}

fn date(ms: u64) -> String {
    DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "an unrepresentable date".into())
}
