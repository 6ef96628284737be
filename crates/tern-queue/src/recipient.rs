//! Per-recipient delivery state and its transitions.
//!
//! A recipient starts [`Pending`](RecipientState::Pending). Each delivery
//! attempt ends in an [`AttemptResult`], and [`on_result`] computes the next
//! state from it, the [`RetrySchedule`] and the current time:
//!
//! ```text
//! Pending ──┬── Delivered(reply) ─────────────► Delivered   (final)
//! Deferred ─┼── Permanent(reply) ─────────────► Failed      (final)
//!           └── Temporary(reply) ─┬─ before max_age ─► Deferred { attempts + 1, next_attempt }
//!                                 └─ at/after max_age ► Expired (final)
//! ```
//!
//! Everything here is pure: time is an argument, nothing touches the disk
//! (persistence is [`Spool::record_state`](crate::Spool::record_state)).
//!
//! What this module must never do: let a final state (delivered, failed,
//! expired) change again — a retry must never re-deliver to a recipient that
//! is done (design invariant 7) — or keep an unbounded remote reply.

use serde::{Deserialize, Serialize};

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

/// How one delivery attempt to one recipient ended. Each carries the reply
/// as received (e.g. `"550 5.1.1 <bob@example.net>: no such user"`) or a
/// description of a local error (`"4.4.1 connection refused by mx.example.net"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// 2xx: the next hop (or the mailbox) took it.
    Delivered(String),
    /// 4xx, a connection failure, a timeout: try again later.
    Temporary(String),
    /// 5xx or a local permanent error: give up now.
    Permanent(String),
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
            reply: bounded(reply),
        },
        AttemptResult::Permanent(reply) => RecipientState::Failed {
            at: now,
            reply: bounded(reply),
            status: enhanced_status(reply, 5),
        },
        AttemptResult::Temporary(reply) => {
            let attempts = state.attempts().saturating_add(1);
            match schedule.next_attempt(first_queued, attempts, now) {
                Next::At(next_attempt) => RecipientState::Deferred {
                    attempts,
                    last_error: bounded(reply),
                    next_attempt,
                },
                Next::Expire => RecipientState::Expired {
                    at: now,
                    last_error: bounded(reply),
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

/// The RFC 3463 status of class `class` (2, 4 or 5) that `reply` carries.
///
/// Accepts `"550 5.1.1 text"`, `"550-5.1.1 text"` and a bare
/// `"5.1.1 text"`. When the reply has no enhanced code, or one of another
/// class (a server saying `550 4.2.2` has its class overridden by the basic
/// code's meaning here), the result is the generic `"<class>.0.0"`.
pub fn enhanced_status(reply: &str, class: u8) -> String {
    let generic = format!("{class}.0.0");
    let text = reply.trim_start();
    let b = text.as_bytes();
    let rest = if b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) {
        match b.get(3) {
            Some(b' ' | b'-') => &text[4..],
            _ => return generic,
        }
    } else {
        text
    };
    let code = rest.split([' ', '\t', '\r', '\n']).next().unwrap_or("");
    let mut fields = code.split('.');
    let (Some(c), Some(subject), Some(detail), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return generic;
    };
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    if c == class.to_string() && digits(subject, 3) && digits(detail, 3) {
        code.to_owned()
    } else {
        generic
    }
}

fn bounded(reply: &str) -> String {
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
