//! `usher hostid`.

use crate::exit::{Failure, OK};

/// Prints this machine's host ids, one per line, in the form `HOSTID=` accepts.
pub fn run() -> Result<u8, Failure> {
    let ids = usher_license::host_ids();
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
