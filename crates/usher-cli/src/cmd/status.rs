//! `usher status`.

use clap::Args;
use usher_client::Client;

use crate::exit::{Failure, OK};

/// Arguments of `usher status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this feature.
    pub feature: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints usage per feature.
pub async fn run(server: super::Target, args: StatusArgs) -> Result<u8, Failure> {
    let token = server
        .admin_token()
        .map_err(|e| Failure::new(crate::exit::USAGE, e))?;
    let mut config = super::client_config(&server)?;
    config.query_only = true;
    let client = Client::connect(config).await?;
    let fetched = super::fetch_status(
        &client,
        args.feature.as_deref().unwrap_or(""),
        token.as_deref(),
    )
    .await;
    client.close().await;
    let report = fetched?;
    if args.json {
        let text = serde_json::to_string_pretty(&crate::status_table::render_json(&report))
            .map_err(|e| Failure::new(crate::exit::FAILURE, e.to_string()))?;
        println!("{text}");
    } else {
        print!(
            "{}",
            crate::status_table::render_table(&report, &chrono::Local)
        );
    }
    Ok(OK)
}
