//! A writer process killed with SIGKILL (`kill -9`) mid-stream loses no batch it
//! acknowledged, and leaves no batch half applied.
//!
//! The test runs this same test binary again as a child that commits batches in a loop and
//! prints `committed <k>` after each commit returns (the moment the server would reply).
//! Once the child has acknowledged a few dozen batches it is killed at whatever point it
//! has reached, often inside a transaction. The reopened store must then hold exactly the
//! first `j` batches for some `j` greater than the last acknowledged batch.
//!
//! SIGKILL does not lose the OS page cache, so this proves atomicity and
//! "acknowledged after commit", not the fsync itself (`synchronous=FULL` is checked by a
//! unit test; power loss is SQLite's own, well-tested, business).

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
};

use usher_core::{Change, ReleaseReason};
use usher_store::{MemoryStore, SqliteStore, Store};

use crate::util::{chain, closed, db_path, granted, ok, opened, released, tempdir, usage};

/// Tells the child where its store is; without it the child test does nothing.
const CHILD_ENV: &str = "USHER_STORE_CRASH_CHILD_DB";

/// The child stops by itself after this many batches, in case nobody kills it.
const CHILD_MAX_BATCHES: u64 = 100_000;

/// Spreads small counters over the whole u64 range, so ids bit-cast to negative too.
fn spread(k: u64) -> u64 {
    k.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Batch `k`: opens session `k` with two leases, and ends session `k - 3` the way the
/// ledger does (releases, then the close), so every kind of change is in flight.
fn batch(k: u64) -> Vec<Change> {
    let s = spread(k + 1);
    let mut changes = vec![
        opened(s),
        granted(spread(2 * k + 1), s),
        granted(spread(2 * k + 2), s),
    ];
    if k >= 3 {
        let old = k - 3;
        let s = spread(old + 1);
        changes.push(released(spread(2 * old + 1), s, ReleaseReason::Checkin));
        changes.push(released(spread(2 * old + 2), s, ReleaseReason::Expired));
        changes.push(closed(s));
    }
    changes
}

/// Not a test by itself: the body of the child process `killed_writer_*` starts.
#[test]
#[ignore = "run as a child process by killed_writer_loses_no_acknowledged_batch"]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut store = SqliteStore::open(Path::new(&path))
        .unwrap_or_else(|e| panic!("child opening store: {}", chain(&e)));
    let mut out = std::io::stdout().lock();
    for k in 0..CHILD_MAX_BATCHES {
        ok(store.commit(1_000 + k, &batch(k)), "child committing");
        // A write error means the parent is gone; stop rather than write forever.
        if writeln!(out, "committed {k}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn killed_writer_loses_no_acknowledged_batch() {
    for (round, target) in [20u64, 37, 53].into_iter().enumerate() {
        let dir = tempdir();
        let path = db_path(&dir);
        let stderr_path = dir.path().join("child.stderr");
        let exe = std::env::current_exe().expect("path of the running test binary");
        let mut child = Command::new(exe)
            .args([
                "crash::crash_child_writer",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).expect("creating the child's stderr file"))
            .spawn()
            .expect("starting the child writer");
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut acked = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reading the child's stdout");
            if let Some(k) = line.strip_prefix("committed ") {
                let k: u64 = k.parse().expect("a batch number");
                acked = Some(k);
                if k >= target {
                    break;
                }
            }
        }
        child.kill().expect("killing the child");
        child.wait().expect("reaping the child");
        let child_stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let acked = acked.unwrap_or_else(|| {
            panic!("round {round}: the child acknowledged nothing; its stderr:\n{child_stderr}")
        });
        assert!(
            acked >= target,
            "round {round}: child stopped early; stderr:\n{child_stderr}"
        );

        // The store must hold exactly batches 0..j. Find j from the usage log, which gains
        // one record per change of every committed batch.
        let store = SqliteStore::open(&path)
            .unwrap_or_else(|e| panic!("round {round}: reopening after the kill: {}", chain(&e)));
        let log = usage(&store);
        let mut model = MemoryStore::new();
        let (mut j, mut records) = (0u64, 0usize);
        while records < log.len() {
            let changes = batch(j);
            ok(model.commit(1_000 + j, &changes), "model committing");
            records += changes.len();
            j += 1;
        }
        assert_eq!(
            records,
            log.len(),
            "round {round}: the log ends inside batch {}",
            j - 1
        );
        assert!(
            j > acked,
            "round {round}: batch {acked} was acknowledged, only {j} survived"
        );
        assert_eq!(
            ok(store.load(), "loading"),
            ok(model.load(), "model"),
            "round {round}"
        );
        assert_eq!(log, usage(&model), "round {round}");
    }
}
