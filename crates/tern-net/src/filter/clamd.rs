//! The clamd client: `INSTREAM` over TCP or a Unix socket.
//!
//! The message (header section, then body from the scratch file) is sent
//! in chunks, never more than [`ClamdSettings::max_size`] (set it to
//! clamd's `StreamMaxLength`): a larger message is not scanned and is
//! recorded as skipped. clamd may close the connection early (its own
//! limit); its reply is still read.

use std::time::Duration;

use tern_filter::clamd::{self as codec, InStream, ReplyReader, ScanResult};
use tern_filter::{Action, Verdict};
use tern_smtp::reply::Reply;
use tern_types::EnhancedStatus;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::net::{self, Endpoint, Io};
use super::{Body, FilterError};

pub use tern_filter::clamd::Infected;

/// How clamd is reached.
#[derive(Debug, Clone)]
pub struct ClamdSettings {
    /// `unix:/run/clamav/clamd.ctl` or `127.0.0.1:3310`.
    pub endpoint: Endpoint,
    /// clamd's `StreamMaxLength`: larger messages are not sent.
    pub max_size: u64,
    /// What an infected message gets.
    pub infected: Infected,
    /// Connecting may take this long.
    pub connect_timeout: Duration,
}

/// A clamd client, shared by every session.
#[derive(Debug)]
pub struct Clamd {
    settings: ClamdSettings,
}

impl Clamd {
    /// A client with `settings`.
    pub fn new(settings: ClamdSettings) -> Clamd {
        Clamd { settings }
    }

    /// Scans the message and says what it means.
    pub(crate) async fn verdict(&self, header: &[u8], body: &Body) -> Result<Verdict, FilterError> {
        let size = header.len() as u64 + body.len;
        if size > self.settings.max_size {
            return Ok(Verdict::pass(format!(
                "skipped (larger than {} bytes)",
                self.settings.max_size
            )));
        }
        Ok(match self.scan(header, body).await? {
            ScanResult::Clean => Verdict::pass("clean"),
            ScanResult::Infected(sig) => {
                let result = format!("infected ({sig})");
                match self.settings.infected {
                    Infected::Reject => Verdict::with_action(
                        Action::Reject(Reply::new(
                            554,
                            EnhancedStatus::new(5, 7, 1),
                            format!("Message rejected: virus found: {sig}"),
                        )),
                        result,
                    ),
                    Infected::Quarantine => Verdict::with_action(Action::Quarantine, result),
                    Infected::Discard => Verdict::with_action(Action::Discard, result),
                }
            }
        })
    }

    /// One `INSTREAM` scan.
    pub(crate) async fn scan(&self, header: &[u8], body: &Body) -> Result<ScanResult, FilterError> {
        let mut io = net::connect(&self.settings.endpoint, self.settings.connect_timeout).await?;
        let sent = send(&mut *io, self.settings.max_size, header, body).await;
        // clamd answers (and may close) before the end when it refuses the
        // stream: read its reply whether or not the sending finished.
        let reply = read_reply(&mut *io).await;
        match (reply, sent) {
            (Ok(Some(text)), _) => {
                codec::parse_reply(&text).map_err(|e| FilterError::Protocol(e.to_string()))
            }
            (Ok(None), Err(e)) | (Err(e), _) => Err(e),
            (Ok(None), Ok(())) => Err(FilterError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        }
    }
}

async fn send(
    io: &mut (dyn Io + '_),
    max: u64,
    header: &[u8],
    body: &Body,
) -> Result<(), FilterError> {
    let mut out = Vec::with_capacity(codec::MAX_CHUNK + 16);
    let mut stream = InStream::start(max, &mut out);
    stream
        .chunk(header, &mut out)
        .map_err(|e| FilterError::Protocol(e.to_string()))?;
    io.write_all(&out).await?;
    let mut buf = vec![0u8; codec::MAX_CHUNK];
    let mut at = 0u64;
    loop {
        let n = body.read_at(at, &mut buf)?;
        if n == 0 {
            break;
        }
        at += n as u64;
        out.clear();
        stream
            .chunk(&buf[..n], &mut out)
            .map_err(|e| FilterError::Protocol(e.to_string()))?;
        io.write_all(&out).await?;
    }
    out.clear();
    stream.finish(&mut out);
    io.write_all(&out).await?;
    io.flush().await?;
    Ok(())
}

async fn read_reply(io: &mut (dyn Io + '_)) -> Result<Option<String>, FilterError> {
    let mut reader = ReplyReader::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = match io.read(&mut buf).await {
            Ok(n) => n,
            // A reset after clamd's reply arrived was handled above.
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(reader.finish());
        }
        if let Some(reply) = reader
            .push(&buf[..n])
            .map_err(|e| FilterError::Protocol(e.to_string()))?
        {
            return Ok(Some(reply));
        }
    }
}
