//! The email-authentication stage of the filter pipeline
//! ([`crate::filter`]), and the scratch file every end-of-data stage reads.
//!
//! When a message starts, `begin` decides whether it needs work at the
//! end of data: the inbound checks on the MX role (SPF, DKIM, DMARC, ARC,
//! iprev; see `tern-mailauth`), DKIM signing for authenticated users and
//! trusted networks, or a scanner of the pipeline (rspamd, a milter,
//! clamd). If so, the client's bytes go to an unlinked scratch file in
//! the spool's `tmp/` instead of the spool file (the driver has already
//! removed forged `Authentication-Results:` from the header section). At
//! the end of data the pipeline (`crate::filter::eom`) reads back only
//! the header section (`open`); the body is streamed from the scratch
//! file through the body hashes (`verify`), the scanners and the signer
//! (`sign`), on blocking threads for the hashing, and then copied into
//! the spool file after our `Received:`: an ARC set when the message is
//! forwarded through an alias to another domain (RFC 8617), our
//! `Authentication-Results:`, the scanners' fields, any
//! `DKIM-Signature:` fields, then the message. Only then is the message
//! committed, so the verdict comes before the `250` and the stored
//! message carries the results.
//!
//! DKIM signatures are made only for mail from authenticated users and
//! trusted networks, with the keys of the author domain the driver
//! checked: never for mail that merely passes through an alias (that gets
//! an ARC seal), so no unauthenticated client can obtain our signature.
//! At most [`MAX_CONCURRENT_CHECKS`] messages are checked at once.
//!
//! This module never sends a reply itself (it returns one), never holds a
//! whole message in memory, never logs key material or message content,
//! and always logs its verdict with the queue id.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

pub use tern_mailauth::SignerHandle;
use tern_mailauth::body::{BodyHashPlan, BodyHashes};
use tern_mailauth::verify::CHECK_DEADLINE;
use tern_mailauth::{Disposition, Inbound, Signer, Verdict, Verifier};
use tern_queue::SpoolError;
use tern_queue::store::IncomingBody as _;
use tern_queue_pg::AnyIncoming;
use tern_smtp::reply::Reply;
use tern_types::EnhancedStatus;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::Context;
use crate::conn::escape_for_log;

/// Messages whose checks or signing run at the same time; the others wait
/// (within [`CHECK_DEADLINE`]) for a turn.
pub const MAX_CONCURRENT_CHECKS: usize = 64;

/// The email-authentication services, shared by every session. The default
/// does nothing (no checks, no signing).
#[derive(Debug)]
pub struct MailAuth {
    /// Inbound checks on MX listeners; `None`: off.
    pub verifier: Option<Arc<Verifier>>,
    /// DKIM keys for outgoing mail (none loaded: no signing); replaced
    /// whole on reload.
    pub signer: SignerHandle,
    /// Turns for checking or signing a message ([`MAX_CONCURRENT_CHECKS`]).
    pub turns: Arc<Semaphore>,
}

impl Default for MailAuth {
    fn default() -> Self {
        MailAuth {
            verifier: None,
            signer: SignerHandle::default(),
            turns: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
        }
    }
}

/// What the message needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Work {
    pub(crate) verify: bool,
    pub(crate) sign: bool,
}

/// The client's bytes, held back in a scratch file until the end of data.
#[derive(Debug)]
pub(crate) struct Capture {
    work: Work,
    file: BufWriter<File>,
    error: Option<io::Error>,
}

impl Capture {
    /// Whether the message will be DKIM-signed (authenticated user or
    /// trusted network, and keys loaded).
    pub(crate) fn signs(&self) -> bool {
        self.work.sign
    }

    /// Appends message bytes; the first error is kept for [`finish`].
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.file.write_all(bytes)
        {
            self.error = Some(e);
        }
    }
}

/// Whether the message from this session needs work at the end of data
/// (authentication checks, signing, or `scan`: a scanner of the pipeline
/// reads it), and if so a scratch file to hold it. `authenticated`: AUTH
/// succeeded; `trusted`: the client is in `trusted_networks`; `mx`: the
/// MX role.
pub(crate) fn begin(
    ctx: &Context,
    mx: bool,
    authenticated: bool,
    trusted: bool,
    scan: bool,
) -> Result<Option<Capture>, SpoolError> {
    let work = Work {
        verify: mx && !authenticated && ctx.mailauth.verifier.is_some(),
        sign: (authenticated || trusted) && !ctx.mailauth.signer.current().is_empty(),
    };
    if !work.verify && !work.sign && !scan {
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

/// The facts of the transaction the checks need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub(crate) queue_id: &'a str,
    pub(crate) client_ip: IpAddr,
    pub(crate) helo: &'a str,
    pub(crate) mail_from: &'a str,
    /// The local domain of a recipient address that forwards to another
    /// domain (an alias with remote targets), if any: ARC-sealed for.
    pub(crate) forwarded_for: Option<&'a str>,
    /// The domain of the author address the driver read (and, on
    /// submission, checked): the only domain that may sign.
    pub(crate) sign_domain: Option<&'a str>,
    /// The client is in `trusted_networks`.
    pub(crate) trusted: bool,
}

pub(crate) fn scratch_failure(queue_id: &str, e: &io::Error) -> Reply {
    warn!(queue_id = %queue_id, error = %e, "scratch file for authentication checks failed");
    Reply::new(
        451,
        EnhancedStatus::new(4, 3, 0),
        "Local error while processing the message; try again later",
    )
}

/// The largest header section read back from the scratch file (the
/// driver refuses larger ones before; this bounds a corrupt file).
const MAX_HEADER_READ: usize = crate::submission::MAX_HEADER_SECTION + 64 * 1024;

/// Reads a file from an offset on, without moving a shared cursor (so
/// several readers can work on one file, each on its own thread).
#[derive(Debug)]
pub(crate) struct ReadFrom {
    pub(crate) file: Arc<File>,
    pub(crate) pos: u64,
}

impl Read for ReadFrom {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The header section of the scratch file (with the empty line that ends
/// it, or all of a message that has none) and where the body starts.
fn read_header(file: &File) -> io::Result<(Vec<u8>, u64)> {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = file.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            let len = buf.len() as u64;
            return Ok((buf, len));
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        let end = if buf.starts_with(b"\r\n") {
            Some(2)
        } else {
            memchr_crlfcrlf(&buf[scan_from..]).map(|p| scan_from + p + 4)
        };
        if let Some(end) = end {
            buf.truncate(end);
            return Ok((buf, end as u64));
        }
        if buf.len() > MAX_HEADER_READ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "header section larger than the limit",
            ));
        }
    }
}

fn memchr_crlfcrlf(hay: &[u8]) -> Option<usize> {
    hay.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Runs `job` on a blocking thread (CPU work: hashing, RSA) and waits.
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, io::Error> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

/// The checks, bounded by [`CHECK_DEADLINE`] (waiting for a turn
/// included). Body hashes are streamed from `file` and every check, DNS
/// waits included, runs on a blocking thread so that RSA verification and
/// header canonicalization never hold an async worker.
async fn run_checks(
    ctx: &Context,
    verifier: &Arc<Verifier>,
    signer: &Arc<Signer>,
    facts: &Facts<'_>,
    header: &Arc<Vec<u8>>,
    body: (Arc<File>, u64),
) -> Result<Verdict, &'static str> {
    let work = async {
        let _turn = ctx.mailauth.turns.acquire().await.map_err(|_| "no turn")?;
        let seal_domain = facts
            .forwarded_for
            .filter(|d| signer.sealing_key(d).is_some())
            .map(str::to_owned);
        let plan = BodyHashPlan::of(header, seal_domain.is_some());
        let (file, pos) = body;
        let hashes: BodyHashes = blocking(move || plan.hash(ReadFrom { file, pos }))
            .await
            .and_then(|r| r)
            .map_err(|_| "body unreadable")?;
        let verifier = Arc::clone(verifier);
        let signer = Arc::clone(signer);
        let header = Arc::clone(header);
        let client_ip = facts.client_ip;
        let helo = facts.helo.to_owned();
        let mail_from = facts.mail_from.to_owned();
        let runtime = tokio::runtime::Handle::current();
        blocking(move || {
            let seal_with = seal_domain.as_deref().and_then(|d| signer.sealing_key(d));
            runtime.block_on(verifier.verify_with_body(
                Inbound {
                    client_ip,
                    helo: &helo,
                    mail_from: &mail_from,
                    message: &header,
                    seal_with,
                },
                &hashes,
            ))
        })
        .await
        .map_err(|_| "checks failed")
    };
    match tokio::time::timeout(CHECK_DEADLINE, work).await {
        Ok(r) => r,
        Err(_) => Err("checks timed out"),
    }
}

/// The captured message, read back at the end of data: its header
/// section in memory (bounded), its body in the scratch file.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) work: Work,
    pub(crate) file: Arc<File>,
    pub(crate) header: Arc<Vec<u8>>,
    pub(crate) body_start: u64,
}

impl Captured {
    /// The body's length in bytes.
    pub(crate) fn body_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len().saturating_sub(self.body_start))
    }
}

/// Flushes the capture and reads its header section back. `Err` is the
/// reply to send.
pub(crate) fn open(capture: Capture, queue_id: &str) -> Result<Captured, Reply> {
    let Capture { work, file, error } = capture;
    if let Some(e) = error {
        return Err(scratch_failure(queue_id, &e));
    }
    let file = Arc::new(
        file.into_inner()
            .map_err(|e| e.into_error())
            .map_err(|e| scratch_failure(queue_id, &e))?,
    );
    let (header, body_start) = read_header(&file).map_err(|e| scratch_failure(queue_id, &e))?;
    Ok(Captured {
        work,
        file,
        header: Arc::new(header),
        body_start,
    })
}

/// What the checks said: the fields to put on top of the message (an ARC
/// set, our `Authentication-Results:`) and the pipeline verdict.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) prefix: String,
    pub(crate) verdict: tern_filter::Verdict,
}

/// The inbound checks, when the message needs them (MX role, not
/// authenticated, checks on). Logs its one line with the queue id.
pub(crate) async fn verify(
    ctx: &Context,
    signer: &Arc<Signer>,
    facts: &Facts<'_>,
    captured: &Captured,
) -> Option<Checked> {
    if !captured.work.verify {
        return None;
    }
    let verifier = ctx.mailauth.verifier.as_ref()?;
    let verdict = if verifier.skips(facts.client_ip) {
        verifier.exempt()
    } else {
        match run_checks(
            ctx,
            verifier,
            signer,
            facts,
            &captured.header,
            (Arc::clone(&captured.file), captured.body_start),
        )
        .await
        {
            Ok(v) => v,
            Err(why) => Verdict {
                header: format!(
                    "Authentication-Results: {}; none ({why})\r\n",
                    verifier.authserv_id()
                ),
                disposition: Disposition::Accept,
                summary: why.into(),
                arc_seal: String::new(),
                unauthenticated_own_domain: None,
            },
        }
    };
    let mut disposition = verdict.disposition.clone();
    if let Some(domain) = &verdict.unauthenticated_own_domain
        && verifier.policy().reject_own_domain_unauthenticated
        && !facts.trusted
    {
        disposition = Disposition::Reject {
            reason: format!(
                "Message claims to be from {domain}, one of our own domains, but nothing \
                 authenticates it; our users send through the submission port"
            ),
        };
    }
    let action = match &disposition {
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
        own_domain_unauthenticated = verdict.unauthenticated_own_domain.is_some(),
        action,
        "authentication checks"
    );
    crate::metrics::metrics().mailauth_summary(&verdict.summary);
    let summary = verdict.summary.clone();
    let filter_verdict = match disposition {
        Disposition::Accept => tern_filter::Verdict::pass(summary),
        Disposition::Quarantine { .. } => {
            tern_filter::Verdict::with_action(tern_filter::Action::Quarantine, summary)
        }
        Disposition::Reject { reason } => tern_filter::Verdict::with_action(
            tern_filter::Action::Reject(Reply::new(550, EnhancedStatus::new(5, 7, 1), reason)),
            summary,
        ),
        Disposition::TempFail { reason } => tern_filter::Verdict::with_action(
            tern_filter::Action::TempFail(Reply::new(451, EnhancedStatus::new(4, 7, 0), reason)),
            summary,
        ),
    };
    // The ARC set (if we forward) above our results.
    let mut prefix = verdict.arc_seal;
    prefix.push_str(&verdict.header);
    Some(Checked {
        prefix,
        verdict: filter_verdict,
    })
}

/// DKIM signatures of the final message (header section `header`, body
/// read from `body`): only our users' (and trusted networks') mail, only
/// for the author domain the driver read; forwarded mail is sealed, not
/// signed. Empty when nothing is signed.
pub(crate) async fn sign(
    ctx: &Context,
    signer: &Arc<Signer>,
    facts: &Facts<'_>,
    work: Work,
    header: Arc<Vec<u8>>,
    body: ReadFrom,
) -> String {
    if !work.sign {
        return String::new();
    }
    let Some(domain) = facts.sign_domain else {
        info!(queue_id = %facts.queue_id, "not DKIM-signed: the header section names no single author");
        return String::new();
    };
    if signer.keys(domain).is_empty() {
        return String::new();
    }
    let keys = signer.keys(domain).len();
    let job_signer = Arc::clone(signer);
    let job_domain = domain.to_owned();
    let turn = ctx.mailauth.turns.acquire().await;
    let signed = blocking(move || job_signer.sign_stream(&job_domain, &header, body)).await;
    drop(turn);
    match signed {
        Ok(Ok(signatures)) => {
            info!(queue_id = %facts.queue_id, domain = %domain, signatures = keys, "DKIM signed");
            signatures
        }
        // Unsigned mail is still mail: deliver it and say why.
        Ok(Err(e)) => {
            warn!(queue_id = %facts.queue_id, domain = %domain, error = %e, "DKIM signing failed; sending unsigned");
            String::new()
        }
        Err(e) => {
            warn!(queue_id = %facts.queue_id, domain = %domain, error = %e, "DKIM signing failed; sending unsigned");
            String::new()
        }
    }
}

/// Copies the body from `body` into `message`, in pieces: never whole in
/// memory.
pub(crate) fn copy_body(
    mut body: ReadFrom,
    message: &mut AnyIncoming,
    queue_id: &str,
) -> Result<(), Reply> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(scratch_failure(queue_id, &e)),
        };
        if let Err(e) = message.write(&buf[..n]) {
            warn!(queue_id = %queue_id, error = %e, "queue write failed");
            return Err(crate::conn::store_failure_reply(&e));
        }
    }
}
