//! The RFC 5321 address grammar (section 4.1.2), with the RFC 6531
//! (SMTPUTF8) extensions when the caller allows them.
//!
//! Every type here can only hold a valid value: [`Domain`], [`LocalPart`],
//! [`AddressLiteral`], [`Mailbox`] and the two paths are built by parsing.
//! Domains are stored lower-cased, local parts decoded (quotes and
//! quoted-pair backslashes removed, case preserved), and `Display` always
//! writes a form that parses back to the same value.
//!
//! This module never decides what an address *means* (local or remote,
//! relay or not): percent hacks, bang paths and quoted `@` are just
//! characters of a local part here, and source routes are parsed and
//! discarded (RFC 5321 4.1.1.3). Length limits follow RFC 5321 4.5.3.1.
//!
//! ```
//! use tern_types::{parse_forward_path, ForwardPath};
//! let (path, rest) = parse_forward_path("<@relay.example:\"a b\"@Example.COM> NOTIFY=NEVER", false).unwrap();
//! let ForwardPath::Mailbox(m) = &path else { panic!() };
//! assert_eq!(m.local_part.as_str(), "a b");
//! assert_eq!(m.to_string(), "\"a b\"@example.com");
//! assert_eq!(rest, " NOTIFY=NEVER");
//! ```

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Maximum length of a local part in octets (RFC 5321 4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Maximum length of a domain in octets (RFC 5321 4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Maximum length of a reverse or forward path in octets, brackets
/// included (RFC 5321 4.5.3.1.3).
pub const MAX_PATH: usize = 256;
/// Maximum length of one domain label in octets (RFC 1035 2.3.4).
pub const MAX_LABEL: usize = 63;
/// Maximum length of a mailbox (`local@host`): a path minus its brackets.
pub const MAX_MAILBOX: usize = MAX_PATH - 2;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The text does not follow the grammar; the text says where.
    #[error("address syntax error: {0}")]
    Syntax(&'static str),
    /// A part exceeds its RFC 5321 4.5.3.1 limit; names the part.
    #[error("{0} too long")]
    TooLong(&'static str),
    /// The address is valid RFC 6531 UTF-8 but UTF-8 was not allowed here
    /// (no SMTPUTF8). SMTP answers 553 5.6.7.
    #[error("UTF-8 address not allowed without SMTPUTF8")]
    Utf8NotAllowed,
}

impl AddressError {
    /// True when the only problem is UTF-8 without SMTPUTF8 (→ 553 5.6.7).
    pub fn is_utf8_not_allowed(&self) -> bool {
        matches!(self, AddressError::Utf8NotAllowed)
    }
}

fn syntax(msg: &'static str) -> AddressError {
    AddressError::Syntax(msg)
}

// ---------------------------------------------------------------- Domain

/// A validated domain (RFC 5321 `Domain`, RFC 6531 U-labels when allowed).
///
/// Stored lower-cased (ASCII lower-casing; U-labels with
/// `char::to_lowercase`), without a trailing dot, at most 255 octets,
/// labels of 1..=63 octets made of letters, digits and hyphens (plus
/// non-ASCII characters in U-labels), never starting or ending with a
/// hyphen. A single label (`localhost`) is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

/// Non-ASCII characters that IDNA treats as label separators: refusing them
/// keeps `a。b` from meaning one thing here and another in DNS.
fn is_dot_equivalent(c: char) -> bool {
    matches!(c, '\u{3002}' | '\u{FF0E}' | '\u{FF61}')
}

fn lowercase_domain(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.chars().flat_map(char::to_lowercase).collect()
    }
}

/// Checks `s` (already lower-cased) as a domain; returns whether it holds
/// non-ASCII characters.
fn check_domain(s: &str) -> Result<bool, AddressError> {
    if s.is_empty() {
        return Err(syntax("empty domain"));
    }
    if s.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong("domain"));
    }
    if s.ends_with('.') {
        return Err(syntax("trailing dot in domain"));
    }
    let mut non_ascii = false;
    for label in s.split('.') {
        if label.is_empty() {
            return Err(syntax("empty domain label"));
        }
        if label.len() > MAX_LABEL {
            return Err(AddressError::TooLong("domain label"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(syntax("domain label starts or ends with a hyphen"));
        }
        for c in label.chars() {
            if c.is_ascii() {
                if !(c.is_ascii_alphanumeric() || c == '-') {
                    return Err(syntax("invalid character in domain"));
                }
            } else if c.is_control() || c.is_whitespace() || is_dot_equivalent(c) {
                return Err(syntax("invalid character in domain"));
            } else {
                non_ascii = true;
            }
        }
    }
    Ok(non_ascii)
}

impl Domain {
    /// Parses an ASCII domain. A valid U-label domain gives
    /// [`AddressError::Utf8NotAllowed`].
    pub fn parse(s: &str) -> Result<Domain, AddressError> {
        Self::parse_with(s, false)
    }

    /// Parses a domain that may contain RFC 6531 U-labels.
    pub fn parse_utf8(s: &str) -> Result<Domain, AddressError> {
        Self::parse_with(s, true)
    }

    fn parse_with(s: &str, utf8: bool) -> Result<Domain, AddressError> {
        // Lower-case first so that the stored form is exactly what was
        // checked (lower-casing some characters changes their length).
        let lower = lowercase_domain(s);
        let non_ascii = check_domain(&lower)?;
        if non_ascii && !utf8 {
            return Err(AddressError::Utf8NotAllowed);
        }
        Ok(Domain(lower))
    }

    /// The lower-cased domain.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when no label is a U-label.
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Domain {
    type Err = AddressError;
    /// Same as [`Domain::parse_utf8`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::parse_utf8(s)
    }
}

// ------------------------------------------------------- AddressLiteral

/// An RFC 5321 4.1.3 address literal (the part between the brackets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddressLiteral {
    /// `[1.2.3.4]`
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]`
    Ipv6(Ipv6Addr),
    /// `[tag:content]` (General-address-literal); `tag` is never `IPv6`.
    General {
        /// The Standardized-tag, as sent.
        tag: String,
        /// The dcontent after the colon.
        content: String,
    },
}

impl fmt::Display for AddressLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressLiteral::Ipv4(a) => write!(f, "[{a}]"),
            AddressLiteral::Ipv6(a) => write!(f, "[IPv6:{a}]"),
            AddressLiteral::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

impl AddressLiteral {
    /// Parses a literal with its brackets, e.g. `[IPv6:::1]`.
    pub fn parse(s: &str) -> Result<AddressLiteral, AddressError> {
        let inner = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or(syntax("address literal must be enclosed in brackets"))?;
        parse_literal_inner(inner)
    }
}

/// `Snum 3("." Snum)`, Snum = 1*3DIGIT with a value of 0..=255.
fn parse_ipv4(s: &str) -> Result<Ipv4Addr, AddressError> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts
            .next()
            .ok_or(syntax("IPv4 literal needs four numbers"))?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax("invalid number in IPv4 literal"));
        }
        let v: u16 = p
            .parse()
            .map_err(|_| syntax("invalid number in IPv4 literal"))?;
        *o = u8::try_from(v).map_err(|_| syntax("IPv4 literal number above 255"))?;
    }
    if parts.next().is_some() {
        return Err(syntax("IPv4 literal needs four numbers"));
    }
    Ok(Ipv4Addr::from(octets))
}

fn parse_hex_groups(s: &str, out: &mut Vec<u16>) -> Result<(), AddressError> {
    if s.is_empty() {
        return Ok(());
    }
    for g in s.split(':') {
        if g.is_empty() || g.len() > 4 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(syntax("invalid group in IPv6 literal"));
        }
        out.push(u16::from_str_radix(g, 16).map_err(|_| syntax("invalid group in IPv6 literal"))?);
    }
    Ok(())
}

/// `IPv6-addr` of RFC 5321 4.1.3: full, compressed (`::` stands for at
/// least two groups, so at most 6 other groups), and both with an IPv4 tail.
fn parse_ipv6(s: &str) -> Result<Ipv6Addr, AddressError> {
    let (hex, v4) = match s.rfind(':') {
        Some(i) if s[i + 1..].contains('.') => {
            let v4 = parse_ipv4(&s[i + 1..])?;
            let head = &s[..=i];
            // Keep a "::" before the IPv4 part, drop a single separator colon.
            let head = if head.ends_with("::") {
                head
            } else {
                &head[..head.len() - 1]
            };
            (head, Some(v4))
        }
        _ => (s, None),
    };
    let tail_groups = if v4.is_some() { 2 } else { 0 };
    let mut left = Vec::with_capacity(8);
    let mut right = Vec::with_capacity(8);
    match hex.split_once("::") {
        Some((l, r)) => {
            parse_hex_groups(l, &mut left)?;
            parse_hex_groups(r, &mut right)?;
            if left.len() + right.len() + tail_groups > 6 {
                return Err(syntax("too many groups in compressed IPv6 literal"));
            }
        }
        None => {
            if hex.is_empty() {
                return Err(syntax("empty IPv6 literal"));
            }
            parse_hex_groups(hex, &mut left)?;
            if left.len() + tail_groups != 8 {
                return Err(syntax("IPv6 literal needs eight groups"));
            }
        }
    }
    let mut segments = [0u16; 8];
    segments[..left.len()].copy_from_slice(&left);
    let right_end = 8 - tail_groups;
    segments[right_end - right.len()..right_end].copy_from_slice(&right);
    if let Some(v4) = v4 {
        let o = v4.octets();
        segments[6] = u16::from_be_bytes([o[0], o[1]]);
        segments[7] = u16::from_be_bytes([o[2], o[3]]);
    }
    Ok(Ipv6Addr::from(segments))
}

fn is_dcontent(b: u8) -> bool {
    matches!(b, 33..=90 | 94..=126)
}

fn parse_literal_inner(inner: &str) -> Result<AddressLiteral, AddressError> {
    match inner.split_once(':') {
        None => parse_ipv4(inner).map(AddressLiteral::Ipv4),
        Some((tag, content)) => {
            if tag.eq_ignore_ascii_case("IPv6") {
                return parse_ipv6(content).map(AddressLiteral::Ipv6);
            }
            let tag_ok = !tag.is_empty()
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && tag.as_bytes()[tag.len() - 1].is_ascii_alphanumeric();
            if !tag_ok {
                return Err(syntax("invalid address literal tag"));
            }
            if content.is_empty() || !content.bytes().all(is_dcontent) {
                return Err(syntax("invalid address literal content"));
            }
            Ok(AddressLiteral::General {
                tag: tag.to_owned(),
                content: content.to_owned(),
            })
        }
    }
}

// ------------------------------------------------------------------ Host

/// The part after the `@`: a domain or an address literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name.
    Domain(Domain),
    /// An address literal in brackets.
    Literal(AddressLiteral),
}

impl Host {
    /// True unless it is a domain with U-labels.
    pub fn is_ascii(&self) -> bool {
        match self {
            Host::Domain(d) => d.is_ascii(),
            Host::Literal(_) => true,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => d.fmt(f),
            Host::Literal(l) => l.fmt(f),
        }
    }
}

/// Parses a whole host (domain or `[literal]`); returns it and whether it
/// has non-ASCII characters.
fn parse_host(s: &str) -> Result<(Host, bool), AddressError> {
    if s.starts_with('[') {
        let lit = AddressLiteral::parse(s)?;
        Ok((Host::Literal(lit), false))
    } else {
        let d = Domain::parse_utf8(s)?;
        let non_ascii = !d.is_ascii();
        Ok((Host::Domain(d), non_ascii))
    }
}

// ------------------------------------------------------------- LocalPart

/// A local part, stored decoded (quotes and quoted-pair backslashes
/// removed). Case is preserved: only the directory may fold it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalPart(String);

/// RFC 5322 atext, ASCII part.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// A character allowed in a Dot-string atom (RFC 6531 adds UTF-8).
fn is_atom_char(c: char) -> bool {
    if c.is_ascii() {
        is_atext(c as u8)
    } else {
        !c.is_control() && !c.is_whitespace()
    }
}

/// A character a Quoted-string can carry, directly or as a quoted-pair.
fn is_quotable_char(c: char) -> bool {
    if c.is_ascii() {
        (' '..='~').contains(&c)
    } else {
        !c.is_control()
    }
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atom_char))
}

impl LocalPart {
    /// Builds a local part from its decoded text, checking that it can be
    /// written on the wire (as a Dot-string or Quoted-string) within 64
    /// octets. Non-ASCII text needs `utf8`.
    pub fn new(decoded: &str, utf8: bool) -> Result<LocalPart, AddressError> {
        if !decoded.chars().all(is_quotable_char) {
            return Err(syntax("invalid character in local part"));
        }
        let lp = LocalPart(decoded.to_owned());
        if lp.encoded_len() > MAX_LOCAL_PART {
            return Err(AddressError::TooLong("local part"));
        }
        if !utf8 && !lp.is_ascii() {
            return Err(AddressError::Utf8NotAllowed);
        }
        Ok(lp)
    }

    /// The decoded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the text is not a valid Dot-string, so `Display` quotes it.
    pub fn needs_quoting(&self) -> bool {
        !is_dot_string(&self.0)
    }

    /// True when every character is ASCII.
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }

    fn encoded_len(&self) -> usize {
        if self.needs_quoting() {
            2 + self.0.len() + self.0.bytes().filter(|b| matches!(b, b'"' | b'\\')).count()
        } else {
            self.0.len()
        }
    }
}

impl fmt::Display for LocalPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.needs_quoting() {
            return f.write_str(&self.0);
        }
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

/// Parses the local part at the start of `s`; returns it and the number of
/// bytes it took. Stops before the `@` (or whatever follows).
fn parse_local_part(s: &str) -> Result<(LocalPart, usize), AddressError> {
    let bytes = s.as_bytes();
    let (decoded, end) = if bytes.first() == Some(&b'"') {
        let mut out = String::new();
        let mut i = 1;
        loop {
            let Some(&b) = bytes.get(i) else {
                return Err(syntax("unterminated quoted local part"));
            };
            match b {
                b'"' => {
                    i += 1;
                    break;
                }
                b'\\' => match bytes.get(i + 1) {
                    Some(&q @ 32..=126) => {
                        out.push(q as char);
                        i += 2;
                    }
                    _ => return Err(syntax("invalid quoted-pair in local part")),
                },
                32..=126 => {
                    out.push(b as char);
                    i += 1;
                }
                0x80.. => {
                    // `s` is a str, so a non-ASCII byte starts a whole char.
                    let c = s[i..].chars().next().ok_or(syntax("invalid UTF-8"))?;
                    if c.is_control() {
                        return Err(syntax("control character in local part"));
                    }
                    out.push(c);
                    i += c.len_utf8();
                }
                _ => return Err(syntax("invalid character in quoted local part")),
            }
        }
        (out, i)
    } else {
        let end = bytes
            .iter()
            .position(|&b| !(is_atext(b) || b == b'.' || b >= 0x80))
            .unwrap_or(bytes.len());
        let text = &s[..end];
        if text.is_empty() {
            return Err(syntax("empty local part"));
        }
        if text.starts_with('.') || text.ends_with('.') || text.contains("..") {
            return Err(syntax("misplaced dot in local part"));
        }
        if !is_dot_string(text) {
            return Err(syntax("invalid character in local part"));
        }
        (text.to_owned(), end)
    };
    if end > MAX_LOCAL_PART {
        return Err(AddressError::TooLong("local part"));
    }
    Ok((LocalPart(decoded), end))
}

// --------------------------------------------------------------- Mailbox

/// `Local-part "@" ( Domain / address-literal )`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The decoded local part.
    pub local_part: LocalPart,
    /// The domain or address literal.
    pub host: Host,
}

impl Mailbox {
    /// Parses `local@host` (no angle brackets). `utf8` allows RFC 6531 forms;
    /// without it a valid UTF-8 address gives [`AddressError::Utf8NotAllowed`].
    pub fn parse(s: &str, utf8: bool) -> Result<Mailbox, AddressError> {
        let m = parse_mailbox_body(s)?;
        if s.len() > MAX_MAILBOX {
            return Err(AddressError::TooLong("address"));
        }
        // Lower-casing a U-label can lengthen it (`İ` is two octets, `i̇`
        // three): the form the address is printed and stored in must fit
        // too, or it would not read back.
        if !m.host.is_ascii() && m.to_string().len() > MAX_MAILBOX {
            return Err(AddressError::TooLong("address"));
        }
        if !utf8 && !m.is_ascii() {
            return Err(AddressError::Utf8NotAllowed);
        }
        Ok(m)
    }

    /// True when both parts are ASCII.
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.host.is_ascii()
    }

    /// The domain, when the host is not a literal.
    pub fn domain(&self) -> Option<&Domain> {
        match &self.host {
            Host::Domain(d) => Some(d),
            Host::Literal(_) => None,
        }
    }
}

/// Parses exactly `local@host` with UTF-8 allowed (the caller checks).
fn parse_mailbox_body(s: &str) -> Result<Mailbox, AddressError> {
    let (local_part, used) = parse_local_part(s)?;
    let rest = &s[used..];
    let host = rest.strip_prefix('@').ok_or(if rest.is_empty() {
        syntax("missing @domain")
    } else {
        syntax("unexpected character in local part")
    })?;
    let (host, _) = parse_host(host)?;
    Ok(Mailbox { local_part, host })
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.host)
    }
}

impl FromStr for Mailbox {
    type Err = AddressError;
    /// Same as `Mailbox::parse(s, true)`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mailbox::parse(s, true)
    }
}

// ----------------------------------------------------------------- Paths

/// The `MAIL FROM` path: a mailbox or the null path `<>` (bounces).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`
    Null,
    /// `<local@host>`
    Mailbox(Mailbox),
}

impl ReversePath {
    /// The mailbox, unless this is the null path.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(m),
        }
    }

    /// True unless the mailbox needs SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.mailbox().is_none_or(Mailbox::is_ascii)
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

impl From<Mailbox> for ReversePath {
    fn from(m: Mailbox) -> ReversePath {
        ReversePath::Mailbox(m)
    }
}

/// The `RCPT TO` path: a mailbox or the bare `<Postmaster>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain (RFC 5321 4.1.1.3), any case.
    Postmaster,
    /// `<local@host>`
    Mailbox(Mailbox),
}

impl ForwardPath {
    /// The mailbox, unless this is the bare postmaster.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ForwardPath::Postmaster => None,
            ForwardPath::Mailbox(m) => Some(m),
        }
    }

    /// True unless the mailbox needs SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.mailbox().is_none_or(Mailbox::is_ascii)
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<Postmaster>"),
            ForwardPath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

impl From<Mailbox> for ForwardPath {
    fn from(m: Mailbox) -> ForwardPath {
        ForwardPath::Mailbox(m)
    }
}

/// What sits between the brackets of a path.
enum PathBody {
    Null,
    Postmaster,
    Mailbox(Mailbox),
}

/// Parses `"<" [ A-d-l ":" ] Mailbox ">"`, `<>` and `<postmaster>` at the
/// start of `s`; returns the body and the rest after `>`.
fn parse_path(s: &str, utf8: bool) -> Result<(PathBody, &str), AddressError> {
    let inner = s
        .strip_prefix('<')
        .ok_or(syntax("path must start with <"))?;
    if let Some(rest) = inner.strip_prefix('>') {
        return Ok((PathBody::Null, rest));
    }
    const POSTMASTER: &str = "postmaster>";
    if inner.len() >= POSTMASTER.len()
        && inner.as_bytes()[..POSTMASTER.len()].eq_ignore_ascii_case(POSTMASTER.as_bytes())
    {
        return Ok((PathBody::Postmaster, &inner[POSTMASTER.len()..]));
    }
    let mut non_ascii = false;
    let mut pos = 0;
    // Source route: "@a,@b:" — parsed, checked, discarded (4.1.1.3).
    if inner.starts_with('@') {
        loop {
            let at = &inner[pos..];
            let Some(body) = at.strip_prefix('@') else {
                return Err(syntax("invalid source route"));
            };
            let end = body
                .find([',', ':', '>'])
                .ok_or(syntax("unterminated source route"))?;
            let d = Domain::parse_utf8(&body[..end])?;
            non_ascii |= !d.is_ascii();
            pos += 1 + end + 1;
            match body.as_bytes()[end] {
                b',' => continue,
                b':' => break,
                _ => return Err(syntax("source route without mailbox")),
            }
        }
    }
    let mb = &inner[pos..];
    let (local_part, used) = parse_local_part(mb)?;
    let after_local = &mb[used..];
    let host_text = after_local
        .strip_prefix('@')
        .ok_or(if after_local.starts_with('>') {
            syntax("missing @domain")
        } else {
            syntax("unexpected character in local part")
        })?;
    let host_len = if host_text.starts_with('[') {
        host_text
            .find(']')
            .map(|i| i + 1)
            .ok_or(syntax("unterminated address literal"))?
    } else {
        host_text.find('>').ok_or(syntax("missing >"))?
    };
    let (host, host_non_ascii) = parse_host(&host_text[..host_len])?;
    let rest = host_text[host_len..]
        .strip_prefix('>')
        .ok_or(syntax("missing > after address"))?;
    let path_len = s.len() - rest.len();
    if path_len > MAX_PATH {
        return Err(AddressError::TooLong("path"));
    }
    non_ascii |= host_non_ascii || !local_part.is_ascii();
    if non_ascii && !utf8 {
        return Err(AddressError::Utf8NotAllowed);
    }
    Ok((PathBody::Mailbox(Mailbox { local_part, host }), rest))
}

/// Parses a `MAIL FROM` reverse path (`<>` or `<[A-d-l:]mailbox>`) at the
/// start of `s`. Returns the path and the rest of the input (the ESMTP
/// parameters, leading space not consumed). `utf8` allows RFC 6531 forms.
pub fn parse_reverse_path(s: &str, utf8: bool) -> Result<(ReversePath, &str), AddressError> {
    let (body, rest) = parse_path(s, utf8)?;
    let path = match body {
        PathBody::Null => ReversePath::Null,
        PathBody::Postmaster => return Err(syntax("missing @domain")),
        PathBody::Mailbox(m) => ReversePath::Mailbox(m),
    };
    Ok((path, rest))
}

/// Parses a `RCPT TO` forward path (`<Postmaster>` or
/// `<[A-d-l:]mailbox>`) at the start of `s`. Returns the path and the rest
/// of the input (leading space not consumed). `utf8` allows RFC 6531 forms.
pub fn parse_forward_path(s: &str, utf8: bool) -> Result<(ForwardPath, &str), AddressError> {
    let (body, rest) = parse_path(s, utf8)?;
    let path = match body {
        PathBody::Null => return Err(syntax("empty forward path")),
        PathBody::Postmaster => ForwardPath::Postmaster,
        PathBody::Mailbox(m) => ForwardPath::Mailbox(m),
    };
    Ok((path, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(s: &str) -> Mailbox {
        Mailbox::parse(s, true).unwrap()
    }

    /// (input, utf8, expected decoded local part, expected host display,
    /// expected Display of the path) or the expected error.
    #[test]
    fn forward_paths() {
        enum Want {
            Ok(&'static str, &'static str, &'static str),
            Postmaster,
            Err(AddressError),
        }
        use AddressError::{Syntax, TooLong, Utf8NotAllowed};
        use Want::{Err as E, Ok as O};
        let long_local = format!("<{}@example.com>", "a".repeat(64));
        let too_long_local = format!("<{}@example.com>", "a".repeat(65));
        let cases: Vec<(&str, bool, Want)> = vec![
            (
                "<user@example.com>",
                false,
                O("user", "example.com", "<user@example.com>"),
            ),
            (
                "<User.Name@EXAMPLE.Com>",
                false,
                O("User.Name", "example.com", "<User.Name@example.com>"),
            ),
            ("<a+tag@x>", false, O("a+tag", "x", "<a+tag@x>")),
            (
                "<\"john doe\"@example.com>",
                false,
                O("john doe", "example.com", "<\"john doe\"@example.com>"),
            ),
            (
                "<\"a\\\"b\\\\c\"@x.y>",
                false,
                O("a\"b\\c", "x.y", "<\"a\\\"b\\\\c\"@x.y>"),
            ),
            ("<\"\\a\\b\"@x.y>", false, O("ab", "x.y", "<ab@x.y>")),
            (
                "<\"user@remote\"@local>",
                false,
                O("user@remote", "local", "<\"user@remote\"@local>"),
            ),
            (
                "<user%remote@local>",
                false,
                O("user%remote", "local", "<user%remote@local>"),
            ),
            (
                "<remote!user@local>",
                false,
                O("remote!user", "local", "<remote!user@local>"),
            ),
            ("<@a,@b:user@c>", false, O("user", "c", "<user@c>")),
            ("<@a.example:user@c>", false, O("user", "c", "<user@c>")),
            (
                "<user@[1.2.3.4]>",
                false,
                O("user", "[1.2.3.4]", "<user@[1.2.3.4]>"),
            ),
            (
                "<user@[IPv6:::1]>",
                false,
                O("user", "[IPv6:::1]", "<user@[IPv6:::1]>"),
            ),
            (
                "<user@[ipv6:2001:DB8::1]>",
                false,
                O("user", "[IPv6:2001:db8::1]", "<user@[IPv6:2001:db8::1]>"),
            ),
            (
                "<user@[IPv6:::ffff:1.2.3.4]>",
                false,
                O(
                    "user",
                    "[IPv6:::ffff:1.2.3.4]",
                    "<user@[IPv6:::ffff:1.2.3.4]>",
                ),
            ),
            (
                "<user@[x-tag:any:thing]>",
                false,
                O("user", "[x-tag:any:thing]", "<user@[x-tag:any:thing]>"),
            ),
            ("<\"\"@x>", false, O("", "x", "<\"\"@x>")),
            (
                "<.hidden@local>",
                false,
                E(Syntax("misplaced dot in local part")),
            ),
            (
                "<../../etc/passwd@local>",
                false,
                E(Syntax("misplaced dot in local part")),
            ),
            ("<a/b@local>", false, O("a/b", "local", "<a/b@local>")),
            ("<postmaster>", false, Want::Postmaster),
            ("<PostMaster>", false, Want::Postmaster),
            (
                "<postmaster@example.com>",
                false,
                O("postmaster", "example.com", "<postmaster@example.com>"),
            ),
            ("<user@local.>", false, E(Syntax("trailing dot in domain"))),
            (
                "<user@remote@local>",
                false,
                E(Syntax("invalid character in domain")),
            ),
            ("<user@>", false, E(Syntax("empty domain"))),
            ("<@>", false, E(Syntax("empty domain"))),
            ("<user>", false, E(Syntax("missing @domain"))),
            ("<>", false, E(Syntax("empty forward path"))),
            (
                "user@example.com",
                false,
                E(Syntax("path must start with <")),
            ),
            ("<user@example.com", false, E(Syntax("missing >"))),
            (
                "<user@[1.2.3.4]",
                false,
                E(Syntax("missing > after address")),
            ),
            (
                "<us er@x>",
                false,
                E(Syntax("unexpected character in local part")),
            ),
            ("<a..b@x>", false, E(Syntax("misplaced dot in local part"))),
            ("<a.@x>", false, E(Syntax("misplaced dot in local part"))),
            (
                "<\"abc@x>",
                false,
                E(Syntax("unterminated quoted local part")),
            ),
            (
                "<\"a\tb\"@x>",
                false,
                E(Syntax("invalid character in quoted local part")),
            ),
            (
                "<\"a\\\u{e9}\"@x>",
                true,
                E(Syntax("invalid quoted-pair in local part")),
            ),
            (
                "<a@-x.com>",
                false,
                E(Syntax("domain label starts or ends with a hyphen")),
            ),
            (
                "<a@x-.com>",
                false,
                E(Syntax("domain label starts or ends with a hyphen")),
            ),
            ("<a@x..com>", false, E(Syntax("empty domain label"))),
            ("<a@.x.com>", false, E(Syntax("empty domain label"))),
            (
                "<a@x_y.com>",
                false,
                E(Syntax("invalid character in domain")),
            ),
            (
                "<a@x y.com>",
                false,
                E(Syntax("invalid character in domain")),
            ),
            ("<a@1.2.3.4>", false, O("a", "1.2.3.4", "<a@1.2.3.4>")),
            (
                "<a@[1.2.3]>",
                false,
                E(Syntax("IPv4 literal needs four numbers")),
            ),
            (
                "<a@[1.2.3.4.5]>",
                false,
                E(Syntax("IPv4 literal needs four numbers")),
            ),
            (
                "<a@[1.2.3.256]>",
                false,
                E(Syntax("IPv4 literal number above 255")),
            ),
            (
                "<a@[1.2.3.0004]>",
                false,
                E(Syntax("invalid number in IPv4 literal")),
            ),
            (
                "<a@[1.2.3.-4]>",
                false,
                E(Syntax("invalid number in IPv4 literal")),
            ),
            ("<a@[]>", false, E(Syntax("invalid number in IPv4 literal"))),
            (
                "<a@[IPv6:1::2::3]>",
                false,
                E(Syntax("invalid group in IPv6 literal")),
            ),
            (
                "<a@[IPv6:1:2:3:4:5:6:7]>",
                false,
                E(Syntax("IPv6 literal needs eight groups")),
            ),
            (
                "<a@[IPv6:1:2:3:4:5:6:7::]>",
                false,
                E(Syntax("too many groups in compressed IPv6 literal")),
            ),
            (
                "<a@[IPv6:1:2:3:4:5:6::]>",
                false,
                O("a", "[IPv6:1:2:3:4:5:6::]", "<a@[IPv6:1:2:3:4:5:6::]>"),
            ),
            (
                "<a@[IPv6:12345::]>",
                false,
                E(Syntax("invalid group in IPv6 literal")),
            ),
            (
                "<a@[IPv6:g::]>",
                false,
                E(Syntax("invalid group in IPv6 literal")),
            ),
            ("<a@[IPv6:]>", false, E(Syntax("empty IPv6 literal"))),
            (
                "<a@[IPv6:1.2.3.4]>",
                false,
                E(Syntax("invalid group in IPv6 literal")),
            ),
            (
                "<a@[IPv6:1:2:3:4:5:6:1.2.3.4]>",
                false,
                O(
                    "a",
                    "[IPv6:1:2:3:4:5:6:102:304]",
                    "<a@[IPv6:1:2:3:4:5:6:102:304]>",
                ),
            ),
            (
                "<a@[IPv6:1:2:3:4:5::1.2.3.4]>",
                false,
                E(Syntax("too many groups in compressed IPv6 literal")),
            ),
            (
                "<a@[IPv6:1:2:3:4::1.2.3.4]>",
                false,
                O(
                    "a",
                    "[IPv6:1:2:3:4::102:304]",
                    "<a@[IPv6:1:2:3:4::102:304]>",
                ),
            ),
            (
                "<a@[IPv6:1:2:3:4:5:6:7:8]>",
                false,
                O("a", "[IPv6:1:2:3:4:5:6:7:8]", "<a@[IPv6:1:2:3:4:5:6:7:8]>"),
            ),
            (
                "<a@[IPv6:1:2:3:4:5:6:7:8:9]>",
                false,
                E(Syntax("IPv6 literal needs eight groups")),
            ),
            ("<a@[-tag:x]>", false, O("a", "[-tag:x]", "<a@[-tag:x]>")),
            (
                "<a@[tag-:x]>",
                false,
                E(Syntax("invalid address literal tag")),
            ),
            ("<a@[:x]>", false, E(Syntax("invalid address literal tag"))),
            (
                "<a@[tag:]>",
                false,
                E(Syntax("invalid address literal content")),
            ),
            (
                "<a@[tag:a\\b]>",
                false,
                E(Syntax("invalid address literal content")),
            ),
            (
                "<a@[tag:a b]>",
                false,
                E(Syntax("invalid address literal content")),
            ),
            (
                "<a@[1.2.3.4>",
                false,
                E(Syntax("unterminated address literal")),
            ),
            ("<@a,b:user@c>", false, E(Syntax("invalid source route"))),
            ("<@a,@b>", false, E(Syntax("source route without mailbox"))),
            ("<@a:>", false, E(Syntax("empty local part"))),
            (
                "<@a_b:user@c>",
                false,
                E(Syntax("invalid character in domain")),
            ),
            ("<@a", false, E(Syntax("unterminated source route"))),
            // UTF-8 (RFC 6531).
            (
                "<j\u{f6}rg@b\u{fc}cher.example>",
                true,
                O(
                    "j\u{f6}rg",
                    "b\u{fc}cher.example",
                    "<j\u{f6}rg@b\u{fc}cher.example>",
                ),
            ),
            ("<j\u{f6}rg@b\u{fc}cher.example>", false, E(Utf8NotAllowed)),
            (
                "<user@B\u{dc}CHER.example>",
                true,
                O("user", "b\u{fc}cher.example", "<user@b\u{fc}cher.example>"),
            ),
            ("<user@b\u{fc}cher.example>", false, E(Utf8NotAllowed)),
            ("<\u{7528}\u{6237}@x>", false, E(Utf8NotAllowed)),
            (
                "<\"j\u{f6} rg\"@x>",
                true,
                O("j\u{f6} rg", "x", "<\"j\u{f6} rg\"@x>"),
            ),
            ("<@b\u{fc}cher:user@x>", false, E(Utf8NotAllowed)),
            (
                "<user@a\u{3002}b>",
                true,
                E(Syntax("invalid character in domain")),
            ),
            (
                "<a\u{85}b@x>",
                true,
                E(Syntax("invalid character in local part")),
            ),
            (
                "<\"a\u{85}b\"@x>",
                true,
                E(Syntax("control character in local part")),
            ),
            (
                "<a\u{a0}b@x>",
                true,
                E(Syntax("invalid character in local part")),
            ),
            // Invalid UTF-8 that is also malformed: the syntax error wins.
            (
                "<j\u{f6}rg@x_y>",
                false,
                E(Syntax("invalid character in domain")),
            ),
            // Limits (RFC 5321 4.5.3.1).
            (long_local.as_str(), false, O("", "example.com", "")),
            (too_long_local.as_str(), false, E(TooLong("local part"))),
        ];
        for (input, utf8, want) in cases {
            let got = parse_forward_path(input, utf8);
            match (want, got) {
                (Want::Postmaster, Ok((ForwardPath::Postmaster, rest))) => assert_eq!(rest, ""),
                (O(local, host, disp), Ok((ForwardPath::Mailbox(m), rest))) => {
                    assert_eq!(rest, "", "{input}");
                    if !disp.is_empty() {
                        assert_eq!(m.local_part.as_str(), local, "{input}");
                        assert_eq!(m.host.to_string(), host, "{input}");
                        assert_eq!(ForwardPath::Mailbox(m.clone()).to_string(), disp, "{input}");
                    }
                    // Display always parses back to the same value.
                    let shown = ForwardPath::Mailbox(m.clone()).to_string();
                    let (again, _) = parse_forward_path(&shown, true).unwrap();
                    assert_eq!(again, ForwardPath::Mailbox(m.clone()), "{input}");
                    assert_eq!(Mailbox::parse(&m.to_string(), true), Ok(m), "{input}");
                }
                (E(e), Err(got)) => assert_eq!(got, e, "{input}"),
                (_, got) => panic!("{input:?}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn reverse_paths() {
        type Want = Result<(&'static str, &'static str), AddressError>;
        let cases: Vec<(&str, Want)> = vec![
            ("<>", Ok(("<>", ""))),
            ("<> SIZE=10", Ok(("<>", " SIZE=10"))),
            ("<a@b> BODY=8BITMIME", Ok(("<a@b>", " BODY=8BITMIME"))),
            ("<a@b>x", Ok(("<a@b>", "x"))),
            ("<@x:a@b>", Ok(("<a@b>", ""))),
            ("<postmaster>", Err(AddressError::Syntax("missing @domain"))),
            ("", Err(AddressError::Syntax("path must start with <"))),
            ("<", Err(AddressError::Syntax("empty local part"))),
            (
                " <a@b>",
                Err(AddressError::Syntax("path must start with <")),
            ),
        ];
        for (input, want) in cases {
            let got = parse_reverse_path(input, false).map(|(p, r)| (p.to_string(), r));
            let want = want.map(|(p, r)| (p.to_owned(), r));
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn length_limits() {
        // Domain: 255 octets is the limit (labels of 63).
        let label = "a".repeat(63);
        let d255 = format!("{label}.{label}.{label}.{}", "b".repeat(63));
        assert_eq!(d255.len(), 255);
        assert!(Domain::parse(&d255).is_ok());
        let d256 = format!("{d255}c");
        assert_eq!(Domain::parse(&d256), Err(AddressError::TooLong("domain")));
        assert_eq!(
            Domain::parse(&"a".repeat(64)),
            Err(AddressError::TooLong("domain label"))
        );
        assert!(Domain::parse(&"a".repeat(63)).is_ok());

        // Path: 256 octets including the brackets.
        let local = "l".repeat(64);
        let host = |n: usize| {
            // n octets of domain made of 63-octet labels.
            let mut s = String::new();
            while s.len() < n {
                if !s.is_empty() {
                    s.push('.');
                }
                let take = (n - s.len()).min(63);
                s.push_str(&"d".repeat(take));
            }
            s
        };
        let p256 = format!("<{local}@{}>", host(256 - 64 - 3));
        assert_eq!(p256.len(), 256);
        assert!(parse_forward_path(&p256, false).is_ok());
        let p257 = format!("<{local}@{}>", host(257 - 64 - 3));
        assert_eq!(p257.len(), 257);
        assert_eq!(
            parse_forward_path(&p257, false),
            Err(AddressError::TooLong("path"))
        );
        // The source route counts towards the path length.
        let routed = format!("<@{}:{local}@{}>", host(20), host(256 - 64 - 3 - 22));
        assert_eq!(routed.len(), 256);
        assert!(parse_forward_path(&routed, false).is_ok());
        let routed = format!("<@{}:{local}@{}>", host(21), host(256 - 64 - 3 - 22));
        assert_eq!(
            parse_forward_path(&routed, false),
            Err(AddressError::TooLong("path"))
        );

        // Local part: the wire form counts, quotes and escapes included.
        let quoted = format!("\"{}\"@x", "q".repeat(62));
        assert!(Mailbox::parse(&quoted, false).is_ok());
        let quoted = format!("\"{}\"@x", "q".repeat(63));
        assert_eq!(
            Mailbox::parse(&quoted, false),
            Err(AddressError::TooLong("local part"))
        );
        // Mailbox::parse: at most a path minus its brackets.
        let m254 = format!("{local}@{}", host(254 - 65));
        assert!(Mailbox::parse(&m254, false).is_ok());
        let m255 = format!("{local}@{}", host(255 - 65));
        assert_eq!(
            Mailbox::parse(&m255, false),
            Err(AddressError::TooLong("address"))
        );
        // The printed (lower-cased) form must fit as well: `İ` (2 octets)
        // prints as `i̇` (3).
        let label = "\u{130}".repeat(21); // 42 octets, 63 printed
        let grows = format!("{local}@{}.x", [label.as_str(); 3].join("."));
        assert_eq!(grows.len(), 195);
        assert_eq!(
            Mailbox::parse(&grows, true),
            Err(AddressError::TooLong("address"))
        );
        let fits = format!("{}@{}.x", "l".repeat(50), [label.as_str(); 3].join("."));
        let m = Mailbox::parse(&fits, true).unwrap();
        assert_eq!(m.to_string().len(), 244);
        assert_eq!(Mailbox::parse(&m.to_string(), true), Ok(m));
        // UTF-8 counts in octets.
        let utf = format!("{}@x", "\u{e9}".repeat(32));
        assert!(Mailbox::parse(&utf, true).is_ok());
        let utf = format!("{}a@x", "\u{e9}".repeat(32));
        assert_eq!(
            Mailbox::parse(&utf, true),
            Err(AddressError::TooLong("local part"))
        );
    }

    #[test]
    fn domains() {
        let ok = [
            ("localhost", "localhost"),
            ("EXAMPLE.com", "example.com"),
            ("1.2.3.4", "1.2.3.4"),
            ("3com.com", "3com.com"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c", "a-b.c"),
        ];
        for (input, want) in ok {
            let d = Domain::parse(input).unwrap();
            assert_eq!(d.as_str(), want);
            assert!(d.is_ascii());
            assert_eq!(d.to_string().parse::<Domain>(), Ok(d));
        }
        let bad = [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "-a",
            "a-",
            "a_b",
            "a b",
            "a/b",
            "[1.2.3.4]",
        ];
        for input in bad {
            assert!(
                matches!(Domain::parse(input), Err(AddressError::Syntax(_))),
                "{input}"
            );
        }
        assert_eq!(
            Domain::parse("b\u{fc}cher"),
            Err(AddressError::Utf8NotAllowed)
        );
        let d = Domain::parse_utf8("B\u{dc}CHER.Example").unwrap();
        assert_eq!(d.as_str(), "b\u{fc}cher.example");
        assert!(!d.is_ascii());
        assert_eq!(
            Domain::parse_utf8("\u{212a}.example").unwrap().as_str(),
            "k.example"
        );
        assert!(Domain::parse_utf8("a\u{ff0e}b").is_err());
        assert!(Domain::parse_utf8("a\u{0}b").is_err());
    }

    #[test]
    fn local_parts() {
        for (decoded, quoted) in [
            ("plain", false),
            ("a.b", false),
            ("a b", true),
            ("a..b", true),
            (".a", true),
            ("a@b", true),
            ("", true),
            ("\"", true),
            ("j\u{f6}rg", false),
        ] {
            let lp = LocalPart::new(decoded, true).unwrap();
            assert_eq!(lp.needs_quoting(), quoted, "{decoded}");
            assert_eq!(lp.as_str(), decoded);
            let m = Mailbox {
                local_part: lp,
                host: Host::Domain(Domain::parse("x").unwrap()),
            };
            assert_eq!(Mailbox::parse(&m.to_string(), true), Ok(m));
        }
        assert_eq!(
            LocalPart::new("j\u{f6}rg", false),
            Err(AddressError::Utf8NotAllowed)
        );
        assert!(LocalPart::new("a\tb", true).is_err());
        assert!(LocalPart::new("a\rb", true).is_err());
        assert_eq!(
            LocalPart::new(&"\"".repeat(32), true),
            Err(AddressError::TooLong("local part"))
        );
        assert!(LocalPart::new(&"\"".repeat(31), true).is_ok());
    }

    #[test]
    fn mailbox_parse_and_accessors() {
        let m = mb("Foo@Example.COM");
        assert_eq!(m.local_part.as_str(), "Foo");
        assert_eq!(m.domain().map(Domain::as_str), Some("example.com"));
        assert!(m.is_ascii());
        let m = mb("x@[10.0.0.1]");
        assert_eq!(m.domain(), None);
        assert_eq!(
            m.host,
            Host::Literal(AddressLiteral::Ipv4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert!(Mailbox::parse("x@[10.0.0.1]z", true).is_err());
        assert!(Mailbox::parse("x@y z", true).is_err());
        assert!(Mailbox::parse("<x@y>", true).is_err());
        assert!(Mailbox::parse("x", true).is_err());
        assert!(Mailbox::parse("x@", true).is_err());
        assert!(Mailbox::parse("@y", true).is_err());
        assert!(Mailbox::parse("a@b@c", true).is_err());
        assert_eq!(
            Mailbox::parse("\u{e9}@x", false),
            Err(AddressError::Utf8NotAllowed)
        );
        assert!(!mb("\u{e9}@x").is_ascii());
        assert!(AddressError::Utf8NotAllowed.is_utf8_not_allowed());
        assert!(!AddressError::Syntax("x").is_utf8_not_allowed());
        assert!(ReversePath::Null.is_ascii());
        assert_eq!(ReversePath::Null.mailbox(), None);
        assert_eq!(ForwardPath::Postmaster.to_string(), "<Postmaster>");
        assert!(!ForwardPath::Mailbox(mb("\u{e9}@x")).is_ascii());
    }

    #[test]
    fn literals() {
        let cases = [
            ("[127.0.0.1]", "[127.0.0.1]"),
            ("[001.02.3.4]", "[1.2.3.4]"),
            ("[IPv6:::]", "[IPv6:::]"),
            ("[IPv6:::1]", "[IPv6:::1]"),
            ("[IPv6:1::]", "[IPv6:1::]"),
            ("[IPv6:0:0:0:0:0:0:0:1]", "[IPv6:::1]"),
            ("[IPv6:2001:db8:0:0:1:0:0:1]", "[IPv6:2001:db8::1:0:0:1]"),
            ("[IPv6:::ffff:192.0.2.1]", "[IPv6:::ffff:192.0.2.1]"),
            ("[IPv6:0:0:0:0:0:ffff:192.0.2.1]", "[IPv6:::ffff:192.0.2.1]"),
            ("[IPv6:::192.0.2.1]", "[IPv6:::c000:201]"),
            ("[Tag:c:o:n]", "[Tag:c:o:n]"),
        ];
        for (input, want) in cases {
            let l = AddressLiteral::parse(input).unwrap();
            assert_eq!(l.to_string(), want, "{input}");
            assert_eq!(AddressLiteral::parse(&l.to_string()), Ok(l), "{input}");
        }
        for bad in [
            "1.2.3.4",
            "[1.2.3.4",
            "[IPv6:1:::2]",
            "[IPv6::1]",
            "[IPv6:1:]",
            "[IPv6:::1.2.3]",
            "[IPv6:::1.2.3.4.5]",
            "[IPv6:1.2.3.4::]",
            "[IPv6:::ffff:1.2.3.4:1]",
            "[IPv6:1:2:3:4:5:6:7:1.2.3.4]",
            "[a]",
            "[a b:c]",
        ] {
            assert!(AddressLiteral::parse(bad).is_err(), "{bad}");
        }
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn local_part() -> impl Strategy<Value = String> {
            prop_oneof![
                // Dot-strings.
                "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}){0,3}",
                // Anything a Quoted-string can carry.
                "[ -~]{0,30}",
                // UTF-8.
                "[a-z\u{e0}-\u{ff}\u{4e00}-\u{4e20}.]{1,12}",
                "[ -~\u{e0}-\u{ff}]{0,12}",
            ]
        }

        fn domain() -> impl Strategy<Value = String> {
            let label = prop_oneof![
                "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?",
                "[a-z\u{e0}-\u{fe}\u{391}-\u{3a9}]{1,8}",
            ];
            proptest::collection::vec(label, 1..5).prop_map(|v| v.join("."))
        }

        fn host() -> impl Strategy<Value = Host> {
            prop_oneof![
                4 => domain().prop_filter_map("valid domain", |d| Domain::parse_utf8(&d).ok().map(Host::Domain)),
                1 => any::<[u8; 4]>().prop_map(|o| Host::Literal(AddressLiteral::Ipv4(o.into()))),
                1 => any::<[u16; 8]>().prop_map(|s| Host::Literal(AddressLiteral::Ipv6(s.into()))),
                1 => any::<u32>().prop_map(|v| Host::Literal(AddressLiteral::Ipv6(
                    Ipv4Addr::from(v).to_ipv6_mapped()))),
                1 => ("[a-zA-Z0-9]([a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?", "[!-Z^-~]{1,12}")
                    .prop_filter("not IPv6", |(t, _)| !t.eq_ignore_ascii_case("ipv6"))
                    .prop_map(|(tag, content)| Host::Literal(AddressLiteral::General { tag, content })),
            ]
        }

        fn mailbox() -> impl Strategy<Value = Mailbox> {
            (local_part(), host()).prop_filter_map("fits the limits", |(l, host)| {
                let local_part = LocalPart::new(&l, true).ok()?;
                let m = Mailbox { local_part, host };
                (m.to_string().len() <= MAX_MAILBOX).then_some(m)
            })
        }

        proptest! {
            #[test]
            fn mailbox_round_trips(m in mailbox()) {
                let shown = m.to_string();
                prop_assert_eq!(Mailbox::parse(&shown, true), Ok(m.clone()));
                if m.is_ascii() {
                    prop_assert_eq!(Mailbox::parse(&shown, false), Ok(m.clone()));
                } else {
                    prop_assert_eq!(Mailbox::parse(&shown, false), Err(AddressError::Utf8NotAllowed));
                }
                let fwd = ForwardPath::Mailbox(m.clone());
                let text = format!("{fwd} NOTIFY=NEVER");
                prop_assert_eq!(parse_forward_path(&text, true), Ok((fwd, " NOTIFY=NEVER")));
                let rev = ReversePath::Mailbox(m);
                let shown = rev.to_string();
                prop_assert_eq!(parse_reverse_path(&shown, true), Ok((rev, "")));
            }

            #[test]
            fn parsing_never_panics_and_display_round_trips(s in "\\PC{0,80}", utf8 in any::<bool>()) {
                if let Ok((p, _)) = parse_forward_path(&s, utf8) {
                    let shown = p.to_string();
                    prop_assert_eq!(parse_forward_path(&shown, utf8), Ok((p, "")));
                }
                if let Ok((p, _)) = parse_reverse_path(&s, utf8) {
                    let shown = p.to_string();
                    prop_assert_eq!(parse_reverse_path(&shown, utf8), Ok((p, "")));
                }
                if let Ok(m) = Mailbox::parse(&s, utf8) {
                    prop_assert_eq!(Mailbox::parse(&m.to_string(), utf8), Ok(m));
                }
            }

            #[test]
            fn quoted_inputs_round_trip(l in "[ -~]{0,20}", d in domain()) {
                // Every decoded text quoted with every character escaped.
                let mut q = String::from("\"");
                for c in l.chars() {
                    q.push('\\');
                    q.push(c);
                }
                q.push('"');
                let text = format!("{q}@{d}");
                if let Ok(m) = Mailbox::parse(&text, true) {
                    prop_assert_eq!(m.local_part.as_str(), l.as_str());
                    prop_assert_eq!(Mailbox::parse(&m.to_string(), true), Ok(m));
                }
            }
        }
    }
}
