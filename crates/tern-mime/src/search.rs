//! SEARCH matching (RFC 9051 §6.4.4) on one message: header fields,
//! BODY, TEXT, and the sent date of SENTBEFORE/SENTON/SENTSINCE.
//!
//! Matching is substring, case-insensitive by Unicode simple lowercasing
//! of both sides, on decoded text: header values have RFC 2047 encoded
//! words decoded (through mail-parser, which also converts their
//! charsets); bodies of `text/*` parts have their transfer encoding
//! removed and their charset converted to UTF-8. Bytes that are not valid
//! in their charset become U+FFFD and never match a needle.
//!
//! Speed without changing that: the needle is lowercased once; a text
//! that is all ASCII (most mail) is compared by ASCII case folding, which
//! lowercases it exactly as the Unicode mapping would, and a text whose
//! bytes are valid UTF-8 (US-ASCII, UTF-8, 7bit and 8bit parts) is
//! searched where it lies, without a copy. Only non-ASCII text is
//! lowercased character by character, and its ASCII runs even then byte
//! by byte.

use mail_parser::HeaderValue;
use mail_parser::parsers::MessageStream;

use crate::Message;
use crate::header::fields;
use crate::structure::{Kind, Part};

/// A header value with encoded words decoded, folding removed, as UTF-8.
pub fn decode_header_value(raw: &[u8]) -> String {
    let mut buf = Vec::with_capacity(raw.len() + 1);
    buf.extend_from_slice(raw);
    buf.push(b'\n');
    match MessageStream::new(&buf).parse_unstructured() {
        HeaderValue::Text(t) => t.into_owned(),
        _ => String::new(),
    }
}

/// Lowercases `s` for case-insensitive comparison (Unicode lowercase
/// mapping, character by character; runs of ASCII byte by byte, which
/// gives the same result faster).
pub fn fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        let ascii = rest
            .bytes()
            .position(|b| !b.is_ascii())
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(ascii);
        out.extend(run.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        let mut chars = tail.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_lowercase());
        }
        rest = chars.as_str();
    }
    out
}

/// A needle, lowercased once, looked for in many texts: is
/// `fold(hay).contains(fold(needle))`, without lowercasing an ASCII hay
/// into a new string when it need not.
struct Needle {
    folded: String,
    finder: memchr::memmem::Finder<'static>,
}

impl Needle {
    fn new(needle: &str) -> Needle {
        let folded = fold(needle);
        let finder = memchr::memmem::Finder::new(folded.as_bytes()).into_owned();
        Needle { folded, finder }
    }

    fn is_empty(&self) -> bool {
        self.folded.is_empty()
    }

    fn found_in(&self, hay: &str) -> bool {
        if self.folded.is_empty() {
            return true;
        }
        if hay.is_ascii() {
            // An ASCII text lowercases to ASCII: a needle with anything
            // else in it is not there.
            if !self.folded.is_ascii() {
                return false;
            }
            return self.found_in_ascii(hay.as_bytes());
        }
        self.finder.find(fold(hay).as_bytes()).is_some()
    }

    /// For an ASCII hay and an ASCII needle: lowercased a window at a
    /// time into a small buffer (overlapping by the needle's length), so
    /// nothing the size of the text is allocated.
    fn found_in_ascii(&self, hay: &[u8]) -> bool {
        const WINDOW: usize = 16 * 1024;
        let n = self.folded.len();
        if hay.len() <= WINDOW {
            return self.finder.find(&hay.to_ascii_lowercase()).is_some();
        }
        let mut buf = Vec::with_capacity(WINDOW + n);
        let mut start = 0;
        while start < hay.len() {
            let end = (start + WINDOW + n).min(hay.len());
            buf.clear();
            buf.extend(hay[start..end].iter().map(u8::to_ascii_lowercase));
            if self.finder.find(&buf).is_some() {
                return true;
            }
            if end == hay.len() {
                break;
            }
            start += WINDOW;
        }
        false
    }
}

/// The date part of a `Date:` header, in the sender's own time zone (what
/// SENTBEFORE/SENTON/SENTSINCE compare, RFC 9051 §6.4.4), plus the
/// instant for SORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SentDate {
    /// Year.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
    /// Day of month, 1–31.
    pub day: u8,
    /// Seconds since the Unix epoch, UTC.
    pub timestamp: i64,
}

impl SentDate {
    /// Parses an RFC 5322 date-time, leniently (RFC 5322 §4.3 obsolete
    /// forms too): optional day name, day, month name, 2- or 4-digit year,
    /// `hh:mm[:ss]`, and a numeric or named zone (unknown names are
    /// +0000). Comments are ignored. `None` when no valid date is found.
    pub fn parse(raw: &[u8]) -> Option<SentDate> {
        let text = String::from_utf8_lossy(raw);
        // Comments out, separators to spaces.
        let mut clean = String::with_capacity(text.len());
        let mut depth = 0usize;
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ if depth > 0 => {}
                ',' => clean.push(' '),
                c => clean.push(c),
            }
        }
        let mut words = clean.split_whitespace().peekable();
        // Optional day of week.
        if words
            .peek()
            .is_some_and(|w| w.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        {
            words.next();
        }
        let day: u8 = words.next()?.parse().ok()?;
        let month_name = words.next()?.get(..3)?.to_ascii_lowercase();
        const MONTHS: [&str; 12] = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        let month = MONTHS.iter().position(|m| *m == month_name)? as u8 + 1;
        let year_word = words.next()?;
        let mut year: u16 = year_word.parse().ok()?;
        if year_word.len() <= 2 {
            year += if year < 50 { 2000 } else { 1900 };
        } else if year_word.len() == 3 {
            year += 1900;
        }
        let time = words.next().unwrap_or("00:00");
        let mut hms = time.split(':').map(|t| t.parse::<u8>().ok());
        let hour = hms.next().flatten()?;
        let minute = hms.next().flatten()?;
        let second = hms.next().flatten().unwrap_or(0);
        let zone = words.next().map_or(0, zone_minutes);
        let days_in_month = match month {
            2 if year.is_multiple_of(4)
                && (!year.is_multiple_of(100) || year.is_multiple_of(400)) =>
            {
                29
            }
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
        let timestamp =
            days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
                - zone * 60;
        Some(SentDate {
            year,
            month,
            day,
            timestamp,
        })
    }

    /// `(year, month, day)` for comparing with a SEARCH date.
    pub fn date(&self) -> (u16, u8, u8) {
        (self.year, self.month, self.day)
    }
}

/// A zone as minutes east of UTC: `+hhmm`/`-hhmm`, or RFC 5322's
/// obsolete names; anything else (military letters, unknown) is 0.
fn zone_minutes(z: &str) -> i64 {
    let b = z.as_bytes();
    if b.len() == 5 && (b[0] == b'+' || b[0] == b'-') && b[1..].iter().all(u8::is_ascii_digit) {
        let n: i64 = z[1..].parse().unwrap_or(0);
        let m = (n / 100) * 60 + n % 100;
        return if b[0] == b'-' { -m } else { m };
    }
    match z.to_ascii_uppercase().as_str() {
        "EDT" => -4 * 60,
        "EST" | "CDT" => -5 * 60,
        "CST" | "MDT" => -6 * 60,
        "MST" | "PDT" => -7 * 60,
        "PST" => -8 * 60,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn text_parts<'p>(p: &'p Part, out: &mut Vec<&'p Part>) {
    match &p.kind {
        Kind::Leaf if p.media.kind == "text" || p.media.kind == "message" => out.push(p),
        Kind::Leaf => {}
        Kind::Multipart(ch) => ch.iter().for_each(|c| text_parts(c, out)),
        Kind::Message(inner) => text_parts(inner, out),
    }
}

impl Message<'_> {
    /// SEARCH HEADER / FROM / TO / CC / BCC / SUBJECT: whether a field
    /// called `name` contains `needle`. An empty needle matches any message
    /// that has the field.
    pub fn header_contains(&self, name: &[u8], needle: &str) -> bool {
        let needle = Needle::new(needle);
        fields(self.header())
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .any(|f| needle.is_empty() || needle.found_in(&decode_header_value(f.value)))
    }

    /// The decoded text of every searchable part (`text/*`, and
    /// `message/*` leaves), as UTF-8. A part whose transfer encoding is
    /// unknown cannot be decoded and is left out, as Dovecot does.
    pub fn body_texts(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.any_body_text(|t| {
            out.push(t.to_owned());
            false
        });
        out
    }

    /// Calls `f` with the decoded text of each searchable part (see
    /// [`Self::body_texts`]) until it returns true; returns whether it
    /// did. Parts already valid UTF-8 (7bit, 8bit, in US-ASCII or UTF-8)
    /// are not copied.
    fn any_body_text(&self, mut f: impl FnMut(&str) -> bool) -> bool {
        let mut parts = Vec::new();
        text_parts(self.root(), &mut parts);
        let bytes = self.bytes();
        parts.into_iter().any(|p| {
            let Ok(decoded) = crate::binary::decode_lenient(&p.encoding, &bytes[p.body.clone()])
            else {
                return false;
            };
            f(&crate::charset::to_utf8(
                p.media.param(b"charset").unwrap_or(b""),
                &decoded,
            ))
        })
    }

    /// SEARCH BODY: whether a text part contains `needle`.
    pub fn body_contains(&self, needle: &str) -> bool {
        let needle = Needle::new(needle);
        self.any_body_text(|t| needle.found_in(t))
    }

    /// SEARCH TEXT: whether the header (decoded field by field, as
    /// `Name: value`) or a text part contains `needle`.
    pub fn text_contains(&self, needle: &str) -> bool {
        let needle = Needle::new(needle);
        let in_header = fields(self.header()).any(|f| {
            let line = format!(
                "{}: {}",
                String::from_utf8_lossy(f.name),
                decode_header_value(f.value)
            );
            needle.found_in(&line)
        });
        in_header || self.any_body_text(|t| needle.found_in(t))
    }

    /// The `Date:` header as a [`SentDate`], if present and valid. When it
    /// is not, Dovecot's SENTBEFORE/SENTON/SENTSINCE use the internal date
    /// instead; the server should do the same.
    pub fn sent_date(&self) -> Option<SentDate> {
        crate::header::last_value(self.header(), b"date").and_then(SentDate::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use proptest::prelude::*;

    /// The definition the fast paths must agree with.
    fn reference(hay: &str, needle: &str) -> bool {
        let f = |s: &str| -> String { s.chars().flat_map(char::to_lowercase).collect() };
        f(hay).contains(&f(needle))
    }

    #[test]
    fn needle_matching_is_unicode_lowercasing_of_both_sides() {
        let cases = [
            ("Zebracorn here", "ZEBRACORN"),
            ("plain ascii", "ascii"),
            ("plain ascii", "ASCIİ"),
            // KELVIN SIGN lowercases to ASCII `k`.
            ("\u{212A}ilo", "kilo"),
            ("ascii only", "k\u{212A}"),
            // İ lowercases to i + COMBINING DOT ABOVE.
            ("İstanbul", "i\u{307}stanbul"),
            ("İstanbul", "istanbul"),
            ("Straße", "STRASSE"),
            ("Straße", "straße"),
            ("CRÈME brûlée", "crème BRÛLÉE"),
            ("", ""),
            ("abc", ""),
        ];
        for (hay, needle) in cases {
            assert_eq!(
                Needle::new(needle).found_in(hay),
                reference(hay, needle),
                "{hay:?} {needle:?}"
            );
        }
        // Across the window boundary of a long ASCII text.
        let mut long = "x".repeat(16 * 1024 - 3);
        long.push_str("NeEdLe");
        long.push_str(&"y".repeat(20_000));
        assert!(Needle::new("needle").found_in(&long));
        assert!(!Needle::new("needles").found_in(&long));
        assert_eq!(fold("AbC\u{212A}Ü"), "abckü");
    }

    proptest! {
        #[test]
        fn needles_agree_with_the_definition(
            hay in "([a-zA-Z \u{212A}\u{130}ßÜüéÉ]{0,40}|[a-zA-Z ]{17000,17100})",
            needle in "[a-zA-Z\u{212A}\u{130}ßÜü]{0,4}",
        ) {
            prop_assert_eq!(Needle::new(&needle).found_in(&hay), reference(&hay, &needle));
            prop_assert_eq!(fold(&hay), hay.chars().flat_map(char::to_lowercase).collect::<String>());
        }
    }

    const MSG: &str = "From: =?ISO-8859-1?Q?Andr=E9?= <andre@x.test>\r\n\
        Subject: =?utf-8?B?U3RyYcOfZQ==?= report\r\n\
        Date: Tue, 1 Jul 2025 23:30:00 -0700\r\n\
        Content-Type: multipart/alternative; boundary=b\r\n\r\n\
        --b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\r\nCr=E8me br=FBl=E9e\r\n\
        --b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
        PGI+SGVsbG88L2I+\r\n\
        --b\r\nContent-Type: image/png\r\n\r\nsecretword\r\n--b--\r\n";

    #[test]
    fn header_matching_decodes_and_folds() {
        let m = Message::parse(MSG.as_bytes(), &Limits::default());
        let cases: &[(&[u8], &str, bool)] = &[
            (b"from", "andré", true),
            (b"FROM", "ANDRÉ", true),
            (b"from", "andre@x", true),
            (b"subject", "straße report", true),
            (b"subject", "STRASSE", false),
            (b"subject", "", true),
            (b"x-missing", "", false),
            (b"to", "andre", false),
        ];
        for (name, needle, want) in cases {
            assert_eq!(
                m.header_contains(name, needle),
                *want,
                "{} {needle}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn body_and_text() {
        let m = Message::parse(MSG.as_bytes(), &Limits::default());
        assert!(m.body_contains("CRÈME brûlée"));
        assert!(m.body_contains("<b>hello"));
        assert!(
            !m.body_contains("secretword"),
            "non-text parts are not searched"
        );
        assert!(!m.body_contains("Straße"));
        assert!(m.text_contains("straße"));
        assert!(m.text_contains("content-type: multipart"));
        assert!(m.text_contains("crème"));
        assert!(!m.text_contains("nowhere"));
    }

    #[test]
    fn sent_date_is_local_date() {
        let m = Message::parse(MSG.as_bytes(), &Limits::default());
        let d = m.sent_date().unwrap();
        assert_eq!(d.date(), (2025, 7, 1));
        assert_eq!(d.timestamp, 1_751_437_800);
        assert_eq!(SentDate::parse(b"not a date"), None);
        type Want = Option<((u16, u8, u8), i64)>;
        let cases: &[(&str, Want)] = &[
            ("1 Jan 2024 00:00 GMT", Some(((2024, 1, 1), 1_704_067_200))),
            (
                "Mon, 1 Jan 2024 00:00:00 +0000",
                Some(((2024, 1, 1), 1_704_067_200)),
            ),
            (
                "Thu, 29 Feb 2024 23:59:60 -0130 (odd)",
                Some(((2024, 2, 29), 1_709_256_600)),
            ),
            ("1 January 99 01:02 EST", Some(((1999, 1, 1), 915_170_520))),
            ("31 Dec 1969 23:59:59 +0000", Some(((1969, 12, 31), -1))),
            ("30 Feb 2024 00:00 +0000", None),
            ("1 Foo 2024 00:00 +0000", None),
            ("1 Jan 2024 25:00 +0000", None),
            ("", None),
        ];
        for (raw, want) in cases {
            let got = SentDate::parse(raw.as_bytes()).map(|d| (d.date(), d.timestamp));
            assert_eq!(got, *want, "{raw}");
        }
    }
}
