//! Tern's runtime: the only place sockets, tasks and timers live.
//!
//! It binds listeners ([`server`]), admits connections under the
//! [`limits`], and runs one driver per connection over a sans-IO session:
//! [`conn`] for SMTP ([`tern_smtp::server::ServerSession`]), [`imap`] and
//! [`pop3`] for the mail clients. All three authenticate through one
//! service (credentials, SASL exchanges, the brute-force tracker and the
//! `tern_auth_total` metric). It runs the end-of-data [`filter`] pipeline
//! and the email-authentication stage ([`mailauth`]), hands committed
//! messages to the local [`delivery`] agent and to the queue manager,
//! serves the admin API and `/metrics` ([`http`], [`admin`], [`metrics`])
//! and shuts everything down gracefully. It never parses a protocol itself
//! (that is the job of `tern-smtp`, `tern-imap` and `tern-pop3`), never
//! checks a credential outside the authentication service, and never
//! decides where a mailbox lives (that is `tern-store`'s).
//!
//! Beside the drivers: [`tls`] (certificates, SNI, STARTTLS upgrades),
//! [`policy`] and [`submission`] (who may relay, and send as whom),
//! [`abuse`] (the counters behind the tarpit and the AUTH delays),
//! [`gate`] (the bound on concurrent password checks), [`autoconfig`]
//! (mail-client setup documents), [`dnsrecords`] (the records a domain
//! must publish) and [`date`] (RFC 5322 dates). [`config`] holds the
//! configuration sections the runtime owns (`[limits]`, `[imap]`,
//! `[pop3]`), with their defaults and checks; `[submission]` is read
//! straight into [`SubmissionPolicy`].
//!
//! ```no_run
//! # async fn demo(ctx: std::sync::Arc<tern_net::Context>) -> Result<(), tern_net::NetError> {
//! use std::sync::Arc;
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! let mx = tern_net::ListenerSpec {
//!     addr: "127.0.0.1:2525".parse().unwrap(),
//!     role: tern_net::Role::Mx,
//!     smtp: Arc::new(tern_smtp::server::ServerConfig::default()),
//!     idle_timeout: None,
//! };
//! let server = tern_net::Server::bind(ctx, &[mx]).await?;
//! tokio::spawn(async move { let _ = stop.send(true); });
//! server.run(shutdown).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod abuse;
pub mod admin;
mod auth;
pub mod autoconfig;
pub mod config;
pub mod conn;
pub mod date;
pub mod delivery;
pub mod dnsrecords;
pub mod filter;
pub mod gate;
pub mod http;
pub mod imap;
pub mod limits;
pub mod mailauth;
pub mod metrics;
pub mod policy;
pub mod pop3;
pub mod queue;
pub mod server;
pub mod submission;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

pub use abuse::Abuse;
pub use conn::{StressTimeouts, Timeouts};
pub use delivery::DeliveryHandle;
pub use limits::ConnectionLimiter;
pub use mailauth::{MailAuth, SignerHandle};
pub use policy::RelayPolicy;
pub use queue::QueueManager;
pub use server::{ListenerSpec, NetError, Role, Server};
pub use tls::{
    CertPair, CertificateError, MaybeTlsStream, TlsError, TlsInfo, TlsManager, TlsSettings,
};

/// What AUTH checks credentials against.
#[derive(Debug, Default)]
pub struct AuthBackend {
    /// The users file (hot-reloaded); `None`: no password users.
    pub users: Option<tern_users::UserDbHandle>,
    /// Bearer-token validation for OAUTHBEARER/XOAUTH2; `None`: not offered.
    pub jwt: Option<tern_sasl::jwt::JwtValidator>,
    /// A stable server secret (fake SCRAM/CRAM credentials for unknown users).
    pub secret: Vec<u8>,
    /// The bound on concurrent password verifications.
    pub gate: gate::PasswordGate,
}

/// How submission (ports 587/465) treats authenticated users' messages:
/// the `[submission]` section of the configuration file, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionPolicy {
    /// The envelope sender and every `From:` address must be the user's own
    /// (their address, their `senders`, or an alias that reaches them).
    pub enforce_sender: bool,
    /// Add `Date:` and `Message-ID:` when missing (RFC 6409 section 8).
    pub fix_headers: bool,
}

impl Default for SubmissionPolicy {
    fn default() -> Self {
        SubmissionPolicy {
            enforce_sender: true,
            fix_headers: true,
        }
    }
}

/// Everything a connection needs, shared by all of them.
#[derive(Debug)]
pub struct Context {
    /// The delivery journal (`tern trace`).
    pub journal: tern_queue::Journal,
    /// Our host name (greeting, `Received:` `by`).
    pub hostname: String,
    /// Local domains, mailboxes and aliases.
    pub directory: Arc<tern_store::Directory>,
    /// Who may relay without authenticating.
    pub relay: RelayPolicy,
    /// This node's spool directory: the queue itself with the file
    /// backend, and with any backend the group committer through which
    /// messages delivered at intake reach their Maildir.
    pub spool: tern_queue::Spool,
    /// Where accepted messages are queued: the spool (`[queue] backend =
    /// "file"`) or the PostgreSQL database several nodes share.
    pub queue: tern_queue_pg::AnyStore,
    /// Where committed messages are announced.
    pub delivery: DeliveryHandle,
    /// RFC 5321 timeouts and slow-client limits.
    pub timeouts: Timeouts,
    /// Concurrent connection caps.
    pub limiter: ConnectionLimiter,
    /// Certificates for STARTTLS and implicit TLS; `None`: no TLS.
    pub tls: Option<TlsManager>,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Credentials for AUTH.
    pub auth: AuthBackend,
    /// Submission rules.
    pub submission: SubmissionPolicy,
    /// Rate limits, brute-force tracking, tarpit.
    pub abuse: Abuse,
    /// Email authentication: inbound checks and DKIM signing.
    pub mailauth: MailAuth,
    /// The filter pipeline (rspamd, milters, clamd, blocklists,
    /// greylisting); the default runs only the authentication checks.
    pub filters: Arc<filter::Pipeline>,
    /// Delivery at intake for messages with one local Maildir recipient
    /// (written once, straight into the Maildir); `None`: every message is
    /// queued and delivered by the queue manager.
    pub local_intake: Option<LocalIntake>,
    /// The IMAP service (mail store, limits); `None`: no IMAP listeners.
    pub imap: Option<Arc<imap::ImapService>>,
    /// The POP3 service (the same mail store); `None`: no POP3 listeners.
    pub pop3: Option<Arc<pop3::Pop3Service>>,
}

/// What delivery at intake needs (see [`tern_delivery::intake`]).
#[derive(Debug, Clone)]
pub struct LocalIntake {
    /// The mail store local mailboxes are delivered through (those the
    /// directory routes to a Maildir; a message for an LMTP mailbox is
    /// always queued).
    pub store: Arc<tern_store::Mailboxes>,
}
