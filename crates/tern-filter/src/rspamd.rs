//! rspamd's HTTP protocol (`/checkv2`, `/learnspam`, `/learnham`),
//! without I/O, and what its answer means for the message.
//!
//! The request is a `POST` whose body is the message and whose header
//! fields carry the envelope and the connection: `From`, one `Rcpt` per
//! recipient, `Ip`, `Helo`, `Hostname`, `User`, `Queue-Id`, `MTA-Name`.
//! The reply is JSON; [`parse_reply`] reads the parts Tern uses (action,
//! score, threshold, the SMTP message, the rewritten subject and the
//! milter-style header changes of rspamd's `milter_headers` module) and
//! [`verdict`] maps the action:
//!
//! | rspamd action | Tern |
//! |---|---|
//! | `reject` | `554 5.7.1` with rspamd's SMTP message |
//! | `soft reject` | `451 4.7.1` |
//! | `greylist` | `451 4.7.1` (unless [`Policy::greylist`] is off) |
//! | `rewrite subject` | the new `Subject:`, `X-Spam-Flag: YES`; quarantine if [`Policy::quarantine_spam`] |
//! | `add header` | `X-Spam-Flag: YES`; quarantine if [`Policy::quarantine_spam`] |
//! | `no action` | accept |
//!
//! Every scanned message gets `X-Spam-Status:` and `X-Spam-Score:`
//! (SpamAssassin's names, which Sieve scripts and mail clients know), and
//! any such fields the sender put in are removed first.

use std::net::IpAddr;

use serde_json::Value;
use tern_smtp::reply::Reply;
use tern_types::EnhancedStatus;
use thiserror::Error;

use crate::http::{Request, request_head};
use crate::verdict::clean;
use crate::{Action, Change, Verdict};

/// The longest JSON reply read (rspamd's replies are a few KB; one with
/// every URL of a big message can be more).
pub const MAX_REPLY: usize = 4 * 1024 * 1024;

/// Fields our verdict writes; the sender's copies are removed.
pub const SPAM_FIELDS: [&str; 3] = ["X-Spam-Flag", "X-Spam-Status", "X-Spam-Score"];

/// Errors reading rspamd's reply.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RspamdError {
    /// Not JSON, or not the shape of a `/checkv2` reply.
    #[error("malformed rspamd reply: {0}")]
    Malformed(String),
    /// rspamd answered with an error status.
    #[error("rspamd answered HTTP {status}: {text}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Its error text.
        text: String,
    },
}

/// The transaction, as rspamd's request header fields describe it.
#[derive(Debug, Clone)]
pub struct CheckRequest<'a> {
    /// The `Host:` of the request (`host:port`).
    pub host: &'a str,
    /// The envelope sender (empty for `<>`).
    pub from: &'a str,
    /// The envelope recipients.
    pub rcpts: &'a [&'a str],
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO name, if any.
    pub helo: Option<&'a str>,
    /// The client's verified host name, if known.
    pub hostname: Option<&'a str>,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// Our queue id.
    pub queue_id: &'a str,
    /// Our host name (`MTA-Name`).
    pub mta_name: &'a str,
    /// The message's length in bytes.
    pub size: u64,
    /// A settings id rspamd should apply (`Settings-ID`), if configured.
    pub settings_id: Option<&'a str>,
}

/// The request head of a `/checkv2` call (the message is the body).
pub fn check_head(req: &CheckRequest<'_>) -> Vec<u8> {
    let mut headers: Vec<(&str, String)> = Vec::with_capacity(8 + req.rcpts.len());
    headers.push(("From", format!("<{}>", req.from)));
    for r in req.rcpts {
        headers.push(("Rcpt", format!("<{r}>")));
    }
    headers.push(("Ip", req.ip.to_string()));
    if let Some(h) = req.helo {
        headers.push(("Helo", h.to_owned()));
    }
    headers.push(("Hostname", req.hostname.unwrap_or("unknown").to_owned()));
    if let Some(u) = req.user {
        headers.push(("User", u.to_owned()));
    }
    headers.push(("Queue-Id", req.queue_id.to_owned()));
    headers.push(("MTA-Name", req.mta_name.to_owned()));
    if let Some(s) = req.settings_id {
        headers.push(("Settings-ID", s.to_owned()));
    }
    request_head(&Request {
        method: "POST",
        path: "/checkv2",
        host: req.host,
        headers,
        content_length: req.size,
        keep_alive: true,
    })
}

/// What to teach rspamd's Bayes classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// The message is spam (`/learnspam`).
    Spam,
    /// The message is not spam (`/learnham`).
    Ham,
}

impl Learn {
    /// The controller path.
    pub fn path(self) -> &'static str {
        match self {
            Learn::Spam => "/learnspam",
            Learn::Ham => "/learnham",
        }
    }
}

/// The request head of a learning call to rspamd's controller worker.
pub fn learn_head(host: &str, kind: Learn, password: Option<&str>, size: u64) -> Vec<u8> {
    let mut headers = Vec::new();
    if let Some(p) = password {
        headers.push(("Password", p.to_owned()));
    }
    request_head(&Request {
        method: "POST",
        path: kind.path(),
        host,
        headers,
        content_length: size,
        keep_alive: false,
    })
}

/// Reads the controller's answer to a learning call: `Ok(true)` learned,
/// `Ok(false)` already known (HTTP 208, or rspamd's "already learned").
pub fn learn_result(status: u16, body: &[u8]) -> Result<bool, RspamdError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(Value::as_str)
        .map(clean);
    match status {
        208 => Ok(false),
        200..=299 => Ok(true),
        _ if error
            .as_deref()
            .is_some_and(|e| e.contains("already learned")) =>
        {
            Ok(false)
        }
        _ => Err(RspamdError::Status {
            status,
            text: error
                .unwrap_or_else(|| clean(&String::from_utf8_lossy(&body[..body.len().min(200)]))),
        }),
    }
}

/// rspamd's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RspamdAction {
    /// `no action`.
    NoAction,
    /// `greylist`.
    Greylist,
    /// `add header`.
    AddHeader,
    /// `rewrite subject`.
    RewriteSubject,
    /// `soft reject`.
    SoftReject,
    /// `reject`.
    Reject,
}

impl RspamdAction {
    fn parse(s: &str) -> Option<RspamdAction> {
        Some(match s {
            "no action" => RspamdAction::NoAction,
            "greylist" => RspamdAction::Greylist,
            "add header" | "add_header" => RspamdAction::AddHeader,
            "rewrite subject" | "rewrite_subject" => RspamdAction::RewriteSubject,
            "soft reject" | "soft_reject" => RspamdAction::SoftReject,
            "reject" => RspamdAction::Reject,
            _ => return None,
        })
    }

    /// rspamd's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RspamdAction::NoAction => "no action",
            RspamdAction::Greylist => "greylist",
            RspamdAction::AddHeader => "add header",
            RspamdAction::RewriteSubject => "rewrite subject",
            RspamdAction::SoftReject => "soft reject",
            RspamdAction::Reject => "reject",
        }
    }
}

/// A header field rspamd wants added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Position (0: first); `None`: at the end.
    pub order: Option<usize>,
}

/// The parts of a `/checkv2` reply Tern uses.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReply {
    /// rspamd skipped the message (settings, size).
    pub skipped: bool,
    /// The action.
    pub action: RspamdAction,
    /// The score.
    pub score: f64,
    /// The score needed for `reject`.
    pub required_score: f64,
    /// The SMTP reply text rspamd suggests.
    pub smtp_message: Option<String>,
    /// The new subject (`rewrite subject`).
    pub subject: Option<String>,
    /// Header fields to add (`milter.add_headers`).
    pub add_headers: Vec<AddHeader>,
    /// Header fields to remove: name and index (0: all; negative: from the
    /// bottom) (`milter.remove_headers`).
    pub remove_headers: Vec<(String, i32)>,
    /// The names of the symbols that matched, highest score first.
    pub symbols: Vec<(String, f64)>,
}

/// Reads a `/checkv2` reply body.
pub fn parse_reply(body: &[u8]) -> Result<CheckReply, RspamdError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| RspamdError::Malformed(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| RspamdError::Malformed("not a JSON object".into()))?;
    if let Some(err) = obj.get("error").and_then(Value::as_str) {
        return Err(RspamdError::Malformed(format!(
            "rspamd error: {}",
            clean(err)
        )));
    }
    let skipped = obj
        .get("is_skipped")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let action = match obj.get("action").and_then(Value::as_str) {
        Some(a) => RspamdAction::parse(a)
            .ok_or_else(|| RspamdError::Malformed(format!("unknown action {:?}", clean(a))))?,
        None if skipped => RspamdAction::NoAction,
        None => return Err(RspamdError::Malformed("no action".into())),
    };
    let num = |k: &str| obj.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let smtp_message = match obj.get("messages") {
        Some(Value::Object(m)) => m.get("smtp_message").and_then(Value::as_str).map(clean),
        _ => None,
    };
    let subject = obj
        .get("subject")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut add_headers = Vec::new();
    let mut remove_headers = Vec::new();
    if let Some(Value::Object(milter)) = obj.get("milter") {
        if let Some(Value::Object(add)) = milter.get("add_headers") {
            for (name, spec) in add {
                let items: Vec<&Value> = match spec {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for item in items {
                    let (value, order) = match item {
                        Value::String(s) => (s.clone(), None),
                        Value::Object(o) => (
                            o.get("value")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                            o.get("order").and_then(Value::as_u64).map(|n| n as usize),
                        ),
                        _ => continue,
                    };
                    add_headers.push(AddHeader {
                        name: name.clone(),
                        value,
                        order,
                    });
                }
            }
        }
        if let Some(Value::Object(remove)) = milter.get("remove_headers") {
            for (name, index) in remove {
                let i = index.as_i64().unwrap_or(0).clamp(-1000, 1000) as i32;
                remove_headers.push((name.clone(), i));
            }
        }
    }
    let mut symbols: Vec<(String, f64)> = match obj.get("symbols") {
        Some(Value::Object(s)) => s
            .iter()
            .map(|(name, sym)| {
                (
                    clean(name),
                    sym.get("score").and_then(Value::as_f64).unwrap_or(0.0),
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    symbols.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(CheckReply {
        skipped,
        action,
        score: num("score"),
        required_score: num("required_score"),
        smtp_message,
        subject,
        add_headers,
        remove_headers,
        symbols,
    })
}

/// How rspamd's actions are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `add header` and `rewrite subject` also deliver into `Junk`.
    pub quarantine_spam: bool,
    /// The `greylist` action tempfails (off: it is only recorded).
    pub greylist: bool,
    /// Apply rspamd's `milter.add_headers`/`remove_headers`.
    pub milter_headers: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            quarantine_spam: true,
            greylist: true,
            milter_headers: true,
        }
    }
}

/// The verdict for `reply`.
pub fn verdict(reply: &CheckReply, policy: &Policy) -> Verdict {
    // rspamd marks a pre-result (GTUBE, a forced action) as "skipped"
    // too: only a skip without an action means "not scanned".
    if reply.skipped && reply.action == RspamdAction::NoAction {
        return Verdict::pass("skipped");
    }
    let result = format!(
        "{} (score={:.2}/{:.2})",
        reply.action.as_str(),
        reply.score,
        reply.required_score
    );
    let spam = matches!(
        reply.action,
        RspamdAction::AddHeader
            | RspamdAction::RewriteSubject
            | RspamdAction::Reject
            | RspamdAction::SoftReject
    );
    let text = |default: &str| {
        reply
            .smtp_message
            .clone()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let action = match reply.action {
        RspamdAction::Reject => Action::Reject(Reply::new(
            554,
            EnhancedStatus::new(5, 7, 1),
            text("Spam message rejected"),
        )),
        RspamdAction::SoftReject => Action::TempFail(Reply::new(
            451,
            EnhancedStatus::new(4, 7, 1),
            text("Try again later"),
        )),
        RspamdAction::Greylist if policy.greylist => Action::TempFail(Reply::new(
            451,
            EnhancedStatus::new(4, 7, 1),
            text("Try again later"),
        )),
        RspamdAction::AddHeader | RspamdAction::RewriteSubject if policy.quarantine_spam => {
            Action::Quarantine
        }
        _ => Action::Continue,
    };
    let mut v = Verdict::with_action(action, result);
    for name in SPAM_FIELDS {
        v = v.change(Change::RemoveAll { name: name.into() });
    }
    if spam {
        v = v.change(Change::Prepend {
            name: "X-Spam-Flag".into(),
            value: "YES".into(),
        });
    }
    v = v
        .change(Change::Prepend {
            name: "X-Spam-Status".into(),
            value: format!(
                "{}, score={:.2} required={:.2} action=\"{}\"",
                if spam { "Yes" } else { "No" },
                reply.score,
                reply.required_score,
                reply.action.as_str()
            ),
        })
        .change(Change::Prepend {
            name: "X-Spam-Score".into(),
            value: format!("{:.2}", reply.score),
        });
    if reply.action == RspamdAction::RewriteSubject
        && let Some(s) = &reply.subject
    {
        v = v.change(Change::Subject(s.clone()));
    }
    if policy.milter_headers {
        for (name, index) in &reply.remove_headers {
            v = v.change(Change::Remove {
                name: name.clone(),
                index: *index,
            });
        }
        for h in &reply.add_headers {
            v = v.change(match h.order {
                Some(index) => Change::Insert {
                    index,
                    name: h.name.clone(),
                    value: h.value.clone(),
                },
                None => Change::Append {
                    name: h.name.clone(),
                    value: h.value.clone(),
                },
            });
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const GTUBE_REPLY: &str = r#"{"is_skipped":false,"score":1015.5,"required_score":15.0,"action":"reject",
        "thresholds":{"reject":15.0,"add header":6.0},"symbols":{"GTUBE":{"name":"GTUBE","score":1000.0},
        "MISSING_DATE":{"name":"MISSING_DATE","score":1.0}},"messages":{"smtp_message":"Gtube pattern"},
        "message-id":"x@y","time_real":0.01}"#;

    #[test]
    fn head_has_the_envelope() {
        let head = check_head(&CheckRequest {
            host: "127.0.0.1:11333",
            from: "a@b.test",
            rcpts: &["c@d.test", "e@d.test"],
            ip: "192.0.2.1".parse().unwrap(),
            helo: Some("client.test\r\nEvil: 1"),
            hostname: None,
            user: Some("alice@d.test"),
            queue_id: "Q123",
            mta_name: "mx.d.test",
            size: 1234,
            settings_id: None,
        });
        let text = String::from_utf8(head).unwrap();
        assert!(text.starts_with("POST /checkv2 HTTP/1.1\r\nHost: 127.0.0.1:11333\r\n"));
        for want in [
            "From: <a@b.test>\r\n",
            "Rcpt: <c@d.test>\r\nRcpt: <e@d.test>\r\n",
            "Ip: 192.0.2.1\r\n",
            "Helo: client.test  Evil: 1\r\n",
            "Hostname: unknown\r\n",
            "User: alice@d.test\r\n",
            "Queue-Id: Q123\r\n",
            "MTA-Name: mx.d.test\r\n",
            "Content-Length: 1234\r\n",
        ] {
            assert!(text.contains(want), "{want:?} in {text}");
        }
    }

    #[test]
    fn gtube_is_rejected() {
        let r = parse_reply(GTUBE_REPLY.as_bytes()).unwrap();
        assert_eq!(r.action, RspamdAction::Reject);
        assert_eq!(r.symbols[0].0, "GTUBE");
        let v = verdict(&r, &Policy::default());
        let Action::Reject(reply) = &v.action else {
            panic!("{v:?}")
        };
        assert_eq!(reply.code, 554);
        assert_eq!(reply.lines, vec!["Gtube pattern"]);
        assert_eq!(v.result, "reject (score=1015.50/15.00)");
    }

    #[test]
    fn actions_map_to_verdicts() {
        let reply = |action: &str| {
            parse_reply(
                format!(r#"{{"score":7,"required_score":15,"action":"{action}","subject":"*** SPAM *** hi"}}"#)
                    .as_bytes(),
            )
            .unwrap()
        };
        let p = Policy::default();
        assert!(matches!(
            verdict(&reply("soft reject"), &p).action,
            Action::TempFail(ref r) if r.code == 451 && r.lines == ["Try again later"]
        ));
        assert!(matches!(
            verdict(&reply("greylist"), &p).action,
            Action::TempFail(_)
        ));
        let no_grey = Policy {
            greylist: false,
            ..Policy::default()
        };
        assert_eq!(
            verdict(&reply("greylist"), &no_grey).action,
            Action::Continue
        );
        let add = verdict(&reply("add header"), &p);
        assert_eq!(add.action, Action::Quarantine);
        assert!(add.changes.contains(&Change::Prepend {
            name: "X-Spam-Flag".into(),
            value: "YES".into()
        }));
        let tag_only = Policy {
            quarantine_spam: false,
            ..Policy::default()
        };
        assert_eq!(
            verdict(&reply("add header"), &tag_only).action,
            Action::Continue
        );
        let rewrite = verdict(&reply("rewrite subject"), &p);
        assert!(
            rewrite
                .changes
                .contains(&Change::Subject("*** SPAM *** hi".into()))
        );
        let clean = verdict(&reply("no action"), &p);
        assert_eq!(clean.action, Action::Continue);
        assert!(clean.changes.contains(&Change::Prepend {
            name: "X-Spam-Status".into(),
            value: "No, score=7.00 required=15.00 action=\"no action\"".into()
        }));
        assert!(clean.changes.contains(&Change::RemoveAll {
            name: "X-Spam-Flag".into()
        }));
        assert!(
            !clean
                .changes
                .iter()
                .any(|c| matches!(c, Change::Prepend { name, .. } if name == "X-Spam-Flag"))
        );
    }

    #[test]
    fn milter_headers_are_applied() {
        let r = parse_reply(
            br#"{"score":1,"required_score":15,"action":"no action","milter":{
            "add_headers":{"X-Rspamd-Server":"h","X-Spamd-Result":{"value":"default: False","order":0},
            "X-Multi":[{"value":"1","order":1},"2"]},
            "remove_headers":{"X-Spam":1,"X-Old":0}}}"#,
        )
        .unwrap();
        let v = verdict(&r, &Policy::default());
        assert!(v.changes.contains(&Change::Append {
            name: "X-Rspamd-Server".into(),
            value: "h".into()
        }));
        assert!(v.changes.contains(&Change::Insert {
            index: 0,
            name: "X-Spamd-Result".into(),
            value: "default: False".into()
        }));
        assert!(v.changes.contains(&Change::Remove {
            name: "X-Old".into(),
            index: 0
        }));
        assert_eq!(
            v.changes
                .iter()
                .filter(|c| matches!(c, Change::Insert { name, .. } | Change::Append { name, .. } if name == "X-Multi"))
                .count(),
            2
        );
    }

    #[test]
    fn rspamd_34_gtube_is_a_skipped_reject() {
        // rspamd 3.4's real answer to GTUBE.
        let r = parse_reply(br#"{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0}},"messages":{"smtp_message":"Gtube pattern"},"message-id":"undef","time_real":0.000341}"#).unwrap();
        assert!(matches!(
            verdict(&r, &Policy::default()).action,
            Action::Reject(_)
        ));
    }

    #[test]
    fn skipped_and_garbage() {
        let r = parse_reply(br#"{"is_skipped":true}"#).unwrap();
        assert_eq!(verdict(&r, &Policy::default()), Verdict::pass("skipped"));
        for bad in [
            &b"not json"[..],
            b"[]",
            br#"{"score":1}"#,
            br#"{"action":"explode"}"#,
            br#"{"error":"bad request"}"#,
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn learning() {
        let head = String::from_utf8(learn_head("h:11334", Learn::Spam, Some("pw"), 10)).unwrap();
        assert!(head.starts_with("POST /learnspam HTTP/1.1\r\n"));
        assert!(head.contains("Password: pw\r\n"));
        assert_eq!(learn_result(200, br#"{"success":true}"#), Ok(true));
        assert_eq!(learn_result(208, b""), Ok(false));
        assert_eq!(
            learn_result(
                404,
                br#"{"error":"<x> has been already learned as spam, ignore it"}"#
            ),
            Ok(false)
        );
        assert!(matches!(
            learn_result(403, br#"{"error":"Unauthorized"}"#),
            Err(RspamdError::Status { status: 403, .. })
        ));
        assert_eq!(Learn::Ham.path(), "/learnham");
    }
}
