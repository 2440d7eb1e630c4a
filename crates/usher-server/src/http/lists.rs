//! The long lists of the admin API (`/holders`, `/holders/groups`, `/sessions`, `/queue`),
//! served in pages from the status view the ledger task publishes (see
//! [`crate::requests::status_view::StatusViews`]), never computed on the ledger task per request.
//!
//! **Paging is by key, not by offset.** Each list is sorted by a key that never changes
//! while its item lives (holders: grant time then lease id; sessions: opening time then
//! id; the queue: feature, then serving slot; groups: the group's name), and a cursor is
//! the key of the last item a page held. The next page starts just after that key in the
//! newest view, so items that come and go between two pages never shift the others: a
//! client walking the pages sees every item that existed throughout its walk exactly once,
//! and no item twice. (Offsets would skip an item for every one removed before it.)
//!
//! Filtering, counting and encoding happen on a blocking thread: with 100,000 holders a
//! search is a few milliseconds of CPU that must not stall the runtime's workers.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use usher_core::{ClientInfo, Millis};

use super::paging::{
    Items, Page, Paging, bad_cursor, cursor_number, hex_name, query_of, two_numbers,
};
use super::{ApiError, ApiState};
use crate::requests::status_view::{HolderRow, QueueRow, SessionRow, StatusView};

/// One lease.
#[derive(Debug, Serialize)]
pub struct HolderJson {
    id: u64,
    session_id: String,
    feature: String,
    vendor: String,
    version: String,
    user: String,
    host: String,
    display: String,
    pid: u32,
    program: String,
    since: Millis,
    count: u32,
    overdraft: bool,
    /// The client gave the seats back; they stay held until then (`LINGER=`).
    lingering_until: Option<Millis>,
    /// Borrowed for offline use until then.
    borrowed_until: Option<Millis>,
    /// The token-based feature these seats (tokens) were checked out for.
    token_for: Option<String>,
    connected: bool,
    /// The session keeps its seats with UDP keepalives, without a connection.
    detached: bool,
}

/// One client session.
#[derive(Debug, Serialize)]
pub struct SessionJson {
    id: String,
    user: String,
    host: String,
    display: String,
    pid: u32,
    program: String,
    program_version: String,
    address: String,
    opened_at: Millis,
    expires_at: Millis,
    connected: bool,
    /// Kept alive by UDP keepalives, without a connection.
    detached: bool,
    leases: usize,
}

/// One checkout waiting in the queue.
#[derive(Debug, Serialize)]
pub struct QueueJson {
    feature: String,
    version: String,
    position: u32,
    /// `PRIORITY` rank from the policy (lower first), `null` if none.
    priority: Option<u32>,
    user: String,
    host: String,
    display: String,
    count: u32,
    since: Millis,
    /// When it gives up (`null`: waits indefinitely).
    deadline: Option<Millis>,
    /// The handle the lease will carry.
    id: u64,
}

/// Holders who share a user, a host or a program.
#[derive(Debug, Serialize)]
pub struct GroupJson {
    key: String,
    /// Leases in the group.
    holders: usize,
    /// Seats those leases hold.
    seats: u64,
}

/// Which holders a query wants.
#[derive(Debug, Default, Deserialize)]
pub(super) struct HolderFilter {
    /// Exactly this feature.
    feature: Option<String>,
    /// Exactly this user.
    user: Option<String>,
    /// Exactly this host.
    host: Option<String>,
    /// Exactly this program.
    program: Option<String>,
    /// Found (ASCII letters in any case) in the user, host, display, program or feature.
    q: Option<String>,
}

impl HolderFilter {
    fn matcher(&self) -> impl Fn(&HolderRow) -> bool + '_ {
        let q = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        move |row: &HolderRow| {
            let c = client_of(row.client.as_ref());
            let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
            is(&self.feature, &row.lease.feature)
                && is(&self.user, &c.user)
                && is(&self.host, &c.host)
                && is(&self.program, &c.program)
                && q.is_none_or(|q| {
                    [
                        c.user.as_str(),
                        c.host.as_str(),
                        c.display.as_str(),
                        c.program.as_str(),
                        row.lease.feature.as_str(),
                    ]
                    .iter()
                    .any(|field| contains_ignoring_case(field, q))
                })
        }
    }
}

/// Whether `needle` occurs in `hay`, ASCII letters compared without case.
fn contains_ignoring_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || needle.len() <= hay.len()
            && hay
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
}

fn client_of(client: Option<&ClientInfo>) -> std::borrow::Cow<'_, ClientInfo> {
    client.map_or_else(
        || std::borrow::Cow::Owned(ClientInfo::default()),
        std::borrow::Cow::Borrowed,
    )
}

fn holder_json(row: &HolderRow) -> HolderJson {
    let l = &row.lease;
    let c = client_of(row.client.as_ref());
    HolderJson {
        id: l.id.0,
        session_id: l.session.0.to_string(),
        feature: l.feature.to_string(),
        vendor: l.vendor.to_string(),
        version: l.pool_version.to_string(),
        user: c.user.to_string(),
        host: c.host.to_string(),
        display: c.display.to_string(),
        pid: c.pid,
        program: c.program.to_string(),
        since: l.granted_at,
        count: l.count,
        overdraft: l.overdraft,
        lingering_until: l.lingering_until,
        borrowed_until: l.borrowed_until,
        token_for: l.token_for.as_ref().map(|s| s.to_string()),
        connected: row.connected,
        detached: row.detached,
    }
}

fn session_json(s: &SessionRow) -> SessionJson {
    SessionJson {
        id: s.id.0.to_string(),
        user: s.client.user.to_string(),
        host: s.client.host.to_string(),
        display: s.client.display.to_string(),
        pid: s.client.pid,
        program: s.client.program.to_string(),
        program_version: s.client.program_version.to_string(),
        address: s.client.address.to_string(),
        opened_at: s.opened_at,
        expires_at: s.expires_at,
        connected: s.connected,
        detached: s.detached,
        leases: s.leases,
    }
}

fn queue_json(q: &QueueRow) -> QueueJson {
    let r = &q.request;
    let c = client_of(q.client.as_ref());
    QueueJson {
        feature: r.feature.clone(),
        version: r.version.clone(),
        position: q.position,
        priority: r.priority,
        user: c.user.to_string(),
        host: c.host.to_string(),
        display: c.display.to_string(),
        count: r.count,
        since: r.queued_at,
        deadline: r.deadline,
        id: r.lease_id.0,
    }
}

/// One page of holders, in grant order, after `cursor`.
fn holders_page(
    view: &StatusView,
    filter: &HolderFilter,
    paging: &Paging,
) -> Result<Page<HolderJson>, ApiError> {
    let limit = paging.limit()?;
    let start = match paging.cursor() {
        // Just after the last holder read.
        Some(c) => {
            let (since, id) = two_numbers(c)?;
            match id.checked_add(1) {
                Some(next) => view.grant_position((since, next)),
                None => view.grant_position((since.saturating_add(1), 0)),
            }
        }
        None => 0,
    };
    let wanted = filter.matcher();
    let mut total = 0;
    let mut seats = 0u64;
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    for (i, row) in view.holders_by_grant().enumerate() {
        if !wanted(row) {
            continue;
        }
        total += 1;
        seats += u64::from(row.lease.count);
        if i < start {
            continue;
        }
        if items.len() < limit {
            items.push(holder_json(row));
            last = Some((row.lease.granted_at, row.lease.id.0));
        } else {
            more = true;
        }
    }
    Ok(Page {
        items: Items::Holders(items),
        total,
        seats: Some(seats),
        next_cursor: more
            .then_some(last)
            .flatten()
            .map(|(since, id)| format!("{since}.{id}")),
    })
}

/// What holders are grouped by.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum GroupBy {
    User,
    Host,
    Program,
}

/// `?by=` and a holder filter.
#[derive(Debug, Deserialize)]
pub(super) struct GroupQuery {
    by: GroupBy,
    #[serde(flatten)]
    filter: HolderFilter,
}

/// One page of groups, in name order, after `cursor` (a group's name, hex-encoded).
fn groups_page(
    view: &StatusView,
    query: &GroupQuery,
    paging: &Paging,
) -> Result<Page<GroupJson>, ApiError> {
    let limit = paging.limit()?;
    let after = match paging.cursor() {
        Some(c) => Some(hex_name(c, c)?),
        None => None,
    };
    let wanted = query.filter.matcher();
    // By the name's bytes, which is the names' order and lets any cursor compare.
    let mut groups: BTreeMap<&[u8], (usize, u64)> = BTreeMap::new();
    let mut seats = 0u64;
    for row in view.holders_by_grant() {
        if !wanted(row) {
            continue;
        }
        let Some(c) = row.client.as_ref() else {
            continue;
        };
        let key = match query.by {
            GroupBy::User => c.user.as_str(),
            GroupBy::Host => c.host.as_str(),
            GroupBy::Program => c.program.as_str(),
        };
        let g = groups.entry(key.as_bytes()).or_default();
        g.0 += 1;
        g.1 += u64::from(row.lease.count);
        seats += u64::from(row.lease.count);
    }
    let total = groups.len();
    let range = match &after {
        Some(a) => groups.range::<[u8], _>((
            std::ops::Bound::Excluded(a.as_slice()),
            std::ops::Bound::Unbounded,
        )),
        None => groups.range::<[u8], _>(..),
    };
    let mut items: Vec<GroupJson> = Vec::new();
    let mut more = false;
    for (key, (holders, seats)) in range {
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(GroupJson {
            // The bytes of a `str`, so always UTF-8.
            key: String::from_utf8_lossy(key).into_owned(),
            holders: *holders,
            seats: *seats,
        });
    }
    let next_cursor = if more {
        items.last().map(|g| hex::encode(&g.key))
    } else {
        None
    };
    Ok(Page {
        items: Items::Groups(items),
        total,
        seats: Some(seats),
        next_cursor,
    })
}

/// One page of live sessions, by opening time then id, after `cursor`.
fn sessions_page(view: &StatusView, paging: &Paging) -> Result<Page<SessionJson>, ApiError> {
    let limit = paging.limit()?;
    let all = view.sessions();
    let start = match paging.cursor() {
        Some(c) => {
            let key = two_numbers(c)?;
            all.partition_point(|s| (s.opened_at, s.id.0) <= key)
        }
        None => 0,
    };
    let rows = &all[start..];
    let items: Vec<SessionJson> = rows.iter().take(limit).map(session_json).collect();
    let next_cursor = (rows.len() > limit).then(|| {
        let last = &rows[limit - 1];
        format!("{}.{}", last.opened_at, last.id.0)
    });
    Ok(Page {
        items: Items::Sessions(items),
        total: all.len(),
        seats: None,
        next_cursor,
    })
}

/// `?feature=` for the queue.
#[derive(Debug, Deserialize)]
pub(super) struct QueueFilter {
    feature: Option<String>,
}

/// A queue entry's key: feature, then its serving slot (rank, arrival).
fn queue_key(q: &QueueRow) -> (&[u8], u64, u64) {
    let r = &q.request;
    (
        r.feature.as_bytes(),
        r.priority.map_or(u64::MAX, u64::from),
        r.seq,
    )
}

/// One page of the queue, each feature's in serving order, after `cursor`
/// (`RANK.ARRIVAL.FEATURE`, the feature hex-encoded).
fn queue_page(
    view: &StatusView,
    filter: &QueueFilter,
    paging: &Paging,
) -> Result<Page<QueueJson>, ApiError> {
    let limit = paging.limit()?;
    let all = view.queue();
    let start = match paging.cursor() {
        Some(c) => {
            let mut parts = c.splitn(3, '.');
            let (Some(rank), Some(seq), Some(feature)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad_cursor(c));
            };
            let feature = hex_name(feature, c)?;
            let key = (
                feature.as_slice(),
                cursor_number(rank, c)?,
                cursor_number(seq, c)?,
            );
            all.partition_point(|q| queue_key(q) <= key)
        }
        None => 0,
    };
    let wanted = |q: &QueueRow| {
        filter
            .feature
            .as_deref()
            .is_none_or(|f| q.request.feature == f)
    };
    let total = all.iter().filter(|q| wanted(q)).count();
    let mut rows = all[start..].iter().filter(|q| wanted(q));
    let page: Vec<&QueueRow> = rows.by_ref().take(limit).collect();
    let next_cursor = match (page.last(), rows.next()) {
        (Some(last), Some(_)) => {
            let (feature, rank, seq) = queue_key(last);
            Some(format!("{rank}.{seq}.{}", hex::encode(feature)))
        }
        _ => None,
    };
    Ok(Page {
        items: Items::Queue(page.into_iter().map(queue_json).collect()),
        total,
        seats: None,
        next_cursor,
    })
}

/// Runs `build` on a fresh view, on the low-priority background threads (see
/// `crate::background`).
pub(super) async fn from_view<T: Send + 'static>(
    s: &ApiState,
    build: impl FnOnce(&StatusView) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let views = &s.ctx.status_views;
    let view = views.fresh(&s.ctx.ledger).await?;
    views
        .background()
        .run(move || build(&view))
        .await
        .map_err(|_| ApiError::internal("building the page failed"))?
}

pub(super) async fn holders(
    State(s): State<ApiState>,
    filter: Result<Query<HolderFilter>, QueryRejection>,
    paging: Result<Query<Paging>, QueryRejection>,
) -> Result<Json<Page<HolderJson>>, ApiError> {
    let (filter, paging) = (query_of(filter)?, query_of(paging)?);
    paging.limit()?;
    Ok(Json(
        from_view(&s, move |v| holders_page(v, &filter, &paging)).await?,
    ))
}

pub(super) async fn holder_groups(
    State(s): State<ApiState>,
    query: Result<Query<GroupQuery>, QueryRejection>,
    paging: Result<Query<Paging>, QueryRejection>,
) -> Result<Json<Page<GroupJson>>, ApiError> {
    let (query, paging) = (query_of(query)?, query_of(paging)?);
    paging.limit()?;
    Ok(Json(
        from_view(&s, move |v| groups_page(v, &query, &paging)).await?,
    ))
}

pub(super) async fn sessions(
    State(s): State<ApiState>,
    paging: Result<Query<Paging>, QueryRejection>,
) -> Result<Json<Page<SessionJson>>, ApiError> {
    let paging = query_of(paging)?;
    paging.limit()?;
    Ok(Json(
        from_view(&s, move |v| sessions_page(v, &paging)).await?,
    ))
}

pub(super) async fn queue(
    State(s): State<ApiState>,
    filter: Result<Query<QueueFilter>, QueryRejection>,
    paging: Result<Query<Paging>, QueryRejection>,
) -> Result<Json<Page<QueueJson>>, ApiError> {
    let (filter, paging) = (query_of(filter)?, query_of(paging)?);
    paging.limit()?;
    Ok(Json(
        from_view(&s, move |v| queue_page(v, &filter, &paging)).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_ignores_ascii_case_only() {
        assert!(contains_ignoring_case("WorkStation-7", "station"));
        assert!(contains_ignoring_case("ana", ""));
        assert!(!contains_ignoring_case("an", "ana"));
        assert!(!contains_ignoring_case("Ñandú", "ñandú"));
    }
}
