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

fn addr_spec(toks: &[(bool, Tok)]) -> (Vec<u8>, Vec<u8>) {
    match toks.iter().rposition(|(_, t)| is_special(t, b'@')) {
        Some(at) => (tight(&toks[..at]), tight(&toks[at + 1..])),
        None => (tight(toks), Vec::new()),
    }
}

fn nonempty(v: Vec<u8>) -> Option<Vec<u8>> {
    (!v.is_empty()).then_some(v)
}

/// One mailbox from its tokens (no top-level `,` inside).
fn mailbox(seg: &[(bool, Tok)]) -> Option<Mailbox> {
    if seg.iter().all(|(_, t)| matches!(t, Tok::Comment(_))) {
        return None;
    }
    let (name, adl, local, host) =
        if let Some(lt) = seg.iter().position(|(_, t)| is_special(t, b'<')) {
            let close = seg[lt..]
                .iter()
                .position(|(_, t)| is_special(t, b'>'))
                .map_or(seg.len(), |p| lt + p);
            let mut inner = &seg[lt + 1..close];
            let mut adl = None;
            if inner.first().is_some_and(|(_, t)| is_special(t, b'@'))
                && let Some(colon) = inner.iter().position(|(_, t)| is_special(t, b':'))
            {
                adl = nonempty(tight(&inner[..colon]));
                inner = &inner[colon + 1..];
            }
            let (local, host) = addr_spec(inner);
            let name = nonempty(phrase(&seg[..lt])).or_else(|| last_comment(seg));
            (name, adl, local, host)
        } else {
            let (local, host) = addr_spec(seg);
            (last_comment(seg), None, local, host)
        };
    let angle = seg.iter().any(|(_, t)| is_special(t, b'<'));
    if local.is_empty() && host.is_empty() && name.is_none() && !angle {
        return None;
    }
    Some(Mailbox {
        name,
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
    })
}

/// End of the segment starting at `i`: the next `,` (or `;` when
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

/// Parses the raw value of an address field.
pub fn parse_list(raw: &[u8]) -> Vec<AddressItem> {
    let toks = lex(raw);
    let mut items = Vec::new();
    let mut i = 0;
    while i < toks.len() && items.len() < MAX_ITEMS {
        if is_special(&toks[i].1, b',') || is_special(&toks[i].1, b';') {
            i += 1;
            continue;
        }
        // A group if a `:` comes before any `<`, `@` or `,`.
        let group_colon = toks[i..]
            .iter()
            .position(|(_, t)| matches!(t, Tok::Special(b':' | b'<' | b'@' | b',')))
            .map(|p| i + p)
            .filter(|&p| is_special(&toks[p].1, b':'));
        if let Some(colon) = group_colon {
            let name = phrase(&toks[i..colon]);
            let mut members = Vec::new();
            i = colon + 1;
            while i < toks.len() {
                if is_special(&toks[i].1, b';') {
                    i += 1;
                    break;
                }
                if is_special(&toks[i].1, b',') {
                    i += 1;
                    continue;
                }
                let end = segment_end(&toks, i, true);
                if let Some(m) = mailbox(&toks[i..end])
                    && members.len() < MAX_ITEMS
                {
                    members.push(m);
                }
                i = end;
            }
            items.push(AddressItem::Group { name, members });
        } else {
            let end = segment_end(&toks, i, false);
            if let Some(m) = mailbox(&toks[i..end]) {
                items.push(AddressItem::Mailbox(m));
            }
            i = end;
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
            (" , ,", vec![]),
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
