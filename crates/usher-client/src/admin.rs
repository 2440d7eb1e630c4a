//! Administration over the server's Unix socket (`DATA_DIR/admin/usherd.sock`).
//!
//! Administration is a separate, short-lived connection: connect, handshake query-only,
//! send one request per call, read its answer. Whoever can open the socket (the server's
//! own user, and root) is an administrator; the file system is the authentication.

use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;
use usher_proto::{FrameReader, Hello, Request, Response, request, response};

use crate::ClientError;

/// An open administration connection.
#[derive(Debug)]
pub struct AdminConnection {
    reader: FrameReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    next_id: u64,
    timeout: Duration,
}

impl AdminConnection {
    /// Connects to the admin socket and completes the handshake.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let unreachable = |e: std::io::Error| ClientError::Unreachable {
            servers: socket.display().to_string(),
            detail: e.to_string(),
        };
        let stream = tokio::time::timeout(timeout, UnixStream::connect(socket))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(unreachable)?;
        let (rd, writer) = stream.into_split();
        let mut conn = AdminConnection {
            reader: FrameReader::new(rd),
            writer,
            next_id: 1,
            timeout,
        };
        let hello = Hello {
            magic: usher_proto::MAGIC.to_string(),
            protocol_version: usher_proto::PROTOCOL_VERSION,
            client_version: concat!("usher-admin ", env!("CARGO_PKG_VERSION")).to_string(),
            query_only: true,
            ..Hello::default()
        };
        match conn.call(request::Kind::Hello(hello)).await? {
            response::Kind::Welcome(_) => Ok(conn),
            other => Err(ClientError::Protocol(format!(
                "expected Welcome, got {other:?}"
            ))),
        }
    }

    /// Sends one request and waits for its answer. Error responses become
    /// [`ClientError::Server`].
    pub async fn call(&mut self, kind: request::Kind) -> Result<response::Kind, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let exchange = async {
            usher_proto::write_frame(
                &mut self.writer,
                &Request {
                    id,
                    kind: Some(kind),
                },
            )
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
            loop {
                match self.reader.read::<Response>().await {
                    Ok(Some(r)) if r.id == id => return Ok(r.kind),
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        return Err(ClientError::Protocol(
                            "the server closed the connection".into(),
                        ));
                    }
                    Err(e) => return Err(ClientError::Protocol(e.to_string())),
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) => Err(ClientError::Protocol("response of an unknown kind".into())),
            Ok(Ok(Some(response::Kind::Error(e)))) => Err(ClientError::Server {
                code: e.code(),
                message: e.message,
            }),
            Ok(Ok(Some(kind))) => Ok(kind),
        }
    }
}
