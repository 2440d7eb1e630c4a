//! The `Users of` blocks of `lmstat -a`, `-A`, `-S` and `-f`: a feature's summed line,
//! a detail block per pool in use with a user line per holder, token-based features as
//! FlexLM shows packages, and the checkouts queued for each feature.

use std::fmt::Write as _;

use chrono::{Datelike, TimeZone, Timelike};
use usher_client::status::{FeatureStatus, Holder, QueueEntry, StatusReport, TokenFeatureStatus};

use super::args::LmstatArgs;
use super::info::token_issued;
use super::server::ServerName;
use super::text::{flexlm_expiry, version_or_zero};
use crate::show::{clean, format_handle, instant};

/// The pools of one feature, in report order.
pub(super) struct FeatureGroup<'a> {
    name: &'a str,
    pools: Vec<&'a FeatureStatus>,
}

/// The pools the arguments select, grouped by feature name in order of first appearance.
pub(super) fn feature_groups<'a>(
    report: &'a StatusReport,
    args: &LmstatArgs,
) -> Vec<FeatureGroup<'a>> {
    let mut groups: Vec<FeatureGroup<'a>> = Vec::new();
    let selected = report.features.iter().filter(|pool| {
        args.feature.as_deref().is_none_or(|f| pool.feature == f)
            && args.vendor.as_deref().is_none_or(|v| pool.vendor == v)
    });
    for pool in selected {
        match groups.iter_mut().find(|g| g.name == pool.feature) {
            Some(group) => group.pools.push(pool),
            None => groups.push(FeatureGroup {
                name: &pool.feature,
                pools: vec![pool],
            }),
        }
    }
    if args.active_only {
        groups.retain(|g| g.pools.iter().any(|p| p.in_use > 0));
    }
    groups
}

/// `license` or `licenses`, as FlexLM words a count.
fn licenses(n: u64) -> String {
    usher_license::words::plural_noun(n, "license")
}

/// One `Users of` block: the summed header line, then a detail block per pool in use.
pub(super) fn users_of<Tz: TimeZone>(
    out: &mut String,
    group: &FeatureGroup<'_>,
    queue: &[QueueEntry],
    server: &ServerName,
    args: &LmstatArgs,
    tz: &Tz,
) {
    let total: u64 = group.pools.iter().map(|p| u64::from(p.total)).sum();
    let in_use: u64 = group.pools.iter().map(|p| u64::from(p.in_use)).sum();
    let _ = writeln!(
        out,
        "Users of {}:  (Total of {total} {} issued;  Total of {in_use} {} in use)",
        clean(group.name, "unknown"),
        licenses(total),
        licenses(in_use),
    );
    out.push('\n');
    for pool in group.pools.iter().filter(|p| p.in_use > 0) {
        detail_line(
            out,
            &pool.feature,
            &pool.version,
            &pool.vendor,
            pool.expires_at_ms,
        );
        out.push_str("  floating license\n\n");
        for holder in &pool.holders {
            user_line(out, pool, holder, server, args.show_pid, tz);
        }
        out.push('\n');
    }
    // A checkout that asked for any version waits for the feature's licensed version.
    let licensed = group.pools.first().map_or("", |p| p.version.as_str());
    queued_lines(out, group.name, licensed, queue, server);
}

/// `  "cad" v2025, vendor: demo, expiry: 31-dec-2027`: the line a detail block opens with.
fn detail_line(out: &mut String, feature: &str, version: &str, vendor: &str, expires_at_ms: u64) {
    let _ = writeln!(
        out,
        "  \"{}\" v{}, vendor: {}, expiry: {}",
        clean(feature, "unknown"),
        version_or_zero(version),
        clean(vendor, "unknown"),
        flexlm_expiry(expires_at_ms),
    );
}

/// A token-based feature's `Users of` block, as FlexLM shows a package's: the licenses
/// its first pool could pay for (issued) and those checked out, then a detail block
/// naming what a license costs, and a user line per checkout with its licenses (not its
/// tokens, which the pool's block shows).
pub(super) fn token_users_of<Tz: TimeZone>(
    out: &mut String,
    report: &StatusReport,
    feature: &TokenFeatureStatus,
    server: &ServerName,
    args: &LmstatArgs,
    tz: &Tz,
) {
    let issued = token_issued(report, feature);
    let in_use = u64::from(feature.in_use);
    let _ = writeln!(
        out,
        "Users of {}:  (Total of {issued} {} issued;  Total of {in_use} {} in use)",
        clean(&feature.feature, "unknown"),
        licenses(issued),
        licenses(in_use),
    );
    out.push('\n');
    if in_use > 0 {
        token_holders(out, report, feature, server, args, tz);
    }
    queued_lines(
        out,
        &feature.feature,
        &feature.version,
        &report.queue,
        server,
    );
}

/// The detail block of a token-based feature in use: its line, its price, and a user line
/// per checkout, in licenses of the feature.
fn token_holders<Tz: TimeZone>(
    out: &mut String,
    report: &StatusReport,
    feature: &TokenFeatureStatus,
    server: &ServerName,
    args: &LmstatArgs,
    tz: &Tz,
) {
    let mut as_pool = FeatureStatus::default();
    as_pool.feature = feature.feature.clone();
    as_pool.vendor = feature.vendor.clone();
    as_pool.version = feature.version.clone();
    let costs: Vec<String> = feature
        .costs
        .iter()
        .map(|c| {
            let tokens = usher_license::words::plural(c.tokens.into(), "token");
            format!("{tokens} of \"{}\"", clean(&c.pool, "unknown"))
        })
        .collect();
    detail_line(
        out,
        &feature.feature,
        &feature.version,
        &feature.vendor,
        feature.expires_at_ms,
    );
    let _ = writeln!(out, "  token license: {} per license\n", costs.join(" or "));
    let price = |pool: &str| {
        feature
            .costs
            .iter()
            .find(|c| c.pool == pool)
            .map_or(1, |c| c.tokens.max(1))
    };
    let drawn = report.features.iter().flat_map(|pool| {
        pool.holders
            .iter()
            .filter(|h| h.token_for == feature.feature)
            .map(move |h| (pool, h))
    });
    for (pool, holder) in drawn {
        let mut seats = holder.clone();
        seats.count = holder.count / price(&pool.feature);
        user_line(out, &as_pool, &seats, server, args.show_pid, tz);
    }
    out.push('\n');
}

/// `    user host display (vVER) (server/port handle) queued for N license(s)`, one per
/// checkout waiting for `feature`, in serving order, then a blank line. `vVER` is the
/// version asked for, or `licensed` for a checkout that asked for any.
fn queued_lines(
    out: &mut String,
    feature: &str,
    licensed: &str,
    queue: &[QueueEntry],
    server: &ServerName,
) {
    let waiting: Vec<&QueueEntry> = queue.iter().filter(|q| q.feature == feature).collect();
    if waiting.is_empty() {
        return;
    }
    for q in waiting {
        let host = clean(&q.host, "unknown");
        let _ = writeln!(
            out,
            "    {} {host} {} (v{}) ({}/{} {}) queued for {} {}",
            clean(&q.user, "unknown"),
            clean(&q.display, &host),
            version_or_zero(if q.version.is_empty() {
                licensed
            } else {
                &q.version
            }),
            server.host,
            server.port,
            format_handle(q.lease_id),
            q.count,
            licenses(u64::from(q.count)),
        );
    }
    out.push('\n');
}

/// `    user host display (vVER) (server/port handle), start Ddd M/D H:MM[, N licenses]`
/// `[, PID: n]`.
fn user_line<Tz: TimeZone>(
    out: &mut String,
    pool: &FeatureStatus,
    holder: &Holder,
    server: &ServerName,
    show_pid: bool,
    tz: &Tz,
) {
    let user = clean(&holder.user, "unknown");
    let host = clean(&holder.host, "unknown");
    // FlexLM shows the host as the display of clients without one (Windows).
    let display = clean(&holder.display, &host).into_owned();
    // The version the client asked for; a client that asked for any shows the pool's.
    let version = if holder.version.is_empty() {
        version_or_zero(&pool.version)
    } else {
        clean(&holder.version, "0")
    };
    let start = instant(holder.since_ms, tz);
    let _ = write!(
        out,
        "    {user} {host} {display} (v{version}) ({}/{} {}), start {} {}/{} {}:{:02}",
        server.host,
        server.port,
        format_handle(holder.lease_id),
        start.weekday(),
        start.month(),
        start.day(),
        start.hour(),
        start.minute(),
    );
    if holder.count > 1 {
        let _ = write!(out, ", {} licenses", holder.count);
    }
    // FlexLM marks held-after-checkin seats, and borrowed ones, so: `(linger: SECONDS)`.
    let held_until = holder.lingering_until_ms.max(holder.borrowed_until_ms);
    if held_until > holder.since_ms {
        let secs = held_until.saturating_sub(holder.since_ms) / 1000;
        let _ = write!(out, " (linger: {secs})");
    }
    if show_pid && holder.pid != 0 {
        let _ = write!(out, ", PID: {}", holder.pid);
    }
    out.push('\n');
}
