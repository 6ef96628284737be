//! The email-authentication hook of the SMTP driver ([`crate::conn`]).
//!
//! While a message streams in, `begin` decides whether it needs
//! authentication work: the inbound checks on the MX role (SPF, DKIM,
//! DMARC, ARC, iprev; see `tern-mailauth`), DKIM signing for authenticated
//! users and trusted networks. If so, the client's bytes go to an unlinked
//! scratch file in the spool's `tmp/` instead of the spool file. At the end
//! of data, `finish` reads them back (the checks need the whole message,
//! bounded by the message size limit), and writes into the spool file,
//! after our `Received:`: an ARC set when the message is forwarded through
//! an alias to another domain (RFC 8617), our `Authentication-Results:`,
//! any `DKIM-Signature:` fields, then the message with every
//! `Authentication-Results:` that claims our authserv-id removed from its
//! header section. Only then is the message committed, so the verdict
//! comes before the `250` and the stored message carries the results.
//!
//! This module never sends a reply itself (it returns one), never logs key
//! material or message content, and always logs its verdict with the
//! queue id.

use std::fs::File;
use std::io::{self, BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use tern_mailauth::headers::{body_offset, strip_our_auth_results};
use tern_mailauth::verify::CHECK_DEADLINE;
use tern_mailauth::{Disposition, Inbound, Signer, Verdict, Verifier};
use tern_queue::{IncomingMessage, SpoolError};
use tern_smtp::reply::Reply;
use tern_types::EnhancedStatus;
use tracing::{info, warn};

use crate::Context;
use crate::conn::escape_for_log;

/// The email-authentication services, shared by every session. The default
/// does nothing (no checks, no signing).
#[derive(Debug, Default)]
pub struct MailAuth {
    /// Inbound checks on MX listeners; `None`: off.
    pub verifier: Option<Arc<Verifier>>,
    /// DKIM keys for outgoing mail (none loaded: no signing); replaced
    /// whole on reload.
    pub signer: SignerHandle,
}

/// The DKIM key set in force, shared by every session and swapped whole
/// when the keys are reloaded (SIGHUP): a message is signed with the set
/// that was current when its end of data was processed, never with half
/// of an old set and half of a new one.
#[derive(Debug, Clone, Default)]
pub struct SignerHandle(Arc<RwLock<Arc<Signer>>>);

impl SignerHandle {
    /// A handle on `signer`.
    pub fn new(signer: Signer) -> SignerHandle {
        SignerHandle(Arc::new(RwLock::new(Arc::new(signer))))
    }

    /// The key set in force now.
    pub fn current(&self) -> Arc<Signer> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `signer` in force for every message processed from now on.
    pub fn replace(&self, signer: Signer) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(signer);
    }
}

/// What the message needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Work {
    verify: bool,
    sign: bool,
}

/// The client's bytes, held back in a scratch file until the end of data.
#[derive(Debug)]
pub(crate) struct Capture {
    work: Work,
    file: BufWriter<File>,
    error: Option<io::Error>,
}

impl Capture {
    /// Appends message bytes; the first error is kept for [`finish`].
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.file.write_all(bytes)
        {
            self.error = Some(e);
        }
    }
}

/// Whether the message from this session needs authentication work, and
/// if so a scratch file to hold it. `authenticated`: AUTH succeeded;
/// `trusted`: the client is in `trusted_networks`; `mx`: the MX role.
pub(crate) fn begin(
    ctx: &Context,
    mx: bool,
    authenticated: bool,
    trusted: bool,
) -> Result<Option<Capture>, SpoolError> {
    let work = Work {
        verify: mx && !authenticated && ctx.mailauth.verifier.is_some(),
        sign: (authenticated || trusted) && !ctx.mailauth.signer.current().is_empty(),
    };
    if !work.verify && !work.sign {
        return Ok(None);
    }
    let dir = ctx.spool.path().join("tmp");
    let file = tempfile::tempfile_in(&dir).map_err(|e| SpoolError::Io {
        op: "create scratch file in",
        path: dir.clone(),
        source: e,
    })?;
    Ok(Some(Capture {
        work,
        file: BufWriter::new(file),
        error: None,
    }))
}

/// What [`finish`] decided, when the message may be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Deliver into the recipients' `Junk` folders.
    pub(crate) quarantine: bool,
}

/// The facts of the transaction the checks need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub(crate) queue_id: &'a str,
    pub(crate) client_ip: IpAddr,
    pub(crate) helo: &'a str,
    pub(crate) mail_from: &'a str,
    /// The local domain of a recipient address that forwards to another
    /// domain (an alias with remote targets), if any.
    pub(crate) forwarded_for: Option<&'a str>,
}

fn scratch_failure(queue_id: &str, e: &io::Error) -> Reply {
    warn!(queue_id = %queue_id, error = %e, "scratch file for authentication checks failed");
    Reply::new(
        451,
        EnhancedStatus::new(4, 3, 0),
        "Local error while processing the message; try again later",
    )
}

/// Runs the checks and signing on the captured message and writes it,
/// with our header fields, into `message`. `Err` is the reply to send
/// instead of committing.
pub(crate) async fn finish(
    ctx: &Context,
    capture: Capture,
    facts: Facts<'_>,
    message: &mut IncomingMessage,
) -> Result<Outcome, Reply> {
    let Capture { work, file, error } = capture;
    if let Some(e) = error {
        return Err(scratch_failure(facts.queue_id, &e));
    }
    let data = file
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(0))?;
            let mut data = Vec::new();
            f.read_to_end(&mut data)?;
            Ok(data)
        })
        .map_err(|e| scratch_failure(facts.queue_id, &e))?;

    // One key set for the whole message, even if a reload happens meanwhile.
    let signer = ctx.mailauth.signer.current();
    let mut prefix = String::new();
    let mut outcome = Outcome { quarantine: false };
    let mut stored_header = None;
    if work.verify
        && let Some(verifier) = &ctx.mailauth.verifier
    {
        let verdict = if verifier.skips(facts.client_ip) {
            verifier.exempt()
        } else {
            let seal_with = facts
                .forwarded_for
                .and_then(|domain| signer.sealing_key(domain));
            let checks = verifier.verify(Inbound {
                client_ip: facts.client_ip,
                helo: facts.helo,
                mail_from: facts.mail_from,
                message: &data,
                seal_with,
            });
            match tokio::time::timeout(CHECK_DEADLINE, checks).await {
                Ok(v) => v,
                Err(_) => Verdict {
                    header: format!(
                        "Authentication-Results: {}; none (checks timed out)\r\n",
                        verifier.authserv_id()
                    ),
                    disposition: Disposition::Accept,
                    summary: "checks timed out".into(),
                    arc_seal: String::new(),
                },
            }
        };
        let (header, removed) =
            strip_our_auth_results(&data[..body_offset(&data)], verifier.authserv_id());
        let action = match &verdict.disposition {
            Disposition::Accept => "accept",
            Disposition::Quarantine { .. } => "quarantine",
            Disposition::Reject { .. } => "reject",
            Disposition::TempFail { .. } => "tempfail",
        };
        info!(
            queue_id = %facts.queue_id,
            client = %facts.client_ip,
            from = %escape_for_log(facts.mail_from),
            results = %escape_for_log(&verdict.summary),
            forged_results_removed = removed,
            action,
            "authentication checks"
        );
        match verdict.disposition {
            Disposition::Accept => {}
            Disposition::Quarantine { .. } => outcome.quarantine = true,
            Disposition::Reject { reason } => {
                return Err(Reply::new(550, EnhancedStatus::new(5, 7, 1), reason));
            }
            Disposition::TempFail { reason } => {
                return Err(Reply::new(451, EnhancedStatus::new(4, 7, 0), reason));
            }
        }
        // The ARC set (if we forward) above our results.
        prefix.push_str(&verdict.arc_seal);
        prefix.push_str(&verdict.header);
        stored_header = Some(header);
    }

    // The message as it will be stored (forged results removed).
    let split = body_offset(&data);
    let stored: Vec<u8> = match stored_header {
        Some(h) => [h.as_slice(), &data[split..]].concat(),
        None => data,
    };

    // DKIM: the author's domain for our users' mail; the forwarding
    // domain for mail an alias sends on to another domain (not aligned with
    // the author, but it vouches for the hop, beside the ARC set).
    {
        let mut domains: Vec<String> = Vec::new();
        if work.sign
            && let Some(domain) = tern_mailauth::sign::author_domain(&stored)
        {
            domains.push(domain);
        }
        if work.verify
            && let Some(domain) = facts.forwarded_for
            && !domains.iter().any(|d| d == domain)
        {
            domains.push(domain.to_owned());
        }
        for domain in domains {
            let keys = signer.keys(&domain).len();
            if keys == 0 {
                continue;
            }
            match signer.sign(&domain, &stored) {
                Ok(signatures) => {
                    info!(queue_id = %facts.queue_id, domain = %domain, signatures = keys, "DKIM signed");
                    prefix.push_str(&signatures);
                }
                // Unsigned mail is still mail: deliver it and say why.
                Err(e) => {
                    warn!(queue_id = %facts.queue_id, domain = %domain, error = %e, "DKIM signing failed; sending unsigned");
                }
            }
        }
    }

    message
        .write(prefix.as_bytes())
        .and_then(|()| message.write(&stored))
        .map_err(|e| {
            warn!(queue_id = %facts.queue_id, error = %e, "spool write failed");
            crate::conn::spool_failure_reply(&e)
        })?;
    Ok(outcome)
}
