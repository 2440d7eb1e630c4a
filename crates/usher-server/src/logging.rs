//! Where `usherd`'s log goes and what it looks like.
//!
//! The log is written to standard error, one event per line, as text or as JSON
//! (`--log-format`). Colour is used only when standard error is a terminal (and `NO_COLOR`
//! is unset), so a log redirected to a file or read by journald holds no escape codes.
//! Under systemd (standard error is the stream named by `JOURNAL_STREAM`), each line
//! starts with its syslog priority, `<3>` for errors, `<4>` warnings, `<6>` information,
//! `<7>` debug, the sd-daemon convention journald strips and files under `PRIORITY=`
//! (so `journalctl -p warning` shows warnings and errors); timestamps are left to journald.
//!
//! JSON lines carry stable top-level fields: `timestamp` (RFC 3339, absent under
//! journald), `level` (`ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`), `target` (the module),
//! `message`, and the event's own fields by name.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where standard error goes, as far as the log's shape is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// Standard error is a terminal: colour is welcome.
    pub terminal: bool,
    /// Standard error is systemd's journal stream: prefix priorities, omit timestamps.
    pub journal: bool,
}

impl Destination {
    /// Looks at the process's standard error and environment.
    pub fn detect() -> Destination {
        let stderr = std::io::stderr();
        let journal = std::env::var("JOURNAL_STREAM")
            .ok()
            .is_some_and(|v| is_journal_stream(&v, stderr_identity()));
        Destination {
            terminal: !journal && stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            journal,
        }
    }
}

/// The device and inode of standard error, as systemd names them in `JOURNAL_STREAM`.
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Whether `JOURNAL_STREAM=DEV:INODE` names `stderr`. systemd sets it for the service's
/// own output; a child whose standard error was redirected inherits the variable but not
/// the stream, and must not be treated as writing to the journal.
fn is_journal_stream(value: &str, stderr: Option<(u64, u64)>) -> bool {
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    match (dev.parse::<u64>(), ino.parse::<u64>(), stderr) {
        (Ok(dev), Ok(ino), Some(actual)) => (dev, ino) == actual,
        _ => false,
    }
}

/// The syslog priority of a level (sd-daemon(3): `<N>` at the start of a line).
pub fn journal_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Wraps a formatter and, under journald, writes the line's priority first.
struct Prioritised<F> {
    inner: F,
    journal: bool,
}

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.journal {
            write!(writer, "<{}>", journal_priority(*event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber: `filter` (e.g. `info`, `usher_server=debug`) in
/// `shape`, shaped for `to`. Call once, before anything logs.
pub fn init(filter: EnvFilter, shape: LogFormat, to: Destination) {
    use tracing_subscriber::fmt::format;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(to.terminal);
    let journal = to.journal;
    match (shape, journal) {
        (LogFormat::Text, false) => builder
            .event_format(Prioritised {
                inner: format::Format::default(),
                journal,
            })
            .init(),
        (LogFormat::Text, true) => builder
            .event_format(Prioritised {
                inner: format::Format::default().without_time(),
                journal,
            })
            .init(),
        (LogFormat::Json, journal) => {
            let json = format::Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false);
            let builder = builder.fmt_fields(format::JsonFields::new());
            if journal {
                builder
                    .event_format(Prioritised {
                        inner: json.without_time(),
                        journal,
                    })
                    .init()
            } else {
                builder
                    .event_format(Prioritised {
                        inner: json,
                        journal,
                    })
                    .init()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_our_own_stderr() {
        assert!(is_journal_stream("8:1234", Some((8, 1234))));
        assert!(
            !is_journal_stream("8:1234", Some((8, 99))),
            "another stream"
        );
        assert!(!is_journal_stream("8:1234", None));
        assert!(!is_journal_stream("garbage", Some((8, 1234))));
        assert!(!is_journal_stream("8:x", Some((8, 1234))));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(journal_priority(Level::ERROR), 3);
        assert_eq!(journal_priority(Level::WARN), 4);
        assert_eq!(journal_priority(Level::INFO), 6);
        assert_eq!(journal_priority(Level::DEBUG), 7);
        assert_eq!(journal_priority(Level::TRACE), 7);
    }
}
