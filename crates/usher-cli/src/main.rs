//! `usher`: the command-line tool for vendors, administrators and users.
//!
//! Installed (or symlinked) under the name `lmutil` or `lmstat`, it answers FlexLM's
//! `lmutil lmstat ...` / `lmstat ...` command lines with FlexLM-identical text, so
//! monitoring tools that scrape lmstat work unchanged.

/// Makes one of usher-client's status types (which an application cannot name field by
/// field: they may grow) from its `Default` and the fields given, for the tests' inputs.
/// `build!(Holder { user: "ann".into(), count: 2 })`, or `build!(Holder { count: 2, ..base })`
/// to start from `base`.
#[cfg(test)]
macro_rules! build {
    ($ty:ident { $($body:tt)* }) => {{
        let mut built: $ty = build!(@base $ty; $($body)*);
        build!(@set built; $($body)*);
        built
    }};
    // The value to start from: `..base`, else the type's default.
    (@base $ty:ident;) => { $ty::default() };
    (@base $ty:ident; ..$base:expr) => { $base };
    (@base $ty:ident; $field:ident: $value:expr $(, $($rest:tt)*)?) => {
        build!(@base $ty; $($($rest)*)?)
    };
    (@base $ty:ident; $field:ident $(, $($rest:tt)*)?) => { build!(@base $ty; $($($rest)*)?) };
    // The fields, `field: value` or `field` for `field: field`.
    (@set $built:ident;) => {};
    (@set $built:ident; ..$base:expr) => {};
    (@set $built:ident; $field:ident: $value:expr $(, $($rest:tt)*)?) => {
        $built.$field = $value;
        build!(@set $built; $($($rest)*)?);
    };
    (@set $built:ident; $field:ident $(, $($rest:tt)*)?) => {
        $built.$field = $field;
        build!(@set $built; $($($rest)*)?);
    };
}

mod cmd;
mod connect_retry;
#[cfg(test)]
mod doc_examples;
mod exit;
mod lmstat;
mod report;
mod show;
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
    #[arg(long, global = true, env = "USHER_INSECURE_PLAINTEXT", value_parser = usher_license::words::parse_bool)]
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
    /// Server ids remembered on first connection (trust on first use): list them, or
    /// forget one after a planned change of its key.
    Trust(cmd::trust::TrustArgs),
    /// Usage per feature over a period (peak, utilisation, time at 100%, denials, queueing,
    /// seat-hours), from the usage log, with a "do we need more seats?" verdict.
    Report(cmd::report::ReportArgs),
    /// Administrator: a consistent copy of a server's store (running or not), checked.
    Backup(cmd::backup::BackupArgs),
    /// Administrator: check a copy made by `usher backup` (schema, hash chain) and put it
    /// into a stopped server's data directory.
    Restore(cmd::backup::RestoreArgs),
    /// Migration: convert another license manager's files.
    #[command(subcommand)]
    Import(cmd::import::ImportCommand),
    /// Write usher's man pages and shell completions into DIR (package builds).
    #[command(hide = true)]
    GenerateDocs {
        /// Output directory (made if missing).
        dir: std::path::PathBuf,
    },
}

/// Writes `usher.1` (and a page per subcommand, `usher-status.1`...), the `lmstat.1` and
/// `lmutil.1` aliases, and the bash, zsh and fish completions into `dir`, from the clap
/// definition that parses the command line.
fn generate_docs(dir: &std::path::Path) -> Result<u8, exit::Failure> {
    use anyhow::Context;
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut command = Cli::command();
    clap_mangen::generate_to(command.clone(), dir).context("writing the man pages")?;
    for alias in ["lmstat", "lmutil"] {
        std::fs::write(dir.join(format!("{alias}.1")), ".so man1/usher-lmstat.1\n")
            .with_context(|| format!("writing {alias}.1"))?;
    }
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut command, "usher", dir)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    Ok(exit::OK)
}

fn main() -> ExitCode {
    exit::quiet_on_closed_stdout();
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
    // `usher run`'s own helper between it and the command (see cmd::run::exec_child).
    if argv.get(1).map(String::as_str) == Some(cmd::run::EXEC_CHILD) {
        return cmd::run::exec_child(&argv[2..]);
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
        Command::Backup(args) => exit::finish(cmd::backup::backup(args)),
        Command::Restore(args) => exit::finish(cmd::backup::restore(args)),
        Command::Import(c) => exit::finish(cmd::import::run(c)),
        Command::GenerateDocs { dir } => exit::finish(generate_docs(&dir)),
        Command::Trust(args) => exit::finish(cmd::trust::run(args)),
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
    use clap::{CommandFactory, Parser};

    use crate::doc_examples;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// Every `usher ...` (and `lmstat`/`lmutil lmstat ...`) command line README.md and
    /// docs/ show is accepted by the real argument parser.
    #[test]
    fn every_documented_command_line_parses() {
        let usher = doc_examples::command_lines("usher");
        assert!(usher.len() >= 20, "too few examples found: {usher:?}");
        for ex in &usher {
            if let Err(e) = super::Cli::try_parse_from(&ex.argv)
                && !ex.tolerates(&e)
            {
                panic!("{}: {:?} does not parse:\n{e}", ex.at, ex.argv);
            }
            if ex.argv.get(1).map(String::as_str) == Some("lmstat") {
                crate::lmstat::parse_args(&ex.argv[2..])
                    .unwrap_or_else(|e| panic!("{}: {:?}: {e}", ex.at, ex.argv));
            }
        }
        let lmutil = doc_examples::command_lines("lmutil");
        assert!(!lmutil.is_empty());
        for ex in lmutil.iter().chain(&doc_examples::command_lines("lmstat")) {
            let args = match ex.argv[0].as_str() {
                "lmutil" => ex.argv.get(2..).unwrap_or_default(),
                _ => &ex.argv[1..],
            };
            crate::lmstat::parse_args(args)
                .unwrap_or_else(|e| panic!("{}: {:?}: {e}", ex.at, ex.argv));
        }
    }

    /// Every `USHER_*` variable the docs name is read by `usher` (through clap or through
    /// the client library's one configuration path), and every value they show for one is
    /// accepted by the parser that reads it.
    #[test]
    fn every_documented_usher_variable_is_read_and_its_examples_parse() {
        let cmd = super::Cli::command();
        let mut args = Vec::new();
        collect_args(&cmd, &mut args);
        let clap_arg = |name: &str| {
            args.iter()
                .find(|(_, a)| a.get_env().is_some_and(|e| e == name))
                .cloned()
        };
        // `USHER_ID=` is a host id's prefix, not a variable; `usher run` sets
        // `USHER_LEASE`, `USHER_FEATURE` and `USHER_GRANT` for its command rather than
        // reading them.
        let not_variables = ["USHER_ID", "USHER_LEASE", "USHER_FEATURE", "USHER_GRANT"];
        for (at, name) in doc_examples::env_names("USHER_") {
            if not_variables.contains(&name.as_str()) {
                continue;
            }
            assert!(
                clap_arg(&name).is_some() || usher_client::ENV_SETTINGS.contains(&name.as_str()),
                "{at}: the docs name {name}, which no usher command reads"
            );
        }
        let settings = doc_examples::env_settings("USHER_");
        assert!(
            settings
                .iter()
                .any(|(_, n, v)| n == "USHER_INSECURE_PLAINTEXT" && v == "1"),
            "{settings:?}"
        );
        for (at, name, value) in settings {
            if not_variables.contains(&name.as_str()) {
                continue;
            }
            if let Some((owner, arg)) = clap_arg(&name) {
                let _ = owner;
                doc_examples::parse_value(&arg, &value)
                    .unwrap_or_else(|e| panic!("{at}: {name}={value}: {e}"));
            }
            if usher_client::ENV_SETTINGS.contains(&name.as_str()) {
                usher_client::check_env_setting(&name, &value)
                    .unwrap_or_else(|e| panic!("{at}: {name}={value}: {e}"));
            }
        }
    }

    /// Every boolean setting of the command line accepts each spelling of
    /// [`usher_license::words::parse_bool`], from its variable as from the line.
    #[test]
    fn boolean_settings_accept_every_spelling() {
        let cmd = super::Cli::command();
        let mut args = Vec::new();
        collect_args(&cmd, &mut args);
        let plaintext = args
            .iter()
            .find(|(_, a)| a.get_env().is_some_and(|e| e == "USHER_INSECURE_PLAINTEXT"))
            .expect("the flag reads USHER_INSECURE_PLAINTEXT");
        for (text, want) in [("1", true), ("yes", true), ("on", true), ("true", true)]
            .into_iter()
            .chain([
                ("0", false),
                ("no", false),
                ("off", false),
                ("false", false),
            ])
        {
            let m = doc_examples::parse_value(&plaintext.1, text)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(m.get_one::<bool>("v"), Some(&want), "{text}");
        }
        let cli = super::Cli::try_parse_from(["usher", "--insecure-plaintext", "status"]).unwrap();
        assert!(cli.insecure_plaintext);
    }

    fn collect_args(cmd: &clap::Command, out: &mut Vec<(clap::Command, clap::Arg)>) {
        for a in cmd.get_arguments() {
            out.push((cmd.clone(), a.clone()));
        }
        for sub in cmd.get_subcommands() {
            collect_args(sub, out);
        }
    }
}
