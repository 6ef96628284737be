//! The command parser: one framed command (from [`crate::framing`]) in, a
//! typed [`Command`] or a [`CommandError`] out.
//!
//! A hand-written recursive-descent parser over the RFC 9051 / RFC 3501
//! grammar and the extensions Tern serves. Its recursion is capped
//! ([`MAX_DEPTH`]) and it works in time linear in its input. It never
//! accepts NUL, CR or LF inside a quoted string, NUL in a non-binary
//! literal, or invalid UTF-8 in a quoted string. Errors carry the tag when
//! one was read, so the session can answer `tag BAD` (else `* BAD`).
//!
//! It must never allocate more than a small multiple of its input, and
//! never panic on any input (a fuzz target checks both).

use std::num::NonZeroU32;

use base64::Engine as _;
use thiserror::Error;

use crate::command::*;
use crate::types::*;

/// Deepest nesting of parentheses, NOT and OR in a search (and lists
/// elsewhere). Deeper input is refused with [`ParseError::TooDeep`].
pub const MAX_DEPTH: usize = 32;

/// Why a command did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The tag is missing or invalid.
    #[error("missing or invalid tag")]
    Tag,
    /// The command name is not one Tern knows.
    #[error("unknown command")]
    UnknownCommand,
    /// The arguments do not follow the grammar.
    #[error("syntax error at octet {at}: expected {expected}")]
    Syntax {
        /// Offset in the command.
        at: usize,
        /// What was expected there.
        expected: &'static str,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("nesting too deep")]
    TooDeep,
    /// A combination the extension's RFC forbids (VANISHED without
    /// CHANGEDSINCE, RECURSIVEMATCH alone, ...).
    #[error("{0}")]
    Invalid(&'static str),
}

/// A command that did not parse, with its tag when it had one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{error}")]
pub struct CommandError {
    /// The tag, when a valid one was read (answer `tag BAD`, else `* BAD`).
    pub tag: Option<Tag>,
    /// What was wrong.
    pub error: ParseError,
}

type R<T> = Result<T, ParseError>;

/// ATOM-CHAR: any CHAR except atom-specials.
pub(crate) fn is_atom_char(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
        && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// ASTRING-CHAR: ATOM-CHAR or `]`.
pub(crate) fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// A tag character: ASTRING-CHAR except `+`.
pub(crate) fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

fn is_list_char(b: u8) -> bool {
    is_astring_char(b) || b == b'%' || b == b'*'
}

/// Parse one framed command (CRLF included, literals inline).
pub fn parse_command(input: &[u8]) -> Result<Command, CommandError> {
    let mut p = P {
        b: input,
        i: 0,
        depth: 0,
    };
    let tag = match p.tag() {
        Ok(t) => t,
        Err(_) => {
            return Err(CommandError {
                tag: None,
                error: ParseError::Tag,
            });
        }
    };
    match p.command_after_tag() {
        Ok(body) => Ok(Command { tag, body }),
        Err(error) => Err(CommandError {
            tag: Some(tag),
            error,
        }),
    }
}

/// What an AUTHENTICATE continuation line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthLine {
    /// `*`: the client cancels the exchange.
    Cancel,
    /// Base64-decoded response octets.
    Data(Vec<u8>),
}

/// Parse one AUTHENTICATE continuation line (without its CRLF).
pub fn parse_auth_line(line: &[u8]) -> Result<AuthLine, ParseError> {
    if line == b"*" {
        return Ok(AuthLine::Cancel);
    }
    decode_base64(line).map(AuthLine::Data)
}

/// Whether a line (without its CRLF) is the `DONE` that ends IDLE.
pub fn is_idle_done(line: &[u8]) -> bool {
    line.eq_ignore_ascii_case(b"DONE")
}

fn decode_base64(b: &[u8]) -> R<Vec<u8>> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(b)
        .map_err(|_| ParseError::Syntax {
            at: 0,
            expected: "base64",
        })
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl<'a> P<'a> {
    fn err<T>(&self, expected: &'static str) -> R<T> {
        Err(ParseError::Syntax {
            at: self.i,
            expected,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8, what: &'static str) -> R<()> {
        if self.eat(c) { Ok(()) } else { self.err(what) }
    }

    fn sp(&mut self) -> R<()> {
        self.expect(b' ', "SP")
    }

    fn crlf(&mut self) -> R<()> {
        if self.at_crlf() {
            self.i += 2;
            Ok(())
        } else {
            self.err("CRLF")
        }
    }

    fn at_crlf(&self) -> bool {
        self.b[self.i..].starts_with(b"\r\n")
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(ParseError::TooDeep)
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.b[start..self.i]
    }

    fn tag(&mut self) -> R<Tag> {
        let t = self.take_while(is_tag_char);
        Tag::from_bytes(t).map_err(|_| ParseError::Tag)
    }

    fn atom(&mut self) -> R<&'a [u8]> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            self.err("atom")
        } else {
            Ok(a)
        }
    }

    fn atom_owned(&mut self) -> R<Atom> {
        let a = self.atom()?;
        // Atom chars are ASCII, so this is the atom unchanged.
        Ok(Atom(a.iter().map(|&c| char::from(c)).collect()))
    }

    /// A case-insensitive keyword made of letters, digits, `.` and `-`.
    fn word(&mut self) -> &'a [u8] {
        self.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'=')
    }

    fn keyword(&mut self, kw: &str) -> R<()> {
        let start = self.i;
        let w = self.take_while(is_atom_char);
        if w.eq_ignore_ascii_case(kw.as_bytes()) {
            Ok(())
        } else {
            self.i = start;
            self.err("keyword")
        }
    }

    fn digits(&mut self) -> R<&'a [u8]> {
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() {
            self.err("number")
        } else {
            Ok(d)
        }
    }

    fn number64(&mut self) -> R<u64> {
        let at = self.i;
        let d = self.digits()?;
        let mut v: u64 = 0;
        for &c in d {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .ok_or(ParseError::Syntax {
                    at,
                    expected: "number",
                })?;
        }
        Ok(v)
    }

    fn number(&mut self) -> R<u32> {
        let at = self.i;
        let v = self.number64()?;
        u32::try_from(v).map_err(|_| ParseError::Syntax {
            at,
            expected: "32-bit number",
        })
    }

    fn nz_number(&mut self) -> R<NonZeroU32> {
        let at = self.i;
        if self.peek() == Some(b'0') {
            return self.err("non-zero number");
        }
        let v = self.number()?;
        NonZeroU32::new(v).ok_or(ParseError::Syntax {
            at,
            expected: "non-zero number",
        })
    }

    /// mod-sequence-value: 1 to 2^63-1.
    fn modseq(&mut self, allow_zero: bool) -> R<u64> {
        let at = self.i;
        let v = self.number64()?;
        if v > i64::MAX as u64 || (v == 0 && !allow_zero) {
            return Err(ParseError::Syntax {
                at,
                expected: "mod-sequence value",
            });
        }
        Ok(v)
    }

    fn quoted(&mut self) -> R<Vec<u8>> {
        self.expect(b'"', "quoted string")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return self.err("closing quote"),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => return self.err("quoted-special after backslash"),
                    }
                }
                Some(0 | b'\r' | b'\n') => return self.err("TEXT-CHAR"),
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        if !out.is_ascii() && std::str::from_utf8(&out).is_err() {
            return self.err("UTF-8");
        }
        Ok(out)
    }

    /// `{n}` / `{n+}` CRLF n octets, or `~{n}` when `binary_ok`. Returns
    /// the data and whether it was a literal8.
    fn literal(&mut self, binary_ok: bool) -> R<(Vec<u8>, bool)> {
        let binary = self.eat(b'~');
        if binary && !binary_ok {
            return self.err("literal");
        }
        self.expect(b'{', "literal")?;
        let n = self.number()? as usize;
        self.eat(b'+');
        self.expect(b'}', "}")?;
        self.crlf()?;
        if self.b.len() - self.i < n {
            return self.err("literal data");
        }
        let data = &self.b[self.i..self.i + n];
        if !binary && data.contains(&0) {
            return self.err("CHAR8");
        }
        self.i += n;
        Ok((data.to_vec(), binary))
    }

    fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => Ok(self.literal(false)?.0),
            _ => self.err("string"),
        }
    }

    fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    self.err("astring")
                } else {
                    Ok(a.to_vec())
                }
            }
        }
    }

    fn nstring(&mut self) -> R<Option<Vec<u8>>> {
        if matches!(self.peek(), Some(b'n' | b'N')) {
            self.keyword("NIL")?;
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    fn mailbox(&mut self) -> R<Mailbox> {
        Ok(Mailbox::from_bytes(&self.astring()?))
    }

    fn list_mailbox(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    self.err("list-mailbox")
                } else {
                    Ok(a.to_vec())
                }
            }
        }
    }

    fn seq_number(&mut self) -> R<SeqNum> {
        if self.eat(b'*') {
            Ok(SeqNum::Largest)
        } else {
            Ok(SeqNum::Value(self.nz_number()?))
        }
    }

    fn sequence_set(&mut self) -> R<SequenceSet> {
        if self.eat(b'$') {
            return Ok(SequenceSet::Saved);
        }
        let mut ranges = Vec::new();
        loop {
            let start = self.seq_number()?;
            let end = if self.eat(b':') {
                self.seq_number()?
            } else {
                start
            };
            ranges.push(SeqRange { start, end });
            if !self.eat(b',') {
                break;
            }
        }
        Ok(SequenceSet::Ranges(ranges))
    }

    fn month(&mut self) -> R<u8> {
        let at = self.i;
        let m = self
            .b
            .get(self.i..self.i + 3)
            .and_then(Date::month_from_name);
        match m {
            Some(m) => {
                self.i += 3;
                Ok(m)
            }
            None => Err(ParseError::Syntax {
                at,
                expected: "month",
            }),
        }
    }

    fn fixed_digits(&mut self, n: usize) -> R<u32> {
        let at = self.i;
        let d = self
            .b
            .get(self.i..self.i + n)
            .filter(|d| d.iter().all(u8::is_ascii_digit));
        let Some(d) = d else {
            return Err(ParseError::Syntax {
                at,
                expected: "digits",
            });
        };
        self.i += n;
        Ok(d.iter().fold(0, |v, &c| v * 10 + u32::from(c - b'0')))
    }

    /// `date` (SEARCH): d-Mon-yyyy, optionally quoted.
    fn date(&mut self) -> R<Date> {
        let quoted = self.eat(b'"');
        let at = self.i;
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() || d.len() > 2 {
            return Err(ParseError::Syntax {
                at,
                expected: "day",
            });
        }
        let day = d.iter().fold(0u8, |v, &c| v * 10 + (c - b'0'));
        self.expect(b'-', "-")?;
        let month = self.month()?;
        self.expect(b'-', "-")?;
        let year = self.fixed_digits(4)? as u16;
        if quoted {
            self.expect(b'"', "closing quote")?;
        }
        Date::new(year, month, day).map_err(|_| ParseError::Syntax {
            at,
            expected: "date",
        })
    }

    /// `date-time`: "dd-Mon-yyyy hh:mm:ss +zzzz".
    fn date_time(&mut self) -> R<DateTime> {
        self.expect(b'"', "date-time")?;
        let at = self.i;
        let day = if self.eat(b' ') {
            self.fixed_digits(1)?
        } else {
            self.fixed_digits(2)?
        } as u8;
        self.expect(b'-', "-")?;
        let month = self.month()?;
        self.expect(b'-', "-")?;
        let year = self.fixed_digits(4)? as u16;
        self.sp()?;
        let hour = self.fixed_digits(2)? as u8;
        self.expect(b':', ":")?;
        let minute = self.fixed_digits(2)? as u8;
        self.expect(b':', ":")?;
        let second = self.fixed_digits(2)? as u8;
        self.sp()?;
        let neg = match self.peek() {
            Some(b'+') => false,
            Some(b'-') => true,
            _ => return self.err("zone"),
        };
        self.i += 1;
        let zh = self.fixed_digits(2)? as i16;
        let zm = self.fixed_digits(2)? as i16;
        self.expect(b'"', "closing quote")?;
        let bad = ParseError::Syntax {
            at,
            expected: "date-time",
        };
        if zm > 59 {
            return Err(bad);
        }
        let zone = (zh * 60 + zm) * if neg { -1 } else { 1 };
        let date = Date::new(year, month, day).map_err(|_| bad.clone())?;
        DateTime::new(date, hour, minute, second, zone).map_err(|_| bad)
    }

    fn flag(&mut self) -> R<Flag> {
        let at = self.i;
        let backslash = self.eat(b'\\');
        let a = self.atom()?;
        let mut s = String::with_capacity(a.len() + 1);
        if backslash {
            s.push('\\');
        }
        s.extend(a.iter().map(|&c| char::from(c)));
        Flag::parse(&s).map_err(|_| ParseError::Syntax {
            at,
            expected: "flag",
        })
    }

    /// `(` [flag *(SP flag)] `)`
    fn flag_list(&mut self) -> R<Vec<Flag>> {
        self.expect(b'(', "flag list")?;
        let mut flags = Vec::new();
        if self.eat(b')') {
            return Ok(flags);
        }
        loop {
            flags.push(self.flag()?);
            if self.eat(b')') {
                return Ok(flags);
            }
            self.sp()?;
        }
    }

    /// `(` item *(SP item) `)` with at least one item.
    fn paren_list<T>(&mut self, mut item: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        self.expect(b'(', "(")?;
        let mut v = Vec::new();
        loop {
            v.push(item(self)?);
            if self.eat(b')') {
                return Ok(v);
            }
            self.sp()?;
        }
    }

    fn status_item(&mut self) -> R<StatusItem> {
        let at = self.i;
        let a = self.atom()?;
        StatusItem::ALL
            .into_iter()
            .find(|s| s.name().as_bytes().eq_ignore_ascii_case(a))
            .ok_or(ParseError::Syntax {
                at,
                expected: "status item",
            })
    }

    fn command_after_tag(&mut self) -> R<CommandBody> {
        self.sp()?;
        let at = self.i;
        let name = self.atom()?.to_ascii_uppercase();
        let body = match name.as_slice() {
            b"CAPABILITY" => CommandBody::Capability,
            b"NOOP" => CommandBody::Noop,
            b"LOGOUT" => CommandBody::Logout,
            b"STARTTLS" => CommandBody::StartTls,
            b"NAMESPACE" => CommandBody::Namespace,
            b"IDLE" => CommandBody::Idle,
            b"CHECK" => CommandBody::Check,
            b"CLOSE" => CommandBody::Close,
            b"UNSELECT" => CommandBody::Unselect,
            b"EXPUNGE" => CommandBody::Expunge,
            b"AUTHENTICATE" => self.authenticate()?,
            b"LOGIN" => {
                self.sp()?;
                let username = self.astring()?;
                self.sp()?;
                let password = self.astring()?;
                CommandBody::Login { username, password }
            }
            b"ENABLE" => {
                let mut capabilities = Vec::new();
                while self.eat(b' ') {
                    capabilities.push(self.atom_owned()?);
                }
                if capabilities.is_empty() {
                    return self.err("capability");
                }
                CommandBody::Enable { capabilities }
            }
            b"SELECT" | b"EXAMINE" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                let params = self.select_params()?;
                CommandBody::Select {
                    mailbox,
                    read_only: name == b"EXAMINE",
                    params,
                }
            }
            b"CREATE" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                let mut special_use = Vec::new();
                if self.eat(b' ') {
                    let uses = self.paren_list(|p| {
                        p.keyword("USE")?;
                        p.sp()?;
                        p.expect(b'(', "(")?;
                        let mut v = Vec::new();
                        if p.eat(b')') {
                            return Ok(v);
                        }
                        loop {
                            p.expect(b'\\', "use-attr")?;
                            v.push(p.atom_owned()?);
                            if p.eat(b')') {
                                return Ok(v);
                            }
                            p.sp()?;
                        }
                    })?;
                    special_use = uses.into_iter().flatten().collect();
                }
                CommandBody::Create {
                    mailbox,
                    special_use,
                }
            }
            b"DELETE" | b"SUBSCRIBE" | b"UNSUBSCRIBE" | b"GETQUOTAROOT" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                match name.as_slice() {
                    b"DELETE" => CommandBody::Delete { mailbox },
                    b"SUBSCRIBE" => CommandBody::Subscribe { mailbox },
                    b"UNSUBSCRIBE" => CommandBody::Unsubscribe { mailbox },
                    _ => CommandBody::GetQuotaRoot { mailbox },
                }
            }
            b"RENAME" => {
                self.sp()?;
                let from = self.mailbox()?;
                self.sp()?;
                let to = self.mailbox()?;
                CommandBody::Rename { from, to }
            }
            b"LIST" => self.list()?,
            b"LSUB" => {
                self.sp()?;
                let reference = self.mailbox()?;
                self.sp()?;
                let pattern = self.list_mailbox()?;
                CommandBody::Lsub { reference, pattern }
            }
            b"STATUS" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                self.sp()?;
                let items = self.paren_list(Self::status_item)?;
                CommandBody::Status { mailbox, items }
            }
            b"APPEND" => self.append()?,
            b"SEARCH" => self.search(false)?,
            b"FETCH" => self.fetch(false)?,
            b"STORE" => self.store(false)?,
            b"COPY" | b"MOVE" => self.copy_move(false, name == b"MOVE")?,
            b"SORT" => self.sort(false)?,
            b"THREAD" => self.thread(false)?,
            b"UID" => {
                self.sp()?;
                let at = self.i;
                let sub = self.atom()?.to_ascii_uppercase();
                match sub.as_slice() {
                    b"SEARCH" => self.search(true)?,
                    b"FETCH" => self.fetch(true)?,
                    b"STORE" => self.store(true)?,
                    b"COPY" | b"MOVE" => self.copy_move(true, sub == b"MOVE")?,
                    b"SORT" => self.sort(true)?,
                    b"THREAD" => self.thread(true)?,
                    b"EXPUNGE" => {
                        self.sp()?;
                        CommandBody::UidExpunge {
                            uids: self.sequence_set()?,
                        }
                    }
                    _ => {
                        return Err(ParseError::Syntax {
                            at,
                            expected: "UID command",
                        });
                    }
                }
            }
            b"GETQUOTA" => {
                self.sp()?;
                CommandBody::GetQuota {
                    root: self.astring()?,
                }
            }
            b"SETQUOTA" => {
                self.sp()?;
                let root = self.astring()?;
                self.sp()?;
                self.expect(b'(', "(")?;
                let mut limits = Vec::new();
                if !self.eat(b')') {
                    loop {
                        let r = self.atom_owned()?;
                        self.sp()?;
                        let n = self.modseq(true)?;
                        limits.push((r, n));
                        if self.eat(b')') {
                            break;
                        }
                        self.sp()?;
                    }
                }
                CommandBody::SetQuota { root, limits }
            }
            b"ID" => {
                self.sp()?;
                let params = if self.eat(b'(') {
                    let mut v = Vec::new();
                    if !self.eat(b')') {
                        loop {
                            let k = self.string()?;
                            self.sp()?;
                            let val = self.nstring()?;
                            v.push((k, val));
                            if self.eat(b')') {
                                break;
                            }
                            self.sp()?;
                        }
                    }
                    Some(v)
                } else {
                    self.keyword("NIL")?;
                    None
                };
                CommandBody::Id { params }
            }
            b"COMPRESS" => {
                self.sp()?;
                CommandBody::Compress {
                    algorithm: self.atom_owned()?,
                }
            }
            _ => {
                let _ = at;
                return Err(ParseError::UnknownCommand);
            }
        };
        self.crlf()?;
        if self.i != self.b.len() {
            return self.err("end of command");
        }
        Ok(body)
    }

    fn authenticate(&mut self) -> R<CommandBody> {
        self.sp()?;
        let mech = self.atom_owned()?;
        let mechanism = Atom(mech.as_str().to_ascii_uppercase());
        let initial_response = if self.eat(b' ') {
            let at = self.i;
            if self.eat(b'=') {
                Some(Vec::new())
            } else {
                let b = self.take_while(|c| {
                    c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'='
                });
                if b.is_empty() {
                    return self.err("base64");
                }
                Some(decode_base64(b).map_err(|_| ParseError::Syntax {
                    at,
                    expected: "base64",
                })?)
            }
        } else {
            None
        };
        Ok(CommandBody::Authenticate {
            mechanism,
            initial_response,
        })
    }

    fn select_params(&mut self) -> R<SelectParams> {
        let mut params = SelectParams::default();
        if !self.eat(b' ') {
            return Ok(params);
        }
        self.expect(b'(', "(")?;
        loop {
            let at = self.i;
            let w = self.atom()?.to_ascii_uppercase();
            match w.as_slice() {
                b"CONDSTORE" => params.condstore = true,
                b"QRESYNC" => {
                    self.sp()?;
                    self.expect(b'(', "(")?;
                    let uid_validity = self.nz_number()?.get();
                    self.sp()?;
                    let mod_seq = self.modseq(false)?;
                    let mut known_uids = None;
                    let mut seq_match = None;
                    if self.eat(b' ') {
                        if self.peek() != Some(b'(') {
                            known_uids = Some(self.sequence_set()?);
                            if self.eat(b' ') {
                                seq_match = Some(self.seq_match()?);
                            }
                        } else {
                            seq_match = Some(self.seq_match()?);
                        }
                    }
                    self.expect(b')', ")")?;
                    params.qresync = Some(QResync {
                        uid_validity,
                        mod_seq,
                        known_uids,
                        seq_match,
                    });
                }
                _ => {
                    return Err(ParseError::Syntax {
                        at,
                        expected: "select parameter",
                    });
                }
            }
            if self.eat(b')') {
                return Ok(params);
            }
            self.sp()?;
        }
    }

    fn seq_match(&mut self) -> R<(SequenceSet, SequenceSet)> {
        self.expect(b'(', "(")?;
        let a = self.sequence_set()?;
        self.sp()?;
        let b = self.sequence_set()?;
        self.expect(b')', ")")?;
        Ok((a, b))
    }

    fn list(&mut self) -> R<CommandBody> {
        self.sp()?;
        let mut extended = false;
        let mut selection = Vec::new();
        if self.eat(b'(') {
            extended = true;
            if !self.eat(b')') {
                loop {
                    let at = self.i;
                    let w = self.atom()?.to_ascii_uppercase();
                    selection.push(match w.as_slice() {
                        b"SUBSCRIBED" => ListSelect::Subscribed,
                        b"REMOTE" => ListSelect::Remote,
                        b"RECURSIVEMATCH" => ListSelect::RecursiveMatch,
                        b"SPECIAL-USE" => ListSelect::SpecialUse,
                        _ => {
                            return Err(ParseError::Syntax {
                                at,
                                expected: "list selection option",
                            });
                        }
                    });
                    if self.eat(b')') {
                        break;
                    }
                    self.sp()?;
                }
            }
            self.sp()?;
            if selection.contains(&ListSelect::RecursiveMatch)
                && !selection
                    .iter()
                    .any(|s| matches!(s, ListSelect::Subscribed | ListSelect::SpecialUse))
            {
                return Err(ParseError::Invalid(
                    "RECURSIVEMATCH needs another selection option",
                ));
            }
        }
        let reference = self.mailbox()?;
        self.sp()?;
        let patterns = if self.peek() == Some(b'(') {
            extended = true;
            self.paren_list(Self::list_mailbox)?
        } else {
            vec![self.list_mailbox()?]
        };
        let mut returns = Vec::new();
        if self.eat(b' ') {
            extended = true;
            self.keyword("RETURN")?;
            self.sp()?;
            self.expect(b'(', "(")?;
            if !self.eat(b')') {
                loop {
                    let at = self.i;
                    let w = self.atom()?.to_ascii_uppercase();
                    returns.push(match w.as_slice() {
                        b"SUBSCRIBED" => ListReturn::Subscribed,
                        b"CHILDREN" => ListReturn::Children,
                        b"SPECIAL-USE" => ListReturn::SpecialUse,
                        b"STATUS" => {
                            self.sp()?;
                            ListReturn::Status(self.paren_list(Self::status_item)?)
                        }
                        _ => {
                            return Err(ParseError::Syntax {
                                at,
                                expected: "list return option",
                            });
                        }
                    });
                    if self.eat(b')') {
                        break;
                    }
                    self.sp()?;
                }
            }
        }
        Ok(CommandBody::List {
            selection,
            reference,
            patterns,
            returns,
            extended,
        })
    }

    fn append(&mut self) -> R<CommandBody> {
        self.sp()?;
        let mailbox = self.mailbox()?;
        let mut messages = Vec::new();
        while self.eat(b' ') {
            let mut flags = Vec::new();
            let mut date = None;
            if self.peek() == Some(b'(') {
                flags = self.flag_list()?;
                self.sp()?;
            }
            if self.peek() == Some(b'"') {
                date = Some(self.date_time()?);
                self.sp()?;
            }
            let (data, binary, utf8) = if matches!(self.peek(), Some(b'u' | b'U')) {
                self.keyword("UTF8")?;
                self.sp()?;
                self.expect(b'(', "(")?;
                let (d, b) = self.literal(true)?;
                if !b {
                    return self.err("literal8");
                }
                self.expect(b')', ")")?;
                (d, true, true)
            } else {
                let (d, b) = self.literal(true)?;
                (d, b, false)
            };
            messages.push(AppendMessage {
                flags,
                date,
                data,
                binary,
                utf8,
            });
        }
        if messages.is_empty() {
            return self.err("message");
        }
        Ok(CommandBody::Append { mailbox, messages })
    }

    fn search_returns(&mut self) -> R<Vec<SearchReturn>> {
        self.keyword("RETURN")?;
        self.sp()?;
        self.expect(b'(', "(")?;
        let mut v = Vec::new();
        if self.eat(b')') {
            return Ok(v);
        }
        loop {
            let at = self.i;
            let w = self.atom()?.to_ascii_uppercase();
            v.push(match w.as_slice() {
                b"MIN" => SearchReturn::Min,
                b"MAX" => SearchReturn::Max,
                b"ALL" => SearchReturn::All,
                b"COUNT" => SearchReturn::Count,
                b"SAVE" => SearchReturn::Save,
                _ => {
                    return Err(ParseError::Syntax {
                        at,
                        expected: "search return option",
                    });
                }
            });
            if self.eat(b')') {
                return Ok(v);
            }
            self.sp()?;
        }
    }

    fn search(&mut self, uid: bool) -> R<CommandBody> {
        self.sp()?;
        let mut returns = None;
        if self.b[self.i..].len() >= 7
            && self.b[self.i..self.i + 7].eq_ignore_ascii_case(b"RETURN ")
        {
            returns = Some(self.search_returns()?);
            self.sp()?;
        }
        let mut charset = None;
        if self.b[self.i..].len() >= 8
            && self.b[self.i..self.i + 8].eq_ignore_ascii_case(b"CHARSET ")
        {
            self.i += 8;
            charset = Some(self.astring()?);
            self.sp()?;
        }
        let criteria = self.search_keys()?;
        Ok(CommandBody::Search {
            uid,
            returns,
            charset,
            criteria,
        })
    }

    /// 1*(search-key) separated by SP, up to CRLF.
    fn search_keys(&mut self) -> R<Vec<SearchKey>> {
        let mut keys = vec![self.search_key()?];
        while self.peek() == Some(b' ') {
            self.i += 1;
            keys.push(self.search_key()?);
        }
        Ok(keys)
    }

    fn search_key(&mut self) -> R<SearchKey> {
        self.enter()?;
        let k = self.search_key_inner();
        self.leave();
        k
    }

    fn search_key_inner(&mut self) -> R<SearchKey> {
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                let mut keys = vec![self.search_key()?];
                while self.eat(b' ') {
                    keys.push(self.search_key()?);
                }
                self.expect(b')', ")")?;
                return Ok(SearchKey::And(keys));
            }
            Some(b'0'..=b'9' | b'*' | b'$') => {
                return Ok(SearchKey::SequenceSet(self.sequence_set()?));
            }
            _ => {}
        }
        let at = self.i;
        let w = self.atom()?.to_ascii_uppercase();
        use SearchKey as K;
        let key = match w.as_slice() {
            b"ALL" => K::All,
            b"ANSWERED" => K::Answered,
            b"DELETED" => K::Deleted,
            b"DRAFT" => K::Draft,
            b"FLAGGED" => K::Flagged,
            b"NEW" => K::New,
            b"OLD" => K::Old,
            b"RECENT" => K::Recent,
            b"SEEN" => K::Seen,
            b"UNANSWERED" => K::Unanswered,
            b"UNDELETED" => K::Undeleted,
            b"UNDRAFT" => K::Undraft,
            b"UNFLAGGED" => K::Unflagged,
            b"UNSEEN" => K::Unseen,
            b"SAVEDATESUPPORTED" => K::SaveDateSupported,
            b"BCC" | b"BODY" | b"CC" | b"FROM" | b"SUBJECT" | b"TEXT" | b"TO" => {
                self.sp()?;
                let s = self.astring()?;
                match w.as_slice() {
                    b"BCC" => K::Bcc(s),
                    b"BODY" => K::Body(s),
                    b"CC" => K::Cc(s),
                    b"FROM" => K::From(s),
                    b"SUBJECT" => K::Subject(s),
                    b"TEXT" => K::Text(s),
                    _ => K::To(s),
                }
            }
            b"BEFORE" | b"ON" | b"SINCE" | b"SENTBEFORE" | b"SENTON" | b"SENTSINCE"
            | b"SAVEDBEFORE" | b"SAVEDON" | b"SAVEDSINCE" => {
                self.sp()?;
                let d = self.date()?;
                match w.as_slice() {
                    b"BEFORE" => K::Before(d),
                    b"ON" => K::On(d),
                    b"SINCE" => K::Since(d),
                    b"SENTBEFORE" => K::SentBefore(d),
                    b"SENTON" => K::SentOn(d),
                    b"SENTSINCE" => K::SentSince(d),
                    b"SAVEDBEFORE" => K::SavedBefore(d),
                    b"SAVEDON" => K::SavedOn(d),
                    _ => K::SavedSince(d),
                }
            }
            b"HEADER" => {
                self.sp()?;
                let field = self.astring()?;
                self.sp()?;
                let value = self.astring()?;
                K::Header(field, value)
            }
            b"KEYWORD" | b"UNKEYWORD" => {
                self.sp()?;
                let a = self.atom_owned()?;
                if w == b"KEYWORD" {
                    K::Keyword(a)
                } else {
                    K::Unkeyword(a)
                }
            }
            b"LARGER" | b"SMALLER" => {
                self.sp()?;
                let n = self.number64()?;
                if w == b"LARGER" {
                    K::Larger(n)
                } else {
                    K::Smaller(n)
                }
            }
            b"OLDER" | b"YOUNGER" => {
                self.sp()?;
                let at = self.i;
                let n = self
                    .nz_number()
                    .map_err(|_| ParseError::Syntax {
                        at,
                        expected: "interval",
                    })?
                    .get();
                if w == b"OLDER" {
                    K::Older(n)
                } else {
                    K::Younger(n)
                }
            }
            b"NOT" => {
                self.sp()?;
                K::Not(Box::new(self.search_key()?))
            }
            b"OR" => {
                self.sp()?;
                let a = self.search_key()?;
                self.sp()?;
                let b = self.search_key()?;
                K::Or(Box::new(a), Box::new(b))
            }
            b"UID" => {
                self.sp()?;
                K::Uid(self.sequence_set()?)
            }
            b"MODSEQ" => {
                self.sp()?;
                let mut entry = None;
                if self.peek() == Some(b'"') {
                    let name = self.quoted()?;
                    self.sp()?;
                    let at = self.i;
                    let t = self.atom()?.to_ascii_lowercase();
                    let kind = match t.as_slice() {
                        b"priv" => EntryType::Private,
                        b"shared" => EntryType::Shared,
                        b"all" => EntryType::All,
                        _ => {
                            return Err(ParseError::Syntax {
                                at,
                                expected: "entry type",
                            });
                        }
                    };
                    self.sp()?;
                    entry = Some((name, kind));
                }
                K::ModSeq {
                    entry,
                    modseq: self.modseq(true)?,
                }
            }
            b"EMAILID" | b"THREADID" => {
                self.sp()?;
                let at = self.i;
                let id = self.take_while(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
                if id.is_empty() || id.len() > 255 {
                    return Err(ParseError::Syntax {
                        at,
                        expected: "objectid",
                    });
                }
                let a = Atom(id.iter().map(|&c| char::from(c)).collect());
                if w == b"EMAILID" {
                    K::EmailId(a)
                } else {
                    K::ThreadId(a)
                }
            }
            _ => {
                return Err(ParseError::Syntax {
                    at,
                    expected: "search key",
                });
            }
        };
        Ok(key)
    }

    fn fetch(&mut self, uid: bool) -> R<CommandBody> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let items = if self.eat(b'(') {
            let mut v = vec![self.fetch_att()?];
            while self.eat(b' ') {
                v.push(self.fetch_att()?);
            }
            self.expect(b')', ")")?;
            FetchItems::List(v)
        } else {
            let save = self.i;
            let w = self.word().to_ascii_uppercase();
            match w.as_slice() {
                b"ALL" => FetchItems::All,
                b"FAST" => FetchItems::Fast,
                b"FULL" => FetchItems::Full,
                _ => {
                    self.i = save;
                    FetchItems::List(vec![self.fetch_att()?])
                }
            }
        };
        let mut changed_since = None;
        let mut vanished = false;
        if self.eat(b' ') {
            self.expect(b'(', "(")?;
            loop {
                let at = self.i;
                let w = self.atom()?.to_ascii_uppercase();
                match w.as_slice() {
                    b"CHANGEDSINCE" => {
                        self.sp()?;
                        changed_since = Some(self.modseq(false)?);
                    }
                    b"VANISHED" => vanished = true,
                    _ => {
                        return Err(ParseError::Syntax {
                            at,
                            expected: "fetch modifier",
                        });
                    }
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        if vanished && (!uid || changed_since.is_none()) {
            return Err(ParseError::Invalid(
                "VANISHED needs UID FETCH and CHANGEDSINCE",
            ));
        }
        Ok(CommandBody::Fetch {
            uid,
            set,
            items,
            changed_since,
            vanished,
        })
    }

    fn partial(&mut self) -> R<Option<(u32, u32)>> {
        if !self.eat(b'<') {
            return Ok(None);
        }
        let offset = self.number()?;
        self.expect(b'.', ".")?;
        let len = self.nz_number()?.get();
        self.expect(b'>', ">")?;
        Ok(Some((offset, len)))
    }

    fn section_part(&mut self) -> R<Vec<u32>> {
        let mut part = vec![self.nz_number()?.get()];
        while self.peek() == Some(b'.') && self.b.get(self.i + 1).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
            part.push(self.nz_number()?.get());
        }
        Ok(part)
    }

    fn header_list(&mut self) -> R<Vec<Vec<u8>>> {
        self.sp()?;
        self.paren_list(Self::astring)
    }

    fn section(&mut self) -> R<Section> {
        self.expect(b'[', "[")?;
        let mut section = Section::default();
        if self.eat(b']') {
            return Ok(section);
        }
        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            section.part = self.section_part()?;
            if self.eat(b']') {
                return Ok(section);
            }
            self.expect(b'.', ".")?;
        }
        let at = self.i;
        let w = self.word().to_ascii_uppercase();
        section.text = Some(match w.as_slice() {
            b"HEADER" => SectionText::Header,
            b"TEXT" => SectionText::Text,
            b"MIME" if !section.part.is_empty() => SectionText::Mime,
            b"HEADER.FIELDS" => SectionText::HeaderFields(self.header_list()?),
            b"HEADER.FIELDS.NOT" => SectionText::HeaderFieldsNot(self.header_list()?),
            _ => {
                return Err(ParseError::Syntax {
                    at,
                    expected: "section text",
                });
            }
        });
        self.expect(b']', "]")?;
        Ok(section)
    }

    fn binary_part(&mut self) -> R<Vec<u32>> {
        self.expect(b'[', "[")?;
        if self.eat(b']') {
            return Ok(Vec::new());
        }
        let p = self.section_part()?;
        self.expect(b']', "]")?;
        Ok(p)
    }

    fn fetch_att(&mut self) -> R<FetchAttribute> {
        use FetchAttribute as F;
        let at = self.i;
        let w = self.word().to_ascii_uppercase();
        Ok(match w.as_slice() {
            b"FLAGS" => F::Flags,
            b"UID" => F::Uid,
            b"INTERNALDATE" => F::InternalDate,
            b"RFC822.SIZE" => F::Rfc822Size,
            b"RFC822" => F::Rfc822,
            b"RFC822.HEADER" => F::Rfc822Header,
            b"RFC822.TEXT" => F::Rfc822Text,
            b"ENVELOPE" => F::Envelope,
            b"BODYSTRUCTURE" => F::BodyStructure,
            b"MODSEQ" => F::ModSeq,
            b"SAVEDATE" => F::SaveDate,
            b"EMAILID" => F::EmailId,
            b"THREADID" => F::ThreadId,
            b"BODY" if self.peek() != Some(b'[') => F::Body,
            b"BODY" | b"BODY.PEEK" => {
                let section = self.section()?;
                let partial = self.partial()?;
                F::BodySection {
                    peek: w.len() > 4,
                    section,
                    partial,
                }
            }
            b"BINARY" | b"BINARY.PEEK" => {
                let part = self.binary_part()?;
                let partial = self.partial()?;
                F::Binary {
                    peek: w.len() > 6,
                    part,
                    partial,
                }
            }
            b"BINARY.SIZE" => F::BinarySize {
                part: self.binary_part()?,
            },
            _ => {
                return Err(ParseError::Syntax {
                    at,
                    expected: "fetch attribute",
                });
            }
        })
    }

    fn store(&mut self, uid: bool) -> R<CommandBody> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mut unchanged_since = None;
        if self.eat(b'(') {
            self.keyword("UNCHANGEDSINCE")?;
            self.sp()?;
            unchanged_since = Some(self.modseq(true)?);
            self.expect(b')', ")")?;
            self.sp()?;
        }
        let mode = if self.eat(b'+') {
            StoreMode::Add
        } else if self.eat(b'-') {
            StoreMode::Remove
        } else {
            StoreMode::Replace
        };
        let at = self.i;
        let w = self.word().to_ascii_uppercase();
        let silent = match w.as_slice() {
            b"FLAGS" => false,
            b"FLAGS.SILENT" => true,
            _ => {
                return Err(ParseError::Syntax {
                    at,
                    expected: "FLAGS",
                });
            }
        };
        self.sp()?;
        let flags = if self.peek() == Some(b'(') {
            self.flag_list()?
        } else {
            let mut v = vec![self.flag()?];
            while self.eat(b' ') {
                v.push(self.flag()?);
            }
            v
        };
        Ok(CommandBody::Store {
            uid,
            set,
            unchanged_since,
            mode,
            silent,
            flags,
        })
    }

    fn copy_move(&mut self, uid: bool, is_move: bool) -> R<CommandBody> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mailbox = self.mailbox()?;
        Ok(if is_move {
            CommandBody::Move { uid, set, mailbox }
        } else {
            CommandBody::Copy { uid, set, mailbox }
        })
    }

    /// charset = atom / quoted
    fn charset(&mut self) -> R<Vec<u8>> {
        if self.peek() == Some(b'"') {
            self.quoted()
        } else {
            Ok(self.atom()?.to_vec())
        }
    }

    fn sort(&mut self, uid: bool) -> R<CommandBody> {
        self.sp()?;
        let criteria = self.paren_list(|p| {
            let mut reverse = false;
            let at = p.i;
            let mut w = p.atom()?.to_ascii_uppercase();
            if w == b"REVERSE" {
                reverse = true;
                p.sp()?;
                w = p.atom()?.to_ascii_uppercase();
            }
            let key = match w.as_slice() {
                b"ARRIVAL" => SortKey::Arrival,
                b"CC" => SortKey::Cc,
                b"DATE" => SortKey::Date,
                b"FROM" => SortKey::From,
                b"SIZE" => SortKey::Size,
                b"SUBJECT" => SortKey::Subject,
                b"TO" => SortKey::To,
                b"DISPLAYFROM" => SortKey::DisplayFrom,
                b"DISPLAYTO" => SortKey::DisplayTo,
                _ => {
                    return Err(ParseError::Syntax {
                        at,
                        expected: "sort key",
                    });
                }
            };
            Ok(SortCriterion { reverse, key })
        })?;
        self.sp()?;
        let charset = self.charset()?;
        self.sp()?;
        let search = self.search_keys()?;
        Ok(CommandBody::Sort {
            uid,
            criteria,
            charset,
            search,
        })
    }

    fn thread(&mut self, uid: bool) -> R<CommandBody> {
        self.sp()?;
        let a = self.atom_owned()?;
        let algorithm = if a.eq_ignore_case("REFERENCES") {
            ThreadAlgorithm::References
        } else if a.eq_ignore_case("ORDEREDSUBJECT") {
            ThreadAlgorithm::OrderedSubject
        } else {
            ThreadAlgorithm::Other(a)
        };
        self.sp()?;
        let charset = self.charset()?;
        self.sp()?;
        let search = self.search_keys()?;
        Ok(CommandBody::Thread {
            uid,
            algorithm,
            charset,
            search,
        })
    }
}

#[cfg(test)]
mod tests;
