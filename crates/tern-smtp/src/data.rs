//! The message-content codecs: the DATA dot-decoder and dot-encoder, and
//! BDAT framing.
//!
//! * [`DataDecoder`] turns the bytes that follow a `DATA` command into the
//!   message, undoing dot-stuffing (RFC 5321 4.5.2) and finding the end of
//!   data. It is streaming and keeps its whole state between calls, so the
//!   input may be split at any byte: the output never depends on where the
//!   reads happened to end.
//! * [`DataEncoder`] is its mirror for the client side: it turns a queued
//!   message into DATA content, dot-stuffing and normalising every bare CR
//!   and bare LF to CRLF, so the only `CR LF . CR LF` it writes is its own
//!   terminator.
//! * [`BdatChunk`] counts the octets of one `BDAT` chunk (RFC 3030) and
//!   [`BdatText`] applies the same line-ending rules as DATA to the chunks of
//!   a non-`BINARYMIME` message.
//! * [`TextScanner`] measures text lines and counts `Received:` header
//!   fields for both.
//!
//! What this module must never do: take anything but `CR LF . CR LF` as the
//! end of data. A bare LF or a bare CR is never a line end here — not for the
//! end of data and not for dot-unstuffing — whatever the
//! [`BareLineEndings`] mode (SMTP smuggling, CVE-2023-51764 class). The six
//! classic fake terminators `\n.\n`, `\n.\r\n`, `\r.\r`, `\r\n.\n`,
//! `\r\n.\r` and `\n.\r` are message content, and extra CRs are never
//! stripped to make a real terminator. It never allocates in proportion to
//! anything but the output buffer the caller hands it.
//!
//! ```
//! use tern_smtp::data::DataDecoder;
//! use tern_smtp::server::BareLineEndings;
//!
//! let mut dec = DataDecoder::new(BareLineEndings::Reject);
//! let mut out = Vec::new();
//! let input = b"Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
//! let r = dec.decode(input, &mut out, 4096);
//! assert!(r.done);
//! assert_eq!(&input[r.consumed..], b"QUIT\r\n");
//! assert_eq!(out, b"Subject: hi\r\n\r\n.dot\r\n");
//! ```

use crate::server::BareLineEndings;

/// The most output bytes one input byte can produce (a pending bare CR
/// normalised to CRLF followed by an ordinary byte).
const MAX_EXPANSION: usize = 3;

/// Where the decoder stands with respect to lines and the end of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DotState {
    /// Just after a real CRLF (or at the start of the content).
    LineStart,
    /// Inside a line; the previous byte was not a pending CR.
    InLine,
    /// A CR was seen and not yet emitted: CRLF or a bare CR?
    Cr,
    /// A `.` at the start of a line, not yet emitted.
    Dot,
    /// `.` CR at the start of a line: end of data if LF follows.
    DotCr,
    /// `CRLF . CRLF` seen; nothing more is consumed.
    Done,
}

/// The result of one [`DataDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed. When `done`, the bytes after this offset follow
    /// the end of data (pipelined commands).
    pub consumed: usize,
    /// The end-of-data line was consumed.
    pub done: bool,
}

/// Streaming DATA decoder: dot-unstuffing, end-of-data detection, bare
/// CR/LF detection (and normalisation), line lengths and `Received:` count.
///
/// Start it right after the CRLF of the `DATA` command line: that CRLF is
/// the one that may open the end-of-data sequence, so an immediate `.\r\n`
/// is an empty message.
///
/// With [`BareLineEndings::Reject`] bare CR and LF bytes are passed through
/// unchanged and [`saw_bare_line_ending`](Self::saw_bare_line_ending) turns
/// true (the caller refuses the message but keeps decoding to find the real
/// end). With [`BareLineEndings::Normalize`] each bare CR or LF becomes CRLF
/// in the output — but still does not start a line: a `.` after it is
/// neither unstuffed nor an end-of-data marker.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: DotState,
    normalize: bool,
    bare: bool,
    scanner: TextScanner,
    output_len: u64,
}

impl DataDecoder {
    /// A decoder positioned right after the `DATA` command's CRLF.
    pub fn new(mode: BareLineEndings) -> DataDecoder {
        DataDecoder {
            state: DotState::LineStart,
            normalize: mode == BareLineEndings::Normalize,
            bare: false,
            scanner: TextScanner::default(),
            output_len: 0,
        }
    }

    /// Decodes from `input`, appending message bytes to `out`, adding at most
    /// `max(limit, 3)` bytes to it (the caller's chunk size). Stops at the end
    /// of data; the rest of `input` is left unconsumed.
    ///
    /// With an empty `out` and a non-empty `input`, at least one byte is
    /// always consumed, so a loop around this call always makes progress.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Decoded {
        let start = out.len();
        let limit = limit.max(MAX_EXPANSION);
        let mut consumed = 0;
        while let Some(&b) = input.get(consumed) {
            if self.state == DotState::Done || out.len() - start + MAX_EXPANSION > limit {
                break;
            }
            if self.state == DotState::InLine {
                // Fast path: inside a line every byte but CR and LF is copied
                // as it is, so copy the whole run up to the next one (as many
                // bytes as the byte-by-byte loop would have taken).
                let room = limit - (MAX_EXPANSION - 1) - (out.len() - start);
                let end = input.len().min(consumed.saturating_add(room));
                let run =
                    memchr::memchr2(b'\r', b'\n', &input[consumed..end]).unwrap_or(end - consumed);
                if run > 0 {
                    out.extend_from_slice(&input[consumed..consumed + run]);
                    consumed += run;
                    continue;
                }
            }
            consumed += 1;
            self.step(b, out);
        }
        self.scanner.feed(&out[start..]);
        self.output_len = self
            .output_len
            .saturating_add(u64::try_from(out.len() - start).unwrap_or(u64::MAX));
        Decoded {
            consumed,
            done: self.state == DotState::Done,
        }
    }

    /// `CRLF . CRLF` has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == DotState::Done
    }

    /// A bare CR or bare LF was seen in the content so far.
    pub fn saw_bare_line_ending(&self) -> bool {
        self.bare
    }

    /// Bytes of message output so far.
    pub fn output_len(&self) -> u64 {
        self.output_len
    }

    /// Line and header statistics of the output so far.
    pub fn scanner(&self) -> &TextScanner {
        &self.scanner
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        use DotState::*;
        self.state = match (self.state, b) {
            (Done, _) => Done,
            (LineStart, b'.') => Dot,
            (LineStart | InLine, _) => self.in_line(b, out),
            (Cr, b'\n') => {
                out.extend_from_slice(b"\r\n");
                LineStart
            }
            (Cr, _) => {
                self.bare_cr(out);
                self.in_line(b, out)
            }
            // A leading dot followed by anything but CRLF is a stuffed dot
            // (RFC 5321 4.5.2): it is dropped, the byte is ordinary text.
            (Dot, b'\r') => DotCr,
            (Dot, _) => self.in_line(b, out),
            (DotCr, b'\n') => Done,
            (DotCr, _) => {
                self.bare_cr(out);
                self.in_line(b, out)
            }
        };
    }

    /// Handles a byte inside a line (not a line start).
    fn in_line(&mut self, b: u8, out: &mut Vec<u8>) -> DotState {
        match b {
            b'\r' => DotState::Cr,
            b'\n' => {
                self.bare = true;
                if self.normalize {
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.push(b'\n');
                }
                // Never a line start: no unstuffing, no end of data after it.
                DotState::InLine
            }
            _ => {
                out.push(b);
                DotState::InLine
            }
        }
    }

    fn bare_cr(&mut self, out: &mut Vec<u8>) {
        self.bare = true;
        if self.normalize {
            out.extend_from_slice(b"\r\n");
        } else {
            out.push(b'\r');
        }
    }
}

/// The `Received` field name, lower-case, for the header scanner.
const RECEIVED: &[u8] = b"received";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderState {
    /// At the start of a header line.
    LineStart,
    /// This many bytes of `received` matched at the start of the line.
    Name(usize),
    /// `received` matched, white space before the colon (obsolete syntax).
    AfterName,
    /// Not a `Received:` line (or already counted): skip to its end.
    Skip,
    /// The empty line ending the header section was seen.
    Body,
}

/// Measures text lines and counts `Received:` header fields in message
/// output, byte by byte (split anywhere).
///
/// Only CRLF ends a line. Line lengths include the CRLF. `Received:` fields
/// are counted in the header section only (until the first empty line):
/// a line whose field name is `Received` in any case, optionally followed by
/// spaces or tabs, then `:`. Continuation lines (starting with white space)
/// never count.
#[derive(Debug, Clone)]
pub struct TextScanner {
    prev_cr: bool,
    line_len: usize,
    longest: usize,
    header: HeaderState,
    received: usize,
}

impl Default for TextScanner {
    fn default() -> Self {
        TextScanner {
            prev_cr: false,
            line_len: 0,
            longest: 0,
            header: HeaderState::LineStart,
            received: 0,
        }
    }
}

impl TextScanner {
    /// Scans more output bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some((&first, tail)) = rest.split_first() {
            if self.header != HeaderState::Body {
                self.byte(first);
                rest = tail;
                continue;
            }
            // In the body only line lengths matter: take everything up to
            // the next LF at once (what `byte` would do for each of them).
            let run = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            if let Some(&last) = rest[..run].last() {
                self.line_len = self.line_len.saturating_add(run);
                self.longest = self.longest.max(self.line_len);
                self.prev_cr = last == b'\r';
            }
            match rest.get(run) {
                Some(&lf) => {
                    self.byte(lf);
                    rest = &rest[run + 1..];
                }
                None => break,
            }
        }
    }

    /// One output byte, any state.
    fn byte(&mut self, b: u8) {
        if b == b'\n' && self.prev_cr {
            let full = self.line_len.saturating_add(1);
            self.longest = self.longest.max(full);
            if self.header != HeaderState::Body {
                // line_len == 1: the line held only its CR.
                self.header = if self.line_len == 1 {
                    HeaderState::Body
                } else {
                    HeaderState::LineStart
                };
            }
            self.line_len = 0;
            self.prev_cr = false;
            return;
        }
        self.line_len = self.line_len.saturating_add(1);
        self.longest = self.longest.max(self.line_len);
        self.prev_cr = b == b'\r';
        self.header_byte(b);
    }

    fn header_byte(&mut self, b: u8) {
        let lower = b.to_ascii_lowercase();
        self.header = match self.header {
            HeaderState::Body => HeaderState::Body,
            HeaderState::Skip => HeaderState::Skip,
            HeaderState::LineStart if lower == RECEIVED[0] => HeaderState::Name(1),
            HeaderState::LineStart => HeaderState::Skip,
            HeaderState::Name(n) if n == RECEIVED.len() => self.after_name(b),
            HeaderState::Name(n) if RECEIVED.get(n) == Some(&lower) => HeaderState::Name(n + 1),
            HeaderState::Name(_) => HeaderState::Skip,
            HeaderState::AfterName => self.after_name(b),
        };
    }

    fn after_name(&mut self, b: u8) -> HeaderState {
        match b {
            b':' => {
                self.received = self.received.saturating_add(1);
                HeaderState::Skip
            }
            b' ' | b'\t' => HeaderState::AfterName,
            _ => HeaderState::Skip,
        }
    }

    /// The longest line seen so far, CRLF included; an unfinished line counts
    /// with the bytes it has so far.
    pub fn longest_line(&self) -> usize {
        self.longest
    }

    /// `Received:` fields counted in the header section so far.
    pub fn received_count(&self) -> usize {
        self.received
    }

    /// The empty line that ends the header section has been seen.
    pub fn in_body(&self) -> bool {
        self.header == HeaderState::Body
    }
}

/// Counts the octets of one BDAT chunk (RFC 3030). Sizes are `u64` and only
/// counted, never allocated: a declared size of `u64::MAX` costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BdatChunk {
    remaining: u64,
}

impl BdatChunk {
    /// A chunk of `size` declared octets.
    pub fn new(size: u64) -> BdatChunk {
        BdatChunk { remaining: size }
    }

    /// Octets of the chunk still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Every declared octet has been taken.
    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    /// Takes the chunk's next octets from `input`, at most `max`: returns
    /// them; the rest of `input` (after the returned prefix) is not part of
    /// this chunk if the chunk is now complete.
    pub fn take<'a>(&mut self, input: &'a [u8], max: usize) -> &'a [u8] {
        let n = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len())
            .min(max);
        // n ≤ remaining, so the subtraction cannot underflow.
        self.remaining -= u64::try_from(n).unwrap_or(self.remaining);
        &input[..n]
    }
}

/// Adds a chunk's declared size to a message's running total: `None` when the
/// total would exceed `max` (or overflow `u64`).
pub fn bdat_total(so_far: u64, chunk: u64, max: u64) -> Option<u64> {
    so_far.checked_add(chunk).filter(|&t| t <= max)
}

/// Line-ending checks for the content of a non-`BINARYMIME` BDAT message.
///
/// BDAT content is framed by octet counts, so nothing in it can end the
/// message; but a bare CR or LF stored in a message could later become an
/// end-of-data marker on another server when we relay it with DATA. So the
/// same [`BareLineEndings`] rule as for DATA applies: `Reject` passes bytes
/// through and records the bare ending, `Normalize` turns it into CRLF. A CR
/// that ends one chunk and an LF that starts the next are a proper CRLF.
/// For `BINARYMIME` use [`BdatText::binary`]: bytes pass untouched.
#[derive(Debug, Clone)]
pub struct BdatText {
    check: bool,
    normalize: bool,
    pending_cr: bool,
    bare: bool,
    scanner: TextScanner,
    output_len: u64,
}

impl BdatText {
    /// Text content (7BIT / 8BITMIME): bare CR/LF handled per `mode`.
    pub fn text(mode: BareLineEndings) -> BdatText {
        BdatText {
            check: true,
            normalize: mode == BareLineEndings::Normalize,
            pending_cr: false,
            bare: false,
            scanner: TextScanner::default(),
            output_len: 0,
        }
    }

    /// `BODY=BINARYMIME` content: no line rules at all.
    pub fn binary() -> BdatText {
        BdatText {
            check: false,
            ..BdatText::text(BareLineEndings::Reject)
        }
    }

    /// Processes chunk bytes into `out`, adding at most `max(limit, 3)`
    /// bytes; returns how many input bytes were consumed (at least one when
    /// `input` is not empty).
    pub fn process(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> usize {
        let start = out.len();
        let limit = limit.max(MAX_EXPANSION);
        let mut consumed = 0;
        if !self.check {
            consumed = input.len().min(limit);
            out.extend_from_slice(&input[..consumed]);
        } else {
            for &b in input {
                if out.len() - start + MAX_EXPANSION > limit {
                    break;
                }
                consumed += 1;
                self.byte(b, out);
            }
        }
        self.account(start, out);
        consumed
    }

    /// The last chunk has been processed: a CR left pending is bare.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        if self.pending_cr {
            self.pending_cr = false;
            self.bare_ending(b'\r', out);
        }
        self.account(start, out);
    }

    fn account(&mut self, start: usize, out: &[u8]) {
        self.scanner.feed(&out[start..]);
        self.output_len = self
            .output_len
            .saturating_add(u64::try_from(out.len() - start).unwrap_or(u64::MAX));
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            if b == b'\n' {
                out.extend_from_slice(b"\r\n");
                return;
            }
            self.bare_ending(b'\r', out);
        }
        match b {
            b'\r' => self.pending_cr = true,
            b'\n' => self.bare_ending(b'\n', out),
            _ => out.push(b),
        }
    }

    fn bare_ending(&mut self, b: u8, out: &mut Vec<u8>) {
        self.bare = true;
        if self.normalize {
            out.extend_from_slice(b"\r\n");
        } else {
            out.push(b);
        }
    }

    /// A bare CR or LF was seen (never for binary content).
    pub fn saw_bare_line_ending(&self) -> bool {
        self.bare
    }

    /// Line checks apply (false for `BINARYMIME`).
    pub fn is_text(&self) -> bool {
        self.check
    }

    /// Bytes of message output so far.
    pub fn output_len(&self) -> u64 {
        self.output_len
    }

    /// Line and header statistics of the output so far.
    pub fn scanner(&self) -> &TextScanner {
        &self.scanner
    }
}

/// Turns message bytes into DATA content: every bare CR and bare LF
/// becomes CRLF, then a `.` at the start of a line is doubled (RFC 5321
/// 4.5.2); [`finish`](Self::finish) ends the content with `CRLF . CRLF`
/// (adding the CRLF when the message does not end with one).
///
/// The only `CRLF . CRLF` in the output is the one `finish` writes, so no
/// server can find an earlier end of data, whatever the queued message
/// holds (`\n.\n`, `\r.\r`, `\r\n.\r\n`…). The output does not depend on
/// how the message is split across [`encode`](Self::encode) calls.
///
/// ```
/// use tern_smtp::data::DataEncoder;
/// let mut enc = DataEncoder::new();
/// let mut out = Vec::new();
/// enc.encode(b"Subject: x\n\n.hidden\r.\rend", &mut out);
/// enc.finish(&mut out);
/// assert_eq!(out, b"Subject: x\r\n\r\n..hidden\r\n..\r\nend\r\n.\r\n");
/// ```
#[derive(Debug, Clone)]
pub struct DataEncoder {
    line_start: bool,
    pending_cr: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder::new()
    }
}

impl DataEncoder {
    /// An encoder at the start of the message (right after the DATA
    /// command's CRLF).
    pub fn new() -> DataEncoder {
        DataEncoder {
            line_start: true,
            pending_cr: false,
        }
    }

    /// Appends the encoding of `input` to `out`. A CR at the end of
    /// `input` is held back until the next byte shows whether it is
    /// part of a CRLF.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16 + 4);
        let mut i = 0;
        while i < input.len() {
            if !self.pending_cr && !self.line_start {
                // Copy a run of ordinary bytes in one go.
                let run = input[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(input.len() - i);
                if run > 0 {
                    out.extend_from_slice(&input[i..i + run]);
                    i += run;
                    continue;
                }
            }
            self.byte(input[i], out);
            i += 1;
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            // CRLF, or a bare CR that becomes one.
            out.extend_from_slice(b"\r\n");
            self.line_start = true;
            if b == b'\n' {
                return;
            }
        }
        match b {
            b'\r' => self.pending_cr = true,
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
            }
            b'.' if self.line_start => {
                out.extend_from_slice(b"..");
                self.line_start = false;
            }
            _ => {
                out.push(b);
                self.line_start = false;
            }
        }
    }

    /// Appends the end of the content: a pending CR as CRLF, a CRLF when
    /// the last line is unterminated, then `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    /// The whole DATA content for `message` in one call.
    pub fn encode_all(message: &[u8]) -> Vec<u8> {
        let mut enc = DataEncoder::new();
        let mut out = Vec::with_capacity(message.len() + 8);
        enc.encode(message, &mut out);
        enc.finish(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODES: [BareLineEndings; 2] = [BareLineEndings::Reject, BareLineEndings::Normalize];

    /// Decodes `input` in pieces of `step` bytes with a big output limit.
    fn decode_steps(
        mode: BareLineEndings,
        input: &[u8],
        step: usize,
    ) -> (Vec<u8>, Option<usize>, DataDecoder) {
        let mut dec = DataDecoder::new(mode);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let r = dec.decode(&input[pos..end], &mut out, usize::MAX);
            pos += r.consumed;
            if r.done {
                return (out, Some(pos), dec);
            }
        }
        (out, None, dec)
    }

    fn decode_all(mode: BareLineEndings, input: &[u8]) -> (Vec<u8>, Option<usize>, DataDecoder) {
        decode_steps(mode, input, input.len().max(1))
    }

    #[test]
    fn immediate_dot_is_empty_message() {
        for mode in MODES {
            let (out, end, _) = decode_all(mode, b".\r\nMAIL FROM:<a@b>\r\n");
            assert_eq!(out, b"");
            assert_eq!(end, Some(3));
        }
    }

    #[test]
    fn simple_message_and_rest_left_unconsumed() {
        let input = b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n";
        let (out, end, dec) = decode_all(BareLineEndings::Reject, input);
        assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(&input[end.unwrap()..], b"QUIT\r\n");
        assert!(!dec.saw_bare_line_ending());
        assert_eq!(dec.output_len(), out.len() as u64);
    }

    #[test]
    fn dot_unstuffing() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"..\r\n.\r\n", b".\r\n"),
            (b"...\r\n.\r\n", b"..\r\n"),
            (b"..foo\r\n.\r\n", b".foo\r\n"),
            (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
            (b"a.\r\n.\r\n", b"a.\r\n"),
            (b"a\r\n. \r\n.\r\n", b"a\r\n \r\n"),
            (b"a\r\n.x.\r\n.\r\n", b"a\r\nx.\r\n"),
        ];
        for mode in MODES {
            for (input, want) in cases {
                let (out, end, _) = decode_all(mode, input);
                assert_eq!(&out, want, "input {:?}", String::from_utf8_lossy(input));
                assert_eq!(end, Some(input.len()));
            }
        }
    }

    const FAKE_TERMINATORS: [&[u8]; 6] = [
        b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r", b"\n.\r",
    ];

    #[test]
    fn fake_terminators_never_end_data() {
        let smuggled = b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nevil\r\n";
        for mode in MODES {
            for fake in FAKE_TERMINATORS {
                let mut input = b"hello".to_vec();
                input.extend_from_slice(fake);
                input.extend_from_slice(smuggled);
                let (out, end, dec) = decode_all(mode, &input);
                assert_eq!(end, None, "{fake:?} ended the message in {mode:?}");
                assert!(dec.saw_bare_line_ending(), "{fake:?}");
                // The smuggled commands are message content.
                assert!(out.windows(18).any(|w| w == b"MAIL FROM:<evil@x>"));
                // The real terminator still ends it.
                let mut full = input.clone();
                full.extend_from_slice(b".\r\nNOOP\r\n");
                let (_, end, _) = decode_all(mode, &full);
                assert_eq!(&full[end.unwrap()..], b"NOOP\r\n", "{fake:?}");
            }
        }
    }

    #[test]
    fn fake_terminators_at_content_start() {
        for mode in MODES {
            for fake in FAKE_TERMINATORS {
                let mut input = fake.to_vec();
                input.extend_from_slice(b"QUIT\r\n");
                let (_, end, _) = decode_all(mode, &input);
                assert_eq!(end, None, "{fake:?} at start in {mode:?}");
            }
        }
    }

    #[test]
    fn arrangements_with_nul_and_extra_cr_never_end_data() {
        let variants: [&[u8]; 14] = [
            b"\r\n.\r\r\n",
            b"\r\n\0.\r\n",
            b"\r\n.\0\r\n",
            b"\r\n.\r\0\n",
            b"\r\0\n.\r\n",
            b"\r\r.\r\n",
            b"\n\r.\r\n",
            b"\r\n\r.\r\n",
            b"\r\n \r\n.\r",
            b"\r\n.\n\r\n",
            b"\n\n.\n\n",
            b"\r\r.\r\r",
            b"\r\n.\r\r\r\n",
            b"\r\n..\r\n",
        ];
        for mode in MODES {
            for v in variants {
                let mut input = b"x".to_vec();
                input.extend_from_slice(v);
                input.extend_from_slice(b"RSET\r\n");
                let (_, end, _) = decode_all(mode, &input);
                assert_eq!(end, None, "{v:?} in {mode:?}");
            }
        }
    }

    /// Exhaustive oracle over short inputs: the message ends exactly after
    /// the first `CRLF . CRLF` of "CRLF" + input, and nowhere else.
    #[test]
    fn ends_exactly_at_first_real_terminator_exhaustive() {
        const ALPHABET: [u8; 5] = [b'\r', b'\n', b'.', b'a', 0];
        for len in 0..=7u32 {
            for mut n in 0..5usize.pow(len) {
                let mut input = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    input.push(ALPHABET[n % 5]);
                    n /= 5;
                }
                let mut framed = b"\r\n".to_vec();
                framed.extend_from_slice(&input);
                let want = framed
                    .windows(5)
                    .position(|w| w == b"\r\n.\r\n")
                    .map(|i| i + 5 - 2);
                for mode in MODES {
                    let (out, end, _) = decode_all(mode, &input);
                    assert_eq!(end, want, "{input:?} {mode:?}");
                    if mode == BareLineEndings::Reject {
                        assert!(out.len() <= input.len());
                    } else {
                        assert!(out.len() <= 2 * input.len());
                    }
                }
            }
        }
    }

    #[test]
    fn extra_cr_before_real_crlf_is_kept_not_stripped() {
        // "\r\r\n.\r\n" contains a real CRLF.CRLF: it ends, the first CR is
        // bare and stays content.
        let (out, end, dec) = decode_all(BareLineEndings::Reject, b"a\r\r\n.\r\n");
        assert_eq!(end, Some(7));
        assert_eq!(out, b"a\r\r\n");
        assert!(dec.saw_bare_line_ending());
        let (out, _, _) = decode_all(BareLineEndings::Normalize, b"a\r\r\n.\r\n");
        assert_eq!(out, b"a\r\n\r\n");
    }

    #[test]
    fn reject_mode_passes_bare_bytes_and_flags() {
        let (out, end, dec) = decode_all(BareLineEndings::Reject, b"a\nb\rc\r\n.\r\n");
        assert_eq!(out, b"a\nb\rc\r\n");
        assert_eq!(end, Some(10));
        assert!(dec.saw_bare_line_ending());
    }

    #[test]
    fn normalize_mode_turns_bare_endings_into_crlf_without_line_semantics() {
        let (out, end, dec) = decode_all(BareLineEndings::Normalize, b"a\nb\rc\r\n.\r\n");
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
        assert_eq!(end, Some(10));
        assert!(dec.saw_bare_line_ending());
        // A dot after a bare LF is not unstuffed (not a line start).
        let (out, _, _) = decode_all(BareLineEndings::Normalize, b"a\n..b\r\n.\r\n");
        assert_eq!(out, b"a\r\n..b\r\n");
        // A stuffed dot at a real line start followed by a bare LF is dropped.
        let (out, _, _) = decode_all(BareLineEndings::Normalize, b"a\r\n.\nb\r\n.\r\n");
        assert_eq!(out, b"a\r\n\r\nb\r\n");
    }

    #[test]
    fn output_never_longer_than_input_in_reject_mode() {
        let input = b"a\r\n..\r\n\n.\r\r.\r\n.\r\r\n.\r\n";
        let (out, end, _) = decode_all(BareLineEndings::Reject, input);
        assert!(out.len() <= end.unwrap());
    }

    /// A message exercising every state: stuffing, bare endings, fake
    /// terminators, NULs, 8-bit, then the real end and a pipelined command.
    const TORTURE: &[u8] = b"Received: a\r\nreceived : b\r\n c\r\nX: y\r\n\r\n..\r\n.x\r\n\n.\nq\r.\ru\r\n.\n\xff\0\r\r\n.\r\r.\r\n..\r\n.\r\nMAIL FROM:<a@b>\r\n";

    #[test]
    fn every_split_point_gives_identical_output() {
        for mode in MODES {
            let (whole, end, dec) = decode_all(mode, TORTURE);
            let end = end.expect("torture message ends");
            assert_eq!(&TORTURE[end..], b"MAIL FROM:<a@b>\r\n");
            for split in 0..=TORTURE.len() {
                let mut d = DataDecoder::new(mode);
                let mut out = Vec::new();
                let a = d.decode(&TORTURE[..split], &mut out, usize::MAX);
                let mut consumed = a.consumed;
                if !a.done {
                    assert_eq!(a.consumed, split);
                    let b = d.decode(&TORTURE[split..], &mut out, usize::MAX);
                    consumed += b.consumed;
                    assert!(b.done);
                }
                assert_eq!(out, whole, "split {split} in {mode:?}");
                assert_eq!(consumed, end);
                assert_eq!(d.scanner().received_count(), dec.scanner().received_count());
                assert_eq!(d.scanner().longest_line(), dec.scanner().longest_line());
            }
            let (bytewise, bend, _) = decode_steps(mode, TORTURE, 1);
            assert_eq!(bytewise, whole);
            assert_eq!(bend, Some(end));
        }
    }

    #[test]
    fn small_output_limit_gives_identical_output_and_respects_limit() {
        for mode in MODES {
            let (whole, _, _) = decode_all(mode, TORTURE);
            for limit in [1, 3, 4, 7, 64] {
                let mut d = DataDecoder::new(mode);
                let mut all = Vec::new();
                let mut pos = 0;
                loop {
                    let mut out = Vec::new();
                    let r = d.decode(&TORTURE[pos..], &mut out, limit);
                    assert!(out.len() <= limit.max(3));
                    assert!(r.consumed > 0 || r.done);
                    pos += r.consumed;
                    all.extend_from_slice(&out);
                    if r.done {
                        break;
                    }
                }
                assert_eq!(all, whole, "limit {limit}");
            }
        }
    }

    #[test]
    fn received_counting() {
        let input = b"Received: a\r\nRECEIVED:b\r\nreceived \t: c\r\n  received: continuation\r\nX-Received: no\r\nReceivedX: no\r\nReceived no colon\r\n\r\nReceived: in body\r\n.\r\n";
        let (_, _, dec) = decode_all(BareLineEndings::Reject, input);
        assert_eq!(dec.scanner().received_count(), 3);
        assert!(dec.scanner().in_body());
        // Split everywhere: same count.
        for split in 0..input.len() {
            let mut s = TextScanner::default();
            s.feed(&input[..split]);
            s.feed(&input[split..]);
            assert_eq!(s.received_count(), 3, "split {split}");
        }
    }

    #[test]
    fn received_count_without_body_and_bare_lf_is_not_a_line_end() {
        let mut s = TextScanner::default();
        s.feed(b"X: a\nReceived: hidden\r\nReceived: yes\r\n");
        assert_eq!(s.received_count(), 1);
        assert!(!s.in_body());
    }

    #[test]
    fn line_length_includes_crlf_and_excludes_stuffing_dot() {
        let mut line = vec![b'.'];
        line.extend(std::iter::repeat_n(b'a', 998));
        line.extend_from_slice(b"\r\n.\r\n");
        let (_, _, dec) = decode_all(BareLineEndings::Reject, &line);
        assert_eq!(dec.scanner().longest_line(), 1000);
        let mut s = TextScanner::default();
        s.feed(&[b'x'; 1001]);
        assert_eq!(s.longest_line(), 1001, "unfinished lines count too");
    }

    #[test]
    fn bdat_chunk_counts_u64() {
        let mut c = BdatChunk::new(u64::MAX);
        let got = c.take(b"abcdef", 4);
        assert_eq!(got, b"abcd");
        assert_eq!(c.remaining(), u64::MAX - 4);
        let mut c = BdatChunk::new(3);
        assert_eq!(c.take(b"abcdef", usize::MAX), b"abc");
        assert!(c.is_complete());
        assert_eq!(c.take(b"def", 10), b"");
        let mut z = BdatChunk::new(0);
        assert!(z.is_complete());
        assert_eq!(z.take(b"x", 1), b"");
    }

    #[test]
    fn bdat_total_overflow_and_limit() {
        assert_eq!(bdat_total(10, 20, 100), Some(30));
        assert_eq!(bdat_total(10, 91, 100), None);
        assert_eq!(bdat_total(u64::MAX, 1, u64::MAX), None);
        assert_eq!(bdat_total(1, u64::MAX, u64::MAX), None);
        assert_eq!(bdat_total(0, u64::MAX, u64::MAX), Some(u64::MAX));
    }

    #[test]
    fn bdat_text_rules() {
        let mut t = BdatText::text(BareLineEndings::Reject);
        let mut out = Vec::new();
        assert_eq!(t.process(b"a\r", &mut out, 100), 2);
        assert_eq!(t.process(b"\nb\r\n", &mut out, 100), 4);
        t.finish(&mut out);
        assert_eq!(out, b"a\r\nb\r\n");
        assert!(!t.saw_bare_line_ending());

        let mut t = BdatText::text(BareLineEndings::Reject);
        let mut out = Vec::new();
        t.process(b"a\nb\r", &mut out, 100);
        t.finish(&mut out);
        assert_eq!(out, b"a\nb\r");
        assert!(t.saw_bare_line_ending());

        let mut t = BdatText::text(BareLineEndings::Normalize);
        let mut out = Vec::new();
        t.process(b"a\nb\rc\r", &mut out, 100);
        t.finish(&mut out);
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
        assert!(t.saw_bare_line_ending());

        let mut t = BdatText::binary();
        let mut out = Vec::new();
        assert_eq!(t.process(b"a\nb\r\0", &mut out, 100), 5);
        t.finish(&mut out);
        assert_eq!(out, b"a\nb\r\0");
        assert!(!t.saw_bare_line_ending());
        assert!(!t.is_text());
    }

    #[test]
    fn bdat_text_every_split_identical() {
        let input = b"Received: x\r\nA: b\r\r\n\r\nbody\n\r.\r\n\r";
        for mode in MODES {
            let mut w = BdatText::text(mode);
            let mut whole = Vec::new();
            w.process(input, &mut whole, usize::MAX);
            w.finish(&mut whole);
            for split in 0..=input.len() {
                let mut t = BdatText::text(mode);
                let mut out = Vec::new();
                let mut pos = 0;
                for part in [&input[..split], &input[split..]] {
                    let mut p = 0;
                    while p < part.len() {
                        p += t.process(&part[p..], &mut out, 4);
                    }
                    pos += p;
                }
                t.finish(&mut out);
                assert_eq!(pos, input.len());
                assert_eq!(out, whole, "split {split}");
                assert_eq!(t.scanner().received_count(), 1);
                assert_eq!(t.output_len(), whole.len() as u64);
            }
        }
    }

    /// The reference: one byte per call with the smallest output limit.
    fn decode_bytewise(mode: BareLineEndings, input: &[u8]) -> (Vec<u8>, usize, DataDecoder) {
        let mut dec = DataDecoder::new(mode);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() && !dec.is_done() {
            let r = dec.decode(&input[pos..=pos], &mut out, MAX_EXPANSION);
            pos += r.consumed;
        }
        (out, pos, dec)
    }

    #[test]
    fn run_copying_matches_the_byte_by_byte_decoder() {
        // Pseudo-random inputs over the bytes that matter, long plain runs
        // included, decoded whole, with small output limits, and bytewise.
        let alphabet: &[&[u8]] = &[
            b"a",
            b".",
            b"\r",
            b"\n",
            b"\r\n",
            b"\r\n.",
            b"Received: x",
            b"received :",
            b"plain text run of some length ",
            b" ",
            b"\t",
            b"\r\n\r\n",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..400 {
            let mut input = Vec::new();
            for _ in 0..40 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.extend_from_slice(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            for mode in MODES {
                let (want, want_end, want_dec) = decode_bytewise(mode, &input);
                for limit in [3, 4, 7, 64, usize::MAX] {
                    let mut dec = DataDecoder::new(mode);
                    let mut out = Vec::new();
                    let mut pos = 0;
                    while pos < input.len() && !dec.is_done() {
                        let before = out.len();
                        let r = dec.decode(&input[pos..], &mut out, limit);
                        assert!(out.len() - before <= limit.max(MAX_EXPANSION));
                        pos += r.consumed;
                    }
                    assert_eq!(out, want, "limit {limit} {mode:?} {input:?}");
                    assert_eq!(pos, want_end);
                    let (a, b) = (dec.scanner(), want_dec.scanner());
                    assert_eq!(a.longest_line(), b.longest_line());
                    assert_eq!(a.received_count(), b.received_count());
                    assert_eq!(a.in_body(), b.in_body());
                    assert_eq!(dec.saw_bare_line_ending(), want_dec.saw_bare_line_ending());
                }
            }
        }
    }
}
