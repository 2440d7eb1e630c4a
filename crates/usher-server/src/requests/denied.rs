//! The refusal of a checkout or borrow: its typed reason and a one-line explanation.

use chrono::DateTime;
use usher_core::Denial;
use usher_license::words::plural;
use usher_proto::{Denied, DenyReason};

/// A refusal with its typed reason and a one-line explanation.
pub fn denied(feature: &str, version: &str, denial: &Denial) -> Denied {
    let mut d = Denied::default();
    let message = match denial {
        Denial::UnknownFeature => format!("no license for feature \"{feature}\" on this server"),
        Denial::BoundToOtherHost { hostid } => format!(
            "the license for feature \"{feature}\" is bound to another host (HOSTID={hostid}), \
             not this server; `usher hostid` on the server prints the ids a license may name"
        ),
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
        Denial::TokensInUse {
            pool,
            cost,
            in_use,
            total,
        } => {
            d.in_use = *in_use;
            d.total = *total;
            format!(
                "\"{feature}\" costs {} of pool \"{pool}\"; {in_use} of {} in use",
                plural((*cost).into(), "token"),
                plural((*total).into(), "token")
            )
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
        Denial::BoundToOtherHost { .. } => DenyReason::BoundToOtherHost,
        Denial::VersionTooNew { .. } => DenyReason::VersionTooNew,
        Denial::Expired { .. } => DenyReason::Expired,
        Denial::NotYetStarted { .. } => DenyReason::NotYetStarted,
        Denial::AllInUse { .. } | Denial::TokensInUse { .. } => DenyReason::AllInUse,
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
