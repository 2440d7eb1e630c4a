//! `usher report`: usage per feature over a period, from the usage log, with a plain-words
//! answer to "do we need more seats?".
//!
//! Like `usher log`, it reads the store file directly (read-only), beside a running
//! server or after it stopped.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use usher_store::UsageRecord;

use crate::cmd::log::{open_store, parse_from, parse_to};
use crate::exit::{Failure, OK, USAGE};
use crate::report::{self, Bucket, FeatureReport, Figures, Ms};

/// Arguments of `usher report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The server's data directory [default: as usherd's].
    #[arg(long, env = "USHERD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Start: YYYY-MM-DD (UTC midnight) or RFC 3339 [default: the first record].
    #[arg(long, value_parser = parse_from)]
    pub from: Option<DateTime<Utc>>,
    /// End: YYYY-MM-DD (the whole day, UTC) or RFC 3339, exclusive [default: now].
    #[arg(long, value_parser = parse_to)]
    pub to: Option<DateTime<Utc>>,
    /// One row per hour, day or month (UTC) [default: one row for the whole period].
    #[arg(long, value_enum)]
    pub by: Option<By>,
    /// Only this feature.
    #[arg(long)]
    pub feature: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also draw seats in use over time as an SVG chart into FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// Row sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    /// UTC hours.
    Hour,
    /// UTC days.
    Day,
    /// UTC calendar months.
    Month,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text, with the verdict per feature.
    Table,
    /// One line per feature and row.
    Csv,
    /// One JSON document.
    Json,
}

/// Usage records read from the store at a time.
const PAGE: usize = 10_000;

/// Runs `usher report`.
pub fn run(args: ReportArgs) -> Result<u8, Failure> {
    let store = open_store(args.data_dir.clone())?;
    // The log is read a page at a time and replayed as it is read, so a report over years
    // of records needs the memory of one page, not of the log.
    let read_page = |after: i64| {
        store
            .usage_log(after, PAGE)
            .with_context(|| format!("reading {}", store.path().display()))
    };
    let mut page: Vec<UsageRecord> = read_page(0)?;
    let first = page.first().map_or(0, |r| r.at as Ms);
    let from = args.from.map_or(first, |t| t.timestamp_millis());
    let to = args
        .to
        .map_or_else(|| Utc::now().timestamp_millis(), |t| t.timestamp_millis());
    if from >= to {
        return Err(Failure::new(USAGE, "--from must be before --to"));
    }
    let req = report::Request {
        from,
        to,
        by: match args.by {
            None => Bucket::Whole,
            Some(By::Hour) => Bucket::Hour,
            Some(By::Day) => Bucket::Day,
            Some(By::Month) => Bucket::Month,
        },
        feature: args.feature.clone(),
    };
    let mut replay = report::Replay::new(req.clone());
    while let Some(last) = page.last().map(|r| r.seq) {
        for record in &page {
            replay.feed(record);
        }
        page = read_page(last)?;
    }
    let reports = replay.finish();
    let text = match args.format {
        Format::Table => table(&reports, &req),
        Format::Csv => csv(&reports),
        Format::Json => format!("{:#}\n", json_of(&reports, &req)),
    };
    print!("{text}");
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&reports, &req))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(OK)
}

fn time(ms: Ms) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The table: per feature, a row per bucket, seat-hours by user and host, and the verdict.
pub fn table(reports: &[FeatureReport], req: &report::Request) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "usage from {} to {}", time(req.from), time(req.to));
    if reports.is_empty() {
        out.push_str("\n(no usage recorded)\n");
    }
    for r in reports {
        let _ = writeln!(
            out,
            "\n{} ({})",
            r.feature,
            usher_license::words::plural(r.total.seats.into(), "seat")
        );
        let head = [
            "PERIOD", "SEATS", "PEAK", "AVG USE", "AT 100%", "DENIED", "QUEUED",
        ];
        let mut rows: Vec<[String; 7]> = r.rows.iter().map(row_cells).collect();
        if r.rows.len() > 1 {
            let mut total = row_cells(&r.total);
            total[0] = "total".into();
            rows.push(total);
        }
        let mut widths = head.map(str::len);
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.len());
            }
        }
        for row in std::iter::once(&head.map(str::to_owned)).chain(&rows) {
            let mut line = String::from(" ");
            for (i, cell) in row.iter().enumerate() {
                let w = widths[i];
                if i == 0 {
                    let _ = write!(line, " {cell:<w$} ");
                } else {
                    let _ = write!(line, " {cell:>w$} ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for (title, map) in [("by user", &r.by_user), ("by host", &r.by_host)] {
            if map.is_empty() {
                continue;
            }
            let mut top: Vec<(&String, &f64)> = map.iter().collect();
            top.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
            let list: Vec<String> = top
                .iter()
                .take(10)
                .map(|(k, h)| format!("{k} {h:.2}"))
                .collect();
            let _ = writeln!(out, "  seat-hours {title}: {}", list.join(", "));
        }
        let _ = writeln!(out, "  {}", r.verdict());
    }
    out
}

fn row_cells(f: &Figures) -> [String; 7] {
    [
        time(f.from),
        f.seats.to_string(),
        f.peak.to_string(),
        format!("{:.1}%", f.utilisation() * 100.0),
        hms(f.full_ms),
        f.denied().to_string(),
        hms(f.queued_ms),
    ]
}

/// CSV: a header, then one line per feature and row.
pub fn csv(reports: &[FeatureReport]) -> String {
    let mut out = String::from(
        "feature,from,to,seats,peak,avg_utilisation,time_at_full_s,denials,queued_s\n",
    );
    for r in reports {
        for f in &r.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{:.4},{},{},{}",
                csv_field(&r.feature),
                time(f.from),
                time(f.to),
                f.seats,
                f.peak,
                f.utilisation(),
                f.full_ms / 1000,
                f.denied(),
                f.queued_ms / 1000
            );
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn figures_json(f: &Figures) -> Value {
    json!({
        "from": time(f.from),
        "to": time(f.to),
        "seats": f.seats,
        "peak": f.peak,
        "avg_utilisation": f.utilisation(),
        "time_at_full_s": f.full_ms / 1000,
        "denials": f.denied(),
        "denials_by_reason": f.denials,
        "queued_s": f.queued_ms / 1000,
    })
}

/// The JSON document: the period, and per feature its rows, totals, seat-hours and verdict.
pub fn json_of(reports: &[FeatureReport], req: &report::Request) -> Value {
    json!({
        "from": time(req.from),
        "to": time(req.to),
        "features": reports.iter().map(|r| json!({
            "feature": r.feature,
            "rows": r.rows.iter().map(figures_json).collect::<Vec<_>>(),
            "total": figures_json(&r.total),
            "seat_hours_by_user": r.by_user,
            "seat_hours_by_host": r.by_host,
            "peak_demand": r.peak_demand,
            "verdict": r.verdict(),
        })).collect::<Vec<_>>(),
    })
}

/// Seats in use over time, one panel per feature: a step line, the seat count dashed, the
/// peak marked and each refusal as a red tick. Self-contained (no fonts or scripts).
pub fn svg(reports: &[FeatureReport], req: &report::Request) -> String {
    const W: f64 = 800.0;
    const H: f64 = 160.0;
    const PAD: f64 = 40.0;
    let mut out = String::new();
    let height = (reports.len().max(1) as f64) * (H + PAD) + PAD;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="12">"#,
        w = W + 2.0 * PAD
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let span = (req.to - req.from).max(1) as f64;
    let x = |t: Ms| PAD + (t - req.from) as f64 / span * W;
    for (i, r) in reports.iter().enumerate() {
        let top = PAD + i as f64 * (H + PAD);
        let max = r.total.seats.max(r.total.peak).max(1) as f64;
        let y = |n: u32| top + H - f64::from(n) / max * H;
        let _ = writeln!(
            out,
            r##"<g class="feature" data-feature="{f}"><text x="{PAD}" y="{t}" font-weight="bold">{f}: peak {p} of {s} seats, {u:.0}% average use, {d} refused</text>"##,
            f = xml(&r.feature),
            t = top - 8.0,
            p = r.total.peak,
            s = r.total.seats,
            u = r.total.utilisation() * 100.0,
            d = r.total.denied()
        );
        let _ = writeln!(
            out,
            r##"<rect x="{PAD}" y="{top}" width="{W}" height="{H}" fill="none" stroke="#cccccc"/>"##
        );
        if r.total.seats > 0 {
            let ys = y(r.total.seats);
            let _ = writeln!(
                out,
                r##"<line class="seats" x1="{PAD}" y1="{ys}" x2="{x2}" y2="{ys}" stroke="#888888" stroke-dasharray="4 3"/>"##,
                x2 = PAD + W
            );
        }
        let mut points = String::new();
        let mut level = 0u32;
        let mut peak_at = None;
        for &(t, n) in &r.series {
            let _ = write!(
                points,
                "{:.1},{:.1} {:.1},{:.1} ",
                x(t),
                y(level),
                x(t),
                y(n)
            );
            level = n;
            if n == r.total.peak && peak_at.is_none() && n > 0 {
                peak_at = Some(t);
            }
        }
        let _ = write!(points, "{:.1},{:.1}", x(req.to), y(level));
        let _ = writeln!(
            out,
            r##"<polyline class="in-use" points="{points}" fill="none" stroke="#1f6feb" stroke-width="2"/>"##
        );
        if let Some(t) = peak_at {
            let _ = writeln!(
                out,
                r##"<circle class="peak" cx="{:.1}" cy="{:.1}" r="4" fill="#1f6feb"><title>peak {}</title></circle>"##,
                x(t),
                y(r.total.peak),
                r.total.peak
            );
        }
        for &t in &r.denial_times {
            let _ = writeln!(
                out,
                r##"<line class="denial" x1="{a:.1}" y1="{b}" x2="{a:.1}" y2="{c}" stroke="#d1242f" stroke-width="2"/>"##,
                a = x(t),
                b = top + H - 10.0,
                c = top + H
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{PAD}" y="{b}" fill="#555555">{from}</text><text x="{e}" y="{b}" fill="#555555" text-anchor="end">{to}</text></g>"##,
            b = top + H + 14.0,
            e = PAD + W,
            from = time(req.from),
            to = time(req.to)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
