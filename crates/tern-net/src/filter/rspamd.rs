//! The rspamd client: `/checkv2` on the normal (or proxy) worker for every
//! message, `/learnspam` and `/learnham` on the controller.
//!
//! Connections to the scanner are kept open between messages (HTTP
//! keep-alive; at most [`MAX_IDLE`] idle ones); a kept connection that
//! fails before rspamd has said anything is replaced by a new one once.
//! The message is streamed from the scratch file; rspamd's reply is read
//! with a cap ([`tern_filter::rspamd::MAX_REPLY`]).

use std::sync::Mutex;
use std::time::Duration;

use tern_filter::http::ResponseParser;
use tern_filter::rspamd::{self as codec, CheckReply, CheckRequest, Learn, Policy};
use tern_filter::{Verdict, http};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::net::{self, Endpoint, Io};
use super::{Body, FilterError};

/// Idle connections kept to the scanner.
pub const MAX_IDLE: usize = 16;

/// How rspamd is reached and what its answers mean.
#[derive(Debug, Clone)]
pub struct RspamdSettings {
    /// The normal or proxy worker (`127.0.0.1:11333`).
    pub endpoint: Endpoint,
    /// The controller worker, for learning (`127.0.0.1:11334`).
    pub controller: Option<Endpoint>,
    /// The controller's password (`Password:`), if it asks for one.
    pub password: Option<String>,
    /// Messages larger than this are not sent (recorded as skipped).
    pub max_size: u64,
    /// `Settings-ID:` to send, if any.
    pub settings_id: Option<String>,
    /// How actions map to verdicts.
    pub policy: Policy,
    /// Connecting may take this long (within the stage's timeout).
    pub connect_timeout: Duration,
}

/// An rspamd client, shared by every session.
#[derive(Debug)]
pub struct Rspamd {
    settings: RspamdSettings,
    idle: Mutex<Vec<Box<dyn Io>>>,
}

/// The transaction's facts for a check.
#[derive(Debug)]
pub(crate) struct Facts<'a> {
    pub(crate) from: &'a str,
    pub(crate) rcpts: &'a [&'a str],
    pub(crate) ip: std::net::IpAddr,
    pub(crate) helo: Option<&'a str>,
    pub(crate) user: Option<&'a str>,
    pub(crate) queue_id: &'a str,
    pub(crate) mta_name: &'a str,
}

impl Rspamd {
    /// A client with `settings`.
    pub fn new(settings: RspamdSettings) -> Rspamd {
        Rspamd {
            settings,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &RspamdSettings {
        &self.settings
    }

    fn take_idle(&self) -> Option<Box<dyn Io>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_idle(&self, io: Box<dyn Io>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(io);
        }
    }

    /// Checks the message (header section `header`, then `body`) and maps
    /// rspamd's answer to a verdict.
    pub(crate) async fn verdict(
        &self,
        facts: &Facts<'_>,
        header: &[u8],
        body: &Body,
    ) -> Result<Verdict, FilterError> {
        let size = header.len() as u64 + body.len;
        if size > self.settings.max_size {
            return Ok(Verdict::pass(format!(
                "skipped (larger than {} bytes)",
                self.settings.max_size
            )));
        }
        let reply = self.check(facts, header, body).await?;
        Ok(codec::verdict(&reply, &self.settings.policy))
    }

    /// One `/checkv2` call.
    pub(crate) async fn check(
        &self,
        facts: &Facts<'_>,
        header: &[u8],
        body: &Body,
    ) -> Result<CheckReply, FilterError> {
        let host = self.settings.endpoint.host_header();
        let head = codec::check_head(&CheckRequest {
            host: &host,
            from: facts.from,
            rcpts: facts.rcpts,
            ip: facts.ip,
            helo: facts.helo,
            hostname: None,
            user: facts.user,
            queue_id: facts.queue_id,
            mta_name: facts.mta_name,
            size: header.len() as u64 + body.len,
            settings_id: self.settings.settings_id.as_deref(),
        });
        // A kept connection may have been closed by rspamd meanwhile: one
        // more try on a new connection when nothing came back.
        if let Some(mut io) = self.take_idle() {
            match exchange(&mut *io, &head, header, Some(body), codec::MAX_REPLY).await {
                Ok((response, _)) => return self.finish(io, response),
                Err((e, false)) => {
                    tracing::debug!(error = %e, "kept rspamd connection failed; reconnecting")
                }
                Err((e, true)) => return Err(e),
            }
        }
        let mut io = net::connect(&self.settings.endpoint, self.settings.connect_timeout).await?;
        match exchange(&mut *io, &head, header, Some(body), codec::MAX_REPLY).await {
            Ok((response, _)) => self.finish(io, response),
            Err((e, _)) => Err(e),
        }
    }

    fn finish(&self, io: Box<dyn Io>, response: http::Response) -> Result<CheckReply, FilterError> {
        if response.keep_alive {
            self.put_idle(io);
        }
        if response.status != 200 {
            return Err(FilterError::Protocol(format!(
                "rspamd answered HTTP {}",
                response.status
            )));
        }
        codec::parse_reply(&response.body).map_err(|e| FilterError::Protocol(e.to_string()))
    }

    /// Teaches rspamd's controller that the message in `file` is spam or
    /// ham. `Ok(false)`: it knew already.
    pub async fn learn(
        &self,
        kind: Learn,
        file: std::fs::File,
        timeout: Duration,
    ) -> Result<bool, FilterError> {
        let endpoint = self
            .settings
            .controller
            .as_ref()
            .ok_or_else(|| FilterError::Protocol("no rspamd controller configured".into()))?;
        let len = file.metadata()?.len();
        let body = Body {
            file: std::sync::Arc::new(file),
            start: 0,
            len,
        };
        let head = codec::learn_head(
            &endpoint.host_header(),
            kind,
            self.settings.password.as_deref(),
            len,
        );
        let work = async {
            let mut io = net::connect(endpoint, timeout).await?;
            let (response, _) = exchange(&mut *io, &head, &[], Some(&body), 64 * 1024)
                .await
                .map_err(|(e, _)| e)?;
            codec::learn_result(response.status, &response.body)
                .map_err(|e| FilterError::Protocol(e.to_string()))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(FilterError::Timeout),
        }
    }
}

/// Writes a request and reads its response. The error says whether the
/// server had answered anything (a kept connection that fails before it
/// answers is retried on a new one).
async fn exchange(
    io: &mut (dyn Io + '_),
    head: &[u8],
    header: &[u8],
    body: Option<&Body>,
    max_body: usize,
) -> Result<(http::Response, ()), (FilterError, bool)> {
    let send = async {
        io.write_all(head).await?;
        io.write_all(header).await?;
        if let Some(b) = body {
            b.write_to(io).await?;
        }
        io.flush().await?;
        Ok::<(), FilterError>(())
    };
    send.await.map_err(|e| (e, false))?;
    let mut parser = ResponseParser::new(max_body);
    let mut buf = vec![0u8; 16 * 1024];
    let mut answered = false;
    loop {
        let n = io.read(&mut buf).await.map_err(|e| (e.into(), answered))?;
        if n == 0 {
            if !answered {
                return Err((
                    FilterError::Io(std::io::ErrorKind::UnexpectedEof.into()),
                    false,
                ));
            }
            return parser
                .finish()
                .map(|r| (r, ()))
                .map_err(|e| (FilterError::Protocol(e.to_string()), true));
        }
        answered = true;
        match parser.push(&buf[..n]) {
            Ok(Some(r)) => return Ok((r, ())),
            Ok(None) => {}
            Err(e) => return Err((FilterError::Protocol(e.to_string()), true)),
        }
    }
}
