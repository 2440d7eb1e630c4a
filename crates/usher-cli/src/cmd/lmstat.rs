//! `usher lmstat` (also `lmstat ...` and `lmutil lmstat ...`).

use std::process::ExitCode;
use std::time::Duration;

use usher_client::{Client, ServerAddr};

use crate::exit;
use crate::lmstat::{self, LmstatArgs, LmstatMode};

/// Runs lmstat with FlexLM's arguments and prints FlexLM's text. `target`'s server is
/// used when the arguments name none (`usher -c SPEC lmstat ...`, where the global `-c`
/// took it); its transport settings always apply.
pub fn main(args: &[String], target: super::Target) -> ExitCode {
    let parsed = match lmstat::parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            eprint!("{}", lmstat::USAGE);
            return ExitCode::from(exit::USAGE);
        }
    };
    let mut parsed = parsed;
    if parsed.server.is_none() {
        parsed.server = target.server.clone();
    }
    match parsed.mode() {
        LmstatMode::Help => {
            print!("{}", lmstat::USAGE);
            ExitCode::SUCCESS
        }
        LmstatMode::Version => {
            print!("{}", lmstat::render_version());
            ExitCode::SUCCESS
        }
        LmstatMode::Info | LmstatMode::Status => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a single-threaded tokio runtime succeeds");
            runtime.block_on(query(parsed, &target))
        }
    }
}

/// The servers named by `-c`: `port@host` lists, or a license file whose SERVER lines
/// name them; otherwise `USHER_LICENSE`, else `1648@localhost`.
fn servers(spec: Option<&str>) -> Result<(Vec<ServerAddr>, String), String> {
    let spec = spec
        .map(str::to_string)
        .or_else(|| {
            std::env::var(usher_client::ENV_LICENSE)
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| format!("{}@localhost", usher_proto::DEFAULT_PORT));
    let path = std::path::Path::new(&spec);
    if !spec.contains('@') && path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{spec}: {e}"))?;
        let file = usher_license::parse(&spec, &text).map_err(|e| e.to_string())?;
        let servers: Vec<ServerAddr> = file
            .servers
            .iter()
            .map(|s| ServerAddr {
                host: s.host.clone(),
                port: s.port.unwrap_or(usher_proto::DEFAULT_PORT),
            })
            .collect();
        if servers.is_empty() {
            return Err(format!("{spec}: no SERVER line names a license server"));
        }
        let shown = servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        return Ok((servers, shown));
    }
    let servers = usher_client::parse_servers(&spec).map_err(|e| e.to_string())?;
    let shown = servers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    Ok((servers, shown))
}

async fn query(args: LmstatArgs, target: &super::Target) -> ExitCode {
    let now = chrono::Local::now();
    let (list, shown) = match servers(args.server.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lmstat: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let token = match target.admin_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("lmstat: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let mut config = super::client_config_for(list, target);
    config.query_only = true;
    if let Some(t) = args.timeout_secs {
        config.connect_timeout = Duration::from_secs(t.max(1));
    }
    let feature = match args.mode() {
        LmstatMode::Info => args.info_feature.clone(),
        _ => args.feature.clone(),
    };
    let fetched = async {
        let client = Client::connect(config).await?;
        let fetched =
            super::fetch_status(&client, feature.as_deref().unwrap_or(""), token.as_deref()).await;
        client.close().await;
        fetched
    };
    match fetched.await {
        Ok(report) => {
            let text = match args.mode() {
                LmstatMode::Info => lmstat::render_info(&report, &args, now),
                _ => lmstat::render_status(&report, &shown, &args, now, &chrono::Local),
            };
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(
            e @ (usher_client::ClientError::TokenNeedsTls
            | usher_client::ClientError::Server { .. }),
        ) => {
            // The server answered (or the token stayed here): not "cannot connect".
            eprintln!("lmstat: {e}");
            ExitCode::from(exit::FAILURE)
        }
        Err(e) => {
            let detail = match &e {
                usher_client::ClientError::Unreachable { detail, .. } => detail.clone(),
                other => other.to_string(),
            };
            print!("{}", lmstat::render_unreachable(&shown, &detail, now));
            ExitCode::from(exit::UNREACHABLE)
        }
    }
}
