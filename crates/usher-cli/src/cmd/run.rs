//! `usher run FEATURE -- COMMAND`: hold a seat while a command runs.

use std::os::unix::process::ExitStatusExt;

use std::time::Duration;

use clap::Args;
use tokio::sync::watch;
use usher_client::{Client, QueueWait};

use crate::exit::{FAILURE, Failure};

/// Arguments of `usher run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Feature to check out.
    pub feature: String,
    /// Minimum version needed.
    #[arg(long, default_value = "")]
    pub version: String,
    /// Seats to hold.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// If every seat is taken, wait in the server's queue for up to SECONDS (0: as long
    /// as it takes) instead of failing.
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
    /// The vendor's public key file (repeatable). With it, a seat of FEATURE borrowed on
    /// this host (`usher borrow`) is used first, offline, once its token verifies; and a
    /// seat from the server is accepted only with a statement, signed by the server, that
    /// verifies against these keys (a genuine license, bound to that server, answering
    /// this checkout).
    #[arg(long = "vendor-key", value_name = "FILE")]
    pub vendor_keys: Vec<std::path::PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Checks out, runs the command, checks in, and returns the command's exit status
/// (128 + N if it was killed by signal N).
pub async fn run(server: super::Target, args: RunArgs) -> Result<u8, Failure> {
    let keys = args
        .vendor_keys
        .iter()
        .map(|p| {
            usher_license::VendorPublicKey::read_from(p)
                .map_err(|e| Failure::new(FAILURE, format!("{}: {e}", p.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(code) = run_borrowed(&args, &keys).await? {
        return Ok(code);
    }
    let mut config = super::client_config(&server)?;
    config.identity.program = args.command[0].clone();
    config.vendor_keys = keys;
    let client = Client::connect(config).await?;
    let wait = match args.wait {
        None => QueueWait::No,
        Some(0) => QueueWait::Indefinitely,
        Some(secs) => QueueWait::For(Duration::from_secs(secs)),
    };
    let (position_tx, mut position_rx) = watch::channel(0u32);
    let checkout = client.checkout_waiting(
        &args.feature,
        &args.version,
        args.count,
        wait,
        Some(position_tx),
    );
    let license = match wait_for(checkout, &mut position_rx, &args.feature).await {
        Ok(license) => license,
        Err(e) => {
            // Say goodbye before exiting, so nothing of ours lingers in the queue.
            client.close().await;
            return Err(e.into());
        }
    };
    let mut child = match tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            // Check in before saying so: the seat must not wait out the reconnect grace.
            drop(license);
            client.close().await;
            return Err(Failure::new(
                FAILURE,
                format!("cannot run {:?}: {e}", args.command[0]),
            ));
        }
    };
    let status = tokio::select! {
        status = child.wait() => status,
        reason = license.lost() => {
            eprintln!("usher: warning: the license for {:?} was lost: {reason}", args.feature);
            child.wait().await
        }
    }
    .map_err(|e| Failure::new(FAILURE, format!("waiting for {:?}: {e}", args.command[0])))?;
    drop(license);
    client.close().await;
    Ok(exit_code(status))
}

/// The exit code that reports a child's status: its own, or 128 + N if signal N killed it.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        _ => FAILURE,
    }
}

/// Runs the command on a seat borrowed on this host, if vendor keys were given and its
/// token verifies; `None` to go to the server instead.
async fn run_borrowed(
    args: &RunArgs,
    keys: &[usher_license::VendorPublicKey],
) -> Result<Option<u8>, Failure> {
    if keys.is_empty() {
        return Ok(None);
    }
    let store = usher_client::borrow::BorrowStore::user_default();
    let borrowed = match store.check(&args.feature, &args.version, keys) {
        Ok(b) if b.count >= args.count => b,
        Ok(_) | Err(usher_client::borrow::BorrowError::NotBorrowed { .. }) => return Ok(None),
        Err(e) => {
            eprintln!("usher: warning: {e}; asking the server instead");
            return Ok(None);
        }
    };
    eprintln!(
        "usher: using the seat of {:?} borrowed from {} (lease {})",
        borrowed.feature,
        borrowed.server,
        usher_license::words::lease_handle(borrowed.lease_id)
    );
    let status = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .status()
        .await
        .map_err(|e| Failure::new(FAILURE, format!("cannot run {:?}: {e}", args.command[0])))?;
    Ok(Some(exit_code(status)))
}

/// Awaits a checkout, saying on stderr whenever the server reports its queue position.
async fn wait_for(
    checkout: impl std::future::Future<
        Output = Result<usher_client::License, usher_client::ClientError>,
    >,
    position: &mut watch::Receiver<u32>,
    feature: &str,
) -> Result<usher_client::License, usher_client::ClientError> {
    tokio::pin!(checkout);
    let mut last = 0;
    loop {
        tokio::select! {
            license = &mut checkout => return license,
            changed = position.changed() => {
                if changed.is_err() {
                    return checkout.await;
                }
                let now = *position.borrow_and_update();
                if now != last {
                    last = now;
                    eprintln!(
                        "usher: every seat of {feature:?} is taken; waiting in the queue (position {now})"
                    );
                }
            }
        }
    }
}
