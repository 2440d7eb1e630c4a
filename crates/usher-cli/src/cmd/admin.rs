//! `usher remove`, `usher reload`, `usher down`: administration over the server's Unix
//! socket, which only the server's user (and root) can open.

use crate::show::format_handle;
use std::path::PathBuf;
use std::time::Duration;
use usher_license::words::plural;

use clap::Args;
use usher_client::admin::AdminConnection;
use usher_proto::{Down, Reload, Remove, StatusRequest, request, response};

use crate::exit::{FAILURE, Failure, OK};

/// Where the server's admin socket is.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// The server's data directory (its admin socket is DIR/admin/usherd.sock)
    /// [default: as usherd's].
    #[arg(long, env = "USHERD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The admin socket itself (overrides --data-dir).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
}

impl AdminTarget {
    async fn connect(&self) -> Result<AdminConnection, Failure> {
        let socket = self.admin_socket.clone().unwrap_or_else(|| {
            let dir = self
                .data_dir
                .clone()
                .unwrap_or_else(usher_server::config::default_data_dir);
            usher_server::config::admin_socket_in(&dir)
        });
        AdminConnection::connect(&socket, Duration::from_secs(10)).await.map_err(|e| {
            let mut f = Failure::from(e);
            f.message = format!(
                "{} (administration needs the server's user or root, and the server's --data-dir)",
                f.message
            );
            f
        })
    }
}

/// Arguments of `usher remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// A lease handle (as `usher status` and `lmstat` show it), or, as with `lmremove`,
    /// FEATURE USER HOST [DISPLAY]: every lease of that feature held by that user on that
    /// host (and display).
    // The help text shows `[DISPLAY]` as written, so it stays unescaped.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(required = true, num_args = 1..=4)]
    pub what: Vec<String>,
    #[command(flatten)]
    pub target: AdminTarget,
}

/// Removes leases and prints what was freed.
pub async fn remove(args: RemoveArgs) -> Result<u8, Failure> {
    let mut conn = args.target.connect().await?;
    let handles = match args.what.as_slice() {
        [handle] => {
            let id = crate::show::parse_handle(handle).ok_or_else(|| {
                Failure::new(
                    crate::exit::USAGE,
                    format!("{handle:?} is not a lease handle"),
                )
            })?;
            vec![id]
        }
        [feature, user, host, rest @ ..] => {
            // Every page of the feature's status (see docs/protocol.md, "Status pages").
            let mut report = usher_proto::StatusReport::default();
            loop {
                let page = match conn
                    .call(request::Kind::Status(StatusRequest {
                        feature: feature.clone(),
                        page_size: 10_000,
                        cursor: std::mem::take(&mut report.next_cursor),
                        ..StatusRequest::default()
                    }))
                    .await?
                {
                    response::Kind::Status(r) => r,
                    other => {
                        return Err(Failure::new(
                            FAILURE,
                            format!("unexpected answer {other:?}"),
                        ));
                    }
                };
                report.absorb(page);
                if report.next_cursor.is_empty() {
                    break;
                }
            }
            let display = rest.first();
            let handles: Vec<u64> = report
                .features
                .iter()
                .flat_map(|f| &f.holders)
                .filter(|h| &h.user == user && &h.host == host)
                .filter(|h| display.is_none_or(|d| &h.display == d))
                .map(|h| h.lease_id)
                .collect();
            if handles.is_empty() {
                return Err(Failure::new(
                    FAILURE,
                    format!("no lease of {feature:?} is held by {user} on {host}"),
                ));
            }
            handles
        }
        _ => {
            return Err(Failure::new(
                crate::exit::USAGE,
                "give a lease handle, or FEATURE USER HOST [DISPLAY]",
            ));
        }
    };
    let mut code = OK;
    for lease_id in handles {
        match conn.call(request::Kind::Remove(Remove { lease_id })).await {
            Ok(response::Kind::Removed(r)) if r.was_held => {
                println!(
                    "removed lease {}: {} of {:?} freed",
                    format_handle(lease_id),
                    plural(r.count.into(), "seat"),
                    r.feature
                );
            }
            Ok(response::Kind::Removed(_)) => {
                // As when no holder matches FEATURE USER HOST: nothing was removed.
                eprintln!(
                    "usher: lease {} is not held (nothing to remove)",
                    format_handle(lease_id)
                );
                code = FAILURE;
            }
            Ok(other) => {
                return Err(Failure::new(
                    FAILURE,
                    format!("unexpected answer {other:?}"),
                ));
            }
            Err(e) => {
                eprintln!("usher: lease {}: {e}", format_handle(lease_id));
                code = FAILURE;
            }
        }
    }
    Ok(code)
}

/// Re-reads the server's licenses.
pub async fn reload(target: AdminTarget) -> Result<u8, Failure> {
    let mut conn = target.connect().await?;
    match conn.call(request::Kind::Reload(Reload {})).await? {
        response::Kind::Reloaded(r) => {
            println!(
                "reloaded: {} served",
                plural(r.entitlements.into(), "entitlement")
            );
            for line in &r.refused {
                println!("refused: {line}");
            }
            for line in &r.warnings {
                println!("warning: {line}");
            }
            Ok(OK)
        }
        other => Err(Failure::new(
            FAILURE,
            format!("unexpected answer {other:?}"),
        )),
    }
}

/// Shuts the server down gracefully.
pub async fn down(target: AdminTarget) -> Result<u8, Failure> {
    let mut conn = target.connect().await?;
    match conn.call(request::Kind::Down(Down {})).await? {
        response::Kind::Bye(_) => {
            println!("the server is shutting down");
            Ok(OK)
        }
        other => Err(Failure::new(
            FAILURE,
            format!("unexpected answer {other:?}"),
        )),
    }
}
