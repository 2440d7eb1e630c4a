//! Checking a signed statement: that a server the vendor licensed signed it about seats
//! a genuine license gives, and, for a grant, that it answers this checkout, for a borrow
//! token, that it holds on this host now.

use ed25519_dalek::{Signature, VerifyingKey};

use super::{SignedStatement, Statement, StatementKind, TokenError};
use crate::{
    Entitlement, HostId, SeatCount, VendorPublicKey, Version, matches_host, parse, usher_id, verify,
};

/// How far a client's clock may run behind the server's before a fresh statement looks
/// issued in the future (and is refused).
pub const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// A grant whose statement verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedGrant {
    /// Vendor of the license the seats come from.
    pub vendor: String,
    /// The granting server's host id (`USHER_ID=...`).
    pub server: String,
    /// Whether the license binds its seats to servers (`HOSTID=USHER_ID=...`), which the
    /// signer then is one of: only then does the grant prove the server is the licensed
    /// one, not merely a server with a copy of a genuine license.
    pub bound: bool,
    /// The session the server says it granted the seats to.
    pub session: u64,
}

/// A borrow token that verified: the feature may be used on this host until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Borrowed {
    /// Feature.
    pub feature: String,
    /// Vendor.
    pub vendor: String,
    /// Version of the seats.
    pub version: String,
    /// Seats borrowed.
    pub count: u32,
    /// First millisecond the borrow no longer holds.
    pub until_ms: u64,
    /// The lending server's host id (`USHER_ID=...`).
    pub server: String,
    /// The lease handle on that server.
    pub lease_id: u64,
}

impl SignedStatement {
    /// Checks what every statement must show, trusting only `keys` (the vendor keys
    /// compiled into the application): its kind, the server's signature, the vendor's
    /// signature on the entitlement, the entitlement's binding to that server, and the
    /// match between the two. Returns the entitlement, the signer's host id and whether
    /// the entitlement names the servers it may be served by.
    fn verify_origin(
        &self,
        kind: StatementKind,
        keys: &[VendorPublicKey],
    ) -> Result<(Entitlement, String, bool), TokenError> {
        let s = &self.statement;
        if s.kind != kind {
            return Err(TokenError::WrongKind {
                wanted: kind.as_str(),
                found: s.kind.as_str(),
            });
        }
        let server =
            VerifyingKey::from_bytes(&s.server_key).map_err(|_| TokenError::BadServerSignature)?;
        server
            .verify_strict(&s.signed_bytes(), &Signature::from_bytes(&self.signature))
            .map_err(|_| TokenError::BadServerSignature)?;

        let file = parse("server statement", &format!("{}\n", s.entitlement))
            .map_err(|e| TokenError::BadEntitlement(e.to_string()))?;
        let [e] = file.entitlements.as_slice() else {
            return Err(TokenError::BadEntitlement(
                "expected exactly one FEATURE or INCREMENT line".into(),
            ));
        };
        let key = keys
            .iter()
            .find(|k| k.vendor() == e.vendor)
            .ok_or_else(|| TokenError::UnknownVendor(e.vendor.clone()))?;
        verify(e, key).map_err(TokenError::BadLicenseSignature)?;

        let signer = usher_id(&s.server_key);
        let mut names_servers = false;
        if let HostId::Id(bound) = &e.hostid {
            names_servers = bound.split(' ').any(|id| id.starts_with("USHER_ID="));
            if names_servers && !matches_host(&e.hostid, std::slice::from_ref(&signer)) {
                return Err(TokenError::ServerNotBound {
                    bound: bound.clone(),
                    signer,
                });
            }
        }
        check_match(s, e)?;
        Ok((e.clone(), signer, names_servers))
    }

    /// Checks a grant: the statement's origin (see the `statement` module docs), and that it
    /// answers this checkout: the `nonce` the client sent, and the lease `lease_id` with
    /// `count` seats of `pool_feature` that the answer claims, issued no later than `now_ms`
    /// (give or take [`CLOCK_SKEW_MS`]).
    pub fn verify_grant(
        &self,
        keys: &[VendorPublicKey],
        nonce: &[u8],
        lease_id: u64,
        pool_feature: &str,
        count: u32,
        now_ms: u64,
    ) -> Result<VerifiedGrant, TokenError> {
        let (e, server, bound) = self.verify_origin(StatementKind::Grant, keys)?;
        let s = &self.statement;
        if s.nonce != nonce {
            return Err(TokenError::NotThisCheckout(
                "it answers another nonce (a replayed grant)".into(),
            ));
        }
        if s.lease_id != lease_id || s.feature != pool_feature || s.count != count {
            return Err(TokenError::NotThisCheckout(format!(
                "it vouches for lease {}, {} of {}",
                crate::words::lease_handle(s.lease_id),
                crate::words::plural(s.count.into(), "seat"),
                s.feature
            )));
        }
        if now_ms.saturating_add(CLOCK_SKEW_MS) < s.issued_at_ms {
            return Err(TokenError::NotYetValid);
        }
        if now_ms >= s.valid_until_ms {
            return Err(TokenError::Ended {
                until_ms: s.valid_until_ms,
            });
        }
        Ok(VerifiedGrant {
            vendor: e.vendor,
            server,
            bound,
            session: s.session,
        })
    }

    /// Checks the borrow token for `feature` at `version` or newer (empty: any), on a
    /// machine with host ids `ids`, at `now_ms`, trusting only `keys` (the vendor keys
    /// compiled into the application): its origin (see the `statement` module docs), the
    /// host, and the dates.
    pub fn verify(
        &self,
        keys: &[VendorPublicKey],
        feature: &str,
        version: &str,
        ids: &[String],
        now_ms: u64,
    ) -> Result<Borrowed, TokenError> {
        let (e, signer, _) = self.verify_origin(StatementKind::Borrow, keys)?;
        let s = &self.statement;

        let wanted: Version = if version.is_empty() { "0" } else { version }
            .parse()
            .map_err(|_| TokenError::WrongFeature {
                have: format!("{} {}", s.feature, s.version),
                want: format!("{feature} {version}"),
            })?;
        if s.feature != feature || e.version < wanted {
            return Err(TokenError::WrongFeature {
                have: format!("{} {}", s.feature, s.version),
                want: format!("{feature} {version}").trim_end().to_string(),
            });
        }
        let bound_host = HostId::Id(s.host_ids.join(" "));
        if s.host_ids.is_empty() || !matches_host(&bound_host, ids) {
            return Err(TokenError::OtherHost);
        }
        if now_ms >= s.valid_until_ms {
            return Err(TokenError::Ended {
                until_ms: s.valid_until_ms,
            });
        }
        if now_ms.saturating_add(CLOCK_SKEW_MS) < s.issued_at_ms {
            return Err(TokenError::NotYetValid);
        }
        Ok(Borrowed {
            feature: s.feature.clone(),
            vendor: e.vendor.clone(),
            version: s.version.clone(),
            count: s.count,
            until_ms: s.valid_until_ms,
            server: signer,
            lease_id: s.lease_id,
        })
    }
}

/// The statement must describe seats the entitlement can give: same feature, the pool's
/// version, no more seats than it counts.
fn check_match(s: &Statement, e: &Entitlement) -> Result<(), TokenError> {
    if s.feature != e.feature {
        return Err(TokenError::Mismatch(format!(
            "feature {:?} against {:?}",
            s.feature, e.feature
        )));
    }
    let same_version = s.version.parse::<Version>().is_ok_and(|v| v == e.version);
    if !same_version {
        return Err(TokenError::Mismatch(format!(
            "version {} against {}",
            s.version, e.version
        )));
    }
    if let SeatCount::Counted(n) = e.count
        && s.count > n
    {
        return Err(TokenError::Mismatch(format!(
            "{} seats against a license for {n}",
            s.count
        )));
    }
    if let Some(end) = e.valid_until_ms()
        && s.valid_until_ms > end
    {
        return Err(TokenError::Mismatch(
            "the statement outlasts the license".into(),
        ));
    }
    Ok(())
}
