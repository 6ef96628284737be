//! The queue admin interface behind `tern queue …`: the request/response
//! protocol, the operations on the spool, the Unix socket server the
//! running Tern answers on, and the blocking client the CLI uses.
//!
//! **Protocol.** One JSON [`Request`] per line (`{"cmd":"list"}`,
//! `{"cmd":"show","id":"…"}`, `{"cmd":"flush","id":null,"domain":null}`,
//! `hold`, `release`, `delete`, `bounce`), answered by one JSON
//! [`Response`] per line. A connection may carry several requests in turn.
//!
//! **Who may connect.** The socket is `<data_dir>/admin.sock`, mode 0600,
//! and is reachable only by the user Tern runs as (and root):
//! [`AdminServer::bind`] binds it inside a fresh 0700 directory, sets 0600,
//! and only then renames it into place (which also replaces a stale socket
//! left by a crash: the spool lock, taken before, guarantees no other Tern
//! serves this data directory). So there is no moment at which the socket
//! is reachable with looser permissions. Each connection's peer credentials
//! are checked as well: a uid other than the socket's owner or root is
//! refused.
//!
//! **Bounds.** A request line is at most [`MAX_REQUEST`] bytes and must
//! arrive within [`READ_TIMEOUT`]; at most [`MAX_CONNECTIONS`] connections
//! are served at once.
//!
//! **Operations** ([`QueueAdmin::execute`]) run off the async threads and
//! also serve the CLI directly when the server is stopped (the CLI then
//! holds the spool lock itself, and there is no queue manager to wake).
//! `delete` and `bounce` wait for a delivery attempt on the message to
//! finish (the spool's delivery lease, which the queue manager holds for a
//! whole pass: Maildir, LMTP and remote). A pass that is still running
//! after `LEASE_WAIT` (a slow remote server) makes them answer
//! [`ErrorKind::Busy`] rather than race it: no recipient is ever both
//! delivered and bounced. `hold` first stops new passes, then waits the same
//! way for one already running. Recipients
//! already recorded as done are never named.
//!
//! What this module must never do: change a final recipient state (only
//! [`RecipientState::Pending`]/[`Deferred`](RecipientState::Deferred) ones
//! are touched), accept a queue id that is not a valid [`QueueId`] (ids
//! name files), answer someone who is not root or the service user, or
//! read an unbounded request.

use std::io::{self, BufRead as _, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tern_queue::journal::Event as JournalEvent;
use tern_queue::store::{Lease, QueueStore as _, StoreError as _};
use tern_queue::{QueueId, RecipientState};
use tern_queue_pg::{AnyStore, AnyStoreError};
use tern_store::Directory;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::delivery::DeliveryHandle;
use crate::mailauth::SignerHandle;
use crate::queue::{failure_notice, queue_notice_in};

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "admin.sock";
/// Longest request line accepted (bytes, newline included).
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long the server waits for a request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 8;
/// Most of a message's header section `show` returns (bytes).
pub const MAX_HEADERS: usize = 64 * 1024;
/// The reply recorded for recipients returned by `tern queue bounce`; it
/// is the `Diagnostic-Code` of the DSN the sender gets.
pub const ADMIN_BOUNCE_REPLY: &str = "550 5.0.0 Message returned by the administrator";
/// How long `delete`/`bounce` wait for a local delivery attempt on the same
/// message to finish before answering [`ErrorKind::Busy`].
const LEASE_WAIT: Duration = Duration::from_secs(5);
/// How long `flush` waits for a running attempt before leaving the message
/// to it.
const SHORT_WAIT: Duration = Duration::from_secs(1);
/// The lease an admin operation takes: longer than any operation runs
/// (it is released at the end), short enough that a crashed CLI does not
/// hold a message of a shared queue for long.
const ADMIN_LEASE: Duration = Duration::from_secs(60);

/// One command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Every queued message with its recipients' states.
    List,
    /// One message: envelope, header section, recipient states and history.
    Show {
        /// The queue id.
        id: String,
    },
    /// Make deferred recipients due now and wake the queue manager: of one
    /// message (`id`), of every message with a recipient in `domain`, or of
    /// every message (neither).
    Flush {
        /// Only this message.
        #[serde(default)]
        id: Option<String>,
        /// Only recipients in this domain (case-insensitive).
        #[serde(default)]
        domain: Option<String>,
    },
    /// Stop delivery attempts for a message.
    Hold {
        /// The queue id.
        id: String,
    },
    /// Undo [`Request::Hold`] and attempt the message now.
    Release {
        /// The queue id.
        id: String,
    },
    /// Remove a message from the queue without telling anyone.
    Delete {
        /// The queue id.
        id: String,
    },
    /// Fail every recipient not yet done, send the sender one failure DSN,
    /// and remove the message.
    Bounce {
        /// The queue id.
        id: String,
    },
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientInfo {
    /// Position in the envelope.
    pub index: usize,
    /// Where it is delivered (after alias expansion).
    pub address: String,
    /// The address as given in `RCPT TO`.
    pub original: String,
    /// A local mailbox (otherwise remote).
    pub local: bool,
    /// Its state, flattened: `"state":"deferred","attempts":…`.
    #[serde(flatten)]
    pub state: RecipientState,
}

/// One queued message, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSummary {
    /// The queue id.
    pub id: String,
    /// When it was queued (Unix seconds).
    pub received_at: u64,
    /// Seconds in the queue.
    pub age: u64,
    /// Message size in bytes.
    pub size: u64,
    /// The envelope sender (empty: the null sender of a bounce).
    pub sender: String,
    /// Held by `tern queue hold`.
    pub held: bool,
    /// Every recipient, in envelope order.
    pub recipients: Vec<RecipientInfo>,
    /// The earliest next attempt among recipients not done (Unix seconds;
    /// a pending recipient counts as now), `None` when none is waiting.
    pub next_attempt: Option<u64>,
    /// The most telling error: a deferred recipient's last error, else a
    /// failed or expired one's.
    pub last_error: Option<String>,
}

/// One message in detail, as `show` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDetail {
    /// What `list` says about it.
    #[serde(flatten)]
    pub summary: MessageSummary,
    /// The client's IP address, when received over the network.
    pub client_ip: Option<String>,
    /// The client's EHLO/HELO name.
    pub helo: Option<String>,
    /// How it came in (`ESMTPS`, `ESMTPSA`, `LOCAL`, …).
    pub protocol: String,
    /// TLS version and cipher, when TLS was used.
    pub tls: Option<String>,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
    /// `7BIT`, `8BITMIME` or `BINARYMIME`.
    pub body: String,
    /// DSN `RET` (`FULL`/`HDRS`).
    pub ret: Option<String>,
    /// DSN `ENVID`.
    pub envid: Option<String>,
    /// The header section (up to [`MAX_HEADERS`] bytes, invalid UTF-8
    /// replaced), without the empty line that ends it.
    pub headers: String,
    /// Every recorded state change, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// One recorded state change of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The recipient's position in the envelope.
    pub recipient: usize,
    /// The state recorded, flattened.
    #[serde(flatten)]
    pub state: RecipientState,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// No such message (or not a valid queue id).
    NotFound,
    /// The request could not be understood.
    BadRequest,
    /// A delivery attempt is working on the message; try again.
    Busy,
    /// The spool failed.
    Internal,
}

/// The answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The answer to `list`.
    List {
        /// The server's clock (Unix seconds) when it answered.
        now: u64,
        /// Queued messages, oldest first.
        messages: Vec<MessageSummary>,
    },
    /// The answer to `show`.
    Show {
        /// The server's clock (Unix seconds) when it answered.
        now: u64,
        /// The message.
        message: Box<MessageDetail>,
    },
    /// The answer to `flush`, `hold`, `release`, `delete` and `bounce`.
    Done {
        /// The command (`"flush"`, …).
        action: String,
        /// The messages it acted on.
        ids: Vec<String>,
        /// What else happened, for people (e.g. the bounce's queue id).
        note: Option<String>,
    },
    /// The request failed.
    Error {
        /// Why, for scripts.
        kind: ErrorKind,
        /// Why, for people.
        message: String,
    },
}

impl Response {
    fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            kind,
            message: message.into(),
        }
    }
}

/// What can go wrong on the admin socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Nothing listens on the socket: the server is not running.
    #[error("the server is not running (nothing answers on {}): {source}", path.display())]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// Why connecting failed (no such file, connection refused).
        #[source]
        source: io::Error,
    },
    /// The socket exists but cannot be used (permissions, …).
    #[error("cannot connect to {} (run as root or the user Tern runs as): {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Setting up the socket failed.
    #[error("admin socket {}: {op}: {source}", path.display())]
    Setup {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the socket failed (or timed out).
    #[error("admin socket: {0}")]
    Io(#[source] io::Error),
    /// A line was not valid JSON of the expected shape.
    #[error("admin socket: malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// A line exceeded its bound.
    #[error("admin socket: message longer than {0} bytes")]
    TooLong(usize),
    /// The server closed the connection before answering.
    #[error("admin socket: the server closed the connection without answering")]
    Closed,
}

/// Failures of one operation, mapped onto [`Response::Error`].
#[derive(Debug, thiserror::Error)]
enum OpError {
    #[error("{0:?} is not a queue id")]
    BadId(String),
    #[error(
        "a delivery attempt is working on {0}; try again when it ends (`tern queue hold` stops new attempts)"
    )]
    Busy(QueueId),
    /// The queue failed, or has no such message
    /// ([`is_not_found`](OpError::is_not_found)).
    #[error(transparent)]
    Store(#[from] AnyStoreError),
    #[error("cannot read message {0}: {1}")]
    Read(QueueId, io::Error),
}

impl OpError {
    /// No message has the id (never queued, or gone since).
    fn is_not_found(&self) -> bool {
        matches!(self, OpError::Store(e) if e.is_not_found())
    }
}

impl From<OpError> for Response {
    fn from(e: OpError) -> Response {
        let kind = match &e {
            OpError::BadId(_) => ErrorKind::NotFound,
            e if e.is_not_found() => ErrorKind::NotFound,
            OpError::Busy(_) => ErrorKind::Busy,
            OpError::Store(_) | OpError::Read(..) => ErrorKind::Internal,
        };
        Response::error(kind, e.to_string())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_id(id: &str) -> Result<QueueId, OpError> {
    id.parse().map_err(|_| OpError::BadId(id.to_owned()))
}

/// The operations on the queue, through its store (the spool, or the
/// database several nodes share: an operation there acts on the message
/// whichever node received it). The socket server and the HTTP API run
/// them; the CLI too when the server is stopped.
#[derive(Debug, Clone)]
pub struct QueueAdmin {
    /// The queue (the server's; or one the CLI opened: a spool it so
    /// locked, or the shared database).
    pub queue: AnyStore,
    /// Routes the DSNs of `bounce`.
    pub directory: Arc<Directory>,
    /// Our host name (DSNs).
    pub hostname: String,
    /// The running queue manager; `None` when the server is stopped (the
    /// next start looks at every message anyway).
    pub delivery: Option<DeliveryHandle>,
    /// DKIM keys for the DSNs of `bounce`; none loaded: unsigned.
    pub signer: SignerHandle,
    /// The delivery journal: deletions and bounces are recorded there.
    pub journal: tern_queue::Journal,
}

impl QueueAdmin {
    /// Carries out `request` at time `now` (Unix seconds).
    pub async fn execute(&self, request: &Request, now: u64) -> Response {
        let result = match request {
            Request::List => self.list(now).await,
            Request::Show { id } => match parse_id(id) {
                Ok(id) => self.show(&id, now).await,
                Err(e) => Err(e),
            },
            Request::Flush { id, domain } => {
                self.flush(id.as_deref(), domain.as_deref(), now).await
            }
            Request::Hold { id } => self.hold(id, true, now).await,
            Request::Release { id } => self.hold(id, false, now).await,
            Request::Delete { id } => self.delete(id, now).await,
            Request::Bounce { id } => self.bounce(id, now).await,
        };
        result.unwrap_or_else(Response::from)
    }

    fn wake(&self, id: &QueueId) {
        if let Some(delivery) = &self.delivery {
            delivery.submit(id.clone());
        }
    }

    async fn summary(&self, id: &QueueId, now: u64) -> Result<MessageSummary, OpError> {
        let message = self.queue.open(id).await?;
        let state = self.queue.message_state(id).await?;
        let (states, held) = (state.states, state.held);
        let envelope = &message.envelope;
        let recipients: Vec<RecipientInfo> = envelope
            .recipients
            .iter()
            .zip(states)
            .enumerate()
            .map(|(index, (rcpt, state))| RecipientInfo {
                index,
                address: rcpt.address_text().into_owned(),
                original: rcpt.original_text().into_owned(),
                local: rcpt.is_local(),
                state,
            })
            .collect();
        let next_attempt = recipients
            .iter()
            .filter_map(|r| match &r.state {
                RecipientState::Pending => Some(now),
                RecipientState::Deferred { next_attempt, .. } => Some(*next_attempt),
                _ => None,
            })
            .min();
        let deferred_error = recipients.iter().find_map(|r| match &r.state {
            RecipientState::Deferred { last_error, .. } => Some(last_error.clone()),
            _ => None,
        });
        let last_error = deferred_error.or_else(|| {
            recipients.iter().find_map(|r| match &r.state {
                RecipientState::Failed { reply, .. } => Some(reply.clone()),
                RecipientState::Expired { last_error, .. } => Some(last_error.clone()),
                _ => None,
            })
        });
        Ok(MessageSummary {
            id: id.to_string(),
            received_at: envelope.received_at,
            age: now.saturating_sub(envelope.received_at),
            size: message.data_len,
            sender: envelope.sender_text().into_owned(),
            held,
            recipients,
            next_attempt,
            last_error,
        })
    }

    async fn list(&self, now: u64) -> Result<Response, OpError> {
        let mut messages = Vec::new();
        for id in self.queue.list().await? {
            match self.summary(&id, now).await {
                Ok(s) => messages.push(s),
                // Delivered or deleted since the directory was read.
                Err(e) if e.is_not_found() => {}
                Err(e) => warn!(queue_id = %id, error = %e, "queue list: cannot read message"),
            }
        }
        Ok(Response::List { now, messages })
    }

    async fn show(&self, id: &QueueId, now: u64) -> Result<Response, OpError> {
        let summary = self.summary(id, now).await?;
        let message = self.queue.open(id).await?;
        let mut head = Vec::with_capacity(4096);
        let body = message.body;
        let head = tokio::task::spawn_blocking(move || {
            body.take(MAX_HEADERS as u64)
                .read_to_end(&mut head)
                .map(|_| head)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(|e| OpError::Read(id.clone(), e))?;
        let history = self
            .queue
            .history(id)
            .await?
            .into_iter()
            .map(|(recipient, state)| HistoryEntry { recipient, state })
            .collect();
        let e = &message.envelope;
        Ok(Response::Show {
            now,
            message: Box::new(MessageDetail {
                summary,
                client_ip: e.client_ip.map(|ip| ip.to_string()),
                helo: e.helo.clone(),
                protocol: e.protocol.clone(),
                tls: e.tls.clone(),
                auth_user: e.auth_user.clone(),
                body: e.body.to_string(),
                ret: e.ret.map(|r| r.to_string()),
                envid: e.envid.as_ref().map(ToString::to_string),
                headers: String::from_utf8_lossy(header_section(&head)).into_owned(),
                history,
            }),
        })
    }

    async fn flush(
        &self,
        id: Option<&str>,
        domain: Option<&str>,
        now: u64,
    ) -> Result<Response, OpError> {
        let ids = match id {
            Some(id) => vec![parse_id(id)?],
            None => self.queue.list().await?,
        };
        let mut flushed = Vec::new();
        let mut busy = Vec::new();
        for qid in ids {
            let message = match self.queue.open(&qid).await {
                Ok(m) => m,
                Err(e) if e.is_not_found() && id.is_none() => continue,
                Err(e) => return Err(e.into()),
            };
            let states = self.queue.message_state(&qid).await?.states;
            let mut matched = false;
            let mut due_now = Vec::new();
            for (index, (rcpt, state)) in message.envelope.recipients.iter().zip(states).enumerate()
            {
                if state.is_final() {
                    continue;
                }
                if let Some(d) = domain {
                    let address = rcpt.address_text();
                    let rdomain = address.rsplit_once('@').map_or("", |(_, d)| d);
                    if !rdomain.eq_ignore_ascii_case(d.trim_end_matches('.')) {
                        continue;
                    }
                }
                matched = true;
                if let RecipientState::Deferred {
                    attempts,
                    last_error,
                    next_attempt,
                } = state
                    && next_attempt > now
                {
                    due_now.push((
                        index,
                        RecipientState::Deferred {
                            attempts,
                            last_error,
                            next_attempt: now,
                        },
                    ));
                }
            }
            if !matched {
                continue;
            }
            if !due_now.is_empty() {
                // Under the message's lease: a pass running now (here or
                // on another node) is attempting it anyway.
                let lease = match self.lease(&qid, now, SHORT_WAIT).await {
                    Ok(lease) => lease,
                    Err(e) if e.is_not_found() && id.is_none() => continue,
                    Err(OpError::Busy(_)) => {
                        busy.push(qid.to_string());
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let recorded = self.queue.record_states(&lease, &due_now).await;
                self.release(lease).await;
                match recorded {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() && id.is_none() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            self.wake(&qid);
            flushed.push(qid.to_string());
        }
        if !busy.is_empty() {
            return Ok(Response::Done {
                action: "flush".to_owned(),
                ids: flushed,
                note: Some(format!(
                    "being attempted now, not flushed: {}",
                    busy.join(", ")
                )),
            });
        }
        if let (Some(id), true) = (id, flushed.is_empty()) {
            let what = domain.map_or(String::new(), |d| format!(" in {d}"));
            return Ok(Response::Done {
                action: "flush".to_owned(),
                ids: Vec::new(),
                note: Some(format!("{id} has no recipient{what} waiting")),
            });
        }
        info!(
            messages = flushed.len(),
            domain = domain.unwrap_or("*"),
            "queue flushed by the administrator"
        );
        Ok(Response::Done {
            action: "flush".to_owned(),
            ids: flushed,
            note: None,
        })
    }

    async fn hold(&self, id: &str, held: bool, now: u64) -> Result<Response, OpError> {
        let qid = parse_id(id)?;
        self.queue.set_hold(&qid, held).await?;
        let action = if held { "hold" } else { "release" };
        let mut note = None;
        if held {
            // No new pass starts now; one already running (here or on
            // another node) is waited for, so that when `hold` answers
            // nothing is being attempted.
            match self.lease(&qid, now, LEASE_WAIT).await {
                Ok(lease) => self.release(lease).await,
                Err(OpError::Busy(_)) => {
                    note = Some("held; an attempt already running goes on until it ends".to_owned())
                }
                Err(e) => return Err(e),
            }
        } else {
            self.wake(&qid);
        }
        info!(queue_id = %qid, action, "queue: {action} by the administrator");
        Ok(Response::Done {
            action: action.to_owned(),
            ids: vec![qid.to_string()],
            note,
        })
    }

    /// Waits up to `wait` for the message's delivery lease (the one a
    /// queue pass holds, on this node or another), so that a delivery
    /// attempt on `id` is not cut in half.
    async fn lease(&self, id: &QueueId, now: u64, wait: Duration) -> Result<Lease, OpError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(lease) = self.queue.lease(id, now, ADMIN_LEASE.as_secs()).await? {
                return Ok(lease);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OpError::Busy(id.clone()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Gives `lease` up (a message already gone is no error).
    async fn release(&self, lease: Lease) {
        let id = lease.id.clone();
        if let Err(e) = self.queue.release(lease).await {
            warn!(queue_id = %id, error = %e, "cannot release an admin lease");
        }
    }

    async fn delete(&self, id: &str, now: u64) -> Result<Response, OpError> {
        let qid = parse_id(id)?;
        let lease = self.lease(&qid, now, LEASE_WAIT).await?;
        let recipients = match self.queue.open(&qid).await {
            Ok(message) => message.envelope.recipients.len(),
            Err(e) => {
                self.release(lease).await;
                return Err(e.into());
            }
        };
        self.queue.remove(lease).await?;
        warn!(queue_id = %qid, recipients, "message deleted from the queue by the administrator");
        self.journal.record(
            qid.as_str(),
            JournalEvent::Removed {
                by: "delete".into(),
            },
        );
        Ok(Response::Done {
            action: "delete".to_owned(),
            ids: vec![qid.to_string()],
            note: None,
        })
    }

    async fn bounce(&self, id: &str, now: u64) -> Result<Response, OpError> {
        let qid = parse_id(id)?;
        let lease = self.lease(&qid, now, LEASE_WAIT).await?;
        let bounced = self.bounce_leased(&lease, now).await;
        match bounced {
            Ok(response) => {
                // Removing the message ends the lease.
                self.queue.remove(lease).await?;
                Ok(response)
            }
            Err(e) => {
                self.release(lease).await;
                Err(e)
            }
        }
    }

    /// [`bounce`](Self::bounce) under `lease`: records the failures,
    /// queues the notice; the caller removes the message.
    async fn bounce_leased(&self, lease: &Lease, now: u64) -> Result<Response, OpError> {
        let qid = lease.id.clone();
        let message = self.queue.open(&qid).await?;
        let states = self.queue.message_state(&qid).await?.states;
        let updates: Vec<(usize, RecipientState)> = states
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_final())
            .map(|(index, _)| {
                (
                    index,
                    RecipientState::Failed {
                        at: now,
                        reply: ADMIN_BOUNCE_REPLY.to_owned(),
                        status: "5.0.0".to_owned(),
                    },
                )
            })
            .collect();
        // Recorded first: a crash after this loses at most the notice,
        // never makes a second one.
        self.queue.record_states(lease, &updates).await?;
        let mut original = Vec::with_capacity(usize::try_from(message.data_len).unwrap_or(0));
        let mut body = message.body;
        let original =
            tokio::task::spawn_blocking(move || body.read_to_end(&mut original).map(|_| original))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map_err(|e| OpError::Read(qid.clone(), e))?;
        let notice = failure_notice(
            &self.directory,
            &self.hostname,
            &qid,
            &message.envelope,
            &original,
            &updates,
            now,
        );
        let envelope = message.envelope;
        let bounce_to = notice.as_ref().map(|n| n.to.clone());
        let bounce_id = match notice {
            Some(n) => Some(
                queue_notice_in(&self.queue, &self.directory, &self.signer.current(), n).await?,
            ),
            None => None,
        };
        for (index, _) in &updates {
            if let Some(r) = envelope.recipients.get(*index) {
                self.journal.record(
                    qid.as_str(),
                    JournalEvent::Bounced {
                        to: r.address_text().into_owned(),
                        via: "admin".into(),
                        relay: None,
                        reply: ADMIN_BOUNCE_REPLY.to_owned(),
                    },
                );
            }
        }
        self.journal.record(
            qid.as_str(),
            JournalEvent::Removed {
                by: "bounce".into(),
            },
        );
        if bounce_id.is_some() {
            // Counted as the queue counts its own (`tern_dsn_sent_total`).
            crate::metrics::metrics().dsn_sent(crate::metrics::DsnSent::Failure);
        }
        if let (Some(b), Some(to)) = (&bounce_id, &bounce_to) {
            self.journal.record(
                qid.as_str(),
                JournalEvent::Notice {
                    kind: "failure".into(),
                    to: to.to_string(),
                    notice_id: b.to_string(),
                },
            );
            self.journal.record(
                b.as_str(),
                JournalEvent::Generated {
                    about: qid.to_string(),
                    kind: "failure".into(),
                    to: to.to_string(),
                },
            );
        }
        if let Some(b) = &bounce_id {
            self.wake(b);
        }
        warn!(queue_id = %qid, recipients = updates.len(),
            bounce_id = bounce_id.as_ref().map_or("-", QueueId::as_str),
            "message returned to the sender by the administrator");
        let note = match (&bounce_id, updates.is_empty()) {
            (_, true) => "every recipient was already done; removed".to_owned(),
            (Some(b), false) => format!(
                "{} recipient(s) failed; failure notice queued as {b}",
                updates.len()
            ),
            (None, false) => format!(
                "{} recipient(s) failed; no notice (null sender or NOTIFY)",
                updates.len()
            ),
        };
        Ok(Response::Done {
            action: "bounce".to_owned(),
            ids: vec![qid.to_string()],
            note: Some(note),
        })
    }
}

/// The header section of `head`: everything before the first empty line
/// (CRLF or bare LF), or all of it when no empty line was seen.
fn header_section(head: &[u8]) -> &[u8] {
    let mut line_start = 0;
    while line_start < head.len() {
        let rest = &head[line_start..];
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            return &head[..line_start];
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => line_start += nl + 1,
            None => break,
        }
    }
    head
}

/// The admin socket, bound and ready to serve.
#[derive(Debug)]
pub struct AdminServer {
    listener: UnixListener,
    path: PathBuf,
    owner: u32,
    admin: QueueAdmin,
}

impl AdminServer {
    /// Binds the socket at `path` (see the module documentation for the
    /// order of steps that keeps it private). Call from within a tokio
    /// runtime.
    pub fn bind(path: &Path, admin: QueueAdmin) -> Result<AdminServer, AdminError> {
        let setup = |op, p: &Path| {
            let p = p.to_path_buf();
            move |source| AdminError::Setup {
                op,
                path: p,
                source,
            }
        };
        let parent = path.parent().unwrap_or(Path::new("."));
        // Short names: the staged path is no longer than `<parent>/admin.sock`
        // for pids up to 7 digits (Unix socket paths are limited to ~108 bytes).
        let staging = parent.join(format!(".a{}", std::process::id()));
        // Left over by a crashed process with the same pid.
        match std::fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(setup("remove", &staging)(e)),
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(setup("mkdir", &staging))?;
        let staged = staging.join("s");
        let bound = (|| {
            let listener =
                std::os::unix::net::UnixListener::bind(&staged).map_err(setup("bind", &staged))?;
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
                .map_err(setup("chmod", &staged))?;
            std::fs::rename(&staged, path).map_err(setup("rename", path))?;
            Ok::<_, AdminError>(listener)
        })();
        let _ = std::fs::remove_file(&staged);
        let _ = std::fs::remove_dir(&staging);
        let listener = bound?;
        let owner = std::fs::metadata(path).map_err(setup("stat", path))?.uid();
        listener
            .set_nonblocking(true)
            .map_err(setup("set_nonblocking", path))?;
        let listener = UnixListener::from_std(listener).map_err(setup("register", path))?;
        Ok(AdminServer {
            listener,
            path: path.to_path_buf(),
            owner,
            admin,
        })
    }

    /// Serves until `shutdown` turns true, then removes the socket file.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut conns = JoinSet::new();
        info!(socket = %self.path.display(), "admin socket listening");
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = self.listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            warn!(error = %e, "admin socket: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    match stream.peer_cred() {
                        Ok(c) if c.uid() == self.owner || c.uid() == 0 => {}
                        Ok(c) => {
                            warn!(uid = c.uid(), "admin socket: connection from another user refused");
                            continue;
                        }
                        Err(e) => {
                            warn!(error = %e, "admin socket: no peer credentials; refused");
                            continue;
                        }
                    }
                    let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                        break;
                    };
                    let admin = self.admin.clone();
                    conns.spawn(async move {
                        let _permit = permit;
                        if let Err(e) = serve_connection(stream, admin).await {
                            warn!(error = %e, "admin socket: connection ended with an error");
                        }
                    });
                }
            }
        }
        conns.abort_all();
        drop(self.listener);
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(error = %e, socket = %self.path.display(), "cannot remove the admin socket")
            }
        }
    }
}

async fn serve_connection(stream: UnixStream, admin: QueueAdmin) -> Result<(), AdminError> {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    loop {
        let line = match tokio::time::timeout(READ_TIMEOUT, read_line_async(&mut read)).await {
            Err(_) => return Ok(()), // idle: close quietly
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(line))) => line,
            Ok(Err(AdminError::TooLong(n))) => {
                let response = Response::error(
                    ErrorKind::BadRequest,
                    format!("request longer than {n} bytes"),
                );
                send_async(&mut write, &response).await?;
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
        };
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(request) => {
                let admin = admin.clone();
                tokio::spawn(async move { admin.execute(&request, unix_now()).await })
                    .await
                    .unwrap_or_else(|e| {
                        Response::error(ErrorKind::Internal, format!("operation failed: {e}"))
                    })
            }
            Err(e) => Response::error(ErrorKind::BadRequest, format!("bad request: {e}")),
        };
        send_async(&mut write, &response).await?;
    }
}

/// One line (without its `\n`), at most [`MAX_REQUEST`] bytes; `None` at
/// end of input. Never buffers more than the bound.
async fn read_line_async<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Option<Vec<u8>>, AdminError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await.map_err(AdminError::Io)?;
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(AdminError::Closed)
            };
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(nl) => (nl + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_REQUEST {
            return Err(AdminError::TooLong(MAX_REQUEST));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            line.pop();
            return Ok(Some(line));
        }
    }
}

async fn send_async<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    response: &Response,
) -> Result<(), AdminError> {
    let mut bytes = serde_json::to_vec(response)?;
    bytes.push(b'\n');
    tokio::time::timeout(READ_TIMEOUT, w.write_all(&bytes))
        .await
        .map_err(|_| AdminError::Io(io::ErrorKind::TimedOut.into()))?
        .map_err(AdminError::Io)
}

/// Sends `request` to the server listening on `socket` and returns its
/// answer (blocking; for the CLI). [`AdminError::NotRunning`] means nobody
/// listens there: the caller may then work on the spool directly.
pub fn request(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, AdminError> {
    let stream = std::os::unix::net::UnixStream::connect(socket).map_err(|source| {
        let path = socket.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                AdminError::NotRunning { path, source }
            }
            _ => AdminError::Connect { path, source },
        }
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(AdminError::Io)?;
    let mut line = serde_json::to_vec(request)?;
    if line.len() >= MAX_REQUEST {
        return Err(AdminError::TooLong(MAX_REQUEST));
    }
    line.push(b'\n');
    (&stream).write_all(&line).map_err(AdminError::Io)?;
    let mut reply = Vec::new();
    io::BufReader::new(&stream)
        .read_until(b'\n', &mut reply)
        .map_err(AdminError::Io)?;
    if reply.last() != Some(&b'\n') {
        return Err(AdminError::Closed);
    }
    Ok(serde_json::from_slice(&reply)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_wire_form() {
        let cases = [
            (Request::List, r#"{"cmd":"list"}"#),
            (
                Request::Show { id: "X".into() },
                r#"{"cmd":"show","id":"X"}"#,
            ),
            (
                Request::Flush {
                    id: None,
                    domain: Some("example.net".into()),
                },
                r#"{"cmd":"flush","id":null,"domain":"example.net"}"#,
            ),
            (
                Request::Bounce { id: "Y".into() },
                r#"{"cmd":"bounce","id":"Y"}"#,
            ),
        ];
        for (request, json) in cases {
            assert_eq!(serde_json::to_string(&request).unwrap(), json);
            assert_eq!(serde_json::from_str::<Request>(json).unwrap(), request);
        }
        // Flush's fields may be left out.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"flush"}"#).unwrap(),
            Request::Flush {
                id: None,
                domain: None
            }
        );
        // Unknown commands and missing ids are errors, not defaults.
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"purge"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"delete"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"id":"X"}"#).is_err());
    }

    fn summary() -> MessageSummary {
        MessageSummary {
            id: "0000000000010000".into(),
            received_at: 1_700_000_000,
            age: 60,
            size: 123,
            sender: "alice@example.test".into(),
            held: true,
            recipients: vec![
                RecipientInfo {
                    index: 0,
                    address: "bob@example.net".into(),
                    original: "Bob@example.net".into(),
                    local: false,
                    state: RecipientState::Deferred {
                        attempts: 2,
                        last_error: "451 4.4.1 no answer".into(),
                        next_attempt: 1_700_000_600,
                    },
                },
                RecipientInfo {
                    index: 1,
                    address: "carol@example.test".into(),
                    original: "carol@example.test".into(),
                    local: true,
                    state: RecipientState::Pending,
                },
            ],
            next_attempt: Some(1_700_000_060),
            last_error: Some("451 4.4.1 no answer".into()),
        }
    }

    #[test]
    fn responses_round_trip_with_flattened_states() {
        let list = Response::List {
            now: 1_700_000_060,
            messages: vec![summary()],
        };
        let json = serde_json::to_string(&list).unwrap();
        assert!(
            json.starts_with(r#"{"result":"list","now":1700000060,"#),
            "{json}"
        );
        assert!(
            json.contains(r#""local":false,"state":"deferred","attempts":2,"#),
            "{json}"
        );
        assert!(json.contains(r#""state":"pending""#), "{json}");
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), list);

        let show = Response::Show {
            now: 5,
            message: Box::new(MessageDetail {
                summary: summary(),
                client_ip: Some("192.0.2.1".into()),
                helo: Some("client.test".into()),
                protocol: "ESMTP".into(),
                tls: None,
                auth_user: None,
                body: "8BITMIME".into(),
                ret: None,
                envid: None,
                headers: "Subject: hi".into(),
                history: vec![HistoryEntry {
                    recipient: 0,
                    state: RecipientState::Failed {
                        at: 9,
                        reply: ADMIN_BOUNCE_REPLY.into(),
                        status: "5.0.0".into(),
                    },
                }],
            }),
        };
        let json = serde_json::to_string(&show).unwrap();
        assert!(json.contains(r#""recipient":0,"state":"failed""#), "{json}");
        assert!(json.contains(r#""sender":"alice@example.test""#), "{json}");
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), show);

        let err = Response::error(ErrorKind::NotFound, "no message X");
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"result":"error","kind":"not_found","message":"no message X"}"#
        );
    }

    #[test]
    fn header_section_stops_at_the_first_empty_line() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\nB: 2\n\nbody"), b"A: 1\nB: 2\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
        // No empty line within the bound: all of it.
        assert_eq!(header_section(b"A: 1\r\nB: 2"), b"A: 1\r\nB: 2");
    }

    fn rcpt(address: &str) -> tern_queue::Recipient {
        tern_queue::Recipient::new(address.parse().unwrap())
    }

    /// A spool holding one message from alice to three remote recipients.
    fn admin_with_message(dir: &Path) -> (QueueAdmin, QueueId) {
        let spool =
            tern_queue::Spool::open(dir, tern_queue::SpoolOptions { fsync: false }).unwrap();
        let directory = Directory::new(tern_store::DirectoryConfig {
            domains: vec!["example.test".into()],
            mailboxes: vec!["alice@example.test".into()],
            ..Default::default()
        })
        .unwrap();
        let mut msg = spool.create().unwrap();
        msg.write(b"Subject: hello\r\nX-A: 1\r\n\r\nbody\r\n")
            .unwrap();
        let envelope = tern_queue::Envelope {
            sender: "alice@example.test"
                .parse::<tern_types::Mailbox>()
                .unwrap()
                .into(),
            recipients: vec![
                rcpt("done@remote.test"),
                rcpt("late@remote.test"),
                rcpt("new@other.test"),
            ],
            received_at: 1_000,
            ..tern_queue::Envelope::default()
        };
        let id = msg.commit(&envelope).unwrap().wait_blocking().unwrap();
        spool
            .record_states(
                &id,
                &[
                    (
                        0,
                        RecipientState::Delivered {
                            at: 1_100,
                            reply: "250 ok".into(),
                        },
                    ),
                    (
                        1,
                        RecipientState::Deferred {
                            attempts: 3,
                            last_error: "451 4.4.1 no answer".into(),
                            next_attempt: 9_000,
                        },
                    ),
                ],
            )
            .unwrap();
        let admin = QueueAdmin {
            queue: AnyStore::File(tern_queue::store::FileStore::new(spool)),
            directory: Arc::new(directory),
            hostname: "mx.example.test".into(),
            delivery: None,
            signer: SignerHandle::default(),
            journal: tern_queue::Journal::disabled(),
        };
        (admin, id)
    }

    /// The spool under a test's admin.
    fn spool_of(admin: &QueueAdmin) -> &tern_queue::Spool {
        match &admin.queue {
            AnyStore::File(files) => files.spool(),
            AnyStore::Postgres(_) => unreachable!("the tests use the file backend"),
        }
    }

    #[tokio::test]
    async fn operations_on_a_spool() {
        let dir = tempfile::tempdir().unwrap();
        // The fixture commits with the blocking API: off the runtime.
        let path = dir.path().to_path_buf();
        let (admin, id) = tokio::task::spawn_blocking(move || admin_with_message(&path))
            .await
            .unwrap();
        let sid = id.to_string();
        let now = 2_000;

        let Response::List { messages, .. } = admin.execute(&Request::List, now).await else {
            panic!("list")
        };
        let m = &messages[0];
        assert_eq!((m.age, m.size, m.held), (1_000, 32, false));
        // A pending recipient is due now; the deferred one's error is shown.
        assert_eq!(m.next_attempt, Some(now));
        assert_eq!(m.last_error.as_deref(), Some("451 4.4.1 no answer"));

        let Response::Show { message, .. } =
            admin.execute(&Request::Show { id: sid.clone() }, now).await
        else {
            panic!("show")
        };
        assert_eq!(message.headers, "Subject: hello\r\nX-A: 1\r\n");
        assert_eq!(message.history.len(), 2);

        // Flush by domain: only the deferred recipient there becomes due now;
        // the delivered one is untouched.
        let flushed = admin
            .execute(
                &Request::Flush {
                    id: None,
                    domain: Some("Remote.TEST".into()),
                },
                now,
            )
            .await;
        assert!(matches!(&flushed, Response::Done { ids, .. } if ids.len() == 1 && ids[0] == sid));
        let states = spool_of(&admin).recipient_states(&id).unwrap();
        assert!(matches!(states[0], RecipientState::Delivered { .. }));
        assert_eq!(
            states[1],
            RecipientState::Deferred {
                attempts: 3,
                last_error: "451 4.4.1 no answer".into(),
                next_attempt: now,
            }
        );
        let none = admin
            .execute(
                &Request::Flush {
                    id: None,
                    domain: Some("nowhere.test".into()),
                },
                now,
            )
            .await;
        assert!(matches!(&none, Response::Done { ids, .. } if ids.is_empty()));

        admin.execute(&Request::Hold { id: sid.clone() }, now).await;
        assert!(spool_of(&admin).is_held(&id).unwrap());
        admin
            .execute(&Request::Release { id: sid.clone() }, now)
            .await;
        assert!(!spool_of(&admin).is_held(&id).unwrap());

        // Ids are validated before they get anywhere near a path.
        for bad in ["../queue", "", "0000000000000000"] {
            let r = admin
                .execute(&Request::Delete { id: bad.into() }, now)
                .await;
            assert!(
                matches!(
                    r,
                    Response::Error {
                        kind: ErrorKind::NotFound,
                        ..
                    }
                ),
                "{bad}: {r:?}"
            );
        }

        // Bounce: the two recipients not done fail, one DSN names exactly
        // them, the message leaves the queue.
        let r = admin
            .execute(&Request::Bounce { id: sid.clone() }, now)
            .await;
        let Response::Done {
            note: Some(note), ..
        } = &r
        else {
            panic!("{r:?}")
        };
        assert!(note.starts_with("2 recipient(s) failed"), "{note}");
        let left = spool_of(&admin).list().unwrap();
        assert_eq!(left.len(), 1);
        assert_ne!(left[0], id);
        let dsn = spool_of(&admin).open_message(&left[0]).unwrap();
        assert_eq!(dsn.envelope.sender_text(), "");
        assert_eq!(
            dsn.envelope.recipients[0].mailbox.as_deref(),
            Some("alice@example.test")
        );
        let mut text = String::new();
        dsn.reader().unwrap().read_to_string(&mut text).unwrap();
        assert!(
            text.contains("Final-Recipient: rfc822; late@remote.test"),
            "{text}"
        );
        assert!(
            text.contains("Final-Recipient: rfc822; new@other.test"),
            "{text}"
        );
        assert!(
            !text.contains("Final-Recipient: rfc822; done@remote.test"),
            "{text}"
        );
        assert!(text.contains(ADMIN_BOUNCE_REPLY), "{text}");
        let gone = admin.execute(&Request::Bounce { id: sid }, now).await;
        assert!(matches!(
            gone,
            Response::Error {
                kind: ErrorKind::NotFound,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn request_lines_are_bounded() {
        let mut input: &[u8] = b"{\"cmd\":\"list\"}\n{\"cmd\"";
        let mut r = tokio::io::BufReader::new(&mut input);
        assert_eq!(
            read_line_async(&mut r).await.unwrap().unwrap(),
            b"{\"cmd\":\"list\"}"
        );
        // A torn last line is an error, a clean end is None.
        assert!(matches!(
            read_line_async(&mut r).await,
            Err(AdminError::Closed)
        ));
        let mut empty: &[u8] = b"";
        assert!(read_line_async(&mut empty).await.unwrap().is_none());
        let long = vec![b'x'; MAX_REQUEST + 10];
        let mut r = tokio::io::BufReader::with_capacity(1024, long.as_slice());
        assert!(matches!(
            read_line_async(&mut r).await,
            Err(AdminError::TooLong(MAX_REQUEST))
        ));
        // Exactly at the bound (newline included) is fine.
        let mut exact = vec![b'y'; MAX_REQUEST - 1];
        exact.push(b'\n');
        let mut r = tokio::io::BufReader::with_capacity(1024, exact.as_slice());
        assert_eq!(
            read_line_async(&mut r).await.unwrap().unwrap().len(),
            MAX_REQUEST - 1
        );
    }
}
