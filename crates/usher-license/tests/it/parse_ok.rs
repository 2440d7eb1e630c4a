//! What a well-formed file parses to.

use usher_license::{Expiry, HostId, LineKind, SeatCount, ServerLine, UserAttribute};

use crate::util::{SAMPLE, date, parse_ok};

#[test]
fn sample_parses_to_every_field() {
    let file = parse_ok(SAMPLE);
    assert_eq!(file.name, "test.lic");
    assert_eq!(
        file.servers,
        [ServerLine {
            host: "lic1.example.com".into(),
            hostid: HostId::Any,
            port: Some(1648),
            line: 2
        }]
    );
    assert_eq!(file.vendors, ["acme"]);
    assert!(file.use_server);
    assert_eq!(file.entitlements.len(), 3);

    let cad = &file.entitlements[0];
    assert_eq!(cad.kind, LineKind::Feature);
    assert_eq!((cad.feature.as_str(), cad.vendor.as_str()), ("cad", "acme"));
    assert_eq!(cad.version.as_str(), "2025.1");
    assert_eq!(cad.expiry, Expiry::On(date(2027, 12, 31)));
    assert_eq!(cad.count, SeatCount::Counted(10));
    assert_eq!(cad.issued, Some(date(2025, 1, 15)));
    assert_eq!(cad.start, None);
    assert_eq!(cad.notice.as_deref(), Some("Example Corp, site license"));
    assert_eq!(cad.hostid, HostId::Any);
    assert_eq!(
        cad.attrs,
        [
            ("DUP_GROUP".to_string(), "UH".to_string()),
            ("LINGER".to_string(), "60".to_string())
        ]
    );
    assert_eq!(cad.signature, None);
    assert_eq!(cad.line, 6);

    let spare = &file.entitlements[1];
    assert_eq!(spare.kind, LineKind::Increment);
    assert_eq!(spare.expiry, Expiry::Permanent);
    assert_eq!(spare.start, Some(date(2026, 1, 1)));
    assert_eq!(spare.line, 9);

    let solver = &file.entitlements[2];
    assert_eq!(solver.count, SeatCount::Uncounted);
    assert_eq!(solver.expiry, Expiry::On(date(2027, 6, 30)));
    assert_eq!(solver.hostid, HostId::Id("ETHER=00:1a:2b:3c:4d:5e".into()));
    assert_eq!(solver.line, 10);

    assert_eq!(
        file.user_attrs,
        [UserAttribute {
            entitlement: 0,
            key: "asset_info".into(),
            value: "rack 4".into()
        }]
    );
}

#[test]
fn flexlm_spellings() {
    let file = parse_ok(
        "server lic1 ETHER=00AA 27000\n\
         vendor acme /opt/acme/bin/acme OPTIONS=acme.opt PORT=2000\n\
         feature a acme 1 1-JAN-0 0 HOSTID=\"HOSTNAME=Build1 ether=00AA\"\n\
         Increment b acme 1 01-jan-0000 Uncounted HOSTID=x\n\
         INCREMENT c acme 1 PERMANENT 3 SUPERSEDE USER_BASED NOTICE=\"\"\n\
         # empty lines and comments between entitlements are fine\n\
         \n\
         INCREMENT d acme 1 permanent 3 hostid_note=\"not special\" sort=100\n",
    );
    let [a, b, c, d] = &file.entitlements[..] else {
        panic!("{file:?}")
    };
    assert_eq!(file.servers[0].hostid, HostId::Id("ETHER=00aa".into()));
    assert_eq!(file.vendors, ["acme"]);
    assert_eq!(
        (a.expiry, a.count),
        (Expiry::Permanent, SeatCount::Uncounted)
    );
    assert_eq!(a.hostid, HostId::Id("HOSTNAME=build1 ETHER=00aa".into()));
    assert_eq!(
        (b.expiry, b.count),
        (Expiry::Permanent, SeatCount::Uncounted)
    );
    assert_eq!(
        c.attrs,
        [
            ("SUPERSEDE".into(), String::new()),
            ("USER_BASED".into(), String::new())
        ]
    );
    assert_eq!(c.notice, None);
    assert_eq!(d.count, SeatCount::Counted(3));
    assert_eq!(file.user_attrs.len(), 2);
    assert!(file.user_attrs.iter().all(|u| u.entitlement == 3));
}

#[test]
fn continuation_at_end_of_file_and_quoted_continuations() {
    let file = parse_ok("FEATURE a acme 1 permanent 3 NOTICE=\"first \\\n   second\" \\");
    assert_eq!(file.entitlements[0].notice.as_deref(), Some("first second"));
}

#[test]
fn empty_and_comment_only_files() {
    for text in ["", "\n\n", "# nothing here\n   # or here\n", "\\\n\\\n"] {
        assert!(parse_ok(text).entitlements.is_empty(), "{text:?}");
    }
}

#[test]
fn validity_window_in_milliseconds() {
    let file =
        parse_ok("FEATURE a acme 1 31-dec-2027 3 START=2026-01-01\nFEATURE b acme 1 permanent 3\n");
    let [a, b] = &file.entitlements[..] else {
        panic!()
    };
    assert_eq!(a.valid_from_ms(), 1_767_225_600_000);
    assert_eq!(a.valid_until_ms(), Some(1_830_297_600_000)); // 2028-01-01T00:00:00Z
    assert_eq!(b.valid_from_ms(), 0);
    assert_eq!(b.valid_until_ms(), None);
}
