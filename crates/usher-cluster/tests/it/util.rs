//! What the tests share: a ledger with a small pool, and the commands they send.

use usher_cluster::{NodeId, PeerTls};
use usher_core::{
    Ask, Catalog, ClientInfo, Command, LeaseId, Ledger, LedgerConfig, Millis, SessionId, Wait,
};
use usher_license::{Entitlement, Expiry, HostId, LineKind, SeatCount};

/// 2025-06-01T00:00:00Z: the time of the first batch in every test.
pub const T0: Millis = 1_748_736_000_000;

/// The feature every test checks out.
pub const FEATURE: &str = "cad";

/// Seats in the pool of [`FEATURE`].
pub const SEATS: u32 = 2;

/// An empty ledger serving [`SEATS`] seats of [`FEATURE`].
pub fn ledger() -> Ledger {
    ledger_with(LedgerConfig::default())
}

/// An empty ledger serving [`SEATS`] seats of [`FEATURE`], with timing rules `config`.
pub fn ledger_with(config: LedgerConfig) -> Ledger {
    let line = Entitlement {
        kind: LineKind::Feature,
        feature: FEATURE.to_string(),
        vendor: "acme".to_string(),
        version: "1.0".parse().expect("1.0 is a version"),
        expiry: Expiry::Permanent,
        count: SeatCount::Counted(SEATS),
        start: None,
        issued: None,
        notice: None,
        hostid: HostId::Any,
        attrs: Vec::new(),
        signature: None,
        line: 1,
    };
    Ledger::new(Catalog::from_entitlements(&[line]), config)
}

/// Opens session `id` for user `user`.
pub fn open(id: u64, user: &str) -> Command {
    Command::OpenSession {
        id: SessionId(id),
        secret_hash: [id as u8; 32],
        client: ClientInfo {
            user: user.into(),
            host: "ws1".into(),
            ..ClientInfo::default()
        },
    }
}

/// Session `session` asks for one seat of [`FEATURE`] as lease `lease`, without waiting.
pub fn checkout(session: u64, lease: u64) -> Command {
    Command::Checkout {
        ask: Ask {
            session: SessionId(session),
            lease_id: LeaseId(lease),
            feature: FEATURE.to_string(),
            version: "1.0".to_string(),
            count: 1,
            client_ref: lease,
        },
        wait: Wait::No,
    }
}

/// Session `session` gives lease `lease` back.
pub fn checkin(session: u64, lease: u64) -> Command {
    Command::Checkin {
        session: SessionId(session),
        lease_id: LeaseId(lease),
    }
}

/// Member `id`'s identity key in tests (fixed, so a restarted member keeps its key).
pub fn identity(id: NodeId) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[id as u8; 32])
}

/// Member `id`'s TLS configuration, with the test identity of every member in `members`
/// pinned.
pub fn peer_tls(id: NodeId, members: impl IntoIterator<Item = NodeId>) -> PeerTls {
    PeerTls {
        identity: identity(id),
        members: members
            .into_iter()
            .map(|m| (m, identity(m).verifying_key().to_bytes()))
            .collect(),
    }
}
