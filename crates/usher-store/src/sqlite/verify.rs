//! Walking the whole usage log to check its hash chain against the stored head
//! ([`SqliteStore::verify_usage_log`], for `usher log verify`).

use rusqlite::params;

use super::{SqliteStore, read::SELECT_USAGE, read_head, read_meta_head};
use crate::{
    StoreError,
    chain::{ANCHOR_KEY, ChainBreak, Head, Verifier},
    error::Context,
    schema,
    usage::UsageRecord,
};

/// What [`SqliteStore::verify_usage_log`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Records checked and found intact (all of them if `broken` is `None`, else those
    /// before the break).
    pub records: u64,
    /// The head stored with the log, if any.
    pub head: Option<Head>,
    /// The first thing wrong, if anything is.
    pub broken: Option<ChainBreak>,
}

impl SqliteStore {
    /// Walks the whole usage log in `seq` order, in one read transaction, checking the
    /// hash chain and comparing its end with the stored head (see `chain`). Reads in
    /// pages, so memory stays small however long the log.
    pub fn verify_usage_log(&self) -> Result<ChainReport, StoreError> {
        const PAGE: i64 = 10_000;
        let what = || "verifying the usage log".to_string();
        let tx = self.conn.unchecked_transaction().context(what)?;
        let head = read_head(&tx).context(what)?;
        let anchor = read_meta_head(&tx, ANCHOR_KEY)
            .context(what)?
            .ok()
            .flatten()
            .unwrap_or(Head::EMPTY);
        let mut verifier = Verifier::from_anchor(anchor);
        let mut checked = 0;
        let mut after = 0;
        let mut st = tx.prepare_cached(SELECT_USAGE).context(what)?;
        loop {
            let page: Vec<(UsageRecord, Option<Vec<u8>>)> = st
                .query_map(params![after, PAGE], |r| {
                    Ok((schema::usage_columns(r)?, r.get::<_, Option<Vec<u8>>>(13)?))
                })
                .and_then(|rows| rows.collect())
                .context(what)?;
            let Some(last) = page.last() else { break };
            after = last.0.seq;
            for (record, hash) in &page {
                let stored = hash.as_deref().and_then(|h| <[u8; 32]>::try_from(h).ok());
                if let Err(broken) = verifier.next(record, stored) {
                    return Ok(ChainReport {
                        records: checked,
                        head: head.ok().flatten(),
                        broken: Some(broken),
                    });
                }
                checked += 1;
            }
        }
        let (records, broken) = match head {
            Err(()) => (checked, Some(ChainBreak::NoHead)),
            Ok(h) => match verifier.finish(h) {
                Ok(n) => (n, None),
                Err(b) => (checked, Some(b)),
            },
        };
        Ok(ChainReport {
            records,
            head: head.ok().flatten(),
            broken,
        })
    }
}
