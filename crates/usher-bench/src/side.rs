//! A load generator in a process of its own (this binary, started with a hidden flag),
//! pinned to one core with `taskset` where it is installed, so that the load it makes
//! (junk connections, status reads) cannot take every core from usherd and the measured
//! clients, and what it costs itself is not counted as usherd's cost.
//!
//! The protocol is lines: each line the harness writes, the process answers with its
//! counters so far (numbers separated by spaces); when its standard input closes it stops,
//! prints the counters a last time and exits.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

/// A running side process.
pub struct Side {
    child: std::process::Child,
    stdout: Option<BufReader<std::process::ChildStdout>>,
    /// The core it was pinned to, if `taskset` could pin it.
    pub pinned: Option<usize>,
    /// Its counters when the measurement began (see [`Side::mark`]).
    at_start: Vec<u64>,
}

impl Side {
    /// Starts this binary with `args`, on the last core (so usherd's threads have the
    /// others) if `taskset` is installed. `what` names it in messages.
    pub fn start(what: &str, args: &[String]) -> anyhow::Result<Side> {
        let exe = std::env::current_exe()?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let core = cores - 1;
        let taskset = Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let mut command = if taskset {
            let mut c = Command::new("taskset");
            c.args(["-c", &core.to_string()]).arg(&exe);
            c
        } else {
            eprintln!(
                "{what}: taskset is not installed (util-linux); the {what} runs unpinned and \
                 shares every core with usherd"
            );
            Command::new(&exe)
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {what} process"))?;
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Side {
            child,
            stdout,
            pinned: taskset.then_some(core),
            at_start: Vec::new(),
        })
    }

    /// Marks the start of the measurement: [`Side::stop`] counts from here.
    pub fn mark(&mut self) -> anyhow::Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .context("the side process's input")?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        self.at_start = self.read_counts()?;
        Ok(())
    }

    fn read_counts(&mut self) -> anyhow::Result<Vec<u64>> {
        let out = self.stdout.as_mut().context("the side process's output")?;
        let mut line = String::new();
        out.read_line(&mut line)?;
        line.split_whitespace()
            .map(|n| n.parse().map_err(anyhow::Error::from))
            .collect::<anyhow::Result<Vec<u64>>>()
            .with_context(|| format!("the side process printed {line:?}"))
    }

    /// Stops the process and returns what each counter counted since [`Side::mark`].
    pub fn stop(&mut self) -> anyhow::Result<Vec<u64>> {
        drop(self.child.stdin.take());
        let last = self.read_counts()?;
        self.child.wait()?;
        Ok(last
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(self.at_start.get(i).copied().unwrap_or(0)))
            .collect())
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The side process's half: answers each line of standard input with `counters`, and
/// returns when standard input closes (the harness is done, or gone), after printing them
/// a last time.
pub async fn serve_counters(counters: Vec<Arc<AtomicU64>>) {
    let line_of = |c: &[Arc<AtomicU64>]| {
        let counts: Vec<String> = c
            .iter()
            .map(|n| n.load(Ordering::Relaxed).to_string())
            .collect();
        counts.join(" ")
    };
    let shown = counters.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            println!("{}", line_of(&shown));
            line.clear();
        }
    })
    .await;
    println!("{}", line_of(&counters));
}
