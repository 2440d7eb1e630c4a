//! Administration over the admin socket: remove, reload and down, end to end with a real
//! server, a real client and the admin connection the `usher` CLI uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use usher_client::admin::AdminConnection;
use usher_client::{Client, ClientConfig, ClientError, DenyReason, ServerAddr};
use usher_proto::{ErrorCode, Reload, Remove, request, response};
use usher_server::{Config, Server};

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    key: PathBuf,
    license: PathBuf,
    addr: std::net::SocketAddr,
    admin_socket: PathBuf,
    server: tokio::task::JoinHandle<Result<(), usher_server::ServerError>>,
}

fn write_signed(dir: &Path, key: &Path, path: &Path, text: &str) {
    let key = usher_license::VendorSigningKey::read_from(key).unwrap();
    let signed = usher_license::sign_text("test.lic", text, &key).unwrap();
    std::fs::write(path, signed.text).unwrap();
    let _ = dir;
}

async fn start(license: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (key, public) = usher_license::keygen("acme", &dir.join("keys")).unwrap();
    let path = dir.join("acme.lic");
    write_signed(&dir, &key, &path, license);
    let mut config = Config::new(dir.join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.license_files = vec![path.clone()];
    config.vendor_keys = vec![public];
    config.min_remove = Duration::ZERO;
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    // Raw-frame peers below speak plaintext; the client library still uses TLS.
    config.insecure_plaintext = true;
    config.status_detail = usher_server::config::StatusDetail::Full;
    let admin_socket = config.admin_socket();
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let server = tokio::spawn(server.run(std::future::pending()));
    Fixture {
        _dir: tmp,
        dir,
        key,
        license: path,
        addr,
        admin_socket,
        server,
    }
}

impl Fixture {
    async fn client(&self) -> Client {
        let servers = vec![ServerAddr {
            host: "127.0.0.1".into(),
            port: self.addr.port(),
        }];
        Client::connect(ClientConfig::new(servers)).await.unwrap()
    }

    async fn admin(&self) -> AdminConnection {
        AdminConnection::connect(&self.admin_socket, Duration::from_secs(10))
            .await
            .unwrap()
    }

    fn relicense(&self, text: &str) {
        write_signed(&self.dir, &self.key, &self.license, text);
    }
}

const TWO_SEATS: &str = "FEATURE cad acme 2025 permanent 2 HOSTID=ANY\n";

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_socket_is_private_to_the_server_user() {
    use std::os::unix::fs::PermissionsExt;
    let f = start(TWO_SEATS).await;
    let mode = std::fs::metadata(&f.admin_socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let dir_mode = std::fs::metadata(f.admin_socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "directory mode {dir_mode:o}");
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_frees_the_seat_and_tells_the_holder() {
    let f = start(TWO_SEATS).await;
    let holder = f.client().await;
    let license = holder
        .checkout("cad")
        .version("2025")
        .count(2)
        .await
        .unwrap();
    let other = f.client().await;
    assert!(matches!(
        other.checkout("cad").await,
        Err(ClientError::Denied(_))
    ));

    let mut admin = f.admin().await;
    let answer = admin
        .call(request::Kind::Remove(Remove {
            lease_id: license.lease_id(),
        }))
        .await
        .unwrap();
    let response::Kind::Removed(removed) = answer else {
        panic!("got {answer:?}")
    };
    assert!(removed.was_held);
    assert_eq!((removed.feature.as_str(), removed.count), ("cad", 2));

    let reason = tokio::time::timeout(Duration::from_secs(20), license.lost())
        .await
        .unwrap();
    assert_eq!(
        reason,
        usher_client::LossReason::RemovedByAdministrator,
        "{reason}"
    );
    other
        .checkout("cad")
        .count(2)
        .await
        .expect("the removed seats are free again");

    // Removing it again is harmless.
    let again = admin
        .call(request::Kind::Remove(Remove {
            lease_id: license.lease_id(),
        }))
        .await
        .unwrap();
    assert!(matches!(again, response::Kind::Removed(r) if !r.was_held));
}

#[tokio::test(flavor = "multi_thread")]
async fn administration_is_refused_over_the_client_port() {
    let f = start(TWO_SEATS).await;
    let holder = f.client().await;
    let license = holder.checkout("cad").await.unwrap();
    // A client speaking the admin requests over TCP is refused, and nothing changes.
    let stream = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut reader = usher_proto::FrameReader::new(rd);
    let hello = usher_proto::Hello {
        magic: usher_proto::MAGIC.into(),
        protocol_version: usher_proto::PROTOCOL_VERSION,
        query_only: true,
        ..Default::default()
    };
    for (id, kind) in [
        (1, request::Kind::Hello(hello)),
        (
            2,
            request::Kind::Remove(Remove {
                lease_id: license.lease_id(),
            }),
        ),
        (3, request::Kind::Reload(Reload {})),
        (4, request::Kind::Down(usher_proto::Down {})),
    ] {
        let req = usher_proto::Request {
            id,
            kind: Some(kind),
        };
        usher_proto::write_frame(&mut wr, &req).await.unwrap();
        let resp: usher_proto::Response = reader.read().await.unwrap().unwrap();
        if id > 1 {
            let Some(response::Kind::Error(e)) = resp.kind else {
                panic!("got {resp:?}")
            };
            assert_eq!(e.code(), ErrorCode::NotPermitted, "request {id}");
        }
    }
    let status = holder.status("cad").await.unwrap();
    assert_eq!(status.features[0].in_use, 1, "{status:?}");
    assert!(license.lost_reason().is_none());
    assert!(
        !f.server.is_finished(),
        "down over TCP must not stop the server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_shrinks_counts_without_evicting_and_serves_new_features() {
    let f = start(TWO_SEATS).await;
    let holder = f.client().await;
    let _a = holder.checkout("cad").await.unwrap();
    let _b = holder.checkout("cad").await.unwrap();

    f.relicense(
        "FEATURE cad acme 2025 permanent 1 HOSTID=ANY\nFEATURE sim acme 3.0 permanent 4 HOSTID=ANY\n",
    );
    let mut admin = f.admin().await;
    let answer = admin.call(request::Kind::Reload(Reload {})).await.unwrap();
    let response::Kind::Reloaded(r) = answer else {
        panic!("got {answer:?}")
    };
    assert_eq!(r.entitlements, 2, "{r:?}");

    let status = holder.status("cad").await.unwrap();
    assert_eq!(
        (status.features[0].in_use, status.features[0].total),
        (2, 1),
        "{status:?}"
    );
    assert!(_a.lost_reason().is_none() && _b.lost_reason().is_none());
    let other = f.client().await;
    match other.checkout("cad").await {
        Err(ClientError::Denied(d)) => assert_eq!(d.reason, DenyReason::AllInUse, "{d:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    other
        .checkout("sim")
        .version("3.0")
        .await
        .expect("a new entitlement serves at once");

    // Usage falls below the new count, and checkouts are served again.
    drop(_a);
    drop(_b);
    let mut granted = None;
    for _ in 0..200 {
        match other.checkout("cad").await {
            Ok(l) => {
                granted = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(
        granted.is_some(),
        "cad never became available after the holders left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_reload_leaves_the_licenses_in_force() {
    let f = start(TWO_SEATS).await;
    std::fs::write(&f.license, "FEATURE cad acme\n").unwrap();
    let mut admin = f.admin().await;
    match admin.call(request::Kind::Reload(Reload {})).await {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, usher_client::ServerErrorCode::BadRequest);
            assert!(
                message.contains("acme.lic:1:"),
                "names file and line: {message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let client = f.client().await;
    client
        .checkout("cad")
        .count(2)
        .await
        .expect("the old licenses still serve");
}

#[tokio::test(flavor = "multi_thread")]
async fn down_stops_the_server_gracefully() {
    let f = start(TWO_SEATS).await;
    let mut admin = f.admin().await;
    let answer = admin
        .call(request::Kind::Down(usher_proto::Down {}))
        .await
        .unwrap();
    assert!(matches!(answer, response::Kind::Bye(_)), "{answer:?}");
    let result = tokio::time::timeout(Duration::from_secs(20), f.server).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "run should return Ok: {result:?}"
    );
    assert!(
        !f.admin_socket.exists(),
        "the socket is removed on the way out"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_license_bound_to_the_server_identity_is_served_by_that_server_only() {
    let lic = crate::util::Licensed::new(crate::util::LICENSE);
    let server = crate::util::TestServer::start(lic.config()).await;
    let id = usher_server::identity::host_id_in(&lic.data_dir()).expect("made at start");
    assert!(id.starts_with("USHER_ID="), "{id}");
    server.shutdown().await.unwrap();

    let bound = format!("FEATURE bound acme 2025 permanent 1 HOSTID={id}\n");
    lic.write(&bound);
    let server = crate::util::TestServer::start(lic.config()).await;
    let client = server.client().await;
    client
        .checkout("bound")
        .await
        .expect("served by the server it is bound to");
    drop(client);

    // The same file on another server (another data directory, another identity).
    let other = crate::util::Licensed::new(crate::util::LICENSE);
    std::fs::copy(&lic.license, &other.license).unwrap();
    let mut config = other.config();
    config.vendor_keys = vec![lic.public.clone()];
    let elsewhere = crate::util::TestServer::start(config).await;
    let client = elsewhere.client().await;
    match client.checkout("bound").await {
        // Refused with its own reason, not as a feature no license names.
        Err(ClientError::Denied(d)) => {
            assert_eq!(d.reason, DenyReason::BoundToOtherHost, "{d:?}");
            assert!(
                d.message.contains("bound to another host") && d.message.contains(&id),
                "{}",
                d.message
            );
        }
        other => panic!("another server must not serve it: {other:?}"),
    }
}
