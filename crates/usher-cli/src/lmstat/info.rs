//! `lmstat -i`: the license table, one row per pool and per token-based feature.

use chrono::{DateTime, TimeZone};
use usher_client::status::{StatusReport, TokenFeatureStatus};

use super::args::LmstatArgs;
use super::text::{flexlm_expiry, header, version_or_zero};
use crate::show::clean;

/// First line of `lmstat -i`, verbatim from FlexLM (note the two spaces after `file.`).
pub const INFO_NOTE: &str = concat!(
    "NOTE: lmstat -i does not give information from the server, ",
    "but only reads the license file.  ",
    "For this reason, lmstat -a is recommended instead."
);

/// `lmstat -i`: FlexLM's note, then one row per pool: feature, version, license count,
/// expiry (`dd-mon-yyyy` or `permanent`) and vendor, in FlexLM's columns. Like FlexLM,
/// which reads the license file, an expired or not yet started pool shows the count and
/// expiry its lines carry (a date in the past for an expired one), not zero seats.
///
/// Rows match flexlm_exporter's
/// `^(\S+)\s+([\d.]+)\s+(\d+)\s+([\w-]+)\s+(\w+)$` as long as the version is numeric and the
/// vendor a word, which license files guarantee. `-i FEATURE` restricts the rows.
pub fn render_info<Tz: TimeZone>(
    report: &StatusReport,
    args: &LmstatArgs,
    now_local: DateTime<Tz>,
) -> String {
    let mut out = header(&now_local);
    out.push_str(INFO_NOTE);
    out.push_str("\n\n");
    out.push_str(
        "Feature                         Version     #licenses    Expires      Vendor\n\
         _______                         _________   _________    __________   ______\n",
    );
    let wanted = args.info_feature.as_deref();
    for pool in report
        .features
        .iter()
        .filter(|p| wanted.is_none_or(|f| p.feature == f))
    {
        let count = if pool.total == 0 && pool.licensed > 0 {
            pool.licensed
        } else {
            pool.total
        };
        let expiry = flexlm_expiry(pool.expires_at_ms);
        info_row(
            &mut out,
            &pool.feature,
            &pool.version,
            count.into(),
            &expiry,
            &pool.vendor,
        );
    }
    // A token-based feature's row counts what its first pool's tokens pay for, as its
    // `Users of` line does.
    for token in report
        .token_features
        .iter()
        .filter(|t| wanted.is_none_or(|f| t.feature == f))
    {
        let expiry = flexlm_expiry(token.expires_at_ms);
        let count = token_issued(report, token);
        info_row(
            &mut out,
            &token.feature,
            &token.version,
            count,
            &expiry,
            &token.vendor,
        );
    }
    out
}

/// One row of `lmstat -i`. Widths from FlexLM's own output: the row's columns start at 0,
/// 32, 45, 57, 70; padding one short and adding a space keeps fields apart when one
/// overflows.
fn info_row(
    out: &mut String,
    feature: &str,
    version: &str,
    count: u64,
    expiry: &str,
    vendor: &str,
) {
    let line = format!(
        "{:<31} {:<12} {:<11} {:<12} {}",
        clean(feature, "unknown"),
        version_or_zero(version),
        count,
        expiry,
        clean(vendor, "unknown"),
    );
    out.push_str(line.trim_end());
    out.push('\n');
}

/// The licenses of a token-based feature shown as issued: those its first pool could pay
/// for (the pool's own line counts the same tokens again, as FlexLM counts a package's
/// components beside it).
pub(super) fn token_issued(report: &StatusReport, feature: &TokenFeatureStatus) -> u64 {
    feature.costs.first().map_or(0, |cost| {
        let tokens: u64 = report
            .features
            .iter()
            .filter(|p| p.feature == cost.pool)
            .map(|p| u64::from(p.total))
            .sum();
        tokens / u64::from(cost.tokens.max(1))
    })
}
