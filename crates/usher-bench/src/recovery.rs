//! The `recovery` scenario: hold L leases, `kill -9` usherd, start it again on the same
//! data directory and port, and time how long until a new checkout is granted.
//!
//! The clock starts right before the new process is spawned and stops when the first
//! `Granted` arrives, so the figure covers everything a client waits for after a crash:
//! exec, opening the store (SQLite's WAL recovery included), loading the sessions and
//! leases, rebuilding the ledger, binding the port, the handshake and one durable commit.
//! Afterwards the harness checks that the restarted server really holds the L leases.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpStream;
use usher_proto::{DenyReason, Request, response};

use crate::usher::{Conn, Usherd, checkout_seats};

/// Checkouts each loading connection keeps in flight (the server reads up to 64 ahead).
const WINDOW: u64 = 32;

/// Most seats one checkout may ask for (the ledger's `MAX_SEATS_PER_REQUEST`).
const MAX_SEATS_PER_REQUEST: u32 = 1_000_000;

/// Longest the harness waits for any one answer before giving up on the run.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the restarted server may take to grant the first checkout.
const SERVE_LIMIT: Duration = Duration::from_secs(120);

/// Longest pause between two attempts to connect to the restarting server.
const MAX_BACKOFF: Duration = Duration::from_millis(2);

/// What one recovery run measured.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Leases asked for.
    pub target: usize,
    /// Leases held when the server was killed (fewer than `target` only if loading hit
    /// its time limit).
    pub leases: usize,
    /// Sessions holding them.
    pub sessions: usize,
    /// Time to take the leases.
    pub load: Duration,
    /// Bytes of the data directory's files when the server was killed.
    pub store_bytes: u64,
    /// From spawning the new process until its port accepted a connection.
    pub listen: Duration,
    /// From spawning until the new session was welcome.
    pub welcome: Duration,
    /// From spawning until the first new checkout was granted.
    pub recovery: Duration,
}

/// How many sessions share `leases`: several, so loading uses both cores, and few
/// enough that each holds many leases, as the scenario is about leases, not sessions.
fn sessions_for(leases: usize) -> usize {
    (leases / 1_000).clamp(4, 64).min(leases.max(1))
}

/// Runs the scenario once with `target` leases; loading stops at `load_limit`.
pub async fn run(target: usize, load_limit: Duration) -> anyhow::Result<Recovery> {
    // One seat more than the leases, for the checkout that is timed.
    let seats = u32::try_from(target + 1).context("too many leases for one license")?;
    let mut server = Usherd::start(seats).await?;
    let addr = server.addr;

    let sessions = sessions_for(target);
    let start = Instant::now();
    let deadline = start + load_limit;
    let tasks: Vec<_> = (0..sessions)
        .map(|i| {
            let share = target / sessions + usize::from(i < target % sessions);
            tokio::spawn(hold(addr, share as u64, deadline))
        })
        .collect();
    // Keep every connection open until the kill: a session that closed without a
    // goodbye would have its seats released after the reconnect grace.
    let mut holders = Vec::with_capacity(sessions);
    let mut leases = 0;
    for t in tasks {
        let (conn, held) = t.await??;
        holders.push(conn);
        leases += held as usize;
    }
    let load = start.elapsed();
    let store_bytes = dir_bytes(&server.data_dir)?;

    server.kill()?;
    drop(holders);

    let t0 = Instant::now();
    server.spawn()?;
    let stream = connect_with_backoff(addr, t0 + SERVE_LIMIT).await?;
    let listen = t0.elapsed();
    let mut conn = Conn::from_stream(stream)?;
    answer_in_time(conn.hello()).await?;
    let welcome = t0.elapsed();
    match answer_in_time(conn.call(1, checkout_seats(1, 1)))
        .await?
        .kind
    {
        Some(response::Kind::Granted(_)) => {}
        other => bail!("the first checkout after the restart was not granted: {other:?}"),
    }
    let recovery = t0.elapsed();

    // Honesty check: every seat but those leases is free, and no more. Asking for one
    // seat more than are free must be refused, counting the leases plus the one just
    // granted as in use.
    let in_use = leases as u32 + 1;
    let ask = (seats - leases as u32).min(MAX_SEATS_PER_REQUEST);
    match answer_in_time(conn.call(2, checkout_seats(ask, 2)))
        .await?
        .kind
    {
        Some(response::Kind::Denied(d))
            if d.reason == DenyReason::AllInUse as i32 && d.in_use == in_use => {}
        other => bail!(
            "the restarted server does not hold the {leases} leases taken before the kill \
             (asked for {ask} seats, expected a refusal with {in_use} in use): {other:?}"
        ),
    }
    Ok(Recovery {
        target,
        leases,
        sessions,
        load,
        store_bytes,
        listen,
        welcome,
        recovery,
    })
}

/// Opens a session and takes up to `count` leases (one seat each) until `deadline`,
/// keeping [`WINDOW`] checkouts in flight. Returns the open connection and the leases
/// granted.
///
/// The checkouts carry no client reference: with one, the ledger compares it with every
/// lease the session holds (a retry must get its original lease back), which is work
/// proportional to the session's leases and would make loading the big sizes quadratic.
async fn hold(addr: SocketAddr, count: u64, deadline: Instant) -> anyhow::Result<(Conn, u64)> {
    let mut conn = Conn::open(addr).await?;
    answer_in_time(conn.hello()).await?;
    let (mut sent, mut answered) = (0u64, 0u64);
    loop {
        let in_flight = sent - answered;
        if in_flight <= WINDOW / 2 && sent < count && Instant::now() < deadline {
            let n = (WINDOW - in_flight).min(count - sent);
            let batch: Vec<Request> = (sent + 1..=sent + n)
                .map(|id| Request {
                    id,
                    kind: Some(checkout_seats(1, 0)),
                })
                .collect();
            conn.send(&batch).await?;
            sent += n;
            continue;
        }
        if in_flight == 0 {
            break;
        }
        let reply = answer_in_time(conn.recv()).await?;
        answered += 1;
        match reply.kind {
            Some(response::Kind::Granted(_)) if reply.id == answered => {}
            other => bail!("checkout {answered} while loading: {other:?}"),
        }
    }
    Ok((conn, answered))
}

/// Connects to `addr` as soon as something listens there, retrying with a short backoff.
async fn connect_with_backoff(addr: SocketAddr, deadline: Instant) -> anyhow::Result<TcpStream> {
    let mut pause = Duration::from_micros(250);
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).context(format!("nothing listens on {addr} after the restart"));
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// Waits for an answer, at most [`ANSWER_TIMEOUT`].
async fn answer_in_time<T>(answer: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .context("no answer from usherd within a minute")?
}

/// Total size of the files in `dir` (the store and its WAL).
fn dir_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_share_the_leases() {
        assert_eq!(sessions_for(1), 1);
        assert_eq!(sessions_for(1_000), 4);
        assert_eq!(sessions_for(10_000), 10);
        assert_eq!(sessions_for(1_000_000), 64);
    }
}
