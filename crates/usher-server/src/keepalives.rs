//! The keepalive table: the keys of detached sessions and what each has sent.
//!
//! A detached session (see [`crate::udp`]) is kept alive by a tagged datagram every
//! heartbeat interval. A keepalive is accepted only if
//!
//! 1. its session has a key here (a map lookup: unknown ids cost nothing more),
//! 2. its sequence number is above every one accepted before (no replay),
//! 3. its "ms since the key was issued" is within [`WINDOW`] of the server's own figure
//!    (no replay of a datagram held back for later), and
//! 4. its HMAC tag verifies under the session's key.
//!
//! Keys are not stored: each is an HMAC of the session id and the moment of issue under a
//! secret drawn at start, so a detached session costs 24 bytes here, and after a restart
//! (a new secret) a detached client hears nothing, reconnects over TCP and resumes its
//! session (whose seats were recovered from the store).
//!
//! The table is only a table: the UDP task reads datagrams and asks it, the connection
//! task issues keys on `Detach`, and notices mark sessions to call back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use usher_core::SessionId;
use usher_proto::udp::{self, KEEPALIVE_KEY_LEN};

use crate::metrics::UdpResult;
/// How far a keepalive's "ms since the key was issued" may stray from the server's own
/// figure: room for clock-rate drift and delivery, far less than a session TTL.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One detached session's keepalive state: 24 bytes. The key itself is not kept: it is
/// derived again from the table's secret, the session and the moment it was issued.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Highest sequence number accepted.
    last_seq: u64,
    /// When the key was issued, in ms since the table's epoch (part of the key).
    issued_ms: u64,
    /// When the session was last heard, in seconds since the table's epoch.
    heard_s: u32,
    /// A notice could not reach the session: the next acknowledgement calls it back.
    call_back: bool,
}

/// The keepalive keys of detached sessions.
pub struct Keepalives {
    epoch: Instant,
    /// Random at every start; each session's key is an HMAC of its id and issue time
    /// under it, so a million sessions need no million stored keys.
    secret: [u8; 32],
    entries: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for Keepalives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keepalives").finish_non_exhaustive()
    }
}

impl Default for Keepalives {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random number generator is available");
        Keepalives {
            epoch: Instant::now(),
            secret,
            entries: Mutex::default(),
        }
    }
}

impl Keepalives {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn seconds(ms: u64) -> u32 {
        u32::try_from(ms / 1000).unwrap_or(u32::MAX)
    }

    /// The key of `session` issued at `issued_ms`.
    fn key(&self, session: u64, issued_ms: u64) -> [u8; KEEPALIVE_KEY_LEN] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes keys of any length");
        mac.update(b"usher keepalive key 1");
        mac.update(&session.to_be_bytes());
        mac.update(&issued_ms.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a fresh key for `session`, replacing any earlier one.
    pub fn issue(&self, session: SessionId) -> [u8; KEEPALIVE_KEY_LEN] {
        let now = self.now_ms();
        let entry = Entry {
            last_seq: 0,
            issued_ms: now,
            heard_s: Self::seconds(now),
            call_back: false,
        };
        self.lock().insert(session.0, entry);
        self.key(session.0, now)
    }

    /// Asks a detached session to come back over TCP (a notice for it had no connection to
    /// go to). Does nothing for a session that is not detached.
    pub fn call_back(&self, session: SessionId) {
        if let Some(e) = self.lock().get_mut(&session.0) {
            e.call_back = true;
        }
    }

    /// Forgets `session`'s key (its session ended).
    pub fn forget(&self, session: u64) {
        self.lock().remove(&session);
    }

    /// Detached sessions with a key.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is detached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks a keepalive and, if it is good, records its sequence number. Returns the
    /// key to tag the acknowledgement with and the acknowledgement's flags.
    pub(crate) fn accept(
        &self,
        k: &udp::Keepalive,
        whole: &[u8; udp::KEEPALIVE_LEN],
    ) -> Result<([u8; KEEPALIVE_KEY_LEN], u8), UdpResult> {
        let now = self.now_ms();
        let mut entries = self.lock();
        let entry = entries
            .get_mut(&k.session)
            .ok_or(UdpResult::UnknownSession)?;
        if k.seq <= entry.last_seq {
            return Err(UdpResult::Replayed);
        }
        let ours = now.saturating_sub(entry.issued_ms);
        if ours.abs_diff(k.elapsed_ms) > WINDOW.as_millis() as u64 {
            return Err(UdpResult::Stale);
        }
        let key = self.key(k.session, entry.issued_ms);
        if !udp::verify_keepalive(whole, &key) {
            return Err(UdpResult::Forged);
        }
        entry.last_seq = k.seq;
        entry.heard_s = Self::seconds(now);
        let flags = if entry.call_back {
            udp::ACK_CALL_BACK
        } else {
            0
        };
        Ok((key, flags))
    }

    /// Drops the keys of sessions not heard from for `ttl`: their sessions have lapsed.
    pub fn sweep(&self, ttl: Duration) {
        let now = Self::seconds(self.now_ms());
        // Whole seconds, rounded up: never a key whose session may still live.
        let ttl = u32::try_from(ttl.as_secs() + 1).unwrap_or(u32::MAX);
        self.lock()
            .retain(|_, e| now.saturating_sub(e.heard_s) <= ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keepalive(
        table: &Keepalives,
        session: u64,
        seq: u64,
        key: &[u8; 32],
    ) -> Result<(), UdpResult> {
        let k = udp::Keepalive {
            session,
            seq,
            elapsed_ms: 0,
        };
        let b = udp::encode_keepalive(&k, key);
        table.accept(&k, &b).map(|_| ())
    }

    #[test]
    fn a_keepalive_is_accepted_once_and_only_with_the_sessions_key() {
        let table = Keepalives::default();
        let key = table.issue(SessionId(5));
        assert_eq!(
            keepalive(&table, 6, 1, &key),
            Err(UdpResult::UnknownSession)
        );
        assert_eq!(keepalive(&table, 5, 1, &[0; 32]), Err(UdpResult::Forged));
        assert_eq!(keepalive(&table, 5, 1, &key), Ok(()));
        assert_eq!(keepalive(&table, 5, 1, &key), Err(UdpResult::Replayed));
        assert_eq!(keepalive(&table, 5, 3, &key), Ok(()));
        assert_eq!(keepalive(&table, 5, 2, &key), Err(UdpResult::Replayed));
        // A forged datagram does not move the sequence on.
        assert_eq!(keepalive(&table, 5, 9, &[1; 32]), Err(UdpResult::Forged));
        assert_eq!(keepalive(&table, 5, 4, &key), Ok(()));
    }

    #[test]
    fn a_keepalive_far_from_the_servers_clock_is_stale() {
        let table = Keepalives::default();
        let key = table.issue(SessionId(5));
        let k = udp::Keepalive {
            session: 5,
            seq: 1,
            elapsed_ms: WINDOW.as_millis() as u64 + 5_000,
        };
        let b = udp::encode_keepalive(&k, &key);
        assert_eq!(table.accept(&k, &b).map(|_| ()), Err(UdpResult::Stale));
    }

    #[test]
    fn the_entry_is_small() {
        assert!(std::mem::size_of::<Entry>() <= 24);
    }
}
