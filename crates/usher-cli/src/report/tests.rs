//! The replay's figures for hand-written usage logs: lingering seats, duplicates sharing a
//! seat, aggregated denials, when a report advises more seats, and the class of every
//! reason name the log uses.

use usher_core::{LeaseId, SessionId};
use usher_proto::{DenyReason, RefusalClass};
use usher_store::{DETAIL_LINGER_OVER, DETAIL_REUSED, LogEvent, UsageEvent, UsageRecord};

use super::model::reason_class;
use super::*;

/// One second, in the store's milliseconds.
const S: u64 = 1_000;

fn record(at: u64, event: UsageEvent, lease: u64, detail: Option<&str>) -> UsageRecord {
    let columns = LogEvent {
        event,
        session: Some(SessionId(lease)),
        lease: Some(LeaseId(lease)),
        feature: Some("cad".into()),
        vendor: Some("acme".into()),
        version: Some("2025".into()),
        count: Some(1),
        user: Some("alice".into()),
        host: Some("ws1".into()),
        display: None,
        detail: detail.map(str::to_owned),
    };
    UsageRecord {
        seq: 0,
        at,
        columns,
        hash: [0; 32],
    }
}

/// A lingering seat is in use until it really goes back: the `linger` record (the
/// client's checkin) ends nothing; the `checkin` with detail `linger over` or `reused`
/// does.
#[test]
fn lingering_time_counts_as_use() {
    let mut seats = record(0, UsageEvent::Seats, 0, None);
    (seats.session, seats.lease, seats.user, seats.host) = (None, None, None, None);
    let records = [
        seats,
        record(10 * S, UsageEvent::Checkout, 1, None),
        record(20 * S, UsageEvent::Linger, 1, None),
        record(70 * S, UsageEvent::Checkin, 1, Some(DETAIL_LINGER_OVER)),
        record(80 * S, UsageEvent::Checkout, 2, None),
        record(85 * S, UsageEvent::Linger, 2, None),
        record(90 * S, UsageEvent::Checkin, 2, Some(DETAIL_REUSED)),
        record(90 * S, UsageEvent::Checkout, 3, None),
        record(95 * S, UsageEvent::Checkin, 3, None),
    ];
    let req = Request {
        from: 0,
        to: 100_000,
        by: Bucket::Whole,
        feature: None,
    };
    let reports = build(&records, &req);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].total.used_ms, u128::from((60 + 10 + 5) * S));
    assert_eq!(reports[0].total.peak, 1, "a takeover never counts twice");
    let hours = reports[0].by_user["alice"];
    assert!((hours - 75.0 / 3600.0).abs() < 1e-9, "{hours} hours");
}

/// Under `DUP_GROUP=UH`, alice's second checkout on ws1 shares her seat: live status
/// says `1 of 1`, and so must the report (peak 1, no seat wanted).
#[test]
fn duplicates_share_a_seat_as_in_the_ledger() {
    let mut seats = record(0, UsageEvent::Seats, 0, Some("DUP_GROUP=UH"));
    (seats.session, seats.lease, seats.user, seats.host) = (None, None, None, None);
    let mut other_host = record(30 * S, UsageEvent::Checkout, 3, None);
    other_host.host = Some("ws2".into());
    let records = [
        seats,
        record(10 * S, UsageEvent::Checkout, 1, None),
        record(20 * S, UsageEvent::Checkout, 2, None),
        other_host,
        record(40 * S, UsageEvent::Checkin, 3, None),
        record(50 * S, UsageEvent::Checkin, 1, None),
        record(60 * S, UsageEvent::Checkin, 2, None),
    ];
    let req = Request {
        from: 0,
        to: 100_000,
        by: Bucket::Whole,
        feature: None,
    };
    let r = build(&records, &req).remove(0);
    assert_eq!(
        r.total.peak, 2,
        "only ws2's checkout needs a seat of its own: {r:?}"
    );
    assert_eq!(
        r.series,
        [10, 20, 30, 40, 50, 60]
            .into_iter()
            .zip([1, 1, 2, 1, 1, 0])
            .map(|(t, n)| (t * S as Ms, n))
            .collect::<Vec<_>>()
    );
    assert_eq!(r.total.used_ms, u128::from((50 + 10) * S));
}

/// A `denied_repeats` record counts as `count` denials of its reason.
#[test]
fn aggregated_denials_count_as_many() {
    let mut repeats = record(30 * S, UsageEvent::DeniedRepeats, 1, Some("all_in_use"));
    repeats.count = Some(41);
    let records = [
        record(10 * S, UsageEvent::Denied, 1, Some("all_in_use")),
        repeats,
        record(40 * S, UsageEvent::Denied, 2, Some("max_reached")),
    ];
    let req = Request {
        from: 0,
        to: 100_000,
        by: Bucket::Whole,
        feature: None,
    };
    let reports = build(&records, &req);
    assert_eq!(reports[0].total.denied(), 43, "{reports:?}");
    assert_eq!(reports[0].total.denials["all_in_use"], 42);
    assert_eq!(reports[0].denial_times.len(), 43);
}

/// 2 seats, both held for the whole period, and refusals of every class: only the
/// shortage ones (and a wait that ran out) make the verdict ask for more seats.
fn full_pool_with(denials: &[&str], timed_out: bool) -> FeatureReport {
    let mut seats = record(0, UsageEvent::Seats, 0, None);
    seats.count = Some(2);
    let mut records = vec![
        seats,
        record(S, UsageEvent::Checkout, 1, None),
        record(S, UsageEvent::Checkout, 2, None),
    ];
    for (i, d) in denials.iter().enumerate() {
        records.push(record((10 + i as u64) * S, UsageEvent::Denied, 0, Some(d)));
    }
    if timed_out {
        records.push(record(40 * S, UsageEvent::Queue, 9, None));
        records.push(record(50 * S, UsageEvent::Dequeue, 9, Some("timed_out")));
    }
    records.push(record(99 * S, UsageEvent::Checkin, 1, None));
    records.push(record(99 * S, UsageEvent::Checkin, 2, None));
    let req = Request {
        from: 0,
        to: 10_000_000,
        by: Bucket::Whole,
        feature: None,
    };
    build(&records, &req).remove(0)
}

#[test]
fn only_refusals_for_lack_of_seats_ask_for_more_seats() {
    let others = [
        "not_borrowable",
        "borrow_too_long",
        "excluded",
        "max_reached",
        "unknown_feature",
    ];
    let r = full_pool_with(&others, false);
    let verdict = r.verdict();
    assert!(!verdict.contains("consider"), "{verdict}");
    assert!(
        verdict.contains("stayed idle") || verdict.contains("enough"),
        "{verdict}"
    );
    assert!(
        verdict.contains(
            "2 refused by policy, 1 refused by the licenses, 2 refused by borrowing rules"
        ),
        "{verdict}"
    );
    assert_eq!(r.total.denied(), 5);
    assert_eq!(r.total.refused(RefusalClass::Shortage), 0);
    assert!(
        r.peak_demand <= 2,
        "non-shortage refusals add no demand: {r:?}"
    );

    let r = full_pool_with(&["all_in_use", "not_borrowable"], false);
    let verdict = r.verdict();
    assert!(
        verdict.contains("1 checkout was refused for lack of a seat; consider 1 more seat"),
        "{verdict}"
    );
    assert!(
        verdict.contains("1 refused by borrowing rules"),
        "{verdict}"
    );

    let r = full_pool_with(&[], true);
    assert_eq!(
        r.total.refused(RefusalClass::Shortage),
        1,
        "a wait that ran out: {r:?}"
    );
    assert!(r.verdict().contains("consider"), "{}", r.verdict());
}

#[test]
fn every_logged_reason_name_has_its_class() {
    for reason in DenyReason::ALL {
        assert_eq!(reason_class(reason.name()), reason.class(), "{reason:?}");
    }
    assert_eq!(reason_class("all_in_use"), RefusalClass::Shortage);
    assert_eq!(reason_class("max_reached"), RefusalClass::Policy);
    assert_eq!(reason_class("borrow_too_long"), RefusalClass::Borrowing);
    assert_eq!(reason_class("no such reason"), RefusalClass::BadRequest);
}
