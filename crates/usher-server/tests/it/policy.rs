//! The policy file end to end: enforced from the start, reloaded by an administrator, a
//! broken file refused with its line and column while the policy in force stays.

use std::time::Duration;

use usher_client::ClientError;
use usher_client::admin::AdminConnection;
use usher_proto::{DenyReason, Reload, request, response};

use crate::util::*;

/// What a raw client named `user` is told when it asks for one seat of `feature`.
async fn ask(conn: &mut RawConn, id: u64, feature: &str) -> response::Kind {
    conn.call(id, checkout(feature, 1, id)).await
}

fn denial(kind: &response::Kind) -> Option<DenyReason> {
    match kind {
        response::Kind::Denied(d) => Some(d.reason()),
        _ => None,
    }
}

async fn reload(config: &usher_server::Config) -> Result<response::Kind, ClientError> {
    let mut admin = AdminConnection::connect(&config.admin_socket(), Duration::from_secs(10))
        .await
        .unwrap();
    admin.call(request::Kind::Reload(Reload {})).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_is_enforced_and_a_bad_reload_keeps_it_in_force() {
    let lic = Licensed::new(LICENSE);
    let policy = lic.tmp.path().join("usher.opt");
    std::fs::write(&policy, "EXCLUDE cad USER mallory\nMAX 1 sim USER alice\n").unwrap();
    let mut config = lic.config();
    config.policy_file = Some(policy.clone());
    let server = TestServer::start(config.clone()).await;

    let mut mallory = RawConn::connect(server.addr).await;
    mallory.hello("mallory").await;
    let refused = ask(&mut mallory, 2, "cad").await;
    assert_eq!(denial(&refused), Some(DenyReason::Excluded), "{refused:?}");
    let mut alice = RawConn::connect(server.addr).await;
    alice.hello("alice").await;
    let first = ask(&mut alice, 2, "sim").await;
    assert!(matches!(first, response::Kind::Granted(_)), "{first:?}");
    let second = ask(&mut alice, 3, "sim").await;
    assert_eq!(denial(&second), Some(DenyReason::MaxReached), "{second:?}");
    let granted_cad = ask(&mut alice, 4, "cad").await;
    assert!(
        matches!(granted_cad, response::Kind::Granted(_)),
        "{granted_cad:?}"
    );

    // A broken policy is refused with its line and column; the old one stays in force.
    std::fs::write(&policy, "EXCLUDE cad USER mallory\nFROBNICATE cad\n").unwrap();
    match reload(&config).await {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, usher_client::ServerErrorCode::BadRequest);
            assert!(
                message.contains("usher.opt:2:1: unknown keyword"),
                "{message}"
            );
        }
        other => panic!("expected the reload to be refused, got {other:?}"),
    }
    let still = ask(&mut mallory, 3, "cad").await;
    assert_eq!(denial(&still), Some(DenyReason::Excluded), "{still:?}");

    // A good one takes effect at once, and revokes nothing.
    std::fs::write(&policy, "MAX 2 sim USER alice\n").unwrap();
    let done = reload(&config).await.unwrap();
    assert!(matches!(done, response::Kind::Reloaded(_)), "{done:?}");
    let now_allowed = ask(&mut mallory, 4, "cad").await;
    assert!(
        matches!(now_allowed, response::Kind::Granted(_)),
        "{now_allowed:?}"
    );
    let more = ask(&mut alice, 5, "sim").await;
    assert!(matches!(more, response::Kind::Granted(_)), "{more:?}");
    assert_eq!(in_use(&server.status().await, "cad"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_policy_file_keeps_the_server_from_starting() {
    let lic = Licensed::new(LICENSE);
    let policy = lic.tmp.path().join("usher.opt");
    std::fs::write(
        &policy,
        "GROUP eng alice\nRESERVE 2 cad GROUP engineering\n",
    )
    .unwrap();
    let mut config = lic.config();
    config.policy_file = Some(policy);
    let err = usher_server::Server::bind(config)
        .await
        .err()
        .expect("a broken policy is refused")
        .to_string();
    assert!(
        err.contains("usher.opt:2:21: GROUP engineering is not defined"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_application_loses_its_seat_after_the_policy_timeout() {
    let lic = Licensed::new(LICENSE);
    let policy = lic.tmp.path().join("usher.opt");
    std::fs::write(&policy, "TIMEOUT cad 1\n").unwrap();
    let mut config = lic.config();
    config.policy_file = Some(policy.clone());
    // The default floor is 15 minutes; a test cannot wait that long.
    config.min_timeout = Duration::ZERO;
    let server = TestServer::start(config.clone()).await;

    let idle = server.client().await;
    let busy = server.client().await;
    let idle_seat = idle.checkout("cad").await.unwrap();
    let busy_seat = busy.checkout("cad").await.unwrap();
    idle.set_idle(true).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), idle_seat.lost())
        .await
        .expect("the idle client's seat is reclaimed");
    assert_eq!(reason, usher_client::LossReason::IdleReclaimed, "{reason}");
    assert!(reason.to_string().contains("TIMEOUT"), "{reason}");
    eventually(
        Duration::from_secs(20),
        "the reclaimed seat to be free",
        || async { (in_use(&server.status().await, "cad") == 1).then_some(()) },
    )
    .await;
    assert!(
        busy_seat.lost_reason().is_none(),
        "the active client keeps its seat"
    );

    // Active again, it checks out anew and keeps the seat.
    idle.set_idle(false).await.unwrap();
    let again = idle.checkout("cad").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(again.lost_reason().is_none(), "{:?}", again.lost_reason());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_below_the_floor_is_raised_with_a_warning() {
    let lic = Licensed::new(LICENSE);
    let policy = lic.tmp.path().join("usher.opt");
    std::fs::write(&policy, "TIMEOUTALL 3600\n").unwrap();
    let mut config = lic.config();
    config.policy_file = Some(policy.clone());
    let _server = TestServer::start(config.clone()).await;
    std::fs::write(&policy, "# short\nTIMEOUT cad 60\n").unwrap();
    let Ok(response::Kind::Reloaded(done)) = reload(&config).await else {
        panic!("the reload is accepted");
    };
    let at = format!("{}:2: ", policy.display());
    assert!(
        done.warnings.iter().any(|w| w.starts_with(&at)
            && w.contains("TIMEOUT of 60 s is below the server's minimum; using 900 s")),
        "the warning names the file and line {at:?}: {:?}",
        done.warnings
    );
}

/// A rule for a feature no license has does nothing: the server says so, naming the file,
/// line and column, at start (`usherd check` uses the same load) and on reload; rules for
/// licensed features draw no warning.
#[tokio::test(flavor = "multi_thread")]
async fn a_rule_for_a_feature_no_license_has_is_warned_about_with_its_line() {
    let lic = Licensed::new(LICENSE);
    let policy = lic.tmp.path().join("usher.opt");
    std::fs::write(&policy, "MAX 1 cad USER bob\n").unwrap();
    let mut config = lic.config();
    config.policy_file = Some(policy.clone());
    let loaded = usher_server::licenses::load_all(
        &config.license_files,
        &config.vendor_keys,
        Some(&policy),
        config.min_timeout,
        "USHER_ID=none",
        chrono::Utc::now().date_naive(),
    )
    .unwrap();
    assert_eq!(loaded.policy_warnings, Vec::<String>::new());
    let _server = TestServer::start(config.clone()).await;

    std::fs::write(
        &policy,
        "MAX 1 cad USER bob\nMAX 2 nosuchfeature USER bob\nTIMEOUT cda 3600\n",
    )
    .unwrap();
    let Ok(response::Kind::Reloaded(done)) = reload(&config).await else {
        panic!("the reload is accepted");
    };
    let name = policy.display();
    for expected in [
        format!("{name}:2:7: MAX names feature \"nosuchfeature\", which no license"),
        format!("{name}:3:9: TIMEOUT names feature \"cda\", which no license"),
    ] {
        assert!(
            done.warnings.iter().any(|w| w.starts_with(&expected)),
            "expected {expected:?} in {:?}",
            done.warnings
        );
    }
    assert_eq!(done.warnings.len(), 2, "{:?}", done.warnings);
}

/// Policy, license and config files are read only when they are regular files within
/// their size limit: a FIFO, `/dev/zero` or an oversized file is refused with a clear
/// error at start and on reload, at once (a FIFO without a writer does not hang the
/// reload), and the server still shuts down promptly after a refused reload.
#[tokio::test(flavor = "multi_thread")]
async fn fifos_devices_and_oversized_files_are_refused_at_start_and_on_reload() {
    use usher_license::input::{MAX_CONFIG_FILE, MAX_POLICY_FILE};
    let lic = Licensed::new(LICENSE);
    let fifo = lic.tmp.path().join("usher.opt");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = lic.tmp.path().join("big.opt");
    std::fs::write(&big, vec![b'#'; MAX_POLICY_FILE as usize + 1]).unwrap();
    let refused_start = |config: usher_server::Config| async move {
        match tokio::time::timeout(Duration::from_secs(10), usher_server::Server::bind(config))
            .await
            .expect("start is refused at once, not hung")
        {
            Ok(_) => panic!("the server started"),
            Err(e) => e.to_string(),
        }
    };
    let mut config = lic.config();
    config.policy_file = Some(fifo.clone());
    let err = refused_start(config).await;
    assert!(err.contains("usher.opt") && err.contains("FIFO"), "{err}");
    let mut config = lic.config();
    config.policy_file = Some(big.clone());
    let err = refused_start(config).await;
    assert!(err.contains("bytes allowed"), "{err}");
    let mut config = lic.config();
    config.license_files = vec!["/dev/zero".into()];
    let err = refused_start(config).await;
    assert!(err.contains("/dev/zero") && err.contains("device"), "{err}");
    let big_config = lic.tmp.path().join("usherd.toml");
    std::fs::write(&big_config, vec![b'#'; MAX_CONFIG_FILE as usize + 1]).unwrap();
    let err = usher_server::config::FileConfig::read(&big_config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bytes allowed"), "{err}");

    // On reload: the policy file replaced by a FIFO, then by /dev/zero.
    let policy = lic.tmp.path().join("good.opt");
    std::fs::write(&policy, "MAX 1 sim USER alice\n").unwrap();
    let mut config = lic.config();
    config.policy_file = Some(policy.clone());
    let server = TestServer::start(config.clone()).await;
    for (replacement, what) in [
        (&fifo, "FIFO"),
        (&std::path::PathBuf::from("/dev/zero"), "device"),
    ] {
        std::fs::remove_file(&policy).unwrap();
        std::os::unix::fs::symlink(replacement, &policy).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), reload(&config))
            .await
            .expect("the reload answers at once");
        match answer {
            Err(ClientError::Server { message, .. }) => {
                assert!(message.contains(what), "{message}")
            }
            other => panic!("expected the reload to be refused, got {other:?}"),
        }
    }
    tokio::time::timeout(Duration::from_secs(15), server.shutdown())
        .await
        .expect("shutdown is not blocked by the refused reload")
        .unwrap();
}
