//! The end of data: the captured message goes through every content stage
//! in order, then into the spool file with the stages' fields on top.
//!
//! Order of the fields written above the message, under our `Received:`:
//! an ARC set (when forwarding), our `Authentication-Results:`, an
//! `X-Tern-Filter:` field with every scanner's result (when a scanner
//! ran), the scanners' own fields (`X-Spam-Status:`, …), DKIM signatures
//! (made last, over the final header section and body), then the
//! message's header section with the changes the stages asked for, then
//! the body (or the body a milter put in its place).

use std::sync::Arc;
use std::time::Instant;

use tern_filter::header::{HeaderSection, field_bytes};
use tern_filter::{Action, Change, Hook, Outcome};
use tern_queue::store::IncomingBody as _;
use tern_queue_pg::AnyIncoming;
use tern_smtp::reply::Reply;
use tracing::{info, warn};

use super::{Body, SessionFilters, StageKind, bounded, within};
use crate::Context;
use crate::conn::escape_for_log;
use crate::mailauth::{self, Capture, Facts, ReadFrom};
use crate::server::Role;

/// The field every scanned message gets (and that senders' copies of are
/// removed from).
pub(crate) const RESULTS_FIELD: &str = "X-Tern-Filter";

/// What the transaction says about the message.
#[derive(Debug)]
pub(crate) struct MessageInfo<'a> {
    pub(crate) facts: Facts<'a>,
    pub(crate) rcpts: &'a [&'a str],
    pub(crate) auth_user: Option<&'a str>,
    pub(crate) role: Role,
}

/// The message may be committed: how.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    /// Deliver into the local recipients' `Junk` folders.
    pub(crate) quarantine: bool,
    /// Answer 250 and drop it.
    pub(crate) discard: bool,
    /// Envelope changes (`ChangeFrom`, `AddRcpt`, `DelRcpt`) to apply.
    pub(crate) envelope: Vec<Change>,
}

/// Runs the end-of-data stages on the captured message and writes it,
/// with the stages' fields, into `message`. `Err` is the reply to send
/// instead of committing.
pub(crate) async fn end_of_data(
    ctx: &Context,
    mut filters: Option<&mut SessionFilters>,
    capture: Capture,
    info: MessageInfo<'_>,
    message: &mut AnyIncoming,
) -> Result<Accepted, Reply> {
    let queue_id = info.facts.queue_id;
    let captured = mailauth::open(capture, queue_id)?;
    let body_len = captured
        .body_len()
        .map_err(|e| mailauth::scratch_failure(queue_id, &e))?;
    let mut body = Body {
        file: Arc::clone(&captured.file),
        start: captured.body_start,
        len: body_len,
    };
    // One key set for the whole message, even if a reload happens meanwhile.
    let signer = ctx.mailauth.signer.current();
    let mut outcome: Outcome = filters
        .as_deref()
        .map(SessionFilters::results_so_far)
        .unwrap_or_default();
    let mut auth_prefix = String::new();
    let mut section: Option<HeaderSection> = None;
    let mut prepends: Vec<(String, String)> = Vec::new();
    let mut envelope = Vec::new();
    let mut scanned = false;
    let data_macros = vec![("i", queue_id.to_owned())];
    let tmp = ctx.spool.path().join("tmp");

    for (index, stage) in ctx.filters.stages().iter().enumerate() {
        if outcome.stopped().is_some() {
            break;
        }
        let is_auth = matches!(stage.kind, StageKind::MailAuth);
        if !is_auth && !stage.roles.includes(info.role) {
            continue;
        }
        let started = Instant::now();
        // The header section as the stages before left it.
        let current = |section: &Option<HeaderSection>| match section {
            Some(s) if s.is_changed() => std::borrow::Cow::Owned(s.to_bytes()),
            _ => std::borrow::Cow::Borrowed(captured.header.as_slice()),
        };
        let verdict = match &stage.kind {
            StageKind::MailAuth => {
                match mailauth::verify(ctx, &signer, &info.facts, &captured).await {
                    Some(checked) => {
                        auth_prefix = checked.prefix;
                        checked.verdict
                    }
                    None => continue,
                }
            }
            StageKind::Rspamd(r) => {
                scanned = true;
                let header = current(&section);
                let facts = super::rspamd::Facts {
                    from: info.facts.mail_from,
                    rcpts: info.rcpts,
                    ip: info.facts.client_ip,
                    helo: Some(info.facts.helo).filter(|h| !h.is_empty()),
                    user: info.auth_user,
                    queue_id,
                    mta_name: &ctx.hostname,
                };
                bounded(stage, queue_id, r.verdict(&facts, &header, &body)).await
            }
            StageKind::Clamd(c) => {
                scanned = true;
                let header = current(&section);
                bounded(stage, queue_id, c.verdict(&header, &body)).await
            }
            StageKind::Milter(_) => {
                scanned = true;
                let Some(slot) = filters.as_deref_mut().and_then(|f| f.milter(index)) else {
                    continue;
                };
                let header = section.get_or_insert_with(|| HeaderSection::parse(&captured.header));
                match within(
                    stage,
                    queue_id,
                    slot.end_of_message(header, &body, &data_macros, &tmp),
                )
                .await
                {
                    Ok(eom) => {
                        if let Some(b) = eom.body {
                            body = b;
                        }
                        eom.verdict
                    }
                    Err(v) => {
                        slot.fail();
                        v
                    }
                }
            }
            StageKind::Dnsbl(_) | StageKind::Greylist(_) => continue,
        };
        for change in &verdict.changes {
            match change {
                Change::Prepend { name, value } => prepends.push((name.clone(), value.clone())),
                Change::ChangeFrom { .. } | Change::AddRcpt { .. } | Change::DelRcpt { .. } => {
                    envelope.push(change.clone())
                }
                other => {
                    section
                        .get_or_insert_with(|| HeaderSection::parse(&captured.header))
                        .apply(other);
                }
            }
        }
        super::record(
            &mut outcome,
            &stage.name,
            Hook::EndOfData,
            verdict,
            started.elapsed(),
        );
    }
    let discard = filters.as_deref().is_some_and(SessionFilters::discards);
    let log = |action: &str| {
        if filters_present(&outcome) {
            info!(
                queue_id = %queue_id,
                client = %info.facts.client_ip,
                from = %escape_for_log(info.facts.mail_from),
                action,
                stages = %escape_for_log(&outcome.timed_summary()),
                "filter verdicts"
            );
        }
    };
    match outcome.stopped() {
        Some(Action::Reject(r) | Action::TempFail(r)) => {
            log(if r.code >= 500 { "reject" } else { "tempfail" });
            return Err(r.clone());
        }
        Some(Action::Discard) => {
            log("discard");
            return Ok(Accepted {
                discard: true,
                ..Accepted::default()
            });
        }
        _ if discard => {
            log("discard");
            return Ok(Accepted {
                discard: true,
                ..Accepted::default()
            });
        }
        _ => {}
    }
    log(outcome.action().as_str());

    // Our results field: ours only, whatever the sender wrote.
    if scanned || filters_present(&outcome) {
        let summary = results_without_auth(&outcome);
        if !summary.is_empty() {
            let s = section.get_or_insert_with(|| HeaderSection::parse(&captured.header));
            s.apply(&Change::RemoveAll {
                name: RESULTS_FIELD.into(),
            });
            prepends.insert(
                0,
                (RESULTS_FIELD.into(), format!("{}; {summary}", ctx.hostname)),
            );
        }
    }
    let header: Arc<Vec<u8>> = match &section {
        Some(s) if s.is_changed() => Arc::new(s.to_bytes()),
        _ => Arc::clone(&captured.header),
    };
    let signatures = mailauth::sign(
        ctx,
        &signer,
        &info.facts,
        captured.work,
        Arc::clone(&header),
        ReadFrom {
            file: Arc::clone(&body.file),
            pos: body.start,
        },
    )
    .await;

    let mut top = auth_prefix.into_bytes();
    for (name, value) in &prepends {
        top.extend_from_slice(&field_bytes(name, value));
    }
    top.extend_from_slice(signatures.as_bytes());
    let written = message.write(&top).and_then(|()| message.write(&header));
    if let Err(e) = written {
        warn!(queue_id = %queue_id, error = %e, "queue write failed");
        return Err(crate::conn::store_failure_reply(&e));
    }
    mailauth::copy_body(
        ReadFrom {
            file: Arc::clone(&body.file),
            pos: body.start,
        },
        message,
        queue_id,
    )?;
    Ok(Accepted {
        quarantine: outcome.quarantine,
        discard: false,
        envelope,
    })
}

/// Whether a stage other than the authentication checks has a result.
fn filters_present(outcome: &Outcome) -> bool {
    outcome.results.iter().any(|r| r.stage != "mail_auth")
}

/// `stage=result; …` of every stage but the authentication checks (whose
/// results are in `Authentication-Results:`).
fn results_without_auth(outcome: &Outcome) -> String {
    let mut o = Outcome::default();
    o.results = outcome
        .results
        .iter()
        .filter(|r| r.stage != "mail_auth")
        .cloned()
        .collect();
    o.summary()
}
