//! A borrow token as a text file: `key value` lines under a header, written by
//! [`SignedStatement::to_text`] and read back by [`SignedStatement::from_text`].

use std::fmt;

use super::{SignedStatement, Statement, StatementKind, TokenError};

impl SignedStatement {
    /// The token as a text file (see
    /// [`BorrowToken::from_text`](crate::BorrowToken::from_text)).
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

    /// Reads a token written by [`BorrowToken::to_text`](crate::BorrowToken::to_text).
    /// Comments (`#`) and blank lines are ignored; every other line is `key value`, each key
    /// once (`host-id` may repeat).
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
