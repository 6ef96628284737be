//! A small HTTP/1.1 client codec, enough for rspamd's API, without I/O.
//!
//! [`request_head`] writes a request line and header fields (the body is
//! the caller's to stream; its length must be known). [`ResponseParser`]
//! reads a response with `Content-Length`, `Transfer-Encoding: chunked`
//! or a body that runs to the end of the connection, with caps on the
//! head and the body: more than the cap is an error, never a bigger
//! buffer. Header values from callers are sanitised (no CR, LF or NUL can
//! reach the wire), so a client-controlled HELO name or address can never
//! add a header field of its own.

use thiserror::Error;

/// The longest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// Errors reading a response.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// Not an HTTP/1.x response.
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
    /// The head or the body is larger than allowed.
    #[error("HTTP response too large")]
    TooLarge,
    /// The connection ended before the response did.
    #[error("connection closed before the end of the HTTP response")]
    Truncated,
}

/// A request head's fields.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `POST`, `GET`.
    pub method: &'a str,
    /// The path (`/checkv2`).
    pub path: &'a str,
    /// The `Host:` value.
    pub host: &'a str,
    /// Extra fields; values are sanitised.
    pub headers: Vec<(&'a str, String)>,
    /// The body's length (`Content-Length:`).
    pub content_length: u64,
    /// Ask the server to keep the connection open.
    pub keep_alive: bool,
}

/// `value` with CR, LF, NUL and other control bytes replaced by spaces.
pub fn header_value(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Writes the request line and header fields, ending with the empty line.
pub fn request_head(req: &Request<'_>) -> Vec<u8> {
    let mut s = String::with_capacity(256);
    s.push_str(req.method);
    s.push(' ');
    s.push_str(&header_value(req.path).replace(' ', "%20"));
    s.push_str(" HTTP/1.1\r\nHost: ");
    s.push_str(&header_value(req.host));
    s.push_str("\r\n");
    for (name, value) in &req.headers {
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != ':')
            .collect();
        s.push_str(&name);
        s.push_str(": ");
        s.push_str(&header_value(value));
        s.push_str("\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n", req.content_length));
    s.push_str(if req.keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    s.into_bytes()
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Whether the server will keep the connection open.
    pub keep_alive: bool,
}

impl Response {
    /// The first field called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
enum BodyKind {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
enum State {
    Head,
    Body {
        status: u16,
        headers: Vec<(String, String)>,
        kind: BodyKind,
        keep_alive: bool,
    },
    Done,
}

/// Reads one response from bytes as they arrive.
#[derive(Debug)]
pub struct ResponseParser {
    buf: Vec<u8>,
    max_body: usize,
    state: State,
}

impl ResponseParser {
    /// A parser refusing bodies longer than `max_body`.
    pub fn new(max_body: usize) -> ResponseParser {
        ResponseParser {
            buf: Vec::new(),
            max_body,
            state: State::Head,
        }
    }

    /// Appends bytes; the response once it is complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<Response>, HttpError> {
        self.buf.extend_from_slice(bytes);
        loop {
            match &mut self.state {
                State::Done => return Ok(None),
                State::Head => {
                    let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                        if self.buf.len() > MAX_HEAD {
                            return Err(HttpError::TooLarge);
                        }
                        return Ok(None);
                    };
                    let head = self.buf[..end].to_vec();
                    self.buf.drain(..end + 4);
                    let (status, headers, kind, keep_alive) = parse_head(&head)?;
                    if let BodyKind::Length(n) = kind
                        && n > self.max_body
                    {
                        return Err(HttpError::TooLarge);
                    }
                    // 1xx responses precede the real one.
                    if (100..200).contains(&status) {
                        continue;
                    }
                    self.state = State::Body {
                        status,
                        headers,
                        kind,
                        keep_alive,
                    };
                }
                State::Body { kind, .. } => {
                    let body = match kind {
                        BodyKind::Length(n) => {
                            if self.buf.len() < *n {
                                return Ok(None);
                            }
                            let body = self.buf[..*n].to_vec();
                            self.buf.drain(..*n);
                            body
                        }
                        BodyKind::UntilClose => {
                            if self.buf.len() > self.max_body {
                                return Err(HttpError::TooLarge);
                            }
                            return Ok(None);
                        }
                        BodyKind::Chunked => match dechunk(&self.buf, self.max_body)? {
                            None => return Ok(None),
                            Some((body, used)) => {
                                self.buf.drain(..used);
                                body
                            }
                        },
                    };
                    return Ok(Some(self.complete(body)));
                }
            }
        }
    }

    fn complete(&mut self, body: Vec<u8>) -> Response {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Body {
                status,
                headers,
                keep_alive,
                ..
            } => Response {
                status,
                headers,
                body,
                keep_alive,
            },
            _ => Response {
                status: 0,
                headers: Vec::new(),
                body,
                keep_alive: false,
            },
        }
    }

    /// The connection ended: the response, if its body runs to the end of
    /// the connection; otherwise it was cut short.
    pub fn finish(mut self) -> Result<Response, HttpError> {
        match &self.state {
            State::Body {
                kind: BodyKind::UntilClose,
                ..
            } => {
                let body = std::mem::take(&mut self.buf);
                let mut r = self.complete(body);
                r.keep_alive = false;
                Ok(r)
            }
            _ => Err(HttpError::Truncated),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

type Head = (u16, Vec<(String, String)>, BodyKind, bool);

fn parse_head(head: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| HttpError::Malformed("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not HTTP/1.x"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or(HttpError::Malformed("bad status code"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("header line without colon"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let kind = if chunked {
        BodyKind::Chunked
    } else if let Some(len) = get("content-length") {
        BodyKind::Length(
            len.parse()
                .map_err(|_| HttpError::Malformed("bad Content-Length"))?,
        )
    } else if status == 204 || status == 304 {
        BodyKind::Length(0)
    } else {
        BodyKind::UntilClose
    };
    let connection = get("connection").map(str::to_ascii_lowercase);
    let keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version == "HTTP/1.1",
    } && !matches!(kind, BodyKind::UntilClose);
    Ok((status, headers, kind, keep_alive))
}

/// A chunked body, if complete: its bytes and how much input it used.
fn dechunk(buf: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_end) = find(&buf[pos..], b"\r\n") else {
            if buf.len() - pos > 1024 {
                return Err(HttpError::Malformed("chunk size line too long"));
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..pos + line_end])
            .map_err(|_| HttpError::Malformed("chunk size"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| HttpError::Malformed("chunk size"))?;
        pos += line_end + 2;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let Some(end) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if body.len().saturating_add(size) > max {
            return Err(HttpError::TooLarge);
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF"));
        }
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_is_sanitised() {
        let head = request_head(&Request {
            method: "POST",
            path: "/checkv2",
            host: "127.0.0.1:11333",
            headers: vec![
                ("Helo", "evil\r\nX-Injected: 1".into()),
                ("Bad:Name", "v".into()),
            ],
            content_length: 12,
            keep_alive: false,
        });
        let text = String::from_utf8(head).unwrap();
        assert_eq!(
            text,
            "POST /checkv2 HTTP/1.1\r\nHost: 127.0.0.1:11333\r\nHelo: evil  X-Injected: 1\r\nBadName: v\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn content_length_in_pieces() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello";
        let mut p = ResponseParser::new(100);
        for b in &raw[..raw.len() - 1] {
            assert_eq!(p.push(&[*b]), Ok(None));
        }
        let r = p.push(&raw[raw.len() - 1..]).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.keep_alive);
    }

    #[test]
    fn chunked_and_until_close() {
        let mut p = ResponseParser::new(100);
        let r = p
            .push(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, b"abcde");
        let mut p = ResponseParser::new(100);
        assert_eq!(p.push(b"HTTP/1.0 200 OK\r\n\r\npartial"), Ok(None));
        let r = p.finish().unwrap();
        assert_eq!(r.body, b"partial");
        assert!(!r.keep_alive);
        let mut p = ResponseParser::new(100);
        p.push(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        assert_eq!(p.finish(), Err(HttpError::Truncated));
    }

    #[test]
    fn continue_is_skipped() {
        let mut p = ResponseParser::new(10);
        let r = p
            .push(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 204);
    }

    #[test]
    fn limits_and_garbage() {
        let mut p = ResponseParser::new(4);
        assert_eq!(
            p.push(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Err(HttpError::TooLarge)
        );
        let mut p = ResponseParser::new(4);
        assert_eq!(
            p.push(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n"),
            Err(HttpError::TooLarge)
        );
        let mut p = ResponseParser::new(4);
        assert_eq!(p.push(&vec![b'a'; MAX_HEAD + 1]), Err(HttpError::TooLarge));
        for garbage in [
            &b"SMTP 220 hello\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
        ] {
            let mut p = ResponseParser::new(100);
            assert!(
                matches!(p.push(garbage), Err(HttpError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut p = ResponseParser::new(64);
            let _ = p.push(&data);
            let _ = p.finish();
        }
    }
}
