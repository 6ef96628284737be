//! Tern's runtime: the only place sockets, tasks and timers live.
//!
//! It binds listeners, admits connections under the [`limits`], runs one
//! [`conn`] driver per connection over a sans-IO
//! [`tern_smtp::server::ServerSession`], hands committed messages to the
//! local [`delivery`] agent and shuts everything down gracefully. It never
//! parses SMTP itself (that is `tern-smtp`'s job) and never decides where a
//! mailbox lives (that is `tern-store`'s).
//!
//! ```no_run
//! # async fn demo(ctx: std::sync::Arc<tern_net::Context>) -> Result<(), tern_net::NetError> {
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! let server = tern_net::Server::bind(ctx, &[("127.0.0.1:2525".parse().unwrap(), tern_net::Role::Mx)]).await?;
//! tokio::spawn(async move { let _ = stop.send(true); });
//! server.run(shutdown).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod conn;
pub mod date;
pub mod delivery;
pub mod limits;
pub mod policy;
pub mod server;
pub mod tls;

use std::sync::Arc;

pub use conn::Timeouts;
pub use delivery::{DeliveryAgent, DeliveryHandle};
pub use limits::ConnectionLimiter;
pub use policy::RelayPolicy;
pub use server::{NetError, Role, Server};

/// Everything a connection needs, shared by all of them.
#[derive(Debug)]
pub struct Context {
    /// The session settings every connection starts from.
    pub smtp: Arc<tern_smtp::server::ServerConfig>,
    /// Our host name (greeting, `Received:` `by`).
    pub hostname: String,
    /// Local domains, mailboxes and aliases.
    pub directory: Arc<tern_store::Directory>,
    /// Who may relay.
    pub relay: RelayPolicy,
    /// Where accepted messages go.
    pub spool: tern_queue::Spool,
    /// Where committed messages are announced.
    pub delivery: DeliveryHandle,
    /// RFC 5321 timeouts and slow-client limits.
    pub timeouts: Timeouts,
    /// Concurrent connection caps.
    pub limiter: ConnectionLimiter,
}
