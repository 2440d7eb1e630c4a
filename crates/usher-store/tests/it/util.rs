//! Fixtures and backends shared by the test modules.

use std::path::PathBuf;

use tempfile::TempDir;
use usher_core::{Change, ClientInfo, Lease, LeaseId, ReleaseReason, Session, SessionId};
use usher_store::{MemoryStore, SqliteStore, Store, UsageRecord};

/// A way to make stores, so one suite can run against every backend.
pub trait Backend {
    /// The store it makes.
    type Store: Store;

    /// A fresh, empty store.
    fn create(&mut self) -> Self::Store;

    /// Closes `store` and opens it again from whatever holds its data: what a restarted
    /// server does.
    fn reopen(&mut self, store: Self::Store) -> Self::Store;
}

/// In-memory stores. "Reopening" keeps the value: it is its own medium.
pub struct MemoryBackend;

impl Backend for MemoryBackend {
    type Store = MemoryStore;

    fn create(&mut self) -> MemoryStore {
        MemoryStore::new()
    }

    fn reopen(&mut self, store: MemoryStore) -> MemoryStore {
        store
    }
}

/// SQLite stores, each in its own file of one temporary directory.
pub struct SqliteBackend {
    dir: TempDir,
    made: usize,
}

impl SqliteBackend {
    pub fn new() -> Self {
        SqliteBackend {
            dir: tempdir(),
            made: 0,
        }
    }
}

impl Backend for SqliteBackend {
    type Store = SqliteStore;

    fn create(&mut self) -> SqliteStore {
        self.made += 1;
        let path = self.dir.path().join(format!("store-{}.db", self.made));
        open(&path)
    }

    fn reopen(&mut self, store: SqliteStore) -> SqliteStore {
        let path = store.path().to_owned();
        drop(store);
        open(&path)
    }
}

/// SQLite stores behind `Box<dyn Store>`, to check that the box forwards every method.
pub struct BoxedBackend(pub SqliteBackend);

impl Backend for BoxedBackend {
    type Store = Box<dyn Store>;

    fn create(&mut self) -> Box<dyn Store> {
        Box::new(self.0.create())
    }

    fn reopen(&mut self, store: Box<dyn Store>) -> Box<dyn Store> {
        // The path is not reachable through the trait; the box's contents are dropped and
        // the most recent file reopened (each test uses one store per backend at a time).
        drop(store);
        let path = self.0.dir.path().join(format!("store-{}.db", self.0.made));
        Box::new(open(&path))
    }
}

pub fn tempdir() -> TempDir {
    tempfile::tempdir().expect("creating a temporary directory")
}

pub fn open(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path)
        .unwrap_or_else(|e| panic!("opening store at {}: {}", path.display(), chain(&e)))
}

/// An error and all its causes on one line, so a failing test says everything.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Unwraps a store result, printing the whole error chain and what was being done.
#[track_caller]
pub fn ok<T>(result: Result<T, usher_store::StoreError>, doing: &str) -> T {
    result.unwrap_or_else(|e| panic!("{doing}: {}", chain(&e)))
}

/// A session as the ledger hands it over: soft state set, as it would be when live.
pub fn session(id: u64) -> Session {
    Session {
        id: SessionId(id),
        secret_hash: [id as u8; 32],
        client: ClientInfo {
            user: format!("user{id}").into(),
            host: "ws-ünïcode-7".into(),
            display: "/dev/pts/3".into(),
            pid: 4242,
            program: "cad".into(),
            program_version: "2026.1".into(),
            address: "10.0.0.7:50123".into(),
        },
        opened_at: 1_700_000_000_000u64.wrapping_add(id),
        expires_at: 1_700_000_120_000,
        connected: true,
        detached: false,
    }
}

/// How `session` comes back from `load`: soft state reset.
pub fn stored(session: &Session) -> Session {
    Session {
        expires_at: 0,
        connected: false,
        detached: false,
        ..session.clone()
    }
}

pub fn lease(id: u64, session: u64) -> Lease {
    Lease {
        id: LeaseId(id),
        session: SessionId(session),
        feature: format!("feature{}", id % 3).into(),
        vendor: "acme".into(),
        requested_version: "1.0".into(),
        pool_version: "2.0".into(),
        count: 1 + (id % 4) as u32,
        granted_at: 1_700_000_001_000u64.wrapping_add(id),
        client_ref: id.wrapping_mul(31),
        overdraft: false,
        lingering_until: None,
        borrowed_until: None,
        token_for: None,
    }
}

pub fn opened(id: u64) -> Change {
    Change::SessionOpened(session(id))
}

pub fn granted(id: u64, session: u64) -> Change {
    Change::LeaseGranted(lease(id, session))
}

pub fn released(id: u64, session: u64, reason: ReleaseReason) -> Change {
    Change::LeaseReleased {
        lease: lease(id, session),
        reason,
    }
}

pub fn closed(id: u64) -> Change {
    Change::SessionClosed(SessionId(id))
}

/// The whole usage log.
pub fn usage(store: &impl Store) -> Vec<UsageRecord> {
    ok(store.usage_log(0, usize::MAX), "reading the usage log")
}

/// Where a store file would go in `dir`.
pub fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("usher.db")
}
