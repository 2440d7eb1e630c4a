//! One module per subcommand.

pub mod admin;
pub mod borrow;
pub mod hostid;
pub mod license;
pub mod lmstat;
pub mod log;
pub mod report;
pub mod run;
pub mod status;
pub mod vendor;

use usher_client::{ClientConfig, ClientError, ServerAddr};

/// Client configuration for `-c/--server` (or `USHER_LICENSE`, which clap already read
/// into `server`), defaulting to `1648@localhost`.
pub fn client_config(server: Option<&str>) -> Result<ClientConfig, ClientError> {
    let servers = match server {
        Some(s) if !s.trim().is_empty() => usher_client::parse_servers(s)?,
        _ => vec![ServerAddr {
            host: "localhost".into(),
            port: usher_proto::DEFAULT_PORT,
        }],
    };
    Ok(ClientConfig::new(servers))
}
