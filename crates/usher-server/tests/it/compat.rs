//! Wire compatibility: clients older and newer than this server, and responses from a
//! server newer than this client, all keep working.

use prost::Message;
use usher_proto::{ErrorCode, Request, Response, request, response};

use crate::util::*;

/// What a first-generation client sent: the fewest fields that ever existed.
mod old {
    /// A status report as a client that predates token-based features reads it.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusReport {
        #[prost(message, repeated, tag = "4")]
        pub features: Vec<FeatureStatus>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FeatureStatus {
        #[prost(string, tag = "1")]
        pub feature: String,
        #[prost(uint32, tag = "5")]
        pub total: u32,
        #[prost(uint32, tag = "6")]
        pub in_use: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Hello {
        #[prost(string, tag = "1")]
        pub magic: String,
        #[prost(uint32, tag = "2")]
        pub protocol_version: u32,
        #[prost(string, tag = "4")]
        pub user: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Checkout {
        #[prost(string, tag = "1")]
        pub feature: String,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "10")]
        Hello(Hello),
        #[prost(message, tag = "11")]
        Checkout(Checkout),
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(oneof = "Kind", tags = "10, 11")]
        pub kind: Option<Kind>,
    }
}

/// What a client from the future may send: extra fields and request kinds we do not know.
mod future {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Extra {
        #[prost(string, tag = "1")]
        pub note: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Checkout {
        #[prost(string, tag = "1")]
        pub feature: String,
        #[prost(uint32, tag = "3")]
        pub count: u32,
        #[prost(string, tag = "99")]
        pub project: String,
        #[prost(message, optional, tag = "100")]
        pub extra: Option<Extra>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Teleport {
        #[prost(string, tag = "1")]
        pub destination: String,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "11")]
        Checkout(Checkout),
        #[prost(message, tag = "200")]
        Teleport(Teleport),
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(oneof = "Kind", tags = "11, 200")]
        pub kind: Option<Kind>,
        #[prost(string, tag = "50")]
        pub trace_id: String,
    }
    /// A grant from a future server, with a field this build has never heard of.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Granted {
        #[prost(fixed64, tag = "1")]
        pub lease_id: u64,
        #[prost(string, tag = "2")]
        pub feature: String,
        #[prost(bytes = "vec", tag = "40")]
        pub server_signature: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum ResponseKind {
        #[prost(message, tag = "11")]
        Granted(Granted),
        #[prost(message, tag = "300")]
        Hologram(Extra),
    }
    /// A response from a future server: kinds and fields this build has never heard of.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(oneof = "ResponseKind", tags = "11, 300")]
        pub kind: Option<ResponseKind>,
        #[prost(uint64, tag = "301")]
        pub stardate: u64,
    }
}

async fn send_raw<M: Message>(conn: &mut RawConn, msg: &M) {
    conn.send_bytes(&usher_proto::encode_frame(msg))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_client_is_served() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let mut conn = RawConn::connect(server.addr).await;
    let hello = old::Hello {
        magic: "usher".into(),
        protocol_version: 1,
        user: "old".into(),
    };
    send_raw(
        &mut conn,
        &old::Request {
            id: 1,
            kind: Some(old::Kind::Hello(hello)),
        },
    )
    .await;
    let welcome = conn.recv().await.and_then(|r| r.kind);
    assert!(
        matches!(welcome, Some(response::Kind::Welcome(_))),
        "{welcome:?}"
    );
    let co = old::Checkout {
        feature: "cad".into(),
    };
    send_raw(
        &mut conn,
        &old::Request {
            id: 2,
            kind: Some(old::Kind::Checkout(co)),
        },
    )
    .await;
    match conn.recv().await.and_then(|r| r.kind) {
        // An old client has no count field: it gets one seat.
        Some(response::Kind::Granted(g)) => assert_eq!(g.count, 1),
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_client_is_served_and_its_unknown_requests_get_a_polite_error() {
    let lic = Licensed::new(LICENSE);
    let server = TestServer::start(lic.config()).await;
    let mut conn = RawConn::connect(server.addr).await;
    conn.hello("future").await;

    let co = future::Checkout {
        feature: "cad".into(),
        count: 2,
        project: "apollo".into(),
        extra: Some(future::Extra {
            note: "ignored".into(),
        }),
    };
    let req = future::Request {
        id: 2,
        kind: Some(future::Kind::Checkout(co)),
        trace_id: "t".into(),
    };
    send_raw(&mut conn, &req).await;
    match conn.recv().await.and_then(|r| r.kind) {
        Some(response::Kind::Granted(g)) => assert_eq!(g.count, 2),
        other => panic!("unknown fields must be ignored: {other:?}"),
    }

    let tp = future::Teleport {
        destination: "mars".into(),
    };
    send_raw(
        &mut conn,
        &future::Request {
            id: 3,
            kind: Some(future::Kind::Teleport(tp)),
            trace_id: String::new(),
        },
    )
    .await;
    let resp = conn.recv().await.expect("an answer, not a hang-up");
    assert_eq!(resp.id, 3);
    match resp.kind {
        Some(response::Kind::Error(e)) => assert_eq!(e.code(), ErrorCode::UnknownRequest),
        other => panic!("expected UnknownRequest, got {other:?}"),
    }
    // The connection is still usable.
    conn.send(4, request::Kind::Heartbeat(usher_proto::Heartbeat {}))
        .await;
    let ack = conn.recv().await.and_then(|r| r.kind);
    assert!(
        matches!(ack, Some(response::Kind::HeartbeatAck(_))),
        "{ack:?}"
    );
}

#[test]
fn this_client_reads_a_newer_servers_responses() {
    let bytes = future::Response {
        id: 9,
        kind: Some(future::ResponseKind::Hologram(future::Extra {
            note: "x".into(),
        })),
        stardate: 41_153,
    }
    .encode_to_vec();
    let decoded = Response::decode(bytes.as_slice()).expect("unknown fields are skipped");
    assert_eq!(decoded.id, 9);
    assert!(
        decoded.kind.is_none(),
        "an unknown kind reads as none: {decoded:?}"
    );

    // A known kind carrying fields this build does not know keeps the fields it does.
    let bytes = future::Response {
        id: 10,
        kind: Some(future::ResponseKind::Granted(future::Granted {
            lease_id: 77,
            feature: "cad".into(),
            server_signature: vec![1; 64],
        })),
        stardate: 41_154,
    }
    .encode_to_vec();
    match Response::decode(bytes.as_slice()).expect("unknown fields are skipped") {
        Response {
            id: 10,
            kind: Some(response::Kind::Granted(g)),
        } => assert_eq!((g.lease_id, g.feature.as_str()), (77, "cad")),
        other => panic!("expected the grant, got {other:?}"),
    }

    // And a request from this build decodes in an older server (fields it lacks skipped).
    let now = Request {
        id: 5,
        kind: Some(checkout("cad", 3, 42)),
    }
    .encode_to_vec();
    let then = old::Request::decode(now.as_slice()).unwrap();
    assert!(matches!(then.kind, Some(old::Kind::Checkout(c)) if c.feature == "cad"));
}

/// A real server's status with a token-based feature in use reads, in a client that
/// predates them, as its pools with their seats: the new field is skipped.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_client_reads_a_status_with_token_based_features() {
    let lic = Licensed::new(TOKEN_LICENSE);
    let server = TestServer::start(lic.config()).await;
    let _held = server.client().await.checkout("sample").await.unwrap();
    // The report as the wire carries it, not as the client reads it.
    let mut conn = RawConn::connect(server.addr).await;
    conn.hello("watcher").await;
    let status = request::Kind::Status(usher_proto::StatusRequest::default());
    let report = match conn.call(2, status).await {
        response::Kind::Status(r) => r,
        other => panic!("expected a status, got {other:?}"),
    };
    assert_eq!(report.token_features.len(), 1, "{report:#?}");
    let then = old::StatusReport::decode(report.encode_to_vec().as_slice())
        .expect("unknown fields are skipped");
    assert_eq!(
        then.features,
        [old::FeatureStatus {
            feature: "units".into(),
            total: 6,
            in_use: 5,
        }]
    );
}
