//! Crash recovery with a real `usherd` process: `kill -9` under load, restart, and check
//! that no acknowledged grant was lost, nothing was over-granted, no lease appeared that
//! no client was told about, holders resume, and sessions that never return expire.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use usher_proto::response;

use crate::util::*;

const SEATS: u32 = 5;
const WORKERS: usize = 4;
const WAIT: Duration = Duration::from_secs(30);

/// A running `usherd`, killed (and reaped) on drop, so a failing test leaves no process.
pub struct Usherd {
    pub child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Usherd {
    /// Starts `usherd` on `port` (a free one when `None`) and waits until it serves.
    pub async fn start(lic: &Licensed, port: Option<u16>) -> Usherd {
        Usherd::start_binary(env!("CARGO_BIN_EXE_usherd"), lic, port).await
    }

    /// Starts the given build of `usherd` (see [`Usherd::start`]).
    pub async fn start_binary(binary: &str, lic: &Licensed, port: Option<u16>) -> Usherd {
        let deadline = tokio::time::Instant::now() + WAIT;
        for attempt in 0..100 {
            let port = port.unwrap_or_else(free_port);
            let log = lic.tmp.path().join(format!("usherd-{port}-{attempt}.log"));
            let mut server = Usherd {
                child: spawn_usherd(binary, lic, port, &log),
                port,
                log,
            };
            // Another process may take the port between our probe and usherd's bind (or,
            // on a restart, before the port is free again): then usherd exits, and we try
            // again.
            if server.wait_serving(deadline).await {
                return server;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "usherd did not start on port {port}: {}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("usherd did not start on port {port:?} in 100 attempts")
    }

    /// True once the server answers a status request; false if it exited first.
    async fn wait_serving(&mut self, deadline: tokio::time::Instant) -> bool {
        for _ in 0..1_000 {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if tokio::net::TcpStream::connect(self.addr()).await.is_ok() {
                // Ours (not a stranger on a reused port) and fully up.
                let _ = status_of(self.port).await;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("usherd did not start serving in time: {}", self.log_text());
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("usherd log {}:\n{text}", self.log.display())
    }

    /// `kill -9`, and reap it.
    fn kill(&mut self) {
        self.child.kill().expect("kill -9 usherd");
        self.child.wait().expect("reap usherd");
    }
}

impl Drop for Usherd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_usherd(binary: &str, lic: &Licensed, port: u16, log: &std::path::Path) -> Child {
    Command::new(binary)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "off"])
        .arg("--data-dir")
        .arg(lic.data_dir())
        .arg("--license")
        .arg(&lic.license)
        .arg("--vendor-key")
        .arg(&lic.public)
        .args(["--session-ttl", "5s", "--heartbeat-interval", "1s"])
        .args(["--reconnect-grace", "2s", "--log", "warn"])
        // The abandoned raw connection speaks plaintext; the clients use TLS.
        .arg("--insecure-plaintext")
        .args(["--status-detail", "full"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("usherd log file"))
        .spawn()
        .expect("usherd starts")
}

/// What a worker ends with: its client, the seat it holds (if any), and every lease id it
/// was ever told it holds.
type WorkerEnd = (
    usher_client::Client,
    Option<usher_client::License>,
    Vec<u64>,
);

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_loses_no_grant_overgrants_nothing_and_holders_resume() {
    let lic = Licensed::new(&format!(
        "FEATURE cad acme 2025 permanent {SEATS} HOSTID=ANY\n"
    ));
    let mut server = Usherd::start(&lic, None).await;
    let port = server.port;

    // A client that takes a seat and then is never heard from again.
    let mut abandoned = RawConn::connect(server.addr()).await;
    abandoned.hello("abandoned").await;
    let response::Kind::Granted(lost) = abandoned.call(2, checkout("cad", 1, 1)).await else {
        panic!("the abandoned client gets a seat");
    };

    // Clients cycle checkout/checkin as fast as they can, each holding at most one seat,
    // so together with the abandoned one they never need more than SEATS.
    let stop = Arc::new(AtomicBool::new(false));
    let granted = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (stop, granted) = (stop.clone(), granted.clone());
        workers.push(tokio::spawn(async move {
            let client = client_for(port).await;
            let mut current = None;
            let mut told = Vec::new();
            for _ in 0..10_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                current = None; // checks the previous seat in
                if let Ok(license) = client.checkout("cad").await {
                    told.push(license.lease_id());
                    current = Some(license);
                    granted.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (client, current, told) as WorkerEnd
        }));
    }
    // The crash comes once the workers are cycling (a few grants each), however long a
    // loaded machine takes them to connect.
    eventually(WAIT, "the workers to cycle", || async {
        (granted.load(Ordering::SeqCst) >= 3 * WORKERS).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    server.kill();
    drop(abandoned);

    let server = Usherd::start(&lic, Some(port)).await;
    // What was recovered, before any client has had a chance to act on it.
    let recovered = status_of(port).await;
    let mut held = Vec::new();
    let mut told = BTreeSet::from([lost.lease_id]);
    for w in workers {
        // A checkout cut off by the crash is resent after the restart and completes.
        let (client, license, ids) = w.await.expect("worker finishes");
        told.extend(ids);
        held.push((client, license));
    }
    let held_ids: BTreeSet<u64> = held
        .iter()
        .filter_map(|(_, l)| l.as_ref().map(|l| l.lease_id()))
        .collect();
    assert!(!held_ids.is_empty(), "the workers held seats at the crash");

    let pool = &recovered.features[0];
    assert!(
        pool.in_use <= SEATS,
        "over-grant after recovery: {recovered:#?}"
    );
    let present: BTreeSet<u64> = pool.holders.iter().map(|h| h.lease_id).collect();
    assert!(
        present.contains(&lost.lease_id),
        "the abandoned lease is recovered too: {recovered:#?}"
    );
    let phantoms: Vec<&u64> = present.difference(&told).collect();
    assert!(
        phantoms.is_empty(),
        "leases {phantoms:?} were recovered that no client was ever told of: {recovered:#?}"
    );
    let report = status_of(port).await;
    let now_present: BTreeSet<u64> = holders(&report).iter().map(|h| h.lease_id).collect();
    let missing: Vec<&u64> = held_ids.difference(&now_present).collect();
    assert!(
        missing.is_empty(),
        "acknowledged leases {missing:?} were lost: {report:#?}\n{}",
        server.log_text()
    );
    assert!(in_use(&report, "cad") <= SEATS, "{report:#?}");

    // Holders resume and keep their seats; the abandoned session's seat expires.
    eventually(
        WAIT,
        "exactly the live holders' seats to remain, connected",
        || async {
            let r = status_of(port).await;
            let h = holders(&r);
            let ids: BTreeSet<u64> = h.iter().map(|h| h.lease_id).collect();
            (ids == held_ids && h.iter().all(|h| h.connected)).then_some(())
        },
    )
    .await;
    for (client, license) in &held {
        if let Some(l) = license {
            assert!(l.lost_reason().is_none(), "{:?}", l.lost_reason());
        }
        client
            .status("")
            .await
            .expect("the client works after the restart");
    }
    let report = status_of(port).await;
    assert_eq!(in_use(&report, "cad"), held_ids.len() as u32, "{report:#?}");
}
