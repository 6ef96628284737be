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
