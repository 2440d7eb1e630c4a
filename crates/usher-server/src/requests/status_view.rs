//! Status: a read view the ledger task publishes, and pages of it that fit in one frame.
//!
//! A status with every holder can be far larger than a frame (100,000 holders are some
//! 6 MB), and building it is work the single writer would otherwise repeat for every
//! request. So:
//!
//! - the ledger task copies what status shows into a [`StatusView`] (cheap clones of
//!   reference-counted names, no formatting, no sorting) only when something changed since
//!   the last view and someone asks ([`StatusViews::fresh`]); everything else (sorting,
//!   paging, encoding, and freeing old views) happens on the low-priority background
//!   threads ([`crate::background`]), which get the CPU only when grants do not want it;
//! - views are rebuilt at most once per [`StatusViews`] interval, which grows with the
//!   cost of a build, so pollers cannot take more than a twentieth of the writer's time
//!   however many holders there are; a request that finds the view stale waits for the
//!   next build, so it never sees a status older than itself;
//! - a reply is one page of a view ([`page`]), never more than [`MAX_FRAME_LEN`] bytes;
//!   the cursor names the view and the offset, so a client walking the pages reads one
//!   consistent view (the last [`KEEP_VIEWS`] are kept);
//! - a totals-only status ([`totals`]) is computed from the pools' counts, without any
//!   holder.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;
use usher_core::{ClientInfo, Lease, Millis, PoolKey, PoolRef, QueuedRequest, SessionId};
use usher_proto::{
    FeatureStatus, Holder, MAX_FRAME_LEN, QueueEntry, Response, StatusReport, TokenFeatureStatus,
    field_len, payload_len,
};

use crate::background::Background;
use crate::ledger_task::{LedgerGone, LedgerHandle, ServerInfo, View};

mod page;
mod tokens;

pub use page::{Cursor, PageRequest, hide_paths, log_truncated, page, totals, within_frame};
pub use tokens::{shows_pool, token_statuses};

/// Most holders and queue entries in one status page, whatever the client asks for.
pub const MAX_PAGE_ITEMS: usize = 10_000;

/// Views kept for clients walking their pages.
pub const KEEP_VIEWS: usize = 8;

/// The shortest time between two view builds.
const MIN_REBUILD_INTERVAL: Duration = Duration::from_millis(20);

/// A view is rebuilt after this long even if no command changed the ledger: totals and
/// expiry dates depend on the clock.
const MAX_VIEW_AGE: Duration = Duration::from_secs(1);

/// A build may take at most this share (1 / N) of the ledger task's time: the next build
/// waits N times as long as the last one took. (A copy of 100,000 holders takes a few
/// milliseconds, so such a view is at most a tenth of a second or so old.)
const BUILD_COST_FACTOR: u32 = 20;

/// What status shows, copied from the ledger as of one batch.
#[derive(Debug)]
pub struct StatusView {
    /// The ledger's generation when the view was built (see `View::generation`).
    pub generation: u64,
    /// The batch's time.
    pub now_ms: Millis,
    info: ServerInfo,
    /// Every pool, catalog order, then pools that left the catalog but have holders.
    pools: Vec<FeatureStatus>,
    /// Each pool's overdraft allowance (`OVERDRAFT=`) now, in `pools` order.
    overdraft: Vec<u32>,
    /// Token-based features, by name.
    tokens: Vec<TokenFeatureStatus>,
    /// Holders grouped by pool (in `pools` order), by grant time within a pool.
    holders: Vec<HolderRow>,
    /// `holders[starts[p]..starts[p + 1]]` are pool `p`'s.
    starts: Vec<usize>,
    /// The queue, each feature's in serving order.
    queue: Vec<QueueRow>,
    /// Live sessions (departed ones whose seats linger are not), by opening time then id.
    sessions: Vec<SessionRow>,
    /// `holders` indices in grant order (time, then lease id) across every pool, the order
    /// the admin API lists holders in.
    by_grant: Vec<u32>,
    /// When the query that built it was sent: the view shows everything done before.
    asked_at: Instant,
}

/// One lease, as a view shows it.
#[derive(Debug)]
pub(crate) struct HolderRow {
    pool: usize,
    pub(crate) lease: Lease,
    /// Whoever holds it (a live session, or one that departed while its seats linger).
    pub(crate) client: Option<ClientInfo>,
    pub(crate) connected: bool,
    pub(crate) detached: bool,
}

/// One waiting checkout, as a view shows it.
#[derive(Debug)]
pub(crate) struct QueueRow {
    pub(crate) request: QueuedRequest,
    /// 1-based place in its feature's queue.
    pub(crate) position: u32,
    pub(crate) client: Option<ClientInfo>,
}

/// One live session, as a view shows it.
#[derive(Debug)]
pub(crate) struct SessionRow {
    pub(crate) id: SessionId,
    pub(crate) client: ClientInfo,
    pub(crate) opened_at: Millis,
    /// As of the view: heartbeats move it without a new view (see `View::generation`).
    pub(crate) expires_at: Millis,
    pub(crate) connected: bool,
    pub(crate) detached: bool,
    /// Leases it holds (counted in [`StatusView::finish`]).
    pub(crate) leases: usize,
}

impl StatusView {
    /// Copies what status shows out of the ledger. Runs on the ledger task, so it only
    /// clones (names are reference-counted); [`StatusView::finish`] does the rest.
    fn copy(view: &View<'_>, asked_at: Instant) -> StatusView {
        let ledger = view.ledger;
        let now = view.now;
        let mut pools = Vec::new();
        let mut index: HashMap<PoolRef<'_>, usize> = HashMap::new();
        let mut overdraft = Vec::new();
        for pool in ledger.catalog().all_pools() {
            let key = &pool.key;
            index.insert(key.as_pool_ref(), pools.len());
            overdraft.push(pool.overdraft_at(now));
            pools.push(pool_status(pool, now, ledger.in_use(key)));
        }
        let mut holders = Vec::with_capacity(ledger.leases().size_hint().0);
        // Leases of one pool tend to come together: the last pool found saves a lookup.
        let mut last: Option<(PoolRef<'_>, usize)> = None;
        for lease in ledger.leases() {
            let at = lease.pool_key();
            let pool = match last {
                Some((key, pool)) if key == at => pool,
                _ => {
                    let pool = *index.entry(at).or_insert_with(|| {
                        // A pool that left the catalog on a reload but still has holders.
                        overdraft.push(0);
                        pools.push(FeatureStatus {
                            in_use: ledger.in_use(at),
                            feature: at.feature.to_owned(),
                            vendor: at.vendor.to_owned(),
                            version: at.version.to_owned(),
                            ..FeatureStatus::default()
                        });
                        pools.len() - 1
                    });
                    last = Some((at, pool));
                    pool
                }
            };
            let session = ledger.holder(lease.session);
            holders.push(HolderRow::new(pool, lease, session));
        }
        let queue = ledger
            .queued()
            .map(|(r, position)| QueueRow {
                request: r.clone(),
                position,
                client: ledger.session(r.session).map(|s| s.client.clone()),
            })
            .collect();
        let sessions = ledger
            .sessions()
            .map(|s| SessionRow {
                id: s.id,
                client: s.client.clone(),
                opened_at: s.opened_at,
                expires_at: s.expires_at,
                connected: s.connected,
                detached: s.detached,
                leases: 0,
            })
            .collect();
        let tokens = token_statuses(ledger.catalog(), now, |_| true, ledger.token_use());
        StatusView {
            generation: view.generation,
            now_ms: now,
            info: view.info.clone(),
            pools,
            overdraft,
            tokens,
            holders,
            starts: Vec::new(),
            queue,
            sessions,
            by_grant: Vec::new(),
            asked_at,
        }
    }

    /// Puts the copy in order (off the ledger task): pools that left the catalog after
    /// the catalog's, by name; holders by pool, then grant time.
    fn finish(mut self, catalog_pools: usize) -> StatusView {
        let mut order: Vec<usize> = (0..self.pools.len()).collect();
        order[catalog_pools..].sort_by(|&a, &b| {
            let key = |p: &FeatureStatus| (p.feature.clone(), p.vendor.clone(), p.version.clone());
            key(&self.pools[a]).cmp(&key(&self.pools[b]))
        });
        let mut rank = vec![0; order.len()];
        for (r, &p) in order.iter().enumerate() {
            rank[p] = r;
        }
        let mut pools: Vec<Option<FeatureStatus>> = self.pools.into_iter().map(Some).collect();
        self.pools = order.iter().filter_map(|&p| pools[p].take()).collect();
        self.overdraft = order.iter().map(|&p| self.overdraft[p]).collect();
        for h in &mut self.holders {
            h.pool = rank[h.pool];
        }
        self.holders
            .sort_unstable_by_key(|h| (h.pool, h.lease.granted_at, h.lease.id));
        let mut starts = Vec::with_capacity(self.pools.len() + 1);
        let mut at = 0;
        for p in 0..self.pools.len() {
            starts.push(at);
            while at < self.holders.len() && self.holders[at].pool == p {
                at += 1;
            }
        }
        starts.push(at);
        self.starts = starts;
        let mut by_grant: Vec<u32> = (0..self.holders.len() as u32).collect();
        by_grant.sort_unstable_by_key(|&i| {
            let l = &self.holders[i as usize].lease;
            (l.granted_at, l.id)
        });
        self.by_grant = by_grant;
        self.sessions
            .sort_unstable_by_key(|s| (s.opened_at, s.id.0));
        let mut leases: HashMap<SessionId, usize> = HashMap::new();
        for h in &self.holders {
            *leases.entry(h.lease.session).or_default() += 1;
        }
        for s in &mut self.sessions {
            s.leases = leases.get(&s.id).copied().unwrap_or(0);
        }
        self
    }

    /// Holders in grant order (time, then lease id), across every pool.
    pub(crate) fn holders_by_grant(&self) -> impl ExactSizeIterator<Item = &HolderRow> + '_ {
        self.by_grant.iter().map(|&i| &self.holders[i as usize])
    }

    /// Where holders at or after `(granted_at, id)` start in [`Self::holders_by_grant`].
    pub(crate) fn grant_position(&self, key: (Millis, u64)) -> usize {
        self.by_grant.partition_point(|&i| {
            let l = &self.holders[i as usize].lease;
            (l.granted_at, l.id.0) < key
        })
    }

    /// Every pool (catalog order, then pools that left the catalog but have holders, by
    /// name), with its overdraft allowance and its holders (by grant time).
    pub(crate) fn pools_with_holders(
        &self,
    ) -> impl Iterator<Item = (&FeatureStatus, u32, &[HolderRow])> + '_ {
        self.pools.iter().enumerate().map(|(p, pool)| {
            let rows = &self.holders[self.starts[p]..self.starts[p + 1]];
            (pool, self.overdraft[p], rows)
        })
    }

    /// Token-based features, by name.
    pub(crate) fn token_features(&self) -> &[TokenFeatureStatus] {
        &self.tokens
    }

    /// Live sessions by opening time, then id.
    pub(crate) fn sessions(&self) -> &[SessionRow] {
        &self.sessions
    }

    /// The queue: features in name order, each in serving order.
    pub(crate) fn queue(&self) -> &[QueueRow] {
        &self.queue
    }

    /// Holders in the view (all features).
    pub fn holder_count(&self) -> usize {
        self.holders.len()
    }
}

impl HolderRow {
    fn new(pool: usize, lease: &Lease, session: Option<&usher_core::Session>) -> HolderRow {
        HolderRow {
            pool,
            lease: lease.clone(),
            client: session.map(|s| s.client.clone()),
            connected: session.is_some_and(|s| s.connected),
            detached: session.is_some_and(|s| s.detached),
        }
    }

    fn to_proto(&self) -> Holder {
        let lease = &self.lease;
        let text = |name: Option<&usher_core::Name>| {
            name.map_or_else(String::new, |n| n.as_str().to_owned())
        };
        let client = self.client.as_ref();
        Holder {
            user: text(client.map(|c| &c.user)),
            host: text(client.map(|c| &c.host)),
            display: text(client.map(|c| &c.display)),
            pid: client.map_or(0, |c| c.pid),
            program: text(client.map(|c| &c.program)),
            version: lease.requested_version.to_string(),
            since_ms: lease.granted_at,
            count: lease.count,
            lease_id: lease.id.0,
            session_id: lease.session.0,
            connected: self.connected,
            detached: self.detached,
            overdraft: lease.overdraft,
            lingering_until_ms: lease.lingering_until.unwrap_or(0),
            borrowed_until_ms: lease.borrowed_until.unwrap_or(0),
            token_for: lease.token_for.as_deref().unwrap_or_default().to_string(),
        }
    }
}

impl QueueRow {
    fn to_proto(&self) -> QueueEntry {
        let r = &self.request;
        let client = self.client.clone().unwrap_or_default();
        QueueEntry {
            feature: r.feature.clone(),
            version: r.version.clone(),
            count: r.count,
            position: self.position,
            priority: r
                .priority
                .map_or(-1, |p| i32::try_from(p).unwrap_or(i32::MAX)),
            user: client.user.to_string(),
            host: client.host.to_string(),
            display: client.display.to_string(),
            pid: client.pid,
            program: client.program.to_string(),
            since_ms: r.queued_at,
            deadline_ms: r.deadline.unwrap_or(0),
            lease_id: r.lease_id.0,
            session_id: r.session.0,
        }
    }
}

/// The views the ledger task published, shared by every connection and the admin API.
#[derive(Debug, Default)]
pub struct StatusViews {
    /// Newest last; at most [`KEEP_VIEWS`].
    recent: Mutex<VecDeque<Arc<StatusView>>>,
    /// Held while a view is being brought up to date, so concurrent askers share one
    /// build. Holds the last build's cost on the ledger task.
    refresh: tokio::sync::Mutex<Duration>,
    /// Where views are sorted, paged, encoded and freed: never on the runtime's workers.
    background: Background,
}

/// What the ledger task answers when asked for a view.
enum Answer {
    /// Nothing changed since the view we have.
    Unchanged,
    /// Changed, but the last build was too recent: ask again then.
    Wait,
    /// A new copy (to be finished), with its cost on the ledger task.
    Built(Box<StatusView>, usize, Duration),
}

impl StatusViews {
    /// The view of generation `generation`, if it is still kept.
    pub fn by_generation(&self, generation: u64) -> Option<Arc<StatusView>> {
        self.lock()
            .iter()
            .rev()
            .find(|v| v.generation == generation)
            .cloned()
    }

    /// The low-priority threads that sort views and build their pages.
    pub fn background(&self) -> &Background {
        &self.background
    }

    fn latest(&self) -> Option<Arc<StatusView>> {
        self.lock().back().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<StatusView>>> {
        // The deque stays consistent whatever a panicking holder did (push and pop only).
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A view showing everything done before this call: the newest if nothing changed
    /// since, else a new one from the ledger task (waiting, if the last build was recent,
    /// until the ledger task may spend time on another).
    pub async fn fresh(&self, ledger: &LedgerHandle) -> Result<Arc<StatusView>, LedgerGone> {
        let asked = Instant::now();
        let mut cost = self.refresh.lock().await;
        loop {
            let latest = self.latest();
            if let Some(v) = &latest
                && v.asked_at >= asked
            {
                // Built by someone who asked after us while we waited for the lock.
                return Ok(v.clone());
            }
            let known = latest
                .as_ref()
                .filter(|v| v.asked_at.elapsed() < MAX_VIEW_AGE)
                .map(|v| v.generation);
            let allowed_at = latest.as_ref().map_or(asked, |v| {
                v.asked_at + (*cost * BUILD_COST_FACTOR).max(MIN_REBUILD_INTERVAL)
            });
            let sent = Instant::now();
            let answer = ledger
                .query(move |view| {
                    if Some(view.generation) == known {
                        Answer::Unchanged
                    } else if Instant::now() < allowed_at {
                        Answer::Wait
                    } else {
                        let started = Instant::now();
                        let copy = StatusView::copy(view, sent);
                        let pools = view.ledger.catalog().all_pools().count();
                        Answer::Built(Box::new(copy), pools, started.elapsed())
                    }
                })
                .await?;
            match answer {
                Answer::Unchanged => {
                    if let Some(v) = latest {
                        return Ok(v);
                    }
                }
                Answer::Wait => tokio::time::sleep_until(allowed_at.into()).await,
                Answer::Built(copy, pools, took) => {
                    *cost = took;
                    // Sorting is CPU work: on the background threads (see `page`'s callers).
                    let finished = self.background.run(move || copy.finish(pools));
                    let view = Arc::new(finished.await.map_err(|_| LedgerGone)?);
                    let mut recent = self.lock();
                    recent.push_back(view.clone());
                    while recent.len() > KEEP_VIEWS {
                        if let Some(old) = recent.pop_front() {
                            // Freeing 100,000 rows is work too.
                            self.background.drop_later(old);
                        }
                    }
                    return Ok(view);
                }
            }
        }
    }
}

/// A catalog pool's line of status at `now`, without holders: its seats valid now, or,
/// when none is, whether they have all expired (and when) or when they start, with the
/// seats those license lines hold and their expiry.
pub fn pool_status(pool: &usher_core::Pool, now: Millis, in_use: u32) -> FeatureStatus {
    let ended = pool.ended_at(now);
    let starts = pool.starts_at(now);
    // The moment whose seats and expiry are shown: now, the last valid millisecond of an
    // expired pool, or the start of one yet to start.
    let shown = match (ended, starts) {
        (Some(end), _) => end - 1,
        (None, Some(start)) => start,
        (None, None) => now,
    };
    FeatureStatus {
        feature: pool.key.feature.clone(),
        vendor: pool.key.vendor.clone(),
        version: pool.version.to_string(),
        expires_at_ms: ended.or_else(|| pool.expires_at(shown)).unwrap_or(0),
        total: pool.seats_at(now),
        in_use,
        holders: Vec::new(),
        ended_at_ms: ended.unwrap_or(0),
        starts_at_ms: starts.unwrap_or(0),
        licensed: if shown == now {
            0
        } else {
            pool.seats_at(shown)
        },
    }
}
