//! LMTP delivery (RFC 2033): hands one queued message to a mailbox server
//! such as Dovecot for the local recipients of one domain, over a Unix
//! socket or TCP.
//!
//! [`deliver_lmtp`] connects to the configured [`LmtpTarget`] and pumps a
//! [`ClientSession`](tern_smtp::client::ClientSession) in
//! [`Protocol::Lmtp`] mode over it, with the same driver as outbound SMTP
//! ([`crate::outbound`]): `LHLO`, pipelined `MAIL`/`RCPT`/`DATA`, the
//! message through a [`DataEncoder`](tern_smtp::client::DataEncoder), then
//! one reply per accepted recipient. It returns exactly one
//! [`AttemptResult`] per recipient — 2xx delivered, 4xx deferred, 5xx
//! failed; a connection that could not be made is a typed local error —
//! and the queue manager records them like remote results.
//!
//! Rules:
//! * anything that keeps the server from answering for a recipient — the
//!   socket is missing or refuses, the connect times out, the greeting or
//!   `LHLO` is refused (even with 5xx), the connection breaks, a timer
//!   fires, a 421 — defers it: the mailbox server is our own
//!   infrastructure, and its being down says nothing about the message;
//! * recipients are sent by the address given (the mailbox key
//!   `user@domain` for local mailboxes), which is what Dovecot's `lmtp`
//!   service looks users up by;
//! * no STARTTLS (the socket is local or on a trusted network), no AUTH,
//!   no loop detection (a mailbox server on this host may well greet with
//!   our own host name).
//!
//! It must never drop or duplicate a recipient's result, panic on
//! anything the server sends, or wait without a timer: every connect,
//! read and write runs under one of the [`ClientTimeouts`].
//!
//! ```no_run
//! # async fn demo() {
//! use tern_delivery::lmtp::{LmtpTarget, deliver_lmtp};
//! use tern_delivery::outbound::{MessageData, OutboundMessage, RemoteRecipient};
//! use tern_smtp::client::ClientTimeouts;
//! use tern_types::dsn::BodyType;
//! let target: LmtpTarget = "unix:/run/dovecot/lmtp".parse().unwrap();
//! let msg = OutboundMessage {
//!     sender: &"alice@example.org".parse::<tern_types::Mailbox>().unwrap().into(),
//!     body: BodyType::SevenBit,
//!     smtputf8: false,
//!     ret: None,
//!     envid: None,
//!     data: MessageData::Bytes(b"Subject: hi\r\n\r\nHello.\r\n"),
//! };
//! let rcpts = [RemoteRecipient::new(0, "bob@example.org".parse().unwrap())];
//! let done = deliver_lmtp(&target, "mx.example.org", &msg, &rcpts, &ClientTimeouts::default()).await;
//! assert_eq!(done.results.len(), 1);
//! # }
//! ```

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tern_queue::{Answer, AttemptResult, LocalCause, LocalError};
use tern_smtp::client::{ClientConfig, ClientTimeouts, Protocol, StartTlsPolicy};
use tern_types::EnhancedStatus;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::outbound::{
    Conn, ConnPlan, DomainResult, OutboundMessage, RemoteRecipient, Unsettled, failure_answer,
    prepare, run_connection, to_attempt,
};

/// The longest a connect may take (shorter when the greeting timer is).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an LMTP server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LmtpTarget {
    /// A Unix domain socket (Dovecot: `/run/dovecot/lmtp` or
    /// `/var/run/dovecot/lmtp`).
    Unix(PathBuf),
    /// A host name or IP address (without brackets) and a port.
    Tcp(String, u16),
}

/// Why a string is not an [`LmtpTarget`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LmtpTargetError {
    /// Neither `unix:` nor `tcp:`.
    #[error("expected \"unix:/path/to/socket\" or \"tcp:host:port\"")]
    Scheme,
    /// `unix:` without a path, or a path with a NUL.
    #[error("the socket path is empty or contains NUL")]
    Path,
    /// `tcp:` without a valid host.
    #[error("invalid host {0:?} (a host name, an IPv4 address or [IPv6])")]
    Host(String),
    /// `tcp:` without a port from 1 to 65535.
    #[error("invalid or missing port {0:?} (1-65535)")]
    Port(String),
}

impl LmtpTarget {
    /// Parses `unix:/path/to/socket` or `tcp:host:port` (`tcp:[::1]:24`
    /// for an IPv6 address).
    pub fn parse(s: &str) -> Result<LmtpTarget, LmtpTargetError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() || path.contains('\0') {
                return Err(LmtpTargetError::Path);
            }
            return Ok(LmtpTarget::Unix(PathBuf::from(path)));
        }
        let Some(rest) = s.strip_prefix("tcp:") else {
            return Err(LmtpTargetError::Scheme);
        };
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(LmtpTargetError::Port(String::new()));
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(LmtpTargetError::Port(port.to_owned())),
        };
        let bad_host = || LmtpTargetError::Host(host.to_owned());
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(bad_host)?;
            inner.parse::<Ipv6Addr>().map_err(|_| bad_host())?;
            inner.to_owned()
        } else {
            let ldh = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if host.is_empty() || host.len() > 253 || !host.split('.').all(ldh) {
                return Err(bad_host());
            }
            host.to_owned()
        };
        Ok(LmtpTarget::Tcp(host, port))
    }
}

impl FromStr for LmtpTarget {
    type Err = LmtpTargetError;

    fn from_str(s: &str) -> Result<LmtpTarget, LmtpTargetError> {
        LmtpTarget::parse(s)
    }
}

/// The configuration syntax: `unix:/path` or `tcp:host:port`.
impl fmt::Display for LmtpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmtpTarget::Unix(path) => write!(f, "unix:{}", path.display()),
            LmtpTarget::Tcp(host, port) if host.contains(':') => {
                write!(f, "tcp:[{host}]:{port}")
            }
            LmtpTarget::Tcp(host, port) => write!(f, "tcp:{host}:{port}"),
        }
    }
}

/// Connects to `target` within `limit`; the error defers the recipients.
async fn connect(target: &LmtpTarget, limit: Duration) -> Result<Conn, LocalError> {
    let status = EnhancedStatus::new(4, 4, 1);
    let failed = |e: &dyn fmt::Display| {
        LocalError::new(
            LocalCause::Connect,
            status,
            &format!("connection to LMTP {target} failed: {e}"),
        )
    };
    let timed_out = || {
        LocalError::new(
            LocalCause::Connect,
            status,
            &format!("connection to LMTP {target} timed out after {limit:?}"),
        )
    };
    match target {
        #[cfg(unix)]
        LmtpTarget::Unix(path) => match timeout(limit, tokio::net::UnixStream::connect(path)).await
        {
            Ok(Ok(s)) => Ok(Conn::Unix(s)),
            Ok(Err(e)) => Err(failed(&e)),
            Err(_) => Err(timed_out()),
        },
        #[cfg(not(unix))]
        LmtpTarget::Unix(_) => Err(failed(&"Unix sockets are not supported here")),
        LmtpTarget::Tcp(host, port) => {
            // An IP address connects directly; a name goes through the
            // system's resolver (/etc/hosts: `localhost`, a container
            // name), as a local service's address should.
            match timeout(limit, TcpStream::connect((host.as_str(), *port))).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    Ok(Conn::Plain(s))
                }
                Ok(Err(e)) => Err(failed(&e)),
                Err(_) => Err(timed_out()),
            }
        }
    }
}

/// Delivers `msg` to `rcpts` over LMTP at `target` in one attempt (see
/// the module documentation for the rules). Every recipient gets exactly
/// one result, in the order given; `remote_mta` names the target when its
/// server answered.
pub async fn deliver_lmtp(
    target: &LmtpTarget,
    helo_name: &str,
    msg: &OutboundMessage<'_>,
    rcpts: &[RemoteRecipient],
    timeouts: &ClientTimeouts,
) -> DomainResult {
    let (done, open) = deliver_lmtp_unsettled(target, helo_name, msg, rcpts, timeouts).await;
    open.settle().await;
    done
}

/// [`deliver_lmtp`], handing the connection back [`Unsettled`]: the
/// mailbox server hears nothing more (no QUIT) until the caller has
/// recorded the results and settles it.
pub async fn deliver_lmtp_unsettled(
    target: &LmtpTarget,
    helo_name: &str,
    msg: &OutboundMessage<'_>,
    rcpts: &[RemoteRecipient],
    timeouts: &ClientTimeouts,
) -> (DomainResult, Unsettled<'static>) {
    let mut open = Unsettled::none();
    let mut done = DomainResult {
        results: Vec::new(),
        remote_mta: None,
        dsn_passed_on: false,
    };
    if rcpts.is_empty() {
        return (done, open);
    }
    let label = target.to_string();
    let mut config = ClientConfig::new(helo_name);
    config.protocol = Protocol::Lmtp;
    config.starttls = StartTlsPolicy::Disabled;
    if let Err(e) = config.validate() {
        let result = AttemptResult::deferred_locally(
            LocalCause::Config,
            EnhancedStatus::new(4, 3, 5),
            &format!("LMTP client configuration: {e}"),
        );
        done.results = rcpts.iter().map(|r| (r.index, result.clone())).collect();
        return (done, open);
    }
    let prepared = prepare(msg, rcpts);
    done.results = prepared.early;
    if let Some(txn) = prepared.txn {
        let sent = &prepared.sent;
        let defer_all = |answer: Answer| -> Vec<(usize, AttemptResult)> {
            sent.iter()
                .map(|&i| (i, AttemptResult::Deferred(answer.clone())))
                .collect()
        };
        tracing::debug!(target_host = %label, rcpts = sent.len(), "lmtp: connecting");
        match connect(target, timeouts.greeting.min(CONNECT_TIMEOUT)).await {
            Err(error) => {
                tracing::info!(target_host = %label, error = %error, "lmtp: cannot connect");
                done.results.extend(defer_all(Answer::Local(error)));
            }
            Ok(conn) => {
                let plan = ConnPlan {
                    config: Arc::new(config),
                    tls: None,
                    implicit_tls: false,
                    txn,
                    data: msg.data,
                    timeouts: *timeouts,
                    target: &label,
                    loop_check: false,
                    // The QUIT waits for the caller's record.
                    keep: true,
                };
                let r = run_connection(conn, plan).await;
                open = Unsettled::closing(r.idle);
                if let Some(t) = r.txn {
                    done.results.extend(
                        t.rcpts
                            .iter()
                            .filter_map(|o| sent.get(o.index).map(|&i| (i, to_attempt(o)))),
                    );
                    done.remote_mta = Some(label.clone());
                    done.dsn_passed_on = t.dsn_passed_on;
                } else {
                    let (answer, answered) = match &r.failure {
                        Some(f) => failure_answer(f, &label),
                        // Only when start_transaction refused the message,
                        // which prepare() rules out.
                        None => (
                            Answer::Local(LocalError::new(
                                LocalCause::Session,
                                EnhancedStatus::new(4, 3, 0),
                                &format!("{label}: session ended without a transaction"),
                            )),
                            true,
                        ),
                    };
                    tracing::info!(target_host = %label, error = %answer, "lmtp: session failed");
                    if answered {
                        done.remote_mta = Some(label.clone());
                    }
                    done.results.extend(defer_all(answer));
                }
            }
        }
    }
    crate::outbound::in_given_order(rcpts, &mut done, |rcpt, result| {
        tracing::info!(rcpt, lmtp = %label, result = ?result, "lmtp: recipient result");
    });
    (done, open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print() {
        let cases = [
            (
                "unix:/run/dovecot/lmtp",
                LmtpTarget::Unix("/run/dovecot/lmtp".into()),
            ),
            ("unix:lmtp.sock", LmtpTarget::Unix("lmtp.sock".into())),
            ("tcp:127.0.0.1:24", LmtpTarget::Tcp("127.0.0.1".into(), 24)),
            ("tcp:dovecot:2424", LmtpTarget::Tcp("dovecot".into(), 2424)),
            (
                "tcp:imap.example.test:24",
                LmtpTarget::Tcp("imap.example.test".into(), 24),
            ),
            ("tcp:[::1]:24", LmtpTarget::Tcp("::1".into(), 24)),
        ];
        for (text, want) in cases {
            let got = LmtpTarget::parse(text).unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
            assert_eq!(text.parse::<LmtpTarget>().unwrap(), want);
        }
    }

    #[test]
    fn bad_targets_are_refused() {
        let cases = [
            ("", LmtpTargetError::Scheme),
            ("/run/dovecot/lmtp", LmtpTargetError::Scheme),
            ("lmtp:/x", LmtpTargetError::Scheme),
            ("unix:", LmtpTargetError::Path),
            ("unix:/a\0b", LmtpTargetError::Path),
            ("tcp:host", LmtpTargetError::Port("".into())),
            ("tcp:host:0", LmtpTargetError::Port("0".into())),
            ("tcp:host:65536", LmtpTargetError::Port("65536".into())),
            ("tcp:host:", LmtpTargetError::Port("".into())),
            ("tcp::24", LmtpTargetError::Host("".into())),
            ("tcp:::1:24", LmtpTargetError::Host("::1".into())),
            ("tcp:[::1:24", LmtpTargetError::Host("[::1".into())),
            ("tcp:[nope]:24", LmtpTargetError::Host("[nope]".into())),
            ("tcp:bad host:24", LmtpTargetError::Host("bad host".into())),
            ("tcp:-x.test:24", LmtpTargetError::Host("-x.test".into())),
            ("tcp:a..b:24", LmtpTargetError::Host("a..b".into())),
        ];
        for (text, want) in cases {
            assert_eq!(LmtpTarget::parse(text), Err(want), "{text:?}");
        }
    }
}
