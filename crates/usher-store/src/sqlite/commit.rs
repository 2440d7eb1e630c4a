//! What the store writes: a batch of changes and their usage records in one transaction
//! ([`SqliteStore::commit_batch`]), single log events, retention, and `meta` values.

use rusqlite::{CachedStatement, Connection, OptionalExtension, TransactionBehavior, params};
use usher_core::{Change, Millis};

use super::{SqliteStore, pseudonym};
use crate::{
    StoreError,
    chain::{ANCHOR_KEY, HEAD_KEY, Head, record_hash},
    error::{Context, sqlite},
    usage::{Entry, LogEvent, UsageEvent, UsageRecord, describe},
};

impl SqliteStore {
    /// See [`Store::commit`](crate::Store::commit).
    pub fn commit(&mut self, at: Millis, changes: &[Change]) -> Result<(), StoreError> {
        self.commit_batch(at, changes, &[])
    }

    /// See [`Store::commit_batch`](crate::Store::commit_batch). One `BEGIN IMMEDIATE` …
    /// `COMMIT` per non-empty batch.
    pub fn commit_batch(
        &mut self,
        at: Millis,
        changes: &[Change],
        events: &[LogEvent],
    ) -> Result<(), StoreError> {
        if changes.is_empty() && events.is_empty() {
            return Ok(());
        }
        let n = changes.len();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(|| format!("starting batch of {n} changes"))?;
        let head = {
            let mut batch = Batch::prepare(&tx, self.head, self.pseudonym_key)
                .context(|| format!("preparing batch of {n} changes"))?;
            for (i, change) in changes.iter().enumerate() {
                if let Err(e) = batch.apply(at, change) {
                    // Dropping `tx` rolls the whole batch back.
                    return Err(match change {
                        Change::LeaseGranted(l) if is_foreign_key_violation(&e) => {
                            StoreError::UnknownSession {
                                lease: l.id,
                                session: l.session,
                            }
                        }
                        _ => sqlite(
                            format!(
                                "committing batch of {n} changes: change {i} ({})",
                                describe(change)
                            ),
                            e,
                        ),
                    });
                }
            }
            for event in events {
                let record = event.record(batch.head.seq + 1, at);
                batch.append(record).context(|| {
                    format!("committing batch of {n} changes: event {}", event.event)
                })?;
            }
            batch
                .store_head()
                .context(|| format!("committing batch of {n} changes: storing the head"))?;
            batch.head
        };
        tx.commit()
            .context(|| format!("committing batch of {n} changes"))?;
        self.head = head;
        Ok(())
    }

    /// See [`Store::log_event`](crate::Store::log_event). Written and fsynced at once, in
    /// its own transaction.
    pub fn log_event(
        &mut self,
        at: Millis,
        event: UsageEvent,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let what = || format!("logging event {event}");
        let entry = LogEvent::server(event.clone(), detail);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(what)?;
        let head = {
            let mut batch = Batch::prepare(&tx, self.head, self.pseudonym_key).context(what)?;
            batch
                .append(entry.record(self.head.seq + 1, at))
                .context(what)?;
            batch.store_head().context(what)?;
            batch.head
        };
        tx.commit().context(what)?;
        self.head = head;
        Ok(())
    }

    /// Retention: removes the usage records written before `before`, except the newest
    /// record, and records the removal as a `prune` event. The last removed record's
    /// `(seq, hash)` becomes the chain's anchor (see [`ANCHOR_KEY`]), all in one
    /// transaction, so the log that remains still verifies. Returns how many records went.
    pub fn prune_usage_log(&mut self, at: Millis, before: Millis) -> Result<u64, StoreError> {
        let what = || "pruning the usage log".to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(what)?;
        let last: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, hash FROM usage_log WHERE at < ?1 AND seq < ?2 \
                 ORDER BY seq DESC LIMIT 1",
                params![before as i64, self.head.seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .context(what)?;
        let Some((seq, hash)) = last else {
            return Ok(0);
        };
        let anchor = Head {
            seq,
            hash: <[u8; 32]>::try_from(hash.as_slice()).unwrap_or_default(),
        };
        let removed = tx
            .execute("DELETE FROM usage_log WHERE seq <= ?1", [seq])
            .context(what)?;
        let head = {
            let mut batch = Batch::prepare(&tx, self.head, self.pseudonym_key).context(what)?;
            batch
                .upsert_meta
                .execute(params![ANCHOR_KEY, &anchor.to_bytes()[..]])
                .context(what)?;
            let detail = format!("{removed} records up to seq {seq} removed by retention");
            let event = LogEvent::server(UsageEvent::Other("prune".into()), Some(&detail));
            batch
                .append(event.record(self.head.seq + 1, at))
                .context(what)?;
            batch.store_head().context(what)?;
            batch.head
        };
        tx.commit().context(what)?;
        self.head = head;
        Ok(removed as u64)
    }

    /// See [`Store::set_meta`](crate::Store::set_meta). Written and fsynced at once.
    pub fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(UPSERT_META)
            .and_then(|mut st| st.execute(params![key, value]))
            .map(drop)
            .context(|| format!("writing meta key {key:?}"))
    }
}

// Every statement stores u64 ids, times and client refs bit-cast to i64 (see `schema`).

const UPSERT_SESSION: &str = "
INSERT INTO sessions
    (id, secret_hash, user, host, display, pid, program, program_version, address, opened_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (id) DO UPDATE SET
    secret_hash = excluded.secret_hash, user = excluded.user, host = excluded.host,
    display = excluded.display, pid = excluded.pid, program = excluded.program,
    program_version = excluded.program_version, address = excluded.address,
    opened_at = excluded.opened_at";

/// A lease row is found by its whole key, `(session, id)` (see schema version 8).
const UPSERT_LEASE: &str = "
INSERT INTO leases
    (id, session, feature, vendor, requested_version, pool_version, count, granted_at, client_ref,
     overdraft, lingering_until, borrowed_until, token_for)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (session, id) DO UPDATE SET
    feature = excluded.feature, vendor = excluded.vendor,
    requested_version = excluded.requested_version, pool_version = excluded.pool_version,
    count = excluded.count, granted_at = excluded.granted_at, client_ref = excluded.client_ref,
    overdraft = excluded.overdraft, lingering_until = excluded.lingering_until,
    borrowed_until = excluded.borrowed_until, token_for = excluded.token_for";

const DELETE_LEASE: &str = "DELETE FROM leases WHERE session = ?1 AND id = ?2";
/// A range of the key's prefix.
const DELETE_SESSION_LEASES: &str = "DELETE FROM leases WHERE session = ?1";
const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id = ?1";

/// Appends one usage record with its seq and hash, both computed by the caller (the hash
/// covers the seq, so the seq cannot be left to SQLite).
const APPEND_USAGE: &str = "
INSERT INTO usage_log
    (seq, at, event, session, lease, feature, vendor, version, count, user, host, display,
     detail, hash)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// The user, host and display a usage record copies from its session, so it outlives it.
const SESSION_IDENTITY: &str = "SELECT user, host, display FROM sessions WHERE id = ?1";

const UPSERT_META: &str = "
INSERT INTO meta (key, value) VALUES (?1, ?2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// The statements of one batch, prepared (or fetched from the connection's cache) once.
struct Batch<'conn> {
    upsert_session: CachedStatement<'conn>,
    upsert_lease: CachedStatement<'conn>,
    delete_lease: CachedStatement<'conn>,
    delete_session_leases: CachedStatement<'conn>,
    delete_session: CachedStatement<'conn>,
    append_usage: CachedStatement<'conn>,
    session_identity: CachedStatement<'conn>,
    upsert_meta: CachedStatement<'conn>,
    /// The newest record written so far in this transaction.
    head: Head,
    /// See [`SqliteStore::hide_identities`].
    pseudonym_key: Option<[u8; 32]>,
}

impl<'conn> Batch<'conn> {
    fn prepare(
        conn: &'conn Connection,
        head: Head,
        pseudonym_key: Option<[u8; 32]>,
    ) -> rusqlite::Result<Self> {
        Ok(Batch {
            upsert_session: conn.prepare_cached(UPSERT_SESSION)?,
            upsert_lease: conn.prepare_cached(UPSERT_LEASE)?,
            delete_lease: conn.prepare_cached(DELETE_LEASE)?,
            delete_session_leases: conn.prepare_cached(DELETE_SESSION_LEASES)?,
            delete_session: conn.prepare_cached(DELETE_SESSION)?,
            append_usage: conn.prepare_cached(APPEND_USAGE)?,
            session_identity: conn.prepare_cached(SESSION_IDENTITY)?,
            upsert_meta: conn.prepare_cached(UPSERT_META)?,
            head,
            pseudonym_key,
        })
    }

    /// Applies one change and appends its usage record.
    fn apply(&mut self, at: Millis, change: &Change) -> rusqlite::Result<()> {
        match change {
            Change::SessionOpened(s) => {
                let c = &s.client;
                self.upsert_session.execute(params![
                    s.id.0 as i64,
                    &s.secret_hash[..],
                    c.user.as_str(),
                    c.host.as_str(),
                    c.display.as_str(),
                    c.pid,
                    c.program.as_str(),
                    c.program_version.as_str(),
                    c.address.as_str(),
                    s.opened_at as i64,
                ])?;
                self.log(at, change)
            }
            Change::SessionClosed(id) => {
                // Log first, while the session row can still lend its user to the record.
                self.log(at, change)?;
                let orphans = self.delete_session_leases.execute([id.0 as i64])?;
                if orphans > 0 {
                    tracing::warn!(
                        session = %id,
                        leases = orphans,
                        "session closed while still holding leases; dropped them"
                    );
                }
                self.delete_session.execute([id.0 as i64])?;
                Ok(())
            }
            Change::LeaseGranted(l) | Change::LeaseLingering(l) => {
                self.upsert_lease.execute(params![
                    l.id.0 as i64,
                    l.session.0 as i64,
                    l.feature.as_str(),
                    l.vendor.as_str(),
                    l.requested_version.as_str(),
                    l.pool_version.as_str(),
                    l.count,
                    l.granted_at as i64,
                    l.client_ref as i64,
                    l.overdraft,
                    l.lingering_until.map(|t| t as i64),
                    l.borrowed_until.map(|t| t as i64),
                    l.token_for.as_deref(),
                ])?;
                self.log(at, change)
            }
            Change::LeaseReleased { lease, .. } => {
                self.delete_lease
                    .execute([lease.session.0 as i64, lease.id.0 as i64])?;
                self.log(at, change)
            }
            // The queue is soft state: only its log records are kept.
            Change::Queued(_) | Change::Dequeued { .. } => self.log(at, change),
        }
    }

    fn log(&mut self, at: Millis, change: &Change) -> rusqlite::Result<()> {
        let entry = Entry::for_change(change);
        let who = match entry.session {
            Some(id) => self
                .session_identity
                .query_row([id.0 as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?,
            None => None,
        };
        let record = entry.record(self.head.seq + 1, at, who);
        self.append(record)
    }

    /// Chains `record` (whose seq must be the head's + 1) after the head and appends it.
    fn append(&mut self, mut record: UsageRecord) -> rusqlite::Result<()> {
        debug_assert_eq!(record.seq, self.head.seq + 1);
        if let Some(key) = &self.pseudonym_key {
            for name in [
                &mut record.columns.user,
                &mut record.columns.host,
                &mut record.columns.display,
            ]
            .into_iter()
            .flatten()
            {
                if !name.is_empty() {
                    *name = pseudonym(key, name);
                }
            }
        }
        record.hash = record_hash(&self.head.hash, &record);
        let r = &record;
        self.append_usage.execute(params![
            r.seq,
            r.at as i64,
            r.event.as_str(),
            r.session.map(|s| s.0 as i64),
            r.lease.map(|l| l.0 as i64),
            r.feature,
            r.vendor,
            r.version,
            r.count,
            r.user,
            r.host,
            r.display,
            r.detail,
            &r.hash[..],
        ])?;
        self.head = Head {
            seq: r.seq,
            hash: r.hash,
        };
        Ok(())
    }

    /// Stores the head in `meta`, in the batch's transaction, so that a log cut short
    /// afterwards no longer matches it.
    fn store_head(&mut self) -> rusqlite::Result<()> {
        self.upsert_meta
            .execute(params![HEAD_KEY, &self.head.to_bytes()[..]])?;
        Ok(())
    }
}

fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_extended_error_code() == Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}
