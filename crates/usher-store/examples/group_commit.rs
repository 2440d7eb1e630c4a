//! A rough, criterion-free sanity check of why the server commits in batches: the time of
//! one durable commit barely depends on how many changes it carries, because the fsync
//! dominates.
//!
//! ```text
//! cargo run --release -p usher-store --example group_commit [DIR]
//! ```
//!
//! DIR (default: the system temporary directory) should be on the disk the server will use;
//! a tmpfs makes fsync free and the comparison meaningless.

use std::{path::PathBuf, time::Instant};

use usher_core::{Change, ClientInfo, Lease, LeaseId, ReleaseReason, Session, SessionId};
use usher_store::{SqliteStore, StoreError};

fn session(id: u64) -> Session {
    Session {
        id: SessionId(id),
        secret_hash: [7; 32],
        client: ClientInfo {
            user: "alice".into(),
            host: "ws1".into(),
            ..ClientInfo::default()
        },
        opened_at: 0,
        expires_at: 0,
        connected: true,
        detached: false,
    }
}

fn lease(id: u64, session: u64) -> Lease {
    Lease {
        id: LeaseId(id),
        session: SessionId(session),
        feature: "cad".into(),
        vendor: "acme".into(),
        requested_version: "1".into(),
        pool_version: "1".into(),
        count: 1,
        granted_at: 0,
        client_ref: id,
        overdraft: false,
        lingering_until: None,
        borrowed_until: None,
        token_for: None,
    }
}

fn main() -> Result<(), StoreError> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(std::env::temp_dir, PathBuf::from);
    let path = dir.join(format!("usher-group-commit-{}.db", std::process::id()));
    let mut store = SqliteStore::open(&path)?;
    store.commit(0, &[Change::SessionOpened(session(1))])?;
    let mut next = 1u64;
    println!("store: {}", path.display());
    println!(
        "{:>12} {:>10} {:>14} {:>16}",
        "batch size", "commits", "ms per commit", "changes per s"
    );
    for size in [1usize, 10, 100, 1_000] {
        let rounds = 50;
        let start = Instant::now();
        for _ in 0..rounds {
            // Half grants, half releases of those grants: the store stays small.
            let grants: Vec<Lease> = (0..size / 2 + 1)
                .map(|_| {
                    next += 1;
                    lease(next, 1)
                })
                .collect();
            let mut batch: Vec<Change> = grants.iter().cloned().map(Change::LeaseGranted).collect();
            batch.extend(grants.into_iter().map(|lease| Change::LeaseReleased {
                lease,
                reason: ReleaseReason::Checkin,
            }));
            batch.truncate(size.max(1));
            store.commit(next, &batch)?;
        }
        let per = start.elapsed().as_secs_f64() / f64::from(rounds);
        println!(
            "{size:>12} {rounds:>10} {:>14.2} {:>16.0}",
            per * 1e3,
            size as f64 / per
        );
    }
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
