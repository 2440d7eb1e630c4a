//! The admin API's long lists at scale: 100,000 holders (many leases over a few
//! connections) and a queue of 1,000, read through `/api/v1/holders`, `/holders/groups`,
//! `/sessions` and `/queue` page by page while the lists change under the reader. Cursors
//! are keys, so every item that lives through the walk is read exactly once.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::Value;

use crate::http::http;
use crate::scale::{CONNECTIONS, HOLDERS, QUEUED, hundred_thousand_holders};
use crate::util::*;

async fn get(server: &TestServer, path: &str) -> Value {
    let r = http(
        server.admin.unwrap(),
        "GET",
        path,
        Some(&server.token),
        None,
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        &r.body[..r.body.len().min(500)]
    );
    r.json()
}

async fn remove(server: &TestServer, lease: u64) {
    let body = format!("{{\"lease_id\": {lease}}}");
    let r = http(
        server.admin.unwrap(),
        "POST",
        "/api/v1/remove",
        Some(&server.token),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 200, "removing {lease}: {r:?}");
}

/// Reads every page of `list` (`holders`, `groups`, `sessions`, `queue`) from `path`,
/// running `between` after each page, and returns the items in the order read.
async fn walk(
    server: &TestServer,
    path: &str,
    list: &str,
    mut between: impl AsyncFnMut(usize, &[Value]),
) -> (Vec<Value>, usize) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut cursor: Option<String> = None;
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_string(),
        };
        let page = get(server, &url).await;
        let got = page[list]
            .as_array()
            .unwrap_or_else(|| panic!("{url}: no {list}"));
        pages += 1;
        between(pages, got).await;
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (items, pages),
        }
        assert!(pages < 10_000, "the walk of {path} does not end");
    }
}

fn ids(items: &[Value], field: &str) -> Vec<u64> {
    items
        .iter()
        .map(|v| v[field].as_u64().expect(field))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_holders_page_through_the_api_exactly_once_while_they_change() {
    let (_lic, server, conns) = hundred_thousand_holders().await;
    let per = HOLDERS / CONNECTIONS;

    // Holders, the largest pages: while the walk goes on, holders already read are removed
    // and a new one arrives. An offset would skip one holder per removal; a key skips none.
    let late = server.client().await;
    let mut late_seat = None;
    // Which user's holders are removed depends on which connection checked out first.
    let mut removed_of: std::collections::BTreeMap<String, u64> = Default::default();
    let read = Instant::now();
    let (holders, pages) = walk(
        &server,
        "/api/v1/holders?limit=10000",
        "holders",
        async |page, got: &[Value]| {
            if page == 1 {
                for h in &got[..50] {
                    *removed_of
                        .entry(h["user"].as_str().unwrap().to_string())
                        .or_default() += 1;
                    remove(&server, h["id"].as_u64().unwrap()).await;
                }
            }
            if page == 2 {
                late_seat = Some(late.checkout("big").await.expect("a late checkout"));
            }
        },
    )
    .await;
    eprintln!(
        "{} holders in {pages} pages in {:?}",
        holders.len(),
        read.elapsed()
    );
    // A filler user's holders left after the walk: which ones the walk removed depends on
    // which connection checked out first.
    let left_of = |user: &str| per - removed_of.get(user).copied().unwrap_or(0);
    let seen = ids(&holders, "id");
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a holder was read twice");
    // Every holder there was at the start (100,000 of big, 1 of tiny), and the late one.
    assert_eq!(seen.len() as u64, HOLDERS + 2, "pages: {pages}");
    assert!(pages >= 10, "{pages}");
    let since: Vec<u64> = holders
        .iter()
        .map(|h| h["since"].as_u64().unwrap())
        .collect();
    assert!(since.is_sorted(), "holders come oldest first");
    let late_id = late_seat.as_ref().unwrap().lease_id();
    assert_eq!(seen.last(), Some(&late_id), "the late holder is read last");

    // The per-pool counts come from the same view: 50 removed, one late checkout.
    let features = get(&server, "/api/v1/features").await;
    let big = features
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "big")
        .unwrap();
    assert_eq!(big["holders"].as_u64(), Some(HOLDERS - 50 + 1), "{big}");
    assert_eq!(big["in_use"].as_u64(), Some(HOLDERS - 50 + 1), "{big}");

    // A feature filter and a search, paged small; the totals count every match.
    let page = get(&server, "/api/v1/holders?feature=tiny").await;
    assert_eq!(
        (page["total"].as_u64(), page["seats"].as_u64()),
        (Some(1), Some(1)),
        "{page}"
    );
    let (ana, _) = walk(
        &server,
        "/api/v1/holders?q=USER-07&limit=999",
        "holders",
        async |_, _: &[Value]| {},
    )
    .await;
    assert_eq!(ana.len() as u64, left_of("user-07"));
    assert!(ana.iter().all(|h| h["user"] == "user-07"));

    // Grouped by user: one group per connection, in name order, with their seats.
    let (groups, _) = walk(
        &server,
        "/api/v1/holders/groups?by=user&limit=7",
        "groups",
        async |_, _: &[Value]| {},
    )
    .await;
    let keys: Vec<&str> = groups.iter().map(|g| g["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), CONNECTIONS as usize + 2, "{keys:?}");
    assert!(keys.is_sorted(), "{keys:?}");
    let seats: u64 = groups.iter().map(|g| g["seats"].as_u64().unwrap()).sum();
    assert_eq!(seats, HOLDERS + 2 - 50);
    // Each connection's group holds its seats less those the first walk removed.
    for user in (0..CONNECTIONS).map(|c| format!("user-{c:02}")) {
        let group = groups.iter().find(|g| g["key"] == user.as_str()).unwrap();
        let left = left_of(&user);
        assert_eq!(group["holders"].as_u64(), Some(left), "{group}");
        assert_eq!(group["seats"].as_u64(), Some(left), "{group}");
    }

    // The queue, while its head is served: freeing tiny's seat grants the first waiter
    // (already read), and every other waiter is still read once, in serving order.
    let tiny = get(&server, "/api/v1/holders?feature=tiny").await["holders"][0]["id"]
        .as_u64()
        .unwrap();
    let (queue, _) = walk(
        &server,
        "/api/v1/queue?limit=64",
        "queue",
        async |page, _: &[Value]| {
            if page == 1 {
                remove(&server, tiny).await;
            }
        },
    )
    .await;
    let queued = ids(&queue, "id");
    assert_eq!(
        queued.iter().collect::<BTreeSet<_>>().len(),
        QUEUED as usize
    );
    assert_eq!(queued.len() as u64, QUEUED);
    assert_eq!(
        get(&server, "/api/v1/queue?limit=1").await["total"].as_u64(),
        Some(QUEUED - 1),
        "the head was granted"
    );

    // Sessions: the walk meets sessions opened while it goes on, and no session twice.
    let mut opened = Vec::new();
    let (sessions, _) = walk(
        &server,
        "/api/v1/sessions?limit=5",
        "sessions",
        async |page, _: &[Value]| {
            if page <= 3 {
                opened.push(server.client().await);
            }
        },
    )
    .await;
    let sids: Vec<&str> = sessions.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        sids.iter().collect::<BTreeSet<_>>().len(),
        sids.len(),
        "a session twice"
    );
    // 20 fillers, first, 10 waiters, the late client, and the three opened during the walk.
    assert_eq!(
        sids.len(),
        CONNECTIONS as usize + 1 + 10 + 1 + 3,
        "{sids:?}"
    );
    // Each filler session holds its leases less those removed during the first walk.
    for user in (0..CONNECTIONS).map(|c| format!("user-{c:02}")) {
        let filler = sessions
            .iter()
            .find(|s| s["user"] == user.as_str())
            .unwrap();
        let left = left_of(&user);
        assert_eq!(filler["leases"].as_u64(), Some(left), "{filler}");
    }
    drop((conns, opened, late_seat));
}
