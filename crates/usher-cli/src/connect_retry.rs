//! Connecting with retries until a deadline, for wrappers started by batch systems.
//!
//! A thousand jobs starting at once, or a server restarting, make the first connection
//! attempt of many clients fail. A wrapper that gives up at once fails the job, so
//! [`connect`] tries again, waiting longer each time (doubling from [`FIRST_WAIT`] up to
//! [`MAX_WAIT`]) with random jitter so that the clients that failed together do not all
//! come back together, until the overall deadline. Only failures that another attempt
//! may cure are retried: no server reachable, no answer in time, a server shutting down
//! or at its connection limit. A refusal (a bad server list, an untrusted server) is
//! final at once.

use std::time::Duration;

use tokio::time::Instant;
use usher_client::{Client, ClientConfig, ClientError, ServerErrorCode};

use crate::exit::Failure;

/// The default of `--connect-deadline`, in seconds.
pub const DEFAULT_DEADLINE_SECS: u64 = 30;
/// The wait after the first failed attempt.
pub const FIRST_WAIT: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// Connects with `config`, trying again after each failure another attempt may cure until
/// `deadline` has passed since the first attempt (`Duration::ZERO`: one attempt). Each
/// attempt is given the configured connect timeout, cut to the time left. The error
/// after the last attempt says how many were made over how long.
pub async fn connect(config: ClientConfig, deadline: Duration) -> Result<Client, Failure> {
    let started = Instant::now();
    let give_up = started + deadline;
    let mut wait = FIRST_WAIT;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let mut attempt = config.clone();
        let left = give_up.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            attempt.connect_timeout = attempt.connect_timeout.min(left);
        }
        let error = match Client::connect(attempt).await {
            Ok(client) => return Ok(client),
            Err(error) => error,
        };
        let pause = jittered(wait);
        if !retryable(&error) || Instant::now() + pause >= give_up {
            return Err(given_up(error, attempts, started.elapsed(), deadline));
        }
        tracing::debug!(%error, attempts, "connecting failed; trying again in {pause:?}");
        tokio::time::sleep(pause).await;
        wait = (wait * 2).min(MAX_WAIT);
    }
}

/// Whether another attempt may succeed where this one failed.
fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Unreachable { .. } | ClientError::Timeout => true,
        ClientError::Server { code, .. } => matches!(
            code,
            ServerErrorCode::ShuttingDown
                | ServerErrorCode::TooManyConnections
                | ServerErrorCode::HandshakeTimeout
        ),
        _ => false,
    }
}

/// A wait between half of `wait` and all of it, at random.
fn jittered(wait: Duration) -> Duration {
    let fraction = getrandom::u32().unwrap_or(u32::MAX) as f64 / u32::MAX as f64;
    wait.mul_f64(0.5 + fraction / 2.0)
}

/// The failure of the last attempt, saying that it was the last (when retrying was on).
fn given_up(error: ClientError, attempts: u32, spent: Duration, deadline: Duration) -> Failure {
    let mut failure = Failure::from(error);
    if !deadline.is_zero() {
        let plural = if attempts == 1 { "" } else { "s" };
        failure.message = format!(
            "{} (gave up after {attempts} attempt{plural} over {:.1} s; --connect-deadline is \
             {} s)",
            failure.message,
            spent.as_secs_f64(),
            deadline.as_secs()
        );
    }
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jittered_wait_stays_between_half_and_all_of_the_wait() {
        for _ in 0..1_000 {
            let pause = jittered(Duration::from_secs(2));
            assert!((Duration::from_secs(1)..=Duration::from_secs(2)).contains(&pause));
        }
    }

    #[test]
    fn only_failures_another_attempt_may_cure_are_retried() {
        let unreachable = ClientError::Unreachable {
            servers: "1648@127.0.0.1".into(),
            detail: "connection refused".into(),
        };
        assert!(retryable(&unreachable));
        assert!(retryable(&ClientError::Timeout));
        let busy = ClientError::Server {
            code: ServerErrorCode::TooManyConnections,
            message: "too many connections".into(),
        };
        assert!(retryable(&busy));
        let bad = ClientError::Server {
            code: ServerErrorCode::BadRequest,
            message: "no".into(),
        };
        assert!(!retryable(&bad));
        assert!(!retryable(&ClientError::Closed));
    }
}
