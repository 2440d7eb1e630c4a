//! The UDP port: detached sessions kept alive by keepalives (and refused when forged,
//! replayed, stale or garbage), the call-back of a detached client, and discovery.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use usher_client::admin::AdminConnection;
use usher_client::{Client, ClientConfig, ServerAddr};
use usher_proto::udp::{self, Keepalive};
use usher_proto::{Remove, request, response};

use crate::http::{http, parse_exposition, value};
use crate::util::{LICENSE, Licensed, RawConn, TestServer, eventually, holders, in_use};

const WAIT: Duration = Duration::from_secs(20);

/// `usher_udp_datagrams_total{result}` from the server's `/metrics`.
async fn udp_count(server: &TestServer, result: &str) -> f64 {
    let scrape = http(server.admin.unwrap(), "GET", "/metrics", None, None).await;
    let (_, samples) = parse_exposition(&scrape.body);
    value(&samples, "usher_udp_datagrams_total", &[("result", result)]).unwrap_or(0.0)
}

/// Sends `datagram` every second until an answer comes, for at most [`WAIT`].
async fn answered(socket: &UdpSocket, datagram: &[u8]) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Some(answer) = exchange(socket, datagram, Duration::from_secs(1)).await {
            return Some(answer);
        }
    }
    None
}

/// Waits until `usher_udp_datagrams_total{result}` is 1: a request the client gave up
/// waiting for an answer to may still be in the server's queue on a loaded machine.
async fn counted_once(server: &TestServer, result: &str) {
    eventually(WAIT, result, || async {
        (udp_count(server, result).await == 1.0).then_some(())
    })
    .await;
}

/// A raw session that holds one `cad` seat and has detached: its id, key and the
/// server's UDP address.
async fn detached_session(server: &TestServer) -> (u64, [u8; 32], SocketAddr) {
    let mut conn = RawConn::connect(server.addr).await;
    let session = conn.hello("detacher").await;
    let granted = conn.call(2, crate::util::checkout("cad", 1, 1)).await;
    assert!(matches!(granted, response::Kind::Granted(_)), "{granted:?}");
    let answer = conn
        .call(3, request::Kind::Detach(usher_proto::Detach {}))
        .await;
    let response::Kind::Detached(d) = answer else {
        panic!("not detached: {answer:?}")
    };
    assert_eq!(
        conn.recv().await,
        None,
        "the server closes the connection after Detached"
    );
    let key: [u8; 32] = d.keepalive_key[..].try_into().unwrap();
    let udp = SocketAddr::new(server.addr.ip(), d.udp_port as u16);
    assert_eq!(udp.port(), server.addr.port(), "UDP is on the TCP port");
    assert_eq!(d.keepalive_interval_ms, 200);
    (session, key, udp)
}

/// Sends `datagram` and returns the answer, if one comes within `within`.
async fn exchange(socket: &UdpSocket, datagram: &[u8], within: Duration) -> Option<Vec<u8>> {
    socket.send(datagram).await.unwrap();
    let mut buf = [0u8; 512];
    match tokio::time::timeout(within, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Keepalives alone keep a session with no TCP connection alive well past its TTL; when
/// they stop, the session lapses and its seat is released.
#[tokio::test(flavor = "multi_thread")]
async fn keepalives_keep_a_session_without_a_connection_alive_past_its_ttl() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let (session, key, udp) = detached_session(&server).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(udp).await.unwrap();

    // Three TTLs (2 s each) of keepalives every heartbeat interval (200 ms).
    let started = tokio::time::Instant::now();
    let mut seq = 0;
    while started.elapsed() < Duration::from_secs(6) {
        seq += 1;
        let k = Keepalive {
            session,
            seq,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        let ack = exchange(&socket, &udp::encode_keepalive(&k, &key), WAIT)
            .await
            .expect("a good keepalive is acknowledged");
        let ack = udp::decode_ack(&ack, &key).expect("the ack is tagged with the session key");
        assert_eq!((ack.session, ack.seq, ack.flags), (session, seq, 0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = server.status().await;
    assert_eq!(in_use(&report, "cad"), 1, "{report:#?}");
    assert_eq!(holders(&report)[0].session_id, session);
    assert!(udp_count(&server, "keepalive").await >= seq as f64);

    // Silence: the session lapses after its TTL like any other.
    eventually(WAIT, "the silent session's seat to be released", || async {
        (in_use(&server.status().await, "cad") == 0).then_some(())
    })
    .await;
    // Its key is forgotten with it: a late keepalive is refused, unanswered.
    let k = Keepalive {
        session,
        seq: seq + 1,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    let late = exchange(
        &socket,
        &udp::encode_keepalive(&k, &key),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(late, None);
    // Refused as the session's (the ledger no longer knows it) or, once the periodic sweep
    // has dropped the silent session's key, as an unknown session's.
    let refused =
        udp_count(&server, "session_ended").await + udp_count(&server, "unknown_session").await;
    assert!(refused >= 1.0);
}

/// Forged, replayed, stale, unknown and garbage datagrams are never answered, only
/// counted, and do not keep anything alive; a good keepalive after them still works.
#[tokio::test(flavor = "multi_thread")]
async fn forged_replayed_stale_and_garbage_datagrams_are_ignored_and_counted() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    // Room for every refusal below (each waits to see that nothing answers) in one TTL.
    config.session_ttl = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    let (session, key, udp) = detached_session(&server).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(udp).await.unwrap();
    let quiet = Duration::from_millis(300);
    let keepalive = |seq, elapsed_ms, key: &[u8; 32]| {
        udp::encode_keepalive(
            &Keepalive {
                session,
                seq,
                elapsed_ms,
            },
            key,
        )
    };

    let good = keepalive(1, 0, &key);
    assert!(exchange(&socket, &good, WAIT).await.is_some());
    // Replayed: the very same datagram again.
    assert_eq!(exchange(&socket, &good, quiet).await, None);
    // Forged: a key that is not the session's.
    assert_eq!(
        exchange(&socket, &keepalive(2, 0, &[9; 32]), quiet).await,
        None
    );
    // Tampered: a good datagram with its sequence number changed.
    let mut tampered = keepalive(3, 0, &key);
    tampered[20] ^= 0x40;
    assert_eq!(exchange(&socket, &tampered, quiet).await, None);
    // Stale: held back for ten minutes, then sent.
    assert_eq!(
        exchange(&socket, &keepalive(4, 600_000, &key), quiet).await,
        None
    );
    // Unknown session.
    let stranger = udp::encode_keepalive(
        &Keepalive {
            session: session ^ 1,
            seq: 1,
            elapsed_ms: 0,
        },
        &key,
    );
    assert_eq!(exchange(&socket, &stranger, quiet).await, None);
    // Garbage: random bytes, a truncated keepalive, an oversized datagram.
    for junk in [
        &b"hello, is this FlexLM?"[..],
        &good[..30],
        &[0u8; 1400][..],
    ] {
        assert_eq!(exchange(&socket, junk, quiet).await, None);
    }

    assert!(udp_count(&server, "replayed").await >= 1.0);
    assert!(udp_count(&server, "forged").await >= 2.0);
    assert!(udp_count(&server, "stale").await >= 1.0);
    assert!(udp_count(&server, "unknown_session").await >= 1.0);
    assert!(udp_count(&server, "garbage").await >= 3.0);
    assert_eq!(udp_count(&server, "keepalive").await, 1.0);

    // The refusals moved nothing on: the next good keepalive is accepted.
    let next = exchange(&socket, &keepalive(2, 0, &key), WAIT)
        .await
        .expect("a good keepalive after the junk is acknowledged");
    assert_eq!(udp::decode_ack(&next, &key).unwrap().seq, 2);
}

fn client_config(server: &TestServer) -> ClientConfig {
    let mut config = ClientConfig::new(vec![ServerAddr {
        host: "127.0.0.1".into(),
        port: server.addr.port(),
    }]);
    config.request_timeout = WAIT;
    config
}

/// The client library detaches by itself when idle, holds its seat over UDP past the
/// TTL, and comes back over TCP for the next request.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_client_detaches_by_itself_and_resumes_for_its_next_request() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let mut config = client_config(&server);
    // Long enough that the status read right after the second checkout comes before the
    // client goes idle again, even on a loaded machine; short enough to detach soon.
    config.detach_after = Some(Duration::from_millis(1_500));
    let client = Client::connect(config).await.unwrap();
    let license = client.checkout("cad").await.unwrap();

    // Keepalives (200 ms interval) for three TTLs of 2 s: still held, never lost.
    eventually(WAIT, "keepalives over UDP", || async {
        (udp_count(&server, "keepalive").await >= 3.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let report = server.status().await;
    assert_eq!(in_use(&report, "cad"), 1);
    assert_eq!(license.lost_reason(), None);
    // Status tells a detached holder from a connected one and from a dropped one: heard
    // from (connected), but over UDP (detached).
    let holder = &holders(&report)[0];
    assert!(holder.detached && holder.connected, "{holder:#?}");

    // The next request resumes the same session over TCP.
    let session = holder.session_id;
    let second = client.checkout("cad").await.unwrap();
    let report = server.status().await;
    assert_eq!(in_use(&report, "cad"), 2);
    assert!(
        holders(&report).iter().all(|h| h.session_id == session),
        "{report:#?}"
    );
    assert!(
        holders(&report).iter().all(|h| !h.detached && h.connected),
        "resumed over TCP: no longer detached\n{report:#?}"
    );
    drop(second);
    drop(license);
    client.close().await;
    eventually(WAIT, "the seats to be checked in", || async {
        (in_use(&server.status().await, "cad") == 0).then_some(())
    })
    .await;
}

/// A detached client cannot hear a notice; the next acknowledgement calls it back over
/// TCP, where it learns that an administrator took its seat.
#[tokio::test(flavor = "multi_thread")]
async fn a_detached_client_is_called_back_to_hear_that_its_seat_was_removed() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let client = Client::connect(client_config(&server)).await.unwrap();
    let license = client.checkout("cad").await.unwrap();
    client.detach().await.unwrap();
    eventually(WAIT, "a keepalive over UDP", || async {
        (udp_count(&server, "keepalive").await >= 1.0).then_some(())
    })
    .await;

    let mut admin = AdminConnection::connect(&server.config.admin_socket(), WAIT)
        .await
        .unwrap();
    let removed = admin
        .call(request::Kind::Remove(Remove {
            lease_id: license.lease_id(),
        }))
        .await
        .unwrap();
    assert!(matches!(removed, response::Kind::Removed(_)), "{removed:?}");
    let reason = tokio::time::timeout(WAIT, license.lost())
        .await
        .expect("the detached client learns of the removal");
    assert_eq!(
        reason,
        usher_client::LossReason::ReleasedWhileAway,
        "{reason}"
    );
    client.close().await;
}

/// Discovery on loopback: the server answers with its TCP port, whether it needs TLS and
/// its vendors, and a client with no server configured finds it and connects; with
/// discovery off, or from outside the allow-list, there is no answer.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_finds_the_server_and_can_be_turned_off() {
    let lic = Licensed::new(LICENSE);
    let mut config = lic.config();
    config.insecure_plaintext = false;
    let server = TestServer::start(config).await;
    let target = vec![server.addr];
    let found = usher_client::discover(&target, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].addr, server.addr);
    assert!(found[0].tls);
    assert_eq!(found[0].vendors, ["acme"]);
    assert!(!found[0].truncated);

    let mut config = ClientConfig::new(Vec::new());
    config.discovery_targets = target.clone();
    let client = Client::connect(config)
        .await
        .expect("a client with no server configured finds one");
    assert_eq!(client.session_info().server.port, server.addr.port());
    client.checkout("cad").await.unwrap();
    client.close().await;

    // Discovery off.
    let quiet = Licensed::new(LICENSE);
    let mut config = quiet.config();
    config.discovery = false;
    let hidden = TestServer::start(config).await;
    let none = usher_client::discover(&[hidden.addr], Duration::from_millis(500))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    counted_once(&hidden, "discovery_off").await;

    // Outside the allow-list.
    let walled = Licensed::new(LICENSE);
    let mut config = walled.config();
    config.allow = vec!["10.0.0.0/8".parse().unwrap()];
    let walled = TestServer::start(config).await;
    let none = usher_client::discover(&[walled.addr], Duration::from_millis(500))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    counted_once(&walled, "not_allowed").await;
}

/// A discovery request shorter than the answer could be is refused: the port cannot be
/// used to amplify a spoofed flood.
#[tokio::test(flavor = "multi_thread")]
async fn a_short_discovery_request_gets_no_answer() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.addr).await.unwrap();
    let request = udp::encode_discover(7);
    assert_eq!(
        exchange(&socket, &request[..64], Duration::from_millis(500)).await,
        None
    );
    let answer = exchange(&socket, &request, WAIT)
        .await
        .expect("a full-size request is answered");
    assert!(answer.len() <= request.len());
    assert_eq!(udp::decode_announce(&answer).unwrap().nonce, 7);
}

/// One sender flooding discovery requests cannot silence discovery for everyone: it is
/// held to its share (the rest of its requests are dropped and counted as `over_share`),
/// and another sender asking meanwhile is still answered, every time.
#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_sender_gets_its_share_and_others_are_still_answered() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let flooder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    flooder.connect(server.addr).await.unwrap();
    let request = udp::encode_discover(1);
    // A burst well past any per-second budget, then a steady flood while the other sender
    // asks (bounded: 20,000 datagrams over at most 40 s).
    for _ in 0..300 {
        flooder.send(&request).await.unwrap();
    }
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = tokio::spawn({
        let flooding = flooding.clone();
        async move {
            let started = tokio::time::Instant::now();
            for _ in 0..19_700 {
                if !flooding.load(Ordering::Relaxed) || started.elapsed() > 2 * WAIT {
                    break;
                }
                // An ICMP error from an earlier answer may surface here: keep flooding.
                let _ = flooder.send(&request).await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    // Another loopback address: another sender. Each request is sent again every second
    // until answered: the flood may fill the socket's receive buffer, and the kernel drops
    // what does not fit before the server sees it.
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    other.connect(server.addr).await.unwrap();
    for nonce in 10..15 {
        let answer = answered(&other, &udp::encode_discover(nonce))
            .await
            .unwrap_or_else(|| panic!("request {nonce} of the other sender went unanswered"));
        assert_eq!(udp::decode_announce(&answer).unwrap().nonce, nonce);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The flooder's requests beyond its share are counted (it keeps flooding until they
    // are: a loaded machine may send, or the kernel keep, fewer of them per second).
    eventually(WAIT, "the flooder's requests beyond its share", || async {
        (udp_count(&server, "over_share").await >= 200.0).then_some(())
    })
    .await;
    flooding.store(false, Ordering::Relaxed);
    flood.await.unwrap();
    assert!(udp_count(&server, "discovered").await >= 5.0);
}
