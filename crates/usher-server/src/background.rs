//! Background work: a few threads at the lowest CPU priority for work that must never slow
//! the checkout path, such as sorting a status view of 100,000 holders, building and
//! encoding its pages, and freeing the views nobody reads any more.
//!
//! The runtime's workers carry every connection and the ledger task; a status page built
//! there (or on tokio's blocking pool, whose threads run at the same priority) takes the
//! CPU from grants whenever both cores are busy. These threads run at nice 19, which
//! weighs about 1/70 of a normal thread in the kernel's fair scheduler, so they take the
//! CPU mostly when nothing else wants it: a busy server answers status later rather than
//! grants slower, and status slows down under load but never stops.
//!
//! Jobs run in the order they were given. A job that panics is reported to its caller as
//! [`Gone`] and the thread goes on with the next one.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

/// The job could not be run: it panicked, or the pool's threads are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

type Job = Box<dyn FnOnce() + Send>;

/// A pool of low-priority threads, started on first use.
#[derive(Debug)]
pub struct Background {
    threads: usize,
    jobs: OnceLock<mpsc::Sender<Job>>,
}

impl Default for Background {
    /// One thread per core, at most two: status is worth one core at most on a busy server.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Background::new(cores.clamp(1, 2))
    }
}

impl Background {
    /// A pool of `threads` threads (at least one), started when the first job arrives.
    pub fn new(threads: usize) -> Background {
        Background {
            threads: threads.max(1),
            jobs: OnceLock::new(),
        }
    }

    /// Runs `job` on one of the pool's threads; the future resolves to what it returned.
    pub fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, Gone>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            if let Ok(out) = std::panic::catch_unwind(AssertUnwindSafe(job)) {
                let _ = tx.send(out);
            }
        }));
        async move { rx.await.map_err(|_| Gone) }
    }

    /// Drops `value` on one of the pool's threads: freeing a large view is work too.
    pub fn drop_later<T: Send + 'static>(&self, value: T) {
        self.submit(Box::new(move || drop(value)));
    }

    fn submit(&self, job: Job) {
        let jobs = self.jobs.get_or_init(|| self.start());
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            // No thread left (each one stops only if it could not start): run it here.
            // The caller's answer is late rather than lost.
            job();
        }
    }

    fn start(&self) -> mpsc::Sender<Job> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..self.threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("usher-background-{n}"))
                .spawn(move || {
                    lower_priority(19);
                    loop {
                        // The lock is held only to take a job, never while running one.
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match next {
                            Ok(job) => job(),
                            Err(mpsc::RecvError) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a background thread");
            }
        }
        tx
    }
}

/// Puts the calling thread at `nice` (19 is the lowest priority an unprivileged process
/// can ask for). On Linux a nice value belongs to a thread, not to the whole process.
/// Lowering needs no privilege, so a failure is only logged.
pub(crate) fn lower_priority(nice: i32) {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), nice) {
        tracing::debug!(error = %e, "a thread keeps a higher CPU priority than asked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_and_return_their_results() {
        let pool = Background::new(2);
        let answers: Vec<_> = (0..10u64).map(|n| pool.run(move || n * n)).collect();
        let mut got = Vec::new();
        for a in answers {
            got.push(a.await.unwrap());
        }
        assert_eq!(got, (0..10u64).map(|n| n * n).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_the_pool_goes_on() {
        let pool = Background::new(1);
        let failed = pool.run(|| -> u32 { panic!("a broken page") });
        assert_eq!(failed.await, Err(Gone));
        assert_eq!(pool.run(|| 7).await, Ok(7), "the thread survived the panic");
    }

    #[tokio::test]
    async fn its_threads_run_at_the_lowest_priority() {
        let pool = Background::new(1);
        let nice = pool
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(nice, 19);
        let here = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        assert_ne!(here, 19, "the caller's own priority is left alone");
    }

    #[tokio::test]
    async fn a_value_dropped_later_is_dropped_on_a_pool_thread() {
        struct Noted(Option<tokio::sync::oneshot::Sender<String>>);
        impl Drop for Noted {
            fn drop(&mut self) {
                let name = std::thread::current().name().unwrap_or("").to_string();
                let _ = self.0.take().unwrap().send(name);
            }
        }
        let pool = Background::new(1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        pool.drop_later(Noted(Some(tx)));
        assert_eq!(rx.await.unwrap(), "usher-background-0");
    }
}
