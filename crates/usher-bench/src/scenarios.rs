//! The flood, status-load, sessions and recovery scenarios: each runs its measurement
//! and prints its table (or JSON lines). The checkout scenario, with its baselines, is in
//! `main.rs`.

use std::time::Duration;

use serde_json::json;

use crate::{Args, flood, ratio, recovery, sessions, status_load, usher};

/// The flood scenario: legitimate clients' latency, quiet and under a junk flood.
pub(crate) async fn flood_scenario(args: &Args) -> anyhow::Result<()> {
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
/// poll the full status, as a ratio, over alternating rounds (the median round's is the
/// figure).
pub(crate) async fn status_load_scenario(args: &Args) -> anyhow::Result<()> {
    let (holders, ops, rounds) = match args.quick {
        true => (args.holders.unwrap_or(2_000), 200, 1),
        false => (
            args.holders.unwrap_or(100_000),
            args.ops.unwrap_or(20_000),
            args.rounds,
        ),
    };
    let limit = Duration::from_secs(if args.quick { 5 } else { args.seconds });
    let pause = Duration::from_millis(args.poll_interval_ms);
    let r = status_load::run(holders, (16, pause), (ops, rounds), limit).await?;
    let median = r.median();
    let ratio_of = |round: &status_load::Round| ratio(round.ratio(), Some(1.0));
    if args.json {
        let ratios: Vec<Option<f64>> = r.rounds.iter().map(ratio_of).collect();
        println!(
            "{}",
            json!({
                "scenario": "status-load",
                "holders": r.holders,
                "clients": r.clients,
                "pollers": r.pollers,
                "poll_interval_ms": args.poll_interval_ms,
                "rounds": r.rounds.len(),
                "ratios": ratios,
                "quiet_ops_per_s": median.quiet.ops_per_s.round(),
                "quiet_p50_us": median.quiet.p50_us,
                "ops_per_s": median.polled.ops_per_s.round(),
                "p50_us": median.polled.p50_us,
                "p99_us": median.polled.p99_us,
                "status_walks_per_s":
                    (median.walks as f64 / median.polled_seconds() * 10.0).round() / 10.0,
                "status_pages_per_s": (median.pages as f64 / median.polled_seconds()).round(),
                "ratio_vs_quiet": ratio_of(median),
            })
        );
    } else {
        println!(
            "status-load: checkout+checkin at {} clients with {} holders, quiet and while {} \
             clients read the full status in a loop ({} ms apart), {} rounds",
            r.clients,
            r.holders,
            r.pollers,
            args.poll_interval_ms,
            r.rounds.len()
        );
        println!();
        println!(
            "{:>6} | {:>10} {:>8} | {:>11} {:>8} {:>8} | {:>8} {:>8} | {:>7}",
            "round",
            "quiet op/s",
            "p50 µs",
            "polled op/s",
            "p50 µs",
            "p99 µs",
            "walks/s",
            "pages/s",
            "ratio"
        );
        let rows = r
            .rounds
            .iter()
            .enumerate()
            .map(|(i, round)| ((i + 1).to_string(), round));
        for (name, round) in rows.chain([("median".to_string(), median)]) {
            println!(
                "{:>6} | {:>10.0} {:>8.0} | {:>11.0} {:>8.0} {:>8.0} | {:>8.1} {:>8.0} | {:>7.2}",
                name,
                round.quiet.ops_per_s,
                round.quiet.p50_us,
                round.polled.ops_per_s,
                round.polled.p50_us,
                round.polled.p99_us,
                round.walks as f64 / round.polled_seconds(),
                round.pages as f64 / round.polled_seconds(),
                ratio_of(round).unwrap_or(0.0),
            );
        }
    }
    Ok(())
}

/// The sessions scenario at each size: one table, or one JSON object per size.
pub(crate) async fn sessions_scenario(args: &Args) -> anyhow::Result<()> {
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
pub(crate) async fn recovery_scenario(args: &Args) -> anyhow::Result<()> {
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
