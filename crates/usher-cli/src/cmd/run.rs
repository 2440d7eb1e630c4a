//! `usher run FEATURE -- COMMAND`: hold a seat while a command runs.
//!
//! The seat is checked out before the command starts. The command runs in a process
//! group of its own (unless standard input is a terminal, where it must stay in the
//! terminal's foreground group to read it); the signals that ask a program to stop or
//! reload (HUP, INT, QUIT, TERM, USR1, USR2) sent to usher are forwarded to that group.
//! The command dies with usher: it is started through `usher` itself ([`exec_child`]),
//! which sets `PR_SET_PDEATHSIG` (SIGKILL) and then executes it, so a killed wrapper does
//! not leave a command running without a seat. Its exit status is usher's (128 + N if
//! signal N killed it). `USHER_LEASE` and `USHER_FEATURE` tell it what it holds; with
//! `--vendor-key`, `USHER_GRANT` holds the grant's statement signed by the server (the
//! text `usher_license::SignedStatement::from_text` reads), which the command can verify
//! against the vendor key it was built with.
//!
//! Any wrapper can be bypassed: whoever can run the program without usher can run it
//! unlicensed. A vendor key compiled into the application (the C API's
//! `USHER_OPT_VENDOR_KEY`, the client's `vendor_keys`) is what enforces a license; with
//! `--vendor-key`, usher run only refuses grants that do not verify.

use std::os::unix::process::ExitStatusExt;

use std::time::Duration;

use clap::Args;
use usher_client::QueueWait;

use crate::exit::{FAILURE, Failure};

/// Arguments of `usher run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Feature to check out.
    pub feature: String,
    /// Minimum version needed.
    #[arg(long, default_value = "")]
    pub version: String,
    /// Seats to hold.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// If every seat is taken, wait in the server's queue for up to SECONDS (0: as long
    /// as it takes) instead of failing.
    #[arg(long, visible_alias = "timeout", value_name = "SECONDS")]
    pub wait: Option<u64>,
    /// What to do if the seat is lost while the command runs (an administrator removed
    /// it, or the server was out of reach for longer than the session TTL): `warn` only
    /// says so; `term` sends SIGTERM to the command after the grace period, then SIGKILL
    /// after another; `kill` sends SIGKILL after the grace period.
    #[arg(long, value_enum, default_value_t = OnLost::Warn)]
    pub on_lost: OnLost,
    /// Keep trying to reach a server for up to SECONDS (with growing, jittered waits
    /// between attempts) when it is down, restarting or swamped by clients starting at
    /// once; 0: try once.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "USHER_CONNECT_DEADLINE",
        default_value_t = crate::connect_retry::DEFAULT_DEADLINE_SECS
    )]
    pub connect_deadline: u64,
    /// Seconds between the loss of the seat and `--on-lost`'s signal.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub grace: u64,
    /// The vendor's public key file (repeatable). With it, a seat of FEATURE borrowed on
    /// this host (`usher borrow`) is used first, offline, once its token verifies; and a
    /// seat from the server is accepted only with a statement, signed by the server, that
    /// verifies against these keys (a genuine license, bound to that server, answering
    /// this checkout).
    #[arg(long = "vendor-key", value_name = "FILE")]
    pub vendor_keys: Vec<std::path::PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// What `usher run` does when the seat is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnLost {
    /// Print a warning; let the command run on.
    Warn,
    /// SIGTERM after the grace period, SIGKILL after another.
    Term,
    /// SIGKILL after the grace period.
    Kill,
}

/// The hidden first argument that makes `usher` the helper of [`exec_child`].
pub const EXEC_CHILD: &str = "__exec-child";

/// The helper between `usher run` and its command: `usher __exec-child PARENT_PID
/// COMMAND ARGS...` asks the kernel to kill it when its parent dies, checks that the
/// parent is still `PARENT_PID` (else it died before the request took hold), then
/// executes COMMAND in its place (the request survives `execve`).
pub fn exec_child(args: &[String]) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let (Some(parent), Some(program)) = (args.first(), args.get(1)) else {
        eprintln!("usher: {EXEC_CHILD} PARENT_PID COMMAND...");
        return std::process::ExitCode::from(FAILURE);
    };
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("usher: cannot tie the command to usher's life: {e}");
        return std::process::ExitCode::from(FAILURE);
    }
    let parent_now = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    if parent.parse::<i32>().ok() != Some(parent_now) {
        return std::process::ExitCode::from(FAILURE); // usher is gone already
    }
    let e = std::process::Command::new(program).args(&args[2..]).exec();
    eprintln!("usher: cannot run {program:?}: {e}");
    std::process::ExitCode::from(FAILURE)
}

/// Sends `sig` to the command: to its process group when it has one of its own.
fn signal_child(pid: u32, own_group: bool, sig: rustix::process::Signal) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = if own_group {
        rustix::process::kill_process_group(pid, sig)
    } else {
        rustix::process::kill_process(pid, sig)
    };
}

/// Forwards the stop and reload signals usher receives to the command, until dropped.
fn forward_signals(pid: u32, own_group: bool) -> Vec<tokio::task::JoinHandle<()>> {
    use rustix::process::Signal;
    use tokio::signal::unix::{SignalKind, signal};
    let mut forwarded = vec![
        (SignalKind::hangup(), Signal::HUP),
        (SignalKind::terminate(), Signal::TERM),
        (SignalKind::user_defined1(), Signal::USR1),
        (SignalKind::user_defined2(), Signal::USR2),
    ];
    if own_group {
        // In the terminal's group the command gets Ctrl-C and Ctrl-\ from the terminal
        // itself; forwarding them too would deliver them twice.
        forwarded.push((SignalKind::interrupt(), Signal::INT));
        forwarded.push((SignalKind::quit(), Signal::QUIT));
    }
    forwarded
        .into_iter()
        .filter_map(|(kind, sig)| {
            let mut stream = signal(kind).ok()?;
            Some(tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    signal_child(pid, own_group, sig);
                }
            }))
        })
        .collect()
}

/// Checks out, runs the command, checks in, and returns the command's exit status
/// (128 + N if it was killed by signal N).
pub async fn run(server: super::Target, args: RunArgs) -> Result<u8, Failure> {
    let keys = args
        .vendor_keys
        .iter()
        .map(|p| {
            usher_license::VendorPublicKey::read_from(p)
                .map_err(|e| Failure::new(FAILURE, format!("{}: {e}", p.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(code) = run_borrowed(&args, &keys).await? {
        return Ok(code);
    }
    let mut config = super::client_config(&server)?;
    config.identity.program = args.command[0].clone();
    config.vendor_keys = keys;
    let deadline = Duration::from_secs(args.connect_deadline);
    let client = crate::connect_retry::connect(config, deadline).await?;
    let wait = match args.wait {
        None => QueueWait::No,
        Some(0) => QueueWait::Indefinitely,
        Some(secs) => QueueWait::For(Duration::from_secs(secs)),
    };
    let mut checkout = client
        .checkout(&args.feature)
        .version(&args.version)
        .count(args.count)
        .wait(wait);
    let position = checkout.queue_position();
    let license = match wait_for(checkout.send(), position, &args.feature).await {
        Ok(license) => license,
        Err(e) => {
            // Say goodbye before exiting, so nothing of ours lingers in the queue.
            client.close().await;
            return Err(e.into());
        }
    };
    use std::io::IsTerminal;
    let own_group = !std::io::stdin().is_terminal();
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(FAILURE, format!("cannot find usher's own program: {e}")))?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg(EXEC_CHILD)
        .arg(std::process::id().to_string())
        .args(&args.command)
        .env("USHER_LEASE", license.lease_id().to_string())
        .env("USHER_FEATURE", license.feature());
    if let Some(statement) = license.statement() {
        command.env("USHER_GRANT", statement);
    }
    if own_group {
        command.process_group(0);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            // Check in before saying so: the seat must not wait out the reconnect grace.
            drop(license);
            client.close().await;
            return Err(Failure::new(
                FAILURE,
                format!("cannot run {:?}: {e}", args.command[0]),
            ));
        }
    };
    let pid = child.id().unwrap_or(0);
    let forwarding = forward_signals(pid, own_group);
    let status = tokio::select! {
        status = child.wait() => status,
        reason = license.lost() => {
            eprintln!("usher: warning: the license for {:?} was lost: {reason}", args.feature);
            let grace = Duration::from_secs(args.grace);
            use rustix::process::Signal;
            let signals: &[(Signal, &str)] = match args.on_lost {
                OnLost::Warn => &[],
                OnLost::Term => &[(Signal::TERM, "SIGTERM"), (Signal::KILL, "SIGKILL")],
                OnLost::Kill => &[(Signal::KILL, "SIGKILL")],
            };
            let mut status = None;
            for (sig, name) in signals {
                match tokio::time::timeout(grace, child.wait()).await {
                    Ok(s) => {
                        status = Some(s);
                        break;
                    }
                    Err(_) => {
                        eprintln!("usher: stopping {:?} with {name}: its seat is gone", args.command[0]);
                        signal_child(pid, own_group, *sig);
                    }
                }
            }
            match status {
                Some(s) => s,
                None => child.wait().await,
            }
        }
    }
    .map_err(|e| Failure::new(FAILURE, format!("waiting for {:?}: {e}", args.command[0])))?;
    forwarding.iter().for_each(|t| t.abort());
    drop(license);
    client.close().await;
    Ok(exit_code(status))
}

/// The exit code that reports a child's status: its own, or 128 + N if signal N killed it.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        _ => FAILURE,
    }
}

/// Runs the command on a seat borrowed on this host, if vendor keys were given and its
/// token verifies; `None` to go to the server instead.
async fn run_borrowed(
    args: &RunArgs,
    keys: &[usher_license::VendorPublicKey],
) -> Result<Option<u8>, Failure> {
    if keys.is_empty() {
        return Ok(None);
    }
    let store = usher_client::borrow::BorrowStore::user_default();
    let borrowed = match store.check(&args.feature, &args.version, keys) {
        Ok(b) if b.count >= args.count => b,
        Ok(_) | Err(usher_client::borrow::BorrowError::NotBorrowed { .. }) => return Ok(None),
        Err(e) => {
            eprintln!("usher: warning: {e}; asking the server instead");
            return Ok(None);
        }
    };
    eprintln!(
        "usher: using the seat of {:?} borrowed from {} (lease {})",
        borrowed.feature,
        borrowed.server,
        usher_license::words::lease_handle(borrowed.lease_id)
    );
    let status = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .status()
        .await
        .map_err(|e| Failure::new(FAILURE, format!("cannot run {:?}: {e}", args.command[0])))?;
    Ok(Some(exit_code(status)))
}

/// Awaits a checkout, saying on stderr whenever the server reports its queue position.
async fn wait_for(
    checkout: impl std::future::Future<
        Output = Result<usher_client::License, usher_client::ClientError>,
    >,
    mut position: usher_client::QueuePosition,
    feature: &str,
) -> Result<usher_client::License, usher_client::ClientError> {
    tokio::pin!(checkout);
    let mut last = 0;
    loop {
        tokio::select! {
            license = &mut checkout => return license,
            changed = position.changed() => {
                let Some(now) = changed else {
                    return checkout.await;
                };
                if now != last {
                    last = now;
                    eprintln!(
                        "usher: every seat of {feature:?} is taken; waiting in the queue (position {now})"
                    );
                }
            }
        }
    }
}
