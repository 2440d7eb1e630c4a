//! The usage log's hash chain: what makes an edited, removed or reordered record visible.
//!
//! Every record carries `hash = SHA-256(prev_hash || canonical(record))`, where
//! `prev_hash` is the hash of the record before it and the first record chains from
//! [`GENESIS`] (32 zero bytes). [`canonical`] encodes every column except the hash itself,
//! each length-prefixed or tagged, so no two different records encode alike.
//!
//! A chain alone cannot show that its newest records were cut off: what is left is still a
//! valid chain. So the store also keeps the newest `(seq, hash)`, the **head**, in the
//! `meta` table under [`HEAD_KEY`], written in the same transaction as the records, and
//! [`Verifier::finish`] compares the walk's end with it.
//!
//! The genesis is a constant rather than a per-store random value: anybody can recompute
//! the chain from an export with nothing but SHA-256, and a random genesis kept in the same
//! file would not stop somebody who can rewrite the file from rewriting it too. The chain
//! detects accidental and casual edits; to detect a determined writer, copy the head
//! (`usher log verify` prints it) somewhere the server's host cannot write.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::UsageRecord;

/// The hash the first record chains from.
pub const GENESIS: [u8; 32] = [0; 32];

/// The `meta` key holding the chain's head: the newest record's `seq` (8 bytes, big
/// endian) followed by its hash (32 bytes).
pub const HEAD_KEY: &str = "usage_log_head";

/// The `meta` key of the chain's anchor: the `(seq, hash)` of the last record removed by
/// retention ([`crate::SqliteStore::prune_usage_log`]). The oldest record kept chains from
/// it, so a pruned log still verifies; absent, the chain starts from the genesis.
pub const ANCHOR_KEY: &str = "usage_log_anchor";

/// Domain separation, and a version for the encoding below.
const DOMAIN: &[u8] = b"usher-usage-log-v1\0";

/// The hash of `record` (all its columns but `hash`) chained after `prev`.
pub fn record_hash(prev: &[u8; 32], record: &UsageRecord) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(256);
    canonical(record, &mut bytes);
    let mut h = Sha256::new();
    h.update(prev);
    h.update(&bytes);
    h.finalize().into()
}

/// The unambiguous encoding the hash covers: a domain tag, then `seq` and `at` as 8 bytes
/// big endian, the event name length-prefixed, then each optional column as `0x00` for
/// NULL, `0x01` + 8 bytes big endian for an integer, or `0x02` + 8-byte length + UTF-8
/// bytes for text.
pub fn canonical(r: &UsageRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&r.seq.to_be_bytes());
    out.extend_from_slice(&r.at.to_be_bytes());
    text(out, r.event.as_str());
    int(out, r.session.map(|s| s.0));
    int(out, r.lease.map(|l| l.0));
    opt_text(out, r.feature.as_deref());
    opt_text(out, r.vendor.as_deref());
    opt_text(out, r.version.as_deref());
    int(out, r.count.map(u64::from));
    opt_text(out, r.user.as_deref());
    opt_text(out, r.host.as_deref());
    opt_text(out, r.display.as_deref());
    opt_text(out, r.detail.as_deref());
}

fn text(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn opt_text(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(2);
            text(out, s);
        }
    }
}

fn int(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// The newest record's position and hash: where the next record chains from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// `seq` of the newest record (0: the log is empty).
    pub seq: i64,
    /// Its hash ([`GENESIS`] for an empty log).
    pub hash: [u8; 32],
}

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };

    /// The `meta` encoding: seq (8 bytes big endian) then hash.
    pub fn to_bytes(self) -> [u8; 40] {
        let mut out = [0; 40];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.hash);
        out
    }

    /// Parses the `meta` encoding; `None` if it is not 40 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Head> {
        let seq = i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let hash = bytes.get(8..)?.try_into().ok()?;
        Some(Head { seq, hash })
    }
}

/// The first thing wrong with a usage log, as found by [`Verifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// Records are missing before `found`: it should have been `expected` (deleted rows).
    Gap {
        /// The seq that should have come next.
        expected: i64,
        /// The seq that came instead.
        found: i64,
    },
    /// The record has no hash, or one that is not 32 bytes.
    NoHash {
        /// The record.
        seq: i64,
    },
    /// The record's hash is not the hash of its columns chained after the previous record:
    /// the record was edited, or replaced, or moved.
    Mismatch {
        /// The record.
        seq: i64,
    },
    /// The log ends at `last` but the head says records were written up to `head`: the
    /// newest records were removed.
    Truncated {
        /// The newest record present (0: none).
        last: i64,
        /// The newest record the head remembers.
        head: i64,
    },
    /// The log goes on past the head: records were added behind the server's back.
    PastHead {
        /// The newest record the head remembers.
        head: i64,
        /// The newest record present.
        last: i64,
    },
    /// The head's hash differs from the newest record's: it was edited (or the head was).
    HeadMismatch {
        /// The newest record.
        seq: i64,
    },
    /// Records exist but no head was stored, or it is malformed.
    NoHead,
}

impl ChainBreak {
    /// The seq where the break was found (for the tail cases, the first record that is
    /// missing, extra or wrong).
    pub fn seq(&self) -> i64 {
        match *self {
            ChainBreak::Gap { expected, .. } => expected,
            ChainBreak::NoHash { seq }
            | ChainBreak::Mismatch { seq }
            | ChainBreak::HeadMismatch { seq } => seq,
            ChainBreak::Truncated { last, .. } => last + 1,
            ChainBreak::PastHead { head, .. } => head + 1,
            ChainBreak::NoHead => 1,
        }
    }
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::Gap { expected, found } => write!(
                f,
                "seq {expected}: missing; the next record is seq {found} (records deleted)"
            ),
            ChainBreak::NoHash { seq } => write!(f, "seq {seq}: no valid hash stored"),
            ChainBreak::Mismatch { seq } => write!(
                f,
                "seq {seq}: hash does not match its contents and the previous record \
                 (record edited, replaced or moved)"
            ),
            ChainBreak::Truncated { last, head } => write!(
                f,
                "seq {}: missing; the log ends at seq {last} but {head} records were \
                 written (newest records deleted)",
                last + 1
            ),
            ChainBreak::PastHead { head, last } => write!(
                f,
                "seq {}: the log goes on to seq {last} but the server wrote only up to \
                 seq {head} (records added)",
                head + 1
            ),
            ChainBreak::HeadMismatch { seq } => write!(
                f,
                "seq {seq}: hash differs from the one the server recorded (record edited)"
            ),
            ChainBreak::NoHead => write!(f, "the log has records but no stored head"),
        }
    }
}

/// Walks a usage log in `seq` order, one record at a time, checking the chain.
#[derive(Debug, Clone)]
pub struct Verifier {
    head: Head,
    records: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl Verifier {
    /// A walk from the start of the log.
    pub fn new() -> Self {
        Verifier::from_anchor(Head::EMPTY)
    }

    /// A walk of a log whose older records were removed by retention: the first record
    /// must follow `anchor`.
    pub fn from_anchor(anchor: Head) -> Self {
        Verifier {
            head: anchor,
            records: 0,
        }
    }

    /// Checks the next record, whose stored hash is `stored` (`None` if NULL or not 32
    /// bytes; `record.hash` is ignored).
    pub fn next(
        &mut self,
        record: &UsageRecord,
        stored: Option<[u8; 32]>,
    ) -> Result<(), ChainBreak> {
        let expected = self.head.seq + 1;
        if record.seq != expected {
            return Err(ChainBreak::Gap {
                expected,
                found: record.seq,
            });
        }
        let stored = stored.ok_or(ChainBreak::NoHash { seq: record.seq })?;
        if record_hash(&self.head.hash, record) != stored {
            return Err(ChainBreak::Mismatch { seq: record.seq });
        }
        self.head = Head {
            seq: record.seq,
            hash: stored,
        };
        self.records += 1;
        Ok(())
    }

    /// Compares the end of the walk with the stored head (`None` if none is stored) and
    /// returns the number of records checked.
    pub fn finish(self, stored_head: Option<Head>) -> Result<u64, ChainBreak> {
        let last = self.head;
        let Some(head) = stored_head else {
            return if last.seq == 0 {
                Ok(0)
            } else {
                Err(ChainBreak::NoHead)
            };
        };
        if head.seq > last.seq {
            return Err(ChainBreak::Truncated {
                last: last.seq,
                head: head.seq,
            });
        }
        if head.seq < last.seq {
            return Err(ChainBreak::PastHead {
                head: head.seq,
                last: last.seq,
            });
        }
        if head.hash != last.hash {
            return Err(ChainBreak::HeadMismatch { seq: last.seq });
        }
        Ok(self.records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogEvent, UsageEvent};

    fn record(seq: i64) -> UsageRecord {
        LogEvent::server(UsageEvent::ServerStart, None).record(seq, 1000)
    }

    #[test]
    fn encoding_tells_shifted_text_apart() {
        let mut a = record(1);
        a.user = Some("ab".into());
        a.host = Some("c".into());
        let mut b = record(1);
        b.user = Some("a".into());
        b.host = Some("bc".into());
        assert_ne!(record_hash(&GENESIS, &a), record_hash(&GENESIS, &b));
        let mut c = record(1);
        c.detail = Some(String::new());
        assert_ne!(record_hash(&GENESIS, &record(1)), record_hash(&GENESIS, &c));
    }

    #[test]
    fn head_bytes_round_trip() {
        let head = Head {
            seq: 42,
            hash: [7; 32],
        };
        assert_eq!(Head::from_bytes(&head.to_bytes()), Some(head));
        assert_eq!(Head::from_bytes(&[0; 39]), None);
    }

    #[test]
    fn verifier_accepts_a_chain_and_finds_breaks() {
        let mut prev = GENESIS;
        let mut log = Vec::new();
        for seq in 1..=3 {
            let r = record(seq);
            prev = record_hash(&prev, &r);
            log.push((r, prev));
        }
        let head = Head { seq: 3, hash: prev };
        let walk = |log: &[(UsageRecord, [u8; 32])], head| {
            let mut v = Verifier::new();
            for (r, h) in log {
                v.next(r, Some(*h))?;
            }
            v.finish(head)
        };
        assert_eq!(walk(&log, Some(head)), Ok(3));
        assert_eq!(
            walk(&log[..2], Some(head)),
            Err(ChainBreak::Truncated { last: 2, head: 3 })
        );
        let mut edited = log.clone();
        edited[1].0.at += 1;
        assert_eq!(
            walk(&edited, Some(head)),
            Err(ChainBreak::Mismatch { seq: 2 })
        );
        let gap = [log[0].clone(), log[2].clone()];
        assert_eq!(
            walk(&gap, Some(head)),
            Err(ChainBreak::Gap {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(walk(&[], None), Ok(0));
        assert_eq!(walk(&log, None), Err(ChainBreak::NoHead));
    }
}
