//! Values shared by commands and responses: tags, mailbox names, flags,
//! sequence sets, dates, sections.
//!
//! Each type holds only what the grammar allows where it can say so
//! cheaply (a [`Tag`] is never empty, a [`SeqNum`] is never 0, a [`Date`]
//! is a real calendar day); mailbox names and strings stay bytes, because
//! whether they are UTF-8 or modified UTF-7 depends on what the client
//! enabled (see [`crate::utf7`]).

use std::fmt;
use std::num::NonZeroU32;

use thiserror::Error;

/// A value that does not fit its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a valid tag (empty, too long, or a character outside ASTRING-CHAR minus `+`).
    #[error("invalid tag")]
    Tag,
    /// Not a valid atom.
    #[error("invalid atom")]
    Atom,
    /// Not a calendar date or time.
    #[error("invalid date")]
    Date,
}

/// A command tag: 1 to 64 ASTRING-CHARs other than `+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    /// Longest tag accepted.
    pub const MAX_LEN: usize = 64;

    /// Validate a tag.
    pub fn new(s: &str) -> Result<Tag, ValueError> {
        Tag::from_bytes(s.as_bytes())
    }

    /// Validate a tag given as bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Tag, ValueError> {
        if b.is_empty()
            || b.len() > Tag::MAX_LEN
            || !b.iter().all(|&c| crate::parse::is_tag_char(c))
        {
            return Err(ValueError::Tag);
        }
        // All tag chars are ASCII.
        Ok(Tag(b.iter().map(|&c| char::from(c)).collect()))
    }

    /// The tag's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An atom: 1 or more ATOM-CHARs (ASCII, no specials).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Atom(pub(crate) String);

impl Atom {
    /// Validate an atom.
    pub fn new(s: &str) -> Result<Atom, ValueError> {
        if s.is_empty() || !s.bytes().all(crate::parse::is_atom_char) {
            return Err(ValueError::Atom);
        }
        Ok(Atom(s.to_owned()))
    }

    /// The atom's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Case-insensitive comparison (IMAP keywords are case-insensitive).
    pub fn eq_ignore_case(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mailbox name as the client sent it: raw octets, INBOX in any case
/// normalised to `INBOX`. Decode with [`Mailbox::to_utf8`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox(Vec<u8>);

impl Mailbox {
    /// A mailbox from its wire octets (INBOX is normalised).
    pub fn from_bytes(b: &[u8]) -> Mailbox {
        if b.eq_ignore_ascii_case(b"INBOX") {
            Mailbox(b"INBOX".to_vec())
        } else {
            Mailbox(b.to_vec())
        }
    }

    /// The INBOX.
    pub fn inbox() -> Mailbox {
        Mailbox(b"INBOX".to_vec())
    }

    /// Whether this is the INBOX.
    pub fn is_inbox(&self) -> bool {
        self.0 == b"INBOX"
    }

    /// The wire octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as UTF-8: taken as is when `utf8` (IMAP4rev2 or
    /// UTF8=ACCEPT is on), else decoded from modified UTF-7. `None` when
    /// the octets are not valid in that form.
    pub fn to_utf8(&self, utf8: bool) -> Option<String> {
        let s = std::str::from_utf8(&self.0).ok()?;
        if utf8 {
            Some(s.to_owned())
        } else {
            crate::utf7::decode(s).ok()
        }
    }

    /// A mailbox for a UTF-8 name, encoded for the client: as is when
    /// `utf8`, else in modified UTF-7.
    pub fn from_utf8(name: &str, utf8: bool) -> Mailbox {
        if utf8 {
            Mailbox::from_bytes(name.as_bytes())
        } else {
            Mailbox::from_bytes(crate::utf7::encode(name).as_bytes())
        }
    }
}

/// A message flag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Flag {
    /// `\Answered`
    Answered,
    /// `\Flagged`
    Flagged,
    /// `\Deleted`
    Deleted,
    /// `\Seen`
    Seen,
    /// `\Draft`
    Draft,
    /// A keyword (`$Forwarded`, `Junk`, ...), as sent.
    Keyword(Atom),
    /// Another system flag (`\Recent`, future `\Foo`), the atom after `\`.
    Extension(Atom),
}

impl Flag {
    /// Parse a flag from its text (`\Seen`, `$Junk`).
    pub fn parse(s: &str) -> Result<Flag, ValueError> {
        if let Some(rest) = s.strip_prefix('\\') {
            let a = Atom::new(rest)?;
            Ok(match rest.to_ascii_lowercase().as_str() {
                "answered" => Flag::Answered,
                "flagged" => Flag::Flagged,
                "deleted" => Flag::Deleted,
                "seen" => Flag::Seen,
                "draft" => Flag::Draft,
                _ => Flag::Extension(a),
            })
        } else {
            Ok(Flag::Keyword(Atom::new(s)?))
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flag::Answered => f.write_str("\\Answered"),
            Flag::Flagged => f.write_str("\\Flagged"),
            Flag::Deleted => f.write_str("\\Deleted"),
            Flag::Seen => f.write_str("\\Seen"),
            Flag::Draft => f.write_str("\\Draft"),
            Flag::Keyword(a) => write!(f, "{a}"),
            Flag::Extension(a) => write!(f, "\\{a}"),
        }
    }
}

/// One end of a sequence range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeqNum {
    /// A message number or UID.
    Value(NonZeroU32),
    /// `*`: the largest number in use.
    Largest,
}

impl SeqNum {
    /// The number, with `*` standing for `largest`.
    pub fn resolve(self, largest: u32) -> u32 {
        match self {
            SeqNum::Value(v) => v.get(),
            SeqNum::Largest => largest,
        }
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeqNum::Value(v) => write!(f, "{v}"),
            SeqNum::Largest => f.write_str("*"),
        }
    }
}

/// `a`, or `a:b` (either order; `b:a` means the same range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqRange {
    /// First number as written.
    pub start: SeqNum,
    /// Second number as written (equal to `start` for a single number).
    pub end: SeqNum,
}

impl SeqRange {
    /// The range as `lo..=hi` given the largest number in use.
    pub fn bounds(&self, largest: u32) -> (u32, u32) {
        let a = self.start.resolve(largest);
        let b = self.end.resolve(largest);
        (a.min(b), a.max(b))
    }
}

/// A sequence set: ranges, or `$` (the saved SEARCHRES result, RFC 5182).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SequenceSet {
    /// `$`
    Saved,
    /// One or more ranges, as written.
    Ranges(Vec<SeqRange>),
}

impl SequenceSet {
    /// Whether `n` is in the set (never true for [`SequenceSet::Saved`],
    /// which the caller must resolve itself).
    pub fn contains(&self, n: u32, largest: u32) -> bool {
        match self {
            SequenceSet::Saved => false,
            SequenceSet::Ranges(r) => r.iter().any(|r| {
                let (lo, hi) = r.bounds(largest);
                (lo..=hi).contains(&n)
            }),
        }
    }
}

impl fmt::Display for SequenceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequenceSet::Saved => f.write_str("$"),
            SequenceSet::Ranges(ranges) => {
                for (i, r) in ranges.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    if r.start == r.end {
                        write!(f, "{}", r.start)?;
                    } else {
                        write!(f, "{}:{}", r.start, r.end)?;
                    }
                }
                Ok(())
            }
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A calendar date (SEARCH keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    /// Four-digit year.
    pub year: u16,
    /// 1 to 12.
    pub month: u8,
    /// 1 to 31, valid for the month.
    pub day: u8,
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// Validate a date.
    pub fn new(year: u16, month: u8, day: u8) -> Result<Date, ValueError> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || year > 9999
        {
            return Err(ValueError::Date);
        }
        Ok(Date { year, month, day })
    }

    /// Month from its three-letter English name (any case).
    pub(crate) fn month_from_name(name: &[u8]) -> Option<u8> {
        MONTHS
            .iter()
            .position(|m| m.as_bytes().eq_ignore_ascii_case(name))
            .map(|i| i as u8 + 1)
    }
}

impl fmt::Display for Date {
    /// `d-Mon-yyyy`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{:04}",
            self.day,
            MONTHS[usize::from(self.month - 1)],
            self.year
        )
    }
}

/// A date and time with zone (INTERNALDATE, APPEND).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    /// The calendar day.
    pub date: Date,
    /// 0 to 23.
    pub hour: u8,
    /// 0 to 59.
    pub minute: u8,
    /// 0 to 60.
    pub second: u8,
    /// Offset east of UTC in minutes (-5999 to 5999 as the grammar allows
    /// `+hhmm` with mm < 60).
    pub zone_minutes: i16,
}

impl DateTime {
    /// Validate a date-time.
    pub fn new(
        date: Date,
        hour: u8,
        minute: u8,
        second: u8,
        zone_minutes: i16,
    ) -> Result<DateTime, ValueError> {
        if hour > 23 || minute > 59 || second > 60 || zone_minutes.unsigned_abs() > 99 * 60 + 59 {
            return Err(ValueError::Date);
        }
        Ok(DateTime {
            date,
            hour,
            minute,
            second,
            zone_minutes,
        })
    }

    /// Seconds since the Unix epoch (UTC).
    pub fn unix_seconds(&self) -> i64 {
        // Days from civil (Howard Hinnant's algorithm).
        let y = i64::from(self.date.year) - i64::from(self.date.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.date.month);
        let doy =
            (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.date.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.zone_minutes) * 60
    }
}

impl fmt::Display for DateTime {
    /// `dd-Mon-yyyy hh:mm:ss +zzzz` (day padded with a space), no quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.zone_minutes < 0 { '-' } else { '+' };
        let z = self.zone_minutes.unsigned_abs();
        write!(
            f,
            "{:>2}-{}-{:04} {:02}:{:02}:{:02} {}{:02}{:02}",
            self.date.day,
            MONTHS[usize::from(self.date.month - 1)],
            self.date.year,
            self.hour,
            self.minute,
            self.second,
            sign,
            z / 60,
            z % 60
        )
    }
}

/// Which part of a message a BODY[...] fetch names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Section {
    /// MIME part numbers (`1.2.3`); empty for the whole message.
    pub part: Vec<u32>,
    /// What of that part.
    pub text: Option<SectionText>,
}

/// The text specifier of a section.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SectionText {
    /// `HEADER`
    Header,
    /// `HEADER.FIELDS (a b)`: field names as sent.
    HeaderFields(Vec<Vec<u8>>),
    /// `HEADER.FIELDS.NOT (a b)`
    HeaderFieldsNot(Vec<Vec<u8>>),
    /// `TEXT`
    Text,
    /// `MIME` (only after a part number).
    Mime,
}

impl fmt::Display for Section {
    /// The text between the brackets (header field names are written as
    /// atoms when they are atoms, else quoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.part.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        let Some(text) = &self.text else {
            return Ok(());
        };
        if !self.part.is_empty() {
            f.write_str(".")?;
        }
        let fields = |f: &mut fmt::Formatter<'_>, names: &[Vec<u8>]| -> fmt::Result {
            f.write_str(" (")?;
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                let s = String::from_utf8_lossy(n);
                if !n.is_empty() && n.iter().all(|&b| crate::parse::is_astring_char(b)) {
                    f.write_str(&s)?;
                } else {
                    write!(f, "\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))?;
                }
            }
            f.write_str(")")
        };
        match text {
            SectionText::Header => f.write_str("HEADER"),
            SectionText::HeaderFields(n) => {
                f.write_str("HEADER.FIELDS")?;
                fields(f, n)
            }
            SectionText::HeaderFieldsNot(n) => {
                f.write_str("HEADER.FIELDS.NOT")?;
                fields(f, n)
            }
            SectionText::Text => f.write_str("TEXT"),
            SectionText::Mime => f.write_str("MIME"),
        }
    }
}

/// A STATUS data item name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatusItem {
    /// `MESSAGES`
    Messages,
    /// `UIDNEXT`
    UidNext,
    /// `UIDVALIDITY`
    UidValidity,
    /// `UNSEEN`
    Unseen,
    /// `DELETED` (RFC 9051)
    Deleted,
    /// `SIZE` (STATUS=SIZE, RFC 8438)
    Size,
    /// `RECENT` (IMAP4rev1 only)
    Recent,
    /// `HIGHESTMODSEQ` (CONDSTORE)
    HighestModSeq,
    /// `APPENDLIMIT` (RFC 7889)
    AppendLimit,
    /// `MAILBOXID` (OBJECTID, RFC 8474)
    MailboxId,
}

impl StatusItem {
    /// The item's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            StatusItem::Messages => "MESSAGES",
            StatusItem::UidNext => "UIDNEXT",
            StatusItem::UidValidity => "UIDVALIDITY",
            StatusItem::Unseen => "UNSEEN",
            StatusItem::Deleted => "DELETED",
            StatusItem::Size => "SIZE",
            StatusItem::Recent => "RECENT",
            StatusItem::HighestModSeq => "HIGHESTMODSEQ",
            StatusItem::AppendLimit => "APPENDLIMIT",
            StatusItem::MailboxId => "MAILBOXID",
        }
    }

    /// Every item, for lookups by name.
    pub const ALL: [StatusItem; 10] = [
        StatusItem::Messages,
        StatusItem::UidNext,
        StatusItem::UidValidity,
        StatusItem::Unseen,
        StatusItem::Deleted,
        StatusItem::Size,
        StatusItem::Recent,
        StatusItem::HighestModSeq,
        StatusItem::AppendLimit,
        StatusItem::MailboxId,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> SeqNum {
        SeqNum::Value(NonZeroU32::new(v).unwrap())
    }

    #[test]
    fn dates() {
        assert!(Date::new(2024, 2, 29).is_ok());
        assert_eq!(Date::new(2023, 2, 29), Err(ValueError::Date));
        assert_eq!(Date::new(1900, 2, 29), Err(ValueError::Date));
        assert!(Date::new(2000, 2, 29).is_ok());
        assert_eq!(Date::new(2024, 4, 31), Err(ValueError::Date));
        assert_eq!(Date::new(2024, 13, 1), Err(ValueError::Date));
        assert_eq!(Date::new(2024, 1, 0), Err(ValueError::Date));
        assert_eq!(Date::new(2024, 2, 9).unwrap().to_string(), "9-Feb-2024");
        let dt = |d, h, m, s, z| DateTime::new(Date::new(1970, 1, d).unwrap(), h, m, s, z).unwrap();
        assert_eq!(dt(1, 0, 0, 0, 0).unix_seconds(), 0);
        assert_eq!(dt(2, 1, 0, 0, 60).unix_seconds(), 86_400);
        assert_eq!(
            dt(1, 0, 0, 0, -60).to_string(),
            " 1-Jan-1970 00:00:00 -0100"
        );
        let later = DateTime::new(Date::new(2024, 2, 29).unwrap(), 23, 59, 60, 0).unwrap();
        assert_eq!(later.unix_seconds(), 1_709_251_200);
        assert!(DateTime::new(Date::new(2024, 1, 1).unwrap(), 24, 0, 0, 0).is_err());
    }

    #[test]
    fn sequence_sets() {
        let set = SequenceSet::Ranges(vec![
            SeqRange {
                start: n(7),
                end: n(3),
            },
            SeqRange {
                start: SeqNum::Largest,
                end: n(20),
            },
            SeqRange {
                start: n(11),
                end: n(11),
            },
        ]);
        let inside: Vec<u32> = (1..=30).filter(|&i| set.contains(i, 25)).collect();
        assert_eq!(inside, [3, 4, 5, 6, 7, 11, 20, 21, 22, 23, 24, 25]);
        assert_eq!(set.to_string(), "7:3,*:20,11");
        assert!(!SequenceSet::Saved.contains(1, 1));
        // `*` in an empty mailbox stands for 0 and matches nothing real.
        let star = SequenceSet::Ranges(vec![SeqRange {
            start: SeqNum::Largest,
            end: SeqNum::Largest,
        }]);
        assert!(!star.contains(1, 0));
    }

    #[test]
    fn tags_atoms_flags_mailboxes() {
        assert!(Tag::new("A001").is_ok());
        assert!(Tag::new("a.b]c").is_ok());
        for bad in ["", "a+b", "a b", "a*", "a(", "a\"", "é"] {
            assert_eq!(Tag::new(bad), Err(ValueError::Tag), "{bad:?}");
        }
        assert_eq!(Tag::new(&"x".repeat(65)), Err(ValueError::Tag));
        assert!(Atom::new("a]").is_err());
        assert_eq!(Flag::parse("\\SEEN"), Ok(Flag::Seen));
        assert_eq!(Flag::parse("\\Recent").unwrap().to_string(), "\\Recent");
        assert_eq!(Flag::parse("$Junk").unwrap().to_string(), "$Junk");
        assert!(Flag::parse("\\").is_err());
        assert!(Mailbox::from_bytes(b"iNbOx").is_inbox());
        assert!(!Mailbox::from_bytes(b"INBOX/x").is_inbox());
        let m = Mailbox::from_utf8("Entwürfe", false);
        assert_eq!(m.as_bytes(), b"Entw&APw-rfe");
        assert_eq!(m.to_utf8(false).as_deref(), Some("Entwürfe"));
        assert_eq!(
            Mailbox::from_utf8("Entwürfe", true)
                .to_utf8(true)
                .as_deref(),
            Some("Entwürfe")
        );
        assert_eq!(Mailbox::from_bytes(b"\xff").to_utf8(true), None);
    }

    #[test]
    fn sections_display() {
        let s = Section {
            part: vec![1, 2],
            text: Some(SectionText::HeaderFields(vec![
                b"From".to_vec(),
                b"a b".to_vec(),
            ])),
        };
        assert_eq!(s.to_string(), "1.2.HEADER.FIELDS (From \"a b\")");
        assert_eq!(
            Section {
                part: vec![3],
                text: Some(SectionText::Mime)
            }
            .to_string(),
            "3.MIME"
        );
        assert_eq!(Section::default().to_string(), "");
    }
}
