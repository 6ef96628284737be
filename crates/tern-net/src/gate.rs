//! A bound on concurrent password verifications.
//!
//! One argon2 check costs about 19 MiB and tens of milliseconds of a core;
//! without a bound, many first attempts from many addresses at once (each
//! under its address's brute-force delay) would take gigabytes. The gate
//! lets [`PasswordGate::DEFAULT_PER_CORE`] checks per core run at once on
//! blocking threads; the others wait their turn, and one that cannot get a
//! turn within its deadline fails as a temporary error (the client retries)
//! rather than queueing without bound.
//!
//! It never runs a check on an async worker, never logs what it checks,
//! and never holds a turn across anything but the check itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// No turn came within the deadline (or the check itself could not run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks in progress")]
pub struct Busy;

/// Turns for password checks, shared by every session (SMTP now, IMAP and
/// POP3 later).
#[derive(Debug, Clone)]
pub struct PasswordGate {
    turns: Arc<Semaphore>,
    wait: Duration,
}

impl PasswordGate {
    /// Checks per core that may run at once by default.
    pub const DEFAULT_PER_CORE: usize = 2;
    /// How long a check waits for a turn by default.
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

    /// A gate letting `concurrent` checks run at once (at least one), each
    /// waiting at most `wait` for its turn.
    pub fn new(concurrent: usize, wait: Duration) -> PasswordGate {
        PasswordGate {
            turns: Arc::new(Semaphore::new(concurrent.max(1))),
            wait,
        }
    }

    /// Runs `check` on a blocking thread once a turn is free.
    pub async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let turn = tokio::time::timeout(self.wait, Arc::clone(&self.turns).acquire_owned())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        tokio::task::spawn_blocking(move || {
            let result = check();
            drop(turn);
            result
        })
        .await
        .map_err(|_| Busy)
    }
}

impl Default for PasswordGate {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        PasswordGate::new(cores * Self::DEFAULT_PER_CORE, Self::DEFAULT_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Security finding 11: password checks ran with no cap, so parallel
    /// attempts could take ~19 MiB each without bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finding_11_password_checks_are_bounded() {
        let gate = PasswordGate::new(2, Duration::from_secs(10));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut jobs = Vec::new();
        for _ in 0..12 {
            let gate = gate.clone();
            let running = Arc::clone(&running);
            let most = Arc::clone(&most);
            jobs.push(tokio::spawn(async move {
                gate.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        for j in jobs {
            assert_eq!(j.await.unwrap(), Ok(()));
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_that_gets_no_turn_in_time_is_busy() {
        let gate = PasswordGate::new(1, Duration::from_millis(50));
        let held = gate.clone();
        let slow = tokio::spawn(async move {
            held.run(|| std::thread::sleep(Duration::from_millis(500)))
                .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(gate.run(|| ()).await, Err(Busy));
        assert_eq!(slow.await.unwrap(), Ok(()));
        assert_eq!(gate.run(|| 7).await, Ok(7));
    }
}
