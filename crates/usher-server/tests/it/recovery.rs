//! Crash recovery with a real `usherd` process: `kill -9` under load, restart, and check
//! that no acknowledged grant was lost, nothing was over-granted, and holders resume.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usher_proto::response;

use crate::util::*;

const SEATS: u32 = 5;
const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_usherd(lic: &Licensed, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(lic.data_dir())
        .arg("--license")
        .arg(&lic.license)
        .arg("--vendor-key")
        .arg(&lic.public)
        .args(["--session-ttl", "5s", "--heartbeat-interval", "500ms"])
        .args(["--reconnect-grace", "2s", "--log", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .expect("usherd starts")
}

async fn wait_listening(port: u16) {
    eventually(WAIT, "usherd to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// Kills the child on the way out of a failing test, too.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_loses_no_grant_overgrants_nothing_and_holders_resume() {
    let lic = Licensed::new(&format!(
        "FEATURE cad acme 2025 permanent {SEATS} HOSTID=ANY\n"
    ));
    let port = free_port();
    let mut server = Reaper(spawn_usherd(&lic, port));
    wait_listening(port).await;

    // A client that takes a seat and then is never heard from again.
    let mut abandoned = RawConn::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    abandoned.hello("abandoned").await;
    abandoned.send(2, checkout("cad", 1, 1)).await;
    let Some(response::Kind::Granted(lost_lease)) = abandoned.recv().await.and_then(|r| r.kind)
    else {
        panic!("the abandoned client gets a seat");
    };

    // Four clients cycle checkout/checkin as fast as they can, each holding at most one
    // seat, so together with the abandoned one they never need more than SEATS.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let client = client_for(port).await;
            let mut current = None;
            for _ in 0..10_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                current = None; // checks the previous seat in
                if let Ok(license) = client.checkout("cad", "", 1).await {
                    current = Some(license);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (client, current)
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);
    server.0.kill().expect("kill -9");
    server.0.wait().unwrap();
    drop(abandoned);

    let restarted = Reaper(spawn_usherd(&lic, port));
    wait_listening(port).await;
    let mut held = Vec::new();
    for w in workers {
        // A checkout cut off by the crash is resent after the restart and completes.
        held.push(w.await.expect("worker finishes"));
    }
    let held_ids: Vec<u64> = held
        .iter()
        .filter_map(|(_, l)| l.as_ref().map(|l| l.lease_id()))
        .collect();
    assert!(!held_ids.is_empty(), "the workers held seats at the crash");

    let report = status_of(port).await;
    let pool = &report.features[0];
    assert!(
        pool.in_use <= SEATS,
        "over-grant after recovery: {report:?}"
    );
    let present: Vec<u64> = pool.holders.iter().map(|h| h.lease_id).collect();
    for id in &held_ids {
        assert!(
            present.contains(id),
            "acknowledged lease {id} was lost: {report:?}"
        );
    }

    // Holders resume and keep their seats; the abandoned session's seat expires.
    eventually(WAIT, "only the live holders to remain", || async {
        let r = status_of(port).await;
        let ids: Vec<u64> = r.features[0].holders.iter().map(|h| h.lease_id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let mut want = held_ids.clone();
        want.sort();
        (sorted == want && r.features[0].holders.iter().all(|h| h.connected)).then_some(())
    })
    .await;
    assert!(!present.is_empty() && !held_ids.contains(&lost_lease.lease_id));
    for (client, license) in &held {
        if let Some(l) = license {
            assert!(l.lost_reason().is_none(), "{:?}", l.lost_reason());
        }
        client
            .status("")
            .await
            .expect("the client works after the restart");
    }
    drop(restarted);
}
