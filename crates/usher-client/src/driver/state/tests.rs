//! The core alone: events in, requests and decisions out, with no socket, no clock and
//! no runtime. Time is a base instant plus offsets.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use usher_proto::{ErrorCode, Request, Response, request, response};

use super::{Core, EXPIRED, Keepalives, Link, Next, OUT_OF_REACH};
use crate::driver::Call;
use crate::{ClientConfig, ClientError, ServerAddr};

type Answer = oneshot::Receiver<Result<response::Kind, ClientError>>;

const SESSION: u64 = 7;
const PEER: &str = "127.0.0.1:7575";

fn server() -> ServerAddr {
    ServerAddr {
        host: "127.0.0.1".into(),
        port: 7575,
    }
}

fn config(detach_after: Option<Duration>) -> ClientConfig {
    ClientConfig {
        detach_after,
        ..ClientConfig::new(vec![server()])
    }
}

/// A core connected at `t0` in a new session (heartbeat 1 s, TTL 10 s).
fn connected(detach_after: Option<Duration>) -> (Core, Instant) {
    let t0 = Instant::now();
    let mut core = Core::new(&config(detach_after), t0);
    core.welcomed(&welcome(false, &[]), &server(), Some(peer()), t0);
    (core, t0)
}

fn peer() -> SocketAddr {
    PEER.parse().expect("a socket address")
}

fn welcome(resumed: bool, leases: &[u64]) -> usher_proto::Welcome {
    usher_proto::Welcome {
        session_id: SESSION,
        session_secret: if resumed {
            Vec::new()
        } else {
            b"secret".to_vec()
        },
        heartbeat_interval_ms: 1_000,
        session_ttl_ms: 10_000,
        resumed,
        leases: leases
            .iter()
            .map(|&lease_id| usher_proto::Granted {
                lease_id,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Calls with `kind` at `now`; returns where its answer goes.
fn call(core: &mut Core, kind: request::Kind, now: Instant) -> Answer {
    call_watched(core, kind, None, None, now)
}

fn call_watched(
    core: &mut Core,
    kind: request::Kind,
    lease_watch: Option<watch::Sender<Option<String>>>,
    position: Option<watch::Sender<u32>>,
    now: Instant,
) -> Answer {
    let (reply, rx) = oneshot::channel();
    core.call(
        Call::Request {
            kind: Box::new(kind),
            reply,
            lease_watch,
            position,
        },
        now,
    );
    rx
}

fn checkout(wait_ms: Option<u64>) -> request::Kind {
    request::Kind::Checkout(usher_proto::Checkout {
        feature: "cad".into(),
        count: 1,
        wait: wait_ms.is_some(),
        wait_ms: wait_ms.unwrap_or(0),
        ..Default::default()
    })
}

fn heartbeat() -> request::Kind {
    request::Kind::Heartbeat(usher_proto::Heartbeat {})
}

fn respond(id: u64, kind: response::Kind) -> Response {
    Response {
        id,
        kind: Some(kind),
    }
}

fn granted(lease_id: u64, client_ref: u64) -> response::Kind {
    response::Kind::Granted(usher_proto::Granted {
        lease_id,
        client_ref,
        feature: "cad".into(),
        count: 1,
        ..Default::default()
    })
}

/// Checks out a seat and has it granted as `lease_id`; returns its loss watch.
fn hold(core: &mut Core, lease_id: u64, now: Instant) -> watch::Receiver<Option<String>> {
    let (lost_tx, lost_rx) = watch::channel(None);
    let mut rx = call_watched(core, checkout(None), Some(lost_tx), None, now);
    let sent = core.take_unsent();
    let (id, client_ref) = only_checkout(&sent);
    assert_eq!(
        core.response(respond(id, granted(lease_id, client_ref)), now),
        Next::Send
    );
    assert!(matches!(rx.try_recv(), Ok(Ok(response::Kind::Granted(_)))));
    lost_rx
}

/// The id and idempotency key of the one checkout among `sent`.
fn only_checkout(sent: &[Request]) -> (u64, u64) {
    let found: Vec<(u64, u64)> = sent
        .iter()
        .filter_map(|r| match &r.kind {
            Some(request::Kind::Checkout(c)) => Some((r.id, c.client_ref)),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "one checkout in {sent:?}");
    found[0]
}

fn ids(sent: &[Request]) -> Vec<u64> {
    sent.iter().map(|r| r.id).collect()
}

fn kinds(sent: &[Request]) -> Vec<&'static str> {
    sent.iter()
        .map(|r| match &r.kind {
            Some(request::Kind::Checkout(_)) => "checkout",
            Some(request::Kind::Checkin(_)) => "checkin",
            Some(request::Kind::Heartbeat(_)) => "heartbeat",
            Some(request::Kind::Dequeue(_)) => "dequeue",
            Some(request::Kind::Detach(_)) => "detach",
            Some(request::Kind::Activity(_)) => "activity",
            Some(request::Kind::Goodbye(_)) => "goodbye",
            other => panic!("unexpected request {other:?}"),
        })
        .collect()
}

fn lost_reason(lost: &watch::Receiver<Option<String>>) -> Option<String> {
    lost.borrow().clone()
}

#[test]
fn request_ids_only_grow_across_connections() {
    let (mut core, t0) = connected(None);
    for _ in 0..3 {
        let _answer = call(&mut core, heartbeat(), t0);
    }
    let first = ids(&core.take_unsent());
    assert_eq!(first, [1, 2, 3]);
    let hello = core.take_id(); // as the handshake of a new connection does
    core.connection_lost(t0);
    core.welcomed(&welcome(true, &[]), &server(), Some(peer()), t0);
    let _answer = call(&mut core, heartbeat(), t0);
    // The unanswered requests go out again under their own ids; new ones (the call, the
    // timer's heartbeat) get ids never used before.
    let again = ids(&core.tick(t0));
    assert_eq!(again[..3], first[..]);
    assert!(again[3] > hello && again[4] > again[3], "{again:?}");
}

#[test]
fn requests_go_out_once_per_connection_in_order() {
    let (mut core, t0) = connected(None);
    let _a = call(&mut core, heartbeat(), t0);
    let _b = call(&mut core, checkout(None), t0);
    let first = core.take_unsent();
    assert_eq!(kinds(&first), ["heartbeat", "checkout"]);
    assert!(ids(&first)[0] < ids(&first)[1]);
    assert!(core.take_unsent().is_empty(), "nothing is sent twice");
}

#[test]
fn replies_reach_their_own_callers_whatever_the_order() {
    let (mut core, t0) = connected(None);
    let mut first = call(&mut core, heartbeat(), t0);
    let mut second = call(&mut core, checkout(None), t0);
    let sent = core.take_unsent();
    let (checkout_id, client_ref) = only_checkout(&sent);
    let heartbeat_id = ids(&sent)[0];
    // The second answer comes first.
    core.response(respond(checkout_id, granted(11, client_ref)), t0);
    assert!(first.try_recv().is_err(), "not answered yet");
    match second.try_recv() {
        Ok(Ok(response::Kind::Granted(g))) => assert_eq!(g.lease_id, 11),
        other => panic!("checkout answered with {other:?}"),
    }
    core.response(
        respond(
            heartbeat_id,
            response::Kind::HeartbeatAck(Default::default()),
        ),
        t0,
    );
    assert!(matches!(
        first.try_recv(),
        Ok(Ok(response::Kind::HeartbeatAck(_)))
    ));
    // An answer to nothing in flight (a heartbeat of the timer's, a duplicate) is dropped.
    assert_eq!(core.response(respond(999, granted(12, 0)), t0), Next::Send);
    assert!(core.take_unsent().is_empty());
}

#[test]
fn requests_in_flight_are_sent_again_after_a_reconnect() {
    let (mut core, t0) = connected(None);
    let mut answer = call(&mut core, checkout(None), t0);
    let before = core.take_unsent();
    let (id, client_ref) = only_checkout(&before);
    core.connection_lost(t0 + Duration::from_secs(1));
    assert!(matches!(core.link(), Link::Reconnecting { .. }));
    // A call made while away waits for the connection too.
    let _later = call(&mut core, heartbeat(), t0 + Duration::from_secs(1));
    core.welcomed(&welcome(true, &[]), &server(), Some(peer()), t0);
    core.reconnected(t0 + Duration::from_secs(2));
    let after = core.take_unsent();
    assert_eq!(kinds(&after), ["checkout", "heartbeat"]);
    // The same request, with the same idempotency key: the server answers with the
    // same lease rather than a second one.
    assert_eq!(only_checkout(&after), (id, client_ref));
    core.response(respond(id, granted(5, client_ref)), t0);
    assert!(matches!(
        answer.try_recv(),
        Ok(Ok(response::Kind::Granted(_)))
    ));
}

#[test]
fn a_resumed_session_keeps_the_leases_the_server_still_lists() {
    let (mut core, t0) = connected(None);
    let kept = hold(&mut core, 1, t0);
    let released = hold(&mut core, 2, t0);
    core.connection_lost(t0);
    let hello = core.hello();
    assert_eq!(hello.resume_session, SESSION);
    assert_eq!(hello.resume_secret, b"secret");
    core.welcomed(&welcome(true, &[1]), &server(), Some(peer()), t0);
    assert_eq!(core.link(), &Link::Connected { peer: Some(peer()) });
    assert_eq!(lost_reason(&kept), None);
    let why = lost_reason(&released).expect("lease 2 is lost");
    assert!(why.contains("while the client was away"), "{why}");
    // The session is still the same one: the next hello resumes it again.
    assert_eq!(core.hello().resume_session, SESSION);
}

#[test]
fn a_session_that_cannot_be_resumed_loses_every_lease() {
    let (mut core, t0) = connected(None);
    let a = hold(&mut core, 1, t0);
    let b = hold(&mut core, 2, t0);
    core.connection_lost(t0);
    // The server answers the resuming hello with SessionExpired.
    core.resume_refused();
    assert_eq!(lost_reason(&a).as_deref(), Some(EXPIRED));
    assert_eq!(lost_reason(&b).as_deref(), Some(EXPIRED));
    let hello = core.hello();
    assert_eq!(
        hello.resume_session, 0,
        "the next hello opens a new session"
    );
    assert!(hello.resume_secret.is_empty());
    // A release of a lost lease sends nothing.
    core.call(Call::Release { lease_id: 1 }, t0);
    assert!(core.take_unsent().is_empty());
}

#[test]
fn a_request_answered_session_expired_is_retried_in_a_new_session() {
    let (mut core, t0) = connected(None);
    let held = hold(&mut core, 1, t0);
    let mut answer = call(&mut core, checkout(None), t0);
    let (id, client_ref) = only_checkout(&core.take_unsent());
    let expired = Response::error(id, ErrorCode::SessionExpired, "no such session");
    assert_eq!(core.response(expired, t0), Next::Reconnect);
    assert!(matches!(core.link(), Link::Reconnecting { .. }));
    assert_eq!(lost_reason(&held).as_deref(), Some(EXPIRED));
    assert!(answer.try_recv().is_err(), "the caller still waits");
    assert_eq!(core.hello().resume_session, 0);
    core.welcomed(&welcome(false, &[]), &server(), Some(peer()), t0);
    core.reconnected(t0);
    assert_eq!(only_checkout(&core.take_unsent()), (id, client_ref));
}

#[test]
fn out_of_reach_for_longer_than_the_ttl_loses_every_lease() {
    let (mut core, t0) = connected(None);
    let held = hold(&mut core, 1, t0);
    core.connection_lost(t0);
    // Backoff doubles from 100 ms up to 5 s.
    let waits: Vec<u64> = (1..=8)
        .map(|s| core.connect_failed(t0 + Duration::from_secs(s)).as_millis() as u64)
        .collect();
    assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    assert_eq!(lost_reason(&held), None, "within the TTL (10 s)");
    core.connect_failed(t0 + Duration::from_secs(11));
    assert_eq!(lost_reason(&held).as_deref(), Some(OUT_OF_REACH));
}

#[test]
fn the_connection_watch_follows_the_link() {
    let (mut core, t0) = connected(None);
    let up = core.subscribe_connected();
    assert!(*up.borrow());
    core.connection_lost(t0);
    assert!(!*up.borrow());
    core.connect_failed(t0);
    assert!(!*up.borrow());
    core.welcomed(&welcome(true, &[]), &server(), Some(peer()), t0);
    assert!(*up.borrow());
}

#[test]
fn a_resent_waiting_checkout_asks_only_for_what_is_left_of_its_wait() {
    let (mut core, t0) = connected(None);
    let _answer = call(&mut core, checkout(Some(5_000)), t0);
    let _ = core.take_unsent();
    core.connection_lost(t0 + Duration::from_secs(1));
    core.welcomed(&welcome(true, &[]), &server(), Some(peer()), t0);
    core.reconnected(t0 + Duration::from_secs(2));
    let resent = core.take_unsent();
    match &resent[0].kind {
        Some(request::Kind::Checkout(c)) => assert!(c.wait && c.wait_ms == 3_000, "{c:?}"),
        other => panic!("{other:?}"),
    }
    // Once the wait is over, a resend asks not to wait at all.
    core.connection_lost(t0 + Duration::from_secs(4));
    core.reconnected(t0 + Duration::from_secs(6));
    match &core.take_unsent()[0].kind {
        Some(request::Kind::Checkout(c)) => assert!(!c.wait && c.wait_ms == 0, "{c:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn queued_checkouts_are_reviewed_at_each_heartbeat() {
    let (mut core, t0) = connected(None);
    let (pos_tx, pos_rx) = watch::channel(0);
    let mut waiting = call_watched(&mut core, checkout(Some(10_000)), None, Some(pos_tx), t0);
    let abandoned = call(&mut core, checkout(None), t0);
    let sent = core.take_unsent();
    let (wait_id, wait_ref) = only_checkout(&sent[..1]);
    let (gone_id, gone_ref) = only_checkout(&sent[1..]);
    assert_ne!(wait_ref, gone_ref, "each checkout has its own key");
    for (id, client_ref) in [(wait_id, wait_ref), (gone_id, gone_ref)] {
        let queued = response::Kind::Queued(usher_proto::Queued {
            client_ref,
            position: 3,
            ..Default::default()
        });
        assert_eq!(core.response(respond(id, queued), t0), Next::Send);
    }
    assert_eq!(*pos_rx.borrow(), 3);
    assert!(waiting.try_recv().is_err(), "still waiting");
    drop(abandoned);
    // The tick asks again about the awaited one (for what is left of its wait), withdraws
    // the abandoned one, and sends a heartbeat.
    let reviewed = core.tick(t0 + Duration::from_secs(4));
    assert_eq!(kinds(&reviewed), ["checkout", "dequeue", "heartbeat"]);
    match &reviewed[0].kind {
        Some(request::Kind::Checkout(c)) => {
            assert_eq!(
                (reviewed[0].id, c.client_ref, c.wait_ms),
                (wait_id, wait_ref, 6_000)
            )
        }
        other => panic!("{other:?}"),
    }
    match &reviewed[1].kind {
        Some(request::Kind::Dequeue(d)) => assert_eq!(d.client_ref, gone_ref),
        other => panic!("{other:?}"),
    }
    // The grant arrives as a notice (id 0) and answers the waiting caller.
    core.response(respond(0, granted(9, wait_ref)), t0);
    assert!(matches!(waiting.try_recv(), Ok(Ok(response::Kind::Granted(g))) if g.lease_id == 9));
    // Its lease is held: a release checks it in.
    core.call(Call::Release { lease_id: 9 }, t0);
    assert_eq!(kinds(&core.take_unsent()), ["checkin"]);
}

#[test]
fn a_grant_nobody_waits_for_is_given_back() {
    let (mut core, t0) = connected(None);
    let answer = call(&mut core, checkout(None), t0);
    let (id, client_ref) = only_checkout(&core.take_unsent());
    drop(answer); // the caller timed out
    core.response(respond(id, granted(4, client_ref)), t0);
    let sent = core.take_unsent();
    assert_eq!(kinds(&sent), ["checkin"]);
    assert!(matches!(&sent[0].kind, Some(request::Kind::Checkin(c)) if c.lease_id == 4));
    // So is a grant notice for a wait no longer tracked.
    core.response(respond(0, granted(8, 77)), t0);
    assert!(
        matches!(&core.take_unsent()[0].kind, Some(request::Kind::Checkin(c)) if c.lease_id == 8)
    );
}

#[test]
fn a_typed_lease_lost_notice_reads_by_its_cause() {
    let (mut core, t0) = connected(None);
    let one = hold(&mut core, 1, t0);
    let notice = response::Kind::LeaseLost(usher_proto::LeaseLost {
        lease_id: 1,
        reason: "taken back by alice".into(),
        cause: usher_proto::LossCause::RemovedByAdministrator as i32,
    });
    core.response(respond(0, notice), t0);
    let reason = lost_reason(&one).expect("lost");
    assert_eq!(
        crate::LossReason::from_message(&reason),
        crate::LossReason::RemovedByAdministrator
    );
}

#[test]
fn a_lease_lost_notice_reaches_its_license() {
    let (mut core, t0) = connected(None);
    let one = hold(&mut core, 1, t0);
    let two = hold(&mut core, 2, t0);
    let notice = response::Kind::LeaseLost(usher_proto::LeaseLost {
        lease_id: 2,
        reason: "revoked by an administrator".into(),
        cause: 0, // an older server's notice: the text is kept as it is
    });
    core.response(respond(0, notice), t0);
    assert_eq!(lost_reason(&one), None);
    assert_eq!(
        lost_reason(&two).as_deref(),
        Some("revoked by an administrator")
    );
    // A lost lease is not checked in again when its License is dropped.
    core.call(Call::Release { lease_id: 2 }, t0);
    assert!(core.take_unsent().is_empty());
}

#[test]
fn an_idle_client_detaches_to_keepalives_and_comes_back() {
    let after = Duration::from_secs(60);
    let (mut core, t0) = connected(Some(after));
    let up = core.subscribe_connected();
    let held = hold(&mut core, 1, t0);
    assert_eq!(core.detach_deadline(), Some(t0 + after));
    // A call postpones it.
    let t1 = t0 + Duration::from_secs(30);
    let mut ack = call(&mut core, heartbeat(), t1);
    assert_eq!(core.detach_deadline(), None, "not with a request in flight");
    let id = core.take_unsent()[0].id;
    core.response(
        respond(id, response::Kind::HeartbeatAck(Default::default())),
        t1,
    );
    assert!(ack.try_recv().is_ok());
    assert_eq!(core.detach_deadline(), Some(t1 + after));
    core.ask_detach();
    let sent = core.take_unsent();
    assert_eq!(kinds(&sent), ["detach"]);
    let detached = response::Kind::Detached(usher_proto::Detached {
        keepalive_key: vec![3; usher_proto::udp::KEEPALIVE_KEY_LEN],
        udp_port: 7576,
        keepalive_interval_ms: 2_000,
    });
    let udp: SocketAddr = "127.0.0.1:7576".parse().expect("an address");
    assert_eq!(
        core.response(respond(sent[0].id, detached), t1 + after),
        Next::Detach(Keepalives {
            udp,
            session: SESSION,
            key: [3; usher_proto::udp::KEEPALIVE_KEY_LEN],
            interval: Duration::from_secs(2),
        })
    );
    assert_eq!(core.link(), &Link::Detached { udp });
    assert!(*up.borrow(), "a detached session counts as connected");
    // The application asks for something: back over TCP, resuming the session.
    let t2 = t1 + after + Duration::from_secs(600);
    core.leave_detached(t2, false);
    let _status = call(&mut core, heartbeat(), t2);
    assert!(matches!(core.link(), Link::Reconnecting { .. }));
    assert!(!*up.borrow());
    assert_eq!(core.hello().resume_session, SESSION);
    core.welcomed(&welcome(true, &[1]), &server(), Some(peer()), t2);
    core.reconnected(t2);
    assert_eq!(kinds(&core.take_unsent()), ["heartbeat"]);
    assert_eq!(lost_reason(&held), None);
}

#[test]
fn a_detach_with_requests_in_flight_reconnects_at_once() {
    let (mut core, t0) = connected(Some(Duration::from_secs(1)));
    core.ask_detach();
    let detach_id = core.take_unsent()[0].id;
    let _answer = call(&mut core, heartbeat(), t0);
    let detached = response::Kind::Detached(usher_proto::Detached {
        keepalive_key: vec![1; usher_proto::udp::KEEPALIVE_KEY_LEN],
        udp_port: 7576,
        keepalive_interval_ms: 1_000,
    });
    assert_eq!(
        core.response(respond(detach_id, detached), t0),
        Next::Reconnect
    );
    assert!(matches!(core.link(), Link::Reconnecting { .. }));
}

#[test]
fn a_server_without_keepalives_keeps_the_client_connected() {
    // The server refuses to detach.
    let (mut core, t0) = connected(Some(Duration::from_secs(1)));
    core.ask_detach();
    let id = core.take_unsent()[0].id;
    let refused = Response::error(id, ErrorCode::BadRequest, "no UDP port");
    assert_eq!(core.response(refused, t0), Next::Send);
    assert_eq!(core.detach_deadline(), None);
    // No keepalive was ever acknowledged.
    let (mut core, t0) = connected(Some(Duration::from_secs(1)));
    core.leave_detached(t0, true);
    core.welcomed(&welcome(true, &[]), &server(), Some(peer()), t0);
    assert_eq!(core.detach_deadline(), None);
    // The keepalive socket could not be opened.
    let (mut core, t0) = connected(Some(Duration::from_secs(1)));
    core.keepalives_failed(t0);
    core.welcomed(&welcome(true, &[]), &server(), Some(peer()), t0);
    assert_eq!(core.detach_deadline(), None);
}

#[test]
fn idleness_is_said_again_after_a_reconnect() {
    let (mut core, t0) = connected(None);
    let _answer = call(
        &mut core,
        request::Kind::Activity(usher_proto::Activity { idle: true }),
        t0,
    );
    let _ = core.take_unsent();
    core.connection_lost(t0);
    core.welcomed(&welcome(true, &[]), &server(), Some(peer()), t0);
    core.reconnected(t0);
    // The unanswered one is resent; no second one is added.
    assert_eq!(kinds(&core.take_unsent()), ["activity"]);
}

#[test]
fn silence_and_goodbye() {
    let (mut core, t0) = connected(None);
    // Heartbeat 1 s, TTL 10 s: silent for 3 s means dead.
    assert_eq!(core.silence_deadline(), t0 + Duration::from_secs(3));
    let t1 = t0 + Duration::from_secs(2);
    core.response(
        respond(0, response::Kind::HeartbeatAck(Default::default())),
        t1,
    );
    assert_eq!(core.silence_deadline(), t1 + Duration::from_secs(3));
    let _answer = call(&mut core, heartbeat(), t1);
    let (sent, id) = core.goodbye();
    assert_eq!(kinds(&sent), ["heartbeat", "goodbye"]);
    assert_eq!(sent[1].id, id);
}
