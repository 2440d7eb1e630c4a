//! Administration over the server's Unix socket (`DATA_DIR/admin/usherd.sock`).
//!
//! Administration is a separate, short-lived connection: connect, handshake query-only,
//! send one request per call, read its answer. Whoever can open the socket (the server's
//! own user, and root) is an administrator; the file system is the authentication.

use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;
use usher_proto::{FrameReader, Hello, Request, Response, StatusRequest, request, response};

use crate::{Client, ClientError, StatusReport};

/// An open administration connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), usher_client::ClientError> {
/// use std::path::Path;
/// use std::time::Duration;
/// use usher_proto::{Reload, request, response};
///
/// let socket = Path::new("/var/lib/usher/admin.sock");
/// let mut admin = usher_client::admin::AdminConnection::connect(socket, Duration::from_secs(10)).await?;
/// if let response::Kind::Reloaded(r) = admin.call(request::Kind::Reload(Reload {})).await? {
///     println!("{r:?}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AdminConnection {
    reader: FrameReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    next_id: u64,
    timeout: Duration,
}

impl AdminConnection {
    /// Connects to the admin socket and completes the handshake (example on
    /// [`AdminConnection`]).
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
    /// [`ClientError::Server`]. (Example on [`AdminConnection`].)
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
            Ok(Ok(Some(response::Kind::Error(e)))) => Err(ClientError::from_server(e)),
            Ok(Ok(Some(kind))) => Ok(kind),
        }
    }
}

/// Usage per feature with holders and queue, as an administrator sees it, over the
/// client's own connection: the request presents the server's admin token (the contents
/// of its `DATA_DIR/admin/token`). The server accepts it only from the addresses in its
/// `admin_from` (loopback by default); a wrong token is refused and counts against this
/// address. (Not a method of [`Client`]: applications do not administer.)
///
/// The token is sent only over TLS, or in plaintext when every server the client was
/// configured with is on this host; otherwise this fails with
/// [`ClientError::TokenNeedsTls`] and sends nothing.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
/// let token = std::fs::read_to_string("/var/lib/usher/admin/token").unwrap();
/// let report = usher_client::admin::status_as_admin(client, "cad", &token).await?;
/// for pool in &report.features {
///     for h in &pool.holders {
///         println!("{} {}@{} handle {}", pool.feature, h.user, h.host, h.lease_id);
///     }
/// }
/// # Ok(()) }
/// ```
pub async fn status_as_admin(
    client: &Client,
    feature: &str,
    admin_token: &str,
) -> Result<StatusReport, ClientError> {
    let over_tls = client
        .server_key
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some();
    if !over_tls && !client.all_servers_local {
        return Err(ClientError::TokenNeedsTls);
    }
    client
        .status_request(StatusRequest {
            feature: feature.to_string(),
            admin_token: admin_token.trim().to_string(),
            ..StatusRequest::default()
        })
        .await
}
