//! `usher-bench`: measures usherd's checkout+checkin throughput and latency beside the
//! baselines that give the figures meaning, all in one run on one machine:
//!
//! - the **echo floor**: a minimal tokio server with the same framing, answering every
//!   frame at once, in a process of its own like usherd, driven by the same client
//!   pattern (the best any server could do);
//! - the **durable floor**: the latency of a 4 KiB write plus `fdatasync` on the disk
//!   that holds usherd's data directory (what one durable commit costs);
//! - a **Redis counting semaphore** (sorted set plus Lua, TTL eviction), what a user might
//!   build instead, if `redis-server` is installed: once in memory only, as usually run,
//!   and once with its append-only file synced before every reply, as durable as usher.
//!
//! usherd's own figures are measured twice at every level against the same server: with
//! frames straight on TCP, as the echo floor speaks (the ratios compare that), and over
//! TLS 1.3 with the client library's connector, as shipped (`ratio_tls_vs_plaintext`).
//!
//! Figures are reported beside their baselines as ratios, because machines are noisy and
//! only ratios measured in the same run compare.
//!
//! The `recovery` scenario holds L leases, kills usherd with `SIGKILL`, starts it again
//! and times how long until a new checkout is granted (see [`recovery`]).
//!
//! Nothing here asserts a speed.

mod flood;
mod junk;
mod recovery;
mod redis;
mod scenarios;
mod sessions;
mod side;
mod stats;
mod status_load;
mod usher;

use std::future::Future;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::json;
use stats::Measured;

/// Benchmark usherd against the echo floor, the disk and a Redis semaphore.
#[derive(Debug, Parser)]
#[command(name = "usher-bench", version, about)]
struct Args {
    /// Smoke mode: every scenario at a tiny size, in seconds.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object per scenario instead of a table.
    #[arg(long)]
    json: bool,
    /// Concurrent sessions to measure, comma-separated.
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Operations (checkout + checkin pairs) per concurrency level, shared by the clients.
    #[arg(long)]
    ops: Option<usize>,
    /// Longest a single measurement may run.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Scenarios to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    scenario: Vec<Scenario>,
    /// Leases held when usherd is killed in the recovery scenario, comma-separated.
    #[arg(long, value_delimiter = ',')]
    leases: Vec<usize>,
    /// Longest the recovery scenario may spend taking its leases, per size.
    #[arg(long, default_value_t = 600)]
    load_seconds: u64,
    /// Idle sessions held in the sessions scenario, comma-separated.
    #[arg(long, value_delimiter = ',')]
    sessions: Vec<usize>,
    /// Longest the sessions scenario may spend opening its sessions, per size.
    #[arg(long, default_value_t = 900)]
    open_seconds: u64,
    /// Holders on the server in the status-load scenario.
    #[arg(long)]
    holders: Option<usize>,
    /// Rounds of the status-load scenario (a quiet run, then a polled one, each); the
    /// figure is the median round's ratio.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Pause of each status-load poller between two full status reads (0: back to back).
    #[arg(long, default_value_t = 0)]
    poll_interval_ms: u64,
    /// Internal: be the echo floor's server process on this address.
    #[arg(long, hide = true)]
    serve_echo: Option<std::net::SocketAddr>,
    /// Internal: be the flood scenario's junk generator against this address.
    #[arg(long, hide = true)]
    flood_generator: Option<std::net::SocketAddr>,
    /// Internal: be the status-load scenario's pollers against this address.
    #[arg(long, hide = true)]
    status_pollers: Option<std::net::SocketAddr>,
    /// Junk peers of the flood scenario.
    #[arg(long, default_value_t = 2_000)]
    flood_peers: usize,
    /// Run the flood scenario against a usherd without its handshake cap and per-address
    /// connection rate (`max_handshakes`, `max_connection_rate_per_ip`), to compare with.
    #[arg(long)]
    flood_limits_off: bool,
    /// The flood scenario's legitimate clients speak TLS 1.3, as shipped, instead of
    /// plaintext (the junk is the same either way).
    #[arg(long)]
    tls: bool,
}

/// A measurement the harness can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Checkout+checkin throughput and latency beside the echo floor, fsync and Redis.
    Checkout,
    /// Time until usherd serves again after `kill -9` with L leases held.
    Recovery,
    /// Memory per idle session and CPU on keepalives, with S sessions held over UDP.
    Sessions,
    /// Checkout latency of legitimate clients while junk connections flood the port.
    Flood,
    /// Checkout throughput at 16 clients while 4 clients read the full status in a loop,
    /// with H holders (`--holders`, default 100,000).
    StatusLoad,
}

/// Runs `clients` copies of a worker, each doing its share of `ops` until the deadline,
/// and summarises the latencies and throughput.
async fn run_clients<F, Fut>(
    clients: usize,
    ops: usize,
    limit: Duration,
    worker: F,
) -> anyhow::Result<Measured>
where
    F: Fn(usize, usize, Instant) -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<u64>>> + Send + 'static,
{
    let per_client = ops.div_ceil(clients).max(1);
    let start = Instant::now();
    let deadline = start + limit;
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(worker(i, per_client, deadline)))
        .collect();
    let mut latencies = Vec::with_capacity(ops);
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Measured::from_latencies(latencies, start.elapsed()))
}

/// The checkout pattern against a Redis semaphore, if that Redis is running.
async fn run_redis(
    redis: Option<&redis::RedisServer>,
    clients: usize,
    ops: usize,
    limit: Duration,
) -> anyhow::Result<Option<Measured>> {
    let Some(addr) = redis.map(|r| r.addr) else {
        return Ok(None);
    };
    let measured = run_clients(clients, ops, limit, move |i, n, d| {
        redis::redis_worker(addr, i, clients + 1, n, d)
    })
    .await?;
    Ok(Some(measured))
}

fn ratio(a: f64, b: Option<f64>) -> Option<f64> {
    b.filter(|b| *b > 0.0)
        .map(|b| (a / b * 100.0).round() / 100.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.serve_echo {
        return usher::serve_echo(addr).await;
    }
    if let Some(addr) = args.flood_generator {
        return flood::generate(addr, args.flood_peers).await;
    }
    if let Some(addr) = args.status_pollers {
        let holders = args.holders.unwrap_or(0);
        let pause = std::time::Duration::from_millis(args.poll_interval_ms);
        return status_load::poll(addr, holders, status_load::POLLERS, pause).await;
    }
    let scenarios = match &args.scenario[..] {
        [] => vec![
            Scenario::Checkout,
            Scenario::Flood,
            Scenario::Sessions,
            Scenario::Recovery,
            Scenario::StatusLoad,
        ],
        given => given.to_vec(),
    };
    for (i, scenario) in scenarios.iter().enumerate() {
        if i > 0 && !args.json {
            println!();
        }
        match scenario {
            Scenario::Checkout => checkout_scenario(&args).await?,
            Scenario::Recovery => scenarios::recovery_scenario(&args).await?,
            Scenario::Sessions => scenarios::sessions_scenario(&args).await?,
            Scenario::Flood => scenarios::flood_scenario(&args).await?,
            Scenario::StatusLoad => scenarios::status_load_scenario(&args).await?,
        }
    }
    Ok(())
}

/// The checkout scenario at each concurrency: one table, or one JSON object per level.
async fn checkout_scenario(args: &Args) -> anyhow::Result<()> {
    let levels = match (&args.clients[..], args.quick) {
        ([], true) => vec![1, 4],
        ([], false) => vec![1, 16, 256],
        (given, _) => given.to_vec(),
    };
    let limit = Duration::from_secs(if args.quick { 5 } else { args.seconds });
    let ops_for = |clients: usize| {
        args.ops.unwrap_or(match (args.quick, clients) {
            (true, _) => 200,
            (false, 1) => 2_000,
            (false, _) => 20_000,
        })
    };

    let server = usher::Usherd::start(usher::SEATS).await?;
    let tls = usher::Transport::tls()?;
    let echo_server = usher::EchoServer::start().await?;
    let echo = echo_server.addr;
    let redis = redis::RedisServer::start(None).await?;
    // Its append-only file on the same disk as usherd's store.
    let redis_fsync =
        redis::RedisServer::start(Some(&server.data_dir.with_file_name("redis"))).await?;
    let fsync = Measured::from_latencies(
        usher::fsync_latencies(
            &server.data_dir.join("probe"),
            if args.quick { 50 } else { 500 },
        )?,
        Duration::from_secs(1),
    );
    if !args.json {
        println!(
            "usher-bench: {} core(s); fsync of 4 KiB on the data dir's disk: p50 {:.0} µs, p99 {:.0} µs",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            fsync.p50_us,
            fsync.p99_us
        );
        if redis.is_none() {
            println!("redis: skipped (redis-server not installed)");
        }
        println!();
        println!(
            "{:>7} | {:>10} {:>8} {:>8} {:>8} | {:>10} {:>8} {:>6} | {:>10} {:>8} | {:>10} {:>8} | {:>10} {:>8} | {:>7} {:>7} {:>7}",
            "clients",
            "usher op/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "TLS op/s",
            "p50 µs",
            "vs pl.",
            "echo op/s",
            "p50 µs",
            "redis op/s",
            "p50 µs",
            "+fsync op/s",
            "p50 µs",
            "vs echo",
            "vs redis",
            "+fsync"
        );
    }
    for clients in levels {
        let ops = ops_for(clients);
        let addr = server.addr;
        let usher = run_clients(clients, ops, limit, move |_, n, d| {
            usher::usher_worker(addr, n, d)
        })
        .await?;
        // The same clients over TLS, as shipped, against the same server.
        let tls = tls.clone();
        let usher_tls = run_clients(clients, ops, limit, move |_, n, d| {
            usher::usher_worker_over(addr, tls.clone(), n, d)
        })
        .await?;
        let tls_vs_plaintext = ratio(usher_tls.ops_per_s, Some(usher.ops_per_s));
        let echo_m = run_clients(clients, ops, limit, move |_, n, d| {
            usher::echo_worker(echo, n, d)
        })
        .await?;
        let redis_m = run_redis(redis.as_ref(), clients, ops, limit).await?;
        let redis_fsync_m = run_redis(redis_fsync.as_ref(), clients, ops, limit).await?;
        let vs_echo = ratio(usher.ops_per_s, Some(echo_m.ops_per_s));
        let vs_redis = ratio(usher.ops_per_s, redis_m.as_ref().map(|r| r.ops_per_s));
        let vs_redis_fsync = ratio(usher.ops_per_s, redis_fsync_m.as_ref().map(|r| r.ops_per_s));
        if args.json {
            println!(
                "{}",
                json!({
                    "scenario": "checkout",
                    "clients": clients,
                    "ops": usher.ops,
                    "ops_per_s": usher.ops_per_s.round(),
                    "p50_us": usher.p50_us,
                    "p99_us": usher.p99_us,
                    "p999_us": usher.p999_us,
                    "tls_ops_per_s": usher_tls.ops_per_s.round(),
                    "tls_p50_us": usher_tls.p50_us,
                    "tls_p99_us": usher_tls.p99_us,
                    "ratio_tls_vs_plaintext": tls_vs_plaintext,
                    "echo_ops_per_s": echo_m.ops_per_s.round(),
                    "echo_p50_us": echo_m.p50_us,
                    "ratio_vs_echo": vs_echo,
                    "redis_ops_per_s": redis_m.as_ref().map(|r| r.ops_per_s.round()),
                    "redis_p50_us": redis_m.as_ref().map(|r| r.p50_us),
                    "ratio_vs_redis": vs_redis,
                    "redis_fsync_ops_per_s": redis_fsync_m.as_ref().map(|r| r.ops_per_s.round()),
                    "redis_fsync_p50_us": redis_fsync_m.as_ref().map(|r| r.p50_us),
                    "ratio_vs_redis_fsync": vs_redis_fsync,
                    "fsync_p50_us": fsync.p50_us,
                    "fsync_p99_us": fsync.p99_us,
                })
            );
        } else {
            let opt =
                |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
            println!(
                "{:>7} | {:>10.0} {:>8.0} {:>8.0} {:>8.0} | {:>10.0} {:>8.0} {:>6} | {:>10.0} {:>8.0} | {:>10} {:>8} | {:>10} {:>8} | {:>7} {:>7} {:>7}",
                clients,
                usher.ops_per_s,
                usher.p50_us,
                usher.p99_us,
                usher.p999_us,
                usher_tls.ops_per_s,
                usher_tls.p50_us,
                opt(tls_vs_plaintext, 2),
                echo_m.ops_per_s,
                echo_m.p50_us,
                opt(redis_m.as_ref().map(|r| r.ops_per_s), 0),
                opt(redis_m.as_ref().map(|r| r.p50_us), 0),
                opt(redis_fsync_m.as_ref().map(|r| r.ops_per_s), 0),
                opt(redis_fsync_m.as_ref().map(|r| r.p50_us), 0),
                opt(vs_echo, 2),
                opt(vs_redis, 2),
                opt(vs_redis_fsync, 2),
            );
        }
    }
    Ok(())
}
