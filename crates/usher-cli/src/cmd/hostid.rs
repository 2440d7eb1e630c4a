//! `usher hostid`.

use std::path::PathBuf;

use clap::Args;
use usher_server::config::default_data_dir;

use crate::exit::{Failure, OK};

/// Arguments of `usher hostid`.
#[derive(Debug, Args)]
pub struct HostidArgs {
    /// A server's data directory: also print that server's own id (`USHER_ID=`), the
    /// recommended binding for a server's licenses [default: as usherd's, if it exists].
    #[arg(long, env = "USHERD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Prints this machine's host ids, one per line, in the form `HOSTID=` accepts, and the
/// server identity found in the data directory, if any.
pub fn run(args: HostidArgs) -> Result<u8, Failure> {
    let mut ids = usher_license::host_ids();
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    match usher_server::identity::host_id_in(&dir) {
        Some(id) => ids.insert(0, id),
        None if args.data_dir.is_some() => {
            return Err(Failure::new(
                crate::exit::FAILURE,
                format!(
                    "no server identity in {} (usherd makes it at its first start)",
                    dir.display()
                ),
            ));
        }
        None => {}
    }
    if ids.is_empty() {
        return Err(Failure::new(
            crate::exit::FAILURE,
            "no host ids found on this machine",
        ));
    }
    for id in ids {
        println!("{id}");
    }
    Ok(OK)
}
