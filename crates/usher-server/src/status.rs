//! Building status reports from the ledger.

use std::collections::HashMap;

use usher_core::{Ledger, Millis, PoolKey};
use usher_proto::{FeatureStatus, Holder, QueueEntry, StatusReport};

/// Facts about the server that status reports carry.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Host name.
    pub server_name: String,
    /// Software version.
    pub server_version: String,
    /// TCP port.
    pub port: u16,
    /// Start time.
    pub started_at_ms: Millis,
    /// License files served.
    pub license_files: Vec<String>,
    /// Vendors served.
    pub vendors: Vec<String>,
}

/// Usage per pool, with holders, optionally for one feature only. Pools that left the
/// catalog on a reload but still have holders are listed with a total of 0.
pub fn report(ledger: &Ledger, now: Millis, feature: &str, info: &ServerInfo) -> StatusReport {
    let wanted = |f: &str| feature.is_empty() || f == feature;
    let mut holders: HashMap<PoolKey, Vec<Holder>> = HashMap::new();
    for lease in ledger.leases().filter(|l| wanted(&l.feature)) {
        let key = PoolKey {
            feature: lease.feature.to_string(),
            vendor: lease.vendor.to_string(),
            version: lease.pool_version.to_string(),
        };
        let session = ledger.holder(lease.session);
        let client = session.map(|s| s.client.clone()).unwrap_or_default();
        holders.entry(key).or_default().push(Holder {
            user: client.user.to_string(),
            host: client.host.to_string(),
            display: client.display.to_string(),
            pid: client.pid,
            program: client.program.to_string(),
            version: lease.requested_version.to_string(),
            since_ms: lease.granted_at,
            count: lease.count,
            lease_id: lease.id.0,
            session_id: lease.session.0,
            connected: session.is_some_and(|s| s.connected),
            detached: session.is_some_and(|s| s.detached),
            overdraft: lease.overdraft,
            lingering_until_ms: lease.lingering_until.unwrap_or(0),
            borrowed_until_ms: lease.borrowed_until.unwrap_or(0),
            token_for: lease.token_for.as_deref().unwrap_or_default().to_string(),
        });
    }
    let mut features = Vec::new();
    for pool in ledger
        .catalog()
        .all_pools()
        .filter(|p| wanted(&p.key.feature))
    {
        let mut h = holders.remove(&pool.key).unwrap_or_default();
        h.sort_by_key(|h| (h.since_ms, h.lease_id));
        features.push(FeatureStatus {
            feature: pool.key.feature.clone(),
            vendor: pool.key.vendor.clone(),
            version: pool.version.to_string(),
            expires_at_ms: pool.expires_at(now).unwrap_or(0),
            total: pool.seats_at(now),
            in_use: ledger.in_use(&pool.key),
            holders: h,
        });
    }
    let mut orphans: Vec<_> = holders.into_iter().collect();
    orphans.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, h) in orphans {
        features.push(FeatureStatus {
            in_use: ledger.in_use(&key),
            feature: key.feature,
            vendor: key.vendor,
            version: key.version,
            expires_at_ms: 0,
            total: 0,
            holders: h,
        });
    }
    let queue = ledger
        .queued()
        .filter(|(r, _)| wanted(&r.feature))
        .map(|(r, position)| {
            let client = ledger
                .session(r.session)
                .map(|s| s.client.clone())
                .unwrap_or_default();
            QueueEntry {
                feature: r.feature.clone(),
                version: r.version.clone(),
                count: r.count,
                position,
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
        })
        .collect();
    StatusReport {
        queue,
        server_name: info.server_name.clone(),
        server_version: info.server_version.clone(),
        port: u32::from(info.port),
        features,
        started_at_ms: info.started_at_ms,
        license_files: info.license_files.clone(),
        vendors: info.vendors.clone(),
        now_ms: now,
    }
}
