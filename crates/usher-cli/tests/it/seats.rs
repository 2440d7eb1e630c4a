//! Seats come back: from a killed holder (reconnect grace), a frozen one (session TTL) and
//! one whose command ended (check-in).

use crate::util::{Holder, Licensed, Timings, WAIT, feature_of, poll};

#[test]
fn a_killed_holder_frees_its_seat() {
    let fixture = Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let mut holder = Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 1);
    // SIGKILL: no goodbye; the server notices the closed connection and, after the
    // reconnect grace, releases the seat.
    holder.kill_usher();
    server.wait_in_use("cad", 0);
}

#[test]
fn a_frozen_holder_loses_its_seat_after_the_session_ttl() {
    let fixture = Licensed::start(Timings::SHORT);
    let server = &fixture.server;
    let holder = Holder::spawn(server, "cad", &["sleep", "30"]);
    server.wait_in_use("cad", 1);
    // SIGSTOP keeps the connection open but silences the heartbeats.
    holder.signal("STOP");
    server.wait_in_use("cad", 0);
    // Woken up, the holder learns that its seat is gone (the command keeps running).
    holder.signal("CONT");
    poll("the thawed holder to report the lost license", WAIT, || {
        let stderr = holder.stderr();
        if stderr.contains("was lost") {
            Ok(())
        } else {
            Err(format!(
                "usher run stderr:\n{stderr}\n--- usherd log ---\n{}",
                server.log()
            ))
        }
    });
    // The seat stays free: the server does not hand it back to the late holder.
    assert_eq!(
        feature_of(&server.status(), "cad")["in_use"],
        0,
        "{}",
        server.log()
    );
}

#[test]
fn a_holder_whose_command_ends_frees_its_seat_at_once() {
    // Sessions outlive the test: only the holder's own check-in can free the seat.
    let fixture = Licensed::start(Timings::LONG);
    let server = &fixture.server;
    let mut holder = Holder::spawn(server, "cad", &["sh", "-c", "read line || true"]);
    server.wait_in_use("cad", 1);
    holder.close_stdin();
    let code = holder.wait_exit();
    assert_eq!(code, Some(0), "usher run stderr:\n{}", holder.stderr());
    server.wait_in_use("cad", 0);
    let status = server.status();
    let holders = &feature_of(&status, "cad")["holders"];
    assert_eq!(holders.as_array().map(Vec::len), Some(0), "{status:#}");
}
