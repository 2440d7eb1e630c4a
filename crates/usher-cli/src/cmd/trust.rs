//! `usher trust`: the server ids remembered by trust on first use (see
//! `usher_client::known_servers`).

use clap::Args;
use usher_client::known_servers;

use crate::exit::{FAILURE, Failure, OK};

/// Arguments of `usher trust`.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Forget the id remembered for this server (`PORT@HOST`, as in USHER_LICENSE), so the
    /// next connection accepts and remembers the id it finds: after a planned change of
    /// the server's key.
    #[arg(long, value_name = "PORT@HOST")]
    pub forget: Option<String>,
}

/// Lists the remembered servers, or forgets one.
pub fn run(args: TrustArgs) -> Result<u8, Failure> {
    let Some(path) = known_servers::default_path() else {
        return Err(Failure::new(
            FAILURE,
            format!(
                "no known-servers file: set {} or HOME",
                known_servers::ENV_KNOWN_SERVERS
            ),
        ));
    };
    let failed = |e: std::io::Error| Failure::new(FAILURE, format!("{}: {e}", path.display()));
    match args.forget {
        Some(addr) => match known_servers::forget(&path, &addr).map_err(failed)? {
            Some(id) => {
                println!("forgot {id} for {addr}; the next connection remembers the id it finds");
                Ok(OK)
            }
            None => Err(Failure::new(
                FAILURE,
                format!("{addr} is not in {}", path.display()),
            )),
        },
        None => {
            for (addr, id) in known_servers::list(&path).map_err(failed)? {
                println!("{addr} {id}");
            }
            Ok(OK)
        }
    }
}
