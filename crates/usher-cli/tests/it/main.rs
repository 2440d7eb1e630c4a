//! The `usher` binary end to end against real `usherd` processes.

mod cli;
mod log;
mod util;
