//! A TCP proxy between a client and the server, whose connections the test can break in
//! the two ways a network does: cut (both ends see the connection close) or freeze (the
//! path goes silent, both ends still believe the connection is open).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on `127.0.0.1:port` forwarding to one upstream address.
pub struct Proxy {
    pub port: u16,
    cut: watch::Sender<u64>,
    freeze: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    closed_by_upstream: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cuts) = watch::channel(0u64);
        let (freeze, freezes) = watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_upstream = Arc::new(AtomicUsize::new(0));
        let (counter, closed) = (accepted.clone(), closed_by_upstream.clone());
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                // Only breaks ordered after this connection was accepted apply to it.
                let (mut cuts, mut freezes) = (cuts.clone(), freezes.clone());
                cuts.borrow_and_update();
                freezes.borrow_and_update();
                let closed = closed.clone();
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    forward(down, up, cuts, freezes, closed).await;
                });
            }
        });
        Proxy {
            port,
            cut,
            freeze,
            accepted,
            closed_by_upstream,
            task,
        }
    }

    /// Closes every connection open now, on both sides.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Silences every connection open now: nothing more is forwarded either way, but
    /// neither side is closed (a half-open connection, as after a NAT or firewall lost
    /// its state). Connections made later are forwarded normally.
    pub fn freeze_all(&self) {
        self.freeze.send_modify(|n| *n += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Frozen connections that the server has since closed.
    pub fn closed_by_upstream(&self) -> usize {
        self.closed_by_upstream.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    mut down: TcpStream,
    mut up: TcpStream,
    mut cuts: watch::Receiver<u64>,
    mut freezes: watch::Receiver<u64>,
    closed: Arc<AtomicUsize>,
) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => return,
        _ = cuts.changed() => return,
        _ = freezes.changed() => {}
    }
    // Frozen: forward nothing, keep the client's end open, and notice when the server
    // gives up on its end (whatever it sends meanwhile is lost, as on a dead path).
    let mut sink = [0u8; 4096];
    loop {
        match up.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    closed.fetch_add(1, Ordering::SeqCst);
    drop(down);
}
