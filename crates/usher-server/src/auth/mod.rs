//! The admin token, checked wherever it is presented: as the admin API's bearer token,
//! and in a status request on the client port. Both count wrong tokens against the same
//! record per address (see [`strikes`]), so guessing on one does not restart the count
//! on the other.

pub mod strikes;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use strikes::Strikes;

/// Why a presented token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A wrong token from an address that sent too many: its wrong tokens are refused
    /// this much longer (the right token still passes).
    LockedOut(Duration),
    /// The token does not match `DATA_DIR/admin/token`.
    Wrong,
}

/// The server's admin token, held as its hash, and the wrong tokens counted per address.
#[derive(Debug)]
pub struct AdminAuth {
    token_hash: [u8; 32],
    strikes: Strikes,
    metrics: Arc<Metrics>,
}

impl AdminAuth {
    /// Accepts `token`; wrong ones are counted in `metrics`.
    pub fn new(token: &str, metrics: Arc<Metrics>) -> Self {
        AdminAuth {
            token_hash: Sha256::digest(token.as_bytes()).into(),
            strikes: Strikes::default(),
            metrics,
        }
    }

    /// Checks `given`, presented from `peer` (`None`: an address that cannot be known,
    /// which is never throttled) on `channel` (for the log). The right token is always
    /// accepted, and clears the address's earlier strikes: a guesser on the same address
    /// (a shared NAT, a jump host) must never lock the administrator out. A wrong one is
    /// counted and struck; an address that used up its strikes has its wrong tokens
    /// refused as [`Refused::LockedOut`] (counted, logged only when the lockout begins, so
    /// a guesser cannot flood the log).
    pub fn check(&self, peer: Option<IpAddr>, given: &str, channel: &str) -> Result<(), Refused> {
        let now = Instant::now();
        if same_token(&self.token_hash, given) {
            if let Some(ip) = peer {
                self.strikes.forgive(ip);
            }
            return Ok(());
        }
        self.metrics.admin_auth_failed();
        if let Some(wait) = peer.and_then(|ip| self.strikes.locked(ip, now)) {
            return Err(Refused::LockedOut(wait));
        }
        match peer.and_then(|ip| self.strikes.strike(ip, now).map(|l| (ip, l))) {
            Some((ip, lockout)) => tracing::warn!(
                %ip,
                "{channel}: wrong admin token; too many from this address, its wrong tokens \
                 are refused unchecked for {lockout:?}"
            ),
            None => tracing::warn!(ip = ?peer, "{channel}: wrong admin token"),
        }
        Err(Refused::Wrong)
    }
}

/// Compares in time independent of where the inputs differ: both sides are hashed first
/// (so lengths match), then every byte is looked at.
fn same_token(expected_hash: &[u8; 32], given: &str) -> bool {
    let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    expected_hash
        .iter()
        .zip(given.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> AdminAuth {
        AdminAuth::new("secret", Arc::new(Metrics::default()))
    }

    #[test]
    fn the_right_token_passes_and_a_wrong_one_is_counted() {
        let auth = auth();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(auth.check(Some(ip), "secret", "test"), Ok(()));
        assert_eq!(auth.check(Some(ip), "secreT", "test"), Err(Refused::Wrong));
        assert_eq!(auth.check(None, "", "test"), Err(Refused::Wrong));
    }

    #[test]
    fn too_many_wrong_tokens_throttle_the_address_but_never_refuse_the_right_one() {
        let auth = auth();
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..strikes::MAX_STRIKES {
            assert_eq!(auth.check(Some(ip), "guess", "test"), Err(Refused::Wrong));
        }
        assert!(matches!(
            auth.check(Some(ip), "guess", "test"),
            Err(Refused::LockedOut(_))
        ));
        assert_eq!(auth.check(Some(ip), "secret", "test"), Ok(()));
        // The right token forgave the address.
        assert_eq!(auth.check(Some(ip), "guess", "test"), Err(Refused::Wrong));
        let other: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(auth.check(Some(other), "secret", "test"), Ok(()));
    }
}
