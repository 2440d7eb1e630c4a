//! Building the catalog from entitlements, and the seat arithmetic of a pool.

use crate::util::{
    DAY, T0, VENDOR, catalog, day_ms, ent, expiring, from_vendor, increment, key, starting,
    uncounted,
};

#[test]
fn pools_group_lines_by_feature_vendor_and_numeric_version() {
    let cat = catalog(&[
        ent("cad", "2025.10", 1),
        ent("sim", "1", 4),
        ent("cad", "2025.9", 2),
        increment("cad", "2025.10", 3),
        from_vendor(ent("cad", "2025.9", 5), "globex"),
        increment("cad", "2025.9.0", 7),
        uncounted("cad", "2030"),
        uncounted("viewer", "1"),
    ]);
    let pools = cat.pools("cad").expect("cad is licensed");
    let summary: Vec<_> = pools
        .iter()
        .map(|p| {
            (
                p.key.vendor.as_str(),
                p.key.version.as_str(),
                p.seats_at(T0),
                p.grants.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (VENDOR, "2025.9", 9, 2),
            ("globex", "2025.9", 5, 1),
            (VENDOR, "2025.10", 4, 2)
        ],
        "ascending numeric version, then vendor; INCREMENTs (even spelled 2025.9.0) merge"
    );
    assert_eq!(
        cat.pools("viewer"),
        None,
        "a feature with only uncounted lines has no pool"
    );
    assert_eq!(cat.pools("nope"), None);
    let features: Vec<_> = cat.all_pools().map(|p| p.key.feature.as_str()).collect();
    assert_eq!(features, ["cad", "cad", "cad", "sim"]);
    assert_eq!(
        cat.pool(&key("sim", VENDOR, "1")).map(|p| p.seats_at(T0)),
        Some(4)
    );
    assert_eq!(cat.pool(&key("sim", VENDOR, "2")), None);
    assert_eq!(cat.pool(&key("sim", "globex", "1")), None);
}

#[test]
fn an_empty_license_has_no_pools() {
    let cat = catalog(&[]);
    assert_eq!(cat.all_pools().count(), 0);
    assert_eq!(cat, usher_core::Catalog::default());
}

#[test]
fn seats_follow_each_lines_dates() {
    // 1 seat always, 2 seats on days 1-2, 4 seats from day 2 on, 8 seats until the end of day 0.
    let cat = catalog(&[
        ent("cad", "1", 1),
        starting(expiring(increment("cad", "1", 2), 2), 1),
        starting(increment("cad", "1", 4), 2),
        expiring(increment("cad", "1", 8), 0),
    ]);
    let pool = &cat.pools("cad").unwrap()[0];
    // (time, seats, next start, last end, current seats' first end)
    let table = [
        (day_ms(0), 9, Some(day_ms(1)), None, Some(day_ms(1))),
        (day_ms(1) - 1, 9, Some(day_ms(1)), None, Some(day_ms(1))),
        (
            day_ms(1),
            3,
            Some(day_ms(2)),
            Some(day_ms(1)),
            Some(day_ms(3)),
        ),
        (day_ms(2), 7, None, Some(day_ms(1)), Some(day_ms(3))),
        (day_ms(3) - 1, 7, None, Some(day_ms(1)), Some(day_ms(3))),
        (day_ms(3), 5, None, Some(day_ms(3)), None),
        (day_ms(3) + 365 * DAY, 5, None, Some(day_ms(3)), None),
    ];
    for (now, seats, next_start, last_end, expires_at) in table {
        let at = (now - T0) as f64 / DAY as f64;
        assert_eq!(pool.seats_at(now), seats, "seats at day {at}");
        assert_eq!(pool.next_start(now), next_start, "next start at day {at}");
        assert_eq!(pool.last_end(now), last_end, "last end at day {at}");
        assert_eq!(pool.expires_at(now), expires_at, "expiry at day {at}");
    }
}

#[test]
fn seat_sums_saturate() {
    let cat = catalog(&[ent("cad", "1", u32::MAX), increment("cad", "1", u32::MAX)]);
    assert_eq!(cat.pools("cad").unwrap()[0].seats_at(T0), u32::MAX);
}

#[test]
fn pool_key_does_not_depend_on_line_order() {
    let one = catalog(&[ent("cad", "2025", 1), increment("cad", "2025.0", 1)]);
    let other = catalog(&[increment("cad", "2025.0", 1), ent("cad", "2025", 1)]);
    let keys = |c: &usher_core::Catalog| c.all_pools().map(|p| p.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&one), keys(&other));
}
