//! Tern's queue in PostgreSQL: a [`QueueStore`](tern_queue::store::QueueStore)
//! that several Tern nodes share.
//!
//! [`PgStore`] keeps message bodies, envelopes, recipient states, notices,
//! hold flags and leases in one database. Its promises are the trait's:
//!
//! - **Durable before the 250.** Every connection runs with
//!   `synchronous_commit = on`, and a commit is one `INSERT` whose
//!   transaction has committed — the server flushed its WAL — when
//!   [`commit`](tern_queue::store::QueueStore::commit) resolves.
//! - **Leases across nodes.** A lease is a token and an expiry column on the
//!   message's row; `lease_due` picks due rows with
//!   `SELECT … FOR UPDATE SKIP LOCKED` so that nodes polling together never
//!   take the same message, and a node that dies leaves leases that simply
//!   expire. Every write under a lease checks its token in the same
//!   transaction (row-locked), so a node that stalled past its lease cannot
//!   overwrite its successor's results.
//! - **Admin commands from any node**: hold, release, delete and the listings
//!   are plain statements on the shared tables.
//!
//! [`AnyStore`] holds whichever backend the configuration chose (the file
//! spool or PostgreSQL) as one `QueueStore` type for the runtime.
//!
//! The schema is versioned in `migrations/` and applied by [`migrate`] under
//! an advisory lock when a store connects (three nodes starting together
//! apply it once). [`PgConfig`] is the `[queue]` section for choosing this
//! backend. With the `test-util` feature, `test_cluster` starts a private
//! PostgreSQL cluster for tests (see its documentation).
//!
//! What this crate must never do: resolve a commit before its transaction
//! committed, give one message to two unexpired leases, accept a write
//! under a lease that was taken over, or connect with TLS providers other
//! than the workspace's (it connects without TLS: use it on a loopback or
//! private network, or through a local proxy).
#![forbid(unsafe_code)]

mod any;
mod config;
mod error;
mod migrate;
mod store;
#[cfg(feature = "test-util")]
pub mod test_cluster;

pub use any::{AnyBody, AnyIncoming, AnyStore, AnyStoreError};
pub use config::{PgConfig, QueueBackend, QueueConfig};
pub use error::PgError;
pub use migrate::{MIGRATIONS, Migration, migrate};
pub use store::{PgIncoming, PgStore};
