//! clamd's `INSTREAM` command, without I/O.
//!
//! The client sends `zINSTREAM\0`, then the data in chunks, each a 4-byte
//! big-endian length and that many bytes, then a chunk of length 0. clamd
//! answers with one NUL-terminated line: `stream: OK`,
//! `stream: <signature> FOUND` or `<reason> ERROR` — the last one also
//! when the data exceeds its `StreamMaxLength`, after which it closes the
//! connection (possibly before the client has finished sending).
//!
//! [`InStream`] frames the chunks and refuses to send more than the
//! configured maximum (set it to clamd's `StreamMaxLength`), so Tern
//! never streams data clamd would throw away. [`ReplyReader`] collects
//! the answer with a size cap and [`parse_reply`] reads it.

use thiserror::Error;

/// The command that starts a stream (the `z` form: NUL-terminated).
pub const INSTREAM: &[u8] = b"zINSTREAM\0";

/// The command that asks clamd whether it is alive (answer `PONG`).
pub const PING: &[u8] = b"zPING\0";

/// The longest reply read (a signature name is far shorter).
pub const MAX_REPLY: usize = 4096;

/// Chunks are at most this long (clamd's own default chunk size is
/// smaller than any limit it imposes).
pub const MAX_CHUNK: usize = 64 * 1024;

/// clamd's default `StreamMaxLength` (25 MB).
pub const DEFAULT_STREAM_MAX: u64 = 25 * 1024 * 1024;

/// What an infected message gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Infected {
    /// `554 5.7.1`, naming the signature.
    #[default]
    Reject,
    /// Delivered into `Junk`.
    Quarantine,
    /// Accepted and dropped.
    Discard,
}

/// Errors of a scan.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClamdError {
    /// More data than the stream's maximum.
    #[error("the message is larger than the scanner's StreamMaxLength ({max} bytes)")]
    TooLarge {
        /// The maximum.
        max: u64,
    },
    /// clamd's reply is not one of its forms (or too long).
    #[error("unexpected reply from clamd: {0}")]
    Garbage(String),
    /// clamd reported an error (`... ERROR`).
    #[error("clamd error: {0}")]
    Scanner(String),
}

/// The outcome of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanResult {
    /// No signature matched.
    Clean,
    /// Infected; the signature's name.
    Infected(String),
}

/// The framing of one `INSTREAM` command.
#[derive(Debug)]
pub struct InStream {
    sent: u64,
    max: u64,
}

impl InStream {
    /// A stream that will carry at most `max` bytes; writes the command
    /// into `out`.
    pub fn start(max: u64, out: &mut Vec<u8>) -> InStream {
        out.extend_from_slice(INSTREAM);
        InStream { sent: 0, max }
    }

    /// Appends `data` as chunks of at most [`MAX_CHUNK`]. Refused (and
    /// nothing written) when the total would exceed the maximum.
    pub fn chunk(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), ClamdError> {
        let total = self.sent.saturating_add(data.len() as u64);
        if total > self.max {
            return Err(ClamdError::TooLarge { max: self.max });
        }
        for piece in data.chunks(MAX_CHUNK) {
            out.extend_from_slice(&(piece.len() as u32).to_be_bytes());
            out.extend_from_slice(piece);
        }
        self.sent = total;
        Ok(())
    }

    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Appends the terminating zero-length chunk.
    pub fn finish(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0, 0, 0]);
    }
}

/// Collects clamd's reply up to its NUL (or the end of the connection).
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
}

impl ReplyReader {
    /// An empty reader.
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// Appends bytes; returns the complete reply once the NUL (or a line
    /// end) has arrived. Refused when longer than [`MAX_REPLY`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<String>, ClamdError> {
        self.buf.extend_from_slice(bytes);
        if let Some(end) = self.buf.iter().position(|&b| b == 0 || b == b'\n')
            && end <= MAX_REPLY
        {
            return Ok(Some(String::from_utf8_lossy(&self.buf[..end]).into_owned()));
        }
        if self.buf.len() > MAX_REPLY {
            return Err(ClamdError::Garbage("reply too long".into()));
        }
        Ok(None)
    }

    /// The connection ended: whatever arrived is the reply, if anything.
    pub fn finish(self) -> Option<String> {
        (!self.buf.is_empty()).then(|| String::from_utf8_lossy(&self.buf).into_owned())
    }
}

/// Reads a reply to `INSTREAM`.
pub fn parse_reply(reply: &str) -> Result<ScanResult, ClamdError> {
    let r = reply.trim_end_matches(['\0', '\n', '\r']).trim();
    let printable = |s: &str| crate::verdict::clean(s);
    if let Some(rest) = r.strip_suffix(" ERROR") {
        let what = rest.strip_prefix("stream:").unwrap_or(rest).trim();
        return Err(ClamdError::Scanner(printable(what)));
    }
    // `stream: OK`, or with a session id prefix (`1: stream: OK`).
    let body = match r.find("stream:") {
        Some(i) => r[i + "stream:".len()..].trim(),
        None => return Err(ClamdError::Garbage(printable(r))),
    };
    if body == "OK" {
        return Ok(ScanResult::Clean);
    }
    if let Some(sig) = body.strip_suffix(" FOUND") {
        let sig = sig.trim();
        if !sig.is_empty() {
            return Ok(ScanResult::Infected(printable(sig)));
        }
    }
    Err(ClamdError::Garbage(printable(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let mut out = Vec::new();
        let mut s = InStream::start(10, &mut out);
        s.chunk(b"hello", &mut out).unwrap();
        s.chunk(b"", &mut out).unwrap();
        s.chunk(b"abcde", &mut out).unwrap();
        assert_eq!(
            s.chunk(b"x", &mut out),
            Err(ClamdError::TooLarge { max: 10 })
        );
        assert_eq!(s.sent(), 10);
        s.finish(&mut out);
        assert_eq!(
            out,
            b"zINSTREAM\0\0\0\0\x05hello\0\0\0\x05abcde\0\0\0\0".to_vec()
        );
    }

    #[test]
    fn big_data_is_split() {
        let mut out = Vec::new();
        let mut s = InStream::start(u64::MAX, &mut out);
        s.chunk(&vec![7u8; MAX_CHUNK + 3], &mut out).unwrap();
        let first = u32::from_be_bytes(out[10..14].try_into().unwrap()) as usize;
        assert_eq!(first, MAX_CHUNK);
        let second_at = 14 + MAX_CHUNK;
        assert_eq!(&out[second_at..second_at + 4], &[0, 0, 0, 3]);
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply("stream: OK\0"), Ok(ScanResult::Clean));
        assert_eq!(parse_reply("1: stream: OK"), Ok(ScanResult::Clean));
        assert_eq!(
            parse_reply("stream: Eicar-Signature FOUND\0"),
            Ok(ScanResult::Infected("Eicar-Signature".into()))
        );
        assert_eq!(
            parse_reply("stream: Win.Test.EICAR_HDB-1 FOUND"),
            Ok(ScanResult::Infected("Win.Test.EICAR_HDB-1".into()))
        );
        assert_eq!(
            parse_reply("INSTREAM size limit exceeded. ERROR"),
            Err(ClamdError::Scanner("INSTREAM size limit exceeded.".into()))
        );
        for garbage in ["", "HTTP/1.1 400", "stream: FOUND", "stream: maybe"] {
            assert!(
                matches!(parse_reply(garbage), Err(ClamdError::Garbage(_))),
                "{garbage:?}"
            );
        }
        assert_eq!(
            parse_reply("stream: \u{1b}[31mX FOUND"),
            Ok(ScanResult::Infected("?[31mX".into()))
        );
    }

    #[test]
    fn reply_reader() {
        let mut r = ReplyReader::new();
        assert_eq!(r.push(b"stream: "), Ok(None));
        assert_eq!(r.push(b"OK\0trailing"), Ok(Some("stream: OK".into())));
        let mut r = ReplyReader::new();
        assert!(r.push(&vec![b'a'; MAX_REPLY + 1]).is_err());
        let mut r = ReplyReader::new();
        r.push(b"stream: OK").unwrap();
        assert_eq!(r.finish().as_deref(), Some("stream: OK"));
        assert_eq!(ReplyReader::new().finish(), None);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,200}") {
            let _ = parse_reply(&s);
        }
    }
}
