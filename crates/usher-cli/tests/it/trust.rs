//! Trust on first use: the first server id seen at an address is remembered; another id
//! there later is refused with both ids and the command that accepts it; `usher trust
//! --forget` accepts it; pins (`USHER_SERVER_ID`) override the file.

use crate::util::*;

#[test]
fn a_changed_server_id_is_refused_until_forgotten_and_pins_override() {
    let lic = Licensed::start(Timings::SHORT);
    let server = &lic.server;
    let state = tempfile::tempdir().unwrap();
    let known = state.path().join("usher").join("known_servers");
    let spec = server.spec();
    let with_file = |args: &[&str]| {
        let mut cmd = usher(args);
        cmd.env("USHER_KNOWN_SERVERS", &known);
        output(cmd)
    };
    let real_id = std::fs::read_to_string(server.scratch.path().join("data/identity.id"))
        .unwrap()
        .trim()
        .to_string();

    // First connection: accepted and remembered.
    let first = with_file(&["status", "-c", &spec]);
    assert_eq!(first.code, Some(0), "{first}");
    let text = std::fs::read_to_string(&known).unwrap();
    assert_eq!(text.trim(), format!("{spec} {real_id}"), "{text}");
    let again = with_file(&["status", "-c", &spec]);
    assert_eq!(again.code, Some(0), "{again}");

    // The server at that address now presents another id (as after a key change, or an
    // impostor): the file says otherwise.
    let other_id = format!("USHER_ID={}", "0".repeat(40));
    std::fs::write(&known, format!("{spec} {other_id}\n")).unwrap();
    let refused = with_file(&["status", "-c", &spec]);
    assert_eq!(refused.code, Some(3), "{refused}");
    for part in [
        real_id.as_str(),
        other_id.as_str(),
        &format!("usher trust --forget {spec}"),
    ] {
        assert!(refused.stderr.contains(part), "{part} missing: {refused}");
    }

    // A pin overrides the file.
    let mut pinned = usher(&["status", "-c", &spec]);
    pinned
        .env("USHER_KNOWN_SERVERS", &known)
        .env("USHER_SERVER_ID", &real_id);
    let pinned = output(pinned);
    assert_eq!(pinned.code, Some(0), "{pinned}");

    // Listed, forgotten, then the id found is remembered again.
    let listed = with_file(&["trust"]);
    assert!(listed.stdout.contains(&other_id), "{listed}");
    let forgot = with_file(&["trust", "--forget", &spec]);
    assert_eq!(forgot.code, Some(0), "{forgot}");
    let after = with_file(&["status", "-c", &spec]);
    assert_eq!(after.code, Some(0), "{after}");
    let text = std::fs::read_to_string(&known).unwrap();
    assert_eq!(text.trim(), format!("{spec} {real_id}"), "{text}");
}
