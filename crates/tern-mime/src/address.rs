//! RFC 5322 address lists (`From:`, `To:`…) as IMAP sees them: each
//! mailbox as (name, source route, mailbox, host), groups kept.
//!
//! Lenient like Dovecot's parser: names are the raw phrase bytes (quoted
//! strings unquoted, words joined by one space, encoded words left
//! encoded); a mailbox without a display name takes its comment as name
//! (`john@example.org (John)`); a missing local part or domain becomes
//! `MISSING_MAILBOX` / `MISSING_DOMAIN` so that a host is never NIL outside
//! group syntax. Never fails: unparseable input yields what could be read.

/// One mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mailbox {
    /// Display name (raw phrase), if any.
    pub name: Option<Vec<u8>>,
    /// Obsolete source route (`@a,@b`), if any.
    pub adl: Option<Vec<u8>>,
    /// Local part, unquoted.
    pub mailbox: Vec<u8>,
    /// Domain.
    pub host: Vec<u8>,
}

/// An element of an address list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressItem {
    /// A single mailbox.
    Mailbox(Mailbox),
    /// `name: members;`
    Group {
        /// The group's display name (raw phrase).
        name: Vec<u8>,
        /// Its members.
        members: Vec<Mailbox>,
    },
}

/// Text put where a mailbox has no local part.
pub const MISSING_MAILBOX: &[u8] = b"MISSING_MAILBOX";
/// Text put where a mailbox has no domain.
pub const MISSING_DOMAIN: &[u8] = b"MISSING_DOMAIN";

/// Most list items kept from one field (bounds work on hostile headers).
const MAX_ITEMS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(Vec<u8>),
    Quoted(Vec<u8>),
    Comment(Vec<u8>),
    Literal(Vec<u8>),
    Special(u8),
}

/// Tokens with a flag: was there white space (or a comment) before it.
fn lex(b: &[u8]) -> Vec<(bool, Tok)> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut space = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                space = true;
                i += 1;
            }
            b'(' => {
                let mut depth = 0usize;
                let mut text = Vec::new();
                while i < b.len() {
                    match b[i] {
                        b'\\' if i + 1 < b.len() => {
                            i += 1;
                            text.push(b[i]);
                        }
                        b'(' => {
                            if depth > 0 {
                                text.push(b'(');
                            }
                            depth += 1;
                        }
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                            text.push(b')');
                        }
                        b'\r' | b'\n' => {}
                        x => text.push(x),
                    }
                    i += 1;
                }
                out.push((space, Tok::Comment(text)));
                space = true;
            }
            b'"' => {
                i += 1;
                let mut text = Vec::new();
                while i < b.len() && b[i] != b'"' {
                    match b[i] {
                        b'\\' if i + 1 < b.len() => {
                            i += 1;
                            text.push(b[i]);
                        }
                        b'\r' | b'\n' => {}
                        x => text.push(x),
                    }
                    i += 1;
                }
                i += 1;
                out.push((space, Tok::Quoted(text)));
                space = false;
            }
            b'[' => {
                let start = i;
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i = (i + 1).min(b.len());
                let lit = b[start..i]
                    .iter()
                    .copied()
                    .filter(|&x| x != b'\r' && x != b'\n')
                    .collect();
                out.push((space, Tok::Literal(lit)));
                space = false;
            }
            b'<' | b'>' | b'@' | b',' | b';' | b':' | b'.' | b'\\' | b']' => {
                out.push((space, Tok::Special(c)));
                space = false;
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !matches!(
                        b[i],
                        b' ' | b'\t'
                            | b'\r'
                            | b'\n'
                            | b'('
                            | b')'
                            | b'"'
                            | b'['
                            | b']'
                            | b'<'
                            | b'>'
                            | b'@'
                            | b','
                            | b';'
                            | b':'
                            | b'.'
                            | b'\\'
                    )
                {
                    i += 1;
                }
                if i == start {
                    // A stray `)`.
                    i += 1;
                    continue;
                }
                out.push((space, Tok::Word(b[start..i].to_vec())));
                space = false;
            }
        }
    }
    out
}

/// Joins a phrase: words and quoted strings, one space where the source
/// had white space, `.` kept.
fn phrase(toks: &[(bool, Tok)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (space, t) in toks {
        let text: &[u8] = match t {
            Tok::Word(w) | Tok::Quoted(w) | Tok::Literal(w) => w,
            Tok::Special(c) => std::slice::from_ref(c),
            Tok::Comment(_) => continue,
        };
        if *space && !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(text);
    }
    out
}

/// Joins without spaces (local parts, domains).
fn tight(toks: &[(bool, Tok)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, t) in toks {
        match t {
            Tok::Word(w) | Tok::Quoted(w) | Tok::Literal(w) => out.extend_from_slice(w),
            Tok::Special(c) => out.push(*c),
            Tok::Comment(_) => {}
        }
    }
    out
}

fn is_special(t: &Tok, c: u8) -> bool {
    *t == Tok::Special(c)
}

fn last_comment(toks: &[(bool, Tok)]) -> Option<Vec<u8>> {
    toks.iter().rev().find_map(|(_, t)| match t {
        Tok::Comment(c) if !crate::header::trim(c).is_empty() => {
            Some(crate::header::trim(c).to_vec())
        }
        _ => None,
    })
}

fn nonempty(v: Vec<u8>) -> Option<Vec<u8>> {
    (!v.is_empty()).then_some(v)
}

fn is_word(t: &Tok) -> bool {
    matches!(t, Tok::Word(_) | Tok::Quoted(_))
}

/// Two words side by side with only white space between them: a phrase,
/// not a local part.
fn is_multiword(toks: &[(bool, Tok)]) -> bool {
    toks.windows(2)
        .any(|w| is_word(&w[0].1) && is_word(&w[1].1) && w[1].0)
}

/// A dot-atom (words joined by `.`, white space around dots allowed) at
/// the start of `toks`: the text and how many tokens it took. It stops at
/// anything else, including a second word after white space.
fn dot_atom(toks: &[(bool, Tok)]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut n = 0;
    let mut last_word = false;
    for (_, t) in toks {
        match t {
            Tok::Word(w) | Tok::Quoted(w) | Tok::Literal(w) if !last_word => {
                out.extend_from_slice(w);
                last_word = true;
            }
            Tok::Special(b'.') => {
                out.push(b'.');
                last_word = false;
            }
            _ => break,
        }
        n += 1;
    }
    (out, n)
}

/// `local@domain` with white space, comments and junk after it ignored.
fn bare_addr_spec(toks: &[(bool, Tok)]) -> (Vec<u8>, Vec<u8>) {
    let (local, n) = dot_atom(toks);
    let rest = &toks[n..];
    if !rest.first().is_some_and(|(_, t)| is_special(t, b'@')) {
        return (local, Vec::new());
    }
    let (domain, _) = dot_atom(&rest[1..]);
    // A domain ending in a dot is no domain.
    let domain = if domain.ends_with(b".") {
        Vec::new()
    } else {
        domain
    };
    (local, domain)
}

/// What is inside `<...>`: route, local part, domain. `None` for the
/// domain marks a syntax error.
fn angle_addr(inner: &[(bool, Tok)], closed: bool) -> (Option<Vec<u8>>, Vec<u8>, Option<Vec<u8>>) {
    if inner.is_empty() {
        return (None, Vec::new(), Some(Vec::new()));
    }
    let mut rest = inner;
    let mut adl = None;
    if is_special(&rest[0].1, b'@') {
        match rest.iter().position(|(_, t)| is_special(t, b':')) {
            Some(colon) => {
                adl = nonempty(tight(&rest[..colon]));
                rest = &rest[colon + 1..];
            }
            None => {
                return (
                    Some(b"INVALID_ROUTE".to_vec()),
                    Vec::new(),
                    Some(Vec::new()),
                );
            }
        }
    }
    let (local, n) = dot_atom(rest);
    let rest = &rest[n..];
    let ok_at = rest.first().is_some_and(|(_, t)| is_special(t, b'@'));
    if !ok_at {
        let domain = (rest.is_empty() && closed).then(Vec::new);
        return (adl, local, domain);
    }
    let (domain, m) = dot_atom(&rest[1..]);
    let valid = closed && m + 1 == rest.len() && !domain.is_empty() && !domain.ends_with(b".");
    (adl, local, valid.then_some(domain))
}

fn filled(name: Option<Vec<u8>>, adl: Option<Vec<u8>>, local: Vec<u8>, host: Vec<u8>) -> Mailbox {
    Mailbox {
        name: name.map(|n| for_humans(&n)).and_then(nonempty),
        adl,
        mailbox: if local.is_empty() {
            MISSING_MAILBOX.to_vec()
        } else {
            local
        },
        host: if host.is_empty() {
            MISSING_DOMAIN.to_vec()
        } else {
            host
        },
    }
}

/// One mailbox from the tokens between two commas (Dovecot 2.3's reading
/// of broken input, checked case by case against it):
///
/// * `Name <local@domain>`; inside the brackets a source route, a
///   dot-atom local part, `@`, a dot-atom domain and nothing else, or the
///   domain is `SYNTAX_ERROR`; a route without `:` is `INVALID_ROUTE`.
/// * `local@domain (comment)`: the last comment after the address is the
///   name.
/// * several words before any `@` (`Someone Else`): a name with a missing
///   mailbox and domain.
fn mailbox(seg: &[(bool, Tok)]) -> Mailbox {
    // Comments before the address are not its name.
    let first = seg
        .iter()
        .position(|(_, t)| !matches!(t, Tok::Comment(_)))
        .unwrap_or(seg.len());
    let seg = &seg[first..];
    let words: Vec<(bool, Tok)> = seg
        .iter()
        .filter(|(_, t)| !matches!(t, Tok::Comment(_)))
        .cloned()
        .collect();
    if let Some(lt) = words.iter().position(|(_, t)| is_special(t, b'<')) {
        let close = words[lt..]
            .iter()
            .position(|(_, t)| is_special(t, b'>'))
            .map(|p| lt + p);
        let inner = &words[lt + 1..close.unwrap_or(words.len())];
        let (adl, local, domain) = angle_addr(inner, close.is_some());
        let name = nonempty(phrase(&words[..lt])).or_else(|| last_comment(seg));
        let host = domain.unwrap_or_else(|| b"SYNTAX_ERROR".to_vec());
        return filled(name, adl, local, host);
    }
    let at = words
        .iter()
        .position(|(_, t)| is_special(t, b'@'))
        .unwrap_or(words.len());
    if is_multiword(&words[..at]) {
        return filled(Some(phrase(&words[..at])), None, Vec::new(), Vec::new());
    }
    let (local, host) = bare_addr_spec(&words);
    filled(last_comment(seg), None, local, host)
}

/// Collapses white space for display, as Dovecot does for names and
/// subjects: tabs, CR and LF become spaces, runs of spaces one space,
/// leading and trailing spaces go; NUL becomes 0x80.
pub fn for_humans(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for &b in v {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                if !out.is_empty() && out.last() != Some(&b' ') {
                    out.push(b' ');
                }
            }
            0 => out.push(0x80),
            b => out.push(b),
        }
    }
    if out.last() == Some(&b' ') {
        out.pop();
    }
    out
}

/// End of the element starting at `i`: the next `,` (or `;` when
/// `in_group`) outside angle brackets.
fn segment_end(toks: &[(bool, Tok)], i: usize, in_group: bool) -> usize {
    let mut angle = false;
    let mut j = i;
    while j < toks.len() {
        match &toks[j].1 {
            Tok::Special(b'<') => angle = true,
            Tok::Special(b'>') => angle = false,
            Tok::Special(b',') if !angle => return j,
            Tok::Special(b';') if in_group && !angle => return j,
            _ => {}
        }
        j += 1;
    }
    j
}

fn only_comments(toks: &[(bool, Tok)]) -> bool {
    toks.iter().all(|(_, t)| matches!(t, Tok::Comment(_)))
}

/// Parses the raw value of an address field. An empty element between
/// commas is a mailbox with missing parts (as Dovecot reports it); an
/// empty element after the last comma is nothing.
pub fn parse_list(raw: &[u8]) -> Vec<AddressItem> {
    let toks = lex(raw);
    let mut items = Vec::new();
    if only_comments(&toks) {
        return items;
    }
    let mut i = 0;
    loop {
        if items.len() >= MAX_ITEMS {
            break;
        }
        // A group if a `:` comes before any `<`, `@` or `,`.
        let group_colon = toks[i..]
            .iter()
            .position(|(_, t)| matches!(t, Tok::Special(b':' | b'<' | b'@' | b',')))
            .map(|p| i + p)
            .filter(|&p| is_special(&toks[p].1, b':'));
        if let Some(colon) = group_colon {
            let name = for_humans(&phrase(&toks[i..colon]));
            let mut members = Vec::new();
            i = colon + 1;
            let end = toks[i..]
                .iter()
                .position(|(_, t)| is_special(t, b';'))
                .map_or(toks.len(), |p| i + p);
            if !only_comments(&toks[i..end]) {
                loop {
                    let e = segment_end(&toks[..end], i, true);
                    if members.len() < MAX_ITEMS {
                        members.push(mailbox(&toks[i..e]));
                    }
                    i = e;
                    if i < end && is_special(&toks[i].1, b',') {
                        i += 1;
                        continue;
                    }
                    break;
                }
            }
            i = (end + 1).min(toks.len());
            items.push(AddressItem::Group { name, members });
            // Whatever follows up to the next comma is junk.
            i = segment_end(&toks, i, false);
        } else {
            let e = segment_end(&toks, i, false);
            items.push(AddressItem::Mailbox(mailbox(&toks[i..e])));
            i = e;
        }
        if i >= toks.len() {
            break;
        }
        // At a comma: an empty rest ends the list.
        i += 1;
        if only_comments(&toks[i..]) {
            break;
        }
    }
    items
}

/// The first mailbox of a list, looking inside groups.
pub fn first_mailbox(items: &[AddressItem]) -> Option<&Mailbox> {
    items.iter().find_map(|i| match i {
        AddressItem::Mailbox(m) => Some(m),
        AddressItem::Group { members, .. } => members.first(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(name: Option<&str>, adl: Option<&str>, mailbox: &str, host: &str) -> AddressItem {
        AddressItem::Mailbox(Mailbox {
            name: name.map(|n| n.as_bytes().to_vec()),
            adl: adl.map(|n| n.as_bytes().to_vec()),
            mailbox: mailbox.into(),
            host: host.into(),
        })
    }

    #[test]
    fn address_lists() {
        let cases: Vec<(&str, Vec<AddressItem>)> = vec![
            ("a@b.example", vec![mb(None, None, "a", "b.example")]),
            (
                "\"Joe Q. Public\" <john.q.public@example.com>",
                vec![mb(
                    Some("Joe Q. Public"),
                    None,
                    "john.q.public",
                    "example.com",
                )],
            ),
            (
                "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
                vec![
                    mb(Some("Mary Smith"), None, "mary", "x.test"),
                    mb(None, None, "jdoe", "example.org"),
                    mb(Some("Who?"), None, "one", "y.test"),
                ],
            ),
            (
                "=?utf-8?q?J=C3=B6rg?= <j@x.test>",
                vec![mb(Some("=?utf-8?q?J=C3=B6rg?="), None, "j", "x.test")],
            ),
            (
                "john@x.test (John Doe)",
                vec![mb(Some("John Doe"), None, "john", "x.test")],
            ),
            (
                "<@route1,@route2:user@host.test>",
                vec![mb(None, Some("@route1,@route2"), "user", "host.test")],
            ),
            ("\"a b\"@x.test", vec![mb(None, None, "a b", "x.test")]),
            (
                "undisclosed-recipients",
                vec![mb(None, None, "undisclosed-recipients", "MISSING_DOMAIN")],
            ),
            ("", vec![]),
            ("(only a comment)", vec![]),
            (
                " , ,",
                vec![mb(None, None, "MISSING_MAILBOX", "MISSING_DOMAIN"); 2],
            ),
            ("a@b.test,", vec![mb(None, None, "a", "b.test")]),
            (
                "Someone Else",
                vec![mb(
                    Some("Someone Else"),
                    None,
                    "MISSING_MAILBOX",
                    "MISSING_DOMAIN",
                )],
            ),
            (
                "a b c@d",
                vec![mb(Some("a b c"), None, "MISSING_MAILBOX", "MISSING_DOMAIN")],
            ),
            (
                "<Undisclosed Recipients>",
                vec![mb(None, None, "Undisclosed", "SYNTAX_ERROR")],
            ),
            (
                "Joe <joe@x",
                vec![mb(Some("Joe"), None, "joe", "SYNTAX_ERROR")],
            ),
            ("<a.b@c.d.>", vec![mb(None, None, "a.b", "SYNTAX_ERROR")]),
            (
                "<@b>",
                vec![mb(
                    None,
                    Some("INVALID_ROUTE"),
                    "MISSING_MAILBOX",
                    "MISSING_DOMAIN",
                )],
            ),
            (
                "\"q\" <>",
                vec![mb(Some("q"), None, "MISSING_MAILBOX", "MISSING_DOMAIN")],
            ),
            (
                "x@y (c1) (c2), (y) c@d",
                vec![mb(Some("c2"), None, "x", "y"), mb(None, None, "c", "d")],
            ),
            (
                "a@b c, a@b@c, a@b .c, a@b.",
                vec![
                    mb(None, None, "a", "b"),
                    mb(None, None, "a", "b"),
                    mb(None, None, "a", "b.c"),
                    mb(None, None, "a", "MISSING_DOMAIN"),
                ],
            ),
            (
                "A (comment) B\t <a@b>",
                vec![mb(Some("A B"), None, "a", "b")],
            ),
            (
                "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
                vec![mb(Some("Pete"), None, "pete", "silly.test")],
            ),
            (
                "A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, x@y.test",
                vec![
                    AddressItem::Group {
                        name: b"A Group".to_vec(),
                        members: vec![
                            Mailbox {
                                name: Some(b"Ed Jones".to_vec()),
                                adl: None,
                                mailbox: b"c".to_vec(),
                                host: b"a.test".to_vec(),
                            },
                            Mailbox {
                                name: None,
                                adl: None,
                                mailbox: b"joe".to_vec(),
                                host: b"where.test".to_vec(),
                            },
                            Mailbox {
                                name: Some(b"John".to_vec()),
                                adl: None,
                                mailbox: b"jdoe".to_vec(),
                                host: b"one.test".to_vec(),
                            },
                        ],
                    },
                    mb(None, None, "x", "y.test"),
                ],
            ),
            (
                "Undisclosed recipients:;",
                vec![AddressItem::Group {
                    name: b"Undisclosed recipients".to_vec(),
                    members: vec![],
                }],
            ),
            ("a@[192.0.2.1]", vec![mb(None, None, "a", "[192.0.2.1]")]),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_list(raw.as_bytes()), want, "{raw}");
        }
    }
}
