//! A real `usherd` under a flood of hostile connections (idle, slowloris, oversized and
//! garbage frames) from many loopback addresses: legitimate clients keep checking out, the
//! server stays up and its memory stays bounded.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use usher_client::{Client, ClientConfig, ServerAddr};

use crate::util::*;

/// The junk peers, the same as `usher-bench --scenario flood` floods with.
#[path = "../../../usher-bench/src/junk.rs"]
mod junk;

/// Junk connections of each kind.
const PER_KIND: usize = 400;

struct Usherd(Child);

impl Drop for Usherd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legitimate_clients_are_served_through_a_flood_and_memory_stays_bounded() {
    let lic = Licensed::new(LICENSE);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = lic.tmp.path().join("usherd.toml");
    std::fs::write(
        &config,
        "handshake_timeout = \"2s\"\nadmin_listen = \"off\"\nmax_connections_per_ip = 50\n",
    )
    .unwrap();
    let log = lic.tmp.path().join("usherd.log");
    let server = Usherd(
        Command::new(env!("CARGO_BIN_EXE_usherd"))
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(lic.data_dir())
            .arg("--license")
            .arg(&lic.license)
            .arg("--vendor-key")
            .arg(&lic.public)
            .args(["--log", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("usherd starts"),
    );
    let pid = server.0.id();
    eventually(Duration::from_secs(20), "usherd to listen", || async {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let baseline = rss_kib(pid);

    let flooding = Arc::new(AtomicBool::new(true));
    let connects = Arc::new(AtomicU64::new(0));
    let mut junk = tokio::task::JoinSet::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // Each junk peer keeps at it (reconnecting when dropped) until the legitimate clients
    // are done, bounded in count (100 connections each) and time (60 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for n in 0..PER_KIND * 4 {
        let (flooding, connects) = (flooding.clone(), connects.clone());
        junk.spawn(junk::junk_peer(
            n,
            addr,
            flooding,
            connects,
            (100, deadline),
        ));
    }
    // Let the flood build up.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let servers = vec![ServerAddr {
        host: "127.0.0.1".into(),
        port,
    }];
    let mut peak = rss_kib(pid);
    for round in 0..20 {
        // Generous limits: the test asserts that every client is served, not how fast
        // (the latency under flood belongs to the benchmark harness).
        let mut config = ClientConfig::new(servers.clone());
        config.connect_timeout = Duration::from_secs(20);
        config.request_timeout = Duration::from_secs(20);
        let client = Client::connect(config)
            .await
            .unwrap_or_else(|e| panic!("round {round}: connect under flood: {e}"));
        let license = client
            .checkout("cad")
            .await
            .unwrap_or_else(|e| panic!("round {round}: checkout under flood: {e}"));
        drop(license);
        client.close().await;
        peak = peak.max(rss_kib(pid));
    }
    flooding.store(false, Ordering::Relaxed);
    while junk.join_next().await.is_some() {}

    let connects = connects.load(Ordering::Relaxed);
    eprintln!("flood: {connects} junk connections; usherd RSS {baseline} KiB -> peak {peak} KiB");
    assert!(
        connects >= (PER_KIND * 4) as u64,
        "the flood reached the server: {connects} connections"
    );
    let mut server = server;
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "usherd died:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Bounded: a few hundred bytes to a few KiB per junk connection, not megabytes.
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    assert!(
        grown_mib < 128,
        "usherd grew by {grown_mib} MiB under the flood (from {baseline} KiB)"
    );
}
