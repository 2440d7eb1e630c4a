//! `usherd`: the usher license server daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing::info;
use usher_server::config::{Config, FileConfig, default_data_dir, parse_duration};

/// The usher floating-license server.
///
/// Settings come from defaults, then the config file, then USHERD_* environment
/// variables, then the command line; later sources win.
#[derive(Debug, Parser)]
#[command(name = "usherd", version, about)]
struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// TOML config file.
    #[arg(long, env = "USHERD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address for the client protocol [default: 0.0.0.0:1648; 127.0.0.1:1648 with --demo].
    #[arg(long, env = "USHERD_LISTEN", global = true)]
    listen: Option<SocketAddr>,
    /// Directory for the store [default: /var/lib/usher as root, else ~/.local/share/usher].
    #[arg(long, env = "USHERD_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// License file to serve (repeatable; replaces the config file's list).
    #[arg(
        long = "license",
        env = "USHERD_LICENSE",
        value_delimiter = ',',
        global = true
    )]
    licenses: Vec<PathBuf>,
    /// Trusted vendor public key (repeatable; replaces the config file's list).
    #[arg(
        long = "vendor-key",
        env = "USHERD_VENDOR_KEY",
        value_delimiter = ',',
        global = true
    )]
    vendor_keys: Vec<PathBuf>,
    /// How much a status query on the client port shows: full, totals or none [default: totals; full with --demo].
    #[arg(long, env = "USHERD_STATUS_DETAIL", global = true)]
    status_detail: Option<usher_server::config::StatusDetail>,
    /// Most requests per second one client connection may send (0: no limit) [default: 1000].
    #[arg(long, env = "USHERD_MAX_REQUEST_RATE", global = true)]
    max_request_rate: Option<u32>,
    /// Remove usage records older than this many days (0: keep forever) [default: 0].
    #[arg(long, env = "USHERD_LOG_RETENTION_DAYS", global = true)]
    log_retention_days: Option<u32>,
    /// Write user, host and display names into the usage log as pseudonyms (HIDE_USER).
    #[arg(long, env = "USHERD_HIDE_USERS", global = true, value_parser = usher_license::words::parse_bool)]
    hide_users: bool,
    /// Policy (options) file: INCLUDE, EXCLUDE, RESERVE, MAX, PRIORITY... (docs/policy.md).
    #[arg(long = "policy", env = "USHERD_POLICY", global = true)]
    policy: Option<PathBuf>,
    /// Heartbeat interval announced to clients, e.g. 30s.
    #[arg(long, env = "USHERD_HEARTBEAT_INTERVAL", value_parser = parse_duration, global = true)]
    heartbeat_interval: Option<std::time::Duration>,
    /// Session TTL: seats of a client not heard from for this long are released, e.g. 2m.
    #[arg(long, env = "USHERD_SESSION_TTL", value_parser = parse_duration, global = true)]
    session_ttl: Option<std::time::Duration>,
    /// Reconnect grace after a connection closes without a goodbye, e.g. 10s.
    #[arg(long, env = "USHERD_RECONNECT_GRACE", value_parser = parse_duration, global = true)]
    reconnect_grace: Option<std::time::Duration>,
    /// Client address ranges allowed to connect, e.g. 10.0.0.0/8,192.168.1.7 [default: all].
    #[arg(long, env = "USHERD_ALLOW", value_delimiter = ',', global = true)]
    allow: Vec<usher_server::access::Cidr>,
    /// Most connections one client address may hold open at once [default: 1000].
    #[arg(long, env = "USHERD_MAX_CONNECTIONS_PER_IP", global = true)]
    max_connections_per_ip: Option<usize>,
    /// Address ranges from which a status request on the client port may present the
    /// admin token for the full status, e.g. 127.0.0.0/8,::1,10.1.2.3 [default: loopback].
    #[arg(long, env = "USHERD_ADMIN_FROM", value_delimiter = ',', global = true)]
    admin_from: Vec<usher_server::access::Cidr>,
    /// Minimum age of a lease before `usher remove` may take it, e.g. 2m.
    #[arg(long, env = "USHERD_MIN_REMOVE", value_parser = parse_duration, global = true)]
    min_remove: Option<std::time::Duration>,
    /// Shortest idle TIMEOUT a policy may set; shorter ones are raised to it [default: 15m].
    #[arg(long, env = "USHERD_MIN_TIMEOUT", value_parser = parse_duration, global = true)]
    min_timeout: Option<std::time::Duration>,
    /// Admin HTTP listener (API, /metrics, dashboard), or `off` [default: 127.0.0.1:1649].
    #[arg(long, env = "USHERD_ADMIN_LISTEN", global = true)]
    admin_listen: Option<String>,
    /// Host names the admin HTTP listener answers to besides its own address (repeatable),
    /// e.g. licserver.example.com; other Host headers are refused (421).
    #[arg(
        long = "admin-host",
        env = "USHERD_ADMIN_HOST",
        value_delimiter = ',',
        global = true
    )]
    admin_hosts: Vec<String>,
    /// Also accept clients without TLS (their traffic can be read and changed on the
    /// network; the server warns when it is used). Clients must ask for it too.
    #[arg(long, env = "USHERD_INSECURE_PLAINTEXT", global = true, value_parser = usher_license::words::parse_bool)]
    insecure_plaintext: bool,
    /// Do not answer discovery requests on the UDP port (keepalives still work).
    #[arg(long, env = "USHERD_NO_DISCOVERY", global = true, value_parser = usher_license::words::parse_bool)]
    no_discovery: bool,
    /// Create (or reuse) a demo vendor key and license in the data directory and serve it.
    #[arg(long, global = true)]
    demo: bool,
    /// Log filter, e.g. info, debug, usher_server=debug.
    #[arg(long, env = "USHERD_LOG", default_value = "info", global = true)]
    log: String,
    /// Log line format: text, or json (one object per line: timestamp, level, target,
    /// message and the event's fields).
    #[arg(
        long,
        env = "USHERD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: usher_server::logging::LogFormat,
}

/// What `usherd` does instead of serving.
#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Load the configuration, license files, vendor keys and policy as the server would,
    /// print what would be served and every problem (file:line:column), and exit: 0 when
    /// there is no error, 1 otherwise. Binds no port and opens no store.
    Check,
    /// Write usherd's man page and shell completions into DIR (package builds).
    #[command(hide = true)]
    GenerateDocs {
        /// Output directory (made if missing).
        dir: PathBuf,
    },
}

fn build_config(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config::new(default_data_dir());
    if args.demo {
        config.listen = SocketAddr::from(([127, 0, 0, 1], usher_proto::DEFAULT_PORT));
        // The demo serves this machine only: show who holds what, as `lmstat -a` would.
        config.status_detail = usher_server::config::StatusDetail::Full;
    }
    if let Some(path) = &args.config {
        FileConfig::read(path)?.apply(&mut config)?;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if !args.licenses.is_empty() {
        config.license_files = args.licenses.clone();
    }
    if !args.vendor_keys.is_empty() {
        config.vendor_keys = args.vendor_keys.clone();
    }
    if let Some(v) = args.status_detail {
        config.status_detail = v;
    }
    if let Some(v) = args.max_request_rate {
        config.max_request_rate = v;
    }
    if let Some(v) = args.log_retention_days {
        config.log_retention_days = v;
    }
    if args.hide_users {
        config.hide_users = true;
    }
    if args.insecure_plaintext {
        config.insecure_plaintext = true;
    }
    if args.no_discovery {
        config.discovery = false;
    }
    if let Some(v) = &args.policy {
        config.policy_file = Some(v.clone());
    }
    if let Some(v) = args.heartbeat_interval {
        config.heartbeat_interval = v;
    }
    if let Some(v) = args.session_ttl {
        config.session_ttl = v;
    }
    if let Some(v) = args.reconnect_grace {
        config.reconnect_grace = v;
    }
    if let Some(v) = args.min_remove {
        config.min_remove = v;
    }
    if let Some(v) = args.min_timeout {
        config.min_timeout = v;
    }
    if !args.allow.is_empty() {
        config.allow = args.allow.clone();
    }
    if let Some(v) = args.max_connections_per_ip {
        config.max_connections_per_ip = v;
    }
    if !args.admin_from.is_empty() {
        config.admin_from = args.admin_from.clone();
    }
    if !args.admin_hosts.is_empty() {
        config.admin_hosts = args.admin_hosts.clone();
    }
    if let Some(v) = &args.admin_listen {
        config.admin_listen = usher_server::config::parse_admin_listen(v)
            .map_err(|e| anyhow::anyhow!("--admin-listen {e}"))?;
    }
    config.validate()?;
    Ok(config)
}

/// Installs the SIGTERM and SIGINT handlers at once (so a signal that arrives during
/// start-up is not fatal) and returns the future that completes when one arrives.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => info!("SIGINT received"),
            _ = term.recv() => info!("SIGTERM received"),
        }
    })
}

/// Runs usherd; also the entry point of `usherd-with-faults` (`src/bin/`).
pub fn main() -> std::process::ExitCode {
    match serve() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once, on one line: `Error: X` followed by `Caused by: X` told it twice.
            eprintln!("usherd: {}", usher_license::words::error_line(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    let args = Args::parse();
    // Whatever the caller's umask, nothing usherd creates is open to group or others (its
    // files in the data directory also get explicit modes).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if let Some(Action::GenerateDocs { dir }) = &args.action {
        return generate_docs(dir);
    }
    let shutdown = shutdown_signal()?;
    // Installed before anything else so that a SIGHUP during start-up (its default action
    // ends the process) waits for the server to be up, then reloads.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing a SIGHUP handler")?;
    usher_server::logging::init(
        tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?,
        args.log_format,
        usher_server::logging::Destination::detect(),
    );
    let mut config = build_config(&args)?;
    if let Some(Action::Check) = args.action {
        let report = usher_server::check::check(&config);
        print!("{}", report.render());
        std::process::exit(if report.ok() { 0 } else { 1 });
    }
    if args.demo {
        let demo = usher_server::demo::prepare(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("preparing the demo license: {e}"))?;
        config.license_files.push(demo.license.clone());
        config.vendor_keys.push(demo.public_key.clone());
        let server = usher_server::Server::bind(config).await?.reload_on(hangup);
        let addr = server.local_addr();
        print_demo_help(addr, &demo);
        if let Some(admin) = server.admin_addr() {
            // On the terminal, not in the log: the token rides in the fragment, which
            // browsers never send to a server.
            println!(
                "Dashboard: http://{admin}/#token={}\n",
                server.admin_token()
            );
        }
        return Ok(server.run(shutdown).await?);
    }
    if config.license_files.is_empty() {
        anyhow::bail!(
            "no license files configured: pass --license FILE (and --vendor-key KEY), set \
             license_files in --config, or try --demo"
        );
    }
    let server = usher_server::Server::bind(config).await?.reload_on(hangup);
    server.run(shutdown).await?;
    Ok(())
}

/// Writes `usherd.8` and the bash, zsh and fish completions into `dir`, from the same
/// clap definition that parses the command line, so they never drift from it.
fn generate_docs(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut command = Args::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .section("8")
        .render(&mut page)
        .context("rendering the man page")?;
    let path = dir.join("usherd.8");
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut command, "usherd", dir)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    Ok(())
}

fn print_demo_help(addr: SocketAddr, demo: &usher_server::demo::Demo) {
    let server = format!(
        "{}@{}",
        addr.port(),
        if addr.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            addr.ip().to_string()
        }
    );
    println!(
        "\nusherd is serving the demo license {lic} on {addr}.\n\
         In another terminal, try:\n\n\
         \x20 export USHER_LICENSE={server}\n\
         \x20 cargo run --release --bin usher -- status\n\
         \x20 cargo run --release --bin usher -- run cad -- sleep 60 &   # three of these hold all 3 seats\n\
         \x20 cargo run --release --bin usher -- run cad -- true         # the fourth is refused\n\
         \x20 cargo run --release --bin usher -- lmstat -a -c {server}\n\
         \x20 cargo run --release --bin usher -- license check {lic} --vendor-key {key}\n\n\
         Stop the server with ctrl-c; held seats are remembered across restarts.\n",
        lic = demo.license.display(),
        key = demo.public_key.display(),
    );
}

/// The command lines and settings the docs show (shared with `usher`'s tests).
#[cfg(test)]
#[path = "../../usher-cli/src/doc_examples.rs"]
mod doc_examples;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `usherd ...` command line of README.md and docs/ is accepted by the real
    /// argument parser, and every `USHERD_*=value` they show by the parser of its flag.
    #[test]
    fn every_documented_command_line_and_variable_parses() {
        let lines = doc_examples::command_lines("usherd");
        assert!(lines.len() >= 4, "{lines:?}");
        for ex in &lines {
            if let Err(e) = Args::try_parse_from(&ex.argv)
                && !ex.tolerates(&e)
                && e.kind() != clap::error::ErrorKind::DisplayHelp
            {
                panic!("{}: {:?} does not parse:\n{e}", ex.at, ex.argv);
            }
        }
        let cmd = <Args as clap::CommandFactory>::command();
        for (at, name) in doc_examples::env_names("USHERD_") {
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_env().is_some_and(|e| e == name.as_str())),
                "{at}: the docs name {name}, which usherd does not read"
            );
        }
        for (at, name, value) in doc_examples::env_settings("USHERD_") {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
                .unwrap_or_else(|| panic!("{at}: {name} is not read"));
            doc_examples::parse_value(arg, &value)
                .unwrap_or_else(|e| panic!("{at}: {name}={value}: {e}"));
        }
    }

    /// usherd's boolean flags take every spelling of the one boolean parser from their
    /// variables.
    #[test]
    fn boolean_variables_accept_every_spelling() {
        let cmd = <Args as clap::CommandFactory>::command();
        for name in [
            "USHERD_HIDE_USERS",
            "USHERD_INSECURE_PLAINTEXT",
            "USHERD_NO_DISCOVERY",
        ] {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == name))
                .unwrap();
            for (text, want) in [
                ("1", true),
                ("on", true),
                ("yes", true),
                ("0", false),
                ("off", false),
            ] {
                let m = doc_examples::parse_value(arg, text).unwrap();
                assert_eq!(m.get_one::<bool>("v"), Some(&want), "{name}={text}");
            }
        }
    }

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("usherd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn command_line_beats_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("usherd.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:2000\"\nsession_ttl = \"5m\"\nlicense_files = [\"a.lic\"]\n",
        )
        .unwrap();
        let config = build_config(&parse(&[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:3000",
        ]))
        .unwrap();
        assert_eq!(
            config.listen,
            "127.0.0.1:3000".parse().unwrap(),
            "CLI wins over file"
        );
        assert_eq!(
            config.session_ttl,
            std::time::Duration::from_secs(300),
            "file wins over default"
        );
        assert_eq!(
            config.license_files,
            [dir.path().join("a.lic")],
            "relative to the file"
        );
        assert_eq!(
            config.heartbeat_interval,
            std::time::Duration::from_secs(30),
            "default"
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("usherd.toml");
        std::fs::write(&file, "session_ttl = \"10 parsecs\"\n").unwrap();
        let err = build_config(&parse(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(format!("{err:#}").contains("session_ttl"), "{err:#}");
    }

    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
