//! Delays after protocol errors within one session.
//!
//! A client that keeps sending bad commands is either broken or probing;
//! either way, answering it more slowly costs a legitimate client nothing
//! (it makes no errors) and makes probing expensive. The session counts its
//! errors; this policy turns the count into a delay before the reply.

use std::time::Duration;

use crate::config::{TarpitConfig, doubling_delay};

/// Turns a session's error count into a delay: none for the first
/// `free_errors`, then `initial_delay` doubling up to `max_delay`.
///
/// ```
/// use std::time::Duration;
/// use tern_limits::{TarpitConfig, TarpitPolicy};
/// let tarpit = TarpitPolicy::new(&TarpitConfig::default());
/// assert_eq!(tarpit.delay_after(3), Duration::ZERO);
/// assert_eq!(tarpit.delay_after(4), Duration::from_secs(1));
/// assert_eq!(tarpit.delay_after(50), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct TarpitPolicy {
    config: TarpitConfig,
}

impl TarpitPolicy {
    /// A policy for `config`.
    pub fn new(config: &TarpitConfig) -> Self {
        TarpitPolicy {
            config: config.clone(),
        }
    }

    /// The delay before answering the `nth_error` error of a session
    /// (counting from 1).
    pub fn delay_after(&self, nth_error: u32) -> Duration {
        doubling_delay(
            u64::from(nth_error),
            self.config.free_errors,
            self.config.initial_delay,
            self.config.max_delay,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_errors_then_growing_then_capped() {
        let t = TarpitPolicy::new(&TarpitConfig::default());
        let got: Vec<u64> = (0..=10).map(|n| t.delay_after(n).as_secs()).collect();
        assert_eq!(got, [0, 0, 0, 0, 1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(t.delay_after(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn zero_initial_delay_switches_it_off() {
        let t = TarpitPolicy::new(&TarpitConfig {
            free_errors: 0,
            initial_delay: Duration::ZERO,
            max_delay: Duration::from_secs(10),
        });
        assert!((0..100).all(|n| t.delay_after(n).is_zero()));
    }

    #[test]
    fn custom_policy() {
        let t = TarpitPolicy::new(&TarpitConfig {
            free_errors: 0,
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(1),
        });
        assert_eq!(t.delay_after(0), Duration::ZERO);
        assert_eq!(t.delay_after(1), Duration::from_millis(250));
        assert_eq!(t.delay_after(2), Duration::from_millis(500));
        assert_eq!(t.delay_after(3), Duration::from_secs(1));
        assert_eq!(t.delay_after(4), Duration::from_secs(1));
    }
}
