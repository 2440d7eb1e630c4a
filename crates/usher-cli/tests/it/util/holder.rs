//! A seat holder: `usher run FEATURE -- COMMAND...` in a process group of its own.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::server::read_log;
use super::*;

/// A `usher run FEATURE -- COMMAND...` process holding (or trying to hold) a seat.
///
/// It runs in a process group of its own so that dropping it also ends the command it
/// started, even after the `usher` process itself was killed.
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: PathBuf,
}

impl Holder {
    /// Starts `usher run FEATURE -- COMMAND...` against `server`. Its standard input is a
    /// pipe, inherited by the command; see [`Holder::close_stdin`].
    pub fn spawn(server: &Server, feature: &str, command: &[&str]) -> Holder {
        Holder::spawn_with(server, &[], feature, command)
    }

    /// Like [`Holder::spawn`], with `options` (such as `--wait 0`) before the feature.
    pub fn spawn_with(
        server: &Server,
        options: &[&str],
        feature: &str,
        command: &[&str],
    ) -> Holder {
        Holder::spawn_as(server, None, options, feature, command)
    }

    /// Like [`Holder::spawn_with`], as the user `user` (`USER=`) if given.
    pub fn spawn_as(
        server: &Server,
        user: Option<&str>,
        options: &[&str],
        feature: &str,
        command: &[&str],
    ) -> Holder {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let stderr = server.scratch.path().join(format!("holder-{n}.err"));
        let mut cmd = usher(&["run", "-c", &server.spec()]);
        cmd.args(options)
            .args([feature, "--"])
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("creating a holder's stderr file"))
            .process_group(0);
        if let Some(user) = user {
            cmd.env("USER", user);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        Holder {
            child,
            stdin,
            stderr,
        }
    }

    /// The `usher` process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes the pipe on standard input: a command such as `sh -c 'read x'` then ends.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `signal` (e.g. `STOP`) to the `usher` process only, not to its command.
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        let outcome = output({
            let mut cmd = Command::new("kill");
            cmd.arg(format!("-{signal}")).arg(self.pid().to_string());
            cmd
        });
        assert_eq!(outcome.code, Some(0), "{outcome}");
    }

    /// Kills the `usher` process with SIGKILL and reaps it (the kernel then kills its
    /// command: `usher run` ties the command to its own life).
    pub fn kill_usher(&mut self) {
        self.child.kill().expect("killing usher run");
        self.child.wait().expect("reaping usher run");
    }

    /// Polls until `usher` exits and returns its exit code.
    #[track_caller]
    pub fn wait_exit(&mut self) -> Option<i32> {
        poll("usher run to exit", WAIT, || {
            match self.child.try_wait().expect("polling usher run") {
                Some(status) => Ok(status.code()),
                None => Err(format!("still running; stderr:\n{}", self.stderr())),
            }
        })
    }

    /// What `usher` printed on standard error so far.
    pub fn stderr(&self) -> String {
        read_log(&self.stderr)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // The group id is the usher process id; the group lives while any member does.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
