//! `usher log verify` and `usher log export`: the usage log, read straight from the store.
//!
//! Both open the store file read-only (no migration, no write lock), so they work beside a
//! running `usherd` (WAL lets readers and the writer go on at once) and after it stopped.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use usher_server::config::{STORE_FILE, default_data_dir};
use usher_store::{SqliteStore, UsageRecord};

use crate::exit::{Failure, LOG_BROKEN, OK, USAGE};

/// Usage log subcommands.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Check the usage log's hash chain; exit 7 at the first edited, deleted, reordered or
    /// cut-off record.
    Verify {
        /// The server's data directory [default: as usherd's].
        #[arg(long, env = "USHERD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Write the usage log to stdout as CSV or JSON lines.
    Export {
        /// The server's data directory [default: as usherd's].
        #[arg(long, env = "USHERD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Only records at or after this time: YYYY-MM-DD (UTC midnight) or RFC 3339.
        #[arg(long, value_parser = parse_from)]
        from: Option<DateTime<Utc>>,
        /// Only records up to this time: YYYY-MM-DD (the whole day, UTC) or RFC 3339
        /// (exclusive).
        #[arg(long, value_parser = parse_to)]
        to: Option<DateTime<Utc>>,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header line (RFC 4180 quoting).
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Runs a log subcommand.
pub fn run(cmd: LogCommand) -> Result<u8, Failure> {
    match cmd {
        LogCommand::Verify { data_dir } => verify(&open_store(data_dir)?),
        LogCommand::Export {
            data_dir,
            format,
            from,
            to,
        } => {
            if let (Some(f), Some(t)) = (from, to)
                && f >= t
            {
                return Err(Failure::new(USAGE, "--from must be before --to"));
            }
            let store = open_store(data_dir)?;
            match export(&store, format, from, to, &mut io::stdout().lock()) {
                // `usher log export | head` is fine.
                Err(e) if is_broken_pipe(&e) => Ok(OK),
                other => other.map(|()| OK).map_err(Failure::from),
            }
        }
    }
}

/// Opens the store of a data directory read-only (beside a running server).
pub fn open_store(data_dir: Option<PathBuf>) -> Result<SqliteStore, Failure> {
    let path = data_dir.unwrap_or_else(default_data_dir).join(STORE_FILE);
    if !path.is_file() {
        return Err(Failure::from(anyhow::anyhow!(
            "no usher store at {} (pass --data-dir)",
            path.display()
        )));
    }
    Ok(
        SqliteStore::open_read_only(&path)
            .with_context(|| format!("opening {}", path.display()))?,
    )
}

fn verify(store: &SqliteStore) -> Result<u8, Failure> {
    let report = store
        .verify_usage_log()
        .with_context(|| format!("reading {}", store.path().display()))?;
    match report.broken {
        None => {
            println!("ok: {} records, chain intact", report.records);
            if let Some(head) = report.head {
                // Kept somewhere the server cannot write, this line lets a later verify
                // tell that nothing up to here was rewritten, even by somebody who
                // recomputed the chain.
                println!("head: seq {} hash {}", head.seq, hex::encode(head.hash));
            }
            Ok(OK)
        }
        Some(broken) => {
            println!("BROKEN at seq {}: {broken}", broken.seq());
            println!(
                "{} records before it are intact; {}",
                report.records,
                store.path().display()
            );
            Ok(LOG_BROKEN)
        }
    }
}

fn export(
    store: &SqliteStore,
    format: Format,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    const PAGE: usize = 10_000;
    let from_ms = from.map(|t| t.timestamp_millis());
    let to_ms = to.map(|t| t.timestamp_millis());
    let mut out = BufWriter::new(out);
    if format == Format::Csv {
        writeln!(out, "{}", COLUMNS.join(","))?;
    }
    let mut after = 0;
    loop {
        let page = store
            .usage_log(after, PAGE)
            .with_context(|| format!("reading {}", store.path().display()))?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for record in &page {
            // Stored bit-cast from u64; any real time fits in i64.
            let at = record.at as i64;
            if from_ms.is_some_and(|f| at < f) || to_ms.is_some_and(|t| at >= t) {
                continue;
            }
            let row = Row::from(record);
            match format {
                Format::Csv => write_csv(&mut out, &row)?,
                Format::Jsonl => {
                    serde_json::to_writer(&mut out, &row)?;
                    writeln!(out)?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// The exported columns, in order (also the JSON keys).
const COLUMNS: [&str; 15] = [
    "seq", "at", "time", "event", "session", "lease", "feature", "vendor", "version", "count",
    "user", "host", "display", "detail", "hash",
];

/// One exported record. Ids are printed as usher prints them elsewhere (hex), `at` is
/// milliseconds since the Unix epoch and `time` the same in RFC 3339 UTC.
#[derive(Debug, Serialize)]
struct Row<'a> {
    seq: i64,
    at: u64,
    time: String,
    event: &'a str,
    session: Option<String>,
    lease: Option<String>,
    feature: Option<&'a str>,
    vendor: Option<&'a str>,
    version: Option<&'a str>,
    count: Option<u32>,
    user: Option<&'a str>,
    host: Option<&'a str>,
    display: Option<&'a str>,
    detail: Option<&'a str>,
    hash: String,
}

impl<'a> From<&'a UsageRecord> for Row<'a> {
    fn from(r: &'a UsageRecord) -> Self {
        Row {
            seq: r.seq,
            at: r.at,
            time: DateTime::<Utc>::from_timestamp_millis(r.at as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            event: r.event.as_str(),
            session: r.session.map(|s| s.to_string()),
            lease: r.lease.map(|l| l.to_string()),
            feature: r.feature.as_deref(),
            vendor: r.vendor.as_deref(),
            version: r.version.as_deref(),
            count: r.count,
            user: r.user.as_deref(),
            host: r.host.as_deref(),
            display: r.display.as_deref(),
            detail: r.detail.as_deref(),
            hash: hex::encode(r.hash),
        }
    }
}

fn write_csv(out: &mut impl Write, r: &Row<'_>) -> io::Result<()> {
    let opt = |v: Option<&str>| v.map(csv_field).unwrap_or_default();
    let fields = [
        r.seq.to_string(),
        r.at.to_string(),
        r.time.clone(),
        csv_field(r.event),
        opt(r.session.as_deref()),
        opt(r.lease.as_deref()),
        opt(r.feature),
        opt(r.vendor),
        opt(r.version),
        r.count.map(|c| c.to_string()).unwrap_or_default(),
        opt(r.user),
        opt(r.host),
        opt(r.display),
        opt(r.detail),
        r.hash.clone(),
    ];
    writeln!(out, "{}", fields.join(","))
}

/// RFC 4180: a field with a comma, a quote, a line break or surrounding spaces is quoted,
/// with quotes doubled. A NULL is an empty field; an empty string is `""`, so the two stay
/// apart.
fn csv_field(s: &str) -> String {
    let needs_quotes = s.is_empty()
        || s.contains([',', '"', '\n', '\r'])
        || s.starts_with(' ')
        || s.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn parse_date(text: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is neither YYYY-MM-DD nor an RFC 3339 time"))?;
    let day = if end_of_day {
        day.succ_opt().ok_or("date out of range")?
    } else {
        day
    };
    Ok(day.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// `--from`: YYYY-MM-DD (UTC midnight) or RFC 3339.
pub fn parse_from(text: &str) -> Result<DateTime<Utc>, String> {
    parse_date(text, false)
}

/// `--to`: YYYY-MM-DD (the whole day) or RFC 3339.
pub fn parse_to(text: &str) -> Result<DateTime<Utc>, String> {
    parse_date(text, true)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(""), "\"\"");
        assert_eq!(csv_field(" padded"), "\" padded\"");
    }

    #[test]
    fn dates_cover_whole_days() {
        let from = parse_from("2026-03-01").unwrap();
        let to = parse_to("2026-03-01").unwrap();
        assert_eq!(from.to_rfc3339(), "2026-03-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-03-02T00:00:00+00:00");
        let exact = parse_to("2026-03-01T12:30:00+02:00").unwrap();
        assert_eq!(exact.to_rfc3339(), "2026-03-01T10:30:00+00:00");
        assert!(parse_from("March 1st").is_err());
    }

    #[test]
    fn the_header_matches_the_json_keys() {
        let record = UsageRecord {
            seq: 1,
            at: 0,
            columns: usher_store::LogEvent::server(usher_store::UsageEvent::ServerStart, None),
            hash: [0; 32],
        };
        let json = serde_json::to_value(Row::from(&record)).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns = COLUMNS.to_vec();
        columns.sort_unstable();
        assert_eq!(keys, columns);
    }
}
