//! Hooks, verdicts and the pipeline's running outcome.

use std::fmt;
use std::time::Duration;

use tern_smtp::reply::Reply;
use tern_types::EnhancedStatus;

/// Where in an SMTP transaction a stage is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// The client connected (before the greeting).
    Connect,
    /// EHLO/HELO was accepted.
    Helo,
    /// MAIL FROM.
    Mail,
    /// Each RCPT TO.
    Rcpt,
    /// The header section is complete (asked at the end of data, with the
    /// whole message spooled: the client's reply can only come then).
    EndOfHeaders,
    /// The message is complete and spooled.
    EndOfData,
}

impl Hook {
    /// Every hook, in transaction order.
    pub const ALL: [Hook; 6] = [
        Hook::Connect,
        Hook::Helo,
        Hook::Mail,
        Hook::Rcpt,
        Hook::EndOfHeaders,
        Hook::EndOfData,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The name used in logs and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Helo => "helo",
            Hook::Mail => "mail",
            Hook::Rcpt => "rcpt",
            Hook::EndOfHeaders => "eoh",
            Hook::EndOfData => "eom",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Hook`]s (a bit set: copying and testing it never allocates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks(u8);

impl Hooks {
    /// No hook.
    pub const NONE: Hooks = Hooks(0);

    /// The set of `hooks`.
    pub fn of(hooks: &[Hook]) -> Hooks {
        Hooks(hooks.iter().fold(0, |acc, h| acc | h.bit()))
    }

    /// Whether `hook` is in the set.
    pub fn contains(self, hook: Hook) -> bool {
        self.0 & hook.bit() != 0
    }

    /// Adds `hook`.
    pub fn insert(&mut self, hook: Hook) {
        self.0 |= hook.bit();
    }

    /// Both sets.
    pub fn union(self, other: Hooks) -> Hooks {
        Hooks(self.0 | other.0)
    }

    /// True when no hook is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What a stage decided about the transaction (or the recipient, at RCPT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing against it: the next stage is asked.
    Continue,
    /// Refuse with this 5xx reply.
    Reject(Reply),
    /// Refuse for now with this 4xx reply; the client retries.
    TempFail(Reply),
    /// Accept with a 250 and drop the message (a milter's `discard`).
    Discard,
    /// Accept, and deliver into the local recipients' `Junk` folders.
    Quarantine,
}

impl Action {
    /// Whether the action ends the pipeline (reject, tempfail, discard).
    pub fn stops(&self) -> bool {
        matches!(
            self,
            Action::Reject(_) | Action::TempFail(_) | Action::Discard
        )
    }

    /// A short name for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Continue => "accept",
            Action::Reject(_) => "reject",
            Action::TempFail(_) => "tempfail",
            Action::Discard => "discard",
            Action::Quarantine => "quarantine",
        }
    }
}

/// A change a stage asks for. Header names are compared without regard
/// to case; values are unfolded text without the trailing line end (a
/// value may contain `\n` followed by white space: a folded line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A field to add above the message's header section, below our
    /// `Received:` and `Authentication-Results:` (our own results).
    Prepend {
        /// Field name.
        name: String,
        /// Field value.
        value: String,
    },
    /// A field to add at the end of the header section (milter `ADDHEADER`).
    Append {
        /// Field name.
        name: String,
        /// Field value.
        value: String,
    },
    /// A field to insert before the field at `index` (0: first; past the
    /// end: last) of the header section (milter `INSHEADER`).
    Insert {
        /// Position.
        index: usize,
        /// Field name.
        name: String,
        /// Field value.
        value: String,
    },
    /// Replace the value of the `index`th (1-based) field called `name`;
    /// an empty value removes it; a missing field is added (milter
    /// `CHGHEADER`).
    Replace {
        /// Field name.
        name: String,
        /// Which occurrence (1 = first).
        index: u32,
        /// New value, or empty to remove.
        value: String,
    },
    /// Remove every field called `name`.
    RemoveAll {
        /// Field name.
        name: String,
    },
    /// Remove the `index`th field called `name`, counted from the top when
    /// positive, from the bottom when negative (rspamd's `remove_headers`).
    Remove {
        /// Field name.
        name: String,
        /// Which occurrence.
        index: i32,
    },
    /// Set the `Subject:` (rspamd's "rewrite subject").
    Subject(String),
    /// Replace the envelope sender (milter `CHGFROM`).
    ChangeFrom {
        /// The new reverse path, without angle brackets.
        address: String,
    },
    /// Add an envelope recipient (milter `ADDRCPT`, `ADDRCPT_PAR`).
    AddRcpt {
        /// The address, without angle brackets.
        address: String,
    },
    /// Remove an envelope recipient (milter `DELRCPT`).
    DelRcpt {
        /// The address, without angle brackets.
        address: String,
    },
}

/// A stage's answer at one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What it decided.
    pub action: Action,
    /// The changes it asks for (applied only if the message is accepted).
    pub changes: Vec<Change>,
    /// Its result in a few words, for the log line and the
    /// `X-Tern-Filter:` field: `"clean"`, `"spam (score=16.2/15)"`,
    /// `"listed (zen.spamhaus.org)"`, `"temperror (timeout); failed open"`.
    pub result: String,
}

impl Verdict {
    /// Nothing against it.
    pub fn pass(result: impl Into<String>) -> Verdict {
        Verdict {
            action: Action::Continue,
            changes: Vec::new(),
            result: result.into(),
        }
    }

    /// A verdict with `action`.
    pub fn with_action(action: Action, result: impl Into<String>) -> Verdict {
        Verdict {
            action,
            changes: Vec::new(),
            result: result.into(),
        }
    }

    /// Adds a change.
    pub fn change(mut self, change: Change) -> Verdict {
        self.changes.push(change);
        self
    }
}

/// What a stage's failure (a dead, slow or garbage-speaking scanner) means
/// (`fail = "open"` or `"closed"` in a `[[filter]]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Accept and say so in the `X-Tern-Filter:` field: mail flows when
    /// the scanner is down.
    #[default]
    Open,
    /// `451 4.7.1`: the client retries later; nothing unchecked gets in.
    Closed,
}

impl FailMode {
    /// The verdict for stage `stage` failing because of `why`.
    pub fn verdict(self, stage: &str, why: &str) -> Verdict {
        match self {
            FailMode::Open => Verdict::pass(format!("temperror ({why}); failed open")),
            FailMode::Closed => Verdict::with_action(
                Action::TempFail(Reply::new(
                    451,
                    EnhancedStatus::new(4, 7, 1),
                    format!("Temporary failure in the {stage} check; try again later"),
                )),
                format!("temperror ({why}); failed closed"),
            ),
        }
    }
}

/// One stage's result at one hook, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageResult {
    /// The stage's name (`rspamd`, `milter.clamav`, …).
    pub stage: String,
    /// The hook.
    pub hook: Hook,
    /// Its action.
    pub action: &'static str,
    /// Its result text.
    pub result: String,
    /// How long it took.
    pub elapsed: Duration,
}

/// The verdicts of a transaction's stages so far, folded: the first
/// reject, tempfail or discard stops the pipeline; quarantine and changes
/// accumulate.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    stop: Option<Action>,
    /// Some stage asked for quarantine.
    pub quarantine: bool,
    /// Every change asked for, in stage order.
    pub changes: Vec<Change>,
    /// Every stage's result, in order.
    pub results: Vec<StageResult>,
}

impl Outcome {
    /// Records `verdict` of `stage` at `hook`.
    pub fn record(&mut self, stage: &str, hook: Hook, verdict: Verdict, elapsed: Duration) {
        self.results.push(StageResult {
            stage: stage.to_owned(),
            hook,
            action: verdict.action.as_str(),
            result: verdict.result,
            elapsed,
        });
        if self.stop.is_some() {
            return;
        }
        self.changes.extend(verdict.changes);
        match verdict.action {
            Action::Continue => {}
            Action::Quarantine => self.quarantine = true,
            stop => self.stop = Some(stop),
        }
    }

    /// The action that ended the pipeline, if one did.
    pub fn stopped(&self) -> Option<&Action> {
        self.stop.as_ref()
    }

    /// The final action: the stopping one, else quarantine or accept.
    pub fn action(&self) -> Action {
        match &self.stop {
            Some(a) => a.clone(),
            None if self.quarantine => Action::Quarantine,
            None => Action::Continue,
        }
    }

    /// `stage=result` pairs for an `X-Tern-Filter:` field or a log line,
    /// separated by `"; "`. Results are sanitised to printable ASCII.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for r in &self.results {
            if !s.is_empty() {
                s.push_str("; ");
            }
            push_clean(&mut s, &r.stage);
            s.push('=');
            push_clean(&mut s, &r.result);
        }
        s
    }

    /// Like [`Outcome::summary`], with each stage's time in milliseconds.
    pub fn timed_summary(&self) -> String {
        let mut s = String::new();
        for r in &self.results {
            if !s.is_empty() {
                s.push_str("; ");
            }
            push_clean(&mut s, &r.stage);
            s.push('@');
            s.push_str(r.hook.as_str());
            s.push('=');
            push_clean(&mut s, &r.result);
            s.push_str(&format!(" [{}ms]", r.elapsed.as_millis()));
        }
        s
    }
}

/// Appends `text` with every byte outside printable ASCII replaced by `?`.
pub(crate) fn push_clean(out: &mut String, text: &str) {
    out.extend(
        text.chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { '?' }),
    );
}

/// `text` with every byte outside printable ASCII (and tab) replaced by
/// `?`: safe in a header value, a reply or a log field.
pub(crate) fn clean(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    push_clean(&mut s, text);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject() -> Action {
        Action::Reject(Reply::new(554, EnhancedStatus::new(5, 7, 1), "no"))
    }

    #[test]
    fn hooks_are_a_set() {
        let mut h = Hooks::of(&[Hook::Connect, Hook::EndOfData]);
        assert!(h.contains(Hook::Connect));
        assert!(!h.contains(Hook::Rcpt));
        h.insert(Hook::Rcpt);
        assert!(h.contains(Hook::Rcpt));
        assert!(Hooks::NONE.is_empty());
        assert_eq!(
            Hooks::of(&[Hook::Helo]).union(Hooks::of(&[Hook::Mail])),
            Hooks::of(&[Hook::Mail, Hook::Helo])
        );
    }

    #[test]
    fn first_stop_wins_and_later_changes_are_ignored() {
        let mut o = Outcome::default();
        o.record(
            "a",
            Hook::EndOfData,
            Verdict::with_action(Action::Quarantine, "spam").change(Change::Subject("x".into())),
            Duration::from_millis(3),
        );
        o.record(
            "b",
            Hook::EndOfData,
            Verdict::with_action(reject(), "virus"),
            Duration::ZERO,
        );
        o.record(
            "c",
            Hook::EndOfData,
            Verdict::pass("clean").change(Change::Subject("y".into())),
            Duration::ZERO,
        );
        assert_eq!(o.stopped(), Some(&reject()));
        assert_eq!(o.action(), reject());
        assert!(o.quarantine);
        assert_eq!(o.changes, vec![Change::Subject("x".into())]);
        assert_eq!(o.summary(), "a=spam; b=virus; c=clean");
        assert!(o.timed_summary().starts_with("a@eom=spam [3ms]; "));
    }

    #[test]
    fn fail_modes() {
        let open = FailMode::Open.verdict("rspamd", "timeout");
        assert_eq!(open.action, Action::Continue);
        assert_eq!(open.result, "temperror (timeout); failed open");
        let closed = FailMode::Closed.verdict("clamav", "connection refused");
        let Action::TempFail(r) = closed.action else {
            panic!("closed must tempfail")
        };
        assert_eq!(r.code, 451);
        assert_eq!(r.status, Some(EnhancedStatus::new(4, 7, 1)));
    }

    #[test]
    fn summaries_are_printable() {
        let mut o = Outcome::default();
        o.record(
            "m\r\n",
            Hook::Rcpt,
            Verdict::pass("a\u{7f}é"),
            Duration::ZERO,
        );
        assert_eq!(o.summary(), "m??=a??");
    }
}
