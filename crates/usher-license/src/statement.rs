//! Statements a server signs about the seats it hands out, and the borrow token built on
//! them.
//!
//! A client must be able to tell a genuine seat from one made up by an emulator holding a
//! copy of the license file. It holds only its vendor's public key, so everything it needs
//! travels with the seat:
//!
//! 1. the vendor-signed entitlement the seat was drawn from (as a license line), which the
//!    vendor key verifies;
//! 2. a [`Statement`] signed by the server's identity key about this seat: which lease,
//!    feature, version and count, for whom (user, host ids), until when;
//! 3. the server's public key, whose [`usher_id`] must be one the entitlement's
//!    `HOSTID=USHER_ID=...` names, so the server is the one the vendor licensed.
//!
//! A [`SignedStatement`] is exactly that. As a [`BorrowToken`] it is kept in a file on the
//! borrowing host, and [`SignedStatement::verify`] is what the client library runs to
//! grant a borrowed feature with no server in reach. With an ordinary grant it answers a
//! nonce the client sent with its checkout, and [`SignedStatement::verify_grant`] shows the
//! seat comes from a genuine license, on the server it binds, just now.
//!
//! **Invariant:** the statement's encoding is injective (every field length-prefixed, in a
//! fixed order, after a domain prefix that no other usher signature uses), so a signature
//! over one statement never verifies another.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::{
    Entitlement, HostId, SeatCount, SignatureError, VendorPublicKey, Version, matches_host, parse,
    usher_id, verify,
};

/// Prefix of every statement's signed bytes.
pub const STATEMENT_DOMAIN: &[u8] = b"usher-statement-v1\0";

/// How far a client's clock may run behind the server's before a fresh statement looks
/// issued in the future (and is refused).
pub const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// What a statement vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Seats borrowed for offline use by one host until `valid_until_ms`.
    Borrow,
    /// Seats granted to a checkout that carried `nonce`.
    Grant,
}

impl StatementKind {
    fn as_str(self) -> &'static str {
        match self {
            StatementKind::Borrow => "borrow",
            StatementKind::Grant => "grant",
        }
    }
}

/// What a server says, under its identity key, about seats it granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// What it vouches for.
    pub kind: StatementKind,
    /// The server's identity public key (Ed25519).
    pub server_key: [u8; 32],
    /// The lease handle on that server.
    pub lease_id: u64,
    /// The session the lease was granted to (0: none, as for a borrow).
    pub session: u64,
    /// Feature.
    pub feature: String,
    /// Version of the pool the seats came from.
    pub version: String,
    /// Seats.
    pub count: u32,
    /// The user the seats were granted to.
    pub user: String,
    /// The host ids of the machine the seats are bound to (for a borrow: the borrower's).
    pub host_ids: Vec<String>,
    /// When the server signed it (ms since the Unix epoch).
    pub issued_at_ms: u64,
    /// First millisecond it no longer holds.
    pub valid_until_ms: u64,
    /// The vendor-signed entitlement the seats were drawn from, as one license line.
    pub entitlement: String,
    /// For a grant: the nonce the client sent with its checkout (empty for a borrow).
    pub nonce: Vec<u8>,
}

impl Statement {
    /// The bytes the server signs: [`STATEMENT_DOMAIN`], then every field in declaration
    /// order, texts and byte strings as a big-endian `u32` length and the bytes, numbers
    /// as big-endian `u64`, the host ids as a count followed by each id.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.entitlement.len());
        out.extend_from_slice(STATEMENT_DOMAIN);
        field(&mut out, self.kind.as_str().as_bytes());
        field(&mut out, &self.server_key);
        out.extend_from_slice(&self.lease_id.to_be_bytes());
        out.extend_from_slice(&self.session.to_be_bytes());
        field(&mut out, self.feature.as_bytes());
        field(&mut out, self.version.as_bytes());
        out.extend_from_slice(&u64::from(self.count).to_be_bytes());
        field(&mut out, self.user.as_bytes());
        out.extend_from_slice(&(self.host_ids.len() as u64).to_be_bytes());
        for id in &self.host_ids {
            field(&mut out, id.as_bytes());
        }
        out.extend_from_slice(&self.issued_at_ms.to_be_bytes());
        out.extend_from_slice(&self.valid_until_ms.to_be_bytes());
        field(&mut out, self.entitlement.as_bytes());
        field(&mut out, &self.nonce);
        out
    }

    /// Signs the statement with the server's identity key, which must be the one named in
    /// `server_key`.
    pub fn sign(self, key: &SigningKey) -> SignedStatement {
        debug_assert_eq!(key.verifying_key().to_bytes(), self.server_key);
        let signature = key.sign(&self.signed_bytes()).to_bytes();
        SignedStatement {
            statement: self,
            signature,
        }
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A statement with the server's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedStatement {
    /// What the server vouches for.
    pub statement: Statement,
    /// The server's Ed25519 signature over [`Statement::signed_bytes`].
    pub signature: [u8; 64],
}

/// A server-signed, host-bound, time-limited permission to use borrowed seats offline.
pub type BorrowToken = SignedStatement;

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

/// Why a borrow token does not grant its feature here and now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token file is not a borrow token (the message names the line).
    #[error("not a usher borrow token: {0}")]
    Malformed(String),
    /// The server's signature does not verify: the token was edited or forged.
    #[error("the server's signature on the borrow token does not verify (edited or forged)")]
    BadServerSignature,
    /// The entitlement inside does not parse.
    #[error("the license line in the borrow token does not parse: {0}")]
    BadEntitlement(String),
    /// No trusted key for the entitlement's vendor.
    #[error("no trusted key for vendor {0:?}")]
    UnknownVendor(String),
    /// The vendor's signature on the entitlement does not verify.
    #[error("the vendor's signature on the license line does not verify: {0}")]
    BadLicenseSignature(SignatureError),
    /// The entitlement binds its seats to another server (`HOSTID=USHER_ID=...`) than
    /// the one that signed the token: a server that is not the licensed one lent them.
    #[error("the license binds its seats to {bound}, but the token was signed by {signer}")]
    ServerNotBound {
        /// The servers the license names.
        bound: String,
        /// The server that signed.
        signer: String,
    },
    /// The statement and the entitlement disagree (feature, vendor, version or count).
    #[error("the borrow token does not match its license line: {0}")]
    Mismatch(String),
    /// The token is for another feature than the one asked for, or an older version.
    #[error("the borrow token is for {have}, not {want}")]
    WrongFeature {
        /// What the token holds.
        have: String,
        /// What was asked for.
        want: String,
    },
    /// The token is bound to another machine.
    #[error("the borrow token is bound to another machine")]
    OtherHost,
    /// The borrow period is over.
    #[error("the borrow ended at {until_ms} (ms since the epoch)")]
    Ended {
        /// When it ended.
        until_ms: u64,
    },
    /// The token claims to be issued in the future: this machine's clock is wrong, or the
    /// token is not genuine.
    #[error("the server's statement is dated in the future; check this machine's clock")]
    NotYetValid,
    /// The statement vouches for something else (a grant offered as a borrow token, or
    /// the other way round).
    #[error("the server's statement is a {found} statement, not a {wanted} one")]
    WrongKind {
        /// What was needed.
        wanted: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// The grant's statement is signed by another server than the one the connection
    /// reached (its TLS identity): the answer was relayed or made up.
    #[error(
        "the statement was signed by {signer}, not by the server this connection reached ({connected})"
    )]
    NotTheConnectedServer {
        /// The server the TLS channel authenticated.
        connected: String,
        /// The server that signed.
        signer: String,
    },
    /// The grant does not answer this checkout: another nonce (a replayed grant), another
    /// lease, or other seats than the answer claims.
    #[error("the grant's statement does not answer this checkout: {0}")]
    NotThisCheckout(String),
}

/// The host ids a token binds to: among `ids` (a machine's [`crate::host_ids`]), those of
/// the strongest kind present, `MACHINE_ID=` before `ETHER=` before `HOSTNAME=`, since a
/// host name is the easiest to copy.
pub fn binding_ids(ids: &[String]) -> Vec<String> {
    for kind in ["MACHINE_ID=", "ETHER=", "HOSTNAME="] {
        let of_kind: Vec<String> = ids
            .iter()
            .filter(|i| i.starts_with(kind))
            .cloned()
            .collect();
        if !of_kind.is_empty() {
            return of_kind;
        }
    }
    ids.to_vec()
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

    /// Checks a grant: the statement's origin (see the module docs), and that it answers
    /// this checkout: the `nonce` the client sent, and the lease `lease_id` with `count`
    /// seats of `pool_feature` that the answer claims, issued no later than `now_ms` (give
    /// or take [`CLOCK_SKEW_MS`]).
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
    /// compiled into the application): its origin (see the module docs), the host, and
    /// the dates.
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

    /// The token as a text file (see [`BorrowToken::from_text`]).
    pub fn to_text(&self) -> String {
        let s = &self.statement;
        let mut out = String::new();
        out.push_str(TOKEN_HEADER);
        out.push('\n');
        out.push_str(
            "# A borrowed license seat, signed by the server that lent it. Editing any line\n\
             # makes it invalid. Return it early with `usher borrow --return FEATURE`.\n",
        );
        let mut line = |key: &str, value: &str| {
            out.push_str(key);
            out.push(' ');
            out.push_str(value);
            out.push('\n');
        };
        line("kind", s.kind.as_str());
        line("server-key", &hex::encode(s.server_key));
        // The handle every view shows (decimal). Tokens written before this key existed
        // carry `lease` in hex; `from_text` still reads those.
        line("lease-id", &crate::words::lease_handle(s.lease_id));
        if s.session != 0 {
            line("session", &format!("{:x}", s.session));
        }
        line("feature", &s.feature);
        line("version", &s.version);
        line("count", &s.count.to_string());
        line("user", &s.user);
        for id in &s.host_ids {
            line("host-id", id);
        }
        line("issued-ms", &s.issued_at_ms.to_string());
        line("until-ms", &s.valid_until_ms.to_string());
        line("entitlement", &s.entitlement);
        if !s.nonce.is_empty() {
            line("nonce", &hex::encode(&s.nonce));
        }
        line("signature", &hex::encode(self.signature));
        out
    }

    /// Reads a token written by [`BorrowToken::to_text`]. Comments (`#`) and blank lines
    /// are ignored; every other line is `key value`, each key once (`host-id` may repeat).
    pub fn from_text(text: &str) -> Result<SignedStatement, TokenError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        });
        match lines.next() {
            Some((_, l)) if l.trim() == TOKEN_HEADER => {}
            _ => {
                return Err(TokenError::Malformed(format!(
                    "line 1: expected {TOKEN_HEADER:?}"
                )));
            }
        }
        let mut fields: Vec<(usize, &str, &str)> = Vec::new();
        for (index, l) in lines {
            let (key, value) = l.trim().split_once(' ').ok_or_else(|| {
                TokenError::Malformed(format!("line {}: expected `key value`", index + 1))
            })?;
            fields.push((index + 1, key, value.trim()));
        }
        let optional = |key: &str| -> Result<Option<(usize, &str)>, TokenError> {
            let mut found = fields.iter().filter(|(_, k, _)| *k == key);
            let first = found.next().map(|&(n, _, v)| (n, v));
            match found.next() {
                Some(&(n, _, _)) => Err(TokenError::Malformed(format!(
                    "line {n}: a second {key} line"
                ))),
                None => Ok(first),
            }
        };
        let one = |key: &str| -> Result<(usize, &str), TokenError> {
            optional(key)?.ok_or_else(|| TokenError::Malformed(format!("no {key} line")))
        };
        let bad = |n: usize, what: &str| TokenError::Malformed(format!("line {n}: bad {what}"));
        let number = |key: &str| -> Result<u64, TokenError> {
            let (n, v) = one(key)?;
            v.parse().map_err(|_| bad(n, key))
        };
        let (n, kind) = one("kind")?;
        let kind = match kind {
            "borrow" => StatementKind::Borrow,
            "grant" => StatementKind::Grant,
            _ => return Err(bad(n, "kind")),
        };
        let nonce = match optional("nonce")? {
            Some((n, v)) => hex::decode(v).map_err(|_| bad(n, "nonce"))?,
            None => Vec::new(),
        };
        let (n, key) = one("server-key")?;
        let mut server_key = [0u8; 32];
        hex::decode_to_slice(key, &mut server_key).map_err(|_| bad(n, "server-key"))?;
        let lease_id = match (optional("lease-id")?, optional("lease")?) {
            (Some((n, v)), None) => {
                crate::words::parse_lease_handle(v).ok_or_else(|| bad(n, "lease-id"))?
            }
            // A token written by an earlier usher: the lease id in hex.
            (None, Some((n, v))) => u64::from_str_radix(v, 16).map_err(|_| bad(n, "lease"))?,
            (Some((n, _)), Some(_)) => {
                return Err(TokenError::Malformed(format!(
                    "line {n}: both lease-id and lease lines"
                )));
            }
            (None, None) => return Err(TokenError::Malformed("no lease-id line".into())),
        };
        let session = match optional("session")? {
            Some((n, v)) => u64::from_str_radix(v, 16).map_err(|_| bad(n, "session"))?,
            None => 0,
        };
        let (n, count) = one("count")?;
        let count = count.parse().map_err(|_| bad(n, "count"))?;
        let (n, sig) = one("signature")?;
        let mut signature = [0u8; 64];
        hex::decode_to_slice(sig, &mut signature).map_err(|_| bad(n, "signature"))?;
        let statement = Statement {
            kind,
            server_key,
            lease_id,
            session,
            feature: one("feature")?.1.to_string(),
            version: one("version")?.1.to_string(),
            count,
            user: one("user")?.1.to_string(),
            host_ids: fields
                .iter()
                .filter(|(_, k, _)| *k == "host-id")
                .map(|(_, _, v)| v.to_string())
                .collect(),
            issued_at_ms: number("issued-ms")?,
            valid_until_ms: number("until-ms")?,
            entitlement: one("entitlement")?.1.to_string(),
            nonce,
        };
        Ok(SignedStatement {
            statement,
            signature,
        })
    }
}

/// The first line of every borrow token file.
pub const TOKEN_HEADER: &str = "usher-borrow-token 1";

impl fmt::Display for SignedStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
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
