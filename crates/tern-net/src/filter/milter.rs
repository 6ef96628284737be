//! The milter client: one connection per SMTP session and milter, driven
//! by the sans-IO [`tern_filter::milter::Session`] (Tern's own code: the
//! milter crates on crates.io are GPL-licensed).
//!
//! The connection is opened at connect (or at the first call that needs
//! it) and negotiated; each hook writes its macros and command and reads
//! the milter's reply. At the end of data the header fields, the end of
//! headers, the body in 64 KB chunks and the end of message are sent, and
//! every modification the milter asks for becomes a [`Change`] (header
//! fields, envelope sender and recipients, quarantine) or a new body (in
//! a scratch file). A connection that fails, or a call cut short by the
//! stage's timeout, is dropped: the stage's fail verdict applies, and a
//! new connection is tried at the next `MAIL FROM`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tern_filter::header::HeaderSection;
use tern_filter::milter::{BODY_CHUNK, Decision, Expect, FrameReader, Modification, Session, Step};
use tern_filter::{Action, Change, Verdict};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::net::{self, Endpoint, Io};
use super::{Body, FilterError, Stage};

/// Where a milter listens.
#[derive(Debug, Clone)]
pub struct MilterSpec {
    /// `unix:/path` or `inet:port@host`.
    pub endpoint: Endpoint,
    /// Connecting may take this long (within the stage's timeout).
    pub connect_timeout: Duration,
}

#[derive(Debug)]
struct Conn {
    io: Box<dyn Io>,
    reader: FrameReader,
    session: Session,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(spec: &MilterSpec) -> Result<Conn, FilterError> {
        let io = net::connect(&spec.endpoint, spec.connect_timeout).await?;
        let mut conn = Conn {
            io,
            reader: FrameReader::new(),
            session: Session::new(),
            out: Vec::new(),
            buf: vec![0u8; 16 * 1024],
        };
        conn.session.negotiate(&mut conn.out);
        conn.flush().await?;
        let frame = conn.next_frame().await?;
        conn.session
            .on_negotiation(&frame)
            .map_err(|e| FilterError::Protocol(e.to_string()))?;
        Ok(conn)
    }

    async fn flush(&mut self) -> Result<(), FilterError> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.io.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn next_frame(&mut self) -> Result<tern_filter::milter::Frame, FilterError> {
        loop {
            if let Some(f) = self
                .reader
                .next_frame()
                .map_err(|e| FilterError::Protocol(e.to_string()))?
            {
                return Ok(f);
            }
            let n = self.io.read(&mut self.buf).await?;
            if n == 0 {
                return Err(FilterError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.reader.push(&self.buf[..n]);
        }
    }

    /// Sends what is queued and, when a reply is due, reads it
    /// (modifications go to `changes`).
    async fn exchange(
        &mut self,
        expect: Expect,
        mut changes: Option<&mut Vec<Modification>>,
    ) -> Result<Decision, FilterError> {
        if expect == Expect::NotSent {
            return Ok(Decision::Continue);
        }
        self.flush().await?;
        if expect == Expect::NoReply {
            return Ok(Decision::Continue);
        }
        loop {
            let frame = self.next_frame().await?;
            match self
                .session
                .on_frame(&frame)
                .map_err(|e| FilterError::Protocol(e.to_string()))?
            {
                Step::Wait => {}
                Step::Change(m) => match changes.as_deref_mut() {
                    Some(c) => c.push(m),
                    None => {
                        return Err(FilterError::Protocol(
                            "modification outside the end of message".into(),
                        ));
                    }
                },
                Step::Done(Decision::Failed) => {
                    return Err(FilterError::Protocol(
                        "the milter asked to fail the connection".into(),
                    ));
                }
                Step::Done(d) => return Ok(d),
            }
        }
    }
}

fn pairs<'a>(macros: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    macros.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// What a decision means at a hook.
fn verdict_of(decision: Decision) -> Verdict {
    match decision {
        Decision::Continue | Decision::Skip => Verdict::pass("continue"),
        Decision::Accept => Verdict::pass("accept"),
        Decision::Discard => Verdict::with_action(Action::Discard, "discard"),
        Decision::Reject(r) => {
            let text = format!("reject ({} {})", r.code, r.lines.join(" "));
            Verdict::with_action(Action::Reject(r), text)
        }
        Decision::TempFail(r) => {
            let text = format!("tempfail ({} {})", r.code, r.lines.join(" "));
            Verdict::with_action(Action::TempFail(r), text)
        }
        Decision::Failed => Verdict::pass("failed"),
    }
}

/// The end of message's outcome: the verdict and, if the milter replaced
/// the body, the new one.
#[derive(Debug)]
pub(crate) struct Eom {
    pub(crate) verdict: Verdict,
    pub(crate) body: Option<Body>,
}

/// One milter's connection within an SMTP session.
#[derive(Debug)]
pub(crate) struct MilterSlot {
    spec: Arc<MilterSpec>,
    conn: Option<Conn>,
    /// The connection failed: try a new one at the next MAIL FROM.
    broken: bool,
    /// A call is under way. Still set when the next call starts: the last
    /// one was cut short by the timeout, the connection is out of step.
    busy: bool,
    /// The end of message was sent for the current message.
    eom_sent: bool,
}

impl MilterSlot {
    pub(crate) fn new(spec: Arc<MilterSpec>) -> MilterSlot {
        MilterSlot {
            spec,
            conn: None,
            broken: false,
            busy: false,
            eom_sent: false,
        }
    }

    fn begin(&mut self) {
        if self.busy {
            self.fail();
        }
        self.busy = true;
    }

    /// Drops the connection; a new one is tried at the next MAIL FROM.
    pub(crate) fn fail(&mut self) {
        self.conn = None;
        self.broken = true;
        self.busy = false;
    }

    fn end<T>(&mut self, r: Result<T, FilterError>) -> Result<T, FilterError> {
        self.busy = false;
        if r.is_err() {
            self.fail();
        }
        r
    }

    /// The client connected.
    pub(crate) async fn connect(
        &mut self,
        _stage: &Stage,
        peer: SocketAddr,
        macros: &[(&'static str, String)],
    ) -> Result<Verdict, FilterError> {
        self.begin();
        let r = async {
            let mut conn = Conn::open(&self.spec).await?;
            let expect = conn.session.connect(
                &format!("[{}]", peer.ip()),
                Some(peer),
                &pairs(macros),
                &mut conn.out,
            );
            let d = conn.exchange(expect, None).await;
            self.conn = Some(conn);
            d.map(verdict_of)
        }
        .await;
        self.end(r)
    }

    /// EHLO/HELO.
    pub(crate) async fn helo(
        &mut self,
        _stage: &Stage,
        name: &str,
        macros: &[(&'static str, String)],
    ) -> Result<Verdict, FilterError> {
        self.begin();
        let r = async {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(Verdict::pass("not connected"));
            };
            let expect = conn.session.helo(name, &pairs(macros), &mut conn.out);
            conn.exchange(expect, None).await.map(verdict_of)
        }
        .await;
        self.end(r)
    }

    /// MAIL FROM; a broken connection is replaced first (connect and
    /// HELO replayed).
    pub(crate) async fn mail(
        &mut self,
        _stage: &Stage,
        peer: SocketAddr,
        connect_macros: &[(&'static str, String)],
        helo: &str,
        args: &[String],
        macros: &[(&'static str, String)],
    ) -> Result<Verdict, FilterError> {
        self.begin();
        self.eom_sent = false;
        let r = async {
            if self.conn.is_none() {
                let mut conn = Conn::open(&self.spec).await?;
                let expect = conn.session.connect(
                    &format!("[{}]", peer.ip()),
                    Some(peer),
                    &pairs(connect_macros),
                    &mut conn.out,
                );
                let d = conn.exchange(expect, None).await?;
                if !matches!(d, Decision::Continue | Decision::Accept) {
                    self.conn = Some(conn);
                    return Ok(verdict_of(d));
                }
                if !helo.is_empty() {
                    let expect = conn.session.helo(helo, &[], &mut conn.out);
                    let d = conn.exchange(expect, None).await?;
                    if !matches!(d, Decision::Continue | Decision::Accept) {
                        self.conn = Some(conn);
                        return Ok(verdict_of(d));
                    }
                }
                self.conn = Some(conn);
                self.broken = false;
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(Verdict::pass("not connected"));
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let expect = conn.session.mail(&args, &pairs(macros), &mut conn.out);
            conn.exchange(expect, None).await.map(verdict_of)
        }
        .await;
        self.end(r)
    }

    /// RCPT TO.
    pub(crate) async fn rcpt(
        &mut self,
        _stage: &Stage,
        args: &[String],
        macros: &[(&'static str, String)],
    ) -> Result<Verdict, FilterError> {
        self.begin();
        let r = async {
            let Some(conn) = self.conn.as_mut() else {
                return Err(FilterError::Protocol("not connected".into()));
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let expect = conn.session.rcpt(&args, &pairs(macros), &mut conn.out);
            conn.exchange(expect, None).await.map(verdict_of)
        }
        .await;
        self.end(r)
    }

    /// The message: DATA, the header fields, end of headers, the body,
    /// end of message. `tmp`: where a replaced body is written.
    pub(crate) async fn end_of_message(
        &mut self,
        header: &HeaderSection,
        body: &Body,
        macros: &[(&'static str, String)],
        tmp: &Path,
    ) -> Result<Eom, FilterError> {
        self.begin();
        self.eom_sent = true;
        let r = async {
            let Some(conn) = self.conn.as_mut() else {
                return Err(FilterError::Protocol("not connected".into()));
            };
            let macros = pairs(macros);
            let pass = |d: Decision| Eom {
                verdict: verdict_of(d),
                body: None,
            };
            let expect = conn.session.data(&macros, &mut conn.out);
            let d = conn.exchange(expect, None).await?;
            if !matches!(d, Decision::Continue) {
                return Ok(pass(d));
            }
            let leading = conn.session.wants_leading_space();
            for (name, value) in header.fields(leading) {
                let expect = conn.session.header(name, &value, &mut conn.out);
                let d = conn.exchange(expect, None).await?;
                if !matches!(d, Decision::Continue) {
                    return Ok(pass(d));
                }
            }
            let expect = conn.session.end_of_headers(&macros, &mut conn.out);
            let d = conn.exchange(expect, None).await?;
            if !matches!(d, Decision::Continue) {
                return Ok(pass(d));
            }
            let mut at = 0u64;
            let mut chunk = vec![0u8; BODY_CHUNK];
            while conn.session.wants_body() {
                let n = body.read_at(at, &mut chunk)?;
                if n == 0 {
                    break;
                }
                at += n as u64;
                let expect = conn.session.body(&chunk[..n], &mut conn.out);
                match conn.exchange(expect, None).await? {
                    Decision::Continue | Decision::Skip => {}
                    d => return Ok(pass(d)),
                }
            }
            let mut mods = Vec::new();
            let expect = conn.session.end_of_message(&macros, &mut conn.out);
            let d = conn.exchange(expect, Some(&mut mods)).await?;
            apply(d, mods, tmp)
        }
        .await;
        self.end(r)
    }

    /// The transaction ended before its end of message (or another stage
    /// refused it): an abort goes with the next call.
    pub(crate) fn abort(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.session.abort(&mut conn.out);
        }
        self.eom_sent = false;
    }

    /// The message is over: a milter that got its end of message starts
    /// afresh, any other gets an abort.
    pub(crate) fn message_done(&mut self) {
        if self.eom_sent {
            if let Some(conn) = self.conn.as_mut() {
                conn.session.message_done();
            }
            self.eom_sent = false;
        } else {
            self.abort();
        }
    }

    /// The session ends: quit, without waiting long.
    pub(crate) async fn quit(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.session.quit(&mut conn.out);
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.flush()).await;
        }
    }
}

/// The end of message's decision and modifications as a verdict.
fn apply(decision: Decision, mods: Vec<Modification>, tmp: &Path) -> Result<Eom, FilterError> {
    let mut verdict = verdict_of(decision);
    let mut new_body: Option<std::io::BufWriter<std::fs::File>> = None;
    let mut quarantine = None;
    for m in mods {
        match m {
            Modification::Header(c) => verdict.changes.push(c),
            Modification::ChangeFrom { address, .. } => {
                verdict.changes.push(Change::ChangeFrom { address })
            }
            Modification::AddRcpt { address, .. } => {
                verdict.changes.push(Change::AddRcpt { address })
            }
            Modification::DelRcpt(address) => verdict.changes.push(Change::DelRcpt { address }),
            Modification::Quarantine(reason) => quarantine = Some(reason),
            Modification::ReplaceBody(chunk) => {
                if new_body.is_none() {
                    new_body = Some(std::io::BufWriter::new(tempfile::tempfile_in(tmp)?));
                }
                if let Some(w) = new_body.as_mut() {
                    w.write_all(&chunk)?;
                }
            }
        }
    }
    if let Some(reason) = quarantine
        && verdict.action == Action::Continue
    {
        verdict.action = Action::Quarantine;
        verdict.result = format!(
            "quarantine ({})",
            reason
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
        );
    }
    let body = match new_body {
        Some(w) => {
            let file = w.into_inner().map_err(|e| e.into_error())?;
            let len = file.metadata()?.len();
            Some(Body {
                file: Arc::new(file),
                start: 0,
                len,
            })
        }
        None => None,
    };
    Ok(Eom { verdict, body })
}
