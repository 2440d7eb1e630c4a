//! `usher-bench`: measures usherd's checkout+checkin throughput and latency beside the
//! baselines that give the figures meaning, all in one run on one machine:
//!
//! - the **echo floor**: a minimal tokio server with the same framing, answering every
//!   frame at once, driven by the same client pattern (the best any server could do);
//! - the **durable floor**: the latency of a 4 KiB write plus `fdatasync` on the disk
//!   that holds usherd's data directory (what one durable commit costs);
//! - a **Redis counting semaphore** (sorted set plus Lua, TTL eviction), what a user might
//!   build instead, if `redis-server` is installed.
//!
//! Figures are reported beside their baselines as ratios, because machines are noisy and
//! only ratios measured in the same run compare. Nothing here asserts a speed.

mod redis;
mod stats;
mod usher;

use std::future::Future;
use std::time::{Duration, Instant};

use clap::Parser;
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

fn ratio(a: f64, b: Option<f64>) -> Option<f64> {
    b.filter(|b| *b > 0.0)
        .map(|b| (a / b * 100.0).round() / 100.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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

    let server = usher::Usherd::start().await?;
    let echo = usher::start_echo().await?;
    let redis = redis::RedisServer::start().await?;
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
            "{:>7} | {:>10} {:>8} {:>8} {:>8} | {:>10} {:>8} | {:>10} {:>8} | {:>9} {:>9}",
            "clients",
            "usher op/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "echo op/s",
            "p50 µs",
            "redis op/s",
            "p50 µs",
            "vs echo",
            "vs redis"
        );
    }
    for clients in levels {
        let ops = ops_for(clients);
        let addr = server.addr;
        let usher = run_clients(clients, ops, limit, move |_, n, d| {
            usher::usher_worker(addr, n, d)
        })
        .await?;
        let echo_m = run_clients(clients, ops, limit, move |_, n, d| {
            usher::echo_worker(echo, n, d)
        })
        .await?;
        let redis_m = match &redis {
            Some(r) => {
                let addr = r.addr;
                Some(
                    run_clients(clients, ops, limit, move |i, n, d| {
                        redis::redis_worker(addr, i, clients + 1, n, d)
                    })
                    .await?,
                )
            }
            None => None,
        };
        let vs_echo = ratio(usher.ops_per_s, Some(echo_m.ops_per_s));
        let vs_redis = ratio(usher.ops_per_s, redis_m.as_ref().map(|r| r.ops_per_s));
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
                    "echo_ops_per_s": echo_m.ops_per_s.round(),
                    "echo_p50_us": echo_m.p50_us,
                    "ratio_vs_echo": vs_echo,
                    "redis_ops_per_s": redis_m.as_ref().map(|r| r.ops_per_s.round()),
                    "redis_p50_us": redis_m.as_ref().map(|r| r.p50_us),
                    "ratio_vs_redis": vs_redis,
                    "fsync_p50_us": fsync.p50_us,
                    "fsync_p99_us": fsync.p99_us,
                    "rss_bytes_per_session": null,
                    "recovery_ms": null,
                })
            );
        } else {
            let opt =
                |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
            println!(
                "{:>7} | {:>10.0} {:>8.0} {:>8.0} {:>8.0} | {:>10.0} {:>8.0} | {:>10} {:>8} | {:>9} {:>9}",
                clients,
                usher.ops_per_s,
                usher.p50_us,
                usher.p99_us,
                usher.p999_us,
                echo_m.ops_per_s,
                echo_m.p50_us,
                opt(redis_m.as_ref().map(|r| r.ops_per_s), 0),
                opt(redis_m.as_ref().map(|r| r.p50_us), 0),
                opt(vs_echo, 2),
                opt(vs_redis, 2),
            );
        }
    }
    Ok(())
}
