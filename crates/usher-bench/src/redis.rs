//! What a user might build instead: a Redis counting semaphore, the well-known sorted-set
//! pattern with TTL eviction in one Lua script, spoken over RESP by hand.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Acquire: evict holders older than the TTL, then take a slot if fewer than the limit
/// are held. `KEYS[1]` = semaphore; `ARGV` = now_ms, ttl_ms, limit, holder id.
const ACQUIRE: &str = "\
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  return 1
end
return 0";

/// A `redis-server` child on loopback: either without persistence (how a semaphore is
/// usually run, which favours Redis: usher's figures include an fsync per commit), or
/// with its append-only file synced before every reply (`appendfsync always`), as durable
/// as usher.
pub struct RedisServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl RedisServer {
    /// Starts `redis-server` if it is installed; `Ok(None)` if it is not. With `durable`,
    /// it keeps an append-only file in that directory and syncs it before it answers.
    pub async fn start(durable: Option<&Path>) -> anyhow::Result<Option<RedisServer>> {
        let port = crate::usher::free_port()?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--loglevel", "warning"]);
        match durable {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                command
                    .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir);
            }
            None => {
                command.args(["--appendonly", "no"]);
            }
        }
        let spawned = command.stdout(Stdio::null()).spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("starting redis-server"),
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let server = RedisServer { child, addr };
        crate::usher::wait_listening(addr).await?;
        Ok(Some(server))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP reply, as far as these commands need.
#[derive(Debug)]
enum Reply {
    Status,
    Integer(i64),
    Bulk(Vec<u8>),
}

struct Resp {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Resp {
    async fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let line = line.trim_end();
        match line.as_bytes().first() {
            Some(b'+') => Ok(Reply::Status),
            Some(b':') => Ok(Reply::Integer(line[1..].parse()?)),
            Some(b'$') => {
                let len: usize = line[1..].parse()?;
                let mut data = vec![0; len + 2];
                self.reader.read_exact(&mut data).await?;
                data.truncate(len);
                Ok(Reply::Bulk(data))
            }
            Some(b'-') => bail!("redis error: {line}"),
            _ => bail!("unexpected redis reply {line:?}"),
        }
    }
}

/// One client of the semaphore: `ops` acquire+release pairs (or until `deadline`).
pub async fn redis_worker(
    addr: SocketAddr,
    worker: usize,
    limit: usize,
    ops: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<u64>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (rd, writer) = stream.into_split();
    let mut resp = Resp {
        reader: BufReader::new(rd),
        writer,
    };
    let Reply::Bulk(sha) = resp.call(&[b"SCRIPT", b"LOAD", ACQUIRE.as_bytes()]).await? else {
        bail!("SCRIPT LOAD did not return a digest");
    };
    let (limit, ttl) = (limit.to_string(), "120000");
    let mut latencies = Vec::with_capacity(ops);
    for i in 0..ops {
        if Instant::now() >= deadline {
            break;
        }
        let holder = format!("w{worker}-{i}");
        let start = Instant::now();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)?
            .as_millis()
            .to_string();
        let args: [&[u8]; 8] = [
            b"EVALSHA",
            &sha,
            b"1",
            b"usher-bench-sem",
            now.as_bytes(),
            ttl.as_bytes(),
            limit.as_bytes(),
            holder.as_bytes(),
        ];
        match resp.call(&args).await? {
            Reply::Integer(1) => {}
            other => bail!("semaphore not acquired: {other:?}"),
        }
        resp.call(&[b"ZREM", b"usher-bench-sem", holder.as_bytes()])
            .await?;
        latencies.push(start.elapsed().as_micros() as u64);
    }
    let _ = resp
        .call(&[b"PING"])
        .await
        .map(|r| matches!(r, Reply::Status));
    Ok(latencies)
}
