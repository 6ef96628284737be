//! The filter pipeline at run time: the clients of the scanners (rspamd,
//! milters, clamd, DNS blocklists, greylisting) and the calls the SMTP
//! driver ([`crate::conn`]) makes at each hook of a transaction.
//!
//! The pipeline is a list of [`Stage`]s in configuration order, built by
//! [`Pipeline::from_config`] from the `[[filter]]` tables that
//! `tern-filter` reads and validates ([`tern_filter::config`]). Each runs
//! on the roles it is configured for (MX, submission) and listens to some
//! [`Hook`]s; the driver asks only hooks some stage listens to, and a
//! session on a role no stage runs on carries no filter state at all
//! (`SessionFilters::new` returns `None`): with no scanner configured
//! nothing changes on the hot path.
//!
//! - At **connect** and **HELO** (DNS blocklists at connect, milters), a
//!   refusal is remembered and given at `MAIL FROM`, as Postfix does with
//!   `smtpd_delay_reject` (authenticated sessions are exempt from the
//!   blocklist's refusal).
//! - At **MAIL** and **RCPT** (milters, greylisting, blocklists at RCPT) a
//!   refusal is the reply to that command (at RCPT: that recipient only).
//! - At the **end of data** (`eom`) the message, spooled to a scratch
//!   file, is streamed to every content stage in order (the
//!   email-authentication checks, rspamd, milters' header/body/end of
//!   message, clamd), each seeing the header changes of the ones before.
//!
//! Every stage call is bounded by the stage's `timeout`; a dead, slow or
//! garbage-speaking scanner gives its [`FailMode`] verdict: open (accept,
//! and say so in `X-Tern-Filter:`) or closed (`451 4.7.1`). Nothing here
//! holds a whole message in memory, and nothing logs message content.

mod build;
pub mod clamd;
pub mod dnsbl;
pub(crate) mod eom;
pub mod greylist;
pub mod milter;
pub mod net;
pub mod rspamd;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_filter::{Action, FailMode, Hook, Hooks, Outcome, Verdict};
use tern_smtp::command::{MailParams, RcptParams};
use tern_smtp::reply::Reply;
use tracing::{debug, info};

use crate::Context;
use crate::conn::escape_for_log;
use crate::server::Role;
use crate::tls::TlsInfo;

pub use build::{BuildEnv, BuildError};
pub use net::{Endpoint, EndpointError};

/// Which listener roles a stage runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Inbound MX listeners.
    pub mx: bool,
    /// Submission listeners (587, 465).
    pub submission: bool,
}

impl Roles {
    /// Whether `role` is among them.
    pub fn includes(self, role: Role) -> bool {
        if role.is_submission() {
            self.submission
        } else {
            self.mx
        }
    }
}

/// What a stage is.
#[derive(Debug, Clone)]
pub enum StageKind {
    /// The SPF/DKIM/DMARC/ARC checks and DKIM signing ([`crate::mailauth`]).
    MailAuth,
    /// rspamd over HTTP.
    Rspamd(Arc<rspamd::Rspamd>),
    /// A milter.
    Milter(Arc<milter::MilterSpec>),
    /// clamd over `INSTREAM`.
    Clamd(Arc<clamd::Clamd>),
    /// DNS blocklists and allowlists.
    Dnsbl(Arc<dnsbl::Dnsbl>),
    /// Greylisting.
    Greylist(Arc<greylist::GreylistService>),
}

/// One stage of the pipeline.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Its name in logs and `X-Tern-Filter:` (`rspamd`, `milter.clamav`).
    pub name: String,
    /// The roles it runs on.
    pub roles: Roles,
    /// The longest one call may take (connecting included).
    pub timeout: Duration,
    /// What a failure means.
    pub fail: FailMode,
    /// What it is.
    pub kind: StageKind,
}

impl Stage {
    /// The hooks it listens to.
    pub fn hooks(&self) -> Hooks {
        match &self.kind {
            StageKind::MailAuth | StageKind::Rspamd(_) | StageKind::Clamd(_) => {
                Hooks::of(&[Hook::EndOfData])
            }
            StageKind::Milter(_) => Hooks::of(&Hook::ALL),
            StageKind::Dnsbl(d) => Hooks::of(&[d.hook]),
            StageKind::Greylist(_) => Hooks::of(&[Hook::Rcpt]),
        }
    }
}

/// The configured pipeline, shared by every session.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
    /// Hooks some stage other than the email-authentication checks
    /// listens to, on MX and on submission listeners.
    hooks_mx: Hooks,
    hooks_submission: Hooks,
}

impl Pipeline {
    /// A pipeline of `stages` in order. Without a
    /// [`StageKind::MailAuth`] stage the checks run first.
    pub fn new(mut stages: Vec<Stage>) -> Pipeline {
        if !stages.iter().any(|s| matches!(s.kind, StageKind::MailAuth)) {
            stages.insert(
                0,
                Stage {
                    name: "mail_auth".into(),
                    roles: Roles {
                        mx: true,
                        submission: true,
                    },
                    timeout: tern_mailauth::verify::CHECK_DEADLINE,
                    fail: FailMode::Open,
                    kind: StageKind::MailAuth,
                },
            );
        }
        let mut hooks_mx = Hooks::NONE;
        let mut hooks_submission = Hooks::NONE;
        for s in stages
            .iter()
            .filter(|s| !matches!(s.kind, StageKind::MailAuth))
        {
            if s.roles.mx {
                hooks_mx = hooks_mx.union(s.hooks());
            }
            if s.roles.submission {
                hooks_submission = hooks_submission.union(s.hooks());
            }
        }
        Pipeline {
            stages,
            hooks_mx,
            hooks_submission,
        }
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Hooks any scanner listens to on `role` (the email-authentication
    /// checks not counted).
    pub fn hooks(&self, role: Role) -> Hooks {
        if role.is_submission() {
            self.hooks_submission
        } else {
            self.hooks_mx
        }
    }

    /// Whether a scanner reads messages on `role` (so the message must be
    /// captured for the end of data).
    pub fn reads_messages(&self, role: Role) -> bool {
        self.hooks(role).contains(Hook::EndOfData)
    }

    /// Whether a stage may change the envelope (milters): such messages
    /// are queued, never delivered at intake.
    pub fn changes_envelope(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s.kind, StageKind::Milter(_)))
    }
}

/// Why a scanner call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum FilterError {
    /// Connecting, reading or writing failed.
    Io(std::io::Error),
    /// The scanner broke its protocol.
    Protocol(String),
    /// The call took longer than the stage's timeout.
    Timeout,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                f.write_str("connection closed by the scanner")
            }
            FilterError::Io(e) => write!(f, "{}", e.kind()),
            FilterError::Protocol(why) => write!(f, "protocol error: {why}"),
            FilterError::Timeout => f.write_str("timeout"),
        }
    }
}

impl From<std::io::Error> for FilterError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::TimedOut {
            FilterError::Timeout
        } else {
            FilterError::Io(e)
        }
    }
}

/// Runs `call` within the stage's timeout; a failure or timeout becomes
/// the stage's fail verdict (and is logged).
pub(crate) async fn bounded<F>(stage: &Stage, queue_id: &str, call: F) -> Verdict
where
    F: std::future::Future<Output = Result<Verdict, FilterError>>,
{
    within(stage, queue_id, call).await.unwrap_or_else(|v| v)
}

/// Runs `call` within the stage's timeout; `Err` is the stage's fail
/// verdict for a failure or timeout (logged).
pub(crate) async fn within<T, F>(stage: &Stage, queue_id: &str, call: F) -> Result<T, Verdict>
where
    F: std::future::Future<Output = Result<T, FilterError>>,
{
    let result = match tokio::time::timeout(stage.timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(FilterError::Timeout),
    };
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            let why = e.to_string();
            crate::metrics::metrics().filter_failure(&stage.name);
            tracing::warn!(
                queue_id = %queue_id,
                stage = %stage.name,
                error = %why,
                fail = ?stage.fail,
                "filter stage failed"
            );
            Err(stage.fail.verdict(&stage.name, &why))
        }
    }
}

/// A message body in a scratch file, from `start` on.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    pub(crate) file: Arc<std::fs::File>,
    pub(crate) start: u64,
    pub(crate) len: u64,
}

impl Body {
    /// Reads body bytes at offset `at` (0: the body's first byte) into
    /// `buf`; 0 at the end.
    pub(crate) fn read_at(&self, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        if at >= self.len {
            return Ok(0);
        }
        let want = buf.len().min((self.len - at) as usize);
        self.file.read_at(&mut buf[..want], self.start + at)
    }

    /// Writes the body to `io`.
    pub(crate) async fn write_to(&self, io: &mut (dyn net::Io + '_)) -> Result<(), FilterError> {
        use std::os::unix::fs::FileExt as _;
        use tokio::io::AsyncWriteExt as _;
        let mut pos = self.start;
        let end = self.start + self.len;
        let mut buf = vec![0u8; 64 * 1024];
        while pos < end {
            let want = buf.len().min((end - pos) as usize);
            let n = self.file.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            io.write_all(&buf[..n]).await?;
            pos += n as u64;
        }
        Ok(())
    }
}

/// Records `verdict` in `outcome` and counts it (`tern_filter_verdicts_total`,
/// `tern_filter_stage_seconds`).
pub(crate) fn record(
    outcome: &mut Outcome,
    stage: &str,
    hook: Hook,
    verdict: Verdict,
    elapsed: Duration,
) {
    crate::metrics::metrics().filter_verdict(
        stage,
        hook.as_str(),
        verdict.action.as_str(),
        elapsed,
    );
    outcome.record(stage, hook, verdict, elapsed);
}

/// A refusal decided at connect or HELO, given at `MAIL FROM`.
#[derive(Debug, Clone)]
struct Refusal {
    reply: Reply,
    /// An authenticated session is not refused (blocklists).
    exempt_if_authenticated: bool,
}

/// Per-session filter state: milter connections, what connect and HELO
/// decided, this transaction's results.
#[derive(Debug)]
pub(crate) struct SessionFilters {
    pipeline: Arc<Pipeline>,
    role: Role,
    hooks: Hooks,
    peer: SocketAddr,
    our_host: String,
    helo: Option<String>,
    tls: Option<String>,
    /// One per stage (`None` for stages that are not milters).
    milters: Vec<Option<milter::MilterSlot>>,
    refusal: Option<Refusal>,
    /// A DNS allowlist listed the client: greylisting lets it pass.
    allowlisted: bool,
    /// The blocklist verdict, once asked (at connect, or the first RCPT).
    dnsbl_done: bool,
    /// Results of connect and HELO, for every message's log line.
    session_results: Outcome,
    /// Results of this transaction's MAIL and RCPT.
    tx_results: Outcome,
    in_tx: bool,
    /// A milter said "discard" at MAIL or RCPT: the message is accepted
    /// and dropped.
    discard: bool,
}

impl SessionFilters {
    /// Filter state for a session on `role`, or `None` when no scanner
    /// runs on it.
    pub(crate) fn new(ctx: &Context, role: Role, peer: SocketAddr) -> Option<Box<SessionFilters>> {
        let pipeline = &ctx.filters;
        let hooks = pipeline.hooks(role);
        if hooks.is_empty() {
            return None;
        }
        let milters = pipeline
            .stages()
            .iter()
            .map(|s| match &s.kind {
                StageKind::Milter(spec) if s.roles.includes(role) => {
                    Some(milter::MilterSlot::new(Arc::clone(spec)))
                }
                _ => None,
            })
            .collect();
        Some(Box::new(SessionFilters {
            pipeline: Arc::clone(pipeline),
            role,
            hooks,
            peer,
            our_host: ctx.hostname.clone(),
            helo: None,
            tls: None,
            milters,
            refusal: None,
            allowlisted: false,
            dnsbl_done: false,
            session_results: Outcome::default(),
            tx_results: Outcome::default(),
            in_tx: false,
            discard: false,
        }))
    }

    fn stages(&self) -> impl Iterator<Item = (usize, Stage)> + '_ {
        let role = self.role;
        self.pipeline
            .stages()
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.roles.includes(role))
            .map(|(i, s)| (i, s.clone()))
    }

    /// The connection macros milters get.
    fn connect_macros(&self) -> Vec<(&'static str, String)> {
        let ip = self.peer.ip().to_string();
        vec![
            ("j", self.our_host.clone()),
            ("{daemon_name}", "tern".into()),
            ("v", concat!("Tern ", env!("CARGO_PKG_VERSION")).into()),
            ("_", format!("[{ip}] [{ip}]")),
            ("{client_addr}", ip.clone()),
            ("{client_port}", self.peer.port().to_string()),
            ("{client_name}", format!("[{ip}]")),
            ("{client_ptr}", format!("[{ip}]")),
            ("{client_resolve}", "FAIL".into()),
        ]
    }

    /// The client connected: blocklists (at connect; not for `trusted`
    /// clients) and milters.
    pub(crate) async fn connect(&mut self, trusted: bool) {
        if !self.hooks.contains(Hook::Connect) {
            return;
        }
        let macros = self.connect_macros();
        let stages: Vec<(usize, Stage)> = self.stages().collect();
        for (i, stage) in stages {
            let started = Instant::now();
            let (verdict, exempt) = match &stage.kind {
                StageKind::Dnsbl(d) if d.hook == Hook::Connect && !trusted => {
                    self.dnsbl_done = true;
                    match within(&stage, "", d.verdict(self.peer.ip(), stage.fail)).await {
                        Ok((v, allowlisted)) => {
                            self.allowlisted |= allowlisted;
                            (v, true)
                        }
                        Err(v) => (v, true),
                    }
                }
                StageKind::Milter(_) => {
                    let peer = self.peer;
                    let Some(slot) = self.milters[i].as_mut() else {
                        continue;
                    };
                    let v = bounded(&stage, "", slot.connect(&stage, peer, &macros)).await;
                    // A milter's "go on" is no news; its end of message
                    // result is what the message's log line shows.
                    if v.action == Action::Continue && !v.result.starts_with("temperror") {
                        continue;
                    }
                    (v, false)
                }
                _ => continue,
            };
            self.remember(&stage, Hook::Connect, verdict, exempt, started);
        }
    }

    /// A verdict at connect or HELO: recorded; a refusal remembered.
    fn remember(
        &mut self,
        stage: &Stage,
        hook: Hook,
        verdict: Verdict,
        exempt: bool,
        started: Instant,
    ) {
        if let Action::Reject(r) | Action::TempFail(r) = &verdict.action
            && self.refusal.is_none()
        {
            info!(
                client = %self.peer.ip(),
                stage = %stage.name,
                hook = %hook,
                code = r.code,
                result = %escape_for_log(&verdict.result),
                "client refused by a filter; refusing its transactions"
            );
            self.refusal = Some(Refusal {
                reply: r.clone(),
                exempt_if_authenticated: exempt,
            });
        }
        record(
            &mut self.session_results,
            &stage.name,
            hook,
            verdict,
            started.elapsed(),
        );
    }

    /// EHLO/HELO was accepted.
    pub(crate) async fn helo(&mut self, name: &str, tls: Option<&TlsInfo>) {
        self.helo = Some(name.to_owned());
        self.tls = tls.map(ToString::to_string);
        if !self.hooks.contains(Hook::Helo) {
            return;
        }
        let mut macros: Vec<(&'static str, String)> = Vec::new();
        if let Some(t) = tls {
            macros.push(("{tls_version}", t.version.clone()));
            macros.push(("{cipher}", t.cipher.clone()));
        }
        let stages: Vec<(usize, Stage)> = self.stages().collect();
        for (i, stage) in stages {
            let StageKind::Milter(_) = stage.kind else {
                continue;
            };
            let Some(slot) = self.milters[i].as_mut() else {
                continue;
            };
            let started = Instant::now();
            let v = bounded(&stage, "", slot.helo(&stage, name, &macros)).await;
            if v.action != Action::Continue {
                self.remember(&stage, Hook::Helo, v, false, started);
            }
        }
    }

    /// MAIL FROM: the refusal from connect/HELO, else the milters.
    pub(crate) async fn mail(
        &mut self,
        from: &str,
        params: &MailParams,
        auth_user: Option<&str>,
    ) -> Option<Reply> {
        self.tx_results = Outcome::default();
        self.in_tx = true;
        self.discard = false;
        if let Some(r) = &self.refusal
            && !(r.exempt_if_authenticated && auth_user.is_some())
        {
            return Some(r.reply.clone());
        }
        if !self.hooks.contains(Hook::Mail) {
            return None;
        }
        let mut args = vec![format!("<{from}>")];
        if let Some(size) = params.size {
            args.push(format!("SIZE={size}"));
        }
        if let Some(body) = params.body {
            args.push(format!("BODY={}", body.as_str()));
        }
        if params.smtputf8 {
            args.push("SMTPUTF8".into());
        }
        let (host, _) = split_address(from);
        let mut macros: Vec<(&'static str, String)> = vec![
            ("{mail_addr}", from.to_owned()),
            ("{mail_host}", host.to_owned()),
            ("{mail_mailer}", "smtp".into()),
        ];
        if let Some(u) = auth_user {
            macros.push(("{auth_authen}", u.to_owned()));
            macros.push(("{auth_type}", "PLAIN".into()));
        }
        let stages: Vec<(usize, Stage)> = self.stages().collect();
        let helo = self.helo.clone().unwrap_or_default();
        let connect_macros = self.connect_macros();
        for (i, stage) in stages {
            let StageKind::Milter(_) = stage.kind else {
                continue;
            };
            let Some(slot) = self.milters[i].as_mut() else {
                continue;
            };
            let started = Instant::now();
            let peer = self.peer;
            let v = bounded(
                &stage,
                "",
                slot.mail(&stage, peer, &connect_macros, &helo, &args, &macros),
            )
            .await;
            if v.action == Action::Discard {
                self.discard = true;
            }
            let stop = match &v.action {
                Action::Reject(r) | Action::TempFail(r) => Some(r.clone()),
                _ => None,
            };
            if v.action != Action::Continue || v.result.starts_with("temperror") {
                record(
                    &mut self.tx_results,
                    &stage.name,
                    Hook::Mail,
                    v,
                    started.elapsed(),
                );
            }
            if stop.is_some() {
                self.abort();
                return stop;
            }
        }
        None
    }

    /// RCPT TO (the recipient already passed the relay and directory
    /// checks): blocklists at RCPT, greylisting, milters. `exempt`: the
    /// client is trusted or authenticated (no blocklist, no greylisting).
    pub(crate) async fn rcpt(
        &mut self,
        from: &str,
        to: &str,
        params: &RcptParams,
        exempt: bool,
    ) -> Option<Reply> {
        if !self.hooks.contains(Hook::Rcpt) {
            return None;
        }
        let (host, _) = split_address(to);
        let macros: Vec<(&'static str, String)> = vec![
            ("{rcpt_addr}", to.to_owned()),
            ("{rcpt_host}", host.to_owned()),
            ("{rcpt_mailer}", "local".into()),
        ];
        let mut args = vec![format!("<{to}>")];
        if let Some(n) = params.notify {
            args.push(format!("NOTIFY={n}"));
        }
        let stages: Vec<(usize, Stage)> = self.stages().collect();
        for (i, stage) in stages {
            let started = Instant::now();
            let verdict = match &stage.kind {
                StageKind::Dnsbl(d) if d.hook == Hook::Rcpt && !exempt => {
                    if self.dnsbl_done {
                        continue;
                    }
                    self.dnsbl_done = true;
                    let v = match within(&stage, "", d.verdict(self.peer.ip(), stage.fail)).await {
                        Ok((v, allowlisted)) => {
                            self.allowlisted |= allowlisted;
                            v
                        }
                        Err(v) => v,
                    };
                    if let Action::Reject(r) | Action::TempFail(r) = &v.action {
                        // The whole session: later recipients too.
                        self.refusal = Some(Refusal {
                            reply: r.clone(),
                            exempt_if_authenticated: true,
                        });
                    }
                    v
                }
                StageKind::Dnsbl(_) => {
                    if let Some(r) = self.refusal.as_ref().filter(|_| !exempt) {
                        return Some(r.reply.clone());
                    }
                    continue;
                }
                StageKind::Greylist(g) if !exempt && !self.allowlisted => {
                    let ip = self.peer.ip();
                    bounded(&stage, "", async { g.verdict(ip, from, to) }).await
                }
                StageKind::Milter(_) => {
                    let Some(slot) = self.milters[i].as_mut() else {
                        continue;
                    };
                    let v = bounded(&stage, "", slot.rcpt(&stage, &args, &macros)).await;
                    if v.action == Action::Discard {
                        self.discard = true;
                    }
                    v
                }
                _ => continue,
            };
            let stop = match &verdict.action {
                Action::Reject(r) | Action::TempFail(r) => Some(r.clone()),
                _ => None,
            };
            debug!(stage = %stage.name, to = %escape_for_log(to), result = %escape_for_log(&verdict.result), "recipient checked");
            let quiet = matches!(stage.kind, StageKind::Milter(_))
                && verdict.action == Action::Continue
                && !verdict.result.starts_with("temperror");
            if !quiet {
                record(
                    &mut self.tx_results,
                    &stage.name,
                    Hook::Rcpt,
                    verdict,
                    started.elapsed(),
                );
            }
            if stop.is_some() {
                return stop;
            }
        }
        None
    }

    /// The transaction ended without an end of data (RSET, a refused or
    /// aborted message): milters get an abort (sent with the next call).
    pub(crate) fn abort(&mut self) {
        if !std::mem::take(&mut self.in_tx) {
            return;
        }
        for slot in self.milters.iter_mut().flatten() {
            slot.abort();
        }
    }

    /// Whether a milter asked for the message to be discarded.
    pub(crate) fn discards(&self) -> bool {
        self.discard
    }

    /// The message was handled at the end of data (or refused there).
    pub(crate) fn message_done(&mut self) {
        self.in_tx = false;
        for slot in self.milters.iter_mut().flatten() {
            slot.message_done();
        }
    }

    /// The session ends: milters get a quit.
    pub(crate) async fn quit(&mut self) {
        for slot in self.milters.iter_mut().flatten() {
            slot.quit().await;
        }
    }

    /// Results of connect, HELO, MAIL and RCPT, for the message's log line.
    pub(crate) fn results_so_far(&self) -> Outcome {
        let mut o = Outcome::default();
        for r in self
            .session_results
            .results
            .iter()
            .chain(&self.tx_results.results)
        {
            o.results.push(r.clone());
        }
        o
    }

    /// The milter slot of stage `index`, if it is a milter on this role.
    pub(crate) fn milter(&mut self, index: usize) -> Option<&mut milter::MilterSlot> {
        self.milters.get_mut(index).and_then(Option::as_mut)
    }
}

/// The domain of an address (and the local part).
fn split_address(address: &str) -> (&str, &str) {
    match address.rsplit_once('@') {
        Some((local, domain)) => (domain, local),
        None => ("", address),
    }
}
