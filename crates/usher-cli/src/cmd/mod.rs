//! One module per subcommand.

pub mod admin;
pub mod borrow;
pub mod discover;
pub mod hostid;
pub mod license;
pub mod lmstat;
pub mod log;
pub mod report;
pub mod run;
pub mod status;
pub mod vendor;

use usher_client::{ClientConfig, ClientError};

/// The servers the command line names, and how to reach them.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `-c/--server` (or `USHER_LICENSE`, which clap already read).
    pub server: Option<String>,
    /// `--server-id` (or `USHER_SERVER_ID`): the server ids to accept.
    pub server_ids: Vec<String>,
    /// `--insecure-plaintext` (or `USHER_INSECURE_PLAINTEXT`): no TLS.
    pub insecure_plaintext: bool,
}

impl Target {
    /// The transport settings of the environment alone (`USHER_SERVER_ID`,
    /// `USHER_INSECURE_PLAINTEXT`), for the FlexLM-named entry points that take no usher
    /// options.
    pub fn from_env() -> Target {
        let mut config = ClientConfig::new(Vec::new());
        config.transport_from_env();
        Target {
            server: None,
            server_ids: config.server_ids,
            insecure_plaintext: config.insecure_plaintext,
        }
    }

    /// Sets how `config` reaches the servers: pinned ids, TLS or not.
    pub fn apply(&self, config: &mut ClientConfig) {
        config.server_ids = usher_client::parse_server_ids(&self.server_ids.join(","));
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
    let mut config = ClientConfig::new(servers);
    target.apply(&mut config);
    Ok(config)
}
