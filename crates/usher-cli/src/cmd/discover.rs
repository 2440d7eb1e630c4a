//! `usher discover`: which license servers answer on the network.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::exit::{FAILURE, Failure, OK, UNREACHABLE};

/// Arguments of `usher discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Where to ask, e.g. 192.168.1.255:1648 (repeatable) [default: the local network's
    /// broadcast address and this host, port 1648].
    #[arg(long = "to", value_name = "ADDR")]
    pub targets: Vec<SocketAddr>,
    /// How long to wait for answers, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub wait: f64,
}

/// Prints one line per server that answered: `PORT@ADDRESS  tls|plaintext  VENDORS`.
pub async fn run(args: DiscoverArgs) -> Result<u8, Failure> {
    let targets = if args.targets.is_empty() {
        usher_client::default_discovery_targets()
    } else {
        args.targets
    };
    let wait = Duration::try_from_secs_f64(args.wait)
        .map_err(|_| Failure::new(crate::exit::USAGE, "--wait must be a number of seconds"))?;
    let found = usher_client::discover(&targets, wait)
        .await
        .map_err(|e| Failure::new(FAILURE, format!("sending the discovery request: {e}")))?;
    if found.is_empty() {
        return Err(Failure::new(
            UNREACHABLE,
            format!("no license server answered within {:?}", wait),
        ));
    }
    for d in found {
        let more = if d.truncated { " ..." } else { "" };
        println!(
            "{}@{}\t{}\t{}{more}",
            d.addr.port(),
            d.addr.ip(),
            if d.tls { "tls" } else { "plaintext" },
            d.vendors.join(",")
        );
    }
    Ok(OK)
}
