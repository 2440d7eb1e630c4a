//! One module per subcommand.

pub mod admin;
pub mod backup;
pub mod borrow;
pub mod discover;
pub mod hostid;
pub mod import;
pub mod license;
pub mod lmstat;
pub mod log;
pub mod report;
pub mod run;
pub mod status;
pub mod trust;
pub mod vendor;

use std::path::PathBuf;

use usher_client::StatusReport;
use usher_client::{Client, ClientConfig, ClientError};

/// The servers the command line names, and how to reach them.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `-c/--server` (or `USHER_LICENSE`, which clap already read).
    pub server: Option<String>,
    /// `--server-id` (or `USHER_SERVER_ID`): the server ids to accept.
    pub server_ids: Vec<String>,
    /// `--insecure-plaintext` (or `USHER_INSECURE_PLAINTEXT`): no TLS.
    pub insecure_plaintext: bool,
    /// `--admin-token-file` (or `USHER_ADMIN_TOKEN_FILE`): status as administrators see it.
    pub admin_token_file: Option<PathBuf>,
}

impl Target {
    /// The transport settings of the environment alone (`USHER_SERVER_ID`,
    /// `USHER_INSECURE_PLAINTEXT`, `USHER_ADMIN_TOKEN_FILE`), for the FlexLM-named entry
    /// points that take no usher options.
    pub fn from_env() -> Target {
        let mut config = ClientConfig::new(Vec::new());
        config.transport_from_env();
        Target {
            server: None,
            server_ids: config.server_ids,
            insecure_plaintext: config.insecure_plaintext,
            admin_token_file: std::env::var_os("USHER_ADMIN_TOKEN_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// The admin token from the file the target names, if it names one.
    pub fn admin_token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.admin_token_file else {
            return Ok(None);
        };
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
            Ok(_) => Err(format!("the admin token file {} is empty", path.display())),
            Err(e) => Err(format!(
                "reading the admin token from {}: {e}",
                path.display()
            )),
        }
    }

    /// Sets how `config` reaches the servers: pinned ids (else trust on first use, with
    /// the user's known-servers file), TLS or not.
    pub fn apply(&self, config: &mut ClientConfig) {
        config.server_ids = usher_client::parse_server_ids(&self.server_ids.join(","));
        config.known_servers = usher_client::known_servers::default_path();
        config.insecure_plaintext = self.insecure_plaintext;
    }
}

/// Client configuration for the servers `target` names; with none, the client finds them
/// by discovery (the local network's broadcast address and this host).
pub fn client_config(target: &Target) -> Result<ClientConfig, ClientError> {
    let servers = match target.server.as_deref() {
        Some(s) if !s.trim().is_empty() => usher_client::parse_servers(s)?,
        _ => Vec::new(),
    };
    Ok(client_config_for(servers, target))
}

/// The one way every command builds its client's configuration: the defaults, then every
/// client setting of the environment (`USHER_DETACH_AFTER`, `USHER_SERVER_ID`,
/// `USHER_INSECURE_PLAINTEXT`... as the client library reads them), then the command
/// line's (which clap already merged with the same variables).
pub fn client_config_for(servers: Vec<usher_client::ServerAddr>, target: &Target) -> ClientConfig {
    let mut config = ClientConfig::new(servers);
    config.transport_from_env();
    target.apply(&mut config);
    config
}

/// Usage per feature from `client`: as administrators see it when `admin_token` is given,
/// else as the server shows it to anyone.
pub async fn fetch_status(
    client: &Client,
    feature: &str,
    admin_token: Option<&str>,
) -> Result<StatusReport, ClientError> {
    match admin_token {
        Some(token) => usher_client::admin::status_as_admin(client, feature, token).await,
        None => client.status(feature).await,
    }
}
