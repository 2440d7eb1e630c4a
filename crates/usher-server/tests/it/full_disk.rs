//! A full disk, for real: the data directory lives on a small tmpfs this test mounts
//! (as root; skipped with a note otherwise). Filled up, the store cannot commit: new grants
//! are refused with STORE_UNAVAILABLE, held seats, heartbeats and status keep working,
//! health and a metric say why, and grants resume by themselves once space returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use usher_proto::{ErrorCode, request, response};

use crate::http::{http, parse_exposition, value};
use crate::util::*;

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .ok()?;
        status.success().then(|| SmallDisk(at.to_path_buf()))
    }

    /// Writes zeros into `fill` until the filesystem is full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.0.join("fill")).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("fill")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

async fn store_available(server: &TestServer) -> Option<f64> {
    let scrape = http(server.admin.unwrap(), "GET", "/metrics", None, None).await;
    let (_, samples) = parse_exposition(&scrape.body);
    value(&samples, "usher_store_available", &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_new_grants_keeps_held_seats_and_recovers_by_itself() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let lic = Licensed::new(LICENSE);
    let Some(disk) = SmallDisk::mount(&lic.tmp.path().join("small"), "3m") else {
        eprintln!("skipped: could not mount a tmpfs here");
        return;
    };
    let mut config = lic.config();
    config.data_dir = disk.0.join("data");
    // The holders stay quiet for a while: no session may lapse meanwhile.
    config.session_ttl = Duration::from_secs(120);
    let server = TestServer::start(config).await;

    let mut holder = RawConn::connect(server.addr).await;
    holder.hello("alice").await;
    let held = match holder.call(2, checkout("cad", 1, 1)).await {
        response::Kind::Granted(g) => g.lease_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(store_available(&server).await, Some(1.0));

    // Fill the disk, then use the store until a commit fails (SQLite first reuses the
    // space its files already hold).
    let mut busy = RawConn::connect(server.addr).await;
    busy.hello("bob").await;
    disk.fill();
    // A new session cannot open: it too needs a commit.
    let mut late = RawConn::connect(server.addr).await;
    match late.call(1, request::Kind::Hello(hello("carol"))).await {
        response::Kind::Error(e) => assert_eq!(e.code(), ErrorCode::StoreUnavailable, "{e:?}"),
        // SQLite may still have had room for it in the space its files hold.
        response::Kind::Welcome(_) => {}
        other => panic!("{other:?}"),
    }
    let mut refused = None;
    for id in 2..20_000u64 {
        match busy.call(id, checkout("sim", 1, id)).await {
            response::Kind::Granted(g) => {
                let checkin = request::Kind::Checkin(usher_proto::Checkin {
                    lease_id: g.lease_id,
                });
                if let response::Kind::Error(e) = busy.call(100_000 + id, checkin).await {
                    assert_eq!(e.code(), ErrorCode::StoreUnavailable, "{e:?}");
                }
            }
            response::Kind::Error(e) => {
                refused = Some(e);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let refused = refused.expect("a full disk makes a commit fail within 20,000 checkouts");
    assert_eq!(refused.code(), ErrorCode::StoreUnavailable, "{refused:?}");
    assert!(refused.message.contains("store unavailable"), "{refused:?}");

    // New grants are refused; the held seat, heartbeats and status keep working.
    match holder.call(3, checkout("cad", 1, 3)).await {
        response::Kind::Error(e) => assert_eq!(e.code(), ErrorCode::StoreUnavailable, "{e:?}"),
        other => panic!("a new grant on a full disk: {other:?}"),
    }
    let ack = holder
        .call(
            4,
            request::Kind::Heartbeat(usher_proto::Heartbeat::default()),
        )
        .await;
    assert!(matches!(ack, response::Kind::HeartbeatAck(_)), "{ack:?}");
    let report = server.status().await;
    assert!(
        holders(&report).iter().any(|h| h.lease_id == held),
        "the held seat is still held: {report:?}"
    );
    assert_eq!(store_available(&server).await, Some(0.0));
    let health = http(
        server.admin.unwrap(),
        "GET",
        "/api/v1/health",
        Some(&server.token),
        None,
    )
    .await;
    assert!(
        health.body.contains("store unavailable") && health.body.contains("\"store_ok\":false"),
        "{}",
        health.body
    );

    // Space returns: grants resume by themselves.
    disk.free();
    let (mut resumed, mut last) = (false, None);
    for id in 10..410 {
        let answer = holder.call(id, checkout("cad", 1, id)).await;
        if matches!(answer, response::Kind::Granted(_)) {
            resumed = true;
            break;
        }
        last = Some(answer);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        resumed,
        "grants resume within 20 s of space returning: {last:?}"
    );
    assert_eq!(store_available(&server).await, Some(1.0));

    // Nothing acknowledged was lost: a restart serves the seat held all along.
    drop((holder, busy));
    let server = server.restart().await;
    let report = server.status().await;
    assert!(
        holders(&report).iter().any(|h| h.lease_id == held),
        "{report:?}"
    );
    server.shutdown().await.unwrap();
    drop(disk);
}
