//! DUP_GROUP: further checkouts by the same user, host or display share one seat.

use usher_core::{Command, Denial, DupGroup, LeaseId, Ledger, Outcome, SessionId};

use crate::util::*;

fn with_dup(seats: u32, dup: &str) -> usher_license::Entitlement {
    let mut e = ent("cad", "2025", seats);
    e.attrs.push(("DUP_GROUP".into(), dup.into()));
    e
}

/// Opens session `id` for `user` on `host` at `display`.
fn session_of(ledger: &mut Ledger, id: u64, user: &str, host: &str, display: &str) -> SessionId {
    let mut info = client(id);
    info.user = user.into();
    info.host = host.into();
    info.display = display.into();
    let (result, _) = apply(
        ledger,
        T0,
        Command::OpenSession {
            id: SessionId(id),
            secret_hash: secret(id),
            client: info,
        },
    );
    assert_eq!(result, Ok(Outcome::Done));
    SessionId(id)
}

fn in_use(ledger: &Ledger) -> u32 {
    ledger.in_use(&key("cad", VENDOR, "2025"))
}

#[test]
fn the_value_names_what_must_match() {
    let g = |u, h, d| {
        Some(DupGroup {
            user: u,
            host: h,
            display: d,
        })
    };
    assert_eq!(DupGroup::parse("NONE"), Ok(None));
    assert_eq!(DupGroup::parse("SITE"), Ok(g(false, false, false)));
    assert_eq!(DupGroup::parse("UHD"), Ok(g(true, true, true)));
    assert_eq!(DupGroup::parse("uh"), Ok(g(true, true, false)));
    assert_eq!(DupGroup::parse("D"), Ok(g(false, false, true)));
    assert!(DupGroup::parse("UX").is_err());
    assert!(DupGroup::parse("").is_err());
}

#[test]
fn checkouts_share_a_seat_when_the_grouped_parts_match() {
    // (DUP_GROUP, second checkout's user, host, display, seats in use after both)
    let cases = [
        ("U", "alice", "ws2", ":1", 1),
        ("U", "bob", "ws1", ":0", 2),
        ("UH", "alice", "ws1", ":1", 1),
        ("UH", "alice", "ws2", ":0", 2),
        ("UHD", "alice", "ws1", ":0", 1),
        ("UHD", "alice", "ws1", ":1", 2),
        ("H", "bob", "ws1", ":1", 1),
        ("D", "bob", "ws2", ":0", 1),
        ("SITE", "bob", "ws2", ":1", 1),
        ("NONE", "alice", "ws1", ":0", 2),
    ];
    for (dup, user, host, display, expected) in cases {
        let mut ledger = ledger(&[with_dup(5, dup)]);
        let a = session_of(&mut ledger, 1, "alice", "ws1", ":0");
        let b = session_of(&mut ledger, 2, user, host, display);
        grant(&mut ledger, T0, a, 10, "cad", "", 1);
        grant(&mut ledger, T0, b, 11, "cad", "", 1);
        assert_eq!(
            in_use(&ledger),
            expected,
            "DUP_GROUP={dup} with {user} {host} {display}"
        );
    }
}

#[test]
fn a_duplicate_is_granted_when_the_pool_is_full_and_the_seat_stays_until_the_last_lets_go() {
    let mut ledger = ledger(&[with_dup(1, "UH")]);
    let a = session_of(&mut ledger, 1, "alice", "ws1", ":0");
    let b = session_of(&mut ledger, 2, "alice", "ws1", ":1");
    let c = session_of(&mut ledger, 3, "bob", "ws1", ":0");
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    grant(&mut ledger, T0, b, 11, "cad", "", 1);
    assert_eq!(in_use(&ledger), 1);
    let (result, _) = apply(&mut ledger, T0, checkout_cmd(c, 12, "cad", "", 1));
    assert_eq!(
        result,
        Ok(Outcome::Denied(Denial::AllInUse {
            in_use: 1,
            total: 1
        })),
        "another user needs a seat of their own"
    );
    let (result, _) = apply(
        &mut ledger,
        T0,
        Command::Checkin {
            session: a,
            lease_id: LeaseId(10),
        },
    );
    assert!(matches!(result, Ok(Outcome::Released(_))));
    assert_eq!(in_use(&ledger), 1, "the duplicate still holds the seat");
    apply(
        &mut ledger,
        T0,
        Command::Checkin {
            session: b,
            lease_id: LeaseId(11),
        },
    )
    .0
    .unwrap();
    assert_eq!(in_use(&ledger), 0);
    grant(&mut ledger, T0, c, 13, "cad", "", 1);
}

#[test]
fn a_larger_duplicate_takes_only_the_extra_seats() {
    let mut ledger = ledger(&[with_dup(3, "U")]);
    let a = session_of(&mut ledger, 1, "alice", "ws1", ":0");
    let b = session_of(&mut ledger, 2, "alice", "ws2", ":0");
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    grant(&mut ledger, T0, b, 11, "cad", "", 3);
    assert_eq!(in_use(&ledger), 3, "the group holds its largest lease");
    apply(
        &mut ledger,
        T0,
        Command::Checkin {
            session: b,
            lease_id: LeaseId(11),
        },
    )
    .0
    .unwrap();
    assert_eq!(in_use(&ledger), 1);
}

#[test]
fn restore_and_reload_count_duplicates_again() {
    let mut ledger = ledger(&[with_dup(2, "U")]);
    let a = session_of(&mut ledger, 1, "alice", "ws1", ":0");
    let b = session_of(&mut ledger, 2, "alice", "ws2", ":0");
    grant(&mut ledger, T0, a, 10, "cad", "", 1);
    grant(&mut ledger, T0, b, 11, "cad", "", 1);
    let mut orphans = Vec::new();
    let mut restored = Ledger::restore(
        ledger.catalog().clone(),
        CONFIG,
        ledger.sessions().cloned(),
        ledger.leases().cloned(),
        T0 + 1,
        &mut orphans,
    );
    assert_eq!(in_use(&restored), 1);
    // The vendor drops DUP_GROUP: both leases now hold a seat each.
    restored.set_catalog(catalog(&[ent("cad", "2025", 2)]));
    assert_eq!(in_use(&restored), 2);
    let sometimes = catalog(&[with_dup(1, "sometimes")]);
    assert_eq!(
        sometimes
            .pool(&key("cad", VENDOR, "2025"))
            .unwrap()
            .dup_group,
        None,
        "a refused DUP_GROUP= groups nothing"
    );
}
