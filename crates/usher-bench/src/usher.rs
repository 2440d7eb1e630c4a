//! The system under test: a real `usherd`, and the client pattern run against it and
//! against the echo floor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use usher_proto::{
    Checkin, Checkout, FrameReader, Goodbye, Hello, Request, Response, request, response,
};

/// A `usherd` child process serving a large bench license from a fresh data directory.
///
/// It can be killed (`SIGKILL`) and started again on the same data directory, license and
/// port, as the `recovery` scenario does.
pub struct Usherd {
    child: Option<Child>,
    /// The command line: the same for every start, so a restart serves the same store.
    command: Command,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory (on the disk whose fsync is measured).
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

/// Seats in the bench license for the checkout scenario: more than it holds at once.
pub const SEATS: u32 = 1_000_000;

impl Usherd {
    /// Starts `usherd` (found beside this binary) with a license for `seats` seats of the
    /// feature `seat`, and waits until it accepts connections.
    pub async fn start(seats: u32) -> anyhow::Result<Usherd> {
        Usherd::start_with(seats, &[]).await
    }

    /// Starts `usherd` like [`Usherd::start`], with `extra` arguments on its command line.
    pub async fn start_with(seats: u32, extra: &[String]) -> anyhow::Result<Usherd> {
        let exe = std::env::current_exe()?.with_file_name("usherd");
        if !exe.is_file() {
            bail!(
                "{} not found: build it first with `cargo build --release -p usher-server -p usher-bench --bins`",
                exe.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("usher-bench").tempdir()?;
        let (key, public) = usher_license::keygen("bench", &dir.path().join("keys"))?;
        let key = usher_license::VendorSigningKey::read_from(&key)?;
        let text = format!("FEATURE seat bench 1 permanent {seats} HOSTID=ANY\n");
        let license = dir.path().join("bench.lic");
        std::fs::write(
            &license,
            usher_license::sign_text("bench.lic", &text, &key)?.text,
        )?;
        let port = free_port()?;
        let data_dir = dir.path().join("data");
        let mut command = Command::new(&exe);
        command
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log", "warn"])
            .args(["--admin-listen", "off"])
            // The harness measures the server's capacity, not the per-client rate limit.
            .args(["--max-request-rate", "0"])
            // The same framing as the echo floor, without TLS on either side, so the
            // ratio measures the server's work. TLS is accepted on the same port either
            // way, and the checkout scenario measures it beside (`Transport::Tls`).
            .arg("--insecure-plaintext")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--license")
            .arg(&license)
            .arg("--vendor-key")
            .arg(&public)
            .args(extra)
            .stdout(Stdio::null());
        let mut server = Usherd {
            child: None,
            command,
            addr: format!("127.0.0.1:{port}").parse()?,
            data_dir,
            _dir: dir,
        };
        server.spawn()?;
        wait_listening(server.addr).await?;
        Ok(server)
    }

    /// Starts the process again (after [`Usherd::kill`]) and returns at once, without
    /// waiting for it to listen: the caller times that.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("usherd is already running");
        }
        let child = self
            .command
            .spawn()
            .with_context(|| format!("starting {:?}", self.command.get_program()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with `SIGKILL` (no shutdown, no goodbye to anyone) and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing usherd")?;
            child.wait().context("reaping usherd")?;
        }
        Ok(())
    }
}

impl Drop for Usherd {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls until `addr` accepts a connection (at most 30 s).
pub async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// How a bench client reaches usherd.
#[derive(Clone)]
pub enum Transport {
    /// Frames straight on TCP, as the echo floor speaks (`usherd --insecure-plaintext`).
    Plaintext,
    /// TLS 1.3 as shipped, with the client library's connector (any server key accepted:
    /// the bench measures speed, not identity).
    Tls(usher_client::tls::TlsConnector),
}

impl Transport {
    /// TLS as the client library speaks it.
    pub fn tls() -> anyhow::Result<Transport> {
        Ok(Transport::Tls(usher_client::tls::connector(&[])?))
    }
}

type Reader = FrameReader<Box<dyn AsyncRead + Unpin + Send>>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// One connection to usherd speaking the framed protocol, in plaintext or TLS.
pub struct Conn {
    reader: Reader,
    writer: Writer,
}

impl Conn {
    /// Connects in plaintext, without a handshake.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        Conn::from_stream(stream)
    }

    /// Connects over `transport`, without a usher handshake.
    pub async fn open_over(addr: SocketAddr, transport: &Transport) -> anyhow::Result<Conn> {
        match transport {
            Transport::Plaintext => Conn::open(addr).await,
            Transport::Tls(connector) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (tls, _key) =
                    usher_client::tls::connect(connector, &addr.ip().to_string(), stream).await?;
                let (rd, wr) = tokio::io::split(tls);
                Ok(Conn {
                    reader: FrameReader::new(Box::new(rd)),
                    writer: Box::new(wr),
                })
            }
        }
    }

    /// Wraps a connected plaintext stream.
    pub fn from_stream(stream: TcpStream) -> anyhow::Result<Conn> {
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        Ok(Conn {
            reader: FrameReader::new(Box::new(rd)),
            writer: Box::new(wr),
        })
    }

    /// Opens a new session (request id 0) and checks that it is welcome.
    pub async fn hello(&mut self) -> anyhow::Result<()> {
        let hello = Hello {
            magic: usher_proto::MAGIC.into(),
            protocol_version: usher_proto::PROTOCOL_VERSION,
            user: "bench".into(),
            program: "usher-bench".into(),
            ..Hello::default()
        };
        match self.call(0, request::Kind::Hello(hello)).await?.kind {
            Some(response::Kind::Welcome(_)) => Ok(()),
            other => bail!("hello not welcome: {other:?}"),
        }
    }

    /// Sends one request and waits for its answer.
    pub async fn call(&mut self, id: u64, kind: request::Kind) -> anyhow::Result<Response> {
        usher_proto::write_frame(
            &mut self.writer,
            &Request {
                id,
                kind: Some(kind),
            },
        )
        .await?;
        self.recv().await
    }

    /// Sends several requests in one write, without waiting for their answers (the
    /// server answers pipelined requests in order).
    pub async fn send(&mut self, requests: &[Request]) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut buf = Vec::with_capacity(requests.len() * 32);
        for r in requests {
            buf.extend_from_slice(&usher_proto::encode_frame(r));
        }
        self.writer.write_all(&buf).await?;
        Ok(())
    }

    /// The next answer.
    pub async fn recv(&mut self) -> anyhow::Result<Response> {
        self.reader
            .read::<Response>()
            .await?
            .context("connection closed")
    }
}

/// A checkout of `count` seats of the bench feature, without waiting in the queue.
pub fn checkout_seats(count: u32, client_ref: u64) -> request::Kind {
    request::Kind::Checkout(Checkout {
        feature: "seat".into(),
        version: String::new(),
        count,
        client_ref,
        ..Checkout::default()
    })
}

fn checkout(client_ref: u64) -> request::Kind {
    checkout_seats(1, client_ref)
}

/// One usher client: hello, then `ops` checkout+checkin pairs (or until `deadline`),
/// returning each pair's latency in µs.
pub async fn usher_worker(
    addr: SocketAddr,
    ops: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<u64>> {
    usher_worker_over(addr, Transport::Plaintext, ops, deadline).await
}

/// [`usher_worker`] over `transport`.
pub async fn usher_worker_over(
    addr: SocketAddr,
    transport: Transport,
    ops: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<u64>> {
    let mut conn = Conn::open_over(addr, &transport).await?;
    conn.hello().await?;
    let mut latencies = Vec::with_capacity(ops);
    for i in 0..ops as u64 {
        if Instant::now() >= deadline {
            break;
        }
        let start = Instant::now();
        let lease_id = match conn.call(2 * i + 1, checkout(i + 1)).await?.kind {
            Some(response::Kind::Granted(g)) => g.lease_id,
            other => bail!("checkout not granted: {other:?}"),
        };
        let checkin = request::Kind::Checkin(Checkin { lease_id });
        match conn.call(2 * i + 2, checkin).await?.kind {
            Some(response::Kind::CheckedIn(_)) => {}
            other => bail!("checkin not acknowledged: {other:?}"),
        }
        latencies.push(start.elapsed().as_micros() as u64);
    }
    let _ = conn
        .call(u64::MAX, request::Kind::Goodbye(Goodbye {}))
        .await;
    Ok(latencies)
}

/// The physical floor: a minimal tokio server with the same framing that sends every
/// frame straight back, in a process of its own (`usher-bench --serve-echo ADDR`), as
/// usherd and Redis are. In the harness's own process it would share the clients' runtime:
/// a client and its echo task then often wake each other on one worker thread, which no
/// server in another process can, and its figure swung threefold from run to run with
/// where the tasks happened to land. Killed on drop.
pub struct EchoServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl EchoServer {
    /// Starts the echo process on a free loopback port and waits until it listens.
    pub async fn start() -> anyhow::Result<EchoServer> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--serve-echo")
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the echo server process")?;
        let server = EchoServer { child, addr };
        wait_listening(addr).await?;
        Ok(server)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The echo server's process: serves on `addr` until it is killed.
pub async fn serve_echo(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (rd, mut wr) = stream.into_split();
            let mut reader = FrameReader::new(rd);
            while let Ok(Some(req)) = reader.read::<Request>().await {
                if usher_proto::write_frame(&mut wr, &req).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The same client pattern against the echo floor: two round trips of the same frames
/// per operation.
pub async fn echo_worker(
    addr: SocketAddr,
    ops: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<u64>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (rd, mut writer) = stream.into_split();
    let mut reader = FrameReader::new(rd);
    let mut latencies = Vec::with_capacity(ops);
    for i in 0..ops as u64 {
        if Instant::now() >= deadline {
            break;
        }
        let start = Instant::now();
        for kind in [
            checkout(i + 1),
            request::Kind::Checkin(Checkin { lease_id: i + 1 }),
        ] {
            usher_proto::write_frame(
                &mut writer,
                &Request {
                    id: i,
                    kind: Some(kind),
                },
            )
            .await?;
            reader.read::<Request>().await?.context("echo closed")?;
        }
        latencies.push(start.elapsed().as_micros() as u64);
    }
    Ok(latencies)
}

/// The durable floor: latency of writing 4 KiB and `fdatasync` on the disk of `dir`.
pub fn fsync_latencies(dir: &Path, iterations: usize) -> anyhow::Result<Vec<u64>> {
    use std::io::{Seek, SeekFrom, Write};
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let mut latencies = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&block)?;
        file.sync_data()?;
        latencies.push(start.elapsed().as_micros() as u64);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(latencies)
}
