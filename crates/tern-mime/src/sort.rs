//! SORT keys (RFC 5256 §3, RFC 5957 DISPLAYFROM/DISPLAYTO) and the base
//! subject of RFC 5256 §2.1, which THREAD also uses.
//!
//! The keys are values; comparing them (and ARRIVAL, SIZE and the REVERSE
//! modifier, which need no message parsing) is the server's job, with
//! [`compare_casemap`] for the string keys.

use std::cmp::Ordering;

use crate::Message;
use crate::address::{AddressItem, Mailbox};
use crate::header::last_value;
use crate::search::{decode_header_value, fold};

/// The per-message keys SORT orders by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SortKeys {
    /// SUBJECT: the base subject.
    pub subject: String,
    /// FROM: local part of the first From address (empty if none; a
    /// group's name when the list starts with a group, as Dovecot).
    pub from: Vec<u8>,
    /// TO: local part of the first To address.
    pub to: Vec<u8>,
    /// CC: local part of the first Cc address.
    pub cc: Vec<u8>,
    /// DISPLAYFROM: decoded display name of the first From address, or
    /// its `mailbox@host` when it has none (a group: its decoded name).
    pub display_from: String,
    /// DISPLAYTO: the same for the first To address.
    pub display_to: String,
    /// DATE: the sent date (seconds since the epoch, UTC), or the internal
    /// date when `Date:` is missing or invalid.
    pub date: i64,
}

/// Compares two strings the way `i;unicode-casemap` would for our purposes
/// (simple lowercasing, then code point order); used for every string key.
pub fn compare_casemap(a: &str, b: &str) -> Ordering {
    fold(a).cmp(&fold(b))
}

/// The first address of a list as SORT sees it, Dovecot's way: a group's
/// start marker counts, with the group name as its mailbox and display
/// name.
fn first(items: &[AddressItem]) -> Option<(Vec<u8>, String)> {
    Some(match items.first()? {
        AddressItem::Group { name, .. } => (name.clone(), decode_header_value(name)),
        AddressItem::Mailbox(m) => (m.mailbox.clone(), display(m)),
    })
}

fn display(m: &Mailbox) -> String {
    match &m.name {
        Some(n) if !n.is_empty() => decode_header_value(n),
        _ => format!(
            "{}@{}",
            String::from_utf8_lossy(&m.mailbox),
            String::from_utf8_lossy(&m.host)
        ),
    }
}

impl Message<'_> {
    /// The SORT keys; `internal_date` (seconds since the epoch) stands in
    /// for a missing or invalid `Date:`. The address lists are the
    /// ENVELOPE's.
    pub fn sort_keys(&self, internal_date: i64) -> SortKeys {
        let env = self.envelope();
        let (from, display_from) = first(&env.from).unwrap_or_default();
        let (to, display_to) = first(&env.to).unwrap_or_default();
        let (cc, _) = first(&env.cc).unwrap_or_default();
        SortKeys {
            subject: base_subject(last_value(self.header(), b"subject").unwrap_or(b"")).0,
            from,
            to,
            cc,
            display_from,
            display_to,
            date: self.sent_date().map_or(internal_date, |d| d.timestamp),
        }
    }
}

fn skip_wsp(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && (s[i] == b' ' || s[i] == b'\t') {
        i += 1;
    }
    i
}

/// `subj-blob = "[" *BLOBCHAR "]" *WSP` at `i`: the index after it.
fn blob(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'[') {
        return None;
    }
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b']' => return Some(skip_wsp(s, j + 1)),
            b'[' => return None,
            _ => j += 1,
        }
    }
    None
}

fn starts_with_ci(s: &[u8], i: usize, w: &[u8]) -> bool {
    s.len() >= i + w.len() && s[i..i + w.len()].eq_ignore_ascii_case(w)
}

/// `subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"` at `i`.
fn refwd(s: &[u8], i: usize) -> Option<usize> {
    for w in [&b"re"[..], b"fwd", b"fw"] {
        if !starts_with_ci(s, i, w) {
            continue;
        }
        let mut j = skip_wsp(s, i + w.len());
        if let Some(k) = blob(s, j) {
            j = k;
        }
        if s.get(j) == Some(&b':') {
            return Some(j + 1);
        }
    }
    None
}

/// `subj-leader = (*subj-blob subj-refwd) / WSP`: the index after it, and
/// whether it held a `subj-refwd`.
fn leader(s: &[u8]) -> Option<(usize, bool)> {
    if s.first().is_some_and(|&c| c == b' ' || c == b'\t') {
        return Some((1, false));
    }
    let mut i = 0;
    loop {
        if let Some(end) = refwd(s, i) {
            return Some((end, true));
        }
        i = blob(s, i)?;
    }
}

/// The RFC 5256 §2.1 base subject of a raw `Subject:` value, and whether
/// extracting it removed a reply/forward marker (`Re:`, `Fwd:`, `(fwd)`,
/// `[fwd: …]`), which THREAD=REFERENCES needs. Case is kept; compare with
/// [`compare_casemap`].
pub fn base_subject(raw: &[u8]) -> (String, bool) {
    // (1) Decode, turn tabs into spaces, collapse runs of spaces.
    let decoded = decode_header_value(raw).replace('\t', " ");
    let mut s: Vec<u8> = Vec::with_capacity(decoded.len());
    for &b in decoded.as_bytes() {
        if !(b == b' ' && s.last() == Some(&b' ')) {
            s.push(b);
        }
    }
    let mut reply = false;
    let mut s = &s[..];
    loop {
        // (2) Trailers.
        loop {
            if s.ends_with(b" ") {
                s = &s[..s.len() - 1];
            } else if s.len() >= 5 && s[s.len() - 5..].eq_ignore_ascii_case(b"(fwd)") {
                s = &s[..s.len() - 5];
                reply = true;
            } else {
                break;
            }
        }
        // (3)-(5) Leaders and blobs.
        loop {
            if let Some((n, was_refwd)) = leader(s) {
                s = &s[n..];
                reply |= was_refwd;
                continue;
            }
            if let Some(n) = blob(s, 0)
                && n < s.len()
            {
                s = &s[n..];
                continue;
            }
            break;
        }
        // (6) `[fwd: ... ]`.
        if starts_with_ci(s, 0, b"[fwd:") && s.ends_with(b"]") {
            s = &s[5..s.len() - 1];
            reply = true;
            continue;
        }
        break;
    }
    (String::from_utf8_lossy(s).into_owned(), reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    #[test]
    fn base_subjects() {
        let cases: &[(&str, &str, bool)] = &[
            ("Hello", "Hello", false),
            ("Re: Hello", "Hello", true),
            ("RE: re: Fwd: hello", "hello", true),
            ("Re[2]: Hello", "Hello", true),
            ("Fw: Hello", "Hello", true),
            ("[list] Re: Hello", "Hello", true),
            ("[list] Hello", "Hello", false),
            ("[list]", "[list]", false),
            ("Hello (fwd)", "Hello", true),
            ("Hello (FWD)  (fwd) ", "Hello", true),
            ("[Fwd: Re: Hello]", "Hello", true),
            ("[fwd: [list] hi] (fwd)", "hi", true),
            ("  Hello   \t world  ", "Hello world", false),
            ("=?utf-8?q?Re=3A_caf=C3=A9?=", "caf\u{e9}", true),
            ("Re: =?utf-8?q?caf=C3=A9?=", "caf\u{e9}", true),
            ("Rebuttal: x", "Rebuttal: x", false),
            ("", "", false),
            ("re:", "", true),
            ("[a][b] re: [c] x", "x", true),
        ];
        for (raw, want, reply) in cases {
            assert_eq!(
                base_subject(raw.as_bytes()),
                (want.to_string(), *reply),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn keys() {
        let m = b"From: =?utf-8?q?Zo=C3=AB?= <zoe@x.test>\r\nTo: bob@y.test\r\n\
                  Cc: Team: carol@z.test;\r\nSubject: Re: plan\r\n\r\nx";
        let msg = Message::parse(m, &Limits::default());
        let k = msg.sort_keys(42);
        assert_eq!(
            k,
            SortKeys {
                subject: "plan".into(),
                from: b"zoe".to_vec(),
                to: b"bob".to_vec(),
                cc: b"Team".to_vec(),
                display_from: "Zo\u{eb}".into(),
                display_to: "bob@y.test".into(),
                date: 42,
            }
        );
        assert_eq!(compare_casemap("abc", "ABD"), Ordering::Less);
        assert_eq!(compare_casemap("ÉCOLE", "école"), Ordering::Equal);
    }
}
