//! Fixtures shared by Tern's test suites: real servers on loopback and a
//! clock a test moves by hand. A dev-dependency only: no crate of the
//! binary depends on it.
//!
//! * [`dns`]: an authoritative DNS server (hickory-server, in process, UDP
//!   and TCP on one ephemeral 127.0.0.1 port) serving in-memory zones,
//!   with a `servfail.test.` zone that always fails and a root zone that
//!   makes every other name NXDOMAIN, as on the Internet.
//! * [`smtp`]: a scripted SMTP or LMTP peer for delivery tests (what a
//!   remote MX, a smarthost or a mailbox server says), which records the
//!   commands it gets and every transaction (recipients, bytes, whether it
//!   answered the final dot, whether the client went away right after it)
//!   and counts connections and messages.
//! * [`script`]: a fault-injecting SMTP or LMTP server (a greeting that
//!   is not 220, per-recipient replies, a connection cut in the data or
//!   after the reply, a broken STARTTLS, implicit TLS, AUTH) for the
//!   delivery agents' failure paths.
//! * [`clock`]: [`VirtualClock`], the time a sans-IO core is given as
//!   `now`, advanced by the test, never by sleeping.
//!
//! Everything here panics on setup failures (a port that cannot be bound,
//! a record that cannot be added): a fixture that cannot start is a broken
//! test, not a result to handle.
#![forbid(unsafe_code)]

pub mod clock;
pub mod dns;
pub mod script;
pub mod smtp;

pub use clock::VirtualClock;
