//! Message flags and keywords, and their Maildir file-name form.
//!
//! The IMAP system flags map onto the Maildir info letters (`:2,` followed
//! by letters in ASCII order): `D` \Draft, `F` \Flagged, `R` \Answered,
//! `S` \Seen, `T` \Deleted, and `P` (passed) stands for the keyword
//! `$Forwarded`. Other keywords take the letters `a`–`z` as Dovecot gives
//! them: the mailbox's `dovecot-keywords` file ([`KeywordMap`]) lists
//! `<n> <keyword>` lines, and keyword number `n` is the letter `'a' + n`.
//! Keywords beyond the 26 letters live only in the index. Letters this
//! module cannot map are kept as they are when a file is renamed.
//!
//! This module must never produce a file name with `/` or NUL in it: the
//! letters it writes are fixed, and unknown ones are carried over only
//! from a name that was already a single path component.

use std::fmt;

/// Longest keyword accepted.
pub const MAX_KEYWORD_BYTES: usize = 100;
/// Most keywords on one message.
pub const MAX_KEYWORDS: usize = 64;

/// The keyword Maildir's `P` (passed) flag stands for.
pub const FORWARDED: &str = "$Forwarded";

/// The IMAP system flags of a message (`\Recent` is not kept).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SystemFlags(u8);

impl SystemFlags {
    /// No flag.
    pub const NONE: SystemFlags = SystemFlags(0);
    /// `\Seen`.
    pub const SEEN: SystemFlags = SystemFlags(1);
    /// `\Answered`.
    pub const ANSWERED: SystemFlags = SystemFlags(2);
    /// `\Flagged`.
    pub const FLAGGED: SystemFlags = SystemFlags(4);
    /// `\Deleted`.
    pub const DELETED: SystemFlags = SystemFlags(8);
    /// `\Draft`.
    pub const DRAFT: SystemFlags = SystemFlags(16);
    const ALL: u8 = 31;

    /// From the bits of [`bits`](Self::bits) (unknown bits dropped).
    pub fn from_bits(bits: u8) -> SystemFlags {
        SystemFlags(bits & Self::ALL)
    }

    /// The flags as bits (stable: stored in the index).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: SystemFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Flags of both.
    pub fn union(self, other: SystemFlags) -> SystemFlags {
        SystemFlags(self.0 | other.0)
    }

    /// Flags of `self` not in `other`.
    pub fn difference(self, other: SystemFlags) -> SystemFlags {
        SystemFlags(self.0 & !other.0)
    }

    /// The flag for an IMAP flag name (`\Seen`…, case-insensitive).
    pub fn from_imap(name: &str) -> Option<SystemFlags> {
        const NAMES: [(&str, SystemFlags); 5] = [
            ("\\Seen", SystemFlags::SEEN),
            ("\\Answered", SystemFlags::ANSWERED),
            ("\\Flagged", SystemFlags::FLAGGED),
            ("\\Deleted", SystemFlags::DELETED),
            ("\\Draft", SystemFlags::DRAFT),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, f)| *f)
    }

    /// The IMAP names of the flags set, in a fixed order.
    pub fn imap_names(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (flag, name) in [
            (SystemFlags::SEEN, "\\Seen"),
            (SystemFlags::ANSWERED, "\\Answered"),
            (SystemFlags::FLAGGED, "\\Flagged"),
            (SystemFlags::DELETED, "\\Deleted"),
            (SystemFlags::DRAFT, "\\Draft"),
        ] {
            if self.contains(flag) {
                out.push(name);
            }
        }
        out
    }
}

impl fmt::Debug for SystemFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SystemFlags({})", self.imap_names().join(" "))
    }
}

/// Why a keyword was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// Empty, too long, or with characters IMAP atoms may not hold.
    #[error("invalid keyword {0:?}")]
    BadKeyword(String),
    /// More than [`MAX_KEYWORDS`] keywords on a message.
    #[error("too many keywords")]
    TooMany,
}

/// The flags and keywords of a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// System flags.
    pub system: SystemFlags,
    /// Keywords (`$Forwarded`, `$Junk`, `Work`…), without duplicates
    /// (compared case-insensitively), sorted.
    keywords: Vec<String>,
}

impl Flags {
    /// Flags with these system flags and no keyword.
    pub fn system(system: SystemFlags) -> Flags {
        Flags {
            system,
            keywords: Vec::new(),
        }
    }

    /// Flags with keywords, checked (IMAP atom characters, no `\`).
    pub fn new<S: AsRef<str>>(system: SystemFlags, keywords: &[S]) -> Result<Flags, FlagError> {
        let mut f = Flags::system(system);
        for k in keywords {
            f.add_keyword(k.as_ref())?;
        }
        Ok(f)
    }

    /// Parses IMAP flag names: system flags start with `\`, others are
    /// keywords. `\Recent` and unknown `\` flags are refused.
    pub fn from_imap<S: AsRef<str>>(names: &[S]) -> Result<Flags, FlagError> {
        let mut f = Flags::default();
        for n in names {
            let n = n.as_ref();
            if n.starts_with('\\') {
                let flag =
                    SystemFlags::from_imap(n).ok_or_else(|| FlagError::BadKeyword(n.to_owned()))?;
                f.system = f.system.union(flag);
            } else {
                f.add_keyword(n)?;
            }
        }
        Ok(f)
    }

    /// The keywords, sorted.
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// Whether `keyword` is set (case-insensitive).
    pub fn has_keyword(&self, keyword: &str) -> bool {
        self.keywords
            .iter()
            .any(|k| k.eq_ignore_ascii_case(keyword))
    }

    /// Adds a keyword (no-op if present).
    pub fn add_keyword(&mut self, keyword: &str) -> Result<(), FlagError> {
        check_keyword(keyword)?;
        if self.has_keyword(keyword) {
            return Ok(());
        }
        if self.keywords.len() >= MAX_KEYWORDS {
            return Err(FlagError::TooMany);
        }
        self.keywords.push(keyword.to_owned());
        self.keywords.sort();
        Ok(())
    }

    /// Removes a keyword (case-insensitive).
    pub fn remove_keyword(&mut self, keyword: &str) {
        self.keywords.retain(|k| !k.eq_ignore_ascii_case(keyword));
    }

    /// Every flag as IMAP shows it (system flags first).
    pub fn imap_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .system
            .imap_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        out.extend(self.keywords.iter().cloned());
        out
    }

    /// Applies a STORE operation.
    pub fn apply(&self, op: FlagOp, with: &Flags) -> Result<Flags, FlagError> {
        Ok(match op {
            FlagOp::Replace => with.clone(),
            FlagOp::Add => {
                let mut f = self.clone();
                f.system = f.system.union(with.system);
                for k in &with.keywords {
                    f.add_keyword(k)?;
                }
                f
            }
            FlagOp::Remove => {
                let mut f = self.clone();
                f.system = f.system.difference(with.system);
                for k in &with.keywords {
                    f.remove_keyword(k);
                }
                f
            }
        })
    }

    /// The keywords as stored in the index (space-separated).
    pub(crate) fn keywords_text(&self) -> String {
        self.keywords.join(" ")
    }

    /// From the index's form; keywords that fail the checks are dropped.
    pub(crate) fn from_stored(bits: u8, keywords: &str) -> Flags {
        let mut f = Flags::system(SystemFlags::from_bits(bits));
        for k in keywords.split(' ').filter(|k| !k.is_empty()) {
            let _ = f.add_keyword(k);
        }
        f
    }

    /// The flags the letters of a Maildir info string stand for, with no
    /// keyword letters (see [`from_maildir_letters_with`](Self::from_maildir_letters_with)).
    pub fn from_maildir_letters(letters: &str, keep: &Flags) -> Flags {
        Flags::from_maildir_letters_with(letters, keep, &KeywordMap::default())
    }

    /// The flags the letters of a Maildir info string stand for: system
    /// flags, `$Forwarded`, and the keywords `map` gives letters to. The
    /// keywords of `keep` that have no letter (so cannot be in a file
    /// name) are kept.
    pub fn from_maildir_letters_with(letters: &str, keep: &Flags, map: &KeywordMap) -> Flags {
        let mut f = Flags::system(SystemFlags::NONE);
        for k in keep.keywords() {
            if !k.eq_ignore_ascii_case(FORWARDED) && map.letter_of(k).is_none() {
                let _ = f.add_keyword(k);
            }
        }
        for c in letters.chars() {
            let flag = match c {
                'D' => SystemFlags::DRAFT,
                'F' => SystemFlags::FLAGGED,
                'R' => SystemFlags::ANSWERED,
                'S' => SystemFlags::SEEN,
                'T' => SystemFlags::DELETED,
                'P' => {
                    let _ = f.add_keyword(FORWARDED);
                    continue;
                }
                c => {
                    if let Some(k) = map.keyword_of(c) {
                        let _ = f.add_keyword(k);
                    }
                    continue;
                }
            };
            f.system = f.system.union(flag);
        }
        f
    }

    /// The Maildir info letters for these flags, merged with the letters
    /// of `old` this module does not manage, in ASCII order (no keyword
    /// letters: see [`maildir_letters_with`](Self::maildir_letters_with)).
    pub fn maildir_letters(&self, old: &str) -> String {
        self.maildir_letters_with(old, &KeywordMap::default())
    }

    /// The Maildir info letters for these flags, with a letter for each
    /// keyword `map` has one for, merged with the letters of `old` that
    /// neither this module nor `map` knows, in ASCII order.
    pub fn maildir_letters_with(&self, old: &str, map: &KeywordMap) -> String {
        let mut letters: Vec<char> = old
            .chars()
            .filter(|c| !matches!(c, 'D' | 'F' | 'P' | 'R' | 'S' | 'T'))
            .filter(|c| c.is_ascii_alphanumeric())
            .filter(|c| map.keyword_of(*c).is_none())
            .collect();
        letters.extend(self.keywords.iter().filter_map(|k| map.letter_of(k)));
        for (flag, c) in [
            (SystemFlags::DRAFT, 'D'),
            (SystemFlags::FLAGGED, 'F'),
            (SystemFlags::ANSWERED, 'R'),
            (SystemFlags::SEEN, 'S'),
            (SystemFlags::DELETED, 'T'),
        ] {
            if self.system.contains(flag) {
                letters.push(c);
            }
        }
        if self.has_keyword(FORWARDED) {
            letters.push('P');
        }
        letters.sort_unstable();
        letters.dedup();
        letters.into_iter().collect()
    }
}

/// Name of the file that gives keywords their letters (Dovecot's).
pub const KEYWORDS_FILE: &str = "dovecot-keywords";

/// The keyword letters of one Maildir: keyword number `n` is the letter
/// `'a' + n`, as in Dovecot's `dovecot-keywords` (`<n> <keyword>` lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeywordMap {
    names: Vec<Option<String>>,
}

impl KeywordMap {
    /// Most keywords with a letter.
    pub const LETTERS: usize = 26;

    /// Parses the file's text; lines that are not `<n> <keyword>` with
    /// `n < 26` and a valid keyword are ignored.
    pub fn parse(text: &str) -> KeywordMap {
        let mut map = KeywordMap::default();
        for line in text.lines() {
            let Some((n, name)) = line.split_once(' ') else {
                continue;
            };
            let Ok(n) = n.parse::<usize>() else { continue };
            if n >= Self::LETTERS || check_keyword(name).is_err() || map.letter_of(name).is_some() {
                continue;
            }
            if map.names.len() <= n {
                map.names.resize(n + 1, None);
            }
            map.names[n] = Some(name.to_owned());
        }
        map
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (n, name) in self.names.iter().enumerate() {
            if let Some(name) = name {
                out.push_str(&format!("{n} {name}\n"));
            }
        }
        out
    }

    /// The letter of `keyword` (case-insensitive), if it has one.
    pub fn letter_of(&self, keyword: &str) -> Option<char> {
        self.names
            .iter()
            .position(|n| {
                n.as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(keyword))
            })
            .map(|i| char::from(b'a' + i as u8))
    }

    /// The keyword of letter `c`, if the map has one.
    pub fn keyword_of(&self, c: char) -> Option<&str> {
        if !c.is_ascii_lowercase() {
            return None;
        }
        let i = (c as u8 - b'a') as usize;
        self.names.get(i).and_then(|n| n.as_deref())
    }

    /// Gives a letter to each keyword of `flags` that has none, while
    /// letters are free (`$Forwarded` has `P`). Returns whether the map
    /// changed (and so must be written before a file name uses it).
    pub fn assign(&mut self, flags: &Flags) -> bool {
        let mut changed = false;
        for k in flags.keywords() {
            if k.eq_ignore_ascii_case(FORWARDED) || self.letter_of(k).is_some() {
                continue;
            }
            if let Some(free) = self.names.iter().position(Option::is_none) {
                self.names[free] = Some(k.clone());
            } else if self.names.len() < Self::LETTERS {
                self.names.push(Some(k.clone()));
            } else {
                continue;
            }
            changed = true;
        }
        changed
    }
}

fn check_keyword(k: &str) -> Result<(), FlagError> {
    let ok = !k.is_empty()
        && k.len() <= MAX_KEYWORD_BYTES
        && k.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        });
    if ok {
        Ok(())
    } else {
        Err(FlagError::BadKeyword(k.to_owned()))
    }
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    /// `FLAGS`: set exactly these.
    Replace,
    /// `+FLAGS`: add these.
    Add,
    /// `-FLAGS`: remove these.
    Remove,
}

/// Splits a Maildir file name into its base (the unique part) and its
/// info letters (after `:2,`); a name without info has no letters.
pub fn split_file_name(name: &str) -> (&str, &str) {
    match name.split_once(':') {
        Some((base, info)) => (base, info.strip_prefix("2,").unwrap_or("")),
        None => (name, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildir_letters_table() {
        let none = Flags::default();
        for (letters, system, forwarded, back) in [
            ("", SystemFlags::NONE, false, ""),
            ("S", SystemFlags::SEEN, false, "S"),
            (
                "RS",
                SystemFlags::ANSWERED.union(SystemFlags::SEEN),
                false,
                "RS",
            ),
            (
                "SR",
                SystemFlags::ANSWERED.union(SystemFlags::SEEN),
                false,
                "RS",
            ),
            ("DFPRST", SystemFlags::from_bits(31), true, "DFPRST"),
            ("Sa", SystemFlags::SEEN, false, "Sa"),
            ("P", SystemFlags::NONE, true, "P"),
        ] {
            let f = Flags::from_maildir_letters(letters, &none);
            assert_eq!(f.system, system, "{letters}");
            assert_eq!(f.has_keyword(FORWARDED), forwarded, "{letters}");
            assert_eq!(f.maildir_letters(letters), back, "{letters}");
        }
        // Keywords other than $Forwarded are kept from the index.
        let keep = Flags::new(SystemFlags::NONE, &["Work", "$Forwarded"]).unwrap();
        let f = Flags::from_maildir_letters("S", &keep);
        assert_eq!(f.keywords(), ["Work"]);
        // Unknown letters survive; junk characters do not.
        let seen = Flags::system(SystemFlags::SEEN);
        assert_eq!(seen.maildir_letters("ab/\0T"), "Sab");
    }

    #[test]
    fn keyword_letters_follow_the_map() {
        let mut map = KeywordMap::parse("0 $Junk\n2 Work\nbad line\n30 Far\n1 \\Bad\n");
        assert_eq!(map.letter_of("$junk"), Some('a'));
        assert_eq!(map.letter_of("Work"), Some('c'));
        assert_eq!(map.keyword_of('b'), None);
        assert_eq!(map.to_text(), "0 $Junk\n2 Work\n");
        let f = Flags::new(SystemFlags::SEEN, &["Work", "Home", "$Forwarded"]).unwrap();
        assert!(map.assign(&f));
        assert!(!map.assign(&f), "nothing new the second time");
        assert_eq!(map.letter_of("Home"), Some('b'), "the free slot is reused");
        assert_eq!(f.maildir_letters_with("z", &map), "PSbcz");
        let back = Flags::from_maildir_letters_with("PSbcz", &Flags::default(), &map);
        assert_eq!(back, f);
        // A keyword whose letter is gone from the name was removed; one
        // without a letter is kept from the index.
        let mut keep = f.clone();
        keep.add_keyword("Unmapped").unwrap();
        let fewer = Flags::from_maildir_letters_with("Sc", &keep, &map);
        assert_eq!(fewer.keywords(), ["Unmapped", "Work"]);
        // 26 letters at most.
        let many: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let mut full = KeywordMap::default();
        full.assign(&Flags::new(SystemFlags::NONE, &many).unwrap());
        let lettered = many.iter().filter(|k| full.letter_of(k).is_some()).count();
        assert_eq!(lettered, KeywordMap::LETTERS);
        assert_eq!(full.to_text().lines().count(), KeywordMap::LETTERS);
    }

    #[test]
    fn split_names() {
        assert_eq!(split_file_name("123.M1P2.h:2,RS"), ("123.M1P2.h", "RS"));
        assert_eq!(split_file_name("123.M1P2.h"), ("123.M1P2.h", ""));
        assert_eq!(split_file_name("123.M1P2.h:1,x"), ("123.M1P2.h", ""));
        assert_eq!(split_file_name("x:2,"), ("x", ""));
    }

    #[test]
    fn store_operations() {
        let f = Flags::new(SystemFlags::SEEN, &["Work"]).unwrap();
        let with = Flags::from_imap(&["\\Flagged", "work", "Home"]).unwrap();
        let added = f.apply(FlagOp::Add, &with).unwrap();
        assert_eq!(added.system, SystemFlags::SEEN.union(SystemFlags::FLAGGED));
        assert_eq!(added.keywords(), ["Home", "Work"]);
        let removed = added.apply(FlagOp::Remove, &with).unwrap();
        assert_eq!(removed, Flags::system(SystemFlags::SEEN));
        assert_eq!(f.apply(FlagOp::Replace, &with).unwrap(), with);
        assert_eq!(added.imap_names(), ["\\Seen", "\\Flagged", "Home", "Work"]);
    }

    #[test]
    fn bad_keywords_are_refused() {
        for bad in ["", "a b", "\\Recent", "a(b", "x\0", "é", "a]"] {
            assert!(Flags::from_imap(&[bad]).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_KEYWORDS).map(|i| format!("k{i}")).collect();
        assert_eq!(Flags::from_imap(&many), Err(FlagError::TooMany));
        assert_eq!(Flags::from_stored(255, "a  b bad\\").keywords(), ["a", "b"]);
    }
}
