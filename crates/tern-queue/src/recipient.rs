//! Per-recipient delivery state and its transitions.
//!
//! A recipient starts [`Pending`](RecipientState::Pending). Each delivery
//! attempt ends in an [`AttemptResult`], and [`on_result`] computes the next
//! state from it, the [`RetrySchedule`] and the current time:
//!
//! ```text
//! Pending ──┬── Delivered(reply) ─────────────► Delivered   (final)
//! Deferred ─┼── Failed(answer) ───────────────► Failed      (final)
//!           └── Deferred(answer) ─┬─ before max_age ─► Deferred { attempts + 1, next_attempt }
//!                                 └─ at/after max_age ► Expired (final)
//! ```
//!
//! Everything here is pure: time is an argument, nothing touches the disk
//! (persistence is [`Spool::record_state`](crate::Spool::record_state)).
//!
//! What this module must never do: let a final state (delivered, failed,
//! expired) change again — a retry must never re-deliver to a recipient that
//! is done (design invariant 7) — or keep an unbounded remote reply.

use std::fmt;

use serde::{Deserialize, Serialize};
use tern_types::{EnhancedStatus, ServerReply};

use crate::schedule::{Next, RetrySchedule};

/// Longest reply text kept in a state (bytes); longer replies are cut at a
/// character boundary and end in `...`. RFC 5321 bounds a reply line at 512
/// octets, so this only trims hostile or broken servers.
pub const MAX_REPLY: usize = 4096;

/// Where one recipient of a queued message stands.
///
/// Serialised (in the spool's state file and for `tern queue --json`) as a
/// JSON object tagged by `"state"`, e.g.
/// `{"state":"deferred","attempts":2,"last_error":"451 4.3.0 busy","next_attempt":1700000900}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RecipientState {
    /// Not attempted yet (or reset for an immediate retry).
    Pending,
    /// Accepted by the next hop or written to its mailbox. Final.
    Delivered {
        /// When (Unix seconds; 0 when recorded by
        /// [`Spool::record_done`](crate::Spool::record_done), which keeps no time).
        at: u64,
        /// The accepting reply, or what the local delivery recorded.
        reply: String,
    },
    /// Failed temporarily; will be tried again.
    Deferred {
        /// Attempts made so far (at least 1).
        attempts: u32,
        /// The last temporary failure (remote reply or local error).
        last_error: String,
        /// When the next attempt is due (Unix seconds).
        next_attempt: u64,
    },
    /// Failed permanently. Final.
    Failed {
        /// When (Unix seconds).
        at: u64,
        /// The rejecting reply.
        reply: String,
        /// RFC 3463 status for the DSN, e.g. `5.1.1`.
        status: String,
    },
    /// Not delivered within the schedule's `max_age`. Final.
    Expired {
        /// When the queue gave up (Unix seconds).
        at: u64,
        /// The last temporary failure.
        last_error: String,
    },
}

impl RecipientState {
    /// Delivered, failed or expired: the state can never change again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            RecipientState::Delivered { .. }
                | RecipientState::Failed { .. }
                | RecipientState::Expired { .. }
        )
    }

    /// Whether an attempt is due at `now`: pending, or deferred with its
    /// next attempt at or before `now`. Never for a final state.
    pub fn is_due(&self, now: u64) -> bool {
        match self {
            RecipientState::Pending => true,
            RecipientState::Deferred { next_attempt, .. } => *next_attempt <= now,
            _ => false,
        }
    }

    /// Attempts made so far as far as the state knows (deferred recipients
    /// count them; pending is 0; final states do not keep the count).
    pub fn attempts(&self) -> u32 {
        match self {
            RecipientState::Deferred { attempts, .. } => *attempts,
            _ => 0,
        }
    }
}

/// How one delivery attempt to one recipient ended, with what said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// 2xx: the next hop (or the mailbox server) took it.
    Delivered(ServerReply),
    /// A 4xx, or a local failure that may pass (no connection, a timeout,
    /// a full disk): try again later.
    Deferred(Answer),
    /// A 5xx, or a local failure that will not pass (an address that
    /// cannot be sent, mail looping back to us): give up now.
    Failed(Answer),
}

impl AttemptResult {
    /// A deferral by a local error.
    pub fn deferred_locally(cause: LocalCause, status: EnhancedStatus, detail: &str) -> Self {
        AttemptResult::Deferred(Answer::Local(LocalError::new(cause, status, detail)))
    }

    /// A failure by a local error.
    pub fn failed_locally(cause: LocalCause, status: EnhancedStatus, detail: &str) -> Self {
        AttemptResult::Failed(Answer::Local(LocalError::new(cause, status, detail)))
    }

    /// The result in the one-line form the spool records and notices
    /// quote (`"550 5.1.1 no such user"`, `"451 4.4.1 connection refused"`).
    pub fn text(&self) -> String {
        match self {
            AttemptResult::Delivered(reply) => reply.to_string(),
            AttemptResult::Deferred(a) | AttemptResult::Failed(a) => a.to_string(),
        }
    }
}

/// Who gave a failure: a server's reply, or an error of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The next hop answered this.
    Server(ServerReply),
    /// Nothing answered: the attempt failed here.
    Local(LocalError),
}

impl Answer {
    /// The enhanced status of class `class` (4 or 5) a notice reports:
    /// the reply's or error's own when it is of that class, else the
    /// generic `<class>.0.0`.
    pub fn status_in(&self, class: u8) -> EnhancedStatus {
        let status = match self {
            Answer::Server(r) => r.status(),
            Answer::Local(e) => Some(e.status),
        };
        match status {
            Some(s) if s.class == class => s,
            _ => EnhancedStatus::generic(class),
        }
    }
}

/// The one-line form: the reply as received, or the local error with the
/// basic code the spool has always recorded it under (see
/// [`LocalError::code`]).
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Server(r) => r.fmt(f),
            Answer::Local(e) => e.fmt(f),
        }
    }
}

/// A delivery attempt that failed here, before (or instead of) a server's
/// answer: its cause, the RFC 3463 status a notice reports and what
/// happened, for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalError {
    /// What kind of failure.
    pub cause: LocalCause,
    /// The basic code the one-line form shows before the status: chosen
    /// by [`LocalError::new`] from the status (see there), or kept from
    /// the SMTP client when it reported the failure with one (a lost
    /// connection mid-transaction is `421 4.4.2`).
    pub code: u16,
    /// The status a notice reports (e.g. `4.4.1`, no connection).
    pub status: EnhancedStatus,
    /// What happened (one line).
    pub detail: String,
}

/// What kind of local failure ended an attempt.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalCause {
    /// Writing to the mailbox or the spool failed (disk, permissions).
    Storage,
    /// The mailbox is over its quota.
    Quota,
    /// No connection to the next hop (refused, timed out, no address; an
    /// LMTP socket missing).
    Connect,
    /// The destination could not be routed (MX or address lookup, null MX,
    /// an address literal we cannot use).
    Route,
    /// TLS could not be set up with the next hop.
    Tls,
    /// Our own configuration is unusable (client settings, certificates).
    Config,
    /// An envelope address cannot be sent.
    Address,
    /// The next hop is ourselves.
    Loop,
    /// The session ended before a result: a server refused the greeting,
    /// EHLO, STARTTLS or AUTH (its reply is in the detail), the connection
    /// broke or a timer fired.
    Session,
}

impl LocalError {
    /// A local error; control characters in `detail` become spaces. Its
    /// basic code follows the status as RFC 5321 pairs them: `452` for a
    /// full mailbox or disk (`4.2.2`, `4.3.1` with cause
    /// [`Quota`](LocalCause::Quota) or [`Storage`](LocalCause::Storage)),
    /// `451` for other transient errors, `553` for a bad address (`5.1.3`,
    /// `5.1.7`), `554` for a loop or a message too big (`5.4.6`, `5.3.4`),
    /// `556` for a domain that accepts no mail (`5.1.10`, RFC 7505), `550`
    /// for the rest.
    pub fn new(cause: LocalCause, status: EnhancedStatus, detail: &str) -> LocalError {
        let full = matches!(cause, LocalCause::Quota | LocalCause::Storage);
        let code = match (status.class, status.subject, status.detail) {
            (2, ..) => 250,
            (4, 2, 2) | (4, 3, 1) if full => 452,
            (4, ..) => 451,
            (5, 1, 10) => 556,
            (5, 1, 3) | (5, 1, 7) => 553,
            (5, 4, 6) | (5, 3, 4) => 554,
            _ => 550,
        };
        LocalError {
            cause,
            code,
            status,
            detail: detail
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        }
    }

    /// The same error recorded under `code` (as the SMTP client reported
    /// it); a code outside 200 to 599 is ignored.
    pub fn with_code(mut self, code: u16) -> LocalError {
        if (200..=599).contains(&code) {
            self.code = code;
        }
        self
    }
}

/// `"451 4.4.1 detail"`, the form the spool records (see
/// [`LocalError::code`]).
impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.detail)
    }
}

/// The state after an attempt that ended in `result` at `now`, for a
/// message first queued at `first_queued`.
///
/// A final `state` is returned unchanged whatever the result. A temporary
/// failure at or after the schedule's expiry gives
/// [`Expired`](RecipientState::Expired); before it,
/// [`Deferred`](RecipientState::Deferred) with one more attempt and the
/// schedule's next time. Replies are kept up to [`MAX_REPLY`] bytes.
pub fn on_result(
    state: &RecipientState,
    result: &AttemptResult,
    schedule: &RetrySchedule,
    first_queued: u64,
    now: u64,
) -> RecipientState {
    if state.is_final() {
        return state.clone();
    }
    match result {
        AttemptResult::Delivered(reply) => RecipientState::Delivered {
            at: now,
            reply: bounded(&reply.to_string()),
        },
        AttemptResult::Failed(answer) => RecipientState::Failed {
            at: now,
            reply: bounded(&answer.to_string()),
            status: answer.status_in(5).to_string(),
        },
        AttemptResult::Deferred(answer) => {
            let reply = answer.to_string();
            let attempts = state.attempts().saturating_add(1);
            match schedule.next_attempt(first_queued, attempts, now) {
                Next::At(next_attempt) => RecipientState::Deferred {
                    attempts,
                    last_error: bounded(&reply),
                    next_attempt,
                },
                Next::Expire => RecipientState::Expired {
                    at: now,
                    last_error: bounded(&reply),
                },
            }
        }
    }
}

/// Give up on a recipient without another attempt (e.g. a message held
/// past its expiry): pending and deferred become
/// [`Expired`](RecipientState::Expired) at `now`, keeping the last error;
/// a final state is returned unchanged.
pub fn on_expiry(state: &RecipientState, now: u64) -> RecipientState {
    match state {
        RecipientState::Pending => RecipientState::Expired {
            at: now,
            last_error: "no delivery attempt succeeded before the message expired".to_owned(),
        },
        RecipientState::Deferred { last_error, .. } => RecipientState::Expired {
            at: now,
            last_error: last_error.clone(),
        },
        done => done.clone(),
    }
}

/// The RFC 3463 status of class `class` (2, 4 or 5) that a stored reply
/// text carries, as text: [`tern_types::reply::status_of`] (the one
/// parser), for callers that hold the text form.
///
/// Accepts `"550 5.1.1 text"`, `"550-5.1.1 text"` and a bare
/// `"5.1.1 text"`. When the reply has no enhanced code, or one of another
/// class (a server saying `550 4.2.2` has its class overridden by the basic
/// code's meaning here), the result is the generic `"<class>.0.0"`.
pub fn enhanced_status(reply: &str, class: u8) -> String {
    tern_types::reply::status_of(reply, class).to_string()
}

pub(crate) fn bounded(reply: &str) -> String {
    if reply.len() <= MAX_REPLY {
        return reply.to_owned();
    }
    let mut end = MAX_REPLY - 3;
    while !reply.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &reply[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_extraction() {
        assert_eq!(enhanced_status("550 5.1.1 no such user", 5), "5.1.1");
        assert_eq!(enhanced_status("550-5.7.26 unauthenticated", 5), "5.7.26");
        assert_eq!(enhanced_status("5.1.10 null MX", 5), "5.1.10");
        assert_eq!(enhanced_status("451 4.3.0 try later", 4), "4.3.0");
        assert_eq!(enhanced_status("550 no such user", 5), "5.0.0");
        assert_eq!(enhanced_status("550 4.2.2 mailbox full", 5), "5.0.0");
        assert_eq!(enhanced_status("550 5.1.1.1 odd", 5), "5.0.0");
        assert_eq!(enhanced_status("550 5.1234.1 odd", 5), "5.0.0");
        assert_eq!(enhanced_status("550x5.1.1", 5), "5.0.0");
        assert_eq!(enhanced_status("connection refused", 4), "4.0.0");
        assert_eq!(enhanced_status("", 4), "4.0.0");
        assert_eq!(enhanced_status("550 5.1.1\r\nInjected: x", 5), "5.1.1");
    }

    #[test]
    fn long_replies_are_bounded_on_a_char_boundary() {
        let reply = format!("550 5.1.1 {}", "é".repeat(5000));
        let kept = bounded(&reply);
        assert!(kept.len() <= MAX_REPLY);
        assert!(kept.ends_with("..."));
        assert!(reply.starts_with(kept.trim_end_matches("...")));
        assert_eq!(bounded("short"), "short");
    }

    #[test]
    fn state_serialisation_is_tagged() {
        let s = RecipientState::Deferred {
            attempts: 2,
            last_error: "451 4.3.0 busy".into(),
            next_attempt: 1_700_000_900,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"state":"deferred","attempts":2,"last_error":"451 4.3.0 busy","next_attempt":1700000900}"#
        );
        assert_eq!(
            serde_json::to_string(&RecipientState::Pending).unwrap(),
            r#"{"state":"pending"}"#
        );
    }
}
