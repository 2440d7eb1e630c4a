//! Helpers shared by every test module: entitlements, catalogs, sessions, and a way to run
//! one command and get its outcome and changes back together.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use usher_core::{
    Ask, Catalog, Change, ClientInfo, Command, Lease, LeaseId, Ledger, LedgerConfig, LedgerError,
    Millis, Outcome, PoolKey, Session, SessionId, Wait,
};
use usher_license::{Entitlement, Expiry, HostId, LineKind, SeatCount, Version};

/// 2025-06-01T00:00:00Z: "day 0" of every test. Times are written as offsets from it.
pub const T0: Millis = 1_748_736_000_000;
/// One day in milliseconds.
pub const DAY: Millis = 86_400_000;
/// Session TTL used by every test ledger (the production default).
pub const TTL: Millis = 120_000;
/// Reconnect grace used by every test ledger (the production default).
pub const GRACE: Millis = 10_000;
/// The timing rules of every test ledger.
pub const CONFIG: LedgerConfig = LedgerConfig {
    session_ttl: TTL,
    reconnect_grace: GRACE,
    min_remove: MIN_REMOVE,
};
/// Minimum remove time of every test ledger.
pub const MIN_REMOVE: Millis = 60_000;
/// The vendor of every entitlement unless a test says otherwise.
pub const VENDOR: &str = "acme";

/// The calendar date `offset` days after day 0.
pub fn day(offset: i64) -> NaiveDate {
    let day0 = NaiveDate::from_ymd_opt(2025, 6, 1).expect("2025-06-01 is a valid date");
    day0 + chrono::Duration::days(offset)
}

/// Midnight UTC at the start of `day(offset)`, computed without the code under test.
pub fn day_ms(offset: i64) -> Millis {
    T0.checked_add_signed(offset * DAY as i64)
        .expect("test days stay after 1970")
}

/// Parses a version the test knows to be valid.
pub fn version(text: &str) -> Version {
    text.parse()
        .unwrap_or_else(|e| panic!("test version {text:?} must parse: {e}"))
}

/// A permanent, already-started FEATURE line of `count` seats from [`VENDOR`].
pub fn ent(feature: &str, version_text: &str, count: u32) -> Entitlement {
    Entitlement {
        kind: LineKind::Feature,
        feature: feature.to_string(),
        vendor: VENDOR.to_string(),
        version: version(version_text),
        expiry: Expiry::Permanent,
        count: SeatCount::Counted(count),
        start: None,
        issued: None,
        notice: None,
        hostid: HostId::Any,
        attrs: Vec::new(),
        signature: None,
        line: 1,
    }
}

/// An INCREMENT line: like [`ent`], but adding to the pool a FEATURE line opened.
pub fn increment(feature: &str, version_text: &str, count: u32) -> Entitlement {
    Entitlement {
        kind: LineKind::Increment,
        ..ent(feature, version_text, count)
    }
}

/// A node-locked (uncounted) line, which the server does not serve.
pub fn uncounted(feature: &str, version_text: &str) -> Entitlement {
    Entitlement {
        count: SeatCount::Uncounted,
        ..ent(feature, version_text, 0)
    }
}

/// `e`, valid from the start of `day(start)` (`START=`).
pub fn starting(e: Entitlement, start: i64) -> Entitlement {
    Entitlement {
        start: Some(day(start)),
        ..e
    }
}

/// `e`, valid through the end of `day(last)` (the expiry date).
pub fn expiring(e: Entitlement, last: i64) -> Entitlement {
    Entitlement {
        expiry: Expiry::On(day(last)),
        ..e
    }
}

/// `e`, from another vendor.
pub fn from_vendor(e: Entitlement, vendor: &str) -> Entitlement {
    Entitlement {
        vendor: vendor.to_string(),
        ..e
    }
}

/// The catalog built from `ents`.
pub fn catalog(ents: &[Entitlement]) -> Catalog {
    Catalog::from_entitlements(ents)
}

/// An empty ledger serving `ents`, with [`CONFIG`].
pub fn ledger(ents: &[Entitlement]) -> Ledger {
    Ledger::new(catalog(ents), CONFIG)
}

/// The pool key `feature`/`vendor`/`version`.
pub fn key(feature: &str, vendor: &str, version_text: &str) -> PoolKey {
    PoolKey {
        feature: feature.to_string(),
        vendor: vendor.to_string(),
        version: version_text.to_string(),
    }
}

/// The pool a lease's seats came from.
pub fn pool_of(lease: &Lease) -> PoolKey {
    lease.pool_key().to_key()
}

/// The secret hash session `id` opens with (distinct per id).
pub fn secret(id: u64) -> [u8; 32] {
    let mut h = [0xA5; 32];
    h[..8].copy_from_slice(&id.to_le_bytes());
    h
}

/// A plausible client identity for session `id`.
pub fn client(id: u64) -> ClientInfo {
    ClientInfo {
        user: format!("user{id}").into(),
        host: format!("host{id}").into(),
        display: "/dev/pts/1".into(),
        pid: 1000 + u32::try_from(id % 1000).expect("id % 1000 fits in u32"),
        program: "cadtool".into(),
        program_version: "1.0".into(),
        address: format!("10.0.0.{}:40000", id % 250).into(),
    }
}

/// The command that opens session `id` with [`secret`] and [`client`].
pub fn open_cmd(id: u64) -> Command {
    Command::OpenSession {
        id: SessionId(id),
        secret_hash: secret(id),
        client: client(id),
    }
}

/// Applies one command to a fresh change buffer and returns the outcome and the changes.
pub fn apply(
    ledger: &mut Ledger,
    now: Millis,
    command: Command,
) -> (Result<Outcome, LedgerError>, Vec<Change>) {
    let mut changes = Vec::new();
    let result = ledger.apply(now, command, &mut changes);
    (result, changes)
}

/// Opens session `id` at `now`, checking the outcome and the one change it records.
pub fn session(ledger: &mut Ledger, id: u64, now: Millis) -> SessionId {
    let (result, changes) = apply(ledger, now, open_cmd(id));
    assert_eq!(result, Ok(Outcome::Done), "opening session {id}");
    let expected = Session {
        id: SessionId(id),
        secret_hash: secret(id),
        client: client(id),
        opened_at: now,
        expires_at: now + TTL,
        connected: true,
        detached: false,
    };
    assert_eq!(
        changes,
        vec![Change::SessionOpened(expected)],
        "opening session {id}"
    );
    SessionId(id)
}

/// A checkin of lease `lease` by `session`.
pub fn checkin_cmd(session: SessionId, lease: u64) -> Command {
    Command::Checkin {
        session,
        lease_id: LeaseId(lease),
    }
}

/// A checkout of `count` seats with no idempotency key.
pub fn checkout_cmd(
    session: SessionId,
    lease: u64,
    feature: &str,
    version_text: &str,
    count: u32,
) -> Command {
    checkout_ref_cmd(session, lease, feature, version_text, count, 0)
}

/// A checkout with idempotency key `client_ref`.
pub fn checkout_ref_cmd(
    session: SessionId,
    lease: u64,
    feature: &str,
    version_text: &str,
    count: u32,
    client_ref: u64,
) -> Command {
    checkout_wait_cmd(
        session,
        lease,
        feature,
        version_text,
        count,
        client_ref,
        Wait::No,
    )
}

/// A checkout of `count` seats of `feature` (any version) that waits in the queue as long
/// as it takes.
pub fn waiting_cmd(
    session: SessionId,
    lease: u64,
    feature: &str,
    count: u32,
    client_ref: u64,
) -> Command {
    checkout_wait_cmd(
        session,
        lease,
        feature,
        "",
        count,
        client_ref,
        Wait::Forever,
    )
}

/// A checkout that waits as `wait` says: the one builder the others call.
pub fn checkout_wait_cmd(
    session: SessionId,
    lease: u64,
    feature: &str,
    version_text: &str,
    count: u32,
    client_ref: u64,
    wait: Wait,
) -> Command {
    Command::Checkout {
        ask: Ask {
            session,
            lease_id: LeaseId(lease),
            feature: feature.to_string(),
            version: version_text.to_string(),
            count,
            client_ref,
        },
        wait,
    }
}

/// Checks out seats that the test expects to be granted; checks the lease and its change.
pub fn grant(
    ledger: &mut Ledger,
    now: Millis,
    session: SessionId,
    lease: u64,
    feature: &str,
    version_text: &str,
    count: u32,
) -> Lease {
    let cmd = checkout_cmd(session, lease, feature, version_text, count);
    let (result, changes) = apply(ledger, now, cmd.clone());
    let Ok(Outcome::Granted(granted)) = result else {
        panic!("{cmd:?} at {now}: expected a grant, got {result:?}");
    };
    assert_eq!(granted.id, LeaseId(lease), "{cmd:?}");
    assert_eq!(granted.session, session, "{cmd:?}");
    assert_eq!(granted.feature, feature, "{cmd:?}");
    assert_eq!(granted.requested_version, version_text, "{cmd:?}");
    assert_eq!(granted.count, count, "{cmd:?}");
    assert_eq!(granted.granted_at, now, "{cmd:?}");
    assert_eq!(
        changes,
        vec![Change::LeaseGranted(granted.clone())],
        "{cmd:?}"
    );
    assert_eq!(
        ledger.lease(granted.id),
        Some(&granted),
        "{cmd:?}: lease not recorded"
    );
    granted
}

/// Everything observable about a ledger, in a comparable, order-independent form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Sessions by id.
    pub sessions: BTreeMap<SessionId, Session>,
    /// Leases by id.
    pub leases: BTreeMap<LeaseId, Lease>,
    /// Seats in use in every catalog pool and every pool a lease names.
    pub in_use: BTreeMap<PoolKey, u32>,
    /// `next_deadline()`.
    pub next_deadline: Option<Millis>,
}

/// Takes a [`Snapshot`] of `ledger`.
pub fn snapshot(ledger: &Ledger) -> Snapshot {
    let sessions: BTreeMap<_, _> = ledger.sessions().map(|s| (s.id, s.clone())).collect();
    let leases: BTreeMap<_, _> = ledger.leases().map(|l| (l.id, l.clone())).collect();
    let in_use = ledger
        .catalog()
        .all_pools()
        .map(|p| p.key.clone())
        .chain(leases.values().map(pool_of))
        .map(|k| {
            let n = ledger.in_use(&k);
            (k, n)
        })
        .collect();
    Snapshot {
        sessions,
        leases,
        in_use,
        next_deadline: ledger.next_deadline(),
    }
}

/// The durable state a store would hold, rebuilt only from the changes the ledger emits.
///
/// Recording refuses changes that do not fit the state so far (a lease for a session that
/// is not open, a release of a lease not held, a session closed while it still holds
/// leases), so feeding it every change also checks that the changes are a faithful record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durable {
    /// Open sessions as recorded when they opened.
    pub sessions: BTreeMap<SessionId, Session>,
    /// Held leases.
    pub leases: BTreeMap<LeaseId, Lease>,
}

impl Durable {
    /// Applies `changes` in order, or says which one does not fit.
    pub fn record(&mut self, changes: &[Change]) -> Result<(), String> {
        for change in changes {
            match change {
                Change::SessionOpened(s) => {
                    if self.sessions.insert(s.id, s.clone()).is_some() {
                        return Err(format!("{change:?}: session already open"));
                    }
                }
                Change::SessionClosed(id) => {
                    if self.sessions.remove(id).is_none() {
                        return Err(format!("{change:?}: session not open"));
                    }
                    if self.leases.values().any(|l| l.session == *id) {
                        return Err(format!("{change:?}: session still holds leases"));
                    }
                }
                // The queue is soft state; nothing durable changes.
                Change::Queued(_) | Change::Dequeued { .. } => {}
                Change::LeaseGranted(l) => {
                    if !self.sessions.contains_key(&l.session) {
                        return Err(format!("{change:?}: session not open"));
                    }
                    if self.leases.insert(l.id, l.clone()).is_some() {
                        return Err(format!("{change:?}: lease id already held"));
                    }
                }
                Change::LeaseReleased { lease, .. } => {
                    if self.leases.remove(&lease.id).as_ref() != Some(lease) {
                        return Err(format!("{change:?}: lease not held as recorded"));
                    }
                }
                Change::LeaseLingering(lease) => {
                    let held = self.leases.get_mut(&lease.id);
                    match held {
                        Some(h) if h.lingering_until.is_none() => *h = lease.clone(),
                        _ => return Err(format!("{change:?}: lease not held, or lingering")),
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that `ledger` holds exactly the recorded sessions (durable fields: id,
    /// secret hash, client identity, opening time) and leases.
    pub fn check_matches(&self, ledger: &Ledger) -> Result<(), String> {
        let live = snapshot(ledger);
        let durable_part = |s: &Session| {
            // `client.address` is refreshed by Resume without a change; it is where the
            // client is now, not who it is, so it is not compared.
            let client = ClientInfo {
                address: Default::default(),
                ..s.client.clone()
            };
            (s.id, s.secret_hash, client, s.opened_at)
        };
        let recorded: Vec<_> = self.sessions.values().map(durable_part).collect();
        // Sessions that departed while their seats linger are still stored.
        let mut held: Vec<_> = live
            .sessions
            .values()
            .chain(ledger.departed_sessions())
            .map(durable_part)
            .collect();
        held.sort_by_key(|s| s.0);
        if recorded != held {
            return Err(format!(
                "sessions differ:\n recorded {recorded:?}\n in ledger {held:?}"
            ));
        }
        if self.leases != live.leases {
            return Err(format!(
                "leases differ:\n recorded {:?}\n in ledger {:?}",
                self.leases, live.leases
            ));
        }
        Ok(())
    }

    /// Rebuilds a ledger from this state, as the server does after a restart.
    pub fn restore(&self, catalog: Catalog, now: Millis, changes: &mut Vec<Change>) -> Ledger {
        Ledger::restore(
            catalog,
            CONFIG,
            self.sessions.values().cloned(),
            self.leases.values().cloned(),
            now,
            changes,
        )
    }
}
