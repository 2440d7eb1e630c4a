//! `usher borrow`: take seats away for offline use, list them, give them back early.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use usher_license::words::plural;

use chrono::DateTime;
use clap::Args;
use usher_client::Client;
use usher_client::borrow::{BorrowStore, BorrowToken};

use crate::exit::{FAILURE, Failure, OK, USAGE};

/// Arguments of `usher borrow`.
#[derive(Debug, Args)]
pub struct BorrowArgs {
    /// Feature to borrow (or, with --return, to give back).
    pub feature: Option<String>,
    /// How long to borrow for: a number with a unit, m (minutes), h (hours), d (days) or
    /// w (weeks), e.g. 3d; a bare number is hours. At most what the license's BORROW=
    /// (and the server's MAX_BORROW_HOURS) allow.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Minimum version needed.
    #[arg(long, default_value = "")]
    pub version: String,
    /// Seats to borrow.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Give the borrowed seats of FEATURE back to the server before the borrow ends.
    #[arg(long = "return", conflicts_with_all = ["duration", "list"])]
    pub give_back: bool,
    /// List the seats borrowed on this host (from the local token store).
    #[arg(long, conflicts_with_all = ["duration", "give_back"])]
    pub list: bool,
}

/// Runs `usher borrow`.
pub async fn run(server: super::Target, args: BorrowArgs) -> Result<u8, Failure> {
    let store = BorrowStore::user_default();
    if args.list {
        return list(&store);
    }
    let Some(feature) = args.feature.clone() else {
        return Err(Failure::new(USAGE, "name the feature to borrow or return"));
    };
    let store_err = |e: usher_client::borrow::BorrowError| Failure::new(FAILURE, e.to_string());
    if args.give_back {
        let token = store.load(&feature).ok().flatten();
        let client = Client::connect(super::client_config(&server)?).await?;
        let lease = token.as_ref().map(|t| t.statement.lease_id);
        let returned = client.return_borrow(&feature, lease).await;
        client.close().await;
        // The local token goes only once the server has released its seats (or the
        // borrow has ended anyway): deleting it otherwise would leave the server holding
        // the seat and the borrower without offline use.
        match (returned?, token) {
            (Some(n), _) => {
                store.remove(&feature).map_err(store_err)?;
                println!(
                    "returned {} of {feature:?} to the server",
                    plural(n.into(), "borrowed seat")
                );
            }
            (None, Some(t)) if t.statement.valid_until_ms > now_ms() => {
                return Err(Failure::new(
                    FAILURE,
                    format!(
                        "the server holds no borrow of {feature:?} by you on this host (the \
                         token here is another user's or host's, or from another server); \
                         the local token is kept"
                    ),
                ));
            }
            (None, Some(_)) => {
                store.remove(&feature).map_err(store_err)?;
                println!("the borrow of {feature:?} had ended; its local token is removed");
            }
            (None, None) => println!(
                "the server holds no borrow of {feature:?} by you on this host (it may have \
                 ended already), and this host holds no token for it"
            ),
        }
        return Ok(OK);
    }
    let Some(duration) = args.duration else {
        return Err(Failure::new(
            USAGE,
            "say how long to borrow for: --for DURATION",
        ));
    };
    if let Ok(Some(token)) = store.load(&feature)
        && token.statement.valid_until_ms > now_ms()
    {
        return Err(Failure::new(
            FAILURE,
            format!(
                "{feature:?} is already borrowed on this host until {}; give it back first \
                 with `usher borrow --return {feature}`",
                when(token.statement.valid_until_ms)
            ),
        ));
    }
    let mut config = super::client_config(&server)?;
    config.identity.program = "usher borrow".into();
    let client = Client::connect(config).await?;
    let borrowed = client
        .borrow(&feature, duration)
        .version(&args.version)
        .count(args.count)
        .await;
    // The seats stay held on the server after this goodbye, until the borrow ends.
    client.close().await;
    let token = borrowed?;
    let path = store.save(&token).map_err(store_err)?;
    let s = &token.statement;
    println!(
        "borrowed {} of {} v{} until {}\ntoken: {}",
        plural(s.count.into(), "seat"),
        s.feature,
        s.version,
        when(s.valid_until_ms),
        path.display()
    );
    Ok(OK)
}

fn list(store: &BorrowStore) -> Result<u8, Failure> {
    let tokens = store
        .list()
        .map_err(|e| Failure::new(FAILURE, e.to_string()))?;
    if tokens.is_empty() {
        println!(
            "nothing is borrowed on this host ({})",
            store.dir().display()
        );
        return Ok(OK);
    }
    let now = now_ms();
    for BorrowToken { statement: s, .. } in &tokens {
        let state = if s.valid_until_ms > now {
            "until"
        } else {
            "ended"
        };
        println!(
            "{} v{}  {}  {state} {}  from {}",
            s.feature,
            s.version,
            plural(s.count.into(), "seat"),
            when(s.valid_until_ms),
            usher_license::usher_id(&s.server_key)
        );
    }
    Ok(OK)
}

/// `90m`, `12h`, `3d`, `2w` or a bare number of hours.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90m, 12h, 3d or 2w"))?;
    let minutes = match unit {
        "m" => 1,
        "" | "h" => 60,
        "d" => 24 * 60,
        "w" => 7 * 24 * 60,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use m, h, d or w"
            ));
        }
    };
    if n == 0 {
        return Err("a borrow must last at least a minute".into());
    }
    Ok(Duration::from_secs(
        n.saturating_mul(minutes).saturating_mul(60),
    ))
}

/// `2026-11-30 12:00 UTC`.
fn when(ms: u64) -> String {
    DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_default_to_hours() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_duration("12"), Ok(h(12)));
        assert_eq!(parse_duration("12h"), Ok(h(12)));
        assert_eq!(parse_duration("3d"), Ok(h(72)));
        assert_eq!(parse_duration("2w"), Ok(h(336)));
        for bad in ["", "h", "3x", "0", "-1d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
