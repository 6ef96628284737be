//! Abuse limits for Tern, as pure logic.
//!
//! This crate decides *whether* and *how long*: how many connections an
//! address may open per minute, how many messages and recipients a user may
//! send per hour, how long to stall an `AUTH` after failures and when to
//! block an address or a user name outright, and how long to tarpit a client
//! that keeps making protocol errors. The runtime (`tern-net`) asks and then
//! does the waiting, the replying and the logging.
//!
//! What this crate must never do:
//! - perform I/O or read a clock: every method takes `now`
//!   ([`std::time::Instant`]), so tests drive a virtual clock and never sleep;
//! - grow without bound: every per-key table has a capacity and forgets the
//!   least recently used key when full, and idle keys are pruned as time
//!   passes, so a flood of addresses or user names costs bounded memory;
//! - know whether a user exists: [`AuthFailureTracker`] treats every user name
//!   the same way, so its answers cannot be used to enumerate accounts.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::{Duration, Instant};
//! use tern_limits::{RateConfig, RateLimiter};
//!
//! let mut per_ip = RateLimiter::new(&RateConfig::new(2, Duration::from_secs(60)));
//! let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
//! let t0 = Instant::now();
//! assert!(per_ip.check_and_record(ip, t0).is_ok());
//! assert!(per_ip.check_and_record(ip, t0).is_ok());
//! let refused = per_ip.check_and_record(ip, t0).unwrap_err();
//! assert!(refused.wait <= Duration::from_secs(64));
//! // A minute (and one slot) later the window has moved on.
//! assert!(per_ip.check_and_record(ip, t0 + refused.wait).is_ok());
//! ```
#![forbid(unsafe_code)]

mod auth;
mod bounded;
mod config;
pub mod duration;
mod ip;
mod rate;
mod tarpit;
mod window;

pub use auth::{AuthFailureTracker, BlockReason, MAX_USER_KEY_LEN, Verdict};
pub use config::{
    AbuseConfig, AuthFailureConfig, ConfigError, DEFAULT_MAX_KEYS, RateConfig, TarpitConfig,
};
pub use ip::client_key;
pub use rate::{RateLimiter, RetryAfter};
pub use tarpit::TarpitPolicy;
