//! Pages of a status view, each within the frame limit, and the cursor that walks them;
//! the totals-only status; and the rule that no reply is larger than a frame.

use super::*;

/// A place in a view: what `StatusRequest.cursor` and `next_cursor` carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The view's generation.
    pub generation: u64,
    /// Holders and queue entries already read.
    pub offset: usize,
}

impl Cursor {
    /// Parses a cursor the server handed out (`GENERATION.OFFSET`).
    pub fn parse(text: &str) -> Result<Cursor, String> {
        let bad = || format!("{text:?} is not a status cursor (send a next_cursor back unchanged)");
        let (g, o) = text.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            generation: g.parse().map_err(|_| bad())?,
            offset: o.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.generation, self.offset)
    }
}

/// What one page asks for.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    /// Only this feature (empty: all).
    pub feature: &'a str,
    /// Holders and queue entries to skip.
    pub offset: usize,
    /// Most holders and queue entries (0: as many as fit; capped at [`MAX_PAGE_ITEMS`]).
    pub page_size: usize,
    /// Most bytes of the encoded [`Response`] that carries the page.
    pub max_bytes: usize,
}

/// One page of `view`: the server facts, the pools (all of them on the first page, else
/// those whose holders the page holds), and as many holders, then queue entries, as fit in
/// `max_bytes` (for a response with id `id`). `next_cursor` is set if more remain.
pub fn page(view: &StatusView, id: u64, req: PageRequest<'_>) -> StatusReport {
    let wanted = |f: &str| shows_pool(req.feature, &view.tokens, f);
    let pools: Vec<usize> = (0..view.pools.len())
        .filter(|&p| wanted(&view.pools[p].feature))
        .collect();
    let queue: Vec<&QueueRow> = view
        .queue
        .iter()
        .filter(|q| wanted(&q.request.feature))
        .collect();
    let own = |f: &str| req.feature.is_empty() || f == req.feature;
    let holders_total: usize = pools
        .iter()
        .map(|&p| view.starts[p + 1] - view.starts[p])
        .sum();
    let items_total = holders_total + queue.len();
    let first = req.offset == 0;
    let mut report = StatusReport {
        server_name: view.info.server_name.clone(),
        server_version: view.info.server_version.clone(),
        port: u32::from(view.info.port),
        started_at_ms: view.info.started_at_ms,
        license_files: view.info.license_files.clone(),
        vendors: view.info.vendors.clone(),
        now_ms: view.now_ms,
        holders_total: holders_total as u64,
        queue_total: queue.len() as u64,
        // Room for the largest cursor, replaced below.
        next_cursor: Cursor {
            generation: u64::MAX,
            offset: usize::MAX,
        }
        .to_string(),
        features: if first {
            pools.iter().map(|&p| view.pools[p].clone()).collect()
        } else {
            Vec::new()
        },
        queue: Vec::new(),
        truncated: true,
        token_features: if first {
            view.tokens
                .iter()
                .filter(|t| own(&t.feature))
                .cloned()
                .collect()
        } else {
            Vec::new()
        },
    };
    // Where each wanted pool sits in `report.features`, once it is there.
    let mut placed: HashMap<usize, usize> = if first {
        pools.iter().enumerate().map(|(i, &p)| (p, i)).collect()
    } else {
        HashMap::new()
    };
    // Nested length prefixes grow by at most 2 bytes each as a page fills (a varint of up
    // to 3 bytes covers a frame): count that up front, for the report and for each pool.
    const PREFIX_SLACK: usize = 2;
    let mut len = payload_len(&Response {
        id,
        kind: Some(usher_proto::response::Kind::Status(report.clone())),
    }) + PREFIX_SLACK * (1 + report.features.len());
    let limit = match req.page_size {
        0 => MAX_PAGE_ITEMS,
        n => n.min(MAX_PAGE_ITEMS),
    };
    let mut at = req.offset.min(items_total);
    let mut taken = 0;
    // Holders: walk the wanted pools, skipping what earlier pages held.
    let mut skip = at;
    'pools: for &p in &pools {
        let rows = &view.holders[view.starts[p]..view.starts[p + 1]];
        if skip >= rows.len() {
            skip -= rows.len();
            continue;
        }
        for row in &rows[skip..] {
            if taken == limit {
                break 'pools;
            }
            let holder = row.to_proto();
            let mut cost = field_len(payload_len(&holder));
            let slot = placed.get(&p).copied();
            if slot.is_none() {
                cost += field_len(payload_len(&view.pools[p])) + PREFIX_SLACK;
            }
            if len + cost > req.max_bytes {
                break 'pools;
            }
            len += cost;
            let slot = slot.unwrap_or_else(|| {
                report.features.push(view.pools[p].clone());
                placed.insert(p, report.features.len() - 1);
                report.features.len() - 1
            });
            report.features[slot].holders.push(holder);
            at += 1;
            taken += 1;
        }
        skip = 0;
    }
    // Then the queue.
    if at >= holders_total {
        for row in &queue[at - holders_total..] {
            if taken == limit {
                break;
            }
            let entry = row.to_proto();
            let cost = field_len(payload_len(&entry));
            if len + cost > req.max_bytes {
                break;
            }
            len += cost;
            report.queue.push(entry);
            at += 1;
            taken += 1;
        }
    }
    if at < items_total {
        report.next_cursor = Cursor {
            generation: view.generation,
            offset: at,
        }
        .to_string();
    } else {
        report.next_cursor.clear();
    }
    report.truncated = req.page_size == 0 && at < items_total;
    report
}

/// Seat counts per pool, without holders or queue: computed from the ledger's counts on
/// the ledger task, which costs the same with 10 holders or 100,000.
///
/// Token-based features count their seats from the leases drawn for them, so a server
/// that has any pays for a walk of the leases when one is asked for.
pub fn totals(view: &View<'_>, feature: &str) -> StatusReport {
    let ledger = view.ledger;
    let now = view.now;
    let own = |f: &str| feature.is_empty() || f == feature;
    let token_features = token_statuses(ledger.catalog(), now, own, ledger.token_use());
    let wanted = |f: &str| shows_pool(feature, &token_features, f);
    let mut features: Vec<FeatureStatus> = ledger
        .catalog()
        .all_pools()
        .filter(|p| wanted(&p.key.feature))
        .map(|pool| pool_status(pool, now, ledger.in_use(&pool.key)))
        .collect();
    // Pools that left the catalog but still hold seats.
    let mut orphans: Vec<(PoolKey, u32)> = ledger
        .pools_in_use()
        .filter(|(k, _)| wanted(&k.feature) && ledger.catalog().pool(*k).is_none())
        .map(|(k, n)| (k.clone(), n))
        .collect();
    orphans.sort();
    features.extend(orphans.into_iter().map(|(key, in_use)| FeatureStatus {
        in_use,
        feature: key.feature,
        vendor: key.vendor,
        version: key.version,
        ..FeatureStatus::default()
    }));
    let info = view.info;
    StatusReport {
        server_name: info.server_name.clone(),
        server_version: info.server_version.clone(),
        port: u32::from(info.port),
        features,
        started_at_ms: info.started_at_ms,
        license_files: info.license_files.iter().map(|p| file_name(p)).collect(),
        vendors: info.vendors.clone(),
        now_ms: now,
        token_features,
        ..StatusReport::default()
    }
}

/// The last component of a path: the license file's name without the directories that
/// tell a stranger how the server's machine is laid out.
fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// Replaces the license file paths of a report meant for someone without the admin token
/// with the files' names.
pub fn hide_paths(report: &mut StatusReport) {
    for path in &mut report.license_files {
        *path = file_name(path);
    }
}

/// Logs (at most every 10 s, so a polling client cannot flood the log) that `report` was
/// cut to one frame for a client that does not ask for pages.
pub fn log_truncated(report: &StatusReport) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::clock::wall_clock_ms();
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) < 10_000
        || LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let shown: usize = report.features.iter().map(|f| f.holders.len()).sum();
    warn!(
        shown,
        holders = report.holders_total,
        queued = report.queue_total,
        "status reply cut to one frame for a client that does not ask for pages (an older \
         client); the reply says how many holders it leaves out"
    );
}

/// The response to write for `response`: itself, or, if it would not fit in a frame (the
/// peer would refuse it and never hear an answer), an error saying so. Status replies are
/// paged to fit; this guards every other kind.
pub fn within_frame(response: Response) -> Response {
    let len = payload_len(&response);
    if len <= MAX_FRAME_LEN {
        return response;
    }
    warn!(
        id = response.id,
        len,
        max = MAX_FRAME_LEN,
        "a reply is larger than a frame; an error is sent instead"
    );
    Response::error(
        response.id,
        usher_proto::ErrorCode::Internal,
        format!(
            "the reply ({len} bytes) is larger than the protocol's frame limit \
             ({MAX_FRAME_LEN} bytes)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use usher_core::{LeaseId, Name, SessionId};
    use usher_proto::response;

    use super::*;

    fn info() -> ServerInfo {
        ServerInfo {
            server_name: "lic1".into(),
            server_version: "1.0".into(),
            port: 1648,
            started_at_ms: 1,
            license_files: vec!["/etc/usher/a.lic".into()],
            vendors: vec!["demo".into()],
        }
    }

    fn pool(feature: &str, in_use: u32) -> FeatureStatus {
        FeatureStatus {
            feature: feature.into(),
            vendor: "demo".into(),
            version: "1.0".into(),
            total: 1_000_000,
            in_use,
            ..FeatureStatus::default()
        }
    }

    fn row(pool: usize, n: u64) -> HolderRow {
        let name = |s: String| Name::from(s.as_str());
        HolderRow {
            pool,
            lease: Lease {
                id: LeaseId(n),
                session: SessionId(n),
                feature: "f".into(),
                vendor: "demo".into(),
                requested_version: "1.0".into(),
                pool_version: "1.0".into(),
                count: 1,
                granted_at: 1_700_000_000_000 + n,
                client_ref: 0,
                overdraft: false,
                lingering_until: None,
                borrowed_until: None,
                token_for: None,
            },
            client: Some(ClientInfo {
                user: name(format!("user-{n:06}")),
                host: name(format!("workstation-{n:06}.example.com")),
                display: name(format!("/dev/pts/{n}")),
                pid: 4000 + n as u32,
                program: "simulator".into(),
                ..ClientInfo::default()
            }),
            connected: true,
            detached: false,
        }
    }

    /// A view of `holders` holders split over the pools `features`, and `queued` entries
    /// of the first feature.
    fn view(features: &[&str], holders: u64, queued: u32) -> StatusView {
        let pools: Vec<_> = features.iter().map(|f| pool(f, 0)).collect();
        let rows = (0..holders)
            .map(|n| row(n as usize % features.len(), n))
            .collect();
        let queue = (1..=queued)
            .map(|position| QueueRow {
                request: QueuedRequest {
                    lease_id: LeaseId(1_000_000 + u64::from(position)),
                    session: SessionId(7),
                    feature: features[0].into(),
                    version: "1.0".into(),
                    count: 1,
                    client_ref: 0,
                    queued_at: 5,
                    deadline: None,
                    priority: None,
                    seq: u64::from(position),
                },
                position,
                client: None,
            })
            .collect();
        StatusView {
            generation: 42,
            now_ms: 9,
            info: info(),
            overdraft: vec![0; pools.len()],
            tokens: Vec::new(),
            pools,
            holders: rows,
            starts: Vec::new(),
            queue,
            sessions: Vec::new(),
            by_grant: Vec::new(),
            asked_at: Instant::now(),
        }
        .finish(features.len())
    }

    fn request(feature: &str, offset: usize, page_size: usize) -> PageRequest<'_> {
        PageRequest {
            feature,
            offset,
            page_size,
            max_bytes: MAX_FRAME_LEN,
        }
    }

    fn encoded(id: u64, report: &StatusReport) -> usize {
        payload_len(&Response {
            id,
            kind: Some(response::Kind::Status(report.clone())),
        })
    }

    /// Reads every page, checking each fits in a frame, and returns them merged.
    fn walk(view: &StatusView, feature: &str, page_size: usize) -> (StatusReport, usize) {
        let id = u64::MAX;
        let mut merged = page(view, id, request(feature, 0, page_size));
        assert!(encoded(id, &merged) <= MAX_FRAME_LEN);
        let mut pages = 1;
        while !merged.next_cursor.is_empty() {
            let cursor = Cursor::parse(&merged.next_cursor).expect("the server's own cursor");
            assert_eq!(cursor.generation, view.generation);
            let next = page(view, id, request(feature, cursor.offset, page_size));
            assert!(
                encoded(id, &next) <= MAX_FRAME_LEN,
                "page {pages} too large"
            );
            assert!(!next.truncated, "a paging client's page is not truncated");
            merged.absorb(next);
            pages += 1;
            assert!(pages < 10_000, "the walk does not end");
        }
        (merged, pages)
    }

    fn lease_ids(report: &StatusReport) -> Vec<u64> {
        report
            .features
            .iter()
            .flat_map(|f| &f.holders)
            .map(|h| h.lease_id)
            .collect()
    }

    /// The reply to a client that does not page: as many holders as fit, so that one more
    /// would not, and a note of what is left out.
    #[test]
    fn an_old_clients_reply_is_the_first_page_that_fits_with_a_note() {
        let v = view(&["f"], 5_000, 0);
        let first = page(&v, 1, request("", 0, 0));
        let len = encoded(1, &first);
        assert!(len <= MAX_FRAME_LEN, "{len}");
        assert!(first.truncated);
        assert_eq!(first.holders_total, 5_000);
        let shown = first.features[0].holders.len();
        assert!(shown > 100 && shown < 5_000, "{shown}");
        assert_eq!(first.holders_not_shown(), 5_000 - shown as u64);
        let mut one_more = first.clone();
        one_more.features[0]
            .holders
            .push(v.holders[shown].to_proto());
        assert!(
            encoded(1, &one_more) > MAX_FRAME_LEN - 64,
            "the page stops well short of the limit: {} bytes",
            encoded(1, &one_more)
        );
    }

    /// A status just under the frame limit goes in one reply; one holder more and it
    /// takes two, each within the limit, which together hold every holder in order.
    #[test]
    fn a_status_just_under_the_limit_is_one_page_and_just_over_is_two() {
        let big = view(&["f"], 5_000, 0);
        let fits = page(&big, 1, request("", 0, 0)).features[0].holders.len();
        let under = view(&["f"], fits as u64, 0);
        let one = page(&under, 1, request("", 0, 0));
        assert!(one.next_cursor.is_empty() && !one.truncated);
        assert_eq!(one.features[0].holders.len(), fits);
        assert!(encoded(1, &one) <= MAX_FRAME_LEN);

        let over = view(&["f"], fits as u64 + 1, 0);
        let first = page(&over, 1, request("", 0, 10_000));
        assert!(!first.next_cursor.is_empty());
        assert!(encoded(1, &first) <= MAX_FRAME_LEN);
        let (all, pages) = walk(&over, "", 10_000);
        assert_eq!(pages, 2);
        assert_eq!(lease_ids(&all), (0..=fits as u64).collect::<Vec<_>>());
    }

    /// 100,000 holders over three pools and a queue: every page fits, the merged pages
    /// hold each holder once in pool then grant order, and a feature filter holds its own.
    #[test]
    fn a_hundred_thousand_holders_page_completely_and_in_order() {
        let v = view(&["a", "b", "c"], 100_000, 2_000);
        let (all, pages) = walk(&v, "", 10_000);
        assert!(pages > 50, "{pages}");
        assert_eq!(all.features.len(), 3);
        for (i, pool) in all.features.iter().enumerate() {
            let ids: Vec<u64> = pool.holders.iter().map(|h| h.lease_id).collect();
            let want: Vec<u64> = (0..100_000).filter(|n| n % 3 == i as u64).collect();
            assert_eq!(ids, want, "pool {}", pool.feature);
        }
        assert_eq!(all.queue.len(), 2_000);
        assert_eq!(all.holders_not_shown() + all.queue_not_shown(), 0);

        let (b, _) = walk(&v, "b", 100);
        assert_eq!(b.features.len(), 1);
        assert_eq!(b.features[0].holders.len(), 33_333);
        assert_eq!(b.holders_total, 33_333);
        assert!(b.queue.is_empty(), "the queue is of feature a only");
        // Small pages hold at most what was asked.
        assert_eq!(
            page(&v, 1, request("", 0, 7))
                .features
                .iter()
                .map(|f| f.holders.len())
                .sum::<usize>(),
            7
        );
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            generation: 9,
            offset: 10_000,
        };
        assert_eq!(Cursor::parse(&c.to_string()), Ok(c));
        for bad in ["", "x", "1.", ".1", "1.2.3", "-1.2"] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// A reply that cannot fit is replaced by an error the client can read.
    #[test]
    fn a_reply_larger_than_a_frame_becomes_an_error() {
        let huge = Response {
            id: 3,
            kind: Some(response::Kind::Status(StatusReport {
                license_files: vec!["x".repeat(MAX_FRAME_LEN)],
                ..StatusReport::default()
            })),
        };
        let sent = within_frame(huge);
        assert_eq!(sent.id, 3);
        assert!(
            matches!(sent.kind, Some(response::Kind::Error(ref e)) if e.message.contains("frame limit")),
            "{sent:?}"
        );
        let small = Response::error(4, usher_proto::ErrorCode::BadRequest, "no");
        assert_eq!(within_frame(small.clone()), small);
    }
}
