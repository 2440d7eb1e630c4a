//! Aggregating repeated denials in the usage log, so that one client retrying a refused
//! checkout cannot grow the log (fsynced, kept for years) faster than its legitimate work.
//!
//! The first refusal of a checkout (session, feature, version, seats) for a reason is
//! logged as a `denied` record, as always. Refusals of the same checkout for the same reason
//! in the [`REPEAT_WINDOW_MS`] after it are only counted; when the window closes, one
//! `denied_repeats` record with that count (if any) follows. Reports count it as that many
//! denials, so figures are unchanged; only their timestamps move to the window's end.

use std::collections::{HashMap, VecDeque};

use usher_core::{Denial, Millis, SessionId};
use usher_store::{LogEvent, UsageEvent};

/// How long repeats of one denial are gathered into one record.
pub const REPEAT_WINDOW_MS: Millis = 60_000;

/// Most denials gathered at once; beyond that, each denial is logged on its own (so the
/// memory is bounded; the log then grows as it did before aggregation).
const MAX_GATHERING: usize = 65_536;

/// What makes two denials "the same".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    session: SessionId,
    feature: String,
    version: String,
    count: u32,
    reason: String,
}

#[derive(Debug)]
struct Gathering {
    repeats: u32,
    /// The first denial's record, which the repeats record copies.
    first: LogEvent,
}

/// The denials being gathered, in the order their windows close.
#[derive(Debug, Default)]
pub struct DenialRepeats {
    open: HashMap<Key, Gathering>,
    closing: VecDeque<(Millis, Key)>,
}

impl DenialRepeats {
    /// Notes a `denied` record at `now`: true if it is to be logged, false if it was
    /// counted as a repeat of one logged within the window.
    pub fn note(&mut self, now: Millis, record: &LogEvent) -> bool {
        let key = Key {
            session: record.session.unwrap_or(SessionId(0)),
            feature: record.feature.clone().unwrap_or_default(),
            version: record.version.clone().unwrap_or_default(),
            count: record.count.unwrap_or(0),
            reason: record.detail.clone().unwrap_or_default(),
        };
        if let Some(g) = self.open.get_mut(&key) {
            g.repeats = g.repeats.saturating_add(1);
            return false;
        }
        if self.open.len() < MAX_GATHERING {
            self.closing
                .push_back((now + REPEAT_WINDOW_MS, key.clone()));
            let first = record.clone();
            self.open.insert(key, Gathering { repeats: 0, first });
        }
        true
    }

    /// When the next window closes, if any is open.
    pub fn next_due(&self) -> Option<Millis> {
        self.closing.front().map(|(due, _)| *due)
    }

    /// Closes the windows due by `now` (every window if `now` is `None`), appending a
    /// `denied_repeats` record for each that counted repeats.
    pub fn close(&mut self, now: Option<Millis>, events: &mut Vec<LogEvent>) {
        while let Some((due, _)) = self.closing.front() {
            if now.is_some_and(|now| *due > now) {
                break;
            }
            let (_, key) = self.closing.pop_front().expect("just looked at it");
            let Some(g) = self.open.remove(&key) else {
                continue;
            };
            if g.repeats > 0 {
                events.push(LogEvent {
                    event: UsageEvent::DeniedRepeats,
                    count: Some(g.repeats),
                    ..g.first
                });
            }
        }
    }
}

/// The reason a refusal is logged with: a stable snake_case name, for reports to group by
/// (the one table of names and classes is [`usher_proto::DenyReason`]'s).
pub fn denial_reason(denial: &Denial) -> &'static str {
    crate::requests::denied::deny_reason(denial).name()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(session: u64, feature: &str, reason: &str) -> LogEvent {
        LogEvent {
            event: UsageEvent::Denied,
            session: Some(SessionId(session)),
            lease: None,
            feature: Some(feature.into()),
            vendor: None,
            version: Some(String::new()),
            count: Some(1),
            user: Some("u".into()),
            host: Some("h".into()),
            display: None,
            detail: Some(reason.into()),
        }
    }

    #[test]
    fn repeats_within_the_window_become_one_record_with_their_count() {
        let mut r = DenialRepeats::default();
        assert!(
            r.note(0, &denied(1, "cad", "all_in_use")),
            "the first is logged"
        );
        for t in 1..=1000 {
            assert!(!r.note(t, &denied(1, "cad", "all_in_use")), "repeat {t}");
        }
        assert!(
            r.note(5, &denied(1, "cad", "max_reached")),
            "another reason"
        );
        assert!(
            r.note(5, &denied(2, "cad", "all_in_use")),
            "another session"
        );
        let mut events = Vec::new();
        r.close(Some(REPEAT_WINDOW_MS - 1), &mut events);
        assert!(events.is_empty(), "the window is still open");
        r.close(Some(REPEAT_WINDOW_MS + 5), &mut events);
        assert_eq!(events.len(), 1, "only the window with repeats: {events:?}");
        assert_eq!(events[0].event, UsageEvent::DeniedRepeats);
        assert_eq!(events[0].count, Some(1000));
        assert_eq!(events[0].detail.as_deref(), Some("all_in_use"));
        assert_eq!(r.next_due(), None);
        assert!(
            r.note(REPEAT_WINDOW_MS + 6, &denied(1, "cad", "all_in_use")),
            "new window"
        );
    }
}
