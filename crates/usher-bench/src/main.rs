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
mod sessions;
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
    /// Pause of each status-load poller between two full status reads (0: back to back).
    #[arg(long, default_value_t = 0)]
    poll_interval_ms: u64,
    /// Internal: be the echo floor's server process on this address.
    #[arg(long, hide = true)]
    serve_echo: Option<std::net::SocketAddr>,
    /// Internal: be the flood scenario's junk generator against this address.
    #[arg(long, hide = true)]
    flood_generator: Option<std::net::SocketAddr>,
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
            Scenario::Recovery => recovery_scenario(&args).await?,
            Scenario::Sessions => sessions_scenario(&args).await?,
            Scenario::Flood => flood_scenario(&args).await?,
            Scenario::StatusLoad => status_load_scenario(&args).await?,
        }
    }
    Ok(())
}

/// The flood scenario: legitimate clients' latency, quiet and under a junk flood.
async fn flood_scenario(args: &Args) -> anyhow::Result<()> {
    let (peers, ops) = if args.quick {
        (40, 100)
    } else {
        (args.flood_peers, args.ops.unwrap_or(2_000))
    };
    let limit = Duration::from_secs(if args.quick { 5 } else { args.seconds });
    let transport = if args.tls {
        usher::Transport::tls()?
    } else {
        usher::Transport::Plaintext
    };
    let mut rows = Vec::new();
    for clients in [1, 16] {
        let run = (ops, limit);
        let transport = transport.clone();
        rows.push(flood::run(peers, clients, run, args.flood_limits_off, transport).await?);
    }
    if !args.json {
        println!("flood: legitimate checkout+checkin latency, quiet and while {peers} junk peers");
        println!("(idle, slowloris, 4 GiB frames, garbage) reconnect from 127.0.N.M");
        match rows.first().and_then(|r| r.pinned) {
            Some(core) => println!("the junk generator runs in its own process on core {core}"),
            None => println!("the junk generator runs in its own process, unpinned (no taskset)"),
        }
        if args.flood_limits_off {
            println!("usherd runs without max_handshakes and max_connection_rate_per_ip");
        }
        if args.tls {
            println!("the legitimate clients speak TLS 1.3");
        }
        println!();
        println!(
            "{:>7} | {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>8} {:>7} {:>7} {:>7} | {:>9}",
            "clients",
            "quiet op/s",
            "p50 µs",
            "p99 µs",
            "flood op/s",
            "p50 µs",
            "p99 µs",
            "junk",
            "op/s ×",
            "p50 ×",
            "p99 ×",
            "µs/junk"
        );
    }
    for r in rows {
        let p50 = ratio(r.flooded.p50_us, Some(r.quiet.p50_us));
        let p99 = ratio(r.flooded.p99_us, Some(r.quiet.p99_us));
        let ops_ratio = ratio(r.flooded.ops_per_s, Some(r.quiet.ops_per_s));
        let cpu = (r.cpu_us_per_junk() * 10.0).round() / 10.0;
        if args.json {
            println!(
                "{}",
                json!({
                    "scenario": "flood",
                    "tls": args.tls,
                    "clients": r.clients,
                    "junk_peers": r.peers,
                    "junk_connections": r.junk_connections,
                    "ops_per_s": r.flooded.ops_per_s.round(),
                    "p50_us": r.flooded.p50_us,
                    "p99_us": r.flooded.p99_us,
                    "p999_us": r.flooded.p999_us,
                    "quiet_ops_per_s": r.quiet.ops_per_s.round(),
                    "quiet_p50_us": r.quiet.p50_us,
                    "quiet_p99_us": r.quiet.p99_us,
                    "ops_ratio_vs_quiet": ops_ratio,
                    "p50_ratio_vs_quiet": p50,
                    "p99_ratio_vs_quiet": p99,
                    "usherd_cpu_us_per_junk_connection": cpu,
                    "generator_core": r.pinned,
                    "limits_off": args.flood_limits_off,
                })
            );
        } else {
            println!(
                "{:>7} | {:>10.0} {:>8.0} {:>8.0} | {:>10.0} {:>8.0} {:>8.0} | {:>8} {:>7.2} {:>7.2} {:>7.2} | {:>9.1}",
                r.clients,
                r.quiet.ops_per_s,
                r.quiet.p50_us,
                r.quiet.p99_us,
                r.flooded.ops_per_s,
                r.flooded.p50_us,
                r.flooded.p99_us,
                r.junk_connections,
                ops_ratio.unwrap_or(0.0),
                p50.unwrap_or(0.0),
                p99.unwrap_or(0.0),
                cpu,
            );
        }
    }
    Ok(())
}

/// The status-load scenario: checkout+checkin at 16 clients, quiet and while 4 clients
/// poll the full status, as a ratio.
async fn status_load_scenario(args: &Args) -> anyhow::Result<()> {
    let (holders, ops) = match args.quick {
        true => (args.holders.unwrap_or(2_000), 200),
        false => (args.holders.unwrap_or(100_000), args.ops.unwrap_or(20_000)),
    };
    let limit = Duration::from_secs(if args.quick { 5 } else { args.seconds });
    let pause = Duration::from_millis(args.poll_interval_ms);
    let r = status_load::run(holders, (16, 4, pause), ops, limit).await?;
    let ratio_ops = ratio(r.polled.ops_per_s, Some(r.quiet.ops_per_s));
    let seconds = (r.polled.ops as f64 / r.polled.ops_per_s.max(1e-9)).max(1e-9);
    if args.json {
        println!(
            "{}",
            json!({
                "scenario": "status-load",
                "holders": r.holders,
                "clients": r.clients,
                "pollers": r.pollers,
                "poll_interval_ms": args.poll_interval_ms,
                "quiet_ops_per_s": r.quiet.ops_per_s.round(),
                "quiet_p50_us": r.quiet.p50_us,
                "ops_per_s": r.polled.ops_per_s.round(),
                "p50_us": r.polled.p50_us,
                "p99_us": r.polled.p99_us,
                "status_walks_per_s": (r.walks as f64 / seconds * 10.0).round() / 10.0,
                "status_pages_per_s": (r.pages as f64 / seconds).round(),
                "ratio_vs_quiet": ratio_ops,
            })
        );
    } else {
        println!(
            "status-load: checkout+checkin at {} clients with {} holders, quiet and while {} \
             clients read the full status in a loop ({} ms apart)",
            r.clients, r.holders, r.pollers, args.poll_interval_ms
        );
        println!();
        println!(
            "{:>10} {:>8} | {:>10} {:>8} {:>8} | {:>8} {:>8} | {:>7}",
            "quiet op/s",
            "p50 µs",
            "polled op/s",
            "p50 µs",
            "p99 µs",
            "walks/s",
            "pages/s",
            "ratio"
        );
        println!(
            "{:>10.0} {:>8.0} | {:>11.0} {:>8.0} {:>8.0} | {:>8.1} {:>8.0} | {:>7.2}",
            r.quiet.ops_per_s,
            r.quiet.p50_us,
            r.polled.ops_per_s,
            r.polled.p50_us,
            r.polled.p99_us,
            r.walks as f64 / seconds,
            r.pages as f64 / seconds,
            ratio_ops.unwrap_or(0.0),
        );
    }
    Ok(())
}

/// The sessions scenario at each size: one table, or one JSON object per size.
async fn sessions_scenario(args: &Args) -> anyhow::Result<()> {
    let sizes = match (&args.sessions[..], args.quick) {
        ([], true) => vec![200],
        ([], false) => vec![10_000, 100_000, 1_000_000],
        (given, _) => given.to_vec(),
    };
    // Quick mode keeps them alive at a 1 s interval so it takes seconds; a full run uses
    // the server's default (30 s).
    let interval = args.quick.then(|| Duration::from_secs(1));
    let open_limit = Duration::from_secs(if args.quick { 30 } else { args.open_seconds });
    if !args.json {
        println!("sessions: S idle sessions, one seat each, detached from TCP and kept alive");
        println!("by one UDP keepalive per heartbeat interval; server memory and CPU");
        println!();
        println!(
            "{:>9} | {:>7} {:>9} | {:>8} {:>10} {:>10} | {:>10} {:>6} {:>9} {:>8}",
            "sessions",
            "open s",
            "opened/s",
            "interval",
            "RSS MiB",
            "B/session",
            "keepalive/s",
            "acked",
            "CPU %",
            "µs/ka"
        );
    }
    for target in sizes {
        let r = sessions::run(target, interval, open_limit).await?;
        let opened_per_s = r.sessions as f64 / r.open.as_secs_f64().max(1e-9);
        let rate = r.keepalives as f64 / r.window.as_secs_f64().max(1e-9);
        let acked = r.acks as f64 / r.keepalives.max(1) as f64;
        if r.held != r.sessions && !args.json {
            println!(
                "(only {} of the {} sessions still held their seats at the end: the others lapsed)",
                r.held, r.sessions
            );
        }
        if r.sessions < r.target && !args.json {
            println!(
                "(opening stopped at its time limit: {} of {} sessions)",
                r.sessions, r.target
            );
        }
        if args.json {
            println!(
                "{}",
                json!({
                    "scenario": "sessions",
                    "sessions": r.sessions,
                    "sessions_asked": r.target,
                    "open_ms": r.open.as_millis() as u64,
                    "heartbeat_interval_ms": r.interval.as_millis() as u64,
                    "rss_bytes_before": r.rss_before,
                    "rss_bytes_held": r.rss_held,
                    "rss_bytes_per_session": r.rss_per_session().round(),
                    "keepalives_per_s": rate.round(),
                    "acked_ratio": (acked * 1000.0).round() / 1000.0,
                    "keepalive_cpu_share": (r.cpu_share() * 1000.0).round() / 1000.0,
                    "cpu_us_per_keepalive": (r.cpu_us_per_keepalive() * 10.0).round() / 10.0,
                    "seats_still_held": r.held,
                })
            );
        } else {
            println!(
                "{:>9} | {:>7.1} {:>9.0} | {:>7.0}s {:>10.1} {:>10.0} | {:>10.0} {:>5.1}% {:>8.1}% {:>8.1}",
                r.sessions,
                r.open.as_secs_f64(),
                opened_per_s,
                r.interval.as_secs_f64(),
                r.rss_held as f64 / (1024.0 * 1024.0),
                r.rss_per_session(),
                rate,
                acked * 100.0,
                r.cpu_share() * 100.0,
                r.cpu_us_per_keepalive(),
            );
        }
    }
    Ok(())
}

/// The recovery scenario at each size: one table, or one JSON object per size.
async fn recovery_scenario(args: &Args) -> anyhow::Result<()> {
    let sizes = match (&args.leases[..], args.quick) {
        ([], true) => vec![1_000],
        ([], false) => vec![10_000, 100_000, 1_000_000],
        (given, _) => given.to_vec(),
    };
    let load_limit = Duration::from_secs(if args.quick { 30 } else { args.load_seconds });
    if !args.json {
        println!("recovery: L leases held, usherd killed with SIGKILL and started again;");
        println!("times from spawning the new process (recovery: first new checkout granted)");
        println!();
        println!(
            "{:>9} | {:>8} {:>8} {:>8} {:>9} | {:>9} {:>10} {:>11}",
            "leases",
            "sessions",
            "load s",
            "load/s",
            "store MiB",
            "listen ms",
            "welcome ms",
            "recovery ms"
        );
    }
    let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
    for target in sizes {
        let r = recovery::run(target, load_limit).await?;
        let load_per_s = r.leases as f64 / r.load.as_secs_f64().max(1e-9);
        if r.leases < r.target && !args.json {
            println!(
                "(loading stopped at its time limit: {} of {} leases)",
                r.leases, r.target
            );
        }
        if args.json {
            println!(
                "{}",
                json!({
                    "scenario": "recovery",
                    "leases": r.leases,
                    "leases_asked": r.target,
                    "sessions": r.sessions,
                    "load_ms": ms(r.load),
                    "load_per_s": load_per_s.round(),
                    "store_bytes": r.store_bytes,
                    "listen_ms": ms(r.listen),
                    "welcome_ms": ms(r.welcome),
                    "recovery_ms": ms(r.recovery),
                })
            );
        } else {
            println!(
                "{:>9} | {:>8} {:>8.1} {:>8.0} {:>9.1} | {:>9.1} {:>10.1} {:>11.1}",
                r.leases,
                r.sessions,
                r.load.as_secs_f64(),
                load_per_s,
                r.store_bytes as f64 / (1024.0 * 1024.0),
                ms(r.listen),
                ms(r.welcome),
                ms(r.recovery),
            );
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
