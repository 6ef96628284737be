//! A stored message on the POP3 wire (RFC 1939 section 3): every line
//! ends in CRLF whatever the stored line ends (a bare LF becomes CRLF, a
//! lone CR at the very end is dropped, as [`tern_mime`-style `to_crlf`]
//! does), a line starting with `.` gets one more `.`, the last line gets
//! a CRLF if it has none, and `.` CRLF ends the response.
//!
//! [`wire_size`] is the number of octets of that form before
//! dot-stuffing (what the client holds once it removed the stuffing), so
//! LIST, STAT and RETR agree. [`Scanner`] computes it (and whether the
//! stored bytes already are that form, [`Scan::verbatim`]) over chunks, so
//! a large message is never held whole. [`DotStuffer`] produces the wire
//! form in chunks, so a large message is streamed rather than loaded
//! whole.
//!
//! This module never allocates more than the output of one chunk.

/// What [`Scanner`] found in a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Octets RETR sends before dot-stuffing ([`wire_size`]).
    pub size: u64,
    /// The stored bytes are already the wire form, but for a missing last
    /// line end ([`Scan::unended`]): every LF follows a CR, no line starts
    /// with `.`, the message does not end in a lone CR. Such a message may
    /// be sent as it is, followed by CRLF if it is unended, then `.` CRLF.
    pub verbatim: bool,
    /// The message is not empty and its last line has no line end (the
    /// wire form adds CRLF).
    pub unended: bool,
}

impl Scan {
    /// What follows a [`Scan::verbatim`] message on the wire: the missing
    /// line end if [`Scan::unended`], and the terminating `.` CRLF.
    pub fn verbatim_trailer(&self) -> &'static [u8] {
        if self.unended { b"\r\n.\r\n" } else { b".\r\n" }
    }
}

/// Counts what [`DotStuffer`] would produce, without producing it: feed
/// the stored bytes in any chunking with [`Scanner::push`], then
/// [`Scanner::finish`]. Only LFs are looked at (with `memchr`), so a
/// message is scanned at memory speed.
#[derive(Debug, Clone, Default)]
pub struct Scanner {
    /// Stored octets so far.
    len: u64,
    /// LFs not preceded by a CR.
    bare_lf: u64,
    /// Some line starts with `.`.
    dot_line: bool,
    /// The last two stored bytes (the last in `last`).
    last: Option<u8>,
    before_last: Option<u8>,
}

impl Scanner {
    /// A fresh scanner.
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Scans the next chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        let Some(&first) = chunk.first() else {
            return;
        };
        // The chunk's first byte starts a line if it is the message's
        // first byte or follows an LF.
        if first == b'.' && matches!(self.last, None | Some(b'\n')) {
            self.dot_line = true;
        }
        for i in memchr::memchr_iter(b'\n', chunk) {
            let before = if i == 0 {
                self.last
            } else {
                Some(chunk[i - 1])
            };
            if before != Some(b'\r') {
                self.bare_lf += 1;
            }
            if chunk.get(i + 1) == Some(&b'.') {
                self.dot_line = true;
            }
        }
        self.before_last = match chunk.len() {
            1 => self.last,
            n => Some(chunk[n - 2]),
        };
        self.last = Some(chunk[chunk.len() - 1]);
        self.len += chunk.len() as u64;
    }

    /// The size and form of the message scanned.
    pub fn finish(&self) -> Scan {
        // A lone CR at the very end is dropped.
        let (body_len, body_last) = match self.last {
            Some(b'\r') => (self.len - 1, self.before_last),
            last => (self.len, last),
        };
        let mut size = body_len + self.bare_lf;
        let unended = body_len > 0 && body_last != Some(b'\n');
        if unended {
            size += 2;
        }
        Scan {
            size,
            verbatim: self.bare_lf == 0 && !self.dot_line && self.last != Some(b'\r'),
            unended,
        }
    }
}

/// [`Scanner`] over a whole stored message.
pub fn scan(stored: &[u8]) -> Scan {
    let mut s = Scanner::new();
    s.push(stored);
    s.finish()
}

/// The streaming encoder: feed the stored bytes in any chunking with
/// [`DotStuffer::push`], then [`DotStuffer::finish`].
#[derive(Debug, Clone)]
pub struct DotStuffer {
    /// A CR was seen last and not yet written (it may start a CRLF, or be
    /// the file's last byte, which is dropped).
    held_cr: bool,
    /// The next byte written starts a line.
    at_line_start: bool,
    /// Nothing has been written yet.
    empty: bool,
    /// Double leading dots (false: only count, for [`wire_size`]).
    stuff: bool,
    /// Octets of the unstuffed form so far.
    unstuffed: u64,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A fresh encoder.
    pub fn new() -> DotStuffer {
        DotStuffer {
            held_cr: false,
            at_line_start: true,
            empty: true,
            stuff: true,
            unstuffed: 0,
        }
    }

    /// Writes `run`, which holds no LF except, possibly, its last byte:
    /// only its first byte can start a line.
    fn emit(&mut self, run: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = run.last() else {
            return;
        };
        if self.at_line_start && run[0] == b'.' && self.stuff {
            out.push(b'.');
        }
        out.extend_from_slice(run);
        self.unstuffed += run.len() as u64;
        self.empty = false;
        self.at_line_start = last == b'\n';
    }

    /// Encodes the next chunk of the stored message into `out`. A CR is
    /// never changed (CRLF stays, a CR alone stays) except a CR that ends
    /// the whole message, so only LFs are looked for: a line ending in
    /// CRLF is copied as it is, a bare LF gets its CR.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 32 + 2);
        let mut rest = chunk;
        if self.held_cr && !rest.is_empty() {
            self.held_cr = false;
            if rest[0] == b'\n' {
                self.emit(b"\r\n", out);
                rest = &rest[1..];
            } else {
                self.emit(b"\r", out);
            }
        }
        while !rest.is_empty() {
            match memchr::memchr(b'\n', rest) {
                None => {
                    // A CR at the end of the chunk waits: it may start a
                    // CRLF, or end the message (then it is dropped).
                    match rest.split_last() {
                        Some((b'\r', body)) => {
                            self.emit(body, out);
                            self.held_cr = true;
                        }
                        _ => self.emit(rest, out),
                    }
                    break;
                }
                Some(i) if i > 0 && rest[i - 1] == b'\r' => {
                    self.emit(&rest[..=i], out);
                    rest = &rest[i + 1..];
                }
                Some(i) => {
                    self.emit(&rest[..i], out);
                    self.emit(b"\r\n", out);
                    rest = &rest[i + 1..];
                }
            }
        }
    }

    /// Ends the message: the last line's CRLF if it had none, then the
    /// terminating `.` CRLF. A held lone CR at the end is dropped.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.held_cr = false;
        if !self.empty && !self.at_line_start {
            self.emit(b"\r\n", out);
        }
        out.extend_from_slice(b".\r\n");
    }

    /// Octets of the unstuffed form written so far.
    pub fn unstuffed_len(&self) -> u64 {
        self.unstuffed
    }
}

/// The size RETR sends for `stored` (CRLF form, last line ended, before
/// dot-stuffing and without the terminating `.`): what LIST and STAT
/// report.
pub fn wire_size(stored: &[u8]) -> u64 {
    scan(stored).size
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut d = DotStuffer::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out);
        }
        d.finish(&mut out);
        out
    }

    /// What a client does: remove the stuffing and the terminator.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn cases() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"A: b\r\n\r\nx\r\n", b"A: b\r\n\r\nx\r\n.\r\n"),
            (b"A: b\n\nx\n", b"A: b\r\n\r\nx\r\n.\r\n"),
            (b"A: b\n\n.\n..x\n", b"A: b\r\n\r\n..\r\n...x\r\n.\r\n"),
            (b"A: b\r\n\r\nno end", b"A: b\r\n\r\nno end\r\n.\r\n"),
            (b"A: b\r\n\r\nlone cr\r", b"A: b\r\n\r\nlone cr\r\n.\r\n"),
            (b"x\ry\r\n", b"x\ry\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b"\n", b"\r\n.\r\n"),
            (b"A: b\r\n\r\n\r", b"A: b\r\n\r\n.\r\n"),
        ];
        for (stored, want) in cases {
            let got = encode(&[stored]);
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(stored));
            assert_eq!(
                wire_size(stored),
                unstuff(&got).len() as u64,
                "{:?}",
                String::from_utf8_lossy(stored)
            );
        }
    }

    #[test]
    fn verbatim_cases() {
        // (stored, verbatim, unended)
        let cases: &[(&[u8], bool, bool)] = &[
            (b"", true, false),
            (b"A: b\r\n\r\nx\r\n", true, false),
            (b"A: b\r\n\r\nx\ry\r\n", true, false),
            (b"A: b\r\n\r\n.x\r\n", false, false),
            (b".A: b\r\n", false, false),
            (b"A: b\r\n\r\nx\n", false, false),
            (b"A: b\r\n\r\nx", true, true),
            (b"A: b\r\n\r\n.x", false, true),
            (b"A: b\r\n\r\nx\r", false, true),
            (b"A: b\r\n\r\nx\r\n\r", false, false),
            (b"\n", false, false),
            (b"\r\n", true, false),
        ];
        for (stored, verbatim, unended) in cases {
            let s = scan(stored);
            let name = String::from_utf8_lossy(stored);
            assert_eq!(s.verbatim, *verbatim, "{name:?}");
            assert_eq!(s.unended, *unended, "{name:?}");
            assert_eq!(s.size, wire_size(stored));
            if s.verbatim {
                let mut as_is = stored.to_vec();
                as_is.extend_from_slice(s.verbatim_trailer());
                assert_eq!(encode(&[stored]), as_is, "{name:?}");
            }
        }
    }

    /// The rule spelled out the slow way.
    fn reference(stored: &[u8]) -> Vec<u8> {
        let stored = stored.strip_suffix(b"\r").unwrap_or(stored);
        let mut crlf = Vec::new();
        for (i, &b) in stored.iter().enumerate() {
            if b == b'\n' && (i == 0 || stored[i - 1] != b'\r') {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        if !crlf.is_empty() && !crlf.ends_with(b"\n") {
            crlf.extend_from_slice(b"\r\n");
        }
        let mut out = Vec::new();
        for line in crlf.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                out.push(b'.');
            }
            out.extend_from_slice(line);
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    proptest! {
        #[test]
        fn chunking_does_not_matter_and_size_agrees(
            stored in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..64),
            cut in 0usize..64,
            cut2 in 0usize..64,
        ) {
            let cut = cut.min(stored.len());
            let cut2 = cut2.min(stored.len()).max(cut);
            let whole = encode(&[&stored]);
            let split = encode(&[&stored[..cut], &stored[cut..]]);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(&whole, &reference(&stored));
            prop_assert_eq!(wire_size(&stored), unstuff(&whole).len() as u64);
            // The scanner in three pieces agrees, and verbatim means the
            // wire form is the stored bytes and the terminator.
            let mut scanner = Scanner::new();
            scanner.push(&stored[..cut]);
            scanner.push(&stored[cut..cut2]);
            scanner.push(&stored[cut2..]);
            let scanned = scanner.finish();
            prop_assert_eq!(scanned, scan(&stored));
            prop_assert_eq!(scanned.size, wire_size(&stored));
            let mut as_is = stored.clone();
            as_is.extend_from_slice(scanned.verbatim_trailer());
            prop_assert_eq!(scanned.verbatim, whole == as_is);
            // Every line of the wire form ends in CRLF, and no line but the
            // terminator is a lone dot.
            let body = whole.strip_suffix(b".\r\n").unwrap();
            for line in body.split_inclusive(|&b| b == b'\n') {
                prop_assert!(line.ends_with(b"\r\n"));
                prop_assert!(line != b".\r\n");
            }
        }
    }
}
