//! `usher`: the command-line tool for vendors, administrators and users.
//!
//! Installed (or symlinked) under the name `lmutil` or `lmstat`, it answers FlexLM's
//! `lmutil lmstat ...` / `lmstat ...` command lines with FlexLM-identical text, so
//! monitoring tools that scrape lmstat work unchanged.

mod cmd;
mod exit;
mod lmstat;
mod report;
mod status_table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// usher: open floating licenses.
#[derive(Debug, Parser)]
#[command(name = "usher", version, about)]
struct Cli {
    /// License servers, e.g. 1648@host1,1648@host2 [default: $USHER_LICENSE, else found by UDP discovery].
    #[arg(short = 'c', long = "server", global = true, env = "USHER_LICENSE")]
    server: Option<String>,
    /// Accept only servers with these ids (USHER_ID=..., as `usher hostid` prints on the
    /// server), comma-separated.
    #[arg(
        long = "server-id",
        global = true,
        env = "USHER_SERVER_ID",
        value_delimiter = ','
    )]
    server_ids: Vec<String>,
    /// Talk to the server without TLS (it must allow it too; anyone on the network can
    /// then read and change the traffic).
    #[arg(long, global = true, env = "USHER_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
    /// A file holding the server's admin token (its DATA_DIR/admin/token): `status` and
    /// `lmstat` then show holders and the queue, as administrators see them. Sent only
    /// over TLS or to a server on this host; the server accepts it from its `admin_from`.
    #[arg(long, global = true, env = "USHER_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Vendor tooling: keys and signing.
    #[command(subcommand)]
    Vendor(cmd::vendor::VendorCommand),
    /// Inspect license files.
    #[command(subcommand)]
    License(cmd::license::LicenseCommand),
    /// Print this machine's host ids (for HOSTID= bindings).
    Hostid(cmd::hostid::HostidArgs),
    /// Show usage per feature: totals and who holds what.
    Status(cmd::status::StatusArgs),
    /// FlexLM-compatible `lmstat` (same arguments, same text).
    #[command(disable_help_flag = true)]
    Lmstat {
        /// lmstat arguments, e.g. -a -c 1648@host.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the license servers that answer discovery on the network (UDP port 1648).
    Discover(cmd::discover::DiscoverArgs),
    /// Run a command while holding a license seat; exits with the command's status.
    Run(cmd::run::RunArgs),
    /// Borrow seats for use away from the network (like lmborrow), list them, or give them
    /// back early.
    Borrow(cmd::borrow::BorrowArgs),
    /// Administrator: free a holder's seats (like lmremove).
    Remove(cmd::admin::RemoveArgs),
    /// Administrator: re-read license files without dropping any lease (like lmreread).
    Reload(cmd::admin::AdminTarget),
    /// Administrator: shut the server down gracefully (like lmdown).
    Down(cmd::admin::AdminTarget),
    /// The server's usage log: verify its hash chain, export it.
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
    /// Usage per feature over a period (peak, utilisation, time at 100%, denials, queueing,
    /// seat-hours), from the usage log, with a "do we need more seats?" verdict.
    Report(cmd::report::ReportArgs),
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Called as `lmstat ARGS` or `lmutil lmstat ARGS`: behave as FlexLM's tool.
    if name == "lmstat" {
        return cmd::lmstat::main(&argv[1..], cmd::Target::from_env());
    }
    if name == "lmutil" {
        return match argv.get(1).map(String::as_str) {
            Some("lmstat") => cmd::lmstat::main(&argv[2..], cmd::Target::from_env()),
            other => {
                eprintln!(
                    "lmutil: usher implements the lmstat utility only (got {:?})",
                    other.unwrap_or("")
                );
                ExitCode::from(exit::USAGE)
            }
        };
    }
    init_tracing();
    let cli = Cli::parse();
    let server = cmd::Target {
        server: cli.server,
        server_ids: cli.server_ids,
        insecure_plaintext: cli.insecure_plaintext,
        admin_token_file: cli.admin_token_file,
    };
    match cli.command {
        Command::Vendor(c) => exit::finish(cmd::vendor::run(c)),
        Command::License(c) => exit::finish(cmd::license::run(c)),
        Command::Hostid(args) => exit::finish(cmd::hostid::run(args)),
        Command::Status(args) => exit::finish(runtime().block_on(cmd::status::run(server, args))),
        Command::Lmstat { args } => cmd::lmstat::main(&args, server),
        Command::Discover(args) => exit::finish(runtime().block_on(cmd::discover::run(args))),
        Command::Run(args) => exit::finish(runtime().block_on(cmd::run::run(server, args))),
        Command::Borrow(args) => exit::finish(runtime().block_on(cmd::borrow::run(server, args))),
        Command::Remove(args) => exit::finish(runtime().block_on(cmd::admin::remove(args))),
        Command::Reload(target) => exit::finish(runtime().block_on(cmd::admin::reload(target))),
        Command::Down(target) => exit::finish(runtime().block_on(cmd::admin::down(target))),
        Command::Log(c) => exit::finish(cmd::log::run(c)),
        Command::Report(args) => exit::finish(cmd::report::run(args)),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("building a small tokio runtime succeeds")
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("USHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
