//! Mailbox names: what an IMAP client may call a mailbox, and the one
//! directory each name is stored in.
//!
//! A name is UTF-8 with `/` as the hierarchy separator (`Work/Reports`).
//! [`MailboxName::parse`] refuses what could confuse a path or a listing:
//! empty names and empty levels (`/a`, `a//b`, `a/`), control characters
//! (NUL, CR, LF, DEL…), the LIST wildcards `*` and `%`, levels `.` and
//! `..`, more than [`MAX_DEPTH`] levels and names longer than
//! [`MAX_NAME_BYTES`]. `INBOX` is case-insensitive (`inbox/x` is
//! `INBOX/x`).
//!
//! On disk the layout is Dovecot's default Maildir++ one, so Dovecot and
//! mutt read the same tree: `INBOX` is the user's Maildir itself, and any
//! other mailbox is the directory `.<level>.<level>…` beside its `cur/`.
//! Each level is written as Dovecot 2.3 writes it with its default
//! `mailbox_list_utf8 = no`: in modified UTF-7 (RFC 3501 5.1.3;
//! `Entwürfe` → `Entw&APw-rfe`, `a&b` → `a&-b`). A `.` inside a level,
//! which Maildir++ cannot hold (Dovecot refuses such names by default), is
//! written `\2e`, the escape of Dovecot's listescape plugin; a `\` is
//! written as it is, as Dovecot does, except before two hex digits, where
//! it becomes `\5c` so that the directory name reads back unambiguously. The result is printable ASCII without `/`, starts
//! with `.` followed by a character that is not `.`, and so is always one
//! plain directory name inside the user's Maildir: never `.`, `..`, or a
//! path. Directory names found on disk are decoded with
//! [`MailboxName::from_dir`], which accepts only those that encode back to
//! exactly the same directory name.
//!
//! This module must never produce a directory name containing `/`, NUL, or
//! equal to `.`/`..`, whatever the input.

use std::fmt;

/// Hierarchy separator of mailbox names (IMAP `LIST` shows it).
pub const SEPARATOR: char = '/';
/// Longest mailbox name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 200;
/// Most levels in a mailbox name (`a/b/c` has three).
pub const MAX_DEPTH: usize = 16;
/// Longest directory name a mailbox may need (most filesystems allow 255).
const MAX_DIR_BYTES: usize = 250;

/// Why a mailbox name was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty, or a level is (`/a`, `a//b`, `a/`).
    #[error("empty mailbox name or hierarchy level")]
    Empty,
    /// The name is longer than [`MAX_NAME_BYTES`] (or its directory name
    /// would be too long for the filesystem).
    #[error("mailbox name too long")]
    TooLong,
    /// The name has more than [`MAX_DEPTH`] levels.
    #[error("mailbox name nested too deeply")]
    TooDeep,
    /// A character that may not appear in a mailbox name.
    #[error("character {0:?} not allowed in a mailbox name")]
    BadChar(char),
    /// A level is `.` or `..`.
    #[error("hierarchy level {0:?} not allowed")]
    DotLevel(&'static str),
}

/// A valid mailbox name (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxName(String);

impl MailboxName {
    /// `INBOX`.
    pub fn inbox() -> MailboxName {
        MailboxName("INBOX".to_owned())
    }

    /// Checks a name given by a client (UTF-8, `/`-separated).
    pub fn parse(name: &str) -> Result<MailboxName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(NameError::TooLong);
        }
        let mut levels = 0;
        for level in name.split(SEPARATOR) {
            levels += 1;
            if levels > MAX_DEPTH {
                return Err(NameError::TooDeep);
            }
            if level.is_empty() {
                return Err(NameError::Empty);
            }
            if level == "." {
                return Err(NameError::DotLevel("."));
            }
            if level == ".." {
                return Err(NameError::DotLevel(".."));
            }
            if let Some(c) = level
                .chars()
                .find(|&c| c.is_control() || c == '*' || c == '%')
            {
                return Err(NameError::BadChar(c));
            }
        }
        // INBOX is case-insensitive, as a whole name and as a first level.
        let normalised = match name.split_once(SEPARATOR) {
            Some((first, rest)) if first.eq_ignore_ascii_case("INBOX") => {
                format!("INBOX{SEPARATOR}{rest}")
            }
            None if name.eq_ignore_ascii_case("INBOX") => "INBOX".to_owned(),
            _ => name.to_owned(),
        };
        let parsed = MailboxName(normalised);
        if !parsed.is_inbox() && parsed.dir().len() > MAX_DIR_BYTES {
            return Err(NameError::TooLong);
        }
        Ok(parsed)
    }

    /// The name as UTF-8.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `INBOX` itself.
    pub fn is_inbox(&self) -> bool {
        self.0 == "INBOX"
    }

    /// The levels of the name.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.0.split(SEPARATOR)
    }

    /// The names of every level above this one (`a/b/c` → `a`, `a/b`).
    pub fn parents(&self) -> Vec<MailboxName> {
        let mut out = Vec::new();
        for (i, c) in self.0.char_indices() {
            if c == SEPARATOR {
                out.push(MailboxName(self.0[..i].to_owned()));
            }
        }
        out
    }

    /// Whether `self` is strictly below `other` in the hierarchy.
    pub fn is_below(&self, other: &MailboxName) -> bool {
        self.0.len() > other.0.len()
            && self.0.starts_with(&other.0)
            && self.0[other.0.len()..].starts_with(SEPARATOR)
    }

    /// `self` with the leading `from` replaced by `to` (for renaming a
    /// subtree); `None` when `self` is neither `from` nor below it.
    pub fn rebase(&self, from: &MailboxName, to: &MailboxName) -> Option<MailboxName> {
        if self == from {
            Some(to.clone())
        } else if self.is_below(from) {
            Some(MailboxName(format!("{}{}", to.0, &self.0[from.0.len()..])))
        } else {
            None
        }
    }

    /// The directory (one name inside the user's Maildir) holding this
    /// mailbox; empty for `INBOX`, which is the Maildir itself.
    pub fn dir(&self) -> String {
        if self.is_inbox() {
            return String::new();
        }
        let mut out = String::with_capacity(self.0.len() + 8);
        for level in self.levels() {
            out.push('.');
            let encoded = encode_mutf7(level);
            let bytes = encoded.as_bytes();
            for (i, c) in encoded.char_indices() {
                match c {
                    '.' => out.push_str("\\2e"),
                    // A `\` is written as it is (as Dovecot does), unless
                    // two hex digits follow, which would read as an escape.
                    '\\' if bytes.len() > i + 2
                        && bytes[i + 1].is_ascii_hexdigit()
                        && bytes[i + 2].is_ascii_hexdigit() =>
                    {
                        out.push_str("\\5c")
                    }
                    c => out.push(c),
                }
            }
        }
        out
    }

    /// The mailbox a Maildir++ directory name found on disk stands for, if
    /// it is one this module would have written (so it round-trips).
    pub fn from_dir(dir: &str) -> Option<MailboxName> {
        let rest = dir.strip_prefix('.')?;
        let mut name = String::new();
        for (i, level) in rest.split('.').enumerate() {
            if i > 0 {
                name.push(SEPARATOR);
            }
            let unescaped = unescape(level)?;
            name.push_str(&decode_mutf7(&unescaped)?);
        }
        let parsed = MailboxName::parse(&name).ok()?;
        (!parsed.is_inbox() && parsed.dir() == dir).then_some(parsed)
    }
}

impl fmt::Display for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn unescape(level: &str) -> Option<String> {
    let bytes = level.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = level
            .get(i + 1..i + 3)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        if let (b'\\', Some(hex)) = (bytes[i], hex) {
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Modified UTF-7 (RFC 3501 5.1.3), as IMAP4rev1 clients and Dovecot's
/// on-disk names use it.
pub fn encode_mutf7(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        out.push('&');
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        for chunk in bytes.chunks(3) {
            let n = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            let chars = chunk.len() + 1;
            for k in 0..chars {
                out.push(char::from(B64[((n >> (18 - 6 * k)) & 63) as usize]));
            }
        }
        out.push('-');
        pending.clear();
    };
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Decodes modified UTF-7; `None` if `s` is not valid modified UTF-7
/// (including non-canonical forms such as an encoded printable ASCII
/// character, so every name has exactly one encoding).
pub fn decode_mutf7(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        let plain = &rest[..pos];
        if !plain.chars().all(|c| (' '..='~').contains(&c)) {
            return None;
        }
        out.push_str(plain);
        let after = &rest[pos + 1..];
        let end = after.find('-')?;
        let encoded = &after[..end];
        if encoded.is_empty() {
            out.push('&');
        } else {
            let mut bits: u32 = 0;
            let mut nbits = 0;
            let mut units: Vec<u16> = Vec::new();
            let mut bytes: Vec<u8> = Vec::new();
            for b in encoded.bytes() {
                let v = B64.iter().position(|&x| x == b)? as u32;
                bits = (bits << 6) | v;
                nbits += 6;
                if nbits >= 8 {
                    nbits -= 8;
                    bytes.push((bits >> nbits) as u8);
                    bits &= (1 << nbits) - 1;
                }
            }
            if bits != 0 || !bytes.len().is_multiple_of(2) {
                return None;
            }
            for pair in bytes.chunks(2) {
                units.push(u16::from_be_bytes([pair[0], pair[1]]));
            }
            let decoded = String::from_utf16(&units).ok()?;
            if decoded.chars().any(|c| (' '..='~').contains(&c)) {
                return None;
            }
            out.push_str(&decoded);
        }
        rest = &after[end + 1..];
    }
    if !rest.chars().all(|c| (' '..='~').contains(&c)) {
        return None;
    }
    out.push_str(rest);
    // Canonical form only.
    (encode_mutf7(&out) == s).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutf7_round_trips_rfc_examples() {
        for (utf8, mutf7) in [
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("Entwürfe", "Entw&APw-rfe"),
            ("a&b", "a&-b"),
            ("Ελληνικά", "&A5UDuwO7A7cDvQO5A7oDrA-"),
            ("😀", "&2D3eAA-"),
            ("plain", "plain"),
        ] {
            assert_eq!(encode_mutf7(utf8), mutf7, "{utf8}");
            assert_eq!(decode_mutf7(mutf7).as_deref(), Some(utf8), "{mutf7}");
        }
        for bad in ["&", "&Jjo", "&AGE-", "&Jjo!-", "é", "&2D3-"] {
            assert_eq!(decode_mutf7(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_table() {
        for (input, normalised, dir) in [
            ("INBOX", "INBOX", ""),
            ("inbox", "INBOX", ""),
            ("Inbox/Sub", "INBOX/Sub", ".INBOX.Sub"),
            ("Sent", "Sent", ".Sent"),
            ("Work/Reports", "Work/Reports", ".Work.Reports"),
            ("a.b", "a.b", ".a\\2eb"),
            ("a\\b", "a\\b", ".a\\b"),
            ("a\\2e", "a\\2e", ".a\\5c2e"),
            ("a\\", "a\\", ".a\\"),
            ("a&b", "a&b", ".a&-b"),
            ("Entwürfe", "Entwürfe", ".Entw&APw-rfe"),
            ("...x", "...x", ".\\2e\\2e\\2ex"),
            ("~root", "~root", ".~root"),
            ("INBOXES", "INBOXES", ".INBOXES"),
        ] {
            let n = MailboxName::parse(input).unwrap();
            assert_eq!(n.as_str(), normalised, "{input}");
            assert_eq!(n.dir(), dir, "{input}");
            if !n.is_inbox() {
                assert_eq!(MailboxName::from_dir(dir).as_ref(), Some(&n), "{dir}");
            }
        }
    }

    #[test]
    fn hostile_names_are_refused_or_stay_one_directory() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        let deep = vec!["a"; MAX_DEPTH + 1].join("/");
        for (bad, err) in [
            ("", NameError::Empty),
            ("/", NameError::Empty),
            ("/etc", NameError::Empty),
            ("a//b", NameError::Empty),
            ("a/", NameError::Empty),
            ("..", NameError::DotLevel("..")),
            ("../x", NameError::DotLevel("..")),
            ("a/../../x", NameError::DotLevel("..")),
            (".", NameError::DotLevel(".")),
            ("a\0b", NameError::BadChar('\0')),
            ("a\r\nb", NameError::BadChar('\r')),
            ("a\x7f", NameError::BadChar('\x7f')),
            ("a*", NameError::BadChar('*')),
            ("%", NameError::BadChar('%')),
            (long.as_str(), NameError::TooLong),
            (deep.as_str(), NameError::TooDeep),
        ] {
            assert_eq!(MailboxName::parse(bad), Err(err), "{bad:?}");
        }
        // Names that are allowed but look dangerous map to one safe name.
        for odd in [
            ".hidden",
            "..a",
            "a..",
            "x/.y",
            "\\..\\",
            "..a/b..",
            "&-",
            "日本/..",
        ] {
            let Ok(n) = MailboxName::parse(odd) else {
                continue;
            };
            let dir = n.dir();
            assert!(
                dir.starts_with('.') && !dir.starts_with(".."),
                "{odd}: {dir}"
            );
            assert!(!dir.contains('/') && !dir.contains('\0'), "{odd}: {dir}");
            assert!(dir != "." && dir != "..");
            assert_eq!(MailboxName::from_dir(&dir), Some(n));
        }
        // A name whose directory would be too long for the filesystem.
        let wide = "&".repeat(150);
        assert_eq!(MailboxName::parse(&wide), Err(NameError::TooLong));
    }

    #[test]
    fn from_dir_refuses_what_it_would_not_write() {
        for dir in [
            "",
            ".",
            "..",
            "...",
            "cur",
            ".a..b",
            ".a/b",
            ".a\\5cb",
            ".a\\00",
            ".a\\ff",
            ".Entwürfe",
            ".&AGE-",
            ".INBOX",
            ".a*",
            ".a\\2fb",
        ] {
            assert_eq!(MailboxName::from_dir(dir), None, "{dir:?}");
        }
        // Written by Dovecot, read back as Dovecot shows them.
        for (dir, name) in [(".a\\zz", "a\\zz"), (".a\\2", "a\\2"), (".x\\y", "x\\y")] {
            assert_eq!(MailboxName::from_dir(dir).unwrap().as_str(), name);
        }
    }

    #[test]
    fn hierarchy_helpers() {
        let n = MailboxName::parse("a/b/c").unwrap();
        let p: Vec<String> = n.parents().iter().map(|p| p.to_string()).collect();
        assert_eq!(p, ["a", "a/b"]);
        let a = MailboxName::parse("a").unwrap();
        let ab = MailboxName::parse("ab").unwrap();
        assert!(n.is_below(&a));
        assert!(!ab.is_below(&a));
        assert_eq!(
            n.rebase(&a, &MailboxName::parse("z").unwrap())
                .unwrap()
                .as_str(),
            "z/b/c"
        );
        assert!(ab.rebase(&a, &n).is_none());
    }

    proptest::proptest! {
        // The fuzz target's properties (fuzz/fuzz_targets/mailbox_name.rs),
        // on stable with every test run.
        #[test]
        fn any_accepted_name_is_one_safe_directory(s in "\\PC{0,40}|[./\\\\&a-zA-Z0-9 \u{e9}\u{65e5}*%-]{0,40}") {
            if let Ok(name) = MailboxName::parse(&s) {
                let dir = name.dir();
                if !name.is_inbox() {
                    proptest::prop_assert!(dir.starts_with('.') && !dir.starts_with(".."));
                    proptest::prop_assert!(!dir.contains('/') && !dir.contains('\0'));
                    proptest::prop_assert!(dir.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
                    proptest::prop_assert_eq!(MailboxName::from_dir(&dir), Some(name));
                }
            }
            if let Some(name) = MailboxName::from_dir(&s) {
                proptest::prop_assert_eq!(name.dir(), s.clone());
            }
            proptest::prop_assert_eq!(decode_mutf7(&encode_mutf7(&s)), Some(s.clone()));
        }
    }
}
