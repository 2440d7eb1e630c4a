//! `usher run FEATURE -- COMMAND`: hold a seat while a command runs.

use std::os::unix::process::ExitStatusExt;

use clap::Args;
use usher_client::Client;

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
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Checks out, runs the command, checks in, and returns the command's exit status
/// (128 + N if it was killed by signal N).
pub async fn run(server: Option<String>, args: RunArgs) -> Result<u8, Failure> {
    let mut config = super::client_config(server.as_deref())?;
    config.identity.program = args.command[0].clone();
    let client = Client::connect(config).await?;
    let license = client
        .checkout(&args.feature, &args.version, args.count)
        .await?;
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
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        _ => FAILURE,
    };
    Ok(code)
}
